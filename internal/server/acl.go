package server

import (
	"context"
	"errors"
	"time"

	"github.com/hashicorp/go-memdb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/relhq/rel/internal/auth"
	"github.com/relhq/rel/internal/pki"
	"github.com/relhq/rel/internal/state"
	"github.com/relhq/rel/internal/validate"
	relv1 "github.com/relhq/rel/proto/rel/v1"
)

// Join token defaults and limits.
const (
	DefaultJoinTokenTTL = time.Hour
	MaxJoinTokenTTL     = 30 * 24 * time.Hour
	// MaxACLTokenTTL is the longest a token with an expiry may live; a
	// token without one lives until revoked.
	MaxACLTokenTTL = 10 * 365 * 24 * time.Hour
)

// aclService implements relv1.ACLService. Secrets are made here, on the
// server that received the request, before raft.Apply; only their hashes
// are replicated, and the secret is returned once.
type aclService struct {
	relv1.UnimplementedACLServiceServer
	s *Server
}

func withoutHash(t *relv1.ACLToken) *relv1.ACLToken {
	out := proto.Clone(t).(*relv1.ACLToken)
	out.SecretHash = ""
	return out
}

func withoutJoinHash(t *relv1.JoinToken) *relv1.JoinToken {
	out := proto.Clone(t).(*relv1.JoinToken)
	out.SecretHash = ""
	return out
}

// Bootstrap makes the first management token. It needs no credentials:
// the FSM accepts it once per cluster, so whoever runs it first (the
// operator who built the cluster, on a TLS connection to it) gets the
// token, and every later attempt is refused.
func (a *aclService) Bootstrap(ctx context.Context, _ *relv1.ACLBootstrapRequest) (*relv1.ACLTokenSecretResponse, error) {
	if idx, accessor, ok, err := a.s.repeatedAnswer(ctx, &relv1.Command{Kind: &relv1.Command_AclBootstrap{AclBootstrap: &relv1.ACLBootstrap{}}}); ok {
		if err != nil {
			return nil, err
		}
		return nil, secretShownOnce("the management token", accessor, "relctl acl token revoke", idx)
	}
	if a.s.store.ACLBootstrapped() {
		return nil, status.Error(codes.FailedPrecondition, "ACLs are already bootstrapped: ask an admin for a token (relctl acl token create), or use an admin client certificate made with the CA key")
	}
	tok, secret, err := newACLToken("management", []string{string(auth.Admin)}, nil, nil, 0, auth.FromContext(ctx))
	if err != nil {
		return nil, toStatus(err)
	}
	res, err := a.s.applyCommand(ctx, &relv1.Command{StampedUnixNano: tok.GetCreatedUnixNano(), Kind: &relv1.Command_AclBootstrap{AclBootstrap: &relv1.ACLBootstrap{Token: tok}}})
	if err != nil {
		return nil, toStatus(err)
	}
	if res.Duplicate && res.Ref != tok.GetAccessorId() {
		return nil, secretShownOnce("the management token", res.Ref, "relctl acl token revoke", res.Index)
	}
	idx := res.Index
	a.s.logger.Info("ACLs bootstrapped: management token created", "accessor", tok.GetAccessorId(), "by", auth.FromContext(ctx).String())
	tok.CreateIndex, tok.ModifyIndex = idx, idx
	return &relv1.ACLTokenSecretResponse{Token: withoutHash(tok), Secret: secret, Index: idx}, nil
}

func newACLToken(name string, roles, apps, envs []string, ttl time.Duration, by auth.Principal) (*relv1.ACLToken, string, error) {
	secret, err := auth.NewSecret(auth.TokenPrefix)
	if err != nil {
		return nil, "", err
	}
	now := time.Now()
	tok := &relv1.ACLToken{
		AccessorId: auth.NewAccessor(), SecretHash: auth.HashSecret(secret), Name: name,
		Roles: roles, Apps: apps, Environments: envs, CreatedUnixNano: now.UnixNano(), CreatedBy: by.String(),
	}
	if ttl > 0 {
		tok.ExpiresUnixNano = now.Add(ttl).UnixNano()
	}
	return tok, secret, nil
}

// CreateToken makes a token. Nobody grants more than they hold: each role
// must be one the caller may hand out (admins any; operators any but admin),
// and a caller whose own grant is limited to some apps or environments may
// not make tokens.
func (a *aclService) CreateToken(ctx context.Context, req *relv1.CreateACLTokenRequest) (*relv1.ACLTokenSecretResponse, error) {
	p := auth.FromContext(ctx)
	if err := validate.TokenName(req.GetName()); err != nil {
		return nil, toStatus(err)
	}
	if len(req.GetRoles()) == 0 {
		return nil, status.Errorf(codes.InvalidArgument, "a token needs at least one role: give --role (%s)", auth.RoleNames())
	}
	// Compare seconds before converting: a huge ttl_seconds would overflow
	// a Duration into a small or negative one.
	if req.GetTtlSeconds() < 0 || req.GetTtlSeconds() > int64(MaxACLTokenTTL/time.Second) {
		return nil, status.Errorf(codes.InvalidArgument, "token TTL %ds: want 0 (no expiry) up to %s", req.GetTtlSeconds(), MaxACLTokenTTL)
	}
	for _, name := range req.GetRoles() {
		role, err := auth.ParseRole(name)
		if err != nil {
			return nil, status.Error(codes.InvalidArgument, err.Error())
		}
		if !mayGrant(p, role) {
			return nil, status.Errorf(codes.PermissionDenied, "%s may not create a token with role %s: only admins make admin tokens, and a caller limited to some apps or environments makes none", p, role)
		}
	}
	tok, secret, err := newACLToken(req.GetName(), req.GetRoles(), req.GetApps(), req.GetEnvironments(), time.Duration(req.GetTtlSeconds())*time.Second, p)
	if err != nil {
		return nil, toStatus(err)
	}
	res, err := a.s.applyCommand(ctx, &relv1.Command{StampedUnixNano: tok.GetCreatedUnixNano(), Kind: &relv1.Command_CreateAclToken{CreateAclToken: &relv1.CreateACLToken{Token: tok}}})
	if err != nil {
		return nil, toStatus(err)
	}
	if res.Duplicate && res.Ref != tok.GetAccessorId() {
		return nil, secretShownOnce("token", res.Ref, "relctl acl token revoke", res.Index)
	}
	idx := res.Index
	a.s.logger.Info("token created", "accessor", tok.GetAccessorId(), "name", tok.GetName(), "roles", tok.GetRoles(), "by", p.String())
	tok.CreateIndex, tok.ModifyIndex = idx, idx
	return &relv1.ACLTokenSecretResponse{Token: withoutHash(tok), Secret: secret, Index: idx}, nil
}

func mayGrant(p auth.Principal, role auth.Role) bool {
	for _, g := range p.Grants {
		if len(g.Apps) == 0 && len(g.Envs) == 0 && g.Role.MayGrant(role) {
			return true
		}
	}
	return false
}

func (a *aclService) ListTokens(ctx context.Context, _ *relv1.ListACLTokensRequest) (*relv1.ListACLTokensResponse, error) {
	toks, idx, err := a.s.store.ACLTokens(memdb.NewWatchSet())
	if err != nil {
		return nil, toStatus(err)
	}
	resp := &relv1.ListACLTokensResponse{Index: idx}
	for _, t := range toks {
		resp.Tokens = append(resp.Tokens, withoutHash(t))
	}
	return resp, nil
}

func (a *aclService) RevokeToken(ctx context.Context, req *relv1.RevokeACLTokenRequest) (*relv1.RevokeACLTokenResponse, error) {
	if err := validate.Accessor(req.GetAccessorId()); err != nil {
		return nil, toStatus(err)
	}
	idx, err := a.s.apply(ctx, &relv1.Command{Kind: &relv1.Command_DeleteAclToken{DeleteAclToken: &relv1.DeleteACLToken{AccessorId: req.GetAccessorId()}}})
	if err != nil {
		return nil, toStatus(err)
	}
	a.s.logger.Info("token revoked", "accessor", req.GetAccessorId(), "by", auth.FromContext(ctx).String())
	return &relv1.RevokeACLTokenResponse{Index: idx}, nil
}

func (a *aclService) WhoAmI(ctx context.Context, _ *relv1.WhoAmIRequest) (*relv1.WhoAmIResponse, error) {
	return &relv1.WhoAmIResponse{Principal: auth.FromContext(ctx).Proto(), ServerId: a.s.cfg.NodeID}, nil
}

// CreateJoinToken makes a join token and says which CA pins agents should
// check on their first contact.
func (a *aclService) CreateJoinToken(ctx context.Context, req *relv1.CreateJoinTokenRequest) (*relv1.CreateJoinTokenResponse, error) {
	p := auth.FromContext(ctx)
	if req.GetTtlSeconds() < 0 || req.GetTtlSeconds() > int64(MaxJoinTokenTTL/time.Second) {
		return nil, status.Errorf(codes.InvalidArgument, "join token TTL %ds: want up to %s", req.GetTtlSeconds(), MaxJoinTokenTTL)
	}
	ttl := time.Duration(req.GetTtlSeconds()) * time.Second
	if ttl == 0 {
		ttl = DefaultJoinTokenTTL
	}
	for _, id := range req.GetNodeIds() {
		if err := validate.NodeID("node id", id); err != nil {
			return nil, toStatus(err)
		}
	}
	uses := req.GetUses()
	if uses == 0 {
		uses = max(1, uint32(min(len(req.GetNodeIds()), validate.MaxTokenUses+1)))
	}
	if uses > validate.MaxTokenUses {
		return nil, status.Errorf(codes.InvalidArgument, "join token uses %d: the limit is %d", uses, validate.MaxTokenUses)
	}
	if err := validate.Labels("label", req.GetLabels(), false); err != nil {
		return nil, toStatus(err)
	}
	if err := validate.Description(req.GetDescription()); err != nil {
		return nil, toStatus(err)
	}
	secret, err := auth.NewSecret(auth.JoinPrefix)
	if err != nil {
		return nil, toStatus(err)
	}
	now := time.Now()
	tok := &relv1.JoinToken{
		AccessorId: auth.NewAccessor(), SecretHash: auth.HashSecret(secret), Description: req.GetDescription(),
		CreatedUnixNano: now.UnixNano(), ExpiresUnixNano: now.Add(ttl).UnixNano(), Uses: uses, UsesLeft: uses,
		Labels: req.GetLabels(), CreatedBy: p.String(), NodeIds: req.GetNodeIds(),
	}
	res, err := a.s.applyCommand(ctx, &relv1.Command{StampedUnixNano: now.UnixNano(), Kind: &relv1.Command_CreateJoinToken{CreateJoinToken: &relv1.CreateJoinToken{Token: tok}}})
	if err != nil {
		return nil, toStatus(err)
	}
	if res.Duplicate && res.Ref != tok.GetAccessorId() {
		return nil, secretShownOnce("join token", res.Ref, "relctl agent token revoke", res.Index)
	}
	idx := res.Index
	a.s.logger.Info("join token created", "accessor", tok.GetAccessorId(), "uses", uses, "expires", time.Unix(0, tok.GetExpiresUnixNano()).UTC().Format(time.RFC3339), "by", p.String())
	tok.CreateIndex, tok.ModifyIndex = idx, idx
	resp := &relv1.CreateJoinTokenResponse{Token: withoutJoinHash(tok), Secret: secret, Index: idx}
	for _, ca := range a.s.sec.M.Current().CAs {
		resp.CaPins = append(resp.CaPins, pki.Pin(ca))
	}
	return resp, nil
}

func (a *aclService) ListJoinTokens(ctx context.Context, _ *relv1.ListJoinTokensRequest) (*relv1.ListJoinTokensResponse, error) {
	toks, idx, err := a.s.store.JoinTokens(memdb.NewWatchSet())
	if err != nil {
		return nil, toStatus(err)
	}
	resp := &relv1.ListJoinTokensResponse{Index: idx}
	for _, t := range toks {
		resp.Tokens = append(resp.Tokens, withoutJoinHash(t))
	}
	return resp, nil
}

func (a *aclService) RevokeJoinToken(ctx context.Context, req *relv1.RevokeJoinTokenRequest) (*relv1.RevokeJoinTokenResponse, error) {
	if err := validate.Accessor(req.GetAccessorId()); err != nil {
		return nil, toStatus(err)
	}
	idx, err := a.s.apply(ctx, &relv1.Command{Kind: &relv1.Command_DeleteJoinToken{DeleteJoinToken: &relv1.DeleteJoinToken{AccessorId: req.GetAccessorId()}}})
	if err != nil {
		return nil, toStatus(err)
	}
	return &relv1.RevokeJoinTokenResponse{Index: idx}, nil
}

// RevokeAgent refuses the agent's certificates issued until now. Every
// server closes the agent's streams when it applies the revocation
// (watchRevocations).
func (a *aclService) RevokeAgent(ctx context.Context, req *relv1.RevokeAgentRequest) (*relv1.RevokeAgentResponse, error) {
	if err := validate.NodeID("agent id", req.GetAgentId()); err != nil {
		return nil, toStatus(err)
	}
	if err := validate.Description(req.GetReason()); err != nil {
		return nil, toStatus(err)
	}
	if _, err := a.s.store.Agent(nil, req.GetAgentId()); errors.Is(err, state.ErrNotFound) && a.s.store.Revocation(req.GetAgentId()) == nil {
		// Revoking an id that never connected is allowed (a host whose
		// token leaked before it enrolled), but say so in the log.
		a.s.logger.Info("revoking an agent the cluster has not seen", "agent", req.GetAgentId())
	}
	now := time.Now()
	rev := &relv1.AgentRevocation{AgentId: req.GetAgentId(), RevokedUnixNano: now.UnixNano(), RevokedBy: auth.FromContext(ctx).String(), Reason: req.GetReason()}
	res, err := a.s.applyCommand(ctx, &relv1.Command{StampedUnixNano: now.UnixNano(), Kind: &relv1.Command_RevokeAgent{RevokeAgent: &relv1.RevokeAgent{Revocation: rev}}})
	if err != nil {
		return nil, toStatus(err)
	}
	if res.Duplicate {
		if first := a.s.store.Revocation(req.GetAgentId()); first != nil {
			return &relv1.RevokeAgentResponse{Revocation: first, Index: res.Index}, nil
		}
	}
	idx := res.Index
	a.s.logger.Warn("agent revoked", "agent", req.GetAgentId(), "reason", req.GetReason(), "by", rev.GetRevokedBy())
	rev.CreateIndex, rev.ModifyIndex = idx, idx
	return &relv1.RevokeAgentResponse{Revocation: rev, Index: idx}, nil
}
