package webhook

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-memdb"

	"github.com/relhq/rel/internal/event"
	"github.com/relhq/rel/internal/retry"
	"github.com/relhq/rel/internal/state"
	relv1 "github.com/relhq/rel/proto/rel/v1"
)

// Defaults of the Manager's retry policy.
const (
	DefaultRetryFor      = 24 * time.Hour
	DefaultRetryBase     = time.Second
	DefaultRetryMax      = 10 * time.Minute
	DefaultMinWriteGap   = 20 * time.Millisecond
	maxErrorInRaft       = 300
	progressApplyTimeout = 10 * time.Second
)

// Outcomes, as recorded and as the metric's label.
const (
	OutcomeDelivered   = "delivered"
	OutcomeFailed      = "failed" // one attempt failed; retried
	OutcomeDeadLetter  = "dead_letter"
	OutcomeRedelivered = "redelivered"
)

// Manager delivers every webhook's events; the leader runs one (from its
// leader loop, cancelled with leadership). It keeps no progress of its
// own: each webhook's cursor is in its replicated row, so a new leader
// carries on from the last delivery recorded. A delivery answered 2xx
// whose progress entry was not committed (the leader died in between) is
// sent again by the next leader with the same Rel-Delivery id: receivers
// dedupe on it.
type Manager struct {
	Store *state.Store
	// Apply commits a command through raft (the leader's apply).
	Apply  func(ctx context.Context, cmd *relv1.Command) (uint64, error)
	Logger *slog.Logger
	// Observe, if set, is told of every attempt (for metrics).
	Observe func(webhook, outcome string, d time.Duration)
	// RetryFor is how long an event is retried before it is
	// dead-lettered; RetryBase and RetryMax the backoff's first and
	// longest pause (each jittered). Zero: the defaults.
	RetryFor, RetryBase, RetryMax time.Duration
	// MinWriteGap spaces one webhook's progress entries, so a receiver
	// that answers at once does not turn into a stream of raft writes.
	MinWriteGap time.Duration
	UserAgent   string
}

// Run starts and stops one worker per webhook as webhooks are created
// and deleted, until ctx ends; it returns when every worker has.
func (m *Manager) Run(ctx context.Context) {
	m.defaults()
	type running struct {
		createIndex uint64
		cancel      context.CancelFunc
	}
	workers := map[string]running{}
	var wg sync.WaitGroup
	defer func() {
		for _, w := range workers {
			w.cancel()
		}
		wg.Wait()
	}()
	for {
		ws := memdb.NewWatchSet()
		ws.Add(m.Store.AbandonCh())
		whs, _, err := m.Store.Webhooks(ws)
		if err != nil {
			m.Logger.Warn("webhooks: list failed", "err", err)
		}
		seen := map[string]bool{}
		for _, wh := range whs {
			seen[wh.GetName()] = true
			if w, ok := workers[wh.GetName()]; ok && w.createIndex == wh.GetCreateIndex() {
				continue
			} else if ok {
				w.cancel() // deleted and made again
			}
			wctx, cancel := context.WithCancel(ctx)
			workers[wh.GetName()] = running{createIndex: wh.GetCreateIndex(), cancel: cancel}
			wg.Add(1)
			go func(name string, createIndex uint64) {
				defer wg.Done()
				m.work(wctx, name, createIndex)
			}(wh.GetName(), wh.GetCreateIndex())
		}
		for name, w := range workers {
			if !seen[name] {
				w.cancel()
				delete(workers, name)
			}
		}
		if ws.WatchCtx(ctx) != nil {
			return
		}
	}
}

func (m *Manager) defaults() {
	if m.RetryFor <= 0 {
		m.RetryFor = DefaultRetryFor
	}
	if m.RetryBase <= 0 {
		m.RetryBase = DefaultRetryBase
	}
	if m.RetryMax <= 0 {
		m.RetryMax = DefaultRetryMax
	}
	if m.MinWriteGap <= 0 {
		m.MinWriteGap = DefaultMinWriteGap
	}
	if m.UserAgent == "" {
		m.UserAgent = "rel-server"
	}
	if m.Logger == nil {
		m.Logger = slog.New(slog.DiscardHandler)
	}
}

// worker is one webhook's delivery loop.
type worker struct {
	m           *Manager
	name        string
	createIndex uint64
	client      *http.Client
	// after is how far the worker has looked: events up to it are done
	// or did not match (the row's cursor counts only deliveries).
	after     uint64
	lastWrite time.Time
}

func (m *Manager) work(ctx context.Context, name string, createIndex uint64) {
	w := &worker{m: m, name: name, createIndex: createIndex}
	defer func() {
		if w.client != nil {
			w.client.CloseIdleConnections() // no keep-alive outlives the worker
		}
	}()
	log := m.Logger.With("webhook", name)
	for ctx.Err() == nil {
		ws := memdb.NewWatchSet()
		ws.Add(m.Store.AbandonCh())
		wh, err := m.Store.Webhook(ws, name)
		if err != nil || wh.GetCreateIndex() != createIndex {
			return // deleted: the manager cancels us too
		}
		if w.client == nil {
			if w.client, err = NewClient(wh.GetCaPem()); err != nil {
				log.Warn("webhook: cannot build its HTTP client; not delivering", "err", err)
				return
			}
		}
		w.after = max(w.after, wh.GetDeliveredSeq())
		dls, err := m.Store.DeadLetters(ws, name)
		if err != nil {
			log.Warn("webhook: dead letters", "err", err)
		}
		if dl := firstRedeliver(dls); dl != nil {
			w.redeliver(ctx, wh, dl)
			continue
		}
		ev, last := w.next(ws, wh)
		if ev == nil {
			w.after = max(w.after, last)
			if ws.WatchCtx(ctx) != nil {
				return
			}
			continue
		}
		d, attempts := w.deliver(ctx, wh, ev)
		if ctx.Err() != nil {
			return // not recorded: the next leader sends it again
		}
		p := &relv1.WebhookProgress{Name: name, CreateIndex: createIndex, DeliveredSeq: ev.GetSeq(), Deliveries: []*relv1.WebhookDelivery{d}, FailedAttempts: uint64(attempts - 1)}
		if d.GetOutcome() == OutcomeDeadLetter {
			p.FailedAttempts++
			p.DeadLetters = []*relv1.WebhookDeadLetter{deadLetter(name, d)}
			log.Warn("webhook: gave up on an event; it is in the dead letters", "seq", ev.GetSeq(), "type", ev.GetType(), "attempts", attempts, "err", d.GetError())
		}
		if !w.record(ctx, p) {
			return
		}
		w.after = ev.GetSeq()
	}
}

func firstRedeliver(dls []*relv1.WebhookDeadLetter) *relv1.WebhookDeadLetter {
	for _, dl := range dls {
		if dl.GetRedeliver() {
			return dl
		}
	}
	return nil
}

func deadLetter(name string, d *relv1.WebhookDelivery) *relv1.WebhookDeadLetter {
	return &relv1.WebhookDeadLetter{Webhook: name, Seq: d.GetSeq(), Type: d.GetType(), Attempts: d.GetAttempts(), Status: d.GetStatus(),
		Error: d.GetError(), FirstAttemptUnixNano: d.GetFirstAttemptUnixNano(), DeadUnixNano: d.GetDoneUnixNano()}
}

// next is the first event after w.after that the webhook's globs select,
// and the newest seq looked at.
func (w *worker) next(ws memdb.WatchSet, wh *relv1.Webhook) (*relv1.Event, uint64) {
	f := event.Filter{Types: wh.GetEvents()}
	var found *relv1.Event
	_, _, last, err := w.m.Store.Events(ws, state.EventQuery{After: w.after, Filter: f}, func(e *relv1.Event) bool {
		found = e
		return false
	})
	if err != nil {
		return nil, w.after
	}
	return found, last
}

// deliver posts ev until it is answered 2xx, ctx ends, or RetryFor has
// passed since the first attempt: then the delivery is a dead letter.
func (w *worker) deliver(ctx context.Context, wh *relv1.Webhook, ev *relv1.Event) (*relv1.WebhookDelivery, int) {
	m := w.m
	d := &relv1.WebhookDelivery{Seq: ev.GetSeq(), Type: ev.GetType(), FirstAttemptUnixNano: time.Now().UnixNano()}
	body, err := Encode(wh.GetFormat(), wh.GetName(), ev)
	if err != nil {
		d.Outcome, d.Error, d.DoneUnixNano = OutcomeDeadLetter, err.Error(), time.Now().UnixNano()
		return d, 1
	}
	first := time.Now()
	pause := m.RetryBase
	for attempt := 1; ; attempt++ {
		a := Post(ctx, w.client, wh.GetUrl(), wh.GetSecret(), DeliveryID(wh.GetName(), ev.GetSeq()), ev.GetType(), body, time.Now(), m.UserAgent)
		d.Attempts, d.Status = uint32(attempt), int32(a.Status)
		if a.OK() {
			d.Outcome, d.Error, d.DoneUnixNano = OutcomeDelivered, "", time.Now().UnixNano()
			m.observe(wh.GetName(), OutcomeDelivered, a.Duration)
			return d, attempt
		}
		if ctx.Err() != nil {
			return d, attempt
		}
		d.Error = clip(a.Error(), maxErrorInRaft)
		m.observe(wh.GetName(), OutcomeFailed, a.Duration)
		if time.Since(first)+pause > m.RetryFor {
			d.Outcome, d.DoneUnixNano = OutcomeDeadLetter, time.Now().UnixNano()
			m.observe(wh.GetName(), OutcomeDeadLetter, 0)
			return d, attempt
		}
		m.Logger.Debug("webhook: delivery failed; retrying", "webhook", wh.GetName(), "seq", ev.GetSeq(), "attempt", attempt, "err", d.GetError(), "pause", pause)
		if !retry.Sleep(ctx, retry.Jitter(pause)) {
			return d, attempt
		}
		pause = min(2*pause, m.RetryMax)
	}
}

// redeliver tries a dead letter again (with the same retry policy): on a
// 2xx it leaves the dead letters; otherwise it is recorded again, not to
// be redelivered until asked.
func (w *worker) redeliver(ctx context.Context, wh *relv1.Webhook, dl *relv1.WebhookDeadLetter) {
	p := &relv1.WebhookProgress{Name: w.name, CreateIndex: w.createIndex}
	var ev *relv1.Event
	_, _, _, _ = w.m.Store.Events(nil, state.EventQuery{After: dl.GetSeq() - 1}, func(e *relv1.Event) bool {
		if e.GetSeq() == dl.GetSeq() {
			ev = e
		}
		return false
	})
	if ev == nil {
		// Trimmed by retention: nothing left to send.
		d := &relv1.WebhookDelivery{Seq: dl.GetSeq(), Type: dl.GetType(), Outcome: OutcomeDeadLetter, Error: "the event is no longer kept (retention)", DoneUnixNano: time.Now().UnixNano()}
		p.Deliveries, p.Redelivered = []*relv1.WebhookDelivery{d}, []uint64{dl.GetSeq()}
		w.record(ctx, p)
		return
	}
	d, attempts := w.deliver(ctx, wh, ev)
	if ctx.Err() != nil {
		return
	}
	p.FailedAttempts = uint64(attempts - 1)
	if d.GetOutcome() == OutcomeDelivered {
		d.Outcome = OutcomeRedelivered
		p.Redelivered = []uint64{dl.GetSeq()}
	} else {
		p.FailedAttempts++
		p.DeadLetters = []*relv1.WebhookDeadLetter{deadLetter(w.name, d)}
	}
	p.Deliveries = []*relv1.WebhookDelivery{d}
	w.record(ctx, p)
}

// record commits p, spaced MinWriteGap from the previous entry, retrying
// (jittered) while there is no leader; false when ctx ended or the
// webhook is gone.
func (w *worker) record(ctx context.Context, p *relv1.WebhookProgress) bool {
	if wait := time.Until(w.lastWrite.Add(w.m.MinWriteGap)); wait > 0 && !retry.Sleep(ctx, wait) {
		return false
	}
	pause := 100 * time.Millisecond
	for {
		actx, cancel := context.WithTimeout(ctx, progressApplyTimeout)
		_, err := w.m.Apply(actx, &relv1.Command{Kind: &relv1.Command_WebhookProgress{WebhookProgress: p}})
		cancel()
		w.lastWrite = time.Now()
		if err == nil {
			return true
		}
		if errors.Is(err, state.ErrConflict) {
			return false // deleted meanwhile
		}
		if ctx.Err() != nil {
			return false
		}
		w.m.Logger.Warn("webhook: recording progress failed; retrying", "webhook", w.name, "err", err)
		if !retry.Sleep(ctx, retry.Jitter(pause)) {
			return false
		}
		pause = min(2*pause, 5*time.Second)
	}
}

func (m *Manager) observe(name, outcome string, d time.Duration) {
	if m.Observe != nil {
		m.Observe(name, outcome, d)
	}
}

func clip(s string, n int) string {
	s = strings.ToValidUTF8(s, "?")
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[:n], "") + "..."
}
