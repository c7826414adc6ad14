package server

import (
	"context"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"strings"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/relhq/rel/internal/auth"
	"github.com/relhq/rel/internal/pki"
	"github.com/relhq/rel/internal/reqid"
	"github.com/relhq/rel/internal/transport"
	relv1 "github.com/relhq/rel/proto/rel/v1"
)

// Metadata keys of authentication.
const (
	// authorizationKey carries "Bearer <token secret>".
	authorizationKey = "authorization"
	// callerKey carries the principal a server forwards a request for
	// (base64 of a rel.v1.Principal). Only server certificates may send it.
	callerKey = "rel-caller"
)

// rule is who may call one gRPC method.
type rule struct {
	// kinds are the certificate kinds (servers, agents) allowed by kind.
	kinds []string
	// perm is what a person (a token or a client certificate) needs;
	// empty refuses people.
	perm auth.Permission
	// anyone allows every caller, even without credentials.
	anyone bool
	// resource says what the request acts on, for scoped grants; nil means
	// nothing in particular.
	resource func(s *Server, req any) auth.Resource
}

func appOf(app string) auth.Resource { return auth.Resource{App: app} }

// rolloutResource is the app and environment of the rollout a request names.
func rolloutResource(s *Server, id string) auth.Resource {
	ro, err := s.store.Rollout(nil, id)
	if err != nil {
		// Unknown here: the endpoint answers NotFound (or the leader knows
		// it); scoped grants then decide on the permission alone.
		return auth.Resource{}
	}
	return auth.Resource{App: ro.GetApp(), Env: ro.GetEnvironment()}
}

// rules decides every method. A method missing here is refused to
// everybody (deny by default), and the authorization test fails the build:
// adding an RPC means adding its rule.
var rules = map[string]rule{
	// Freeze windows (change control): made and removed by those who
	// manage apps; read by anyone who reads. A window's scope is globs, so
	// the permission is asked for no app in particular.
	relv1.FreezeService_CreateFreeze_FullMethodName: {perm: auth.ManageApps},
	relv1.FreezeService_DeleteFreeze_FullMethodName: {perm: auth.ManageApps},
	relv1.FreezeService_ListFreezes_FullMethodName:  {perm: auth.Read},
	relv1.FreezeService_FreezeStatus_FullMethodName: {perm: auth.Read},
	// Release notes and the management report: reads (report.go).
	relv1.ReportService_ReleaseNotes_FullMethodName: {perm: auth.Read},
	relv1.ReportService_Report_FullMethodName:       {perm: auth.Read},
	relv1.ControlService_CreateApp_FullMethodName: {perm: auth.ManageApps, resource: func(_ *Server, r any) auth.Resource {
		return appOf(r.(*relv1.CreateAppRequest).GetName())
	}},
	relv1.ControlService_ListApps_FullMethodName: {perm: auth.Read},
	relv1.ControlService_CreateEnvironment_FullMethodName: {perm: auth.ManageApps, resource: func(_ *Server, r any) auth.Resource {
		return auth.Resource{Env: r.(*relv1.CreateEnvironmentRequest).GetName()}
	}},
	relv1.ControlService_ListEnvironments_FullMethodName: {perm: auth.Read},
	relv1.ControlService_ShowEnvironment_FullMethodName:  {perm: auth.Read},
	relv1.ControlService_Overview_FullMethodName:         {perm: auth.Read},
	relv1.ControlService_UpdateEnvironment_FullMethodName: {perm: auth.ManageApps, resource: func(_ *Server, r any) auth.Resource {
		return auth.Resource{Env: r.(*relv1.UpdateEnvironmentRequest).GetName()}
	}},
	relv1.ControlService_DeleteEnvironment_FullMethodName: {perm: auth.ManageApps, resource: func(_ *Server, r any) auth.Resource {
		return auth.Resource{Env: r.(*relv1.DeleteEnvironmentRequest).GetName()}
	}},
	relv1.ControlService_CreateRelease_FullMethodName: {perm: auth.CreateRelease, resource: func(_ *Server, r any) auth.Resource {
		return appOf(r.(*relv1.CreateReleaseRequest).GetApp())
	}},
	relv1.ControlService_ListReleases_FullMethodName: {perm: auth.Read},
	relv1.ControlService_GetRelease_FullMethodName:   {perm: auth.Read},
	relv1.ControlService_DeleteRelease_FullMethodName: {perm: auth.ManageApps, resource: func(_ *Server, r any) auth.Resource {
		return appOf(r.(*relv1.DeleteReleaseRequest).GetApp())
	}},
	relv1.ControlService_StartRollout_FullMethodName: {perm: auth.Deploy, resource: func(_ *Server, r any) auth.Resource {
		req := r.(*relv1.StartRolloutRequest)
		return auth.Resource{App: req.GetApp(), Env: req.GetEnvironment()}
	}},
	relv1.ControlService_GetRollout_FullMethodName:   {perm: auth.Read},
	relv1.ControlService_ListRollouts_FullMethodName: {perm: auth.Read},
	relv1.ControlService_ListAgents_FullMethodName:   {perm: auth.Read},
	relv1.ControlService_GetAgent_FullMethodName:     {perm: auth.Read},
	relv1.ControlService_History_FullMethodName:      {perm: auth.Read},
	relv1.ControlService_PlanRollout_FullMethodName:  {perm: auth.Read},
	relv1.ControlService_ControlRollout_FullMethodName: {perm: auth.Deploy, resource: func(s *Server, r any) auth.Resource {
		return rolloutResource(s, r.(*relv1.ControlRolloutRequest).GetId())
	}},
	relv1.ControlService_RollbackRollout_FullMethodName: {perm: auth.Deploy, resource: func(s *Server, r any) auth.Resource {
		return rolloutResource(s, r.(*relv1.RollbackRolloutRequest).GetId())
	}},
	relv1.ControlService_RolloutEvents_FullMethodName: {perm: auth.Read},

	relv1.ClusterService_Members_FullMethodName: {perm: auth.Read},
	// The handler also checks that a server joins as itself.
	relv1.ClusterService_Join_FullMethodName:          {kinds: []string{auth.KindServer}},
	relv1.ClusterService_Remove_FullMethodName:        {perm: auth.ManageCluster},
	relv1.ClusterService_Status_FullMethodName:        {kinds: []string{auth.KindServer}, perm: auth.Read},
	relv1.ClusterService_Apply_FullMethodName:         {kinds: []string{auth.KindServer}},
	relv1.ClusterService_FetchArtifact_FullMethodName: {kinds: []string{auth.KindServer}},
	relv1.ClusterService_LocalAgents_FullMethodName:   {kinds: []string{auth.KindServer}},

	relv1.AgentService_Connect_FullMethodName: {kinds: []string{auth.KindAgent}},

	relv1.ArtifactService_Upload_FullMethodName:        {perm: auth.CreateRelease},
	relv1.ArtifactService_ListArtifacts_FullMethodName: {perm: auth.Read},

	// Bootstrap works once per cluster; the FSM refuses it after that.
	relv1.ACLService_Bootstrap_FullMethodName: {anyone: true},
	// The handler also checks that nobody grants more than they hold.
	relv1.ACLService_CreateToken_FullMethodName:     {perm: auth.ManageTokens},
	relv1.ACLService_ListTokens_FullMethodName:      {perm: auth.ManageTokens},
	relv1.ACLService_RevokeToken_FullMethodName:     {perm: auth.ManageTokens},
	relv1.ACLService_WhoAmI_FullMethodName:          {anyone: true},
	relv1.ACLService_CreateJoinToken_FullMethodName: {perm: auth.ManageTokens},
	relv1.ACLService_ListJoinTokens_FullMethodName:  {perm: auth.ManageTokens},
	relv1.ACLService_RevokeJoinToken_FullMethodName: {perm: auth.ManageTokens},
	relv1.ACLService_RevokeAgent_FullMethodName:     {perm: auth.ManageTokens},

	// Lifecycles: their shape and an app's lifecycle are the app
	// managers'; blocks too (a pipeline that may create releases may not
	// lift a person's block); promotion is a deploy to the target.
	relv1.LifecycleService_CreateLifecycle_FullMethodName: {perm: auth.ManageApps},
	relv1.LifecycleService_UpdateLifecycle_FullMethodName: {perm: auth.ManageApps},
	relv1.LifecycleService_DeleteLifecycle_FullMethodName: {perm: auth.ManageApps},
	relv1.LifecycleService_GetLifecycle_FullMethodName:    {perm: auth.Read},
	relv1.LifecycleService_ListLifecycles_FullMethodName:  {perm: auth.Read},
	relv1.LifecycleService_SetAppLifecycle_FullMethodName: {perm: auth.ManageApps, resource: func(_ *Server, r any) auth.Resource {
		return appOf(r.(*relv1.SetAppLifecycleRequest).GetApp())
	}},
	relv1.LifecycleService_BlockRelease_FullMethodName: {perm: auth.ManageApps, resource: func(_ *Server, r any) auth.Resource {
		return appOf(r.(*relv1.BlockReleaseRequest).GetApp())
	}},
	relv1.LifecycleService_PromoteRelease_FullMethodName: {perm: auth.Deploy, resource: func(_ *Server, r any) auth.Resource {
		req := r.(*relv1.PromoteReleaseRequest)
		return auth.Resource{App: req.GetApp(), Env: req.GetEnvironment()}
	}},
	relv1.LifecycleService_ReleaseStatus_FullMethodName: {perm: auth.Read},
	// Change control's approvals. The FSM also checks the approver
	// against the rollout's approval policy.
	relv1.ApprovalService_SetPolicy_FullMethodName: {perm: auth.ManageApps, resource: func(_ *Server, r any) auth.Resource {
		return auth.Resource{Env: r.(*relv1.SetApprovalPolicyRequest).GetEnvironment()}
	}},
	relv1.ApprovalService_Approve_FullMethodName: {perm: auth.Approve, resource: func(s *Server, r any) auth.Resource {
		return rolloutResource(s, r.(*relv1.ApproveRolloutRequest).GetId())
	}},
	relv1.ApprovalService_Reject_FullMethodName: {perm: auth.Approve, resource: func(s *Server, r any) auth.Resource {
		return rolloutResource(s, r.(*relv1.RejectRolloutRequest).GetId())
	}},
	relv1.ApprovalService_Review_FullMethodName: {perm: auth.Approve, resource: func(s *Server, r any) auth.Resource {
		return rolloutResource(s, r.(*relv1.ReviewRolloutRequest).GetId())
	}},
	relv1.ApprovalService_Pending_FullMethodName: {perm: auth.Read},
	relv1.ApprovalService_Reviews_FullMethodName: {perm: auth.Read},

	// A join token in the request is the credential.
	relv1.EnrollService_Enroll_FullMethodName: {anyone: true},
	relv1.EnrollService_Renew_FullMethodName:  {kinds: []string{auth.KindAgent}},

	// Viewers may see who changed what: the trail holds no secrets (token
	// accessors and names, not secrets), and a checkpoint is a signed
	// hash.
	relv1.AuditService_ListAudit_FullMethodName:       {perm: auth.Read},
	relv1.AuditService_AuditCheckpoint_FullMethodName: {perm: auth.Read},
	// Marking records archived lets retention remove them: those who run
	// the cluster.
	relv1.AuditService_MarkAuditArchived_FullMethodName: {perm: auth.ManageCluster},
	// The event stream: readers, like the audit trail.
	relv1.EventService_ListEvents_FullMethodName:   {perm: auth.Read},
	relv1.EventService_FollowEvents_FullMethodName: {perm: auth.Read},
	// Webhooks: operators and admins manage them (a webhook sends the
	// cluster's events out); readers see them, never their secrets.
	relv1.WebhookService_CreateWebhook_FullMethodName:    {perm: auth.ManageApps},
	relv1.WebhookService_DeleteWebhook_FullMethodName:    {perm: auth.ManageApps},
	relv1.WebhookService_RedeliverWebhook_FullMethodName: {perm: auth.ManageApps},
	relv1.WebhookService_ListWebhooks_FullMethodName:     {perm: auth.Read},
	relv1.WebhookService_GetWebhook_FullMethodName:       {perm: auth.Read},
}

// authenticate finds who made the request: the verified certificate of
// the connection, a token in the metadata, or, for a server certificate
// forwarding a request, the principal it forwards.
func (s *Server) authenticate(ctx context.Context, method string) (auth.Principal, error) {
	id, leaf, hasCert, err := peerCert(ctx)
	if err != nil {
		return auth.Principal{}, status.Errorf(codes.Unauthenticated, "client certificate: %v", err)
	}
	cluster := s.cluster()
	md, _ := metadata.FromIncomingContext(ctx)
	if hasCert {
		if id.Cluster != cluster {
			return auth.Principal{}, status.Errorf(codes.Unauthenticated, "client certificate is for cluster %q; this is cluster %q", id.Cluster, cluster)
		}
		now := time.Now()
		if now.After(leaf.NotAfter) {
			// The connection outlived the certificate it was made with.
			return auth.Principal{}, status.Errorf(codes.Unauthenticated, "client certificate of %s expired at %s: reconnect with a current one", id, leaf.NotAfter.UTC().Format(time.RFC3339))
		}
		switch id.Kind {
		case pki.KindServer:
			// A server certificate speaks for a member: one of a removed
			// (or never joined) server may only ask to join.
			if method != relv1.ClusterService_Join_FullMethodName {
				if err := s.memberPeer(id.ID); err != nil {
					return auth.Principal{}, status.Error(codes.PermissionDenied, err.Error())
				}
			}
			p := auth.Principal{Kind: auth.KindServer, ID: id.ID, Cluster: id.Cluster}
			if v := md.Get(callerKey); len(v) > 0 {
				caller, err := decodeCaller(v[0])
				if err != nil {
					return auth.Principal{}, status.Errorf(codes.InvalidArgument, "forwarded caller: %v", err)
				}
				caller.Via = id.ID
				return caller, nil
			}
			return p, nil
		case pki.KindAgent:
			if err := s.checkRevoked(id.ID, leaf); err != nil {
				return auth.Principal{}, err
			}
			return auth.Principal{Kind: auth.KindAgent, ID: id.ID, Cluster: id.Cluster, Expires: leaf.NotAfter, Labels: id.Labels}, nil
		case pki.KindClient:
			if !hasToken(md) {
				role, err := auth.ParseRole(id.Role)
				if err != nil {
					return auth.Principal{}, status.Errorf(codes.Unauthenticated, "client certificate %s: %v", id, err)
				}
				return auth.Principal{Kind: auth.KindClient, ID: id.ID, Cluster: id.Cluster, Grants: []auth.Grant{{Role: role}}, Expires: leaf.NotAfter}, nil
			}
		}
	}
	if v := md.Get(authorizationKey); len(v) > 0 {
		return s.tokenPrincipal(v[0])
	}
	return auth.Anonymous, nil
}

func hasToken(md metadata.MD) bool { return len(md.Get(authorizationKey)) > 0 }

// memberPeer refuses a server certificate whose node is not a registered
// member: every server of the CA is not every member of the cluster (a
// removed server keeps a valid certificate). A node with no registered
// servers yet (a new cluster, a node that has not received the log) has
// no list to check against.
//
// The raft configuration counts too: after a restart the replica holds
// only what its snapshot held until a leader is elected, and members that
// registered after that snapshot must still be able to vote.
func (s *Server) memberPeer(id string) error {
	if _, err := s.store.Server(id); err == nil || !s.store.HasServers() {
		return nil
	}
	if r := s.raftReady.Load(); r != nil && isMember(r, id) {
		return nil
	}
	return fmt.Errorf("server %q is not a member of this cluster: it was removed, or has not joined ('relctl cluster members' lists the members)", id)
}

// checkRevoked refuses an agent certificate issued before the agent was
// revoked.
func (s *Server) checkRevoked(agentID string, leaf *x509.Certificate) error {
	rev := s.store.Revocation(agentID)
	if rev == nil {
		return nil
	}
	at := time.Unix(0, rev.GetRevokedUnixNano())
	if leaf.NotBefore.After(at) {
		return nil
	}
	msg := fmt.Sprintf("agent %q was revoked at %s", agentID, at.UTC().Format(time.RFC3339))
	if rev.GetReason() != "" {
		msg += " (" + rev.GetReason() + ")"
	}
	return status.Error(codes.Unauthenticated, msg+": its certificates are refused; it may enrol again only with a join token made since")
}

func (s *Server) tokenPrincipal(header string) (auth.Principal, error) {
	secret, ok := strings.CutPrefix(header, "Bearer ")
	if !ok || secret == "" {
		return auth.Principal{}, status.Error(codes.Unauthenticated, "authorization metadata is not 'Bearer <token>'")
	}
	return s.tokenPrincipalByHash(auth.HashSecret(strings.TrimSpace(secret)))
}

// tokenPrincipalByHash is the holder of the token whose secret hashes to
// hash (auth.HashSecret); the dashboard keeps only the hash in a session.
func (s *Server) tokenPrincipalByHash(hash string) (auth.Principal, error) {
	tok, err := s.store.ACLTokenBySecret(hash)
	if err != nil && !replicaCaughtUp(s.raftReady.Load()) {
		// A replica that is still replaying the log after a restart (or
		// has no leader) may not hold a token made since: it says so, and
		// relctl asks the next server, instead of calling a good token
		// unknown.
		return auth.Principal{}, status.Error(codes.Unavailable, "this server is catching up with the cluster and does not know this token yet: try another server")
	}
	if err != nil {
		return auth.Principal{}, status.Error(codes.Unauthenticated, "token not known to this cluster: it was revoked, or belongs to another cluster (check --token-file / REL_TOKEN; 'relctl acl token create' makes one)")
	}
	p := auth.Principal{Kind: auth.KindToken, ID: tok.GetAccessorId(), Name: tok.GetName(), Cluster: s.cluster()}
	if exp := tok.GetExpiresUnixNano(); exp != 0 {
		p.Expires = time.Unix(0, exp)
		if time.Now().After(p.Expires) {
			return auth.Principal{}, status.Errorf(codes.Unauthenticated, "token %s (%s) expired at %s: ask for a new one", tok.GetAccessorId(), tok.GetName(), p.Expires.UTC().Format(time.RFC3339))
		}
	}
	if p.Grants, err = auth.TokenGrants(tok); err != nil {
		return auth.Principal{}, status.Errorf(codes.Internal, "token %s: %v", tok.GetAccessorId(), err)
	}
	return p, nil
}

// replicaCaughtUp reports whether r knows a leader and has applied what it
// knows to be committed; false before raft has started.
func replicaCaughtUp(r *raft.Raft) bool {
	if r == nil {
		return false
	}
	_, leader := r.LeaderWithID()
	commit := r.CommitIndex()
	return leader != "" && commit > 0 && r.AppliedIndex() >= commit
}

// peerCert is the verified certificate the connection was made with.
func peerCert(ctx context.Context) (pki.Identity, *x509.Certificate, bool, error) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return pki.Identity{}, nil, false, nil
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok {
		return pki.Identity{}, nil, false, nil
	}
	return transport.PeerIdentity(&info.State)
}

func encodeCaller(p auth.Principal) string {
	b, _ := proto.Marshal(p.Proto())
	return base64.RawStdEncoding.EncodeToString(b)
}

func decodeCaller(v string) (auth.Principal, error) {
	b, err := base64.RawStdEncoding.DecodeString(v)
	if err != nil {
		return auth.Principal{}, err
	}
	var pp relv1.Principal
	if err := proto.Unmarshal(b, &pp); err != nil {
		return auth.Principal{}, err
	}
	return auth.FromProto(&pp)
}

// authorize applies method's rule to p.
func (s *Server) authorize(p auth.Principal, method string, req any) error {
	r, ok := rules[method]
	if !ok {
		return status.Errorf(codes.PermissionDenied, "%s has no authorization rule: refused to everybody", method)
	}
	if r.anyone {
		return nil
	}
	for _, k := range r.kinds {
		if p.Kind == k {
			return nil
		}
	}
	short := method[strings.LastIndex(method, "/")+1:]
	if p.IsPerson() && r.perm != "" {
		var res auth.Resource
		if r.resource != nil && req != nil {
			res = r.resource(s, req)
		}
		if p.Allows(r.perm, res) {
			return nil
		}
		if p.HasPermission(r.perm) {
			return status.Errorf(codes.PermissionDenied, "%s may not %s %s: its roles are limited to other apps or environments", p, short, describeResource(res))
		}
		return status.Errorf(codes.PermissionDenied, "%s may not %s: it needs a role with %q (%s)", p, short, r.perm, rolesWith(r.perm))
	}
	if p.Kind == auth.KindAnonymous {
		if r.perm != "" {
			return status.Errorf(codes.Unauthenticated, "%s needs credentials: give relctl a token (--token-file or REL_TOKEN) or a client certificate (--cert-file, --key-file)", short)
		}
		return status.Errorf(codes.Unauthenticated, "%s is only for %s certificates of this cluster", short, strings.Join(r.kinds, " and "))
	}
	if len(r.kinds) == 0 {
		return status.Errorf(codes.PermissionDenied, "%s may not %s: it is for people with a role (%s)", p, short, rolesWith(r.perm))
	}
	return status.Errorf(codes.PermissionDenied, "%s may not %s: only %s certificates may", p, short, strings.Join(r.kinds, " and "))
}

func describeResource(res auth.Resource) string {
	var parts []string
	if res.App != "" {
		parts = append(parts, "app "+res.App)
	}
	if res.Env != "" {
		parts = append(parts, "environment "+res.Env)
	}
	if len(parts) == 0 {
		return "this"
	}
	return "on " + strings.Join(parts, ", ")
}

func rolesWith(p auth.Permission) string {
	var out []string
	for _, r := range auth.Roles {
		if r.Has(p) {
			out = append(out, string(r))
		}
	}
	return "roles: " + strings.Join(out, ", ")
}

// unaryAuth is the one interceptor that decides every unary call.
func (s *Server) unaryAuth(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	p, err := s.authenticate(ctx, info.FullMethod)
	if err != nil {
		s.denied(info.FullMethod, p, err)
		s.auditRefusal(ctx, info.FullMethod, p, req, err)
		return nil, err
	}
	return s.callAs(ctx, p, info.FullMethod, req, handler)
}

// callAs runs handler for an authenticated principal p: the method's
// rule, then the call with p in its context, refusals recorded and
// audited. unaryAuth and the dashboard's in-process calls share it, so
// a call from a web page is decided and audited as one over gRPC.
func (s *Server) callAs(ctx context.Context, p auth.Principal, method string, req any, handler grpc.UnaryHandler) (any, error) {
	if err := s.authorize(p, method, req); err != nil {
		s.denied(method, p, err)
		s.auditRefusal(ctx, method, p, req, err)
		return nil, err
	}
	ctx, note := withAuditNote(auth.NewContext(ctx, p))
	resp, err := handler(ctx, req)
	if err != nil && !note.decided.Load() {
		s.auditRefusal(ctx, method, p, req, err)
	}
	return resp, err
}

// streamAuth is the one interceptor that decides every streaming call.
// Streams carry no request message to scope by: stream methods are
// decided on the principal alone.
func (s *Server) streamAuth(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	p, err := s.authenticate(ss.Context(), info.FullMethod)
	if err == nil {
		err = s.authorize(p, info.FullMethod, nil)
	}
	if err != nil {
		s.denied(info.FullMethod, p, err)
		s.auditRefusal(ss.Context(), info.FullMethod, p, nil, err)
		return err
	}
	ctx, note := withAuditNote(auth.NewContext(ss.Context(), p))
	err = handler(srv, &principalStream{ServerStream: ss, ctx: ctx})
	if err != nil && !note.decided.Load() {
		s.auditRefusal(ctx, info.FullMethod, p, nil, err)
	}
	return err
}

type principalStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (p *principalStream) Context() context.Context { return p.ctx }

// denied records a refusal: a counter by method and code, and a log line
// with who was refused.
func (s *Server) denied(method string, p auth.Principal, err error) {
	code := status.Code(err)
	s.metrics.authDenied.WithLabelValues(method, code.String()).Inc()
	s.logger.Warn("request refused", "method", method, "caller", p.String(), "via", p.Via, "code", code.String(), "err", status.Convert(err).Message())
}

// forwardCtx marks a request one server forwards to another and passes
// along who made it, so the receiving server authorizes the original
// caller, not the forwarding server, and the request's id, so that the
// request is applied once however often it is sent.
func forwardCtx(ctx context.Context) context.Context {
	// The server forwarded to decides, and records a refusal itself.
	markDecided(ctx)
	kv := []string{forwardedKey, "1", callerKey, encodeCaller(auth.FromContext(ctx))}
	if id := requestID(ctx); id != "" {
		kv = append(kv, reqid.MetadataKey, id)
	}
	return metadata.AppendToOutgoingContext(ctx, kv...)
}
