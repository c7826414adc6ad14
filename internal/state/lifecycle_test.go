package state

import (
	"errors"
	"strings"
	"testing"

	"github.com/relhq/rel/internal/rollout"
	relv1 "github.com/relhq/rel/proto/rel/v1"
)

// lcWorld is a store with app web (lifecycle std: dev → staging → prod),
// three environments and two releases of the same artifact (1.0.0 and
// 1.0.0-again) plus one of another (2.0.0).
type lcWorld struct {
	t   *testing.T
	s   *Store
	idx uint64
}

func (w *lcWorld) next() uint64 { w.idx++; return w.idx }

func (w *lcWorld) must(err error) {
	w.t.Helper()
	if err != nil {
		w.t.Fatal(err)
	}
}

func newLCWorld(t *testing.T) *lcWorld {
	w := &lcWorld{t: t, s: New()}
	for _, e := range []string{"dev", "staging", "prod"} {
		w.must(w.s.CreateEnvironment(w.next(), &relv1.Environment{Name: e, Selector: map[string]string{"env": e}}))
	}
	w.must(w.s.CreateLifecycle(w.next(), &relv1.Lifecycle{Name: "std", Phases: []*relv1.Phase{
		{Name: "dev", Environments: []string{"dev"}, Progress: "all"},
		{Name: "staging", Environments: []string{"staging"}, Progress: "all"},
		{Name: "prod", Environments: []string{"prod"}, Progress: "all"},
	}}, nil))
	w.must(w.s.CreateApp(w.next(), &relv1.App{Name: "web", Lifecycle: "std"}))
	sha := strings.Repeat("a", 64)
	w.must(w.s.CreateRelease(w.next(), &relv1.Release{App: "web", Version: "1.0.0", Sha256: sha}))
	w.must(w.s.CreateRelease(w.next(), &relv1.Release{App: "web", Version: "1.0.0-again", Sha256: sha}))
	w.must(w.s.CreateRelease(w.next(), &relv1.Release{App: "web", Version: "2.0.0", Sha256: strings.Repeat("b", 64)}))
	return w
}

func (w *lcWorld) start(id, version, env string) error {
	return w.s.CreateRollout(w.next(), &relv1.Rollout{Id: id, App: "web", Version: version, Environment: env, Kind: rollout.KindDeploy, State: rollout.StateRunning,
		Hosts: []*relv1.RolloutHost{{AgentId: "h-" + env, State: "dispatched", TargetVersion: version}}}, nil, nil)
}

func (w *lcWorld) finish(id, state string) {
	w.t.Helper()
	ro, err := w.s.Rollout(nil, id)
	w.must(err)
	row := &relv1.Rollout{Id: id, App: ro.GetApp(), Version: ro.GetVersion(), Environment: ro.GetEnvironment(), Kind: ro.GetKind(), State: state,
		RollbackOf: ro.GetRollbackOf(), Hosts: ro.GetHosts(), FinishedUnixNano: int64(w.idx)}
	w.must(w.s.StepRollout(w.next(), row, false, ro.GetModifyIndex(), nil, nil, nil))
}

func TestDeployGateInTheStore(t *testing.T) {
	w := newLCWorld(t)
	err := w.start("ro-prod-early", "1.0.0", "prod")
	if !errors.Is(err, ErrConflict) || !strings.Contains(err.Error(), "web@1.0.0 cannot go to prod: phase dev is not done: no succeeded rollout of sha256:aaaaaaaaaaaa… to dev (need 1 of 1)") {
		t.Fatalf("prod before dev: %v", err)
	}
	w.must(w.start("ro-dev", "1.0.0", "dev"))
	// Running is not done.
	if err := w.start("ro-staging-early", "1.0.0", "staging"); !errors.Is(err, ErrConflict) {
		t.Fatalf("staging while dev runs: %v", err)
	}
	w.finish("ro-dev", rollout.StateSucceeded)
	// Another version of the same artifact counts; another artifact does not.
	w.must(w.start("ro-staging", "1.0.0-again", "staging"))
	if err := w.start("ro-staging-2", "2.0.0", "staging"); !errors.Is(err, ErrConflict) || !strings.Contains(err.Error(), "sha256:bbbbbbbbbbbb…") {
		t.Fatalf("another digest: %v", err)
	}
	w.finish("ro-staging", rollout.StateSucceeded)
	if err := w.s.DeployGate("web", "1.0.0", "prod"); err != nil {
		t.Fatalf("prod after staging: %v", err)
	}

	// Retention removes the rollouts: the promotions stay.
	if _, err := w.s.RemoveRollouts(w.next(), []string{"ro-dev", "ro-staging"}); err != nil {
		t.Fatal(err)
	}
	if r, _ := w.s.Rollout(nil, "ro-staging"); r != nil {
		t.Fatal("retention kept ro-staging")
	}
	if err := w.s.DeployGate("web", "1.0.0", "prod"); err != nil {
		t.Fatalf("prod after retention: %v", err)
	}

	// A rollback of a staging deploy un-promotes it.
	w.must(w.start("ro-staging-3", "1.0.0", "staging"))
	w.finish("ro-staging-3", rollout.StateSucceeded)
	w.must(w.s.CreateRollout(w.next(), &relv1.Rollout{Id: "rb-1", App: "web", Version: "1.0.0", Environment: "staging", Kind: rollout.KindRollback,
		RollbackOf: "ro-staging-3", State: rollout.StateRunning, Hosts: []*relv1.RolloutHost{{AgentId: "h-staging", State: "dispatched"}}}, nil, nil))
	err = w.s.DeployGate("web", "1.0.0", "prod")
	if !errors.Is(err, ErrConflict) || !strings.Contains(err.Error(), "phase staging is not done") {
		t.Fatalf("prod after staging rolled back: %v", err)
	}
	w.finish("rb-1", rollout.StateSucceeded)
	ps, err := w.s.Promotions(nil, "web", strings.Repeat("a", 64))
	w.must(err)
	if p := ps["staging"]; p.GetSucceededRollout() != "" || p.GetRolledBackRollout() != "ro-staging-3" || p.GetFirstRollout() != "ro-staging" {
		t.Fatalf("staging promotion after the rollback: %v", p)
	}

	// Rollbacks are never gated.
	w.must(w.start("ro-staging-4", "1.0.0", "staging"))
	w.finish("ro-staging-4", rollout.StateSucceeded)
	w.must(w.start("ro-prod", "1.0.0", "prod"))
	w.finish("ro-prod", rollout.StateSucceeded)

	// Blocked: refused with the reason and who; unblocked: allowed.
	w.must(w.s.BlockRelease(w.next(), "web", "1.0.0", true, "CVE-2026-1", &relv1.Actor{Kind: "token", Id: "acc1", Name: "alice"}))
	err = w.start("ro-dev-blocked", "1.0.0", "dev")
	if !errors.Is(err, ErrConflict) || !strings.Contains(err.Error(), "web@1.0.0 is blocked by token alice: CVE-2026-1") {
		t.Fatalf("blocked: %v", err)
	}
	w.must(w.s.BlockRelease(w.next(), "web", "1.0.0", false, "", nil))
	w.must(w.s.DeployGate("web", "1.0.0", "dev"))

	// An environment in no phase: refused. An app without a lifecycle: anything goes.
	w.must(w.s.CreateEnvironment(w.next(), &relv1.Environment{Name: "sandbox", Selector: map[string]string{"env": "sandbox"}}))
	if err := w.s.DeployGate("web", "2.0.0", "sandbox"); !errors.Is(err, ErrConflict) || !strings.Contains(err.Error(), "is in no phase of lifecycle std") {
		t.Fatalf("sandbox: %v", err)
	}
	w.must(w.s.SetAppLifecycle(w.next(), "web", ""))
	w.must(w.s.DeployGate("web", "2.0.0", "prod"))
}

func TestLifecycleRefusals(t *testing.T) {
	w := newLCWorld(t)
	tests := []struct {
		name string
		err  error
		kind error
		msg  string
	}{
		{"unknown environment", w.s.CreateLifecycle(w.next(), &relv1.Lifecycle{Name: "x", Phases: []*relv1.Phase{{Name: "a", Environments: []string{"dev", "qa"}, Progress: "all"}}}, nil),
			ErrNotFound, "lifecycle x names unknown environments qa"},
		{"taken", w.s.CreateLifecycle(w.next(), &relv1.Lifecycle{Name: "std", Phases: []*relv1.Phase{{Name: "a", Environments: []string{"dev"}, Progress: "all"}}}, nil),
			ErrAlreadyExists, `lifecycle "std" already exists`},
		{"update unknown", w.s.UpdateLifecycle(w.next(), &relv1.Lifecycle{Name: "nope", Phases: []*relv1.Phase{{Name: "a", Environments: []string{"dev"}, Progress: "all"}}}, nil),
			ErrNotFound, `lifecycle "nope" not found`},
		{"delete in use", w.s.DeleteLifecycle(w.next(), "std"), ErrConflict, "lifecycle std is used by app(s) web"},
		{"app with unknown lifecycle", w.s.CreateApp(w.next(), &relv1.App{Name: "api", Lifecycle: "nope"}), ErrNotFound, `lifecycle "nope" not found`},
		{"set unknown lifecycle", w.s.SetAppLifecycle(w.next(), "web", "nope"), ErrNotFound, `lifecycle "nope" not found`},
		{"env in a lifecycle", w.s.DeleteEnvironment(w.next(), "staging"), ErrConflict, `environment "staging" is in lifecycle(s) std`},
		{"block unknown release", w.s.BlockRelease(w.next(), "web", "9.9.9", true, "x", nil), ErrNotFound, "release web@9.9.9 not found"},
	}
	for _, tc := range tests {
		if !errors.Is(tc.err, tc.kind) || !strings.Contains(tc.err.Error(), tc.msg) {
			t.Errorf("%s: %v, want %v: ...%s...", tc.name, tc.err, tc.kind, tc.msg)
		}
	}
	if a, _ := w.s.App(nil, "api"); a != nil {
		t.Error("app api was created with an unknown lifecycle")
	}
	// Once no app uses it, it goes.
	w.must(w.s.SetAppLifecycle(w.next(), "web", ""))
	w.must(w.s.DeleteLifecycle(w.next(), "std"))
	w.must(w.s.DeleteEnvironment(w.next(), "staging"))
}
