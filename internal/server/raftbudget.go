package server

import (
	"errors"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// The raft log is bounded in entries (--trailing-logs after a snapshot,
// --snapshot-threshold between them), but Rel's entries vary from 100
// bytes (a heartbeat's report) to tens of KiB (a rollout created over a
// fleet, a batch of reports): at 20 KiB an entry the default counts keep
// 350 MiB of log, which bolt never gives back to the file system and which
// the process maps (issue 10's steady bench: raft.db 353 MiB, RSS +78 %
// from it). The log budget turns the counts into bytes: it measures the
// size of the entries written lately and lowers both counts, never above
// their flags, so that each holds about half of --raft-log-budget; and it
// asks raft for a snapshot as soon as the log passes the budget, instead
// of waiting for the next --snapshot-interval check. A follower further
// behind than the trailing entries is sent a snapshot, which this also
// keeps small.

const (
	// minLogEntries is the floor of both counts: a follower restarting
	// or a brief partition still catches up from the log.
	minLogEntries = 64
	// logBudgetEvery is how often the counts are reconsidered.
	logBudgetEvery = 5 * time.Second
)

// logSizes counts what is appended to the log.
type logSizes struct {
	mu      sync.Mutex
	bytes   uint64
	entries uint64
}

func (l *logSizes) add(n int) {
	l.mu.Lock()
	l.bytes += uint64(n)
	l.entries++
	l.mu.Unlock()
}

// take returns and resets the counts.
func (l *logSizes) take() (bytes, entries uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	bytes, entries = l.bytes, l.entries
	l.bytes, l.entries = 0, 0
	return bytes, entries
}

// entrySize is about what an entry costs in the log: its payload and
// bolt's key and framing.
func entrySize(log *raft.Log) int { return len(log.Data) + len(log.Extensions) + 64 }

// sizedLogs counts the bytes of entries stored in the log.
type sizedLogs struct {
	raft.LogStore
	sizes *logSizes
}

func (l sizedLogs) StoreLog(log *raft.Log) error {
	l.sizes.add(entrySize(log))
	return l.LogStore.StoreLog(log)
}

func (l sizedLogs) StoreLogs(logs []*raft.Log) error {
	for _, log := range logs {
		l.sizes.add(entrySize(log))
	}
	return l.LogStore.StoreLogs(logs)
}

// logBudgetCounts is what the counts should be for entries of avg bytes:
// each about half the budget, within [minLogEntries, its flag].
func logBudgetCounts(budget int64, avg float64, maxTrailing, maxThreshold uint64) (trailing, threshold uint64) {
	target := uint64(float64(budget) / 2 / max(avg, 1))
	clamp := func(v, hi uint64) uint64 { return max(min(v, hi), min(minLogEntries, hi)) }
	return clamp(target, maxTrailing), clamp(target, maxThreshold)
}

// watchLogBudget adjusts the log's counts to the entries' size, and
// snapshots early when the log holds more than the budget.
func (s *Server) watchLogBudget() {
	budget := s.cfg.RaftLogBudget
	if budget <= 0 {
		return
	}
	every := s.cfg.LogBudgetInterval
	if every == 0 {
		every = logBudgetEvery
	}
	t := time.NewTicker(every)
	defer t.Stop()
	var avg float64
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-t.C:
		}
		bytes, entries := s.raftLogSizes.take()
		if entries > 0 {
			window := float64(bytes) / float64(entries)
			// Follow the entries' size within a few windows, but let
			// one quiet window of small entries not undo it at once.
			if avg == 0 {
				avg = window
			} else {
				avg = 0.5*avg + 0.5*window
			}
		}
		if avg == 0 {
			continue
		}
		trailing, threshold := logBudgetCounts(budget, avg, s.cfg.TrailingLogs, s.cfg.SnapshotThreshold)
		rc := s.raft.ReloadableConfig()
		if rc.TrailingLogs != trailing || rc.SnapshotThreshold != threshold {
			rc.TrailingLogs, rc.SnapshotThreshold = trailing, threshold
			if err := s.raft.ReloadConfig(rc); err != nil {
				s.logger.Warn("raft log budget: reload config", "err", err)
			} else {
				s.logger.Debug("raft log budget", "avg_entry_bytes", int(avg), "trailing_logs", trailing, "snapshot_threshold", threshold)
			}
		}
		s.logTrailing.Store(trailing)
		s.logThreshold.Store(threshold)
		first, err1 := s.boltStore.FirstIndex()
		last, err2 := s.boltStore.LastIndex()
		if err1 != nil || err2 != nil || last < first {
			continue
		}
		if held := float64(last-first+1) * avg; held > float64(budget) {
			err := s.raft.Snapshot().Error()
			switch {
			case err == nil:
				s.logger.Debug("raft log budget: snapshot", "log_entries", last-first+1, "approx_bytes", int64(held))
			case errors.Is(err, raft.ErrNothingNewToSnapshot):
			default:
				s.logger.Warn("raft log budget: snapshot", "err", err)
			}
		}
	}
}
