// Package freeze decides freeze windows (change control): whether an app
// in an environment is frozen at a time, until when and by which window,
// and when the next freeze starts. Every function is pure: the time is an
// input, so the FSM (deciding at a command's stamped time), the leader's
// engine and the servers answering relctl reach the same verdict.
//
// A window is absolute ([start, end)) or recurring: a cron expression for
// each start and one for each end, read in an IANA time zone. A recurring
// window is in force at T when the next end after T comes before the next
// start after T: T lies between a start and the end that follows it.
package freeze

import (
	"errors"
	"fmt"
	"path"
	"sort"
	"strings"
	"time"
	// Every binary that decides freezes carries the time zone database,
	// so a scratch image knows Europe/Berlin as well as any host.
	_ "time/tzdata"

	"github.com/robfig/cron/v3"

	"github.com/relhq/rel/internal/rollout"
	relv1 "github.com/relhq/rel/proto/rel/v1"
)

// MaxLength is the longest a freeze (one occurrence of a recurring one)
// may last.
const MaxLength = 366 * 24 * time.Hour

// ErrInvalid is a window that cannot be stored; the error's text names the
// field and what to do.
var ErrInvalid = errors.New("invalid freeze window")

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, args...))
}

// Reason strips ErrInvalid's prefix from an error of this package.
func Reason(err error) string {
	msg := err.Error()
	if p := ErrInvalid.Error() + ": "; strings.HasPrefix(msg, p) {
		return msg[len(p):]
	}
	return msg
}

// The five standard fields only: no seconds, no @every (a delay from
// whenever it is asked, which names no fixed time), no TZ= prefix (the
// window has a time_zone field of its own).
var parser = cron.NewParser(cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow)

// Location loads a window's time zone: UTC when empty.
func Location(tz string) (*time.Location, error) {
	if tz == "" {
		return time.UTC, nil
	}
	loc, err := time.LoadLocation(tz)
	if err != nil || tz == "Local" {
		return nil, invalid("time zone %q is not an IANA time zone name: use one like Europe/Berlin, America/New_York or UTC", tz)
	}
	return loc, nil
}

func parseCron(field, expr string, loc *time.Location) (*cron.SpecSchedule, error) {
	if strings.Contains(expr, "TZ=") || strings.HasPrefix(strings.TrimSpace(expr), "@") {
		return nil, invalid("%s %q: give five fields (minute hour day-of-month month day-of-week, e.g. \"0 18 * * FRI\") and the time zone in --tz", field, expr)
	}
	s, err := parser.Parse(expr)
	if err != nil {
		return nil, invalid("%s %q is not a cron expression (%v): give five fields, minute hour day-of-month month day-of-week, e.g. \"0 18 * * FRI\"", field, expr, err)
	}
	spec := s.(*cron.SpecSchedule)
	spec.Location = loc
	return spec, nil
}

// compiled is a window ready to evaluate.
type compiled struct {
	w          *relv1.FreezeWindow
	loc        *time.Location
	start, end *cron.SpecSchedule
}

func compile(w *relv1.FreezeWindow) (*compiled, error) {
	loc, err := Location(w.GetTimeZone())
	if err != nil {
		return nil, err
	}
	c := &compiled{w: w, loc: loc}
	if w.GetCronStart() == "" && w.GetCronEnd() == "" {
		return c, nil
	}
	if c.start, err = parseCron("cron start", w.GetCronStart(), loc); err != nil {
		return nil, err
	}
	if c.end, err = parseCron("cron end", w.GetCronEnd(), loc); err != nil {
		return nil, err
	}
	return c, nil
}

// Validate checks a window before it is stored, at time now: a name, a
// scope (apps and environments, each a valid glob), either absolute times
// (end after start, not yet over) or both cron expressions (and no
// absolute times), a known time zone, and at most MaxLength long.
func Validate(w *relv1.FreezeWindow, now time.Time) error {
	if w.GetName() == "" {
		return invalid("name is empty: name the window, e.g. black-friday")
	}
	if len(w.GetApps()) == 0 {
		return invalid("apps is empty: give the apps it freezes (--apps 'web*', or --apps '*' for every app)")
	}
	if len(w.GetEnvironments()) == 0 {
		return invalid("environments is empty: give the environments it freezes (--env prod, or a glob)")
	}
	for _, g := range w.GetApps() {
		if _, err := path.Match(g, ""); err != nil || g == "" {
			return invalid("apps: %q is not a glob: use names and *, ?, [...]", g)
		}
	}
	for _, g := range w.GetEnvironments() {
		if _, err := path.Match(g, ""); err != nil || g == "" {
			return invalid("environments: %q is not a glob: use names and *, ?, [...]", g)
		}
	}
	absolute := w.GetStartUnixNano() != 0 || w.GetEndUnixNano() != 0
	recurring := w.GetCronStart() != "" || w.GetCronEnd() != ""
	switch {
	case absolute && recurring:
		return invalid("give either start and end (absolute) or cron start and cron end (recurring), not both")
	case !absolute && !recurring:
		return invalid("no time given: give start and end (--start, --end, RFC 3339) or cron start and cron end (--cron-start, --cron-end, --tz)")
	}
	c, err := compile(w)
	if err != nil {
		return err
	}
	if absolute {
		start, end := time.Unix(0, w.GetStartUnixNano()), time.Unix(0, w.GetEndUnixNano())
		switch {
		case w.GetStartUnixNano() == 0:
			return invalid("start is missing: an absolute window needs both start and end")
		case w.GetEndUnixNano() == 0:
			return invalid("end is missing: an absolute window needs both start and end")
		case !end.After(start):
			return invalid("end %s is not after start %s", end.UTC().Format(time.RFC3339), start.UTC().Format(time.RFC3339))
		case end.Sub(start) > MaxLength:
			return invalid("the window lasts %s, longer than a year: freeze at most a year at a time", days(end.Sub(start)))
		case !end.After(now):
			return invalid("end %s is in the past: the window would never be in force", end.UTC().Format(time.RFC3339))
		}
		return nil
	}
	if w.GetCronStart() == "" || w.GetCronEnd() == "" {
		return invalid("a recurring window needs both cron start and cron end")
	}
	s := c.start.Next(now)
	if s.IsZero() {
		return invalid("cron start %q never comes within five years", w.GetCronStart())
	}
	e := c.end.Next(s)
	if e.IsZero() {
		return invalid("cron end %q never comes after a start within five years", w.GetCronEnd())
	}
	if e.Sub(s) > MaxLength {
		return invalid("each freeze would last %s (from %s to %s), longer than a year: freeze at most a year at a time", days(e.Sub(s)), s.Format(time.RFC3339), e.Format(time.RFC3339))
	}
	return nil
}

// days says a long duration for people: "395 days".
func days(d time.Duration) string {
	return fmt.Sprintf("%.0f days", d.Hours()/24)
}

// Covers reports whether a window's scope includes app in env. App "" asks
// about the environment as a whole: only windows for every app ("*")
// cover it.
func Covers(w *relv1.FreezeWindow, app, env string) bool {
	if !matchAny(w.GetEnvironments(), env) {
		return false
	}
	if app == "" {
		return slicesContains(w.GetApps(), "*")
	}
	return matchAny(w.GetApps(), app)
}

func slicesContains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

func matchAny(globs []string, name string) bool {
	for _, g := range globs {
		if ok, err := path.Match(g, name); err == nil && ok {
			return true
		}
	}
	return false
}

// occurrence returns the span of w that holds at, or (when none does) the
// next one to start after at; zero times when there is none.
func (c *compiled) occurrence(at time.Time) (in bool, start, end time.Time) {
	if c.start == nil {
		s, e := time.Unix(0, c.w.GetStartUnixNano()), time.Unix(0, c.w.GetEndUnixNano())
		switch {
		case !at.Before(s) && at.Before(e):
			return true, s, e
		case at.Before(s):
			return false, s, e
		}
		return false, time.Time{}, time.Time{}
	}
	ns, ne := c.start.Next(at), c.end.Next(at)
	if ne.IsZero() {
		return false, time.Time{}, time.Time{}
	}
	if ns.IsZero() || ne.Before(ns) {
		return true, time.Time{}, ne
	}
	return false, ns, c.end.Next(ns)
}

// Verdict answers "is it frozen at At".
type Verdict struct {
	// Frozen: a window covers it at At; Until is when none does any more
	// (overlapping and back-to-back windows together), Window the one in
	// force at At (the one ending last when several are).
	Frozen bool
	Until  time.Time
	Window *relv1.FreezeWindow
	// Not frozen: the next window to start (nil when none is ahead), its
	// start and end.
	Next               *relv1.FreezeWindow
	NextStart, NextEnd time.Time
}

// maxChain bounds how many back-to-back windows Evaluate follows to find
// when a freeze really ends.
const maxChain = 64

// Evaluate decides whether app in env is frozen at at under windows.
// Windows that do not compile (none are stored so) are ignored.
func Evaluate(windows []*relv1.FreezeWindow, app, env string, at time.Time) Verdict {
	var cs []*compiled
	for _, w := range windows {
		if !Covers(w, app, env) {
			continue
		}
		if c, err := compile(w); err == nil {
			cs = append(cs, c)
		}
	}
	sort.Slice(cs, func(i, j int) bool { return cs[i].w.GetName() < cs[j].w.GetName() })
	var v Verdict
	for _, c := range cs {
		in, s, e := c.occurrence(at)
		if in {
			if !v.Frozen || e.After(v.Until) {
				v.Frozen, v.Until, v.Window = true, e, c.w
			}
			continue
		}
		if !s.IsZero() && (v.Next == nil || s.Before(v.NextStart)) {
			v.Next, v.NextStart, v.NextEnd = c.w, s, e
		}
	}
	if !v.Frozen {
		return v
	}
	v.Next, v.NextStart, v.NextEnd = nil, time.Time{}, time.Time{}
	// A window starting at (or before) the moment another ends keeps it
	// frozen: follow the chain.
	for i := 0; i < maxChain; i++ {
		moved := false
		for _, c := range cs {
			if in, _, e := c.occurrence(v.Until); in && e.After(v.Until) {
				v.Until, moved = e, true
			}
		}
		if !moved {
			break
		}
	}
	return v
}

// Applies reports whether freezes hold a rollout at all: deploys only;
// rollbacks and catch-ups are always allowed, and an emergency change
// overrides a freeze (recorded in freeze_overridden).
func Applies(ro *relv1.Rollout) bool {
	return ro.GetKind() == rollout.KindDeploy && ro.GetChangeType() != rollout.ChangeEmergency
}

// ForRollout evaluates the freeze over a rollout's app and environment
// at at, whatever its kind (see Applies).
func ForRollout(windows []*relv1.FreezeWindow, ro *relv1.Rollout, at time.Time) Verdict {
	return Evaluate(windows, ro.GetApp(), ro.GetEnvironment(), at)
}

// Location of a window for showing its times: its time zone, or UTC.
func displayLoc(w *relv1.FreezeWindow) *time.Location {
	if loc, err := Location(w.GetTimeZone()); err == nil {
		return loc
	}
	return time.UTC
}

// FormatTime shows a time the way freeze messages do, in the window's
// time zone: "Mon 30 Nov 08:00 Europe/Berlin".
func FormatTime(w *relv1.FreezeWindow, t time.Time) string {
	loc := displayLoc(w)
	name := loc.String()
	if w.GetTimeZone() == "" {
		name = "UTC"
	}
	layout := "Mon 2 Jan 15:04"
	if t.Second() != 0 {
		layout += ":05" // a short window's end, to the second
	}
	return t.In(loc).Format(layout) + " " + name
}

// Hold is the reason a held rollout shows: "freeze black-friday until Mon
// 30 Nov 08:00 Europe/Berlin (release freeze for Black Friday)".
func Hold(v Verdict) string {
	msg := "freeze " + v.Window.GetName() + " until " + FormatTime(v.Window, v.Until)
	if r := v.Window.GetReason(); r != "" {
		msg += " (" + r + ")"
	}
	return msg
}

// Describe says a verdict in plain words for env (and app, when given).
func Describe(v Verdict, app, env string) string {
	subject := env
	if app != "" {
		subject = app + " in " + env
	}
	if v.Frozen {
		msg := subject + " is frozen until " + FormatTime(v.Window, v.Until)
		if r := v.Window.GetReason(); r != "" {
			msg += ": " + r
		}
		return msg + " (window " + v.Window.GetName() + ")"
	}
	if v.Next == nil {
		return subject + " is not frozen, and no freeze is ahead"
	}
	msg := subject + " is not frozen; the next freeze starts " + FormatTime(v.Next, v.NextStart)
	what := v.Next.GetName()
	if r := v.Next.GetReason(); r != "" {
		what = r
	}
	return msg + " (" + what + ")"
}
