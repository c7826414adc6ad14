package cli

import (
	"errors"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	relv1 "github.com/relhq/rel/proto/rel/v1"
)

func TestParseQuantity(t *testing.T) {
	tests := []struct {
		flag     string
		in       string
		minCount uint32
		want     *relv1.Quantity
		wantErr  string // the whole message; empty means success
	}{
		{flag: "--canary", in: "1", minCount: 1, want: &relv1.Quantity{Count: 1}},
		{flag: "--canary", in: "25", minCount: 1, want: &relv1.Quantity{Count: 25}},
		{flag: "--canary", in: "5%", minCount: 1, want: &relv1.Quantity{Percent: 5}},
		{flag: "--canary", in: "100%", minCount: 1, want: &relv1.Quantity{Percent: 100}},
		{flag: "--max-failures", in: "0", want: &relv1.Quantity{}},
		{flag: "--max-failures", in: "10%", want: &relv1.Quantity{Percent: 10}},

		{flag: "--canary", in: "", minCount: 1, wantErr: "--canary: empty value (want N or P%)"},
		{flag: "--canary", in: "abc", minCount: 1, wantErr: "--canary abc: not a number (want N or P%)"},
		{flag: "--canary", in: "5x", minCount: 1, wantErr: "--canary 5x: not a number (want N or P%)"},
		{flag: "--canary", in: "%", minCount: 1, wantErr: "--canary %: not a number (want N or P%)"},
		{flag: "--canary", in: "ten%", minCount: 1, wantErr: "--canary ten%: not a number (want N or P%)"},
		{flag: "--canary", in: "-1", minCount: 1, wantErr: "--canary -1: negative"},
		{flag: "--canary", in: "-5%", minCount: 1, wantErr: "--canary -5%: negative"},
		{flag: "--canary", in: "1.5", minCount: 1, wantErr: "--canary 1.5: not a whole number"},
		{flag: "--canary", in: "12.5%", minCount: 1, wantErr: "--canary 12.5%: not a whole number"},
		{flag: "--canary", in: "0", minCount: 1, wantErr: "--canary 0: must be at least 1 host"},
		{flag: "--canary", in: "0%", minCount: 1, wantErr: "--canary 0%: percent must be 1-100, not 0"},
		{flag: "--canary", in: "101%", minCount: 1, wantErr: "--canary 101%: percent over 100"},
		{flag: "--canary", in: "99999999999%", minCount: 1, wantErr: "--canary 99999999999%: percent over 100"},
		{flag: "--canary", in: "99999999999", minCount: 1, wantErr: "--canary 99999999999: too large"},
		{flag: "--max-failures", in: "0%", wantErr: "--max-failures 0%: percent must be 1-100, not 0"},
		{flag: "--max-failures", in: "-2", wantErr: "--max-failures -2: negative"},
	}
	for _, tt := range tests {
		t.Run(tt.flag+" "+tt.in, func(t *testing.T) {
			got, err := parseQuantity(tt.flag, tt.in, tt.minCount)
			checkParsed(t, err, tt.wantErr)
			if err == nil && !proto.Equal(got, tt.want) {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}

func TestParseWaves(t *testing.T) {
	tests := []struct {
		in      string
		want    []string // formatted back
		wantErr string   // the whole message; empty means success
	}{
		{in: "100%", want: []string{"100%"}},
		{in: "10%,50%,100%", want: []string{"10%", "50%", "100%"}},
		{in: "1,5,20", want: []string{"1", "5", "20"}},
		{in: " 1, 5 ,20 ", want: []string{"1", "5", "20"}},
		// Counts and percentages compare only among themselves: whether 5
		// hosts are more than 10% depends on the hosts.
		{in: "5,10%,20,100%", want: []string{"5", "10%", "20", "100%"}},
		{in: "50%,10", want: []string{"50%", "10"}},

		{in: "", wantErr: "--waves: empty list (want e.g. 10%,50%,100% or 1,5,20)"},
		{in: "50%,10%", wantErr: "--waves 50%,10%: wave 2 (10%) is not above wave 1 (50%)"},
		{in: "5,5", wantErr: "--waves 5,5: wave 2 (5) is not above wave 1 (5)"},
		{in: "5,50%,3", wantErr: "--waves 5,50%,3: wave 3 (3) is not above wave 1 (5)"},
		{in: "10%,,100%", wantErr: "--waves 10%,,100%: wave 2 is empty"},
		{in: "10%,", wantErr: "--waves 10%,: wave 2 is empty"},
		{in: ",10%", wantErr: "--waves ,10%: wave 1 is empty"},
		{in: "10%,x", wantErr: "--waves 10%,x: wave 2 (x): not a number (want N or P%)"},
		{in: "10%,-5", wantErr: "--waves 10%,-5: wave 2 (-5): negative"},
		{in: "0,5", wantErr: "--waves 0,5: wave 1 (0): must be at least 1 host"},
		{in: "0%,100%", wantErr: "--waves 0%,100%: wave 1 (0%): percent must be 1-100, not 0"},
		{in: "50%,150%", wantErr: "--waves 50%,150%: wave 2 (150%): percent over 100"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := parseWaves("--waves", tt.in)
			checkParsed(t, err, tt.wantErr)
			if err == nil && strings.Join(formatWaves(got), ",") != strings.Join(tt.want, ",") {
				t.Errorf("got %v, want %v", formatWaves(got), tt.want)
			}
		})
	}
}

// checkParsed asserts that err is nil, or a usage error with exactly the
// message wantErr.
func checkParsed(t *testing.T, err error, wantErr string) {
	t.Helper()
	if wantErr == "" {
		if err != nil {
			t.Fatalf("unexpected error: %v", err)
		}
		return
	}
	var ue *usageError
	if !errors.As(err, &ue) || err.Error() != wantErr {
		t.Fatalf("err = %v, want usage error %q", err, wantErr)
	}
}

// TestSpecFlags builds the spec of each strategy from the command line, as
// "rollout plan" (and, with the same code, "rollout start") sends it.
func TestSpecFlags(t *testing.T) {
	const deadline = int64(10 * time.Minute / time.Millisecond)
	tests := []struct {
		name string
		args []string
		want *relv1.RolloutSpec
	}{
		{name: "defaults", args: nil,
			want: &relv1.RolloutSpec{Strategy: "all-at-once", ProgressDeadlineMs: deadline}},
		{name: "all-at-once with a failure budget and auto-rollback",
			args: []string{"--strategy", "all-at-once", "--max-failures", "10%", "--auto-rollback"},
			want: &relv1.RolloutSpec{Strategy: "all-at-once", MaxFailures: &relv1.Quantity{Percent: 10},
				AutoRollback: true, ProgressDeadlineMs: deadline}},
		{
			// max_parallel stays 0: the server applies rolling's default.
			name: "rolling", args: []string{"--strategy", "rolling"},
			want: &relv1.RolloutSpec{Strategy: "rolling", ProgressDeadlineMs: deadline},
		},
		{name: "rolling two at a time in waves",
			args: []string{"--strategy", "rolling", "--max-parallel", "2", "--waves", "1,5,20", "--bake", "1m30s"},
			want: &relv1.RolloutSpec{Strategy: "rolling", MaxParallel: 2,
				Waves:  []*relv1.Quantity{{Count: 1}, {Count: 5}, {Count: 20}},
				BakeMs: 90_000, ProgressDeadlineMs: deadline}},
		{name: "rolling by zone with approvals",
			args: []string{"--strategy", "rolling", "--wave-by", "zone", "--approve-waves", "--progress-deadline", "30m"},
			want: &relv1.RolloutSpec{Strategy: "rolling", WaveBy: "zone", ApproveWaves: true,
				ProgressDeadlineMs: int64(30 * time.Minute / time.Millisecond)}},
		{
			// The canary's size defaults to one host; the waves after it
			// are the server's default (100%).
			name: "canary defaults", args: []string{"--strategy", "canary"},
			want: &relv1.RolloutSpec{Strategy: "canary", Canary: &relv1.Quantity{Count: 1}, ProgressDeadlineMs: deadline},
		},
		{name: "canary in full",
			args: []string{"--strategy", "canary", "--canary", "5%", "--waves", "10%,50%,100%", "--max-parallel", "0",
				"--bake", "30s", "--approve-waves", "--max-failures", "2", "--progress-deadline", "5m", "--auto-rollback"},
			want: &relv1.RolloutSpec{Strategy: "canary", Canary: &relv1.Quantity{Percent: 5},
				Waves:  []*relv1.Quantity{{Percent: 10}, {Percent: 50}, {Percent: 100}},
				BakeMs: 30_000, ApproveWaves: true, MaxFailures: &relv1.Quantity{Count: 2},
				ProgressDeadlineMs: 300_000, AutoRollback: true}},
		{
			// The server, not relctl, knows which strategies exist.
			name: "unknown strategy passed on", args: []string{"--strategy", "blue-green"},
			want: &relv1.RolloutSpec{Strategy: "blue-green", ProgressDeadlineMs: deadline},
		},
	}
	srv := newFakeStage()
	addr := serve(t, srv, nil)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, cmd := range []string{"plan", "start"} {
				args := append([]string{"rollout", cmd, "web@1.2.3", "--env", "prod"}, tt.args...)
				res := runCLI(t, map[string]string{envAddr: addr}, "", args...)
				if res.code != exitOK {
					t.Fatalf("%s: exit %d, stderr %q", cmd, res.code, res.stderr)
				}
				var got *relv1.RolloutSpec
				if cmd == "plan" {
					got = (<-srv.planned).GetSpec()
				} else {
					got = (<-srv.started).GetSpec()
				}
				if !proto.Equal(got, tt.want) {
					t.Errorf("%s sent spec\n got %v\nwant %v", cmd, got, tt.want)
				}
			}
		})
	}
}

// TestSpecUsageErrors: bad spec flags are usage errors, reported before
// any server is asked, with what is wrong.
func TestSpecUsageErrors(t *testing.T) {
	env := map[string]string{envAddr: closedAddr(t)}
	tests := []struct {
		args []string
		want string // the whole stderr line
	}{
		{args: []string{"--waves", "50%,10%"},
			want: "relctl: --waves 50%,10%: wave 2 (10%) is not above wave 1 (50%) (see relctl rollout start --help)"},
		{args: []string{"--waves", "10%,50%", "--wave-by", "zone"},
			want: "relctl: --waves and --wave-by cannot be combined: --wave-by makes one wave per label value (see relctl rollout start --help)"},
		{args: []string{"--strategy", "canary", "--canary", "120%"},
			want: "relctl: --canary 120%: percent over 100 (see relctl rollout start --help)"},
		{args: []string{"--canary", "a"},
			want: "relctl: --canary a: not a number (want N or P%) (see relctl rollout start --help)"},
		{args: []string{"--max-failures", "-1"},
			want: "relctl: --max-failures -1: negative (see relctl rollout start --help)"},
		{args: []string{"--max-parallel", "-1"},
			want: "relctl: --max-parallel -1: negative (see relctl rollout start --help)"},
		{args: []string{"--max-parallel", "two"},
			want: "relctl: --max-parallel two: not a number (want a number) (see relctl rollout start --help)"},
		{args: []string{"--max-parallel", ""},
			want: "relctl: --max-parallel: empty value (want a number) (see relctl rollout start --help)"},
		{args: []string{"--bake", "-1s"},
			want: "relctl: --bake -1s: must not be negative (see relctl rollout start --help)"},
		{args: []string{"--progress-deadline", "-5m"},
			want: "relctl: --progress-deadline -5m0s: must not be negative (see relctl rollout start --help)"},
		{args: []string{"--bake", "soon"},
			want: `relctl: invalid argument "soon" for "--bake" flag: time: invalid duration "soon" (see relctl rollout start --help)`},
		{args: []string{"--wave-by", ""},
			want: "relctl: --wave-by: empty label name (see relctl rollout start --help)"},
	}
	for _, tt := range tests {
		for _, cmd := range []string{"start", "plan"} {
			t.Run(cmd+" "+strings.Join(tt.args, " "), func(t *testing.T) {
				args := append([]string{"rollout", cmd, "web@1.2.3", "--env", "prod"}, tt.args...)
				res := runCLI(t, env, "", args...)
				if res.code != exitUsage {
					t.Errorf("exit code = %d, want %d", res.code, exitUsage)
				}
				checkOneErrorLine(t, res)
				want := strings.ReplaceAll(tt.want, "rollout start", "rollout "+cmd)
				if got := strings.TrimSuffix(res.stderr, "\n"); got != want {
					t.Errorf("stderr:\n got %s\nwant %s", got, want)
				}
				if res.stdout != "" {
					t.Errorf("stdout = %q, want nothing", res.stdout)
				}
			})
		}
	}
}

func TestSpecSummary(t *testing.T) {
	tests := []struct {
		spec *relv1.RolloutSpec
		want string
	}{
		{spec: nil, want: ""},
		{spec: &relv1.RolloutSpec{Strategy: "all-at-once", ProgressDeadlineMs: 600_000},
			want: "all-at-once, max-failures 0, deadline 10m"},
		{spec: &relv1.RolloutSpec{Strategy: "canary", Canary: &relv1.Quantity{Count: 1},
			Waves: []*relv1.Quantity{{Percent: 50}, {Percent: 100}}, MaxParallel: 1, BakeMs: 30_000, ApproveWaves: true,
			MaxFailures: &relv1.Quantity{}, ProgressDeadlineMs: 600_000, AutoRollback: true},
			want: "canary 1, waves 50%,100%, max-parallel 1, bake 30s, approve-waves, max-failures 0, deadline 10m, auto-rollback"},
		{spec: &relv1.RolloutSpec{Strategy: "rolling", WaveBy: "zone", MaxParallel: 2, BakeMs: 90_500,
			MaxFailures: &relv1.Quantity{Percent: 5}, ProgressDeadlineMs: 3_600_000},
			want: "rolling, wave-by zone, max-parallel 2, bake 1m30.5s, max-failures 5%, deadline 1h"},
	}
	for _, tt := range tests {
		if got := specSummary(tt.spec); got != tt.want {
			t.Errorf("specSummary(%v)\n got %q\nwant %q", tt.spec, got, tt.want)
		}
	}
}
