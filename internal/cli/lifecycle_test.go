package cli

import (
	"errors"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	relv1 "github.com/relhq/rel/proto/rel/v1"
)

func TestParsePhase(t *testing.T) {
	tests := []struct {
		arg  string
		want *relv1.Phase
		err  string
	}{
		{arg: "dev=dev", want: &relv1.Phase{Name: "dev", Environments: []string{"dev"}, Progress: "all"}},
		{arg: "staging=staging-eu,staging-us:min=1", want: &relv1.Phase{Name: "staging", Environments: []string{"staging-eu", "staging-us"}, Progress: "min", MinEnvironments: 1}},
		{arg: "qa=qa:optional", want: &relv1.Phase{Name: "qa", Environments: []string{"qa"}, Progress: "optional"}},
		{arg: "prod=prod-eu,prod-us:auto=prod-eu,prod-us", want: &relv1.Phase{Name: "prod", Environments: []string{"prod-eu", "prod-us"}, Progress: "all", AutoDeploy: []string{"prod-eu", "prod-us"}}},
		{arg: "prod", err: `--phase "prod": want NAME=ENV[,ENV...]`},
		{arg: "=prod", err: "want NAME=ENV"},
		{arg: "prod=prod:min=x", err: `min="x" is not a number`},
		{arg: "prod=prod:most", err: `unknown option "most": use min=N, optional or auto=ENV[,ENV...]`},
	}
	for _, tc := range tests {
		got, err := parsePhase(tc.arg)
		if tc.err != "" {
			var u *usageError
			if !errors.As(err, &u) || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("parsePhase(%q) = %v, want usage error ...%s...", tc.arg, err, tc.err)
			}
			continue
		}
		if err != nil || !proto.Equal(got, tc.want) {
			t.Errorf("parsePhase(%q) = %v, %v; want %v", tc.arg, got, err, tc.want)
		}
	}
}

func TestLifecycleOutput(t *testing.T) {
	lc := &relv1.Lifecycle{Name: "std", Phases: []*relv1.Phase{
		{Name: "dev", Environments: []string{"dev"}, Progress: "all"},
		{Name: "staging", Environments: []string{"staging-eu", "staging-us"}, Progress: "min", MinEnvironments: 1},
		{Name: "prod", Environments: []string{"prod"}, Progress: "all", AutoDeploy: []string{"prod"}},
	}}
	var b strings.Builder
	if err := (printer{w: &b, format: formatTable}).lifecycle(lc, []string{"web"}); err != nil {
		t.Fatal(err)
	}
	want := `lifecycle std: dev → staging → prod
apps: web
PHASE    ENVIRONMENTS           PROGRESS    AUTO-DEPLOY
dev      dev                    all
staging  staging-eu,staging-us  min 1 of 2
prod     prod                   all         prod
`
	if b.String() != want {
		t.Errorf("table:\n%s\nwant:\n%s", b.String(), want)
	}
	b.Reset()
	resp := &relv1.ReleaseStatusResponse{
		Release:   &relv1.Release{App: "web", Version: "1.2.0", Sha256: strings.Repeat("ab", 32)},
		Lifecycle: "std",
		Phases: []*relv1.PhaseProgress{
			{Phase: lc.Phases[0], Done: true, Environments: []*relv1.EnvironmentProgress{{Environment: "dev", State: "succeeded", RolloutId: "ro-1", Version: "1.2.0", Allowed: true}}},
			{Phase: lc.Phases[1], Environments: []*relv1.EnvironmentProgress{
				{Environment: "staging-eu", State: "none", Allowed: true}, {Environment: "staging-us", State: "rolled_back", RolloutId: "ro-2", Allowed: true}}},
			{Phase: lc.Phases[2], Environments: []*relv1.EnvironmentProgress{{Environment: "prod", State: "none", BlockedBy: "phase staging not done: needs 1 of staging-eu, staging-us"}}},
		},
		Next:     []string{"staging-eu", "staging-us"},
		Blockers: []string{"web@1.2.0 cannot go to prod: phase staging is not done"},
	}
	if err := (printer{w: &b, format: formatTable}).releaseStatus(resp); err != nil {
		t.Fatal(err)
	}
	want = `release web@1.2.0 (sha256:abababababab…), lifecycle std
PHASE                 DONE  ENVIRONMENT  STATE        ROLLOUT  MAY DEPLOY
dev (all)             yes   dev          succeeded    ro-1     yes
staging (min 1 of 2)  no    staging-eu   none                  yes
staging (min 1 of 2)  no    staging-us   rolled_back  ro-2     yes
prod (all)            no    prod         none                  no: phase staging not done: needs 1 of staging-eu, staging-us
next: staging-eu, staging-us
blocked: web@1.2.0 cannot go to prod: phase staging is not done
`
	if b.String() != want {
		t.Errorf("status:\n%s\nwant:\n%s", b.String(), want)
	}
}
