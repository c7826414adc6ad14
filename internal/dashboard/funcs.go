package dashboard

import (
	"fmt"
	"html/template"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/relhq/rel/internal/rollout"
	relv1 "github.com/relhq/rel/proto/rel/v1"
)

// funcs are the templates' helpers: formatting only, no reads.
var funcs = template.FuncMap{
	"time":     fmtTime,
	"ago":      ago,
	"tone":     tone,
	"labels":   fmtLabels,
	"bytes":    fmtBytes,
	"pct":      func(f float64) string { return fmt.Sprintf("%.0f%%", f) },
	"width":    func(f float64) template.CSS { return template.CSS(fmt.Sprintf("width:%.3f%%", f)) },
	"waveLbl":  func(r *relv1.Rollout, i uint32) string { return rollout.WaveLabel(r, i) },
	"terminal": rollout.Terminal,
	"actor":    fmtActor,
	"healthy":  func(c *relv1.EnvAppStatus) bool { return c.GetHosts() > 0 && c.GetOnCurrent() == c.GetHosts() },
	"progress": progress,
	"short":    func(s string, n int) string { return shorten(s, n) },
	"join":     strings.Join,
	// here: the navigation link of the page at path (a rollout's page is
	// under Rollouts).
	"here": func(href, path string) bool {
		return href == path || href != Prefix && strings.HasPrefix(path, href+"/")
	},
	// rolloutStates are the rollouts page's state filter's choices.
	"rolloutStates": func() []string { return append([]string{"active"}, rollout.States...) },
}

func fmtTime(unixNano int64) string {
	if unixNano == 0 {
		return "—"
	}
	return time.Unix(0, unixNano).UTC().Format("2006-01-02 15:04:05 UTC")
}

// ago is a short relative time for tables; the title shows the full one.
func ago(unixNano int64) string {
	if unixNano == 0 {
		return "—"
	}
	d := time.Since(time.Unix(0, unixNano))
	switch {
	case d < 0:
		return "now"
	case d < time.Minute:
		return fmt.Sprintf("%ds ago", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm ago", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh ago", int(d.Hours()))
	}
	return fmt.Sprintf("%dd ago", int(d.Hours()/24))
}

// tone is the colour class of a state word: rollout states, host states,
// agent phases, audit results.
func tone(state string) string {
	switch state {
	case rollout.StateSucceeded, rollout.HostHealthy, "applied", "connected", "up",
		rollout.EventHostHealthy, rollout.EventWaveDone, rollout.EventApproved, rollout.EventResumed:
		return "ok"
	case rollout.StateFailed, rollout.StateRolledBack, "refused", "down", "offline",
		rollout.EventHostFailed, rollout.EventHostAway, rollout.EventDeadlineExceeded, rollout.EventRollbackStarted:
		return "bad"
	case rollout.StateAborted, rollout.HostSkipped:
		return "muted"
	case rollout.StatePaused, rollout.StateWaitingApproval, rollout.StateAwaitingApproval, rollout.StateFrozen, rollout.StateQueued:
		return "wait"
	case rollout.StateRunning, rollout.StateRollingBack, rollout.HostDispatched,
		rollout.EventStarted, rollout.EventWaveStarted, rollout.EventBaking,
		"downloading", "installing", "starting", "verifying":
		return "run"
	}
	return "muted"
}

func fmtLabels(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for _, k := range slices.Sorted(maps.Keys(m)) {
		out = append(out, k+"="+m[k])
	}
	return out
}

func fmtBytes(n uint64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := uint64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

func fmtActor(a *relv1.Actor) string {
	if a == nil || (a.GetId() == "" && a.GetKind() == "") {
		return "—"
	}
	s := a.GetKind() + " " + a.GetId()
	if a.GetName() != "" {
		s += " (" + a.GetName() + ")"
	}
	return strings.TrimSpace(s)
}

// progress is the share of a rollout's hosts that are done (healthy,
// failed or skipped), in percent.
func progress(st *relv1.RolloutStatus) float64 {
	hosts := st.GetRollout().GetHosts()
	if len(hosts) == 0 {
		if t := st.GetTotals(); len(t) > 0 {
			var all, done uint32
			for k, n := range t {
				all += n
				if k == rollout.HostHealthy || k == rollout.HostFailed || k == rollout.HostSkipped {
					done += n
				}
			}
			if all > 0 {
				return 100 * float64(done) / float64(all)
			}
		}
		return 0
	}
	done := 0
	for _, h := range hosts {
		switch h.GetState() {
		case rollout.HostHealthy, rollout.HostFailed, rollout.HostSkipped:
			done++
		}
	}
	return 100 * float64(done) / float64(len(hosts))
}

func shorten(s string, n int) string {
	if r := []rune(s); len(r) > n {
		return string(r[:n-1]) + "…"
	}
	return s
}
