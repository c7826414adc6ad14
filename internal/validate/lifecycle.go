package validate

import (
	"strings"

	relv1 "github.com/relhq/rel/proto/rel/v1"
)

// Limits of a lifecycle.
const (
	MaxPhases            = 32
	MaxPhaseEnvironments = 64
)

// Lifecycle checks a lifecycle's shape: its name, at least one phase,
// phase names unique, every phase with environments, no environment in two
// phases, a known progress word with min N between 1 and the phase's size,
// auto-deploy environments of their own phase. Whether the environments
// exist is the state's to say.
func Lifecycle(lc *relv1.Lifecycle) error {
	if lc == nil {
		return invalid("no lifecycle given")
	}
	if err := first(Name("lifecycle name", lc.GetName()), Description(lc.GetDescription())); err != nil {
		return err
	}
	ps := lc.GetPhases()
	if len(ps) == 0 {
		return invalid("lifecycle %s has no phases: give at least one, e.g. --phase dev=dev --phase prod=prod", lc.GetName())
	}
	if len(ps) > MaxPhases {
		return invalid("lifecycle %s has %d phases: the limit is %d", lc.GetName(), len(ps), MaxPhases)
	}
	phaseOf := map[string]string{}
	names := map[string]bool{}
	for _, p := range ps {
		if err := Name("phase name", p.GetName()); err != nil {
			return err
		}
		if names[p.GetName()] {
			return invalid("phase %s appears twice in lifecycle %s: give every phase its own name", p.GetName(), lc.GetName())
		}
		names[p.GetName()] = true
		envs := p.GetEnvironments()
		if len(envs) == 0 {
			return invalid("phase %s has no environments: list at least one (--phase %s=ENV[,ENV...])", p.GetName(), p.GetName())
		}
		if len(envs) > MaxPhaseEnvironments {
			return invalid("phase %s has %d environments: the limit is %d", p.GetName(), len(envs), MaxPhaseEnvironments)
		}
		in := map[string]bool{}
		for _, e := range envs {
			if err := Name("environment name", e); err != nil {
				return err
			}
			if other, ok := phaseOf[e]; ok {
				if other == p.GetName() {
					return invalid("environment %s is listed twice in phase %s", e, p.GetName())
				}
				return invalid("environment %s is in two phases, %s and %s: an environment belongs to one phase of a lifecycle", e, other, p.GetName())
			}
			phaseOf[e] = p.GetName()
			in[e] = true
		}
		switch p.GetProgress() {
		case "all", "optional":
			if p.GetMinEnvironments() != 0 {
				return invalid("phase %s: min=%d goes with progress min, not %s", p.GetName(), p.GetMinEnvironments(), p.GetProgress())
			}
		case "min":
			if n := p.GetMinEnvironments(); n < 1 || int(n) > len(envs) {
				return invalid("phase %s needs min %d of its %d environments (%s): use 1 to %d", p.GetName(), n, len(envs), strings.Join(envs, ", "), len(envs))
			}
		default:
			return invalid("phase %s: progress %q: use all, min (with min=N) or optional", p.GetName(), p.GetProgress())
		}
		for _, a := range p.GetAutoDeploy() {
			if !in[a] {
				return invalid("phase %s auto-deploys to %s, which is not one of its environments (%s)", p.GetName(), a, strings.Join(envs, ", "))
			}
		}
	}
	return nil
}
