// Package lifecycle decides where a release may go: the ordered phases of
// an app's lifecycle and the environments its artifact digest has
// succeeded in. It is pure (no store, no clock): the FSM uses it to decide
// a deploy rollout in raft order, the accepting server for an early
// answer, release status to explain it and the leader's auto-deploy loop
// to find what entered a phase.
package lifecycle

import (
	"fmt"
	"strings"

	relv1 "github.com/relhq/rel/proto/rel/v1"
)

// Progress words of a phase: what an earlier phase needs before a release
// may go past it.
const (
	// ProgressAll: every environment of the phase.
	ProgressAll = "all"
	// ProgressMin: Phase.min_environments of them.
	ProgressMin = "min"
	// ProgressOptional: nothing; later phases do not wait for it.
	ProgressOptional = "optional"
)

// Need is how many environments of p must hold a succeeded rollout for p
// to be done (0 for an optional phase).
func Need(p *relv1.Phase) int {
	switch p.GetProgress() {
	case ProgressOptional:
		return 0
	case ProgressMin:
		return int(p.GetMinEnvironments())
	default:
		return len(p.GetEnvironments())
	}
}

// PhaseOf is the index of the phase holding env, or -1.
func PhaseOf(lc *relv1.Lifecycle, env string) int {
	for i, p := range lc.GetPhases() {
		for _, e := range p.GetEnvironments() {
			if e == env {
				return i
			}
		}
	}
	return -1
}

// Done says whether the phase's progress is met, given the environments
// where the digest has a succeeded, not rolled back rollout; missing are
// the phase's environments without one.
func Done(p *relv1.Phase, promoted map[string]bool) (done bool, missing []string) {
	have := 0
	for _, e := range p.GetEnvironments() {
		if promoted[e] {
			have++
		} else {
			missing = append(missing, e)
		}
	}
	return have >= Need(p), missing
}

// Verdict is the gate's answer for one environment.
type Verdict struct {
	// Allowed: the deploy may go.
	Allowed bool
	// Phase is the index of the environment's phase, -1 when it is in
	// none (refused).
	Phase int
	// Missing is the first earlier phase that is not done, with the
	// environments that lack a succeeded rollout.
	Missing     *relv1.Phase
	MissingEnvs []string
}

// Gate decides whether a deploy rollout of a digest into env is allowed:
// every phase before env's that is not optional must be done. An
// environment in no phase of the lifecycle is refused.
func Gate(lc *relv1.Lifecycle, env string, promoted map[string]bool) Verdict {
	k := PhaseOf(lc, env)
	if k < 0 {
		return Verdict{Phase: -1}
	}
	for _, p := range lc.GetPhases()[:k] {
		if done, missing := Done(p, promoted); !done {
			return Verdict{Phase: k, Missing: p, MissingEnvs: missing}
		}
	}
	return Verdict{Allowed: true, Phase: k}
}

// Entered is the index of the last phase a digest has entered: every
// phase before it is done (phase 0 is always entered).
func Entered(lc *relv1.Lifecycle, promoted map[string]bool) int {
	ps := lc.GetPhases()
	for i := 0; i < len(ps)-1; i++ {
		if done, _ := Done(ps[i], promoted); !done {
			return i
		}
	}
	return max(len(ps)-1, 0)
}

// ShortDigest is how messages name a digest: sha256: and 12 hex digits.
func ShortDigest(d string) string {
	if len(d) > 12 {
		return "sha256:" + d[:12] + "…"
	}
	return "sha256:" + d
}

// Reason explains a refusal, for people: "web@1.2.0 cannot go to prod:
// phase staging is not done: no succeeded rollout of sha256:abcd… to
// staging-eu, staging-us (need 1 of 2)".
func (v Verdict) Reason(lc *relv1.Lifecycle, app, version, digest, env string) string {
	head := fmt.Sprintf("%s@%s cannot go to %s", app, version, env)
	if v.Phase < 0 {
		var names []string
		for _, p := range lc.GetPhases() {
			names = append(names, p.GetName()+" ("+strings.Join(p.GetEnvironments(), ", ")+")")
		}
		return fmt.Sprintf("%s: environment %s is in no phase of lifecycle %s (%s): add it to a phase with 'relctl lifecycle update %s', or deploy to an environment of a phase",
			head, env, lc.GetName(), strings.Join(names, " → "), lc.GetName())
	}
	if v.Allowed {
		return ""
	}
	p := v.Missing
	return fmt.Sprintf("%s: phase %s is not done: no succeeded rollout of %s to %s (need %d of %d): promote it there first ('relctl release promote %s@%s --to ENV')",
		head, p.GetName(), ShortDigest(digest), strings.Join(v.MissingEnvs, ", "), Need(p), len(p.GetEnvironments()), app, version)
}
