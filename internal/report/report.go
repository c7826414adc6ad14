// Package report computes the management report: per app and environment
// the four DORA figures of a period with their performance bands and the
// trend against the period before, rollouts by outcome, approval waits,
// and what runs where. It is pure: the deployment records and the time
// are inputs, so the server (which takes now from its clock), relctl and
// the web dashboard compute the same report from the same records.
// Rendering (text, markdown, HTML) is in render.go and html.go.
package report

import (
	"math"
	"sort"
	"time"

	relv1 "github.com/relhq/rel/proto/rel/v1"
)

// The fixed words of deployment records (internal/rollout's states and
// kinds, spelled again here so the package imports nothing of Rel's but
// the protobuf types).
const (
	outcomeSucceeded  = "succeeded"
	outcomeFailed     = "failed"
	outcomeRolledBack = "rolled_back"
	outcomeAborted    = "aborted"
	kindDeploy        = "deploy"
	kindRollback      = "rollback"
)

// DefaultPeriod is the period of a report when none is given.
const DefaultPeriod = 30 * 24 * time.Hour

// Input is what a report is computed from.
type Input struct {
	// Deployment records that finished in the period or the one before
	// (more are ignored).
	Deployments []*relv1.Deployment
	// What runs where now.
	Running []*relv1.RunningCell
}

// Options shape a report.
type Options struct {
	// Period is the length of the period ending now (0: DefaultPeriod).
	Period time.Duration
}

// Report is the management report of one period.
type Report struct {
	Now    time.Time     `json:"now"`
	From   time.Time     `json:"from"`
	Period time.Duration `json:"period_nanos"`
	// PreviousFrom is the start of the period before, which ends at From.
	PreviousFrom time.Time `json:"previous_from"`
	Rows         []Row     `json:"rows"`
	// Outcomes counts every rollout of the period by kind and outcome.
	Outcomes []OutcomeCount `json:"outcomes"`
	// Approvals are the start gates' waits of the period's rollouts.
	Approvals Waits `json:"approvals"`
	// Buckets count succeeded and failed deploys over the period, by day
	// (periods up to 31 days) or by week, for the charts.
	Buckets []Bucket      `json:"buckets"`
	Running []RunningCell `json:"running"`
}

// Row holds the figures of one app in one environment.
type Row struct {
	App         string `json:"app"`
	Environment string `json:"environment"`
	// DeploymentFrequency is succeeded deploys per day.
	DeploymentFrequency Metric `json:"deployment_frequency"`
	// LeadTime is the median from a release's commit (or, without a
	// commit time, its creation) to its deploy's success here, in seconds.
	LeadTime Metric `json:"lead_time"`
	// ChangeFailureRate is failed and rolled back deploys over all
	// deploys that reached a verdict (0..1).
	ChangeFailureRate Metric `json:"change_failure_rate"`
	// TimeToRestore is the median from a failure to the next success
	// here, in seconds.
	TimeToRestore Metric `json:"time_to_restore"`
	// Deploys and Failures are the counts behind the rates.
	Deploys  int `json:"deploys"`
	Failures int `json:"failures"`
	// Unrestored counts failures of the period with no success since;
	// UnrestoredSince is the oldest such failure.
	Unrestored      int            `json:"unrestored"`
	UnrestoredSince time.Time      `json:"unrestored_since,omitzero"`
	Outcomes        []OutcomeCount `json:"outcomes"`
	Approvals       Waits          `json:"approvals"`
}

// Metric is one DORA figure of a period and of the one before.
type Metric struct {
	// Known is false when the period has nothing to measure (no deploy
	// succeeded for a lead time, no failure restored for a time to
	// restore); Value and Band are then meaningless.
	Known   bool    `json:"known"`
	Value   float64 `json:"value"`
	Samples int     `json:"samples"`
	Band    Band    `json:"band,omitempty"`
	// The previous period's figure.
	PreviousKnown bool    `json:"previous_known"`
	Previous      float64 `json:"previous"`
	Trend         Trend   `json:"trend,omitempty"`
}

// Trend compares a figure with the previous period's.
type Trend string

// Trends. TrendNone: one of the two periods has nothing to compare.
const (
	TrendBetter Trend = "better"
	TrendWorse  Trend = "worse"
	TrendSame   Trend = "same"
	TrendNone   Trend = ""
)

// OutcomeCount counts rollouts of one kind with one outcome.
type OutcomeCount struct {
	Kind    string `json:"kind"`
	Outcome string `json:"outcome"`
	Count   int    `json:"count"`
}

// Waits summarises approval waits.
type Waits struct {
	Count  int           `json:"count"`
	Median time.Duration `json:"median_nanos"`
	P90    time.Duration `json:"p90_nanos"`
}

// Bucket counts deploys in [Start, Start+Width).
type Bucket struct {
	Start     time.Time     `json:"start"`
	Width     time.Duration `json:"width_nanos"`
	Succeeded int           `json:"succeeded"`
	Failed    int           `json:"failed"`
}

// RunningCell is what runs in one environment of one app.
type RunningCell struct {
	App            string         `json:"app"`
	Environment    string         `json:"environment"`
	CurrentVersion string         `json:"current_version,omitempty"`
	Hosts          int            `json:"hosts"`
	Running        []VersionHosts `json:"running"`
}

// Mixed reports whether the environment's healthy hosts run more than one
// version.
func (c RunningCell) Mixed() bool { return len(c.Running) > 1 }

// VersionHosts is how many healthy hosts run a version.
type VersionHosts struct {
	Version string `json:"version"`
	Hosts   int    `json:"hosts"`
}

// Build computes the report of the period of opts.Period ending at now.
func Build(in Input, now time.Time, opts Options) Report {
	p := opts.Period
	if p <= 0 {
		p = DefaultPeriod
	}
	rep := Report{Now: now, Period: p, From: now.Add(-p), PreviousFrom: now.Add(-2 * p)}
	type key struct{ app, env string }
	groups := map[key][]*relv1.Deployment{}
	var keys []key
	for _, d := range in.Deployments {
		k := key{d.GetApp(), d.GetEnvironment()}
		if _, ok := groups[k]; !ok {
			keys = append(keys, k)
		}
		groups[k] = append(groups[k], d)
	}
	sort.Slice(keys, func(i, j int) bool {
		if keys[i].app != keys[j].app {
			return keys[i].app < keys[j].app
		}
		return keys[i].env < keys[j].env
	})
	cur := window{rep.From, now}
	prev := window{rep.PreviousFrom, rep.From}
	for _, k := range keys {
		ds := groups[k]
		row := Row{App: k.app, Environment: k.env}
		if !anyIn(ds, cur) && !anyIn(ds, prev) {
			continue
		}
		c, pr := figures(ds, cur), figures(ds, prev)
		row.DeploymentFrequency = metric(c.frequency, true, c.deploys, pr.frequency, true, bandFrequency, higherIsBetter)
		row.LeadTime = metric(c.leadTime, c.leadSamples > 0, c.leadSamples, pr.leadTime, pr.leadSamples > 0, bandLeadTime, lowerIsBetter)
		row.ChangeFailureRate = metric(c.failureRate, c.verdicts > 0, c.verdicts, pr.failureRate, pr.verdicts > 0, bandFailureRate, lowerIsBetter)
		row.TimeToRestore = metric(c.restore, c.restoreSamples > 0, c.restoreSamples, pr.restore, pr.restoreSamples > 0, bandRestore, lowerIsBetter)
		row.Deploys, row.Failures = c.deploys, c.failures
		row.Unrestored, row.UnrestoredSince = c.unrestored, c.unrestoredSince
		row.Outcomes = outcomes(ds, cur)
		row.Approvals = waits(ds, cur)
		rep.Rows = append(rep.Rows, row)
	}
	rep.Outcomes = outcomes(in.Deployments, cur)
	rep.Approvals = waits(in.Deployments, cur)
	rep.Buckets = buckets(in.Deployments, cur)
	for _, c := range in.Running {
		rc := RunningCell{App: c.GetApp(), Environment: c.GetEnvironment(), CurrentVersion: c.GetCurrentVersion(), Hosts: int(c.GetHosts())}
		for _, v := range c.GetRunning() {
			rc.Running = append(rc.Running, VersionHosts{Version: v.GetVersion(), Hosts: int(v.GetHosts())})
		}
		rep.Running = append(rep.Running, rc)
	}
	sort.SliceStable(rep.Running, func(i, j int) bool {
		a, b := rep.Running[i], rep.Running[j]
		if a.App != b.App {
			return a.App < b.App
		}
		return a.Environment < b.Environment
	})
	return rep
}

// window is [from, to).
type window struct{ from, to time.Time }

func (w window) has(unixNano int64) bool {
	return unixNano != 0 && unixNano >= w.from.UnixNano() && unixNano < w.to.UnixNano()
}

func (w window) days() float64 { return w.to.Sub(w.from).Hours() / 24 }

// anyIn reports whether a record finished or succeeded in w.
func anyIn(ds []*relv1.Deployment, w window) bool {
	for _, d := range ds {
		if w.has(d.GetFinishedUnixNano()) || w.has(d.GetSucceededUnixNano()) {
			return true
		}
	}
	return false
}

// periodFigures are one app and environment's figures over one window.
type periodFigures struct {
	deploys         int
	frequency       float64
	leadTime        float64
	leadSamples     int
	verdicts        int
	failures        int
	failureRate     float64
	restore         float64
	restoreSamples  int
	unrestored      int
	unrestoredSince time.Time
}

// figures computes the DORA figures of one app in one environment (ds)
// over w. Records of other windows are read too: a failure in w may be
// restored by a success after it, and a failure before w by one in it.
func figures(ds []*relv1.Deployment, w window) periodFigures {
	var f periodFigures
	var leads []float64
	for _, d := range ds {
		if d.GetKind() != kindDeploy {
			continue
		}
		// Deployment frequency and lead time count deploys that
		// succeeded in w, even if they were rolled back later: they were
		// deployed.
		if w.has(d.GetSucceededUnixNano()) {
			f.deploys++
			from := d.GetCommitUnixNano()
			if from == 0 {
				from = d.GetReleaseCreatedUnixNano()
			}
			if from != 0 {
				leads = append(leads, time.Duration(d.GetSucceededUnixNano()-from).Seconds())
			}
		}
		// Change failure rate: deploys that ended in w with a verdict.
		// One that never dispatched a host (aborted or rejected while it
		// waited, an approval that expired) changed nothing: no verdict.
		if w.has(d.GetFinishedUnixNano()) && (d.GetStartedUnixNano() != 0 || d.GetOutcome() == outcomeSucceeded) {
			switch d.GetOutcome() {
			case outcomeSucceeded, outcomeAborted:
				f.verdicts++
			case outcomeFailed, outcomeRolledBack:
				f.verdicts++
				f.failures++
			}
		}
	}
	f.frequency = float64(f.deploys) / w.days()
	f.leadTime, f.leadSamples = median(leads), len(leads)
	if f.verdicts > 0 {
		f.failureRate = float64(f.failures) / float64(f.verdicts)
	}
	var restores []float64
	for _, fl := range failures(ds) {
		if !w.has(fl.at) {
			continue
		}
		if fl.restored == 0 {
			f.unrestored++
			if t := time.Unix(0, fl.at); f.unrestoredSince.IsZero() || t.Before(f.unrestoredSince) {
				f.unrestoredSince = t
			}
			continue
		}
		restores = append(restores, time.Duration(fl.restored-fl.at).Seconds())
	}
	f.restore, f.restoreSamples = median(restores), len(restores)
	return f
}

// changed reports whether a deploy dispatched any host: one that did
// not (an approval that expired, a rollout aborted while it waited) is
// no change, so neither a failure nor a verdict.
func changed(d *relv1.Deployment) bool { return d.GetStartedUnixNano() != 0 }

// failure is a deploy that failed in an environment: when it failed, and
// when the environment next had a success (0: not yet).
type failure struct{ at, restored int64 }

// failures lists the failed and rolled back deploys of ds that changed
// something (one app and
// environment) with their restores. A rolled back deploy failed when its
// rollback was requested (someone, or the automatic rollback, saw it
// fail); a failed one when it finished. The restore is the next succeeded
// deploy or rollback there that finished after the failure.
func failures(ds []*relv1.Deployment) []failure {
	rollbackOf := map[string]int64{}
	var successes []int64
	for _, d := range ds {
		if d.GetKind() == kindRollback && d.GetRollbackOf() != "" {
			rollbackOf[d.GetRollbackOf()] = d.GetRequestedUnixNano()
		}
		if (d.GetKind() == kindDeploy || d.GetKind() == kindRollback) && d.GetOutcome() == outcomeSucceeded {
			successes = append(successes, d.GetFinishedUnixNano())
		}
		// A deploy rolled back after it succeeded was a success until then.
		if d.GetKind() == kindDeploy && d.GetOutcome() == outcomeRolledBack && d.GetSucceededUnixNano() != 0 {
			successes = append(successes, d.GetSucceededUnixNano())
		}
	}
	sort.Slice(successes, func(i, j int) bool { return successes[i] < successes[j] })
	var out []failure
	for _, d := range ds {
		if d.GetKind() != kindDeploy || !changed(d) {
			continue
		}
		var at int64
		switch d.GetOutcome() {
		case outcomeFailed:
			at = d.GetFinishedUnixNano()
		case outcomeRolledBack:
			at = d.GetFinishedUnixNano()
			if t, ok := rollbackOf[d.GetRolloutId()]; ok && t != 0 {
				at = t
			}
		default:
			continue
		}
		fl := failure{at: at}
		i := sort.Search(len(successes), func(i int) bool { return successes[i] > at })
		if i < len(successes) {
			fl.restored = successes[i]
		}
		out = append(out, fl)
	}
	return out
}

func outcomes(ds []*relv1.Deployment, w window) []OutcomeCount {
	type key struct{ kind, outcome string }
	n := map[key]int{}
	for _, d := range ds {
		if w.has(d.GetFinishedUnixNano()) {
			n[key{d.GetKind(), d.GetOutcome()}]++
		}
	}
	out := make([]OutcomeCount, 0, len(n))
	for k, c := range n {
		out = append(out, OutcomeCount{Kind: k.kind, Outcome: k.outcome, Count: c})
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Kind != out[j].Kind {
			return out[i].Kind < out[j].Kind
		}
		return out[i].Outcome < out[j].Outcome
	})
	return out
}

// waits summarises the start-gate approval waits of the rollouts that
// finished in w and were approved.
func waits(ds []*relv1.Deployment, w window) Waits {
	var xs []float64
	for _, d := range ds {
		if w.has(d.GetFinishedUnixNano()) && d.GetAwaitedApproval() && d.GetApprovalWaitNanos() > 0 {
			xs = append(xs, float64(d.GetApprovalWaitNanos()))
		}
	}
	if len(xs) == 0 {
		return Waits{}
	}
	return Waits{Count: len(xs), Median: time.Duration(median(xs)), P90: time.Duration(percentile(xs, 0.9))}
}

func buckets(ds []*relv1.Deployment, w window) []Bucket {
	width := 24 * time.Hour
	if w.to.Sub(w.from) > 31*24*time.Hour {
		width = 7 * 24 * time.Hour
	}
	n := int(math.Ceil(float64(w.to.Sub(w.from)) / float64(width)))
	out := make([]Bucket, n)
	for i := range out {
		out[i] = Bucket{Start: w.from.Add(time.Duration(i) * width), Width: width}
	}
	for _, d := range ds {
		if d.GetKind() != kindDeploy {
			continue
		}
		if at := d.GetSucceededUnixNano(); w.has(at) {
			out[int(time.Duration(at-w.from.UnixNano())/width)].Succeeded++
		}
		if o := d.GetOutcome(); (o == outcomeFailed || o == outcomeRolledBack) && changed(d) && w.has(d.GetFinishedUnixNano()) {
			out[int(time.Duration(d.GetFinishedUnixNano()-w.from.UnixNano())/width)].Failed++
		}
	}
	return out
}

// median of xs (the mean of the middle two for an even count); 0 for none.
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	m := len(s) / 2
	if len(s)%2 == 1 {
		return s[m]
	}
	return (s[m-1] + s[m]) / 2
}

// percentile by nearest rank: the smallest value with at least q of the
// values at or below it.
func percentile(xs []float64, q float64) float64 {
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	i := int(math.Ceil(q*float64(len(s)))) - 1
	return s[max(0, min(i, len(s)-1))]
}

type direction bool

const (
	higherIsBetter direction = true
	lowerIsBetter  direction = false
)

func metric(v float64, known bool, samples int, prev float64, prevKnown bool, band func(float64) Band, dir direction) Metric {
	m := Metric{Known: known, Samples: samples, PreviousKnown: prevKnown}
	if known {
		m.Value, m.Band = v, band(v)
	}
	if prevKnown {
		m.Previous = prev
	}
	if known && prevKnown {
		switch {
		case nearlyEqual(v, prev):
			m.Trend = TrendSame
		case (v > prev) == bool(dir):
			m.Trend = TrendBetter
		default:
			m.Trend = TrendWorse
		}
	}
	return m
}

func nearlyEqual(a, b float64) bool {
	return math.Abs(a-b) <= 1e-9*math.Max(1, math.Max(math.Abs(a), math.Abs(b)))
}

// FromResponse computes the report a ReportService answer holds: the
// records, what runs where, the answering server's now and the period.
// relctl and the web dashboard both show what it returns.
func FromResponse(resp *relv1.ReportResponse) Report {
	return Build(Input{Deployments: resp.GetDeployments(), Running: resp.GetRunning()},
		time.Unix(0, resp.GetNowUnixNano()), Options{Period: time.Duration(resp.GetPeriodNanos())})
}
