package lifecycle

import (
	"strings"
	"testing"

	relv1 "github.com/relhq/rel/proto/rel/v1"
)

func std() *relv1.Lifecycle {
	return &relv1.Lifecycle{Name: "std", Phases: []*relv1.Phase{
		{Name: "dev", Environments: []string{"dev"}, Progress: ProgressAll},
		{Name: "qa", Environments: []string{"qa"}, Progress: ProgressOptional},
		{Name: "staging", Environments: []string{"staging-eu", "staging-us"}, Progress: ProgressMin, MinEnvironments: 1},
		{Name: "prod", Environments: []string{"prod-eu", "prod-us"}, Progress: ProgressAll},
		{Name: "dr", Environments: []string{"dr"}, Progress: ProgressAll},
	}}
}

func set(envs ...string) map[string]bool {
	m := map[string]bool{}
	for _, e := range envs {
		m[e] = true
	}
	return m
}

func TestGate(t *testing.T) {
	tests := []struct {
		name     string
		env      string
		promoted map[string]bool
		allowed  bool
		phase    int
		missing  string
		envs     string
	}{
		{"first phase always", "dev", set(), true, 0, "", ""},
		{"optional phase after dev", "qa", set("dev"), true, 1, "", ""},
		{"qa needs dev", "qa", set(), false, 1, "dev", "dev"},
		{"staging skips optional qa", "staging-eu", set("dev"), true, 2, "", ""},
		{"prod needs staging", "prod-eu", set("dev"), false, 3, "staging", "staging-eu, staging-us"},
		{"min 1 of staging suffices", "prod-us", set("dev", "staging-us"), true, 3, "", ""},
		{"prod needs dev too", "prod-eu", set("staging-eu"), false, 3, "dev", "dev"},
		{"all of prod before dr", "dr", set("dev", "staging-eu", "prod-eu"), false, 4, "prod", "prod-us"},
		{"dr after all of prod", "dr", set("dev", "staging-eu", "prod-eu", "prod-us"), true, 4, "", ""},
		{"an environment in no phase", "sandbox", set("dev"), false, -1, "", ""},
		{"redeploy to the same phase", "staging-us", set("dev", "staging-eu"), true, 2, "", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v := Gate(std(), tc.env, tc.promoted)
			if v.Allowed != tc.allowed || v.Phase != tc.phase {
				t.Fatalf("Gate = allowed %t phase %d, want %t %d", v.Allowed, v.Phase, tc.allowed, tc.phase)
			}
			if got := v.Missing.GetName(); got != tc.missing {
				t.Errorf("missing phase %q, want %q", got, tc.missing)
			}
			if got := strings.Join(v.MissingEnvs, ", "); got != tc.envs {
				t.Errorf("missing envs %q, want %q", got, tc.envs)
			}
		})
	}
}

func TestReason(t *testing.T) {
	d := strings.Repeat("ab", 32)
	v := Gate(std(), "prod-eu", set("dev"))
	want := "web@1.2.0 cannot go to prod-eu: phase staging is not done: no succeeded rollout of sha256:abababababab… to staging-eu, staging-us (need 1 of 2)"
	if got := v.Reason(std(), "web", "1.2.0", d, "prod-eu"); !strings.HasPrefix(got, want) {
		t.Errorf("reason:\n got %s\nwant %s...", got, want)
	}
	v = Gate(std(), "sandbox", set())
	if got := v.Reason(std(), "web", "1.2.0", d, "sandbox"); !strings.Contains(got, "environment sandbox is in no phase of lifecycle std (dev (dev) → qa (qa)") {
		t.Errorf("reason for an environment in no phase: %s", got)
	}
}

func TestEntered(t *testing.T) {
	tests := []struct {
		promoted map[string]bool
		want     int
	}{
		{set(), 0},
		{set("dev"), 2}, // qa is optional: staging entered
		{set("dev", "staging-eu"), 3},
		{set("dev", "staging-eu", "prod-eu"), 3},
		{set("dev", "staging-eu", "prod-eu", "prod-us"), 4},
		{set("dev", "staging-eu", "prod-eu", "prod-us", "dr"), 4},
	}
	for _, tc := range tests {
		if got := Entered(std(), tc.promoted); got != tc.want {
			t.Errorf("Entered(%v) = %d, want %d", tc.promoted, got, tc.want)
		}
	}
}
