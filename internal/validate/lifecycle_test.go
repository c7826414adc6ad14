package validate

import (
	"errors"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	relv1 "github.com/relhq/rel/proto/rel/v1"
)

func TestLifecycle(t *testing.T) {
	if err := Lifecycle(testLifecycle()); err != nil {
		t.Fatalf("valid lifecycle refused: %v", err)
	}
	tests := []struct {
		name   string
		change func(lc *relv1.Lifecycle)
		want   string
	}{
		{"nil", nil, "no lifecycle given"},
		{"no phases", func(lc *relv1.Lifecycle) { lc.Phases = nil }, "lifecycle std has no phases"},
		{"empty phase", func(lc *relv1.Lifecycle) { lc.Phases[0].Environments = nil }, "phase dev has no environments: list at least one"},
		{"duplicate phase", func(lc *relv1.Lifecycle) { lc.Phases[1].Name = "dev" }, "phase dev appears twice in lifecycle std"},
		{"env in two phases", func(lc *relv1.Lifecycle) { lc.Phases[1].Environments = []string{"prod-eu", "dev"} },
			"environment dev is in two phases, dev and prod"},
		{"env twice in a phase", func(lc *relv1.Lifecycle) { lc.Phases[1].Environments = []string{"prod-eu", "prod-eu"} },
			"environment prod-eu is listed twice in phase prod"},
		{"min above size", func(lc *relv1.Lifecycle) { lc.Phases[1].Progress, lc.Phases[1].MinEnvironments = "min", 3 },
			"phase prod needs min 3 of its 2 environments (prod-eu, prod-us): use 1 to 2"},
		{"min zero", func(lc *relv1.Lifecycle) { lc.Phases[1].Progress = "min" }, "needs min 0 of its 2"},
		{"min with all", func(lc *relv1.Lifecycle) { lc.Phases[1].MinEnvironments = 1 }, "min=1 goes with progress min"},
		{"bad progress", func(lc *relv1.Lifecycle) { lc.Phases[1].Progress = "most" }, `progress "most": use all, min (with min=N) or optional`},
		{"auto outside phase", func(lc *relv1.Lifecycle) { lc.Phases[1].AutoDeploy = []string{"dev"} },
			"phase prod auto-deploys to dev, which is not one of its environments (prod-eu, prod-us)"},
		{"bad env name", func(lc *relv1.Lifecycle) { lc.Phases[0].Environments = []string{"Dev"} }, `environment name "Dev"`},
		{"bad phase name", func(lc *relv1.Lifecycle) { lc.Phases[0].Name = "" }, "phase name is empty"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var lc *relv1.Lifecycle
			if tc.change != nil {
				lc = proto.Clone(testLifecycle()).(*relv1.Lifecycle)
				tc.change(lc)
			}
			err := Lifecycle(lc)
			if err == nil || !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Lifecycle = %v, want invalid: ...%s...", err, tc.want)
			}
		})
	}
}
