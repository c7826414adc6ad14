package dashboard

import (
	"bytes"
	"context"
	"fmt"
	"html/template"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/relhq/rel/internal/auth"
	"github.com/relhq/rel/internal/report"
	"github.com/relhq/rel/internal/rollout"
	relv1 "github.com/relhq/rel/proto/rel/v1"
)

// call invokes a gRPC method in-process as the view's principal and
// returns its typed answer.
func call[T proto.Message](ctx context.Context, d *Dashboard, v *view, method string, req proto.Message) (T, error) {
	var zero T
	out, err := d.cfg.Backend.Invoke(ctx, v.p, method, req)
	if err != nil {
		return zero, err
	}
	return out.(T), nil
}

// listLimit bounds the rows a list page reads: one page of the server's
// paging, enough for a screen.
const listLimit = 500

// overviewCell is one app in one environment.
type overviewCell struct {
	*relv1.EnvAppStatus
	Present bool
}

type overviewRow struct {
	App   string
	Cells []overviewCell
}

type overviewData struct {
	Envs     []string
	Rows     []overviewRow
	Active   []*relv1.RolloutStatus
	Recent   []*relv1.RolloutStatus
	Agents   int
	Up       int
	Releases int
}

func (d *Dashboard) loadOverview(r *http.Request, v *view) (any, error) {
	ctx := r.Context()
	v.Title = "Overview"
	ov, err := call[*relv1.OverviewResponse](ctx, d, v, relv1.ControlService_Overview_FullMethodName, &relv1.OverviewRequest{})
	if err != nil {
		return nil, err
	}
	cells := map[[2]string]*relv1.EnvAppStatus{}
	for _, c := range ov.GetCells() {
		cells[[2]string{c.GetApp(), c.GetEnvironment()}] = c
	}
	out := overviewData{Envs: ov.GetEnvironments()}
	for _, app := range ov.GetApps() {
		row := overviewRow{App: app}
		for _, env := range ov.GetEnvironments() {
			c, ok := cells[[2]string{app, env}]
			row.Cells = append(row.Cells, overviewCell{EnvAppStatus: c, Present: ok})
		}
		out.Rows = append(out.Rows, row)
	}
	active, err := call[*relv1.ListRolloutsResponse](ctx, d, v, relv1.ControlService_ListRollouts_FullMethodName, &relv1.ListRolloutsRequest{State: "active", PageSize: 50})
	if err != nil {
		return nil, err
	}
	out.Active = active.GetRollouts()
	recent, err := call[*relv1.ListRolloutsResponse](ctx, d, v, relv1.ControlService_ListRollouts_FullMethodName, &relv1.ListRolloutsRequest{PageSize: 10})
	if err != nil {
		return nil, err
	}
	out.Recent = recent.GetRollouts()
	// Every page of agents, for the counts.
	for token := ""; ; {
		agents, err := call[*relv1.ListAgentsResponse](ctx, d, v, relv1.ControlService_ListAgents_FullMethodName, &relv1.ListAgentsRequest{PageSize: 1000, PageToken: token})
		if err != nil {
			return nil, err
		}
		for _, a := range agents.GetAgents() {
			out.Agents++
			if a.GetAgent().GetConnected() {
				out.Up++
			}
		}
		if token = agents.GetNextPageToken(); token == "" {
			return out, nil
		}
	}
}

type rolloutsData struct {
	Rollouts []*relv1.RolloutStatus
	App, Env string
	State    string
}

func (d *Dashboard) loadRollouts(r *http.Request, v *view) (any, error) {
	v.Title = "Rollouts"
	q := r.URL.Query()
	out := rolloutsData{App: q.Get("app"), Env: q.Get("env"), State: q.Get("state")}
	resp, err := call[*relv1.ListRolloutsResponse](r.Context(), d, v, relv1.ControlService_ListRollouts_FullMethodName,
		&relv1.ListRolloutsRequest{App: out.App, Environment: out.Env, State: out.State, PageSize: 100})
	if err != nil {
		return nil, err
	}
	out.Rollouts = resp.GetRollouts()
	return out, nil
}

type releaseGroup struct {
	App      string
	Releases []*relv1.Release
}

type releasesData struct {
	Apps   []string
	App    string
	Groups []releaseGroup
}

func (d *Dashboard) loadReleases(r *http.Request, v *view) (any, error) {
	v.Title = "Releases"
	ctx := r.Context()
	apps, err := call[*relv1.ListAppsResponse](ctx, d, v, relv1.ControlService_ListApps_FullMethodName, &relv1.ListAppsRequest{})
	if err != nil {
		return nil, err
	}
	out := releasesData{App: r.URL.Query().Get("app")}
	for _, a := range apps.GetApps() {
		out.Apps = append(out.Apps, a.GetName())
	}
	resp, err := call[*relv1.ListReleasesResponse](ctx, d, v, relv1.ControlService_ListReleases_FullMethodName,
		&relv1.ListReleasesRequest{App: out.App, PageSize: listLimit})
	if err != nil {
		return nil, err
	}
	byApp := map[string][]*relv1.Release{}
	for _, rel := range resp.GetReleases() {
		byApp[rel.GetApp()] = append(byApp[rel.GetApp()], rel)
	}
	names := make([]string, 0, len(byApp))
	for app := range byApp {
		names = append(names, app)
	}
	sort.Strings(names)
	for _, app := range names {
		rels := byApp[app]
		slices.Reverse(rels) // newest (highest) first
		out.Groups = append(out.Groups, releaseGroup{App: app, Releases: rels})
	}
	return out, nil
}

type hostsData struct {
	Agents []*relv1.AgentStatus
	Up     int
}

func (d *Dashboard) loadHosts(r *http.Request, v *view) (any, error) {
	v.Title = "Hosts"
	resp, err := call[*relv1.ListAgentsResponse](r.Context(), d, v, relv1.ControlService_ListAgents_FullMethodName,
		&relv1.ListAgentsRequest{Environment: r.URL.Query().Get("env"), PageSize: 1000})
	if err != nil {
		return nil, err
	}
	out := hostsData{Agents: resp.GetAgents()}
	for _, a := range out.Agents {
		if a.GetAgent().GetConnected() {
			out.Up++
		}
	}
	return out, nil
}

func (d *Dashboard) loadApprovals(r *http.Request, v *view) (any, error) {
	v.Title = "Approvals"
	resp, err := call[*relv1.PendingApprovalsResponse](r.Context(), d, v, relv1.ApprovalService_Pending_FullMethodName, &relv1.PendingApprovalsRequest{})
	if err != nil {
		return nil, err
	}
	return resp.GetPending(), nil
}

// The audit page shows the newest auditShown records of the last
// auditWindow.
const (
	auditWindow = 7 * 24 * time.Hour
	auditShown  = 200
)

func (d *Dashboard) loadAudit(r *http.Request, v *view) (any, error) {
	v.Title = "Audit"
	// The trail is read oldest first: page through the window and keep
	// the newest auditShown records.
	req := &relv1.ListAuditRequest{SinceUnixNano: d.cfg.Now().Add(-auditWindow).UnixNano(), PageSize: 1000, App: r.URL.Query().Get("app")}
	var recs []*relv1.AuditRecord
	for {
		resp, err := call[*relv1.ListAuditResponse](r.Context(), d, v, relv1.AuditService_ListAudit_FullMethodName, req)
		if err != nil {
			return nil, err
		}
		recs = append(recs, resp.GetRecords()...)
		if len(recs) > auditShown {
			recs = slices.Clone(recs[len(recs)-auditShown:])
		}
		if req.PageToken = resp.GetNextPageToken(); req.PageToken == "" {
			break
		}
	}
	slices.Reverse(recs)
	return recs, nil
}

// waveBar is one wave of a rollout with its hosts counted by state.
type waveBar struct {
	Label    string
	Total    int
	Counts   []stateCount
	Current  bool
	Finished bool
}

type stateCount struct {
	State   string
	N       int
	Percent float64
}

// hostRow joins a host's row in the rollout (wave, engine state) with its
// status (agent phase, connection).
type hostRow struct {
	ID, Wave, State, Phase, Version, Previous, Reason string
	Connected                                         bool
	Updated                                           int64
}

// control is a button of the rollout page.
type control struct {
	Action, Label, Confirm, Style string
}

// rolloutData is everything the rollout page and its live updates show.
type rolloutData struct {
	R        *relv1.Rollout
	Status   *relv1.RolloutStatus
	Waves    []waveBar
	Hosts    []hostRow
	Events   []*relv1.RolloutEvent
	Controls []control
	CSRF     string
	Index    uint64
	WaveNow  string
}

// eventsShown is how many of a rollout's latest events its page shows.
const eventsShown = 40

func (d *Dashboard) loadRollout(r *http.Request, v *view) (any, error) {
	data, err := d.rolloutData(r.Context(), v, r.PathValue("id"), 0)
	if err != nil {
		return nil, err
	}
	v.Title = "Rollout " + data.R.GetId()
	return data, nil
}

// rolloutData reads rollout id, waiting (a blocking query) until it
// changes past index when index > 0.
func (d *Dashboard) rolloutData(ctx context.Context, v *view, id string, index uint64) (*rolloutData, error) {
	resp, err := call[*relv1.GetRolloutResponse](ctx, d, v, relv1.ControlService_GetRollout_FullMethodName, &relv1.GetRolloutRequest{Id: id, WaitIndex: index})
	if err != nil {
		return nil, err
	}
	st := resp.GetStatus()
	ro := st.GetRollout()
	var after uint64
	if seq := ro.GetEventSeq(); seq > eventsShown {
		after = seq - eventsShown
	}
	ev, err := call[*relv1.RolloutEventsResponse](ctx, d, v, relv1.ControlService_RolloutEvents_FullMethodName, &relv1.RolloutEventsRequest{Id: id, AfterSeq: after})
	if err != nil {
		return nil, err
	}
	events := slices.Clone(ev.GetEvents())
	slices.Reverse(events)
	data := &rolloutData{R: ro, Status: st, Events: events, Index: resp.GetIndex(), CSRF: v.Session.CSRF,
		Waves: waveBars(ro), Hosts: hostRows(st), Controls: controls(v.p, ro)}
	if !rollout.Terminal(ro.GetState()) && ro.GetWaveCount() > 0 {
		data.WaveNow = rollout.WaveLabel(ro, ro.GetCurrentWave())
	}
	return data, nil
}

// barStates are the host states a wave bar shows, in the order drawn.
var barStates = []string{rollout.HostHealthy, rollout.HostDispatched, rollout.HostFailed, rollout.HostSkipped, rollout.HostPending}

func waveBars(ro *relv1.Rollout) []waveBar {
	n := ro.GetWaveCount()
	counts := make([]map[string]int, n)
	for i := range counts {
		counts[i] = map[string]int{}
	}
	for _, h := range ro.GetHosts() {
		if h.GetWave() < n {
			counts[h.GetWave()][h.GetState()]++
		}
	}
	terminal := rollout.Terminal(ro.GetState())
	bars := make([]waveBar, 0, n)
	for i := uint32(0); i < n; i++ {
		b := waveBar{Label: rollout.WaveLabel(ro, i), Current: !terminal && i == ro.GetCurrentWave()}
		for _, c := range counts[i] {
			b.Total += c
		}
		for _, s := range barStates {
			if c := counts[i][s]; c > 0 {
				b.Counts = append(b.Counts, stateCount{State: s, N: c, Percent: 100 * float64(c) / float64(b.Total)})
			}
		}
		b.Finished = b.Total > 0 && counts[i][rollout.HostPending]+counts[i][rollout.HostDispatched] == 0
		bars = append(bars, b)
	}
	return bars
}

func hostRows(st *relv1.RolloutStatus) []hostRow {
	ro := st.GetRollout()
	byID := map[string]*relv1.RolloutHostStatus{}
	for _, h := range st.GetHosts() {
		byID[h.GetAgentId()] = h
	}
	rows := make([]hostRow, 0, len(ro.GetHosts()))
	for _, h := range ro.GetHosts() {
		hs := byID[h.GetAgentId()]
		row := hostRow{
			ID: h.GetAgentId(), Wave: rollout.WaveLabel(ro, h.GetWave()), State: h.GetState(),
			Phase: hs.GetPhase(), Version: h.GetTargetVersion(), Previous: h.GetPreviousVersion(),
			Reason: h.GetReason(), Connected: hs.GetConnected(), Updated: hs.GetUpdatedUnixNano(),
		}
		if row.Reason == "" {
			row.Reason = hs.GetReason()
		}
		rows = append(rows, row)
	}
	return rows
}

// controls are the buttons the principal may use on ro now. They are a
// convenience: the server decides again when one is pressed.
func controls(p auth.Principal, ro *relv1.Rollout) []control {
	res := auth.Resource{App: ro.GetApp(), Env: ro.GetEnvironment()}
	deploy := p.Allows(auth.Deploy, res)
	var out []control
	id := ro.GetId()
	switch ro.GetState() {
	case rollout.StateAwaitingApproval:
		if p.Allows(auth.Approve, res) {
			out = append(out, control{"approve", "Approve", fmt.Sprintf("Approve rollout %s of %s@%s to %s?", id, ro.GetApp(), ro.GetVersion(), ro.GetEnvironment()), "primary"})
		}
	case rollout.StateWaitingApproval:
		// Under an approval policy, approvers open the gates; otherwise
		// deployers do.
		if ro.GetApprovalPolicy() != nil && p.Allows(auth.Approve, res) || ro.GetApprovalPolicy() == nil && deploy {
			out = append(out, control{"approve", "Approve " + rollout.WaveLabel(ro, ro.GetCurrentWave()+1), fmt.Sprintf("Let rollout %s go on to %s?", id, rollout.WaveLabel(ro, ro.GetCurrentWave()+1)), "primary"})
		}
	}
	if deploy {
		switch ro.GetState() {
		case rollout.StateRunning, rollout.StateWaitingApproval, rollout.StateQueued, rollout.StateRollingBack:
			out = append(out, control{"pause", "Pause", fmt.Sprintf("Pause rollout %s? Hosts in progress finish; no new host starts until it is resumed.", id), ""})
		case rollout.StatePaused:
			out = append(out, control{"resume", "Resume", fmt.Sprintf("Resume rollout %s?", id), "primary"})
		}
		if !rollout.Terminal(ro.GetState()) {
			out = append(out, control{"abort", "Abort", fmt.Sprintf("Abort rollout %s? Hosts keep what they run now; nothing is rolled back.", id), "danger"})
		}
		// A rollout that changed no host yet (frozen, awaiting approval,
		// queued) has nothing to roll back.
		switch ro.GetState() {
		case rollout.StateFrozen, rollout.StateAwaitingApproval, rollout.StateQueued, rollout.StateRollingBack:
			return out
		}
		if ro.GetKind() == rollout.KindDeploy && ro.GetRolledBackBy() == "" {
			out = append(out, control{"rollback", "Roll back", fmt.Sprintf("Roll back rollout %s? Every host it changed goes back to the version it ran before.", id), "danger"})
		}
	}
	return out
}

// reportPeriods are the periods the report page offers, in days.
var reportPeriods = []int{7, 30, 90, 180}

// reportView is the report page: the same report relctl report -o html
// writes, as an element of the page.
type reportView struct {
	Periods  []int
	Days     int
	App, Env string
	HTML     template.HTML
}

func (d *Dashboard) loadReport(r *http.Request, v *view) (any, error) {
	v.Title = "Report"
	q := r.URL.Query()
	out := &reportView{Periods: reportPeriods, Days: 30, App: q.Get("app"), Env: q.Get("env")}
	if days, err := strconv.Atoi(q.Get("days")); err == nil && slices.Contains(reportPeriods, days) {
		out.Days = days
	}
	resp, err := call[*relv1.ReportResponse](r.Context(), d, v, relv1.ReportService_Report_FullMethodName, &relv1.ReportRequest{
		App: out.App, Environment: out.Env, PeriodNanos: int64(time.Duration(out.Days) * 24 * time.Hour)})
	if err != nil {
		return nil, err
	}
	var b bytes.Buffer
	if err := report.RenderHTMLFragment(&b, report.FromResponse(resp)); err != nil {
		return nil, err
	}
	// html/template escaped every value the report renders.
	out.HTML = template.HTML(b.String())
	return out, nil
}

// The events page reads the newest clusterEventsWindow events and shows the
// newest clusterEventsShown of them that match its filters.
const (
	clusterEventsWindow = 2000
	clusterEventsShown  = 200
)

type eventsView struct {
	Type, App, Env string
	Events         []*relv1.Event
	Shown, Window  int
	// Last is the newest seq when the page was read: its live stream
	// sends what comes after.
	Last uint64
}

func (d *Dashboard) loadEvents(r *http.Request, v *view) (any, error) {
	v.Title = "Events"
	q := r.URL.Query()
	out := &eventsView{Type: q.Get("type"), App: q.Get("app"), Env: q.Get("env"), Shown: clusterEventsShown, Window: clusterEventsWindow}
	// Where the stream is now: its oldest and newest seq.
	head, err := call[*relv1.ListEventsResponse](r.Context(), d, v, relv1.EventService_ListEvents_FullMethodName, &relv1.ListEventsRequest{PageSize: 1})
	if err != nil {
		return nil, err
	}
	out.Last = head.GetLastSeq()
	since := uint64(0)
	if last := head.GetLastSeq(); last > clusterEventsWindow {
		since = max(last-clusterEventsWindow, head.GetFirstSeq()-min(head.GetFirstSeq(), 1))
	}
	req := &relv1.ListEventsRequest{SinceSeq: since, PageSize: 1000,
		Filter: &relv1.EventFilter{App: out.App, Env: out.Env, Types: out.Type}}
	for {
		resp, err := call[*relv1.ListEventsResponse](r.Context(), d, v, relv1.EventService_ListEvents_FullMethodName, req)
		if err != nil {
			return nil, err
		}
		out.Events = append(out.Events, resp.GetEvents()...)
		if len(out.Events) > clusterEventsShown {
			out.Events = slices.Clone(out.Events[len(out.Events)-clusterEventsShown:])
		}
		if req.PageToken = resp.GetNextPageToken(); req.PageToken == "" {
			break
		}
	}
	slices.Reverse(out.Events)
	return out, nil
}
