package server

import "context"

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
