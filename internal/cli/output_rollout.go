package cli

import (
	"cmp"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	relv1 "github.com/relhq/rel/proto/rel/v1"
)

// JSON shapes of staged rollouts: specs, plans and events; see the comment
// on appJSON. Quantities are written as the flags take them ("5", "10%"),
// durations in milliseconds, wave numbers from 0 as the server counts them.

type specJSON struct {
	Strategy string `json:"strategy"`
	// Canary is "" when the rollout has no canary.
	Canary             string   `json:"canary"`
	Waves              []string `json:"waves"`
	WaveBy             string   `json:"wave_by"`
	MaxParallel        uint32   `json:"max_parallel"`
	BakeMs             int64    `json:"bake_ms"`
	ApproveWaves       bool     `json:"approve_waves"`
	MaxFailures        string   `json:"max_failures"`
	ProgressDeadlineMs int64    `json:"progress_deadline_ms"`
	AutoRollback       bool     `json:"auto_rollback"`
}

type plannedHostJSON struct {
	AgentID        string            `json:"agent_id"`
	CurrentVersion string            `json:"current_version"`
	CurrentPhase   string            `json:"current_phase"`
	Connected      bool              `json:"connected"`
	Labels         map[string]string `json:"labels"`
}

type plannedWaveJSON struct {
	Index uint32            `json:"index"`
	Kind  string            `json:"kind"`
	Hosts []plannedHostJSON `json:"hosts"`
}

type planJSON struct {
	Spec     specJSON          `json:"spec"`
	Waves    []plannedWaveJSON `json:"waves"`
	Offline  []plannedHostJSON `json:"offline"`
	Blockers []string          `json:"blockers"`
	UpToDate uint32            `json:"up_to_date"`
}

type eventJSON struct {
	Seq  uint64 `json:"seq"`
	At   string `json:"at"`
	Type string `json:"type"`
	Wave uint32 `json:"wave"`
	Host string `json:"host"`
	// Hosts names every host of an event about several (Host is then "").
	Hosts   []string `json:"hosts,omitempty"`
	Message string   `json:"message"`
}

func toSpecJSON(s *relv1.RolloutSpec) specJSON {
	return specJSON{
		Strategy:           s.GetStrategy(),
		Canary:             formatQuantity(s.GetCanary()),
		Waves:              formatWaves(s.GetWaves()),
		WaveBy:             s.GetWaveBy(),
		MaxParallel:        s.GetMaxParallel(),
		BakeMs:             s.GetBakeMs(),
		ApproveWaves:       s.GetApproveWaves(),
		MaxFailures:        formatMaxFailures(s.GetMaxFailures()),
		ProgressDeadlineMs: s.GetProgressDeadlineMs(),
		AutoRollback:       s.GetAutoRollback(),
	}
}

func toPlannedHostsJSON(hosts []*relv1.PlannedHost) []plannedHostJSON {
	out := make([]plannedHostJSON, 0, len(hosts))
	for _, h := range hosts {
		out = append(out, plannedHostJSON{
			AgentID:        h.GetAgentId(),
			CurrentVersion: h.GetCurrentVersion(),
			CurrentPhase:   h.GetCurrentPhase(),
			Connected:      h.GetConnected(),
			Labels:         nonNil(h.GetLabels()),
		})
	}
	return out
}

func toEventJSON(e *relv1.RolloutEvent) eventJSON {
	return eventJSON{
		Seq:     e.GetSeq(),
		At:      jsonTime(e.GetAtUnixNano()),
		Type:    e.GetType(),
		Wave:    e.GetWave(),
		Host:    e.GetHost(),
		Hosts:   e.GetHosts(),
		Message: e.GetMessage(),
	}
}

// eventHosts is an event's host, or the first of its hosts and how many
// more: a table cell stays one short line.
func eventHosts(e *relv1.RolloutEvent) string {
	hosts := e.GetHosts()
	switch {
	case len(hosts) == 0:
		return e.GetHost()
	case len(hosts) <= 3:
		return strings.Join(hosts, ",")
	}
	return fmt.Sprintf("%s (+%d)", strings.Join(hosts[:2], ","), len(hosts)-2)
}

// waveBase is the number tables give a rollout's first wave: 0 for a canary
// deploy, whose canary is wave 0 and whose other waves then count from 1;
// 1 otherwise, so that the last wave is always "wave M of M".
func waveBase(r *relv1.Rollout) uint32 {
	if r.GetKind() != kindRollback && r.GetSpec().GetStrategy() == strategyCanary {
		return 0
	}
	return 1
}

// waveName is the table name of the wave with server index i.
func waveName(base, i uint32) string { return strconv.FormatUint(uint64(base+i), 10) }

func sortedByWave(hosts []*relv1.RolloutHost) []*relv1.RolloutHost {
	return slices.SortedStableFunc(slices.Values(hosts), func(a, b *relv1.RolloutHost) int {
		return cmp.Compare(a.GetWave(), b.GetWave())
	})
}

// describeKind is a rollout's kind with the rollout it relates to:
// "deploy", "deploy, rolled back by r-2", "rollback of r-1".
func describeKind(r *relv1.Rollout) string {
	var extra string
	switch {
	case r.GetRollbackOf() != "":
		extra = "of " + r.GetRollbackOf()
	case r.GetRolledBackBy() != "":
		extra = "rolled back by " + r.GetRolledBackBy()
	}
	if r.GetKind() == kindRollback {
		return joinNonEmpty(" ", r.GetKind(), extra)
	}
	return joinNonEmpty(", ", r.GetKind(), extra)
}

func joinNonEmpty(sep string, parts ...string) string {
	return strings.Join(slices.DeleteFunc(slices.Clone(parts), func(s string) bool { return s == "" }), sep)
}

// step describes where a rollout is: its wave ("2 of 3", "0 of 2
// (canary)"; "" when the server does not count waves) and what it is doing
// there, with for how long ("baking 12s/30s", "waiting for approval for
// 1m3s", "paused for 5s"; "" once it is over). events are the latest
// events known, which date the waits.
func (p printer) step(r *relv1.Rollout, events []*relv1.RolloutEvent) (wave, activity string) {
	if n := r.GetWaveCount(); n > 0 {
		base := waveBase(r)
		wave = fmt.Sprintf("%s of %s", waveName(base, r.GetCurrentWave()), waveName(base, n-1))
		if base == 0 && r.GetCurrentWave() == 0 {
			wave += " (canary)"
		}
	}
	now := p.clock()
	since := func(eventType string, fallback int64) string {
		at := fallback
		for _, e := range slices.Backward(events) {
			if e.GetType() == eventType {
				at = e.GetAtUnixNano()
				break
			}
		}
		if at == 0 {
			return ""
		}
		return " for " + humanDuration(now.Sub(time.Unix(0, at)))
	}
	switch r.GetState() {
	case stateWaitingApproval:
		// Without its event, the wait began when the wave's bake ended.
		var baked int64
		if done := r.GetWaveDoneUnixNano(); done != 0 {
			baked = done + r.GetSpec().GetBakeMs()*int64(time.Millisecond)
		}
		activity = "waiting for approval" + since(stateWaitingApproval, baked)
	case statePaused:
		activity = "paused" + since("paused", r.GetLastProgressUnixNano())
	case stateRollingBack:
		activity = "rolling back" + since("rollback_started", r.GetLastProgressUnixNano())
	case stateRunning:
		done, started, bake := r.GetWaveDoneUnixNano(), r.GetWaveStartedUnixNano(), msDuration(r.GetSpec().GetBakeMs())
		switch {
		case bake > 0 && done != 0 && done >= started:
			elapsed := min(max(now.Sub(time.Unix(0, done)), 0), bake)
			activity = fmt.Sprintf("baking %s/%s", humanDuration(elapsed), humanDuration(bake))
		case started != 0:
			activity = "running for " + humanDuration(now.Sub(time.Unix(0, started)))
		}
	}
	return wave, activity
}

// plan prints "rollout plan": the spec, each wave with its hosts, the
// offline hosts, the hosts already up to date and the blockers.
func (p printer) plan(app, version, env string, resp *relv1.PlanRolloutResponse) error {
	if p.json() {
		out := planJSON{
			Spec:     toSpecJSON(resp.GetSpec()),
			Waves:    []plannedWaveJSON{},
			Offline:  toPlannedHostsJSON(resp.GetOffline()),
			Blockers: append([]string{}, resp.GetBlockers()...),
			UpToDate: resp.GetUpToDate(),
		}
		for _, w := range resp.GetWaves() {
			out.Waves = append(out.Waves, plannedWaveJSON{Index: w.GetIndex(), Kind: w.GetKind(),
				Hosts: toPlannedHostsJSON(w.GetHosts())})
		}
		return p.writeJSON(out)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "Plan for %s@%s to %s (nothing changes until \"relctl rollout start\")\n",
		cell(app), cell(version), cell(env))
	fmt.Fprintf(&b, "Strategy: %s\n", cell(specSummary(resp.GetSpec())))
	base := uint32(1)
	if w := resp.GetWaves(); len(w) > 0 && w[0].GetKind() == strategyCanary {
		base = 0
	}
	waveBy := resp.GetSpec().GetWaveBy()
	hostRows := func(hosts []*relv1.PlannedHost, withConnected bool) [][]string {
		rows := make([][]string, 0, len(hosts))
		for _, h := range hosts {
			row := []string{h.GetAgentId(), h.GetCurrentVersion(), h.GetCurrentPhase()}
			if withConnected {
				row = append(row, yesNo(h.GetConnected()))
			}
			rows = append(rows, row)
		}
		return rows
	}
	if len(resp.GetWaves()) == 0 {
		b.WriteString("\nNo host to change.\n")
	}
	for _, w := range resp.GetWaves() {
		var notes []string
		if w.GetKind() != "" && w.GetKind() != "wave" {
			notes = append(notes, w.GetKind())
		}
		if v, ok := commonLabel(w.GetHosts(), waveBy); ok {
			notes = append(notes, waveBy+"="+v)
		}
		title := "WAVE " + waveName(base, w.GetIndex())
		if len(notes) > 0 {
			title += " (" + strings.Join(notes, ", ") + ")"
		}
		n := len(w.GetHosts())
		fmt.Fprintf(&b, "\n%s: %d host%s\n", cell(title), n, plural(n))
		if err := (printer{w: &b, format: formatTable}).table([]string{"HOST", "NOW RUNNING", "PHASE", "CONNECTED"},
			hostRows(w.GetHosts(), true)); err != nil {
			return err
		}
	}
	if off := resp.GetOffline(); len(off) > 0 {
		fmt.Fprintf(&b, "\nOffline, would be skipped: %d host%s\n", len(off), plural(len(off)))
		if err := (printer{w: &b, format: formatTable}).table([]string{"HOST", "NOW RUNNING", "PHASE"},
			hostRows(off, false)); err != nil {
			return err
		}
	}
	n := int(resp.GetUpToDate())
	fmt.Fprintf(&b, "\nAlready on %s: %d host%s\n", cell(version), n, plural(n))
	if bl := resp.GetBlockers(); len(bl) > 0 {
		b.WriteString("\nBlockers (the rollout would not start):\n")
		for _, x := range bl {
			fmt.Fprintf(&b, "  %s\n", cell(x))
		}
	}
	_, err := io.WriteString(p.w, b.String())
	return err
}

// commonLabel is the value of label that every host has, if they share one.
func commonLabel(hosts []*relv1.PlannedHost, label string) (string, bool) {
	if label == "" || len(hosts) == 0 {
		return "", false
	}
	v, ok := hosts[0].GetLabels()[label]
	if !ok {
		return "", false
	}
	for _, h := range hosts[1:] {
		if h.GetLabels()[label] != v {
			return "", false
		}
	}
	return v, true
}

// rolloutControlled confirms pause, resume, approve and abort: the state
// the rollout is in now, or the rollout in JSON.
func (p printer) rolloutControlled(r *relv1.Rollout, approved uint32) error {
	if p.json() {
		return p.writeJSON(toRolloutJSON(r))
	}
	note := ""
	if approved != 0 {
		note = fmt.Sprintf("; approved wave %d of %s", approved, waveName(waveBase(r), max(r.GetWaveCount(), 1)-1))
	}
	_, err := fmt.Fprintf(p.w, "rollout %s: %s%s\n", cell(r.GetId()), cell(r.GetState()), note)
	return err
}

// rollbackStarted confirms "rollout rollback": the rollback's id and its
// hosts with the version each goes back to, or the rollback in JSON.
func (p printer) rollbackStarted(r *relv1.Rollout, index uint64) error {
	if p.json() {
		return p.writeJSON(toRolloutJSON(r))
	}
	hosts := r.GetHosts()
	waves := ""
	if n := r.GetWaveCount(); n > 1 {
		waves = fmt.Sprintf(" in %d waves", n)
	}
	if _, err := fmt.Fprintf(p.w, "started rollback %s of rollout %s: %s in %s, %d host%s%s (index %d)\n",
		cell(r.GetId()), cell(r.GetRollbackOf()), cell(r.GetApp()), cell(r.GetEnvironment()),
		len(hosts), plural(len(hosts)), waves, index); err != nil {
		return err
	}
	base := waveBase(r)
	rows := make([][]string, 0, len(hosts))
	for _, h := range sortedByWave(hosts) {
		rows = append(rows, []string{h.GetAgentId(), waveName(base, h.GetWave()), h.GetPreviousVersion(), h.GetTargetVersion()})
	}
	return p.table([]string{"HOST", "WAVE", "FROM", "TO"}, rows)
}

// events prints "rollout events": a table, or {"events": [...]}. r is the
// rollout the events belong to, which says how its waves are numbered.
func (p printer) events(r *relv1.Rollout, events []*relv1.RolloutEvent) error {
	if p.json() {
		out := struct {
			Events []eventJSON `json:"events"`
		}{Events: []eventJSON{}}
		for _, e := range events {
			out.Events = append(out.Events, toEventJSON(e))
		}
		return p.writeJSON(out)
	}
	return p.eventTable(waveBase(r), events)
}

func (p printer) eventTable(base uint32, events []*relv1.RolloutEvent) error {
	rows := make([][]string, 0, len(events))
	for _, e := range events {
		rows = append(rows, []string{formatTime(e.GetAtUnixNano(), time.RFC3339), waveName(base, e.GetWave()),
			e.GetType(), eventHosts(e), e.GetMessage()})
	}
	return p.table([]string{"TIME", "WAVE", "TYPE", "HOST", "MESSAGE"}, rows)
}

// eventLine is one event on one line, as "rollout status --watch" prints
// it when stdout is not a terminal:
// "2026-11-25T22:40:01Z wave=1 host_healthy web-2: healthy on 1.2.0".
func eventLine(base uint32, e *relv1.RolloutEvent) string {
	line := formatTime(e.GetAtUnixNano(), time.RFC3339) + " wave=" + waveName(base, e.GetWave()) + " " + e.GetType()
	switch host := eventHosts(e); {
	case host != "" && e.GetMessage() != "":
		line += " " + host + ": " + e.GetMessage()
	case host != "":
		line += " " + host
	case e.GetMessage() != "":
		line += " " + e.GetMessage()
	}
	return cell(line)
}
