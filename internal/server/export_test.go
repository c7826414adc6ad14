package server

import (
	"context"
	"regexp"

	"github.com/prometheus/client_golang/prometheus"
)

// SetAgentSessionsHook makes f run before each agent_sessions commit of s,
// with the ids of the agents the entry connects (nil: no hook).
func (s *Server) SetAgentSessionsHook(f func(ups []string)) {
	s.agentSessions.mu.Lock()
	defer s.agentSessions.mu.Unlock()
	s.agentSessions.beforeCommit = f
}

// QueuedAgentSessions is how many connects and disconnects wait for the
// next agent_sessions entry of s.
func (s *Server) QueuedAgentSessions() int {
	s.agentSessions.mu.Lock()
	defer s.agentSessions.mu.Unlock()
	return len(s.agentSessions.q)
}

// CaughtUpTerm is the term in which s, leading, last saw a barrier apply;
// ForgetCaughtUp makes it look as a leader that has not yet.
func (s *Server) CaughtUpTerm() uint64 { return s.caughtUpTerm.Load() }
func (s *Server) ForgetCaughtUp()      { s.caughtUpTerm.Store(0) }

// RetentionWake runs one wake of s's retention loop (s must lead).
func (s *Server) RetentionWake(ctx context.Context) { s.retentionWake(ctx) }

// MetricNames lists the name of every metric s exports, labelled ones
// without a series yet included.
func (s *Server) MetricNames() []string {
	fq := regexp.MustCompile(`fqName: "([^"]+)"`)
	ch := make(chan *prometheus.Desc, 64)
	go func() {
		for _, c := range s.metrics.collectors {
			c.Describe(ch)
		}
		close(ch)
	}()
	var out []string
	for d := range ch {
		if m := fq.FindStringSubmatch(d.String()); m != nil {
			out = append(out, m[1])
		}
	}
	return out
}

// RaftLogSpan is the first and last index of s's raft log on disk.
func (s *Server) RaftLogSpan() (first, last uint64, err error) {
	if first, err = s.boltStore.FirstIndex(); err != nil {
		return 0, 0, err
	}
	last, err = s.boltStore.LastIndex()
	return first, last, err
}

// LogBudgetCounts are the trailing logs and snapshot threshold the log
// budget last set.
func (s *Server) LogBudgetCounts() (trailing, threshold uint64) {
	return s.logTrailing.Load(), s.logThreshold.Load()
}

// LogBudgetCounts is logBudgetCounts.
var LogBudgetCountsFor = logBudgetCounts
