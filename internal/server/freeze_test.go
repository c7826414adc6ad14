package server_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/relhq/rel/internal/auth"
	"github.com/relhq/rel/internal/testcluster"
	relv1 "github.com/relhq/rel/proto/rel/v1"
)

func dialFreeze(n *testcluster.Node) relv1.FreezeServiceClient {
	return relv1.NewFreezeServiceClient(n.Admin())
}

// freezeNow creates an absolute freeze window over web in prod from a
// second ago to d from now and returns its end.
func freezeNow(t *testing.T, fz relv1.FreezeServiceClient, name string, d time.Duration) time.Time {
	t.Helper()
	now := time.Now()
	end := now.Add(d)
	if _, err := fz.CreateFreeze(ctxT(t), &relv1.CreateFreezeRequest{Window: &relv1.FreezeWindow{
		Name: name, Apps: []string{"web*"}, Environments: []string{"prod"},
		StartUnixNano: now.Add(-time.Second).UnixNano(), EndUnixNano: end.UnixNano(), Reason: "test freeze",
	}}); err != nil {
		t.Fatal(err)
	}
	return end
}

// eventAt returns the time of a rollout's first event of type typ (zero
// when there is none).
func eventAt(t *testing.T, ctl relv1.ControlServiceClient, id, typ string) time.Time {
	t.Helper()
	for _, e := range events(t, ctl, id) {
		if e.GetType() == typ {
			return time.Unix(0, e.GetAtUnixNano())
		}
	}
	return time.Time{}
}

// TestFreezeHoldsDeploys: inside a freeze of a few seconds a deploy is
// created frozen and starts by itself when the window ends; meanwhile a
// rollback is allowed, and an emergency deploy overrides the freeze and
// records the window.
func TestFreezeHoldsDeploys(t *testing.T) {
	c := testcluster.New(t, 1, testcluster.Options{Configure: fastAgents})
	n := c.Nodes[0]
	ctl, fz := dial(t, n), dialFreeze(n)
	setupApp(t, ctl, "1.0.0", "2.0.0", "3.0.0")
	for i := 0; i < 2; i++ {
		startAutoAgent(t, n, fmt.Sprintf("h%d", i), map[string]string{"env": "prod"}, nil)
	}
	var ids []string
	for _, v := range []string{"1.0.0", "2.0.0"} {
		resp, err := ctl.StartRollout(ctxT(t), &relv1.StartRolloutRequest{App: "web", Version: v, Environment: "prod"})
		if err != nil {
			t.Fatal(err)
		}
		waitState(t, ctl, resp.GetRollout().GetId(), "succeeded")
		ids = append(ids, resp.GetRollout().GetId())
	}

	end := freezeNow(t, fz, "now", 6*time.Second)
	st, err := fz.FreezeStatus(ctxT(t), &relv1.FreezeStatusRequest{Environment: "prod", App: "web"})
	if err != nil || !st.GetFrozen() || !strings.HasPrefix(st.GetMessage(), "web in prod is frozen until ") || !strings.Contains(st.GetMessage(), "test freeze") {
		t.Fatalf("status %v %v", st, err)
	}

	// A deploy inside the freeze: frozen, nothing dispatched.
	held, err := ctl.StartRollout(ctxT(t), &relv1.StartRolloutRequest{App: "web", Version: "3.0.0", Environment: "prod"})
	if err != nil {
		t.Fatal(err)
	}
	heldID := held.GetRollout().GetId()
	if r := held.GetRollout(); r.GetState() != "frozen" || !strings.HasPrefix(r.GetReason(), "freeze now until ") {
		t.Fatalf("deploy inside a freeze: %s (%s)", r.GetState(), r.GetReason())
	}

	// A rollback is always allowed, frozen rollout or not.
	rb, err := ctl.RollbackRollout(ctxT(t), &relv1.RollbackRolloutRequest{Id: ids[1]})
	if err != nil {
		t.Fatalf("rollback during a freeze: %v", err)
	}
	waitState(t, ctl, rb.GetRollback().GetId(), "succeeded")

	// An emergency deploy overrides the freeze, and says so.
	if _, err := ctl.StartRollout(ctxT(t), &relv1.StartRolloutRequest{App: "web", Version: "2.0.0", Environment: "prod", ChangeType: "emergency"}); err == nil {
		t.Fatal("an emergency without a reason was accepted")
	} else {
		wantCode(t, "emergency without reason", err, codes.InvalidArgument, "--reason")
	}
	em, err := ctl.StartRollout(ctxT(t), &relv1.StartRolloutRequest{App: "web", Version: "2.0.0", Environment: "prod", ChangeType: "emergency", ChangeReason: "hotfix"})
	if err != nil {
		t.Fatal(err)
	}
	if r := em.GetRollout(); r.GetState() == "frozen" || r.GetFreezeOverridden() != "now" || r.GetChangeReason() != "hotfix" {
		t.Fatalf("emergency: %s, overridden %q", r.GetState(), r.GetFreezeOverridden())
	}
	waitState(t, ctl, em.GetRollout().GetId(), "succeeded")
	if time.Now().After(end) {
		t.Skip("the machine is too slow: the freeze ended before the checks inside it were done")
	}
	if r := waitState(t, ctl, heldID, "frozen").GetRollout(); r.GetState() != "frozen" {
		t.Fatalf("held rollout %s before the freeze ended", r.GetState())
	}

	// The freeze ends: the held rollout goes on by itself.
	waitState(t, ctl, heldID, "succeeded")
	unfrozen, dispatched := eventAt(t, ctl, heldID, "unfrozen"), eventAt(t, ctl, heldID, "dispatched")
	if unfrozen.Before(end) || dispatched.Before(end) {
		t.Fatalf("released at %s, dispatched at %s, before the freeze ended at %s", unfrozen, dispatched, end)
	}
}

// TestFreezePausesRunningRollout: a freeze that begins while a rollout is
// running lets the current wave finish, pauses the rollout before the
// next, and it resumes by itself when the freeze ends.
func TestFreezePausesRunningRollout(t *testing.T) {
	c := testcluster.New(t, 1, testcluster.Options{Configure: fastAgents})
	n := c.Nodes[0]
	ctl, fz := dial(t, n), dialFreeze(n)
	setupApp(t, ctl, "1.0.0")
	for i := 0; i < 3; i++ {
		startAutoAgent(t, n, fmt.Sprintf("h%d", i), map[string]string{"env": "prod"}, nil)
	}
	resp, err := ctl.StartRollout(ctxT(t), &relv1.StartRolloutRequest{App: "web", Version: "1.0.0", Environment: "prod",
		Spec: &relv1.RolloutSpec{Strategy: "rolling", Waves: []*relv1.Quantity{{Count: 1}, {Percent: 100}}, BakeMs: 1500}})
	if err != nil {
		t.Fatal(err)
	}
	id := resp.GetRollout().GetId()
	// Wave 1 done and baking: the freeze starts.
	testcluster.WaitFor(t, 10*time.Second, func() (bool, string) {
		st := waitState(t, ctl, id, "running")
		return st.GetRollout().GetWaveDoneUnixNano() != 0, "wave 1 not done"
	})
	end := freezeNow(t, fz, "now", 4*time.Second)
	st := waitState(t, ctl, id, "paused")
	if r := st.GetRollout(); r.GetPausedByFreeze() != "now" || !strings.HasPrefix(r.GetReason(), "freeze now until ") || r.GetCurrentWave() != 0 {
		t.Fatalf("paused: by %q (%s), wave %d", r.GetPausedByFreeze(), r.GetReason(), r.GetCurrentWave())
	}
	if st.GetTotals()["healthy"] != 1 {
		t.Fatalf("totals while paused %v", st.GetTotals())
	}
	st = waitState(t, ctl, id, "succeeded")
	if st.GetTotals()["healthy"] != 3 {
		t.Fatalf("totals %v", st.GetTotals())
	}
	if resumed := eventAt(t, ctl, id, "resumed"); resumed.Before(end) {
		t.Fatalf("resumed at %s, before the freeze ended at %s", resumed, end)
	}
}

// TestFreezeLeaderKilled: a rollout frozen on a 3-server cluster stays
// frozen across a leader kill, and the new leader releases it when the
// freeze ends.
func TestFreezeLeaderKilled(t *testing.T) {
	c := testcluster.New(t, 3, testcluster.Options{Configure: fastAgents})
	leader := c.WaitLeader()
	f := c.Followers()[0]
	ctl, fz := dial(t, f), dialFreeze(f)
	setupApp(t, ctl, "1.0.0")
	for i := 0; i < 2; i++ {
		startAutoAgent(t, c.Followers()[i%2], fmt.Sprintf("h%d", i), map[string]string{"env": "prod"}, nil)
	}
	testcluster.WaitFor(t, 10*time.Second, func() (bool, string) {
		resp, err := ctl.ListAgents(ctxT(t), &relv1.ListAgentsRequest{})
		return err == nil && len(resp.GetAgents()) == 2, "agents not connected"
	})
	end := freezeNow(t, fz, "now", 8*time.Second)
	resp, err := ctl.StartRollout(ctxT(t), &relv1.StartRolloutRequest{App: "web", Version: "1.0.0", Environment: "prod"})
	if err != nil {
		t.Fatal(err)
	}
	id := resp.GetRollout().GetId()
	if resp.GetRollout().GetState() != "frozen" {
		t.Fatalf("state %s", resp.GetRollout().GetState())
	}
	c.Kill(leader)
	c.WaitNewLeader(leader)
	r := waitState(t, ctl, id, "frozen", "succeeded").GetRollout()
	if time.Now().Before(end.Add(-time.Second)) && r.GetState() != "frozen" {
		t.Fatalf("after the leader kill, before the freeze ended: %s", r.GetState())
	}
	waitState(t, ctl, id, "succeeded")
	if unfrozen := eventAt(t, ctl, id, "unfrozen"); unfrozen.Before(end) {
		t.Fatalf("released at %s, before the freeze ended at %s", unfrozen, end)
	}
}

// TestFreezeBadInput: each bad window is refused with an error naming the
// field, through a follower, and nothing is written.
func TestFreezeBadInput(t *testing.T) {
	c := testcluster.New(t, 3, testcluster.Options{})
	leader := c.WaitLeader()
	fz := dialFreeze(c.Followers()[0])
	now := time.Now()
	good := func() *relv1.FreezeWindow {
		return &relv1.FreezeWindow{Name: "weekend", Apps: []string{"*"}, Environments: []string{"prod"},
			CronStart: "0 18 * * FRI", CronEnd: "0 8 * * MON", TimeZone: "Europe/Berlin", Reason: "weekend freeze"}
	}
	if _, err := fz.CreateFreeze(ctxT(t), &relv1.CreateFreezeRequest{Window: good()}); err != nil {
		t.Fatal(err)
	}
	testcluster.WaitFor(t, 5*time.Second, func() (bool, string) {
		ws, _, _ := leader.Server().Store().Freezes(nil)
		return len(ws) == 1, "window not applied on the leader"
	})
	before := leader.Server().Store().LatestIndex()
	with := func(f func(w *relv1.FreezeWindow)) *relv1.FreezeWindow {
		w := good()
		w.Name = "other"
		f(w)
		return w
	}
	abs := func(w *relv1.FreezeWindow, start, end time.Time) {
		w.CronStart, w.CronEnd, w.StartUnixNano, w.EndUnixNano = "", "", start.UnixNano(), end.UnixNano()
	}
	tests := []struct {
		name string
		w    *relv1.FreezeWindow
		code codes.Code
		msg  string
	}{
		{"bad cron", with(func(w *relv1.FreezeWindow) { w.CronStart = "0 25 * * FRI" }), codes.InvalidArgument, `cron start "0 25 * * FRI" is not a cron expression`},
		{"unknown time zone", with(func(w *relv1.FreezeWindow) { w.TimeZone = "Europe/Atlantis" }), codes.InvalidArgument, `time zone "Europe/Atlantis" is not an IANA time zone name`},
		{"end before start", with(func(w *relv1.FreezeWindow) { abs(w, now.Add(2*time.Hour), now.Add(time.Hour)) }), codes.InvalidArgument, "is not after start"},
		{"longer than a year", with(func(w *relv1.FreezeWindow) { abs(w, now, now.Add(400*24*time.Hour)) }), codes.InvalidArgument, "longer than a year"},
		{"no apps", with(func(w *relv1.FreezeWindow) { w.Apps = nil }), codes.InvalidArgument, "apps is empty"},
		{"no environments", with(func(w *relv1.FreezeWindow) { w.Environments = nil }), codes.InvalidArgument, "environments is empty"},
		{"no time", with(func(w *relv1.FreezeWindow) { w.CronStart, w.CronEnd = "", "" }), codes.InvalidArgument, "no time given"},
		{"duplicate name", good(), codes.AlreadyExists, `freeze window "weekend" already exists`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := fz.CreateFreeze(ctxT(t), &relv1.CreateFreezeRequest{Window: tt.w})
			wantCode(t, tt.name, err, tt.code, tt.msg)
		})
	}
	_, err := fz.DeleteFreeze(ctxT(t), &relv1.DeleteFreezeRequest{Name: "nope"})
	wantCode(t, "delete unknown", err, codes.NotFound, `freeze window "nope" not found`)
	_, err = fz.FreezeStatus(ctxT(t), &relv1.FreezeStatusRequest{})
	wantCode(t, "status without env", err, codes.InvalidArgument, "environment name is empty")
	if after := leader.Server().Store().LatestIndex(); after != before {
		t.Fatalf("bad input changed the state: index %d -> %d", before, after)
	}
	ws, _, _ := leader.Server().Store().Freezes(nil)
	if len(ws) != 1 || ws[0].GetCreatedBy().GetId() == "" {
		t.Fatalf("windows %v", ws)
	}
}

// TestFreezeAuthz: on the wire, only manage-apps makes and removes
// windows; readers list them and ask their status.
func TestFreezeAuthz(t *testing.T) {
	c := testcluster.New(t, 1, testcluster.Options{})
	n := c.Nodes[0]
	viewer, _ := createToken(t, n.Admin(), "viewer", []string{string(auth.Viewer)}, nil, 0)
	deployer, _ := createToken(t, n.Admin(), "deployer", []string{string(auth.Deployer)}, nil, 0)
	w := &relv1.FreezeWindow{Name: "weekend", Apps: []string{"*"}, Environments: []string{"prod"}, CronStart: "0 18 * * FRI", CronEnd: "0 8 * * MON"}
	for name, secret := range map[string]string{"viewer": viewer, "deployer": deployer} {
		fz := relv1.NewFreezeServiceClient(tokenConn(t, c, n.GRPCAddr(), secret))
		_, err := fz.CreateFreeze(ctxT(t), &relv1.CreateFreezeRequest{Window: w})
		wantCode(t, name+" create", err, codes.PermissionDenied)
		_, err = fz.DeleteFreeze(ctxT(t), &relv1.DeleteFreezeRequest{Name: "weekend"})
		wantCode(t, name+" delete", err, codes.PermissionDenied)
		if _, err := fz.ListFreezes(ctxT(t), &relv1.ListFreezesRequest{}); err != nil {
			t.Errorf("%s list: %v", name, err)
		}
		if _, err := fz.FreezeStatus(ctxT(t), &relv1.FreezeStatusRequest{Environment: "prod"}); err != nil {
			t.Errorf("%s status: %v", name, err)
		}
	}
	if ws, _, _ := n.Server().Store().Freezes(nil); len(ws) != 0 {
		t.Fatalf("a refused caller created %v", ws)
	}
	if _, err := dialFreeze(n).CreateFreeze(ctxT(t), &relv1.CreateFreezeRequest{Window: w}); err != nil {
		t.Fatalf("admin create: %v", err)
	}
}
