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

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"

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
}

// FSM adapts a state store to raft.FSM.
type FSM struct {
	store *state.Store

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
	return &FSM{store: store, appliedCh: make(chan struct{})}
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
	res := &Result{Index: l.Index, Err: f.apply(l.Index, &cmd)}
	f.setApplied(l.Index)
	return res
}

func (f *FSM) apply(index uint64, cmd *relv1.Command) error {
	switch k := cmd.GetKind().(type) {
	case *relv1.Command_CreateApp:
		return f.store.CreateApp(index, k.CreateApp.GetApp())
	case *relv1.Command_CreateEnvironment:
		return f.store.CreateEnvironment(index, k.CreateEnvironment.GetEnvironment())
	case *relv1.Command_CreateRelease:
		return f.store.CreateRelease(index, k.CreateRelease.GetRelease())
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
		return f.store.ControlRollout(index, c.GetRolloutId(), c.GetAction(), c.GetReason(), c.GetAtUnixNano())
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
