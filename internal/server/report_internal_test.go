package server

import (
	"strings"
	"testing"

	relv1 "github.com/relhq/rel/proto/rel/v1"
)

// TestRunningVersions: an environment's healthy, connected hosts counted
// by version, most first; hosts elsewhere, offline or not healthy do not
// count. The first is the base of release notes --env.
func TestRunningVersions(t *testing.T) {
	ag := func(id, env string, connected bool) *relv1.Agent {
		return &relv1.Agent{Id: id, Labels: map[string]string{"env": env}, Connected: connected}
	}
	rp := func(version, phase string) map[string]*relv1.AppReport {
		return map[string]*relv1.AppReport{"web": {App: "web", Version: version, Phase: phase}}
	}
	v := &whereView{
		agents: []*relv1.Agent{ag("h1", "prod", true), ag("h2", "prod", true), ag("h3", "prod", true), ag("h4", "prod", false),
			ag("h5", "prod", true), ag("h6", "qa", true), ag("h7", "prod", true)},
		reports: map[string]map[string]*relv1.AppReport{
			"h1": rp("1.1.0", "healthy"), "h2": rp("1.2.0", "healthy"), "h3": rp("1.2.0", "healthy"),
			"h4": rp("1.1.0", "healthy"),                              // offline
			"h5": rp("1.3.0", "failed"), "h6": rp("1.1.0", "healthy"), // failed; another environment
		},
	}
	got := runningVersions(v, "web", &relv1.Environment{Name: "prod", Selector: map[string]string{"env": "prod"}})
	var parts []string
	for _, c := range got {
		parts = append(parts, c.GetVersion()+"×"+string(rune('0'+c.GetHosts())))
	}
	if s := strings.Join(parts, " "); s != "1.2.0×2 1.1.0×1" {
		t.Fatalf("prod runs %s, want 1.2.0×2 1.1.0×1", s)
	}
}

// TestNotesBetween: releases after the base up to the candidate, by
// creation; a base that is gone (deleted) lists everything up to it.
func TestNotesBetween(t *testing.T) {
	rels := []*relv1.Release{{Version: "1.0.0", CreateIndex: 3}, {Version: "1.2.0", CreateIndex: 5}, {Version: "1.1.0", CreateIndex: 7}, {Version: "2.0.0", CreateIndex: 9}}
	cases := []struct {
		base, cand string
		want       string
		nothing    bool
	}{
		{"1.0.0", "2.0.0", "1.2.0 1.1.0 2.0.0", false},
		{"1.2.0", "1.1.0", "1.1.0", false},
		{"1.1.0", "1.2.0", "", true},
		{"2.0.0", "2.0.0", "", true},
		{"0.9.0", "1.2.0", "1.0.0 1.2.0", false},
		{"", "1.0.0", "1.0.0", false},
	}
	for _, c := range cases {
		var cand *relv1.Release
		for _, r := range rels {
			if r.GetVersion() == c.cand {
				cand = r
			}
		}
		out, nothing := notesBetween(rels, c.base, cand)
		var vs []string
		for _, r := range out {
			vs = append(vs, r.GetVersion())
		}
		if strings.Join(vs, " ") != c.want || nothing != c.nothing {
			t.Errorf("base %q cand %s: %v nothing new %v, want %q %v", c.base, c.cand, vs, nothing, c.want, c.nothing)
		}
	}
}
