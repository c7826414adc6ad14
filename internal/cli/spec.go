package cli

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	relv1 "github.com/relhq/rel/proto/rel/v1"
)

// Rollout strategies. relctl knows them for completion, help and the
// strategy-dependent defaults; the server is the authority on which exist.
const (
	strategyAllAtOnce = "all-at-once"
	strategyRolling   = "rolling"
	strategyCanary    = "canary"
)

var rolloutStrategies = []string{strategyAllAtOnce, strategyRolling, strategyCanary}

const (
	defaultCanary           = 1
	defaultProgressDeadline = 10 * time.Minute
)

// specHelp describes the staged-rollout flags; "rollout start" and "rollout
// plan" share it.
const specHelp = `Strategies (--strategy, default all-at-once):
  all-at-once  one wave: every host at once.
  rolling      one wave through every host, --max-parallel at a time
               (default 1); with --waves, those waves.
  canary       wave 0 is the canary (--canary, default 1 host), then the
               --waves (default 100%).

--waves is a comma list of cumulative targets, each a number of hosts (N)
or a percentage of the rollout's hosts (P%, rounded up), strictly
increasing: 10%,50%,100% or 1,5,20. --wave-by LABEL instead makes one wave
per distinct value of the hosts' LABEL label, in sorted value order; it
cannot be combined with --waves.

Inside a wave at most --max-parallel hosts change at once (0: no limit;
default 0, or 1 for rolling). Once every host of a wave is healthy the wave
bakes for --bake (default 0s) and, with --approve-waves, waits for "relctl
rollout approve" before the next wave starts. More than --max-failures
failed hosts (N or P%, default 0) over the whole rollout, or no progress for
--progress-deadline (default 10m), fails the rollout; with --auto-rollback a
failed rollout then rolls back by itself.

relctl checks only the syntax of these values (a usage error, exit 2); the
server validates the spec against the environment's hosts.`

// specExamples holds one example per strategy, for "rollout start" and
// "rollout plan" (cmd is "start" or "plan").
func specExamples(cmd string) string {
	return fmt.Sprintf(`  relctl rollout %[1]s web@1.2.3 --env prod
  relctl rollout %[1]s web@1.2.3 --env prod --strategy rolling --max-parallel 2 --bake 1m
  relctl rollout %[1]s web@1.2.3 --env prod --strategy canary --canary 5%% --waves 50%%,100%% --bake 10m --auto-rollback
  relctl rollout %[1]s web@1.2.3 --env prod --strategy rolling --wave-by zone --approve-waves`, cmd)
}

// specFlags are the raw values of the flags that make a RolloutSpec.
// Quantities are strings so that relctl, not pflag, words the errors.
type specFlags struct {
	strategy    string
	canary      string
	waves       string
	waveBy      string
	maxParallel string
	maxFailures string
	bake        time.Duration
	deadline    time.Duration
	approve     bool
	autoRB      bool
}

func (f *specFlags) register(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.StringVar(&f.strategy, "strategy", strategyAllAtOnce, "rollout `STRATEGY`: all-at-once, rolling or canary")
	fl.StringVar(&f.canary, "canary", "", "canary wave size, `N|P%` of the hosts (default 1 with --strategy canary)")
	fl.StringVar(&f.waves, "waves", "", "cumulative wave targets, a comma `LIST` of N or P% (e.g. 10%,50%,100%; default 100%)")
	fl.StringVar(&f.waveBy, "wave-by", "", "one wave per distinct value of host label `LABEL`, sorted by value; not with --waves")
	fl.StringVar(&f.maxParallel, "max-parallel", "", "hosts changing at once inside a wave, `N`; 0 means no limit (default 0, or 1 with --strategy rolling)")
	fl.DurationVar(&f.bake, "bake", 0, "how long a healthy wave waits before the next starts (default 0s)")
	fl.BoolVar(&f.approve, "approve-waves", false, `after each wave, wait for "relctl rollout approve ID"`)
	fl.StringVar(&f.maxFailures, "max-failures", "", "failed hosts tolerated over the whole rollout, `N|P%` (default 0)")
	fl.DurationVar(&f.deadline, "progress-deadline", defaultProgressDeadline, "fail the rollout when no host makes progress for this long")
	fl.BoolVar(&f.autoRB, "auto-rollback", false, "roll back by itself if the rollout fails")
	_ = cmd.RegisterFlagCompletionFunc("strategy", cobra.FixedCompletions(rolloutStrategies, cobra.ShellCompDirectiveNoFileComp))
	for _, name := range []string{"canary", "waves", "wave-by", "max-parallel", "bake", "max-failures", "progress-deadline"} {
		_ = cmd.RegisterFlagCompletionFunc(name, cobra.NoFileCompletions)
	}
}

// spec builds the RolloutSpec the flags describe, checking the syntax of
// each value. Defaults that depend on the strategy are left to the server
// (max_parallel 0, no waves), except the canary's size, which relctl fills
// in; the progress deadline is always sent.
func (f *specFlags) spec(cmd *cobra.Command) (*relv1.RolloutSpec, error) {
	fl := cmd.Flags()
	s := &relv1.RolloutSpec{Strategy: f.strategy, WaveBy: f.waveBy, ApproveWaves: f.approve, AutoRollback: f.autoRB}
	var err error
	if fl.Changed("canary") {
		if s.Canary, err = parseQuantity("--canary", f.canary, 1); err != nil {
			return nil, err
		}
	} else if f.strategy == strategyCanary {
		s.Canary = &relv1.Quantity{Count: defaultCanary}
	}
	if fl.Changed("waves") {
		if fl.Changed("wave-by") {
			return nil, usagef("--waves and --wave-by cannot be combined: --wave-by makes one wave per label value")
		}
		if s.Waves, err = parseWaves("--waves", f.waves); err != nil {
			return nil, err
		}
	}
	if fl.Changed("wave-by") && strings.TrimSpace(f.waveBy) == "" {
		return nil, usagef("--wave-by: empty label name")
	}
	if fl.Changed("max-parallel") {
		n, err := parseCount("--max-parallel", f.maxParallel)
		if err != nil {
			return nil, err
		}
		s.MaxParallel = n
	}
	if fl.Changed("max-failures") {
		if s.MaxFailures, err = parseQuantity("--max-failures", f.maxFailures, 0); err != nil {
			return nil, err
		}
	}
	if f.bake < 0 {
		return nil, usagef("--bake %s: must not be negative", f.bake)
	}
	if f.deadline < 0 {
		return nil, usagef("--progress-deadline %s: must not be negative", f.deadline)
	}
	s.BakeMs, s.ProgressDeadlineMs = f.bake.Milliseconds(), f.deadline.Milliseconds()
	return s, nil
}

const quantitySyntax = "want N or P%"

// parseCount parses a whole number of hosts.
func parseCount(flag, v string) (uint32, error) {
	if v == "" {
		return 0, usagef("%s: empty value (want a number)", flag)
	}
	n, err := strconv.ParseUint(v, 10, 32)
	if err != nil {
		return 0, usagef("%s %s: %s", flag, v, numberProblem(v, "want a number"))
	}
	return uint32(n), nil
}

// numberProblem says why v, which strconv.ParseUint refused, is not a
// number of hosts; want is the syntax hint for what is not a number at all.
func numberProblem(v, want string) string {
	if rest, ok := strings.CutPrefix(v, "-"); ok {
		if _, err := strconv.ParseFloat(rest, 64); err == nil {
			return "negative"
		}
	}
	if _, err := strconv.ParseUint(v, 10, 64); err == nil {
		return "too large"
	}
	if _, err := strconv.ParseFloat(v, 64); err == nil && !strings.ContainsAny(v, "xXpP_") {
		return "not a whole number"
	}
	return "not a number (" + want + ")"
}

// parseQuantity parses N (a number of hosts, at least minCount) or P% (a
// percentage, 1-100) into a Quantity.
func parseQuantity(flag, v string, minCount uint32) (*relv1.Quantity, error) {
	q, problem := quantity(v, minCount)
	if problem != "" {
		if v == "" {
			return nil, usagef("%s: %s", flag, problem)
		}
		return nil, usagef("%s %s: %s", flag, v, problem)
	}
	return q, nil
}

// quantity is parseQuantity without the flag: it returns the problem with v
// instead of an error, so that list items can be described in context.
func quantity(v string, minCount uint32) (*relv1.Quantity, string) {
	if v == "" {
		return nil, "empty value (" + quantitySyntax + ")"
	}
	if num, ok := strings.CutSuffix(v, "%"); ok {
		p, err := strconv.ParseUint(num, 10, 32)
		switch {
		case err != nil && num != "" && numberProblem(num, quantitySyntax) == "too large":
			return nil, "percent over 100"
		case err != nil:
			return nil, numberProblem(num, quantitySyntax)
		case p == 0:
			return nil, "percent must be 1-100, not 0"
		case p > 100:
			return nil, "percent over 100"
		}
		return &relv1.Quantity{Percent: uint32(p)}, ""
	}
	n, err := strconv.ParseUint(v, 10, 32)
	if err != nil {
		return nil, numberProblem(v, quantitySyntax)
	}
	if uint32(n) < minCount {
		return nil, fmt.Sprintf("must be at least %d host%s", minCount, plural(int(minCount)))
	}
	return &relv1.Quantity{Count: uint32(n)}, ""
}

// parseWaves parses --waves: a comma list of cumulative quantities. Items of
// the same unit must strictly increase; whether a count and a percentage
// are in order depends on the number of hosts, which only the server knows.
func parseWaves(flag, v string) ([]*relv1.Quantity, error) {
	if strings.TrimSpace(v) == "" {
		return nil, usagef("%s: empty list (want e.g. 10%%,50%%,100%% or 1,5,20)", flag)
	}
	items := strings.Split(v, ",")
	out := make([]*relv1.Quantity, 0, len(items))
	// The last count and the last percentage seen, with their positions.
	var lastCount, lastPercent struct {
		q    *relv1.Quantity
		wave int
	}
	for i, item := range items {
		item = strings.TrimSpace(item)
		wave := i + 1
		if item == "" {
			return nil, usagef("%s %s: wave %d is empty", flag, v, wave)
		}
		q, problem := quantity(item, 1)
		if problem != "" {
			return nil, usagef("%s %s: wave %d (%s): %s", flag, v, wave, item, problem)
		}
		prev := &lastCount
		if q.GetPercent() > 0 {
			prev = &lastPercent
		}
		if prev.q != nil && quantityValue(q) <= quantityValue(prev.q) {
			return nil, usagef("%s %s: wave %d (%s) is not above wave %d (%s)", flag, v, wave, item,
				prev.wave, formatQuantity(prev.q))
		}
		prev.q, prev.wave = q, wave
		out = append(out, q)
	}
	return out, nil
}

func quantityValue(q *relv1.Quantity) uint32 { return q.GetCount() + q.GetPercent() }

// formatQuantity renders a quantity as the flags take it: "5" or "10%"; ""
// when unset.
func formatQuantity(q *relv1.Quantity) string {
	switch {
	case q == nil:
		return ""
	case q.GetPercent() > 0:
		return strconv.FormatUint(uint64(q.GetPercent()), 10) + "%"
	default:
		return strconv.FormatUint(uint64(q.GetCount()), 10)
	}
}

func formatWaves(qs []*relv1.Quantity) []string {
	out := make([]string, 0, len(qs))
	for _, q := range qs {
		out = append(out, formatQuantity(q))
	}
	return out
}

// shortDuration renders a duration without the zero units time.Duration
// adds: "10m" rather than "10m0s", "1h" rather than "1h0m0s".
func shortDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// specSummary is a spec on one line, in the words of the flags: "canary 1,
// waves 50%,100%, max-parallel 1, bake 30s, approve-waves, max-failures 0,
// deadline 10m, auto-rollback".
func specSummary(s *relv1.RolloutSpec) string {
	if s == nil {
		return ""
	}
	var parts []string
	switch {
	case s.GetStrategy() == strategyCanary && s.GetCanary() != nil:
		parts = append(parts, "canary "+formatQuantity(s.GetCanary()))
	default:
		parts = append(parts, s.GetStrategy())
	}
	if len(s.GetWaves()) > 0 {
		parts = append(parts, "waves "+strings.Join(formatWaves(s.GetWaves()), ","))
	}
	if s.GetWaveBy() != "" {
		parts = append(parts, "wave-by "+s.GetWaveBy())
	}
	if s.GetMaxParallel() > 0 {
		parts = append(parts, fmt.Sprintf("max-parallel %d", s.GetMaxParallel()))
	}
	if s.GetBakeMs() > 0 {
		parts = append(parts, "bake "+shortDuration(msDuration(s.GetBakeMs())))
	}
	if s.GetApproveWaves() {
		parts = append(parts, "approve-waves")
	}
	parts = append(parts, "max-failures "+formatMaxFailures(s.GetMaxFailures()))
	if s.GetProgressDeadlineMs() > 0 {
		parts = append(parts, "deadline "+shortDuration(msDuration(s.GetProgressDeadlineMs())))
	}
	if s.GetAutoRollback() {
		parts = append(parts, "auto-rollback")
	}
	return strings.Join(parts, ", ")
}

// formatMaxFailures is formatQuantity where unset means 0, as it does for
// max_failures.
func formatMaxFailures(q *relv1.Quantity) string {
	if q == nil {
		return "0"
	}
	return formatQuantity(q)
}

func msDuration(ms int64) time.Duration { return time.Duration(ms) * time.Millisecond }
