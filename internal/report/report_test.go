package report

import (
	"bytes"
	"encoding/json"
	"math"
	"strings"
	"testing"
	"time"

	relv1 "github.com/relhq/rel/proto/rel/v1"
)

var now = time.Date(2026, 11, 28, 0, 0, 0, 0, time.UTC)

// ago is a time before now, as a record holds it.
func ago(d time.Duration) int64 { return now.Add(-d).UnixNano() }

const (
	h   = time.Hour
	day = 24 * time.Hour
)

// dep builds a deployment record: a succeeded one gets its succeeded time.
func dep(id, app, env, kind, outcome string, finished int64, mods ...func(*relv1.Deployment)) *relv1.Deployment {
	d := &relv1.Deployment{RolloutId: id, App: app, Environment: env, Kind: kind, Outcome: outcome, FinishedUnixNano: finished, StartedUnixNano: finished - int64(time.Minute)}
	if outcome == outcomeSucceeded {
		d.SucceededUnixNano = finished
	}
	for _, m := range mods {
		m(d)
	}
	return d
}

func created(t int64) func(*relv1.Deployment) {
	return func(d *relv1.Deployment) { d.ReleaseCreatedUnixNano = t }
}

func waited(w time.Duration) func(*relv1.Deployment) {
	return func(d *relv1.Deployment) { d.AwaitedApproval, d.ApprovalWaitNanos = true, int64(w) }
}

// history is a constructed history whose figures are worked out by hand
// in TestBuildKnownHistory.
func history() []*relv1.Deployment {
	return []*relv1.Deployment{
		// web in prod, this period (the 30 days before now).
		dep("d1", "web", "prod", kindDeploy, outcomeSucceeded, ago(10*day), created(ago(10*day+2*h)), waited(10*time.Minute)),
		dep("d2", "web", "prod", kindDeploy, outcomeSucceeded, ago(5*day), created(ago(5*day+h)), waited(30*time.Minute),
			func(d *relv1.Deployment) { d.CommitUnixNano = ago(6 * day) }), // lead from the commit: 1 day
		dep("d3", "web", "prod", kindDeploy, outcomeFailed, ago(4*day)),
		// A catch-up is no restore: d3 is restored by d4, 30 minutes on.
		dep("c1", "web", "prod", "catch_up", outcomeSucceeded, ago(4*day-10*time.Minute)),
		dep("d4", "web", "prod", kindDeploy, outcomeSucceeded, ago(4*day-30*time.Minute), created(ago(4*day+30*time.Minute)), waited(2*h)),
		// d5 succeeded, then was rolled back: a deploy and a failure; it
		// failed when its rollback was asked for, restored 20 minutes on.
		dep("d5", "web", "prod", kindDeploy, outcomeRolledBack, ago(2*day-h-20*time.Minute), created(ago(2*day+4*h)),
			func(d *relv1.Deployment) { d.SucceededUnixNano = ago(2 * day) }),
		dep("r5", "web", "prod", kindRollback, outcomeSucceeded, ago(2*day-h-20*time.Minute),
			func(d *relv1.Deployment) { d.RollbackOf, d.RequestedUnixNano = "d5", ago(2*day-h) }),
		// Aborted before it started: no verdict. Aborted while running: one.
		dep("d6", "web", "prod", kindDeploy, outcomeAborted, ago(day), func(d *relv1.Deployment) { d.StartedUnixNano = 0 }),
		dep("d7", "web", "prod", kindDeploy, outcomeAborted, ago(day-h)),
		// Its approval expired: failed, but it changed nothing.
		dep("d8", "web", "prod", kindDeploy, outcomeFailed, ago(3*day), func(d *relv1.Deployment) { d.StartedUnixNano = 0 }),

		// web in prod, the period before.
		dep("p1", "web", "prod", kindDeploy, outcomeSucceeded, ago(40*day), created(ago(42*day))),
		dep("p2", "web", "prod", kindDeploy, outcomeFailed, ago(35*day)),
		dep("p3", "web", "prod", kindDeploy, outcomeSucceeded, ago(35*day-2*h), created(ago(35*day))),

		// api in staging: one failure, not restored yet.
		dep("a1", "api", "staging", kindDeploy, outcomeFailed, ago(day)),

		// db in prod: only the period before.
		dep("q1", "db", "prod", kindDeploy, outcomeSucceeded, ago(45*day), created(ago(45*day+h))),

		// Older than both periods: ignored.
		dep("o1", "web", "prod", kindDeploy, outcomeFailed, ago(70*day)),
	}
}

func TestBuildKnownHistory(t *testing.T) {
	rep := Build(Input{Deployments: history()}, now, Options{Period: 30 * day})
	if !rep.From.Equal(now.Add(-30*day)) || !rep.PreviousFrom.Equal(now.Add(-60*day)) {
		t.Fatalf("window %v..%v, previous from %v", rep.From, rep.Now, rep.PreviousFrom)
	}
	rows := map[string]Row{}
	for _, r := range rep.Rows {
		rows[r.App+"/"+r.Environment] = r
	}
	if len(rep.Rows) != 3 || rep.Rows[0].App != "api" || rep.Rows[1].App != "db" || rep.Rows[2].App != "web" {
		t.Fatalf("rows %+v, want api/staging, db/prod, web/prod in that order", rep.Rows)
	}
	type want struct {
		known     bool
		value     float64
		band      Band
		prevKnown bool
		prev      float64
		trend     Trend
	}
	secs := func(d time.Duration) float64 { return d.Seconds() }
	cases := []struct {
		row, metric string
		got         func(Row) Metric
		want        want
	}{
		// web/prod: d1, d2, d4, d5 succeeded in the period: 4/30 a day,
		// under weekly (1/7), at least monthly: medium. Before: p1, p3.
		{"web/prod", "frequency", func(r Row) Metric { return r.DeploymentFrequency }, want{true, 4.0 / 30, Medium, true, 2.0 / 30, TrendBetter}},
		// Leads 2h, 24h (from the commit), 1h, 4h: median 3h, under a
		// day: elite. Before: 48h and 2h, median 25h: high.
		{"web/prod", "lead time", func(r Row) Metric { return r.LeadTime }, want{true, secs(3 * h), Elite, true, secs(25 * h), TrendBetter}},
		// Verdicts d1 d2 d3 d4 d5 d7 (d6 and d8 never started), failed d3 d5:
		// 1/3, above 15%: low. Before: p2 of p1 p2 p3, the same.
		{"web/prod", "failure rate", func(r Row) Metric { return r.ChangeFailureRate }, want{true, 1.0 / 3, Low, true, 1.0 / 3, TrendSame}},
		// d3 restored in 30m (d4; not c1, a catch-up), d5 in 20m (r5 after
		// its request): median 25m: elite. Before: p2 in 2h: high.
		{"web/prod", "restore", func(r Row) Metric { return r.TimeToRestore }, want{true, secs(25 * time.Minute), Elite, true, secs(2 * h), TrendBetter}},
		// api/staging: nothing deployed (0: low) in either period.
		{"api/staging", "frequency", func(r Row) Metric { return r.DeploymentFrequency }, want{true, 0, Low, true, 0, TrendSame}},
		{"api/staging", "lead time", func(r Row) Metric { return r.LeadTime }, want{}},
		{"api/staging", "failure rate", func(r Row) Metric { return r.ChangeFailureRate }, want{true, 1, Low, false, 0, TrendNone}},
		{"api/staging", "restore", func(r Row) Metric { return r.TimeToRestore }, want{}},
		// db/prod: an empty period after one deploy.
		{"db/prod", "frequency", func(r Row) Metric { return r.DeploymentFrequency }, want{true, 0, Low, true, 1.0 / 30, TrendWorse}},
		{"db/prod", "lead time", func(r Row) Metric { return r.LeadTime }, want{false, 0, "", true, secs(h), TrendNone}},
		{"db/prod", "failure rate", func(r Row) Metric { return r.ChangeFailureRate }, want{false, 0, "", true, 0, TrendNone}},
	}
	for _, c := range cases {
		t.Run(c.row+" "+c.metric, func(t *testing.T) {
			row, ok := rows[c.row]
			if !ok {
				t.Fatalf("no row %s", c.row)
			}
			m := c.got(row)
			if m.Known != c.want.known || !close(m.Value, c.want.value) || m.Band != c.want.band ||
				m.PreviousKnown != c.want.prevKnown || !close(m.Previous, c.want.prev) || m.Trend != c.want.trend {
				t.Errorf("got %+v, want %+v", m, c.want)
			}
		})
	}
	web := rows["web/prod"]
	if web.Deploys != 4 || web.Failures != 2 || web.ChangeFailureRate.Samples != 6 || web.Unrestored != 0 {
		t.Errorf("web/prod counts: deploys %d failures %d verdicts %d unrestored %d, want 4 2 6 0", web.Deploys, web.Failures, web.ChangeFailureRate.Samples, web.Unrestored)
	}
	api := rows["api/staging"]
	if api.Unrestored != 1 || !api.UnrestoredSince.Equal(now.Add(-day)) {
		t.Errorf("api/staging unrestored %d since %v, want 1 since %v", api.Unrestored, api.UnrestoredSince, now.Add(-day))
	}
	// Approval waits of the period: 10m, 30m, 2h: median 30m, p90 by
	// nearest rank the third: 2h.
	if w := rep.Approvals; w.Count != 3 || w.Median != 30*time.Minute || w.P90 != 2*h {
		t.Errorf("approval waits %+v, want 3, 30m, 2h", w)
	}
	wantOutcomes := []OutcomeCount{
		{"catch_up", outcomeSucceeded, 1},
		{kindDeploy, outcomeAborted, 2}, {kindDeploy, outcomeFailed, 3}, {kindDeploy, outcomeRolledBack, 1}, {kindDeploy, outcomeSucceeded, 3},
		{kindRollback, outcomeSucceeded, 1},
	}
	if !equalOutcomes(rep.Outcomes, wantOutcomes) {
		t.Errorf("outcomes %+v, want %+v", rep.Outcomes, wantOutcomes)
	}
	// Daily buckets: 30 of them; d5's success and its rollback's failure
	// fall on the same day (the 28th bucket, two days before now).
	if len(rep.Buckets) != 30 {
		t.Fatalf("%d buckets, want 30", len(rep.Buckets))
	}
	var succ, fail int
	for _, b := range rep.Buckets {
		succ, fail = succ+b.Succeeded, fail+b.Failed
	}
	if succ != 4 || fail != 3 {
		t.Errorf("buckets hold %d succeeded and %d failed, want 4 and 3 (d3, d5, a1)", succ, fail)
	}
	if b := rep.Buckets[28]; b.Succeeded != 1 || b.Failed != 1 {
		t.Errorf("bucket of two days ago %+v, want d5 succeeded and failed", b)
	}
}

func close(a, b float64) bool { return math.Abs(a-b) < 1e-9 }

func equalOutcomes(a, b []OutcomeCount) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestBuildEmpty(t *testing.T) {
	rep := Build(Input{}, now, Options{})
	if rep.Period != DefaultPeriod || len(rep.Rows) != 0 || len(rep.Outcomes) != 0 || rep.Approvals.Count != 0 {
		t.Fatalf("empty report %+v", rep)
	}
	// 90 days: weekly buckets.
	rep = Build(Input{}, now, Options{Period: 90 * day})
	if len(rep.Buckets) != 13 || rep.Buckets[0].Width != 7*day {
		t.Errorf("90-day buckets: %d of %v, want 13 weeks", len(rep.Buckets), rep.Buckets[0].Width)
	}
	var b bytes.Buffer
	for _, render := range []func(*bytes.Buffer, Report) error{
		func(w *bytes.Buffer, r Report) error { return RenderText(w, r) },
		func(w *bytes.Buffer, r Report) error { return RenderMarkdown(w, r) },
		func(w *bytes.Buffer, r Report) error { return RenderHTML(w, r) },
	} {
		b.Reset()
		if err := render(&b, rep); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(b.String(), "No rollout finished in this period") {
			t.Errorf("an empty report does not say so:\n%s", b.String())
		}
	}
}

func TestBands(t *testing.T) {
	cases := []struct {
		name string
		band func(float64) Band
		in   float64
		want Band
	}{
		{"frequency daily", bandFrequency, 1, Elite},
		{"frequency under daily", bandFrequency, 0.99, High},
		{"frequency weekly", bandFrequency, 1.0 / 7, High},
		{"frequency under weekly", bandFrequency, 0.14, Medium},
		{"frequency monthly", bandFrequency, 1.0 / 30, Medium},
		{"frequency under monthly", bandFrequency, 0.03, Low},
		{"lead under a day", bandLeadTime, day.Seconds() - 1, Elite},
		{"lead a day", bandLeadTime, day.Seconds(), High},
		{"lead a week", bandLeadTime, (7 * day).Seconds(), High},
		{"lead a month", bandLeadTime, (30 * day).Seconds(), Medium},
		{"lead over a month", bandLeadTime, (31 * day).Seconds(), Low},
		{"failures 5%", bandFailureRate, 0.05, Elite},
		{"failures 10%", bandFailureRate, 0.10, High},
		{"failures 15%", bandFailureRate, 0.15, Medium},
		{"failures 16%", bandFailureRate, 0.16, Low},
		{"restore under an hour", bandRestore, 3599, Elite},
		{"restore an hour", bandRestore, 3600, High},
		{"restore a day", bandRestore, day.Seconds(), Medium},
		{"restore a week", bandRestore, (7 * day).Seconds(), Medium},
		{"restore over a week", bandRestore, (8 * day).Seconds(), Low},
	}
	for _, c := range cases {
		if got := c.band(c.in); got != c.want {
			t.Errorf("%s (%v): %s, want %s", c.name, c.in, got, c.want)
		}
	}
}

func TestRunningMatrix(t *testing.T) {
	rep := Build(Input{Running: []*relv1.RunningCell{
		{App: "web", Environment: "prod", CurrentVersion: "1.2.0", Hosts: 4, Running: []*relv1.VersionCount{{Version: "1.2.0", Hosts: 3}, {Version: "1.1.0", Hosts: 1}}},
		{App: "api", Environment: "dev", CurrentVersion: "2.0.0", Hosts: 1, Running: []*relv1.VersionCount{{Version: "2.0.0", Hosts: 1}}},
	}}, now, Options{})
	m := rep.Matrix()
	if strings.Join(m.Apps, ",") != "api,web" || strings.Join(m.Environments, ",") != "dev,prod" {
		t.Fatalf("matrix %v × %v", m.Apps, m.Environments)
	}
	if m.Cells[0][1] != nil || m.Cells[1][0] != nil {
		t.Errorf("cells with nothing: %+v", m.Cells)
	}
	if got := m.Cells[1][1].Text(); got != "mixed 1.2.0×3 1.1.0×1 of 4" {
		t.Errorf("web/prod %q", got)
	}
	if got := m.Cells[0][0].Text(); got != "2.0.0 1/1" {
		t.Errorf("api/dev %q", got)
	}
}

// TestRenderings: every format carries the figures, and the HTML page is
// self-contained (no script, nothing fetched).
func TestRenderings(t *testing.T) {
	rep := Build(Input{Deployments: history(), Running: []*relv1.RunningCell{
		{App: "web", Environment: "prod", CurrentVersion: "1.2.0", Hosts: 2, Running: []*relv1.VersionCount{{Version: "1.2.0", Hosts: 2}}}}}, now, Options{Period: 30 * day})
	var text, md, page bytes.Buffer
	if err := RenderText(&text, rep); err != nil {
		t.Fatal(err)
	}
	if err := RenderMarkdown(&md, rep); err != nil {
		t.Fatal(err)
	}
	if err := RenderHTML(&page, rep); err != nil {
		t.Fatal(err)
	}
	for name, out := range map[string]string{"text": text.String(), "markdown": md.String(), "html": page.String()} {
		for _, want := range []string{"web", "prod", "25m", "3h", "elite", "low", "1.2.0"} {
			if !strings.Contains(out, want) {
				t.Errorf("%s lacks %q:\n%s", name, want, out)
			}
		}
	}
	if !strings.Contains(text.String(), "1 not restored since") {
		t.Errorf("text does not name the failure not restored:\n%s", text.String())
	}
	h := page.String()
	for _, bad := range []string{"<script", "src=", "href=", "@import", "url("} {
		if strings.Contains(h, bad) {
			t.Errorf("HTML page is not self-contained: it holds %q", bad)
		}
	}
	if n := strings.Count(h, "<svg"); n < 3 {
		t.Errorf("HTML page has %d charts, want at least 3 (deploys, outcomes, approvals)", n)
	}
	var back Report
	b, err := json.Marshal(rep)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &back); err != nil || len(back.Rows) != len(rep.Rows) {
		t.Fatalf("json round trip: %v, %d rows", err, len(back.Rows))
	}
}

func TestFormat(t *testing.T) {
	cases := []struct{ got, want string }{
		{FormatDuration(45 * time.Second), "45s"},
		{FormatDuration(25 * time.Minute), "25m"},
		{FormatDuration(3 * h), "3h"},
		{FormatDuration(25*h + 30*time.Minute), "25h30m"},
		{FormatDuration(60 * h), "2.5d"},
		{FormatFrequency(0), "none"},
		{FormatFrequency(2), "2/day"},
		{FormatFrequency(4.0 / 30), "0.93/week"},
		{FormatPercent(1.0 / 3), "33%"},
		{FormatPercent(0.05), "5%"},
	}
	for _, c := range cases {
		if c.got != c.want {
			t.Errorf("%q, want %q", c.got, c.want)
		}
	}
}

// TestRenderHTMLFragment: the fragment holds the page's report in one
// element, every style rule scoped to it, and no page of its own.
func TestRenderHTMLFragment(t *testing.T) {
	rep := Build(Input{Deployments: history()}, now, Options{Period: 30 * day})
	var page, frag bytes.Buffer
	if err := RenderHTML(&page, rep); err != nil {
		t.Fatal(err)
	}
	if err := RenderHTMLFragment(&frag, rep); err != nil {
		t.Fatal(err)
	}
	f := frag.String()
	if !strings.HasPrefix(f, `<div class="rel-report">`) || strings.Contains(f, "<html") || strings.Contains(f, "<body") {
		t.Fatalf("fragment is not one element:\n%.300s", f)
	}
	css := f[strings.Index(f, "<style>")+len("<style>") : strings.Index(f, "</style>")]
	for _, line := range strings.Split(css, "\n") {
		for _, rule := range strings.SplitAfter(line, "}") {
			sel, _, ok := strings.Cut(rule, "{")
			if !ok {
				continue
			}
			for _, one := range strings.Split(sel, ",") {
				if one = strings.TrimSpace(one); !strings.HasPrefix(one, ".rel-report") {
					t.Errorf("rule %q is not scoped", one)
				}
			}
		}
	}
	if !strings.Contains(css, ".rel-report svg text {") || !strings.Contains(css, ".rel-report {") {
		t.Errorf("scoped CSS:\n%s", css)
	}
	// The same report: every heading of the page is in the fragment.
	for _, h := range []string{"Delivery performance", "Deploys over the period", "Rollouts by outcome", "Waiting for approval", "What runs where"} {
		if !strings.Contains(page.String(), h) || !strings.Contains(f, h) {
			t.Errorf("heading %q missing from the page or the fragment", h)
		}
	}
}
