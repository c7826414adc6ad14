package event

import (
	"errors"
	"testing"

	"github.com/relhq/rel/internal/rollout"
	relv1 "github.com/relhq/rel/proto/rel/v1"
)

func TestFromRollout(t *testing.T) {
	deploy := &relv1.Rollout{Id: "ro-1", App: "web", Version: "1.2.0", Environment: "prod", Kind: rollout.KindDeploy}
	rollback := &relv1.Rollout{Id: "ro-2", App: "web", Version: "1.1.0", Environment: "prod", Kind: rollout.KindRollback}
	tests := []struct {
		name  string
		r     *relv1.Rollout
		typ   string
		host  string
		types []string
	}{
		{"started", deploy, rollout.EventStarted, "", []string{"rollout.started"}},
		{"wave done", deploy, rollout.EventWaveDone, "", []string{"rollout.wave_done"}},
		{"host failed", deploy, rollout.EventHostFailed, "web-3", []string{"host.failed"}},
		{"dispatch is not an event", deploy, rollout.EventDispatched, "web-3", nil},
		{"healthy host is not an event", deploy, rollout.EventHostHealthy, "web-3", nil},
		{"rolling back", deploy, rollout.EventRollbackStarted, "", []string{"rollout.rolling_back"}},
		{"approval", deploy, rollout.EventApproval, "", []string{"approval.given"}},
		{"a deploy that succeeds promotes its release", deploy, rollout.EventSucceeded, "", []string{"rollout.succeeded", ReleasePromoted}},
		{"a rollback that succeeds promotes nothing", rollback, rollout.EventSucceeded, "", []string{"rollout.succeeded"}},
		{"a type from a newer planner passes through", deploy, "sleeping", "", []string{"rollout.sleeping"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := FromRollout(tc.r, &relv1.RolloutEvent{RolloutId: tc.r.GetId(), Type: tc.typ, Host: tc.host, AtUnixNano: 42, Message: "m"})
			if len(got) != len(tc.types) {
				t.Fatalf("%d events %v, want types %v", len(got), got, tc.types)
			}
			for i, e := range got {
				if e.GetType() != tc.types[i] || e.GetApp() != "web" || e.GetEnv() != "prod" || e.GetRolloutId() != tc.r.GetId() ||
					e.GetVersion() != tc.r.GetVersion() || e.GetTimeUnixNano() != 42 {
					t.Errorf("event %d: %v, want type %s of %s", i, e, tc.types[i], tc.r.GetId())
				}
			}
			if len(got) > 0 && got[0].GetAgentId() != tc.host {
				t.Errorf("agent %q, want %q", got[0].GetAgentId(), tc.host)
			}
		})
	}
}

func TestParseTypes(t *testing.T) {
	tests := []struct {
		in   string
		want int
		bad  bool
	}{
		{"", 0, false},
		{"rollout.*", 1, false},
		{"rollout.*, release.*,host.failed", 3, false},
		{"*", 1, false},
		{"rollouts.*", 0, true},
		{"rollout.*,", 0, true},
		{"rollout.[", 0, true},
		{"agent.gone", 0, true},
	}
	for _, tc := range tests {
		got, err := ParseTypes(tc.in)
		if tc.bad {
			if !errors.Is(err, ErrBadFilter) {
				t.Errorf("ParseTypes(%q) = %v, %v: want ErrBadFilter", tc.in, got, err)
			}
			continue
		}
		if err != nil || len(got) != tc.want {
			t.Errorf("ParseTypes(%q) = %v, %v: want %d globs", tc.in, got, err, tc.want)
		}
	}
}

func TestFilterMatch(t *testing.T) {
	e := &relv1.Event{Type: "rollout.wave_done", App: "web", Env: "prod"}
	tests := []struct {
		f    Filter
		want bool
	}{
		{Filter{}, true},
		{Filter{App: "web"}, true},
		{Filter{App: "api"}, false},
		{Filter{Env: "staging"}, false},
		{Filter{Types: []string{"release.*"}}, false},
		{Filter{Types: []string{"release.*", "rollout.*"}}, true},
		{Filter{App: "web", Env: "prod", Types: []string{"rollout.wave_*"}}, true},
	}
	for _, tc := range tests {
		if got := tc.f.Match(e); got != tc.want {
			t.Errorf("%+v.Match = %v, want %v", tc.f, got, tc.want)
		}
	}
}
