package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"golang.org/x/term"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	relv1 "github.com/relhq/rel/proto/rel/v1"
)

var (
	// watchRetryDelay is how long "rollout status --watch" waits before
	// asking again when an answer brought no change, so that a server that
	// does not hold the request (or stops holding it early) is not asked in
	// a busy loop.
	watchRetryDelay = time.Second
	// watchRedrawInterval is how often the live view is redrawn while
	// nothing changes, so that its timers move.
	watchRedrawInterval = time.Second
	// watchIsTerminal decides whether the watch draws the live view (stdout
	// is a terminal) or prints lines; tests replace it.
	watchIsTerminal = isTerminal
	// watchTermSize is the terminal's width and height, 0 if unknown; the
	// live view is cut to it so that the redraw never scrolls.
	watchTermSize = func(w io.Writer) (int, int) {
		f, ok := w.(interface{ Fd() uintptr })
		if !ok {
			return 0, 0
		}
		width, height, err := term.GetSize(int(f.Fd()))
		if err != nil {
			return 0, 0
		}
		return width, height
	}
)

// liveEvents is how many of the latest events the live view shows.
const liveEvents = 5

// watchRollout follows rollout id until its state is terminal and returns
// its outcome (see rolloutOutcome). It draws the live view when stdout is
// a terminal, and otherwise prints the events, as lines or JSON lines.
func (r *runner) watchRollout(id string) error {
	f := &rolloutFollower{r: r, id: id}
	if !r.printer().json() && watchIsTerminal(r.stdout) {
		f.tail = liveEvents
		return r.watchLive(f)
	}
	return r.watchEvents(f)
}

// rolloutFollower long-polls a rollout: GetRollout with the index of the
// last answer, then RolloutEvents after the last event seen.
type rolloutFollower struct {
	r  *runner
	id string
	// tail, if above 0, skips all but the last tail events that happened
	// before the watch began.
	tail int

	index   uint64 // of the last answer; 0 asks for an answer at once
	seq     uint64 // of the last event seen
	started bool   // an answer came
	pause   bool   // wait watchRetryDelay before the next request
}

// rolloutUpdate is a change: the rollout as it is now and the events that
// happened since the last update.
type rolloutUpdate struct {
	status *relv1.RolloutStatus
	events []*relv1.RolloutEvent
}

// next waits for the next change of the rollout; the first call answers
// at once. Each request has its own --timeout, so that a watch lasts as
// long as the rollout does.
func (f *rolloutFollower) next() (rolloutUpdate, error) {
	for {
		if f.pause {
			time.Sleep(watchRetryDelay)
			f.pause = false
		}
		ctx, cancel := context.WithTimeout(context.Background(), f.r.timeout)
		resp, err := f.r.getRollout(ctx, f.id, f.index)
		cancel()
		if err != nil {
			var te *timeoutError
			switch {
			case f.index > 0 && errors.As(err, &te):
				continue // nothing changed while the request was held: ask again
			case f.index > 0 && status.Code(err) == codes.DeadlineExceeded:
				// The server stopped holding the request itself.
				f.pause = true
				continue
			}
			return rolloutUpdate{}, err
		}
		changed := !f.started || resp.GetIndex() != f.index
		// A server without indexes (0) cannot hold the request: pace it.
		f.pause = !changed || resp.GetIndex() == 0
		f.index = resp.GetIndex()
		if !changed {
			continue
		}
		st := resp.GetStatus()
		seq := st.GetRollout().GetEventSeq()
		if !f.started && f.tail > 0 {
			f.seq = max(seq, uint64(f.tail)) - uint64(f.tail)
		}
		f.started = true
		ctx, cancel = context.WithTimeout(context.Background(), f.r.timeout)
		events, _, err := f.r.rolloutEvents(ctx, f.id, f.seq, seq)
		cancel()
		if err != nil && !isUnimplemented(err) {
			return rolloutUpdate{}, err
		}
		if n := len(events); n > 0 {
			f.seq = events[n-1].GetSeq()
		}
		return rolloutUpdate{status: st, events: events}, nil
	}
}

// watchEvents prints every event of the rollout, from its first, as one
// line each (or one JSON object per line with -o json) until the rollout
// is over.
func (r *runner) watchEvents(f *rolloutFollower) error {
	p := r.printer()
	enc := json.NewEncoder(p.w)
	enc.SetEscapeHTML(false)
	for {
		u, err := f.next()
		if err != nil {
			return err
		}
		ro := u.status.GetRollout()
		base := waveBase(ro)
		for _, e := range u.events {
			if p.json() {
				err = enc.Encode(toEventJSON(e))
			} else {
				_, err = fmt.Fprintln(p.w, eventLine(base, e))
			}
			if err != nil {
				return err
			}
		}
		if isTerminalRolloutState(ro.GetState()) {
			return rolloutOutcome(ro)
		}
	}
}

// ANSI sequences of the live view: it redraws from the top left corner,
// erasing the rest of each line and, at the end, the rest of the screen,
// so that a shorter frame leaves nothing of a longer one behind.
const (
	ansiClear     = "\x1b[2J"
	ansiHome      = "\x1b[H"
	ansiEraseLine = "\x1b[K"
	ansiEraseDown = "\x1b[J"
)

// watchLive draws the live view on every change and every
// watchRedrawInterval, until the rollout is over.
func (r *runner) watchLive(f *rolloutFollower) error {
	type result struct {
		u   rolloutUpdate
		err error
	}
	var (
		st     *relv1.RolloutStatus
		events []*relv1.RolloutEvent
		drawn  bool
	)
	draw := func() error {
		width, height := watchTermSize(r.stdout)
		p := r.printer()
		frame := liveFrame(p, st, events, width, height)
		var b strings.Builder
		if !drawn {
			b.WriteString(ansiClear)
		}
		b.WriteString(ansiHome)
		for line := range strings.Lines(frame) {
			b.WriteString(strings.TrimSuffix(line, "\n") + ansiEraseLine + "\n")
		}
		b.WriteString(ansiEraseDown)
		drawn = true
		_, err := io.WriteString(r.stdout, b.String())
		return err
	}
	ticker := time.NewTicker(watchRedrawInterval)
	defer ticker.Stop()
	results := make(chan result, 1)
	for {
		// One request at a time, and none left running on return: the
		// loop below only ends once it has the answer.
		go func() {
			u, err := f.next()
			results <- result{u, err}
		}()
	wait:
		for {
			select {
			case res := <-results:
				if res.err != nil {
					return res.err
				}
				st = res.u.status
				events = lastEvents(append(events, res.u.events...), liveEvents)
				if err := draw(); err != nil {
					return err
				}
				if ro := st.GetRollout(); isTerminalRolloutState(ro.GetState()) {
					return rolloutOutcome(ro)
				}
				break wait
			case <-ticker.C:
				if st != nil {
					if err := draw(); err != nil {
						<-results // leave no request running
						return err
					}
				}
			}
		}
	}
}

// progressBarWidth is the number of cells of a wave's progress bar.
const progressBarWidth = 20

// liveFrame renders the live view of a rollout: the header with the time
// in the current step, one progress bar per wave, the hosts grouped by
// phase and the latest events. A width or height above 0 cuts the lines
// and the frame to the terminal.
func liveFrame(p printer, st *relv1.RolloutStatus, events []*relv1.RolloutEvent, width, height int) string {
	ro := st.GetRollout()
	base := waveBase(ro)
	var lines []string
	title := "Rollout " + ro.GetId()
	if ro.GetKind() == kindRollback {
		title = "Rollback " + ro.GetId() + " of " + ro.GetRollbackOf()
	}
	lines = append(lines, fmt.Sprintf("%s: %s@%s to %s, %s", title, ro.GetApp(), ro.GetVersion(),
		ro.GetEnvironment(), ro.GetState()))
	wave, activity := p.step(ro, events)
	if wave != "" {
		wave = "wave " + wave
	}
	if s := joinNonEmpty(", ", wave, activity); s != "" {
		lines = append(lines, s)
	}
	if ro.GetReason() != "" {
		lines = append(lines, "reason: "+ro.GetReason())
	}
	lines = append(lines, specSummary(ro.GetSpec()))

	// One bar per wave, from the engine's host states.
	type counts struct{ total, healthy, failed, skipped int }
	var waves []counts
	for _, h := range ro.GetHosts() {
		w := int(h.GetWave())
		for len(waves) <= w {
			waves = append(waves, counts{})
		}
		c := &waves[w]
		c.total++
		switch h.GetState() {
		case "healthy":
			c.healthy++
		case "failed":
			c.failed++
		case "skipped":
			c.skipped++
		}
	}
	if len(waves) > 0 {
		lines = append(lines, "")
	}
	for i, c := range waves {
		if c.total == 0 {
			continue
		}
		line := fmt.Sprintf("wave %s [%s] %d/%d healthy", waveName(base, uint32(i)),
			progressBar(c.healthy, c.failed+c.skipped, c.total), c.healthy, c.total)
		if c.failed > 0 {
			line += fmt.Sprintf(", %d failed", c.failed)
		}
		if c.skipped > 0 {
			line += fmt.Sprintf(", %d skipped", c.skipped)
		}
		lines = append(lines, line)
	}

	// The hosts by the agents' phases, in phaseOrder.
	byPhase := map[string][]string{}
	engine := rolloutHosts(ro)
	for _, h := range st.GetHosts() {
		phase := h.GetPhase()
		if phase == "" {
			phase = engine[h.GetAgentId()].GetPhase()
		}
		if phase == "" {
			phase = "pending"
		}
		byPhase[phase] = append(byPhase[phase], h.GetAgentId())
	}
	phases := slices.Sorted(maps.Keys(byPhase))
	slices.SortStableFunc(phases, func(a, b string) int { return phaseRank(a) - phaseRank(b) })
	if len(phases) > 0 {
		lines = append(lines, "")
		var b strings.Builder
		_ = (printer{w: &b, format: formatTable}).aligned(2, func(tw io.Writer) {
			for _, ph := range phases {
				fmt.Fprintf(tw, "%s\t%d\t%s\n", cell(ph), len(byPhase[ph]), cell(strings.Join(byPhase[ph], " ")))
			}
		})
		lines = append(lines, strings.Split(strings.TrimSuffix(b.String(), "\n"), "\n")...)
	}

	if len(events) > 0 {
		lines = append(lines, "", "Latest events:")
		for _, e := range events {
			lines = append(lines, eventLine(base, e))
		}
	}

	if height > 0 && len(lines) > height-1 {
		lines = lines[:height-1]
	}
	var out strings.Builder
	for _, l := range lines {
		l = cell(l)
		if width > 0 && utf8.RuneCountInString(l) > width-1 {
			l = string([]rune(l)[:width-1])
		}
		out.WriteString(l + "\n")
	}
	return out.String()
}

// progressBar draws done (#) and failed (x) hosts out of total in
// progressBarWidth cells, the rest as -.
func progressBar(done, failed, total int) string {
	if total <= 0 {
		return strings.Repeat("-", progressBarWidth)
	}
	d := done * progressBarWidth / total
	f := (done + failed) * progressBarWidth / total
	return strings.Repeat("#", d) + strings.Repeat("x", f-d) + strings.Repeat("-", progressBarWidth-f)
}
