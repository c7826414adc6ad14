package server_test

import (
	"context"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/relhq/rel/internal/auth"
	"github.com/relhq/rel/internal/testcluster"
	relv1 "github.com/relhq/rel/proto/rel/v1"
)

// Callers of the authorization test, by name.
const (
	cNone           = "no credentials"
	cViewerCert     = "viewer certificate"
	cViewerToken    = "viewer token"
	cCreatorCert    = "release-creator certificate"
	cDeployerToken  = "deployer token"
	cOperatorCert   = "operator certificate"
	cAdminCert      = "admin certificate"
	cAdminToken     = "admin token"
	cAgentCert      = "agent certificate"
	cServerCert     = "server certificate"
	cClientAsServer = "client certificate named like a server"
)

// expectation is who may call a method. anonymous methods answer callers
// without credentials; allowed callers get past authorization (whatever
// the handler then says of an empty request); denied ones get
// PermissionDenied.
type expectation struct {
	anonymous bool
	allowed   []string
	denied    []string
}

var (
	people    = []string{cAgentCert, cServerCert}
	readers   = expectation{allowed: []string{cViewerCert, cViewerToken, cAdminToken}, denied: people}
	deployers = expectation{allowed: []string{cDeployerToken, cAdminCert}, denied: []string{cViewerToken, cCreatorCert, cAgentCert, cServerCert}}
	approvers = expectation{allowed: []string{cAdminCert, cAdminToken}, denied: []string{cViewerToken, cDeployerToken, cOperatorCert, cCreatorCert, cAgentCert, cServerCert}}
	tokenOps  = expectation{allowed: []string{cOperatorCert, cAdminToken}, denied: []string{cViewerToken, cDeployerToken, cAgentCert, cServerCert}}
	internal  = expectation{allowed: []string{cServerCert}, denied: []string{cAdminCert, cAdminToken, cAgentCert, cClientAsServer, cViewerCert}}
	forAgents = expectation{allowed: []string{cAgentCert}, denied: []string{cAdminCert, cAdminToken, cServerCert, cClientAsServer}}
	// appManagers hold manage-apps (operator, admin): lifecycles, an
	// app's lifecycle, release blocks.
	appManagers = expectation{allowed: []string{cOperatorCert, cAdminToken}, denied: []string{cViewerToken, cDeployerToken, cCreatorCert, cAgentCert, cServerCert}}
	anyone      = expectation{anonymous: true, allowed: []string{cNone, cViewerToken, cAgentCert, cServerCert}}
)

// authzExpectations is the decision table as this test expects it, method
// by method. A method the server registers that is missing here fails the
// test: adding an RPC means deciding, and writing down, who may call it.
var authzExpectations = map[string]expectation{
	relv1.FreezeService_CreateFreeze_FullMethodName:       {allowed: []string{cOperatorCert, cAdminToken}, denied: []string{cViewerToken, cDeployerToken, cCreatorCert, cAgentCert, cServerCert}},
	relv1.FreezeService_DeleteFreeze_FullMethodName:       {allowed: []string{cOperatorCert, cAdminToken}, denied: []string{cViewerToken, cDeployerToken, cCreatorCert, cAgentCert, cServerCert}},
	relv1.FreezeService_ListFreezes_FullMethodName:        readers,
	relv1.FreezeService_FreezeStatus_FullMethodName:       readers,
	relv1.ReportService_ReleaseNotes_FullMethodName:       readers,
	relv1.ReportService_Report_FullMethodName:             readers,
	relv1.ControlService_CreateApp_FullMethodName:         {allowed: []string{cOperatorCert, cAdminToken}, denied: []string{cViewerToken, cDeployerToken, cCreatorCert, cAgentCert, cServerCert}},
	relv1.ControlService_ListApps_FullMethodName:          readers,
	relv1.ControlService_CreateEnvironment_FullMethodName: {allowed: []string{cOperatorCert}, denied: []string{cViewerCert, cDeployerToken, cAgentCert}},
	relv1.ControlService_ListEnvironments_FullMethodName:  readers,
	relv1.ControlService_UpdateEnvironment_FullMethodName: {allowed: []string{cOperatorCert, cAdminToken}, denied: []string{cViewerCert, cViewerToken, cDeployerToken, cAgentCert, cServerCert}},
	relv1.ControlService_DeleteEnvironment_FullMethodName: {allowed: []string{cOperatorCert, cAdminToken}, denied: []string{cViewerCert, cViewerToken, cDeployerToken, cAgentCert, cServerCert}},
	relv1.ControlService_DeleteRelease_FullMethodName:     {allowed: []string{cOperatorCert, cAdminToken}, denied: []string{cViewerCert, cViewerToken, cCreatorCert, cDeployerToken, cAgentCert, cServerCert}},
	relv1.ControlService_CreateRelease_FullMethodName:     {allowed: []string{cCreatorCert, cAdminToken}, denied: []string{cViewerToken, cDeployerToken, cAgentCert, cServerCert}},
	relv1.ControlService_ListReleases_FullMethodName:      readers,
	relv1.ControlService_GetRelease_FullMethodName:        readers,
	relv1.ControlService_StartRollout_FullMethodName:      deployers,
	relv1.ControlService_GetRollout_FullMethodName:        readers,
	relv1.ControlService_ListRollouts_FullMethodName:      readers,
	relv1.ControlService_ListAgents_FullMethodName:        readers,
	relv1.ControlService_GetAgent_FullMethodName:          readers,
	relv1.ControlService_History_FullMethodName:           readers,
	relv1.ControlService_PlanRollout_FullMethodName:       readers,
	relv1.ControlService_ControlRollout_FullMethodName:    deployers,
	relv1.ApprovalService_SetPolicy_FullMethodName:        {allowed: []string{cOperatorCert, cAdminToken}, denied: []string{cViewerToken, cDeployerToken, cAgentCert, cServerCert}},
	relv1.ApprovalService_Approve_FullMethodName:          approvers,
	relv1.ApprovalService_Reject_FullMethodName:           approvers,
	relv1.ApprovalService_Review_FullMethodName:           approvers,
	relv1.ApprovalService_Pending_FullMethodName:          readers,
	relv1.ApprovalService_Reviews_FullMethodName:          readers,
	relv1.ControlService_RollbackRollout_FullMethodName:   deployers,
	relv1.ControlService_RolloutEvents_FullMethodName:     readers,
	relv1.ControlService_ShowEnvironment_FullMethodName:   readers,
	relv1.ControlService_Overview_FullMethodName:          readers,

	relv1.ClusterService_Members_FullMethodName:       readers,
	relv1.ClusterService_Join_FullMethodName:          internal,
	relv1.ClusterService_Remove_FullMethodName:        {allowed: []string{cOperatorCert, cAdminToken}, denied: []string{cViewerCert, cViewerToken, cDeployerToken, cAgentCert, cServerCert}},
	relv1.ClusterService_Status_FullMethodName:        {allowed: []string{cServerCert, cViewerCert}, denied: []string{cAgentCert}},
	relv1.ClusterService_Apply_FullMethodName:         internal,
	relv1.ClusterService_FetchArtifact_FullMethodName: internal,
	relv1.ClusterService_LocalAgents_FullMethodName:   internal,

	relv1.AgentService_Connect_FullMethodName: forAgents,

	relv1.ArtifactService_Upload_FullMethodName:        {allowed: []string{cCreatorCert, cAdminToken}, denied: []string{cViewerToken, cDeployerToken, cAgentCert, cServerCert}},
	relv1.ArtifactService_ListArtifacts_FullMethodName: readers,

	relv1.ACLService_Bootstrap_FullMethodName:       anyone,
	relv1.ACLService_CreateToken_FullMethodName:     tokenOps,
	relv1.ACLService_ListTokens_FullMethodName:      tokenOps,
	relv1.ACLService_RevokeToken_FullMethodName:     tokenOps,
	relv1.ACLService_WhoAmI_FullMethodName:          anyone,
	relv1.ACLService_CreateJoinToken_FullMethodName: tokenOps,
	relv1.ACLService_ListJoinTokens_FullMethodName:  tokenOps,
	relv1.ACLService_RevokeJoinToken_FullMethodName: tokenOps,
	relv1.ACLService_RevokeAgent_FullMethodName:     tokenOps,

	relv1.LifecycleService_CreateLifecycle_FullMethodName: appManagers,
	relv1.LifecycleService_UpdateLifecycle_FullMethodName: appManagers,
	relv1.LifecycleService_DeleteLifecycle_FullMethodName: appManagers,
	relv1.LifecycleService_GetLifecycle_FullMethodName:    readers,
	relv1.LifecycleService_ListLifecycles_FullMethodName:  readers,
	relv1.LifecycleService_SetAppLifecycle_FullMethodName: appManagers,
	relv1.LifecycleService_BlockRelease_FullMethodName:    appManagers,
	relv1.LifecycleService_PromoteRelease_FullMethodName:  deployers,
	relv1.LifecycleService_ReleaseStatus_FullMethodName:   readers,

	relv1.EnrollService_Enroll_FullMethodName: anyone,
	relv1.EnrollService_Renew_FullMethodName:  forAgents,

	relv1.AuditService_ListAudit_FullMethodName:          readers,
	relv1.AuditService_AuditCheckpoint_FullMethodName:    readers,
	relv1.AuditService_MarkAuditArchived_FullMethodName:  {allowed: []string{cOperatorCert, cAdminToken}, denied: []string{cViewerCert, cViewerToken, cDeployerToken, cCreatorCert, cAgentCert, cServerCert}},
	relv1.EventService_ListEvents_FullMethodName:         readers,
	relv1.EventService_FollowEvents_FullMethodName:       readers,
	relv1.WebhookService_CreateWebhook_FullMethodName:    appManagers,
	relv1.WebhookService_DeleteWebhook_FullMethodName:    appManagers,
	relv1.WebhookService_RedeliverWebhook_FullMethodName: appManagers,
	relv1.WebhookService_ListWebhooks_FullMethodName:     readers,
	relv1.WebhookService_GetWebhook_FullMethodName:       readers,
}

// call invokes method on the wire with an empty request, as a unary call
// or a stream (one empty message, then the answer).
func call(ctx context.Context, conn *grpc.ClientConn, method string, mi grpc.MethodInfo) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if !mi.IsClientStream && !mi.IsServerStream {
		return conn.Invoke(ctx, method, &emptypb.Empty{}, &emptypb.Empty{})
	}
	st, err := conn.NewStream(ctx, &grpc.StreamDesc{ClientStreams: mi.IsClientStream, ServerStreams: mi.IsServerStream}, method)
	if err != nil {
		return err
	}
	if err := st.SendMsg(&emptypb.Empty{}); err != nil && err.Error() != "EOF" {
		return err
	}
	if err := st.CloseSend(); err != nil {
		return err
	}
	return st.RecvMsg(&emptypb.Empty{})
}

// TestAuthorizationEveryMethod enumerates every method of every service the
// server registers, from the gRPC descriptors, and calls each on the wire:
// without credentials it is refused (Unauthenticated) unless it is one of
// the few anonymous methods; each wrong caller gets PermissionDenied; each
// right caller gets past authorization.
func TestAuthorizationEveryMethod(t *testing.T) {
	c := testcluster.New(t, 1, testcluster.Options{})
	n := c.Nodes[0]
	addr := n.GRPCAddr()
	admin := n.Admin()
	viewerToken, _ := createToken(t, admin, "viewer", []string{"viewer"}, nil, 0)
	deployerToken, _ := createToken(t, admin, "deployer", []string{"deployer"}, nil, 0)
	adminToken, _ := createToken(t, admin, "admin", []string{"admin"}, nil, 0)
	callers := map[string]*grpc.ClientConn{
		cNone:          c.As(addr, nil),
		cViewerCert:    idConn(t, c, addr, testcluster.ClientID("eve", auth.Viewer)),
		cViewerToken:   tokenConn(t, c, addr, viewerToken),
		cCreatorCert:   idConn(t, c, addr, testcluster.ClientID("ci", auth.ReleaseCreator)),
		cDeployerToken: tokenConn(t, c, addr, deployerToken),
		cOperatorCert:  idConn(t, c, addr, testcluster.ClientID("ops", auth.Operator)),
		cAdminCert:     admin,
		cAdminToken:    tokenConn(t, c, addr, adminToken),
		cAgentCert:     idConn(t, c, addr, testcluster.AgentID("web-1")),
		// A member's certificate: non-members may only join (TestNonMemberServer).
		cServerCert:     idConn(t, c, addr, testcluster.ServerID("s1")),
		cClientAsServer: idConn(t, c, addr, testcluster.ClientID("s2", auth.Admin)),
	}
	ctx := ctxT(t)

	registered := map[string]bool{}
	services := n.Server().GRPCServiceInfo()
	names := make([]string, 0, len(services))
	for svc := range services {
		names = append(names, svc)
	}
	sort.Strings(names)
	if len(names) < 6 {
		t.Fatalf("only %d services registered: %v", len(names), names)
	}
	for _, svc := range names {
		for _, mi := range services[svc].Methods {
			method := "/" + svc + "/" + mi.Name
			registered[method] = true
			exp, ok := authzExpectations[method]
			if !ok {
				t.Errorf("add an authorization expectation for %s (and a rule in internal/server/authz.go)", method)
				continue
			}
			t.Run(strings.TrimPrefix(method, "/rel.v1."), func(t *testing.T) {
				if !exp.anonymous {
					err := call(ctx, callers[cNone], method, mi)
					wantCode(t, "without credentials", err, codes.Unauthenticated)
				}
				if !exp.anonymous && len(exp.denied) == 0 {
					t.Errorf("no wrong caller listed for %s: name at least one", method)
				}
				for _, who := range exp.denied {
					wantCode(t, who, call(ctx, callers[who], method, mi), codes.PermissionDenied)
				}
				for _, who := range exp.allowed {
					err := call(ctx, callers[who], method, mi)
					if code := status.Code(err); code == codes.Unauthenticated || code == codes.PermissionDenied {
						t.Errorf("%s: %v, want it past authorization", who, err)
					}
				}
			})
		}
	}
	for method := range authzExpectations {
		if !registered[method] {
			t.Errorf("authorization expectation for %s, which the server does not register", method)
		}
	}
	if !slices.Contains(names, "rel.v1.ClusterService") || !slices.Contains(names, "rel.v1.AgentService") {
		t.Errorf("services %v", names)
	}
}
