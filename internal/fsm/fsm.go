// Package fsm is the raft finite state machine: it decodes each committed log
// entry into a rel.v1.Command and applies it to the state store with exactly
// one store method per command kind.
//
// Apply is deterministic. It reads no clock, draws no random numbers and does
// no I/O: every time and identifier in a command was stamped by the server
// that accepted the request, before raft.Apply, and the only other input is
// the entry's raft index.
package fsm

import (
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"

	"github.com/relhq/rel/internal/rollout"
	"github.com/relhq/rel/internal/state"
	relv1 "github.com/relhq/rel/proto/rel/v1"
)

// Result is what Apply returns for every entry, reaching the caller of
// raft.Apply through ApplyFuture.Response. Application errors (an app that
// already exists, say) are data here, not raft failures: the entry is
// committed either way and every replica reaches the same verdict.
type Result struct {
	Index uint64
	Err   error
	// Ref names what the command created, for the caller's answer: a
	// rollout's id, a token's accessor id; "" otherwise.
	Ref string
	// Duplicate says the command's request id had been applied before:
	// nothing was applied now, and Index, Err and Ref are the first
	// answer's.
	Duplicate bool
	// Items answers each item of a command applied item by item
	// (agent_sessions: its ups, then its downs), nil where the item was
	// applied; nil for other commands and for duplicates. One item's
	// refusal is not the entry's: Err stays nil.
	Items []error
}

// FSM adapts a state store to raft.FSM.
type FSM struct {
	store *state.Store
	// requestTTL and maxRequests bound the requests table
	// (state.RequestTTL and state.MaxRequests; tests lower them).
	requestTTL  time.Duration
	maxRequests int

	// applied is the index of the last command applied, and appliedCh is
	// closed (and replaced) each time it moves, so that a server can wait
	// until its own replica holds a write it forwarded. raft's own
	// AppliedIndex moves when entries are handed to the FSM, not when the
	// FSM is done with them.
	mu        sync.Mutex
	applied   uint64
	appliedCh chan struct{}
}

// New returns an FSM applying to store.
func New(store *state.Store) *FSM {
	return &FSM{store: store, appliedCh: make(chan struct{}), requestTTL: state.RequestTTL, maxRequests: state.MaxRequests}
}

// Applied returns the index of the last command applied and a channel
// closed when that changes.
func (f *FSM) Applied() (uint64, <-chan struct{}) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.applied, f.appliedCh
}

func (f *FSM) setApplied(index uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if index > f.applied {
		f.applied = index
		close(f.appliedCh)
		f.appliedCh = make(chan struct{})
	}
}

// Store is the state the FSM applies to.
func (f *FSM) Store() *state.Store { return f.store }

// Apply applies one committed log entry.
func (f *FSM) Apply(l *raft.Log) any {
	var cmd relv1.Command
	if err := proto.Unmarshal(l.Data, &cmd); err != nil {
		// A committed entry that does not decode means a corrupt log or a
		// build that cannot read it; applying anything else would fork this
		// replica's state from its peers', so stop here.
		panic(fmt.Sprintf("fsm: undecodable command at index %d: %v", l.Index, err))
	}
	res := f.applyAudited(l.Index, &cmd)
	f.setApplied(l.Index)
	return res
}

// applyAudited applies a command and, for a kind that is audited (see
// notAudited), appends its audit record in the same Apply: applied or
// refused, but not for a repeat of a request id already applied (the
// first attempt has its record), nor for a refused command of the servers'
// own (no actor and no request id). A failure to append is the entry's
// error when the command itself succeeded.
func (f *FSM) applyAudited(index uint64, cmd *relv1.Command) *Result {
	rec := f.auditRecord(cmd)
	res := f.applyRequest(index, cmd)
	if rec == nil || res.Duplicate {
		return res
	}
	if cmd.GetActor() == nil && cmd.GetRequestId() == "" && res.Err != nil {
		// A decision of the leader's that the FSM refused (made on a
		// view gone stale, or a repeat) changed nothing and was nobody's
		// request: it is no record.
		return res
	}
	recordResult(rec, res.Err)
	if err := f.store.AppendAudit(index, []*relv1.AuditRecord{rec}); err != nil && res.Err == nil {
		res.Err = err
	}
	return res
}

// applyRequest applies a command once per request id. A command whose
// request id has a record is not applied: the answer is the record's (the
// first answer), or a refusal when the record is of another request. Any
// other command is applied, and when it carries a request id its answer
// is recorded, refusals included, since a refused request sent again must
// get the same refusal.
func (f *FSM) applyRequest(index uint64, cmd *relv1.Command) *Result {
	id := cmd.GetRequestId()
	if id == "" {
		items, err := f.applyItems(index, cmd)
		return &Result{Index: index, Err: err, Ref: refOf(cmd, err), Items: items}
	}
	kind, target := Describe(cmd)
	first, err := f.store.BeginRequest(id, cmd.GetStampedUnixNano(), f.requestTTL)
	if err != nil {
		return &Result{Index: index, Err: err}
	}
	if first != nil {
		if first.GetKind() != kind || first.GetTarget() != target {
			return &Result{Index: index, Err: &state.Error{Kind: state.ErrRequestIDReused, Msg: fmt.Sprintf(
				"request id %q was used at index %d for another request (%s %s), not this %s %s: give every request an id of its own",
				id, first.GetIndex(), first.GetKind(), first.GetTarget(), kind, target)}}
		}
		return &Result{Index: first.GetIndex(), Err: state.ErrorFromKind(first.GetErrorKind(), first.GetError()), Ref: first.GetRef(), Duplicate: true}
	}
	items, err := f.applyItems(index, cmd)
	res := &Result{Index: index, Err: err, Ref: refOf(cmd, err), Items: items}
	rec := &relv1.RequestRecord{Id: id, Index: index, StampedUnixNano: cmd.GetStampedUnixNano(), Kind: kind, Target: target, Ref: res.Ref}
	if err != nil {
		rec.ErrorKind, rec.Error = state.ErrorKind(err), err.Error()
	}
	if rerr := f.store.RecordRequest(rec, f.maxRequests); rerr != nil && res.Err == nil {
		res.Err = rerr
	}
	return res
}

// kindField is the oneof of Command that holds its kind.
var kindField = (&relv1.Command{}).ProtoReflect().Descriptor().Oneofs().ByName("kind")

// Describe names a command's kind (its oneof field, e.g. create_rollout)
// and what it acts on, as request records keep them, so that a request id
// sent again with another request is told apart from a repeat. The target
// leaves out what the accepting server makes anew for every attempt (ids,
// secrets, times).
func Describe(cmd *relv1.Command) (kind, target string) {
	if fd := cmd.ProtoReflect().WhichOneof(kindField); fd != nil {
		kind = string(fd.Name())
	}
	switch k := cmd.GetKind().(type) {
	case *relv1.Command_CreateApp:
		target = k.CreateApp.GetApp().GetName()
	case *relv1.Command_CreateEnvironment:
		target = k.CreateEnvironment.GetEnvironment().GetName()
	case *relv1.Command_UpdateEnvironment:
		target = k.UpdateEnvironment.GetEnvironment().GetName()
	case *relv1.Command_DeleteEnvironment:
		target = k.DeleteEnvironment.GetName()
	case *relv1.Command_CreateRelease:
		r := k.CreateRelease.GetRelease()
		target = r.GetApp() + "@" + r.GetVersion()
	case *relv1.Command_DeleteRelease:
		target = k.DeleteRelease.GetApp() + "@" + k.DeleteRelease.GetVersion()
	case *relv1.Command_CreateRollout:
		r := k.CreateRollout.GetRollout()
		if r.GetKind() == rollout.KindRollback {
			target = "rollback of " + r.GetRollbackOf()
		} else {
			target = r.GetApp() + "@" + r.GetVersion() + " to " + r.GetEnvironment()
		}
	case *relv1.Command_RolloutControl:
		c := k.RolloutControl
		target = c.GetAction() + " " + c.GetRolloutId()
		if c.GetAction() == "approve" {
			target += fmt.Sprintf(" wave %d", c.GetWave())
		}
	case *relv1.Command_ApproveRollout:
		target = fmt.Sprintf("approve %s wave %d", k.ApproveRollout.GetRolloutId(), k.ApproveRollout.GetWave())
	case *relv1.Command_RejectRollout:
		target = "reject " + k.RejectRollout.GetRolloutId()
	case *relv1.Command_ReviewRollout:
		target = "review " + k.ReviewRollout.GetRolloutId()
	case *relv1.Command_SetApprovalPolicy:
		target = k.SetApprovalPolicy.GetEnvironment()
	case *relv1.Command_CreateAclToken:
		target = k.CreateAclToken.GetToken().GetName()
	case *relv1.Command_DeleteAclToken:
		target = k.DeleteAclToken.GetAccessorId()
	case *relv1.Command_DeleteJoinToken:
		target = k.DeleteJoinToken.GetAccessorId()
	case *relv1.Command_UseJoinToken:
		target = k.UseJoinToken.GetAgentId()
	case *relv1.Command_RevokeAgent:
		target = k.RevokeAgent.GetRevocation().GetAgentId()
	case *relv1.Command_CreateLifecycle:
		target = k.CreateLifecycle.GetLifecycle().GetName()
	case *relv1.Command_UpdateLifecycle:
		target = k.UpdateLifecycle.GetLifecycle().GetName()
	case *relv1.Command_DeleteLifecycle:
		target = k.DeleteLifecycle.GetName()
	case *relv1.Command_SetAppLifecycle:
		target = k.SetAppLifecycle.GetApp() + " to " + k.SetAppLifecycle.GetLifecycle()
	case *relv1.Command_BlockRelease:
		c := k.BlockRelease
		target = fmt.Sprintf("%s@%s blocked=%t", c.GetApp(), c.GetVersion(), c.GetBlocked())
	case *relv1.Command_CreateFreeze:
		target = k.CreateFreeze.GetWindow().GetName()
	case *relv1.Command_DeleteFreeze:
		target = k.DeleteFreeze.GetName()
	case *relv1.Command_CreateWebhook:
		target = k.CreateWebhook.GetWebhook().GetName()
	case *relv1.Command_DeleteWebhook:
		target = k.DeleteWebhook.GetName()
	case *relv1.Command_RedeliverWebhook:
		target = fmt.Sprintf("%s seq %d", k.RedeliverWebhook.GetName(), k.RedeliverWebhook.GetSeq())
	case *relv1.Command_AuditArchived:
		target = fmt.Sprintf("seq %d hash %x", k.AuditArchived.GetSeq(), k.AuditArchived.GetHash())
	case *relv1.Command_RegisterServer:
		target = k.RegisterServer.GetServer().GetId()
	case *relv1.Command_DeregisterServer:
		target = k.DeregisterServer.GetId()
	}
	return kind, target
}

// refOf names what a command that was applied (err == nil) created.
func refOf(cmd *relv1.Command, err error) string {
	if err != nil {
		return ""
	}
	switch k := cmd.GetKind().(type) {
	case *relv1.Command_CreateRollout:
		return k.CreateRollout.GetRollout().GetId()
	case *relv1.Command_AclBootstrap:
		return k.AclBootstrap.GetToken().GetAccessorId()
	case *relv1.Command_CreateAclToken:
		return k.CreateAclToken.GetToken().GetAccessorId()
	case *relv1.Command_CreateJoinToken:
		return k.CreateJoinToken.GetToken().GetAccessorId()
	}
	return ""
}

// applyItems applies a command, answering item by item for the kinds that
// carry many independent items.
func (f *FSM) applyItems(index uint64, cmd *relv1.Command) ([]error, error) {
	return f.applyWithEvents(index, cmd, func() ([]error, error) {
		if k, ok := cmd.GetKind().(*relv1.Command_AgentSessions); ok {
			return f.store.AgentSessions(index, k.AgentSessions.GetUp(), k.AgentSessions.GetDown())
		}
		return nil, f.apply(index, cmd)
	})
}

func (f *FSM) apply(index uint64, cmd *relv1.Command) error {
	switch k := cmd.GetKind().(type) {
	case *relv1.Command_CreateApp:
		return f.store.CreateApp(index, k.CreateApp.GetApp())
	case *relv1.Command_CreateEnvironment:
		return f.store.CreateEnvironment(index, k.CreateEnvironment.GetEnvironment())
	case *relv1.Command_UpdateEnvironment:
		c := k.UpdateEnvironment
		return f.store.UpdateEnvironment(index, c.GetEnvironment(), c.GetExpectModifyIndex())
	case *relv1.Command_DeleteEnvironment:
		return f.store.DeleteEnvironment(index, k.DeleteEnvironment.GetName())
	case *relv1.Command_CreateRelease:
		if a := cmd.GetActor(); a != nil {
			k.CreateRelease.GetRelease().CreatedBy = a
		}
		return f.store.CreateReleaseChecked(index, k.CreateRelease.GetRelease(), k.CreateRelease.GetArtifactCheckedIndex())
	case *relv1.Command_RegisterServer:
		return f.store.UpsertServer(index, k.RegisterServer.GetServer())
	case *relv1.Command_DeregisterServer:
		return f.store.DeleteServer(index, k.DeregisterServer.GetId())
	case *relv1.Command_AgentUp:
		return f.store.AgentUp(index, k.AgentUp.GetAgent(), k.AgentUp.GetInstalled())
	case *relv1.Command_AgentDown:
		d := k.AgentDown
		return f.store.AgentDown(index, d.GetAgentId(), d.GetSessionId(), d.GetAtUnixNano(), d.GetReason())
	case *relv1.Command_ReportBatch:
		return f.store.ApplyReports(index, k.ReportBatch.GetReports())
	case *relv1.Command_CreateRollout:
		c := k.CreateRollout
		if a := cmd.GetActor(); a != nil && c.GetRollout() != nil {
			c.GetRollout().RequestedBy = a
		}
		return f.store.CreateRollout(index, c.GetRollout(), c.GetDesired(), c.GetEvents())
	case *relv1.Command_RolloutStep:
		c := k.RolloutStep
		return f.store.StepRollout(index, c.GetRollout(), false, c.GetExpectModifyIndex(), c.GetDesired(), c.GetEvents(), c.GetStartRollback())
	case *relv1.Command_RolloutStepDelta:
		c := k.RolloutStepDelta
		return f.store.StepRollout(index, c.GetRollout(), true, c.GetExpectModifyIndex(), c.GetDesired(), c.GetEvents(), c.GetStartRollback())
	case *relv1.Command_InitCluster:
		return f.store.InitCluster(index, k.InitCluster.GetClusterId())
	case *relv1.Command_RolloutControl:
		c := k.RolloutControl
		return f.store.ControlRollout(index, c.GetRolloutId(), c.GetAction(), c.GetReason(), c.GetAtUnixNano(), c.GetWave())
	case *relv1.Command_AclBootstrap:
		return f.store.ACLBootstrap(index, k.AclBootstrap.GetToken())
	case *relv1.Command_CreateAclToken:
		return f.store.CreateACLToken(index, k.CreateAclToken.GetToken())
	case *relv1.Command_DeleteAclToken:
		return f.store.DeleteACLToken(index, k.DeleteAclToken.GetAccessorId())
	case *relv1.Command_CreateJoinToken:
		return f.store.CreateJoinToken(index, k.CreateJoinToken.GetToken())
	case *relv1.Command_UseJoinToken:
		c := k.UseJoinToken
		return f.store.UseJoinToken(index, c.GetSecretHash(), c.GetAgentId(), c.GetAtUnixNano())
	case *relv1.Command_DeleteJoinToken:
		return f.store.DeleteJoinToken(index, k.DeleteJoinToken.GetAccessorId())
	case *relv1.Command_RevokeAgent:
		return f.store.RevokeAgent(index, k.RevokeAgent.GetRevocation())
	case *relv1.Command_RemoveRollouts:
		_, err := f.store.RemoveRollouts(index, k.RemoveRollouts.GetRolloutIds())
		return err
	case *relv1.Command_FoldHistory:
		c := k.FoldHistory
		_, err := f.store.FoldHistory(index, c.GetCutoffUnixNano(), int(c.GetMaxEntries()))
		return err
	case *relv1.Command_PruneDeployments:
		c := k.PruneDeployments
		_, err := f.store.PruneDeployments(index, c.GetCutoffUnixNano(), int(c.GetMaxEntries()))
		return err
	case *relv1.Command_RemoveAgents:
		c := k.RemoveAgents
		_, err := f.store.RemoveAgents(index, c.GetAgentIds(), c.GetCutoffUnixNano(), c.GetAtUnixNano())
		return err
	case *relv1.Command_DeleteRelease:
		return f.store.DeleteRelease(index, k.DeleteRelease.GetApp(), k.DeleteRelease.GetVersion())
	case *relv1.Command_RemoveArtifacts:
		_, err := f.store.RemoveArtifacts(index, cmd.GetStampedUnixNano(), k.RemoveArtifacts.GetDigests())
		return err
	case *relv1.Command_CreateLifecycle:
		return f.store.CreateLifecycle(index, k.CreateLifecycle.GetLifecycle(), cmd.GetActor())
	case *relv1.Command_UpdateLifecycle:
		return f.store.UpdateLifecycle(index, k.UpdateLifecycle.GetLifecycle(), cmd.GetActor())
	case *relv1.Command_DeleteLifecycle:
		return f.store.DeleteLifecycle(index, k.DeleteLifecycle.GetName())
	case *relv1.Command_SetAppLifecycle:
		return f.store.SetAppLifecycle(index, k.SetAppLifecycle.GetApp(), k.SetAppLifecycle.GetLifecycle())
	case *relv1.Command_BlockRelease:
		c := k.BlockRelease
		return f.store.BlockRelease(index, c.GetApp(), c.GetVersion(), c.GetBlocked(), c.GetReason(), cmd.GetActor())
	case *relv1.Command_ApproveRollout:
		return f.store.ApproveRollout(index, k.ApproveRollout, cmd.GetActor())
	case *relv1.Command_RejectRollout:
		return f.store.RejectRollout(index, k.RejectRollout, cmd.GetActor())
	case *relv1.Command_ReviewRollout:
		return f.store.ReviewRollout(index, k.ReviewRollout, cmd.GetActor())
	case *relv1.Command_ExpireApprovals:
		c := k.ExpireApprovals
		_, err := f.store.ExpireApprovals(index, c.GetRolloutIds(), c.GetAtUnixNano())
		return err
	case *relv1.Command_SetApprovalPolicy:
		c := k.SetApprovalPolicy
		return f.store.SetApprovalPolicy(index, c.GetEnvironment(), c.GetPolicy())
	case *relv1.Command_AuditRefusals:
		return f.store.AppendAudit(index, refusalRecords(cmd, k.AuditRefusals))
	case *relv1.Command_CreateFreeze:
		w := k.CreateFreeze.GetWindow()
		if a := cmd.GetActor(); a != nil && w != nil {
			w.CreatedBy = a
		}
		return f.store.CreateFreeze(index, w)
	case *relv1.Command_DeleteFreeze:
		return f.store.DeleteFreeze(index, k.DeleteFreeze.GetName())
	case *relv1.Command_TrimEvents:
		c := k.TrimEvents
		_, err := f.store.TrimEvents(index, c.GetBeforeSeq(), c.GetCutoffUnixNano(), int(c.GetMaxEvents()))
		return err
	case *relv1.Command_CreateWebhook:
		wh := k.CreateWebhook.GetWebhook()
		if a := cmd.GetActor(); a != nil && wh != nil {
			wh.CreatedBy = a
		}
		return f.store.CreateWebhook(index, wh)
	case *relv1.Command_DeleteWebhook:
		return f.store.DeleteWebhook(index, k.DeleteWebhook.GetName())
	case *relv1.Command_WebhookProgress:
		return f.store.WebhookProgress(index, k.WebhookProgress)
	case *relv1.Command_RedeliverWebhook:
		c := k.RedeliverWebhook
		return f.store.RedeliverWebhook(index, c.GetName(), c.GetSeq())
	case *relv1.Command_AuditArchived:
		return f.store.MarkAuditArchived(index, k.AuditArchived.GetSeq(), k.AuditArchived.GetHash())
	case *relv1.Command_TrimAudit:
		c := k.TrimAudit
		_, err := f.store.TrimAudit(index, c.GetCutoffUnixNano(), int(c.GetMaxRecords()))
		return err
	default:
		// Same reasoning as an undecodable entry: a newer leader wrote a
		// command this build does not know. Upgrade servers before using
		// new commands.
		panic(fmt.Sprintf("fsm: unknown command %T at index %d", k, index))
	}
}

// Snapshot captures the store cheaply; raft calls Persist on another
// goroutine while Apply goes on.
func (f *FSM) Snapshot() (raft.FSMSnapshot, error) {
	return &fsmSnapshot{snap: f.store.Snapshot()}, nil
}

// Restore replaces the whole state with a snapshot.
func (f *FSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	return f.store.Restore(rc)
}

type fsmSnapshot struct {
	snap *state.Snapshot
}

func (s *fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	if err := s.snap.Persist(sink); err != nil {
		_ = sink.Cancel()
		return err
	}
	return sink.Close()
}

func (s *fsmSnapshot) Release() {}
