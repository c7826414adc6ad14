package cli

import (
	"cmp"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/relhq/rel/internal/rollout"
	relv1 "github.com/relhq/rel/proto/rel/v1"
)

// JSON shapes of rollouts, agents and history; see the comment on appJSON.
// Times are RFC 3339 in UTC, "" when the server did not set them.

type rolloutHostJSON struct {
	AgentID         string `json:"agent_id"`
	PreviousVersion string `json:"previous_version"`
	TargetVersion   string `json:"target_version"`
	// Wave counts from 0, as the server does.
	Wave         uint32 `json:"wave"`
	State        string `json:"state"`
	Phase        string `json:"phase"`
	Reason       string `json:"reason"`
	DispatchedAt string `json:"dispatched_at"`
	FinishedAt   string `json:"finished_at"`
}

type rolloutJSON struct {
	ID           string   `json:"id"`
	Kind         string   `json:"kind"`
	App          string   `json:"app"`
	Version      string   `json:"version"`
	Environment  string   `json:"environment"`
	Strategy     string   `json:"strategy"`
	Spec         specJSON `json:"spec"`
	State        string   `json:"state"`
	Reason       string   `json:"reason"`
	RollbackOf   string   `json:"rollback_of"`
	RolledBackBy string   `json:"rolled_back_by"`
	// CurrentWave and ApprovedWave count from 0, as the server does.
	CurrentWave    uint32            `json:"current_wave"`
	WaveCount      uint32            `json:"wave_count"`
	ApprovedWave   uint32            `json:"approved_wave"`
	PausedFrom     string            `json:"paused_from"`
	WaveStartedAt  string            `json:"wave_started_at"`
	WaveDoneAt     string            `json:"wave_done_at"`
	LastProgressAt string            `json:"last_progress_at"`
	EventSeq       uint64            `json:"event_seq"`
	Hosts          []rolloutHostJSON `json:"hosts"`
	StartedAt      string            `json:"started_at"`
	FinishedAt     string            `json:"finished_at"`
	CreateIndex    uint64            `json:"create_index"`
	ModifyIndex    uint64            `json:"modify_index"`
	// Change control: change type, requester, approvals, review.
	ChangeControl *changeControlJSON `json:"change_control,omitempty"`
	// Freezes: the window an emergency overrode, the one that paused it,
	// and when the freeze holding it ends.
	FreezeOverridden string `json:"freeze_overridden,omitempty"`
	PausedByFreeze   string `json:"paused_by_freeze,omitempty"`
	FrozenUntil      string `json:"frozen_until,omitempty"`
}

type rolloutHostStatusJSON struct {
	AgentID         string `json:"agent_id"`
	Wave            uint32 `json:"wave"`
	State           string `json:"state"`
	Phase           string `json:"phase"`
	Version         string `json:"version"`
	PreviousVersion string `json:"previous_version"`
	TargetVersion   string `json:"target_version"`
	// What the host runs now, as its agent reports it.
	CurrentVersion string `json:"current_version"`
	Connected      bool   `json:"connected"`
	UpdatedAt      string `json:"updated_at"`
	Reason         string `json:"reason"`
}

type rolloutStatusJSON struct {
	Rollout rolloutJSON             `json:"rollout"`
	Hosts   []rolloutHostStatusJSON `json:"hosts"`
	Totals  map[string]uint32       `json:"totals"`
}

type hostFactsJSON struct {
	Hostname        string `json:"hostname"`
	OS              string `json:"os"`
	Platform        string `json:"platform"`
	PlatformVersion string `json:"platform_version"`
	Kernel          string `json:"kernel"`
	Arch            string `json:"arch"`
	CPUs            uint32 `json:"cpus"`
	MemoryBytes     uint64 `json:"memory_bytes"`
}

type loadJSON struct {
	CPUPercent     float64 `json:"cpu_percent"`
	MemoryPercent  float64 `json:"memory_percent"`
	DiskFreeBytes  uint64  `json:"disk_free_bytes"`
	DiskTotalBytes uint64  `json:"disk_total_bytes"`
}

type appReportJSON struct {
	App             string `json:"app"`
	Version         string `json:"version"`
	PreviousVersion string `json:"previous_version"`
	Phase           string `json:"phase"`
	Reason          string `json:"reason"`
	Output          string `json:"output"`
	ReportedAt      string `json:"reported_at"`
	RolloutID       string `json:"rollout_id"`
	Generation      uint64 `json:"generation"`
}

type agentJSON struct {
	ID               string            `json:"id"`
	Labels           map[string]string `json:"labels"`
	AgentVersion     string            `json:"agent_version"`
	Facts            hostFactsJSON     `json:"facts"`
	Connected        bool              `json:"connected"`
	SessionID        string            `json:"session_id"`
	ServerID         string            `json:"server_id"`
	ConnectedAt      string            `json:"connected_at"`
	DisconnectedAt   string            `json:"disconnected_at"`
	DisconnectReason string            `json:"disconnect_reason"`
	LastHeartbeatAt  string            `json:"last_heartbeat_at"`
	Environments     []string          `json:"environments"`
	// Load is null when no live data reached the server answering.
	Load        *loadJSON       `json:"load"`
	Apps        []appReportJSON `json:"apps"`
	CreateIndex uint64          `json:"create_index"`
	ModifyIndex uint64          `json:"modify_index"`
}

type historyEntryJSON struct {
	App     string `json:"app"`
	AgentID string `json:"agent_id"`
	Version string `json:"version"`
	From    string `json:"from"`
	// To is "" while the version still runs; Current says the same.
	To      string `json:"to"`
	Current bool   `json:"current"`
	// DurationSeconds counts up to now for the current entry.
	DurationSeconds int64 `json:"duration_seconds"`
	// Outcome is starting, running, failed, replaced or rolled_back.
	Outcome     string `json:"outcome"`
	Reason      string `json:"reason"`
	FailedAt    string `json:"failed_at"`
	RolloutID   string `json:"rollout_id"`
	RolloutKind string `json:"rollout_kind"`
	// The rollout whose version took this one's place.
	ReplacedByRolloutID string `json:"replaced_by_rollout_id"`
	ReplacedByKind      string `json:"replaced_by_kind"`
	CreateIndex         uint64 `json:"create_index"`
	ModifyIndex         uint64 `json:"modify_index"`
}

func jsonTime(unixNano int64) string { return formatTime(unixNano, time.RFC3339Nano) }

func toRolloutJSON(r *relv1.Rollout) rolloutJSON {
	out := rolloutJSON{
		ID:               r.GetId(),
		Kind:             r.GetKind(),
		App:              r.GetApp(),
		Version:          r.GetVersion(),
		Environment:      r.GetEnvironment(),
		Strategy:         r.GetSpec().GetStrategy(),
		Spec:             toSpecJSON(r.GetSpec()),
		State:            r.GetState(),
		Reason:           r.GetReason(),
		RollbackOf:       r.GetRollbackOf(),
		RolledBackBy:     r.GetRolledBackBy(),
		CurrentWave:      r.GetCurrentWave(),
		WaveCount:        r.GetWaveCount(),
		ApprovedWave:     r.GetApprovedWave(),
		PausedFrom:       r.GetPausedFrom(),
		WaveStartedAt:    jsonTime(r.GetWaveStartedUnixNano()),
		WaveDoneAt:       jsonTime(r.GetWaveDoneUnixNano()),
		LastProgressAt:   jsonTime(r.GetLastProgressUnixNano()),
		EventSeq:         r.GetEventSeq(),
		Hosts:            []rolloutHostJSON{},
		StartedAt:        jsonTime(r.GetCreatedUnixNano()),
		FinishedAt:       jsonTime(r.GetFinishedUnixNano()),
		CreateIndex:      r.GetCreateIndex(),
		ModifyIndex:      r.GetModifyIndex(),
		ChangeControl:    toChangeControlJSON(r),
		FreezeOverridden: r.GetFreezeOverridden(),
		PausedByFreeze:   r.GetPausedByFreeze(),
		FrozenUntil:      formatTime(r.GetFrozenUntilUnixNano(), time.RFC3339),
	}
	for _, h := range r.GetHosts() {
		out.Hosts = append(out.Hosts, rolloutHostJSON{
			AgentID:         h.GetAgentId(),
			PreviousVersion: h.GetPreviousVersion(),
			TargetVersion:   h.GetTargetVersion(),
			Wave:            h.GetWave(),
			State:           h.GetState(),
			Phase:           h.GetPhase(),
			Reason:          h.GetReason(),
			DispatchedAt:    jsonTime(h.GetDispatchedUnixNano()),
			FinishedAt:      jsonTime(h.GetFinishedUnixNano()),
		})
	}
	return out
}

func toRolloutStatusJSON(s *relv1.RolloutStatus) rolloutStatusJSON {
	out := rolloutStatusJSON{
		Rollout: toRolloutJSON(s.GetRollout()),
		Hosts:   []rolloutHostStatusJSON{},
		Totals:  phaseTotals(s),
	}
	engine := rolloutHosts(s.GetRollout())
	for _, h := range s.GetHosts() {
		e := engine[h.GetAgentId()]
		out.Hosts = append(out.Hosts, rolloutHostStatusJSON{
			AgentID:         h.GetAgentId(),
			Wave:            e.GetWave(),
			State:           e.GetState(),
			Phase:           h.GetPhase(),
			Version:         h.GetVersion(),
			PreviousVersion: h.GetPreviousVersion(),
			TargetVersion:   e.GetTargetVersion(),
			CurrentVersion:  h.GetCurrentVersion(),
			Connected:       h.GetConnected(),
			UpdatedAt:       jsonTime(h.GetUpdatedUnixNano()),
			Reason:          h.GetReason(),
		})
	}
	return out
}

// rolloutHosts indexes a rollout's hosts (the engine's view: wave, state,
// target) by agent id, to join them with the per-host status.
func rolloutHosts(r *relv1.Rollout) map[string]*relv1.RolloutHost {
	out := make(map[string]*relv1.RolloutHost, len(r.GetHosts()))
	for _, h := range r.GetHosts() {
		out[h.GetAgentId()] = h
	}
	return out
}

func toAgentJSON(s *relv1.AgentStatus) agentJSON {
	a, f := s.GetAgent(), s.GetAgent().GetFacts()
	out := agentJSON{
		ID:           a.GetId(),
		Labels:       nonNil(a.GetLabels()),
		AgentVersion: a.GetAgentVersion(),
		Facts: hostFactsJSON{
			Hostname:        f.GetHostname(),
			OS:              f.GetOs(),
			Platform:        f.GetPlatform(),
			PlatformVersion: f.GetPlatformVersion(),
			Kernel:          f.GetKernel(),
			Arch:            f.GetArch(),
			CPUs:            f.GetCpus(),
			MemoryBytes:     f.GetMemoryBytes(),
		},
		Connected:        a.GetConnected(),
		SessionID:        a.GetSessionId(),
		ServerID:         a.GetServerId(),
		ConnectedAt:      jsonTime(a.GetConnectedUnixNano()),
		DisconnectedAt:   jsonTime(a.GetDisconnectedUnixNano()),
		DisconnectReason: a.GetDisconnectReason(),
		LastHeartbeatAt:  jsonTime(s.GetLastHeartbeatUnixNano()),
		Environments:     append([]string{}, s.GetEnvironments()...),
		Apps:             []appReportJSON{},
		CreateIndex:      a.GetCreateIndex(),
		ModifyIndex:      a.GetModifyIndex(),
	}
	if l := s.GetLoad(); l != nil {
		out.Load = &loadJSON{
			CPUPercent:     l.GetCpuPercent(),
			MemoryPercent:  l.GetMemoryPercent(),
			DiskFreeBytes:  l.GetDiskFreeBytes(),
			DiskTotalBytes: l.GetDiskTotalBytes(),
		}
	}
	for _, r := range s.GetApps() {
		out.Apps = append(out.Apps, appReportJSON{
			App:             r.GetApp(),
			Version:         r.GetVersion(),
			PreviousVersion: r.GetPreviousVersion(),
			Phase:           r.GetPhase(),
			Reason:          r.GetReason(),
			Output:          r.GetOutput(),
			ReportedAt:      jsonTime(r.GetAtUnixNano()),
			RolloutID:       r.GetRolloutId(),
			Generation:      r.GetGeneration(),
		})
	}
	return out
}

func (p printer) toHistoryEntryJSON(e *relv1.HistoryEntry) historyEntryJSON {
	return historyEntryJSON{
		App:                 e.GetApp(),
		AgentID:             e.GetAgentId(),
		Version:             e.GetVersion(),
		From:                jsonTime(e.GetFromUnixNano()),
		To:                  jsonTime(e.GetToUnixNano()),
		Current:             e.GetToUnixNano() == 0,
		DurationSeconds:     int64(p.historyDuration(e) / time.Second),
		Outcome:             historyOutcome(e),
		Reason:              e.GetReason(),
		FailedAt:            jsonTime(e.GetFailedUnixNano()),
		RolloutID:           e.GetRolloutId(),
		RolloutKind:         e.GetRolloutKind(),
		ReplacedByRolloutID: e.GetReplacedByRolloutId(),
		ReplacedByKind:      e.GetReplacedByKind(),
		CreateIndex:         e.GetCreateIndex(),
		ModifyIndex:         e.GetModifyIndex(),
	}
}

// historyOutcome is an entry's outcome; entries recorded before outcomes
// were have none: running while open, replaced once closed.
func historyOutcome(e *relv1.HistoryEntry) string {
	switch {
	case e.GetOutcome() != "":
		return e.GetOutcome()
	case e.GetToUnixNano() == 0:
		return "running"
	default:
		return "replaced"
	}
}

// rolloutStarted confirms "rollout start": the id and the hosts the rollout
// targets with their waves in table format, the rollout in JSON.
func (p printer) rolloutStarted(r *relv1.Rollout, index uint64) error {
	if p.json() {
		return p.writeJSON(toRolloutJSON(r))
	}
	hosts := r.GetHosts()
	waves := ""
	if n := r.GetWaveCount(); n > 1 {
		waves = fmt.Sprintf(" in %d waves", n)
	}
	verb, why := "started", ""
	switch {
	case r.GetState() == stateQueued:
		// Queued behind a rollout holding some of its hosts: say whom.
		verb, why = "queued", "; "+cell(r.GetReason())+": it starts when that rollout ends"
	case r.GetState() == "frozen":
		verb, why = "frozen", "; "+cell(r.GetReason())+": it starts by itself when the freeze ends"
	case r.GetFreezeOverridden() != "":
		why = "; emergency change: overrides freeze window " + cell(r.GetFreezeOverridden())
	}
	if r.GetState() == rollout.StateAwaitingApproval {
		verb, why = "requested", "; "+cell(r.GetReason())+" by "+formatTime(r.GetApprovalExpiresUnixNano(), time.RFC3339)+": 'relctl approvals pending'"
	}
	if _, err := fmt.Fprintf(p.w, "%s rollout %s: %s@%s to %s, %d host%s%s (index %d)%s\n",
		verb, cell(r.GetId()), cell(r.GetApp()), cell(r.GetVersion()), cell(r.GetEnvironment()),
		len(hosts), plural(len(hosts)), waves, index, why); err != nil {
		return err
	}
	base := waveBase(r)
	rows := make([][]string, 0, len(hosts))
	for _, h := range sortedByWave(hosts) {
		rows = append(rows, []string{h.GetAgentId(), waveName(base, h.GetWave()), h.GetPreviousVersion()})
	}
	return p.table([]string{"HOST", "WAVE", "PREVIOUS"}, rows)
}

// rolloutStatus prints one rollout without its events; see
// rolloutStatusWithEvents.
func (p printer) rolloutStatus(s *relv1.RolloutStatus) error {
	return p.rolloutStatusWithEvents(s, nil)
}

// rolloutStatusWithEvents prints one rollout: a key: value header, the
// per-host table, a totals line and, in table format, the events given
// (the latest few). JSON has no events: "rollout events" lists them.
func (p printer) rolloutStatusWithEvents(s *relv1.RolloutStatus, events []*relv1.RolloutEvent) error {
	if p.json() {
		return p.writeJSON(toRolloutStatusJSON(s))
	}
	r := s.GetRollout()
	wave, activity := p.step(r, events)
	err := p.aligned(1, func(tw io.Writer) {
		for _, kv := range [][2]string{
			{"Rollout", r.GetId()},
			{"Kind", describeKind(r)},
			{"Release", r.GetApp() + "@" + r.GetVersion()},
			{"Environment", r.GetEnvironment()},
			{"Strategy", specSummary(r.GetSpec())},
			{"State", r.GetState()},
			{"Wave", joinNonEmpty(", ", wave, activity)},
			{"Started", formatTime(r.GetCreatedUnixNano(), time.RFC3339)},
			{"Finished", formatTime(r.GetFinishedUnixNano(), time.RFC3339)},
			{"Reason", r.GetReason()},
		} {
			fmt.Fprintf(tw, "%s:\t%s\n", kv[0], cell(kv[1]))
		}
		for _, kv := range changeControlLines(r) {
			fmt.Fprintf(tw, "%s:\t%s\n", kv[0], cell(kv[1]))
		}
	})
	if err != nil {
		return err
	}
	if _, err := io.WriteString(p.w, "\n"); err != nil {
		return err
	}
	engine, base := rolloutHosts(r), waveBase(r)
	hosts := slices.SortedStableFunc(slices.Values(s.GetHosts()), func(a, b *relv1.RolloutHostStatus) int {
		return cmp.Compare(engine[a.GetAgentId()].GetWave(), engine[b.GetAgentId()].GetWave())
	})
	// Each host's version before the rollout, the one it is taken to, and
	// the one it runs now.
	header := []string{"HOST", "WAVE", "STATE", "PHASE", "PREVIOUS", "TARGET", "NOW", "CONNECTED", "UPDATED", "REASON"}
	rows := make([][]string, 0, len(hosts))
	for _, h := range hosts {
		e := engine[h.GetAgentId()]
		wave := ""
		if e != nil {
			wave = waveName(base, e.GetWave())
		}
		reason := e.GetReason()
		if reason == "" {
			reason = h.GetReason()
		}
		target := e.GetTargetVersion()
		if target == "" {
			target = h.GetVersion()
		}
		row := []string{h.GetAgentId(), wave, e.GetState(), h.GetPhase(), h.GetPreviousVersion(), target, h.GetCurrentVersion(),
			yesNo(h.GetConnected()), formatTime(h.GetUpdatedUnixNano(), time.RFC3339), reason}
		rows = append(rows, row)
	}
	if err := p.table(header, rows); err != nil {
		return err
	}
	n, summary := totalsSummary(s)
	line := fmt.Sprintf("%d host%s", n, plural(n))
	if summary != "" {
		line += ": " + summary
	}
	if _, err = fmt.Fprintln(p.w, cell(line)); err != nil {
		return err
	}
	if len(events) == 0 {
		return nil
	}
	title := "Latest events:"
	if seq := r.GetEventSeq(); seq > uint64(len(events)) {
		title = fmt.Sprintf("Latest %d of %d events:", len(events), seq)
	}
	if _, err := fmt.Fprintf(p.w, "\n%s\n", title); err != nil {
		return err
	}
	return p.eventTable(base, events)
}

func (p printer) rollouts(list []*relv1.RolloutStatus) error {
	if p.json() {
		out := struct {
			Rollouts []rolloutStatusJSON `json:"rollouts"`
		}{Rollouts: []rolloutStatusJSON{}}
		for _, s := range list {
			out.Rollouts = append(out.Rollouts, toRolloutStatusJSON(s))
		}
		return p.writeJSON(out)
	}
	rows := make([][]string, 0, len(list))
	for _, s := range list {
		r := s.GetRollout()
		n, summary := totalsSummary(s)
		hosts := strconv.Itoa(n)
		if summary != "" {
			hosts += " (" + summary + ")"
		}
		kind := r.GetKind()
		if kind == "" {
			kind = rollout.KindDeploy // rows written before kinds
		}
		if r.GetKind() == kindRollback {
			kind += " of " + r.GetRollbackOf()
		}
		rows = append(rows, []string{r.GetId(), kind, r.GetApp(), r.GetVersion(), r.GetEnvironment(), r.GetState(), hosts,
			formatTime(r.GetCreatedUnixNano(), time.RFC3339), formatTime(r.GetFinishedUnixNano(), time.RFC3339)})
	}
	return p.table([]string{"ID", "KIND", "APP", "VERSION", "ENV", "STATE", "HOSTS", "STARTED", "FINISHED"}, rows)
}

func (p printer) agents(list []*relv1.AgentStatus) error {
	if p.json() {
		out := struct {
			Agents []agentJSON `json:"agents"`
		}{Agents: []agentJSON{}}
		for _, s := range list {
			out.Agents = append(out.Agents, toAgentJSON(s))
		}
		return p.writeJSON(out)
	}
	rows := make([][]string, 0, len(list))
	for _, s := range list {
		a, l := s.GetAgent(), s.GetLoad()
		apps := make([]string, 0, len(s.GetApps()))
		for _, r := range sortedReports(s.GetApps()) {
			apps = append(apps, r.GetApp()+"@"+r.GetVersion()+":"+r.GetPhase())
		}
		cpu, mem, disk := "", "", ""
		if l != nil {
			cpu, mem, disk = formatPercent(l.GetCpuPercent()), formatPercent(l.GetMemoryPercent()), humanBytes(l.GetDiskFreeBytes())
		}
		rows = append(rows, []string{a.GetId(), yesNo(a.GetConnected()), p.ago(lastSeen(s)), formatMap(a.GetLabels()),
			strings.Join(apps, ","), cpu, mem, disk})
	}
	return p.table([]string{"ID", "CONNECTED", "LAST SEEN", "LABELS", "APPS", "CPU%", "MEM%", "DISK FREE"}, rows)
}

// agent prints one agent in full: a key: value block, then its apps as a
// table and the output of any failing hook, indented.
func (p printer) agent(s *relv1.AgentStatus) error {
	if p.json() {
		return p.writeJSON(toAgentJSON(s))
	}
	a, f, l := s.GetAgent(), s.GetAgent().GetFacts(), s.GetLoad()
	platform := strings.TrimSpace(f.GetPlatform() + " " + f.GetPlatformVersion())
	cpus, memory := "", ""
	if f.GetCpus() > 0 {
		cpus = strconv.FormatUint(uint64(f.GetCpus()), 10)
	}
	if f.GetMemoryBytes() > 0 {
		memory = humanBytes(f.GetMemoryBytes())
	}
	heartbeat := formatTime(s.GetLastHeartbeatUnixNano(), time.RFC3339)
	if heartbeat != "" {
		heartbeat += " (" + p.ago(s.GetLastHeartbeatUnixNano()) + ")"
	}
	load := ""
	if l != nil {
		load = fmt.Sprintf("cpu %s%%, memory %s%%, disk %s free of %s", formatPercent(l.GetCpuPercent()),
			formatPercent(l.GetMemoryPercent()), humanBytes(l.GetDiskFreeBytes()), humanBytes(l.GetDiskTotalBytes()))
	}
	apps := sortedReports(s.GetApps())
	err := p.aligned(1, func(tw io.Writer) {
		for _, kv := range [][2]string{
			{"ID", a.GetId()},
			{"Labels", formatMap(a.GetLabels())},
			{"Agent version", a.GetAgentVersion()},
			{"Hostname", f.GetHostname()},
			{"OS", f.GetOs()},
			{"Platform", platform},
			{"Kernel", f.GetKernel()},
			{"Arch", f.GetArch()},
			{"CPUs", cpus},
			{"Memory", memory},
			{"Connected", yesNo(a.GetConnected())},
			{"Session", a.GetSessionId()},
			{"Server", a.GetServerId()},
			{"Connected at", formatTime(a.GetConnectedUnixNano(), time.RFC3339)},
			{"Disconnected at", formatTime(a.GetDisconnectedUnixNano(), time.RFC3339)},
			{"Disconnect reason", a.GetDisconnectReason()},
			{"Last heartbeat", heartbeat},
			{"Environments", strings.Join(s.GetEnvironments(), ",")},
			{"Load", load},
		} {
			fmt.Fprintf(tw, "%s:\t%s\n", kv[0], cell(kv[1]))
		}
		if len(apps) == 0 {
			fmt.Fprintf(tw, "Apps:\t(none)\n")
		}
	})
	if err != nil || len(apps) == 0 {
		return err
	}
	rows := make([][]string, 0, len(apps))
	for _, r := range apps {
		rows = append(rows, []string{r.GetApp(), r.GetVersion(), r.GetPreviousVersion(), r.GetPhase(),
			formatTime(r.GetAtUnixNano(), time.RFC3339), r.GetRolloutId(), r.GetReason()})
	}
	var b strings.Builder
	if err := (printer{w: &b, format: formatTable}).table(
		[]string{"APP", "VERSION", "PREVIOUS", "PHASE", "REPORTED", "ROLLOUT", "REASON"}, rows); err != nil {
		return err
	}
	var out strings.Builder
	out.WriteString("Apps:\n")
	writeIndented(&out, b.String())
	for _, r := range apps {
		if o := strings.TrimRightFunc(text(r.GetOutput()), unicode.IsSpace); o != "" {
			fmt.Fprintf(&out, "Output of %s:\n", cell(r.GetApp()))
			writeIndented(&out, o)
		}
	}
	_, err = io.WriteString(p.w, out.String())
	return err
}

// historySummaryJSON is what history retention kept of one host's folded
// entries.
type historySummaryJSON struct {
	App        string `json:"app"`
	AgentID    string `json:"agent_id"`
	Entries    uint64 `json:"entries"`
	Replaced   uint64 `json:"replaced"`
	Failed     uint64 `json:"failed"`
	RolledBack uint64 `json:"rolled_back"`
	Other      uint64 `json:"other"`
	First      string `json:"first"`
	Last       string `json:"last"`
	// LastVersion is the version of the latest entry folded.
	LastVersion string `json:"last_version"`
}

// history prints the summaries of folded history (one line per host,
// before the table) and the entries.
func (p printer) history(summaries []*relv1.HistorySummary, entries []*relv1.HistoryEntry) error {
	if p.json() {
		out := struct {
			Summaries []historySummaryJSON `json:"summaries,omitempty"`
			Entries   []historyEntryJSON   `json:"entries"`
		}{Entries: []historyEntryJSON{}}
		for _, m := range summaries {
			out.Summaries = append(out.Summaries, historySummaryJSON{App: m.GetApp(), AgentID: m.GetAgentId(), Entries: m.GetEntries(),
				Replaced: m.GetReplaced(), Failed: m.GetFailed(), RolledBack: m.GetRolledBack(), Other: m.GetOther(),
				First: jsonTime(m.GetFirstUnixNano()), Last: jsonTime(m.GetLastUnixNano()), LastVersion: m.GetLastVersion()})
		}
		for _, e := range entries {
			out.Entries = append(out.Entries, p.toHistoryEntryJSON(e))
		}
		return p.writeJSON(out)
	}
	for _, m := range summaries {
		if _, err := fmt.Fprintf(p.w, "%s before %s: %s\n", cell(m.GetAgentId()), formatTime(m.GetLastUnixNano(), time.DateOnly), summaryCounts(m)); err != nil {
			return err
		}
	}
	if len(summaries) > 0 && len(entries) > 0 {
		if _, err := fmt.Fprintln(p.w); err != nil {
			return err
		}
	}
	if len(summaries) > 0 && len(entries) == 0 {
		return nil
	}
	rows := make([][]string, 0, len(entries))
	for _, e := range entries {
		to := formatTime(e.GetToUnixNano(), time.RFC3339)
		if e.GetToUnixNano() == 0 {
			to = "now"
		}
		outcome := historyOutcome(e)
		if outcome == "failed" && e.GetReplacedByKind() == "rollback" {
			outcome = "failed, rolled back"
		}
		ro := e.GetRolloutId()
		if ro != "" && e.GetRolloutKind() == "rollback" {
			ro += " (rollback)"
		}
		rows = append(rows, []string{e.GetAgentId(), e.GetVersion(), formatTime(e.GetFromUnixNano(), time.RFC3339), to,
			humanDuration(p.historyDuration(e)), outcome, ro, e.GetReason()})
	}
	return p.table([]string{"HOST", "VERSION", "FROM", "TO", "DURATION", "OUTCOME", "ROLLOUT", "REASON"}, rows)
}

// summaryCounts says what a history summary holds: "412 versions, 3
// failed, 1 rolled back, last 1.4.2".
func summaryCounts(m *relv1.HistorySummary) string {
	out := fmt.Sprintf("%d versions", m.GetEntries())
	if m.GetEntries() == 1 {
		out = "1 version"
	}
	if m.GetFailed() > 0 {
		out += fmt.Sprintf(", %d failed", m.GetFailed())
	}
	if m.GetRolledBack() > 0 {
		out += fmt.Sprintf(", %d rolled back", m.GetRolledBack())
	}
	return out + ", last " + cell(m.GetLastVersion())
}

// historyDuration is how long the entry's version ran, up to now while it
// still runs; 0 when the start is unknown.
func (p printer) historyDuration(e *relv1.HistoryEntry) time.Duration {
	if e.GetFromUnixNano() == 0 {
		return 0
	}
	end := p.clock()
	if e.GetToUnixNano() != 0 {
		end = time.Unix(0, e.GetToUnixNano())
	}
	return max(end.Sub(time.Unix(0, e.GetFromUnixNano())), 0)
}

// lastSeen is when an agent was last heard of: its last heartbeat while
// connected (or its connection, before the first heartbeat), the
// disconnection otherwise.
func lastSeen(s *relv1.AgentStatus) int64 {
	a := s.GetAgent()
	if !a.GetConnected() {
		return a.GetDisconnectedUnixNano()
	}
	if hb := s.GetLastHeartbeatUnixNano(); hb != 0 {
		return hb
	}
	return a.GetConnectedUnixNano()
}

// ago renders a server timestamp relative to the printer's clock in one
// unit: "3s ago", "5m ago", "2h ago", "4d ago"; "" when unset. A time in the
// future (clock skew between hosts) counts as now.
func (p printer) ago(unixNano int64) string {
	if unixNano == 0 {
		return ""
	}
	d := max(p.clock().Sub(time.Unix(0, unixNano)), 0)
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds ago", int(d/time.Second))
	case d < time.Hour:
		return fmt.Sprintf("%dm ago", int(d/time.Minute))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh ago", int(d/time.Hour))
	default:
		return fmt.Sprintf("%dd ago", int(d/(24*time.Hour)))
	}
}

// humanDuration renders d in its two largest units: "12s", "4m10s",
// "2h5m", "3d4h".
func humanDuration(d time.Duration) string {
	d = max(d, 0).Truncate(time.Second)
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d/time.Second))
	case d < time.Hour:
		return fmt.Sprintf("%dm%ds", int(d/time.Minute), int(d%time.Minute/time.Second))
	case d < 24*time.Hour:
		return fmt.Sprintf("%dh%dm", int(d/time.Hour), int(d%time.Hour/time.Minute))
	default:
		return fmt.Sprintf("%dd%dh", int(d/(24*time.Hour)), int(d%(24*time.Hour)/time.Hour))
	}
}

// humanBytes renders a byte count in binary units with one decimal: "512 B",
// "1.5 KiB", "12.3 GiB".
func humanBytes(n uint64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := uint64(unit), 0
	for m := n / unit; m >= unit && exp < 5; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// formatSize renders a release's artifact size; "" when unknown (0).
func formatSize(n int64) string {
	if n <= 0 {
		return ""
	}
	return fmt.Sprintf("%s (%d bytes)", humanBytes(uint64(n)), n)
}

func formatPercent(f float64) string { return strconv.FormatFloat(f, 'f', 1, 64) }

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// phaseOrder is the order phases appear in in totals: settled first, then
// the steps of an install from the last to the first, so the line reads
// from "done" to "not started".
var phaseOrder = []string{"healthy", "failed", "verifying", "starting", "installing", "downloading", "pending"}

// phaseTotals is the rollout's hosts per phase: the server's count, or one
// made from the hosts when the server sent none.
func phaseTotals(s *relv1.RolloutStatus) map[string]uint32 {
	if len(s.GetTotals()) > 0 {
		return maps.Clone(s.GetTotals())
	}
	out := map[string]uint32{}
	for _, h := range s.GetHosts() {
		out[h.GetPhase()]++
	}
	return out
}

// totalsSummary returns the number of hosts and "2 healthy, 1 installing".
func totalsSummary(s *relv1.RolloutStatus) (int, string) {
	totals := phaseTotals(s)
	n := len(s.GetHosts())
	if n == 0 {
		for _, c := range totals {
			n += int(c)
		}
	}
	phases := slices.Sorted(maps.Keys(totals))
	slices.SortStableFunc(phases, func(a, b string) int { return phaseRank(a) - phaseRank(b) })
	parts := make([]string, 0, len(phases))
	for _, ph := range phases {
		if totals[ph] == 0 {
			continue
		}
		name := ph
		if name == "" {
			name = "unknown"
		}
		parts = append(parts, fmt.Sprintf("%d %s", totals[ph], name))
	}
	return n, strings.Join(parts, ", ")
}

func phaseRank(phase string) int {
	if i := slices.Index(phaseOrder, phase); i >= 0 {
		return i
	}
	return len(phaseOrder)
}

func sortedReports(reports []*relv1.AppReport) []*relv1.AppReport {
	return slices.SortedStableFunc(slices.Values(reports), func(a, b *relv1.AppReport) int {
		return strings.Compare(a.GetApp(), b.GetApp())
	})
}

// writeIndented writes s with every line indented by two spaces.
func writeIndented(b *strings.Builder, s string) {
	for line := range strings.Lines(s) {
		b.WriteString(strings.TrimRight("  "+strings.TrimSuffix(line, "\n"), " \t") + "\n")
	}
}
