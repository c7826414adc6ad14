package cli

import (
	"bytes"
	"strings"
	"testing"

	relv1 "github.com/relhq/rel/proto/rel/v1"
)

var prodWeb = &relv1.EnvAppStatus{App: "web", Environment: "prod", CurrentVersion: "1.0.1", CurrentRolloutId: "ro-1", Hosts: 4, OnCurrent: 1,
	Off: []*relv1.OffHost{
		{AgentId: "web-2", Why: "out_of_band", Version: "0.9.0", Phase: "healthy", Detail: "runs 0.9.0"},
		{AgentId: "web-3", Why: "failed", Version: "1.0.1", Phase: "failed", Detail: "health check failed"},
		{AgentId: "web-4", Why: "not_installed"},
	}}

func TestWhereOutput(t *testing.T) {
	show := &relv1.ShowEnvironmentResponse{Environment: &relv1.Environment{Name: "prod", Selector: map[string]string{"env": "prod"}},
		Hosts: []string{"web-1", "web-2", "web-3", "web-4"}, Apps: []*relv1.EnvAppStatus{prodWeb}, Index: 9}
	api := &relv1.EnvAppStatus{App: "api", Environment: "qa", Hosts: 2, ActiveRolloutId: "ro-2", ActiveRolloutState: "running", ActiveRolloutVersion: "2.0.0"}
	over := &relv1.OverviewResponse{Apps: []string{"api", "web"}, Environments: []string{"prod", "qa"}, Cells: []*relv1.EnvAppStatus{api, prodWeb}}
	tests := []struct {
		name, format string
		print        func(p printer) error
		want         string
	}{
		{"env show table", formatTable, func(p printer) error { return p.environmentShow(show) }, "" +
			"Environment: prod\n" +
			"Selector:    env=prod\n" +
			"Hosts:       4\n" +
			"\n" +
			"web: current 1.0.1, 1 of 4 hosts on it\n" +
			"HOST   OFF            RUNS   PHASE    DETAIL\n" +
			"web-2  out_of_band    0.9.0  healthy  runs 0.9.0\n" +
			"web-3  failed         1.0.1  failed   health check failed\n" +
			"web-4  not_installed\n"},
		{"status table", formatTable, func(p printer) error { return p.overview(over) }, "" +
			"APP  ENV   RELEASE  ON IT  OFF                                       ROLLOUT\n" +
			"api  qa    none     0/2                                              ro-2 (running, 2.0.0)\n" +
			"web  prod  1.0.1    1/4    1 out_of_band, 1 failed, 1 not_installed\n"},
		{"status empty", formatTable, func(p printer) error { return p.overview(&relv1.OverviewResponse{}) },
			"Nothing rolled out yet: \"relctl rollout start APP@VERSION --env ENV\" starts one.\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b bytes.Buffer
			if err := tt.print(printer{w: &b, format: tt.format, now: nowOps}); err != nil {
				t.Fatal(err)
			}
			if got := b.String(); got != tt.want {
				t.Errorf("output mismatch\n got:\n%s\nwant:\n%s\n got %q\nwant %q", got, tt.want, got, tt.want)
			}
		})
	}
	var b bytes.Buffer
	if err := (printer{w: &b, format: formatJSON}).environmentShow(show); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"current_version": "1.0.1"`, `"why": "out_of_band"`, `"off_count": 3`, `"on_current": 1`} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("env show json lacks %s:\n%s", want, b.String())
		}
	}
}
