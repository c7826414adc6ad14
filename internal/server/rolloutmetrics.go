package server

import (
	"time"

	"github.com/hashicorp/go-memdb"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/relhq/rel/internal/rollout"
	relv1 "github.com/relhq/rel/proto/rel/v1"
)

// rolloutMetrics are the release figures a Prometheus server scrapes from
// every node: counters and histograms fed by the rollout events this
// node's replica applies (each event is written once, by one raft entry, so
// every node counts the same transitions), and gauges read from the state
// at scrape time.
type rolloutMetrics struct {
	finished     *prometheus.CounterVec
	duration     *prometheus.HistogramVec
	waveDuration *prometheus.HistogramVec
	hostOutcomes *prometheus.CounterVec
}

// durationBuckets span a one-host rollout in seconds to a fleet-wide one
// with bakes and approvals over a day.
var durationBuckets = []float64{1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400, 43200, 86400}

func newRolloutMetrics(s *Server, register func(...prometheus.Collector)) *rolloutMetrics {
	m := &rolloutMetrics{
		finished: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rel_rollouts_finished_total",
			Help: "Rollouts that reached an outcome (succeeded, failed, aborted, rolled_back), by outcome, kind (deploy, rollback) and strategy, as this node applied them. A rollout that fails and is then rolled back counts once as failed and once as rolled_back.",
		}, []string{"outcome", "kind", "strategy"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "rel_rollout_duration_seconds",
			Help:    "Time from a rollout's start (or dequeue) to its outcome, by outcome and strategy (waits for approvals and freezes before the start are not counted).",
			Buckets: durationBuckets,
		}, []string{"outcome", "strategy"}),
		waveDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "rel_rollout_wave_duration_seconds",
			Help:    "Time from a wave's start to the end of its bake, by strategy.",
			Buckets: durationBuckets,
		}, []string{"strategy"}),
		hostOutcomes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rel_rollout_hosts_finished_total",
			Help: "Hosts of rollouts that became healthy or failed, by outcome.",
		}, []string{"outcome"}),
	}
	register(m.finished, m.duration, m.waveDuration, m.hostOutcomes, &stateCollector{s: s})
	return m
}

// eventBatch bounds the events one pass reads, so a node catching up on a
// long log does not hold them all at once.
const eventBatch = 4096

// watchRolloutEvents feeds the counters from the rollout events applied
// after this node started: those applied before (replayed from the log on
// start, or in the snapshot) were counted by the process that applied them
// first, so a restart resets the counters, as Prometheus expects, rather
// than counting them twice.
func (s *Server) watchRolloutEvents(after uint64) {
	m := s.metrics.rollouts
	for s.ctx.Err() == nil {
		ws := memdb.NewWatchSet()
		ws.Add(s.store.AbandonCh())
		events, _, err := s.store.RolloutEventsAfter(ws, after, eventBatch)
		if err != nil {
			s.logger.Error("read rollout events for metrics", "err", err)
			return
		}
		for _, e := range events {
			m.observe(s, e)
			if e.GetCreateIndex() > after {
				after = e.GetCreateIndex()
			}
		}
		if len(events) == eventBatch {
			continue
		}
		if ws.WatchCtx(s.ctx) != nil {
			return
		}
	}
}

func (m *rolloutMetrics) observe(s *Server, e *relv1.RolloutEvent) {
	switch e.GetType() {
	case rollout.EventHostHealthy:
		m.hostOutcomes.WithLabelValues("healthy").Add(float64(len(rollout.EventHosts(e))))
	case rollout.EventHostFailed:
		m.hostOutcomes.WithLabelValues("failed").Add(float64(len(rollout.EventHosts(e))))
	case rollout.EventWaveDone:
		r, err := s.store.Rollout(nil, e.GetRolloutId())
		if err != nil {
			return // removed by retention before this node looked
		}
		if start, _ := s.store.FirstRolloutEvent(e.GetRolloutId(), rollout.EventWaveStarted, int64(e.GetWave())); start != nil {
			m.waveDuration.WithLabelValues(r.GetSpec().GetStrategy()).Observe(seconds(start.GetAtUnixNano(), e.GetAtUnixNano()))
		}
	case rollout.EventSucceeded, rollout.EventFailed, rollout.EventAborted, rollout.EventRolledBack:
		r, err := s.store.Rollout(nil, e.GetRolloutId())
		if err != nil {
			return
		}
		outcome, strategy := e.GetType(), r.GetSpec().GetStrategy()
		m.finished.WithLabelValues(outcome, r.GetKind(), strategy).Inc()
		from := r.GetCreatedUnixNano()
		if st, _ := s.store.FirstRolloutEvent(r.GetId(), rollout.EventDequeued, -1); st != nil {
			from = st.GetAtUnixNano()
		} else if st, _ := s.store.FirstRolloutEvent(r.GetId(), rollout.EventStarted, -1); st != nil {
			from = st.GetAtUnixNano()
		}
		m.duration.WithLabelValues(outcome, strategy).Observe(seconds(from, e.GetAtUnixNano()))
	}
}

func seconds(from, to int64) float64 {
	if to < from {
		return 0
	}
	return time.Duration(to - from).Seconds()
}

// stateCollector reads gauges from this node's replica at scrape time:
// nothing to keep current between scrapes, and a follower answers like
// the leader.
type stateCollector struct{ s *Server }

var (
	descRollouts = prometheus.NewDesc("rel_rollouts_active",
		"Rollouts not yet at an outcome, by state.", []string{"state"}, nil)
	descHosts = prometheus.NewDesc("rel_rollout_hosts",
		"Hosts of active rollouts, by the engine's state (pending, dispatched, healthy, failed, skipped) and the agent's last reported phase.", []string{"state", "phase"}, nil)
	descAgents = prometheus.NewDesc("rel_agents",
		"Agents the cluster knows, by whether a stream to some server is open.", []string{"connected"}, nil)
)

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descRollouts
	ch <- descHosts
	ch <- descAgents
}

func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	active, err := c.s.store.ActiveRollouts(nil)
	if err == nil {
		byState := map[string]int{}
		for _, st := range rollout.ActiveStates {
			byState[st] = 0
		}
		type hostKey struct{ state, phase string }
		hosts := map[hostKey]int{}
		for _, r := range active {
			byState[r.GetState()]++
			for _, h := range r.GetHosts() {
				hosts[hostKey{h.GetState(), h.GetPhase()}]++
			}
		}
		for st, n := range byState {
			ch <- prometheus.MustNewConstMetric(descRollouts, prometheus.GaugeValue, float64(n), st)
		}
		for k, n := range hosts {
			ch <- prometheus.MustNewConstMetric(descHosts, prometheus.GaugeValue, float64(n), k.state, k.phase)
		}
	}
	if agents, _, err := c.s.store.Agents(nil); err == nil {
		var up, down int
		for _, a := range agents {
			if a.GetConnected() {
				up++
			} else {
				down++
			}
		}
		ch <- prometheus.MustNewConstMetric(descAgents, prometheus.GaugeValue, float64(up), "true")
		ch <- prometheus.MustNewConstMetric(descAgents, prometheus.GaugeValue, float64(down), "false")
	}
}
