package server_test

import (
	"testing"
	"time"

	"github.com/relhq/rel/internal/testcluster"
	relv1 "github.com/relhq/rel/proto/rel/v1"
)

// TestLeaderCatchesUpBeforePlanning: a leader marks its term caught up once
// a barrier of the term applied (so its FSM holds what earlier leaders
// committed), and a leader-only request arriving before that waits on a
// barrier of its own instead of planning from a replica that may lack a
// write already answered.
func TestLeaderCatchesUpBeforePlanning(t *testing.T) {
	c := testcluster.New(t, 3, testcluster.Options{})
	leader := c.WaitLeader()
	srv := leader.Server()
	deadline := time.Now().Add(10 * time.Second)
	for srv.CaughtUpTerm() != srv.Raft().CurrentTerm() {
		if time.Now().After(deadline) {
			t.Fatalf("leader of term %d never marked it caught up (%d)", srv.Raft().CurrentTerm(), srv.CaughtUpTerm())
		}
		time.Sleep(5 * time.Millisecond)
	}
	srv.ForgetCaughtUp()
	ctl := dial(t, leader)
	// Any leader-only request: this one is refused (no such app) after
	// leaderTarget ran.
	_, _ = ctl.StartRollout(ctxT(t), &relv1.StartRolloutRequest{App: "nope", Version: "1.0.0", Environment: "prod"})
	if got, want := srv.CaughtUpTerm(), srv.Raft().CurrentTerm(); got != want {
		t.Fatalf("after a request, caught-up term %d, want %d: the request planned without a barrier", got, want)
	}
}
