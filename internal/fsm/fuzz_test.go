package fsm

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"

	"github.com/relhq/rel/internal/auth"
	"github.com/relhq/rel/internal/state"
	"github.com/relhq/rel/internal/validate"
	relv1 "github.com/relhq/rel/proto/rel/v1"
)

// FuzzApplyCommand drives what a peer's ClusterService.Apply does with
// bytes it is sent: decode, validate, and (only if both succeed) commit and
// apply. Whatever passes validation must apply without panicking and
// deterministically: two replicas applying the same entries end identical,
// and a snapshot of the result restores to the same state. A command that
// broke any of these would stop or fork the cluster once committed.
//
// Run it with:
//
//	go test -run '^$' -fuzz FuzzApplyCommand -fuzztime 60s ./internal/fsm/
func FuzzApplyCommand(f *testing.F) {
	for _, cmd := range seedCommands() {
		b, err := proto.Marshal(cmd)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	base := baseHistory()
	f.Fuzz(func(t *testing.T, data []byte) {
		var cmd relv1.Command
		if err := proto.Unmarshal(data, &cmd); err != nil {
			t.Skip("undecodable: the leader refuses it before raft.Apply")
		}
		if err := validate.Command(&cmd); err != nil {
			t.Skip("invalid: the leader refuses it before raft.Apply")
		}
		// The leader proposes its own encoding of what it validated.
		entry, err := proto.Marshal(&cmd)
		if err != nil {
			t.Fatal(err)
		}
		a, b := New(state.New()), New(state.New())
		for i, c := range base {
			for _, f := range []*FSM{a, b} {
				if res := f.Apply(logEntry(t, uint64(i+1), c)).(*Result); res.Err != nil {
					t.Fatalf("base history entry %d: %v", i+1, res.Err)
				}
			}
		}
		// Twice: the second application meets what the first left behind
		// (duplicates, conflicts, changed indexes).
		for i := 0; i < 2; i++ {
			l := &raft.Log{Index: uint64(len(base) + 1 + i), Term: 1, Type: raft.LogCommand, Data: entry}
			ra, rb := a.Apply(l).(*Result), b.Apply(l).(*Result)
			if fmt.Sprint(ra.Err) != fmt.Sprint(rb.Err) || ra.Index != rb.Index || fmt.Sprint(ra.Items) != fmt.Sprint(rb.Items) {
				t.Fatalf("replicas disagree on entry %d: %v %v / %v %v", l.Index, ra.Err, ra.Items, rb.Err, rb.Items)
			}
			for _, err := range ra.Items {
				if err != nil && !isApplicationError(err) {
					t.Fatalf("entry %d: an item failed with an internal error: %v\ncommand: %v", l.Index, err, &cmd)
				}
			}
			if ra.Err != nil && !isApplicationError(ra.Err) {
				t.Fatalf("entry %d failed with an internal error (a validated command the store cannot hold): %v\ncommand: %v", l.Index, ra.Err, &cmd)
			}
		}
		if ok, why := state.Equal(a.Store(), b.Store()); !ok {
			t.Fatalf("replicas differ after the same entries: %s\ncommand: %v", why, &cmd)
		}
		var buf bytes.Buffer
		if err := a.Store().Snapshot().Persist(&buf); err != nil {
			t.Fatalf("snapshot: %v", err)
		}
		c := New(state.New())
		if err := c.Restore(io.NopCloser(&buf)); err != nil {
			t.Fatalf("restore of a snapshot: %v\ncommand: %v", err, &cmd)
		}
		if ok, why := state.Equal(a.Store(), c.Store()); !ok {
			t.Fatalf("snapshot does not restore to the same state: %s\ncommand: %v", why, &cmd)
		}
	})
}

// isApplicationError reports whether err is a verdict the FSM returns as
// data (the same on every replica), as opposed to a failure of the store.
func isApplicationError(err error) bool {
	for _, s := range []error{state.ErrNotFound, state.ErrAlreadyExists, state.ErrConflict, state.ErrUnauthenticated, state.ErrPermissionDenied, state.ErrRequestIDReused} {
		if errors.Is(err, s) {
			return true
		}
	}
	return false
}

func logEntry(t testing.TB, idx uint64, cmd *relv1.Command) *raft.Log {
	t.Helper()
	b, err := proto.Marshal(cmd)
	if err != nil {
		t.Fatal(err)
	}
	return &raft.Log{Index: idx, Term: 1, Type: raft.LogCommand, Data: b}
}

const (
	fuzzSHA      = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
	fuzzAccessor = "0123456789abcdef"
	fuzzJoinAcc  = "fedcba9876543210"
)

var (
	fuzzTokenHash = auth.HashSecret("relt_fuzz")
	fuzzJoinHash  = auth.HashSecret("relj_fuzz")
)

func stamped(n int64, kind any) *relv1.Command {
	c := &relv1.Command{StampedUnixNano: n}
	// The oneof's interface type is unexported: name each wrapper.
	switch k := kind.(type) {
	case *relv1.Command_CreateApp:
		c.Kind = k
	case *relv1.Command_CreateEnvironment:
		c.Kind = k
	case *relv1.Command_UpdateEnvironment:
		c.Kind = k
	case *relv1.Command_DeleteEnvironment:
		c.Kind = k
	case *relv1.Command_CreateRelease:
		c.Kind = k
	case *relv1.Command_RegisterServer:
		c.Kind = k
	case *relv1.Command_DeregisterServer:
		c.Kind = k
	case *relv1.Command_AgentUp:
		c.Kind = k
	case *relv1.Command_AgentDown:
		c.Kind = k
	case *relv1.Command_ReportBatch:
		c.Kind = k
	case *relv1.Command_AgentSessions:
		c.Kind = k
	case *relv1.Command_CreateRollout:
		c.Kind = k
	case *relv1.Command_RolloutStep:
		c.Kind = k
	case *relv1.Command_RolloutStepDelta:
		c.Kind = k
	case *relv1.Command_RolloutControl:
		c.Kind = k
	case *relv1.Command_InitCluster:
		c.Kind = k
	case *relv1.Command_AclBootstrap:
		c.Kind = k
	case *relv1.Command_CreateAclToken:
		c.Kind = k
	case *relv1.Command_DeleteAclToken:
		c.Kind = k
	case *relv1.Command_CreateJoinToken:
		c.Kind = k
	case *relv1.Command_UseJoinToken:
		c.Kind = k
	case *relv1.Command_DeleteJoinToken:
		c.Kind = k
	case *relv1.Command_CreateFreeze:
		c.Kind = k
	case *relv1.Command_DeleteFreeze:
		c.Kind = k
	case *relv1.Command_RevokeAgent:
		c.Kind = k
	case *relv1.Command_RemoveRollouts:
		c.Kind = k
	case *relv1.Command_FoldHistory:
		c.Kind = k
	case *relv1.Command_PruneDeployments:
		c.Kind = k
	case *relv1.Command_RemoveAgents:
		c.Kind = k
	case *relv1.Command_DeleteRelease:
		c.Kind = k
	case *relv1.Command_RemoveArtifacts:
		c.Kind = k
	case *relv1.Command_CreateLifecycle:
		c.Kind = k
	case *relv1.Command_UpdateLifecycle:
		c.Kind = k
	case *relv1.Command_DeleteLifecycle:
		c.Kind = k
	case *relv1.Command_SetAppLifecycle:
		c.Kind = k
	case *relv1.Command_BlockRelease:
		c.Kind = k
	case *relv1.Command_ApproveRollout:
		c.Kind = k
	case *relv1.Command_RejectRollout:
		c.Kind = k
	case *relv1.Command_ReviewRollout:
		c.Kind = k
	case *relv1.Command_ExpireApprovals:
		c.Kind = k
	case *relv1.Command_SetApprovalPolicy:
		c.Kind = k
	case *relv1.Command_AuditRefusals:
		c.Kind = k
	case *relv1.Command_TrimEvents:
		c.Kind = k
	case *relv1.Command_CreateWebhook:
		c.Kind = k
	case *relv1.Command_DeleteWebhook:
		c.Kind = k
	case *relv1.Command_WebhookProgress:
		c.Kind = k
	case *relv1.Command_RedeliverWebhook:
		c.Kind = k
	case *relv1.Command_AuditArchived:
		c.Kind = k
	case *relv1.Command_TrimAudit:
		c.Kind = k
	default:
		panic(fmt.Sprintf("unknown kind %T", kind))
	}
	return c
}

func fuzzRollout(id, state string) *relv1.Rollout {
	return &relv1.Rollout{Id: id, App: "web", Version: "1.0.0", Environment: "prod", Kind: "deploy", State: state, CreatedUnixNano: 7,
		Hosts: []*relv1.RolloutHost{{AgentId: "web-1", State: "dispatched", TargetVersion: "1.0.0"}}}
}

func fuzzDesired(rollout string) []*relv1.Desired {
	return []*relv1.Desired{{AgentId: "web-1", App: "web", Version: "1.0.0", Sha256: fuzzSHA, ArtifactUrl: "rel://sha256/" + fuzzSHA, RolloutId: rollout}}
}

// baseHistory is a small cluster's log: a server, apps, a release, a
// connected agent, a running rollout, tokens. Fuzzed commands land on it,
// so that they find rows to update, not only "not found".
func baseHistory() []*relv1.Command {
	return []*relv1.Command{
		stamped(1, &relv1.Command_RegisterServer{RegisterServer: &relv1.RegisterServer{Server: &relv1.Server{Id: "s1", RaftAddr: "127.0.0.1:7401", GrpcAddr: "127.0.0.1:7400", HttpAddr: "127.0.0.1:7480"}}}),
		stamped(2, &relv1.Command_InitCluster{InitCluster: &relv1.InitCluster{ClusterId: "cl-fuzz"}}),
		stamped(3, &relv1.Command_CreateApp{CreateApp: &relv1.CreateApp{App: &relv1.App{Name: "web", CreatedUnixNano: 3}}}),
		stamped(4, &relv1.Command_CreateEnvironment{CreateEnvironment: &relv1.CreateEnvironment{Environment: &relv1.Environment{Name: "prod", Selector: map[string]string{"env": "prod"}}}}),
		stamped(5, &relv1.Command_CreateRelease{CreateRelease: &relv1.CreateRelease{Release: &relv1.Release{App: "web", Version: "1.0.0", Sha256: fuzzSHA, ArtifactUrl: "rel://sha256/" + fuzzSHA, Size: 10}}}),
		stamped(6, &relv1.Command_AgentUp{AgentUp: &relv1.AgentUp{Agent: &relv1.Agent{Id: "web-1", Labels: map[string]string{"env": "prod"}, SessionId: "sess-1", ServerId: "s1"},
			Installed: []*relv1.AppReport{{App: "web", Version: "0.9.0", Phase: "healthy", AtUnixNano: 6}}}}),
		stamped(7, &relv1.Command_CreateRollout{CreateRollout: &relv1.CreateRollout{Rollout: fuzzRollout("ro-1", "running"), Desired: fuzzDesired("ro-1"),
			Events: []*relv1.RolloutEvent{{RolloutId: "ro-1", Seq: 1, AtUnixNano: 7, Type: "started"}}}}),
		stamped(8, &relv1.Command_AclBootstrap{AclBootstrap: &relv1.ACLBootstrap{Token: &relv1.ACLToken{AccessorId: fuzzAccessor, SecretHash: fuzzTokenHash, Name: "management", Roles: []string{"admin"}, CreatedUnixNano: 8}}}),
		stamped(9, &relv1.Command_CreateJoinToken{CreateJoinToken: &relv1.CreateJoinToken{Token: &relv1.JoinToken{AccessorId: fuzzJoinAcc, SecretHash: fuzzJoinHash, CreatedUnixNano: 9, ExpiresUnixNano: 1 << 40, Uses: 2, Labels: map[string]string{"env": "prod"}}}}),
	}
}

// seedCommands are valid commands of every kind that act on baseHistory's
// rows: the fuzzer's starting points.
func seedCommands() []*relv1.Command {
	succeeded := fuzzRollout("ro-1", "succeeded")
	succeeded.Hosts[0].State = "healthy"
	rollback := fuzzRollout("ro-2", "running")
	rollback.Kind, rollback.RollbackOf = "rollback", "ro-1"
	// Delta steps: the header and only the hosts that changed.
	headerOnly := fuzzRollout("ro-1", "failed")
	headerOnly.Hosts = nil
	unknownHost := fuzzRollout("ro-1", "running")
	unknownHost.Hosts[0].AgentId = "web-9"
	awaiting := fuzzRollout("ro-3", "awaiting_approval")
	awaiting.Hosts[0].State = "pending"
	awaiting.ChangeType, awaiting.ApprovalPolicyVersion, awaiting.ApprovalDigest, awaiting.ApprovalExpiresUnixNano = "normal", 1, fuzzSHA, 100
	awaiting.ApprovalPolicy = &relv1.ApprovalPolicy{Required: 1, Roles: []string{"approver"}}
	return []*relv1.Command{
		stamped(20, &relv1.Command_CreateApp{CreateApp: &relv1.CreateApp{App: &relv1.App{Name: "api", Description: "the API", CreatedUnixNano: 20}}}),
		stamped(21, &relv1.Command_CreateEnvironment{CreateEnvironment: &relv1.CreateEnvironment{Environment: &relv1.Environment{Name: "staging", Selector: map[string]string{"env": "staging", "tier": "web"}}}}),
		stamped(22, &relv1.Command_CreateRelease{CreateRelease: &relv1.CreateRelease{Release: &relv1.Release{App: "web", Version: "1.1.0", Sha256: fuzzSHA, ArtifactUrl: "https://a.example.com/web.tgz", Labels: map[string]string{"build": "9"}}}}),
		stamped(23, &relv1.Command_RegisterServer{RegisterServer: &relv1.RegisterServer{Server: &relv1.Server{Id: "s2", RaftAddr: "127.0.0.2:7401", GrpcAddr: "127.0.0.2:7400"}}}),
		stamped(24, &relv1.Command_DeregisterServer{DeregisterServer: &relv1.DeregisterServer{Id: "s1"}}),
		stamped(25, &relv1.Command_AgentUp{AgentUp: &relv1.AgentUp{Agent: &relv1.Agent{Id: "web-1", Labels: map[string]string{"env": "prod"}, SessionId: "sess-2", ServerId: "s1"},
			Installed: []*relv1.AppReport{{App: "web", Version: "1.0.0", Phase: "healthy", AtUnixNano: 25, RolloutId: "ro-1"}}}}),
		stamped(26, &relv1.Command_AgentDown{AgentDown: &relv1.AgentDown{AgentId: "web-1", SessionId: "sess-1", AtUnixNano: 26, Reason: "stream closed"}}),
		stamped(27, &relv1.Command_ReportBatch{ReportBatch: &relv1.ReportBatch{Reports: []*relv1.AgentReport{
			{AgentId: "web-1", SessionId: "sess-1", Report: &relv1.AppReport{App: "web", Version: "1.0.0", PreviousVersion: "0.9.0", Phase: "healthy", RolloutId: "ro-1", AtUnixNano: 27, Output: "ok"}},
			{AgentId: "web-1", SessionId: "sess-1", Report: &relv1.AppReport{App: "api", Version: "2.0.0", Phase: "failed", AtUnixNano: 27, Reason: "hook exited 3"}},
		}}}),
		stamped(28, &relv1.Command_CreateRollout{CreateRollout: &relv1.CreateRollout{Rollout: rollback, Desired: fuzzDesired("ro-2"),
			Events: []*relv1.RolloutEvent{{RolloutId: "ro-2", Seq: 1, AtUnixNano: 28, Type: "started"}}}}),
		stamped(29, &relv1.Command_RolloutStep{RolloutStep: &relv1.RolloutStep{Rollout: succeeded, ExpectModifyIndex: 7, Desired: fuzzDesired("ro-1"),
			Events: []*relv1.RolloutEvent{{RolloutId: "ro-1", Seq: 2, AtUnixNano: 29, Type: "succeeded", Host: "web-1"}}}}),
		stamped(30, &relv1.Command_RolloutStep{RolloutStep: &relv1.RolloutStep{Rollout: fuzzRollout("ro-1", "failed"), ExpectModifyIndex: 7,
			StartRollback: &relv1.CreateRollout{Rollout: rollback, Desired: fuzzDesired("ro-2")}}}),
		stamped(31, &relv1.Command_RolloutControl{RolloutControl: &relv1.RolloutControl{RolloutId: "ro-1", Action: "pause", AtUnixNano: 31, Reason: "lunch"}}),
		stamped(32, &relv1.Command_RolloutControl{RolloutControl: &relv1.RolloutControl{RolloutId: "ro-1", Action: "abort", AtUnixNano: 32}}),
		stamped(33, &relv1.Command_InitCluster{InitCluster: &relv1.InitCluster{ClusterId: "cl-other"}}),
		stamped(34, &relv1.Command_AclBootstrap{AclBootstrap: &relv1.ACLBootstrap{Token: &relv1.ACLToken{AccessorId: "00000000000000aa", SecretHash: auth.HashSecret("relt_2"), Name: "management", Roles: []string{"admin"}, CreatedUnixNano: 34}}}),
		stamped(35, &relv1.Command_CreateAclToken{CreateAclToken: &relv1.CreateACLToken{Token: &relv1.ACLToken{AccessorId: "00000000000000bb", SecretHash: auth.HashSecret("relt_3"), Name: "ci",
			Roles: []string{"deployer", "viewer"}, Apps: []string{"web*"}, Environments: []string{"prod"}, CreatedUnixNano: 35, ExpiresUnixNano: 1 << 50}}}),
		stamped(36, &relv1.Command_DeleteAclToken{DeleteAclToken: &relv1.DeleteACLToken{AccessorId: fuzzAccessor}}),
		stamped(37, &relv1.Command_CreateJoinToken{CreateJoinToken: &relv1.CreateJoinToken{Token: &relv1.JoinToken{AccessorId: "00000000000000cc", SecretHash: auth.HashSecret("relj_2"), CreatedUnixNano: 37, ExpiresUnixNano: 38, Uses: 1}}}),
		stamped(38, &relv1.Command_UseJoinToken{UseJoinToken: &relv1.UseJoinToken{SecretHash: fuzzJoinHash, AgentId: "web-2", AtUnixNano: 38}}),
		stamped(39, &relv1.Command_DeleteJoinToken{DeleteJoinToken: &relv1.DeleteJoinToken{AccessorId: fuzzJoinAcc}}),
		stamped(40, &relv1.Command_RevokeAgent{RevokeAgent: &relv1.RevokeAgent{Revocation: &relv1.AgentRevocation{AgentId: "web-1", RevokedUnixNano: 40, RevokedBy: "token x", Reason: "stolen"}}}),
		stamped(41, &relv1.Command_RolloutStepDelta{RolloutStepDelta: &relv1.RolloutStep{Rollout: succeeded, ExpectModifyIndex: 7,
			Events: []*relv1.RolloutEvent{{RolloutId: "ro-1", Seq: 2, AtUnixNano: 41, Type: "succeeded", Host: "web-1"}}}}),
		stamped(42, &relv1.Command_RolloutStepDelta{RolloutStepDelta: &relv1.RolloutStep{Rollout: headerOnly, ExpectModifyIndex: 7,
			StartRollback: &relv1.CreateRollout{Rollout: rollback, Desired: fuzzDesired("ro-2")}}}),
		stamped(43, &relv1.Command_RolloutStepDelta{RolloutStepDelta: &relv1.RolloutStep{Rollout: unknownHost, ExpectModifyIndex: 7, Desired: fuzzDesired("ro-1")}}),
		// With request ids: the fuzzer applies each entry twice, so the
		// second meets the first's record.
		withRequestID("rq-fuzz-1", stamped(44, &relv1.Command_CreateApp{CreateApp: &relv1.CreateApp{App: &relv1.App{Name: "db", CreatedUnixNano: 44}}})),
		stamped(46, &relv1.Command_UpdateEnvironment{UpdateEnvironment: &relv1.UpdateEnvironment{Environment: &relv1.Environment{Name: "prod", Selector: map[string]string{"env": "prod", "tier": "web"}},
			ExpectModifyIndex: 4, Leaving: []string{"web-1"}}}),
		withRequestID("rq-fuzz-3", stamped(47, &relv1.Command_UpdateEnvironment{UpdateEnvironment: &relv1.UpdateEnvironment{Environment: &relv1.Environment{Name: "prod", Description: "production", Selector: map[string]string{"env": "prod"}},
			ExpectModifyIndex: 4}})),
		withRequestID("rq-fuzz-4", stamped(48, &relv1.Command_DeleteEnvironment{DeleteEnvironment: &relv1.DeleteEnvironment{Name: "prod"}})),
		withRequestID("rq-fuzz-2", stamped(45, &relv1.Command_RolloutControl{RolloutControl: &relv1.RolloutControl{RolloutId: "ro-1", Action: "approve", AtUnixNano: 45, Wave: 2}})),
		stamped(49, &relv1.Command_RemoveRollouts{RemoveRollouts: &relv1.RemoveRollouts{RolloutIds: []string{"ro-1", "ro-9"}}}),
		stamped(50, &relv1.Command_RemoveArtifacts{RemoveArtifacts: &relv1.RemoveArtifacts{Digests: []string{strings.Repeat("a", 64), strings.Repeat("c", 64)}}}),
		stamped(51, &relv1.Command_FoldHistory{FoldHistory: &relv1.FoldHistory{CutoffUnixNano: 50, MaxEntries: 5000}}),
		stamped(51, &relv1.Command_PruneDeployments{PruneDeployments: &relv1.PruneDeployments{CutoffUnixNano: 50, MaxEntries: 5000}}),
		stamped(52, &relv1.Command_RemoveAgents{RemoveAgents: &relv1.RemoveAgents{AgentIds: []string{"web-1", "web-9"}, CutoffUnixNano: 40, AtUnixNano: 52}}),
		withRequestID("rq-fuzz-5", stamped(53, &relv1.Command_DeleteRelease{DeleteRelease: &relv1.DeleteRelease{App: "web", Version: "1.0.0"}})),
		// A new agent, a new session of web-1, the old session's down
		// (ignored: not the current one) and an unknown agent's down (a
		// refused item).
		stamped(54, &relv1.Command_AgentSessions{AgentSessions: &relv1.AgentSessions{
			Up: []*relv1.AgentUp{
				{Agent: &relv1.Agent{Id: "web-2", Labels: map[string]string{"env": "prod"}, SessionId: "sess-7", ServerId: "s1"}, CertNotBeforeUnixNano: 50,
					Installed: []*relv1.AppReport{{App: "web", Version: "1.0.0", Phase: "healthy", AtUnixNano: 50, RolloutId: "ro-1"}}},
				{Agent: &relv1.Agent{Id: "web-1", Labels: map[string]string{"env": "prod"}, SessionId: "sess-8", ServerId: "s1"}, CertNotBeforeUnixNano: 50},
			},
			Down: []*relv1.AgentDown{
				{AgentId: "web-1", SessionId: "sess-1", AtUnixNano: 50, Reason: "stream closed"},
				{AgentId: "web-9", SessionId: "sess-9", AtUnixNano: 50, Reason: "stream closed"},
			}}}),
		stamped(60, &relv1.Command_CreateLifecycle{CreateLifecycle: &relv1.CreateLifecycle{Lifecycle: fuzzLifecycle()}}),
		stamped(61, &relv1.Command_UpdateLifecycle{UpdateLifecycle: &relv1.UpdateLifecycle{Lifecycle: fuzzLifecycle()}}),
		stamped(62, &relv1.Command_DeleteLifecycle{DeleteLifecycle: &relv1.DeleteLifecycle{Name: "std"}}),
		stamped(63, &relv1.Command_SetAppLifecycle{SetAppLifecycle: &relv1.SetAppLifecycle{App: "web", Lifecycle: ""}}),
		stamped(64, &relv1.Command_BlockRelease{BlockRelease: &relv1.BlockRelease{App: "web", Version: "1.0.0", Blocked: true, Reason: "CVE-2026-1", AtUnixNano: 64}}),
		// Change control's approvals (70-79).
		stamped(70, &relv1.Command_SetApprovalPolicy{SetApprovalPolicy: &relv1.SetApprovalPolicy{Environment: "prod",
			Policy: &relv1.ApprovalPolicy{Required: 2, Roles: []string{"approver"}, Names: []string{"alice"}, ExpiryMs: 60_000}}}),
		stamped(71, &relv1.Command_CreateRollout{CreateRollout: &relv1.CreateRollout{Rollout: awaiting,
			Events: []*relv1.RolloutEvent{{RolloutId: "ro-3", Seq: 1, AtUnixNano: 71, Type: "awaiting_approval"}}}}),
		withAlice(stamped(72, &relv1.Command_ApproveRollout{ApproveRollout: &relv1.ApproveRollout{RolloutId: "ro-1", Comment: "lgtm", AtUnixNano: 72, Roles: []string{"approver"}}})),
		withAlice(stamped(73, &relv1.Command_RejectRollout{RejectRollout: &relv1.RejectRollout{RolloutId: "ro-1", Comment: "not now", AtUnixNano: 73, Roles: []string{"approver"}}})),
		withAlice(stamped(74, &relv1.Command_ReviewRollout{ReviewRollout: &relv1.ReviewRollout{RolloutId: "ro-1", Comment: "fine", AtUnixNano: 74}})),
		stamped(75, &relv1.Command_ExpireApprovals{ExpireApprovals: &relv1.ExpireApprovals{RolloutIds: []string{"ro-1", "ro-3"}, AtUnixNano: 75}}),
		// Refusals a server gathered, one without credentials, and some
		// it had to drop.
		stamped(90, &relv1.Command_AuditRefusals{AuditRefusals: &relv1.AuditRefusals{Server: "s1", Dropped: 3, Refusals: []*relv1.AuditRefusal{
			{TimeUnixNano: 89, Actor: &relv1.Actor{Kind: "token", Id: fuzzAccessor, Name: "ci"}, Method: "StartRollout", Code: "PermissionDenied",
				Message: "token ci may not StartRollout", RequestId: "rq-x", App: "web", Env: "prod", Server: "s1"},
			{TimeUnixNano: 90, Method: "CreateApp", Code: "Unauthenticated", Message: "CreateApp needs credentials", Server: "s1"},
		}}}),
		stamped(55, &relv1.Command_CreateFreeze{CreateFreeze: &relv1.CreateFreeze{Window: &relv1.FreezeWindow{Name: "weekend", Apps: []string{"*"}, Environments: []string{"prod"},
			CronStart: "0 18 * * FRI", CronEnd: "0 8 * * MON", TimeZone: "Europe/Berlin", Reason: "weekend freeze", CreatedUnixNano: 55}}}),
		stamped(56, &relv1.Command_CreateFreeze{CreateFreeze: &relv1.CreateFreeze{Window: &relv1.FreezeWindow{Name: "now", Apps: []string{"web*"}, Environments: []string{"prod", "prod-*"},
			StartUnixNano: 50, EndUnixNano: 50 + 86_400_000_000_000, CreatedUnixNano: 56}}}),
		withRequestID("rq-fuzz-6", stamped(57, &relv1.Command_DeleteFreeze{DeleteFreeze: &relv1.DeleteFreeze{Name: "weekend"}})),
		// The event stream's retention pass.
		stamped(58, &relv1.Command_TrimEvents{TrimEvents: &relv1.TrimEvents{BeforeSeq: 3, CutoffUnixNano: 58, MaxEvents: 2}}),
		// Webhooks: made, progress (a delivery and a dead letter), a
		// redelivery asked, deleted.
		withAlice(stamped(59, &relv1.Command_CreateWebhook{CreateWebhook: &relv1.CreateWebhook{Webhook: &relv1.Webhook{Name: "chat", Url: "https://hooks.example.com/x",
			Events: []string{"rollout.*"}, Format: "json", Secret: []byte("s3cret"), CreatedUnixNano: 59}}})),
		stamped(60, &relv1.Command_WebhookProgress{WebhookProgress: &relv1.WebhookProgress{Name: "chat", CreateIndex: 1, DeliveredSeq: 2, FailedAttempts: 4,
			Deliveries:  []*relv1.WebhookDelivery{{Seq: 1, Type: "rollout.started", Outcome: "delivered", Attempts: 1, Status: 200}, {Seq: 2, Type: "rollout.failed", Outcome: "dead_letter", Attempts: 4, Status: 500}},
			DeadLetters: []*relv1.WebhookDeadLetter{{Seq: 2, Type: "rollout.failed", Attempts: 4, Status: 500, Error: "HTTP 500", DeadUnixNano: 60}}}}),
		withAlice(stamped(61, &relv1.Command_RedeliverWebhook{RedeliverWebhook: &relv1.RedeliverWebhook{Name: "chat", Seq: 2}})),
		withAlice(stamped(62, &relv1.Command_DeleteWebhook{DeleteWebhook: &relv1.DeleteWebhook{Name: "chat"}})),
		// The audit trail's retention: a mark (refused: not record 2's
		// hash) and a pass.
		withAlice(stamped(91, &relv1.Command_AuditArchived{AuditArchived: &relv1.AuditArchived{Seq: 2, Hash: make([]byte, 32)}})),
		stamped(92, &relv1.Command_TrimAudit{TrimAudit: &relv1.TrimAudit{CutoffUnixNano: 92, MaxRecords: 3}}),
	}
}

func fuzzLifecycle() *relv1.Lifecycle {
	return &relv1.Lifecycle{Name: "std", CreatedUnixNano: 60, Phases: []*relv1.Phase{
		{Name: "prod", Environments: []string{"prod"}, Progress: "all", AutoDeploy: []string{"prod"}},
	}}
}

func withAlice(c *relv1.Command) *relv1.Command {
	c.Actor = &relv1.Actor{Kind: "token", Id: "00000000000000dd", Name: "alice"}
	return c
}

func withRequestID(id string, c *relv1.Command) *relv1.Command {
	c.RequestId = id
	return c
}

// TestFuzzSeeds keeps the seeds honest: every command kind has one, each
// is valid, and each applies to the base history without a store failure.
func TestFuzzSeeds(t *testing.T) {
	kinds := map[string]bool{}
	base := baseHistory()
	for _, cmd := range seedCommands() {
		if err := validate.Command(cmd); err != nil {
			t.Errorf("seed %v is invalid: %v", cmd, err)
		}
		kinds[string(cmd.ProtoReflect().WhichOneof(cmd.ProtoReflect().Descriptor().Oneofs().ByName("kind")).Name())] = true
		f := New(state.New())
		for i, c := range base {
			if res := f.Apply(logEntry(t, uint64(i+1), c)).(*Result); res.Err != nil {
				t.Fatalf("base entry %d: %v", i+1, res.Err)
			}
		}
		if res := f.Apply(logEntry(t, uint64(len(base)+1), cmd)).(*Result); res.Err != nil && !isApplicationError(res.Err) {
			t.Errorf("seed %v: %v", cmd, res.Err)
		}
	}
	fields := (&relv1.Command{}).ProtoReflect().Descriptor().Oneofs().ByName("kind").Fields()
	for i := 0; i < fields.Len(); i++ {
		if name := string(fields.Get(i).Name()); !kinds[name] {
			t.Errorf("no fuzz seed for command kind %s: add one to seedCommands", name)
		}
	}
	// The seed corpus on disk is made from seedCommands; rewrite it with
	// REL_WRITE_FUZZ_SEEDS=1 go test -run TestFuzzSeeds ./internal/fsm/
	if os.Getenv("REL_WRITE_FUZZ_SEEDS") != "" {
		dir := filepath.Join("testdata", "fuzz", "FuzzApplyCommand")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for _, cmd := range seedCommands() {
			b, _ := proto.Marshal(cmd)
			name := fmt.Sprintf("seed-%02d-%s", cmd.GetStampedUnixNano(), cmd.ProtoReflect().WhichOneof(cmd.ProtoReflect().Descriptor().Oneofs().ByName("kind")).Name())
			if err := os.WriteFile(filepath.Join(dir, name), []byte(fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", b)), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
}
