#!/bin/sh
# bench-baseline.sh: build the binaries of the last commit before security
# (plaintext, no TLS flags) into DIR (default bin/baseline), for `make bench`
# to measure the cost of security against, on the same machine in the same
# run. Built once: a stamp file names the commit, and a second call with the
# binaries in place does nothing.
#
# The commit's tree comes from git (git archive into a temporary directory,
# removed afterwards); the working tree is not touched. Without git history
# holding the commit, it says so and exits 0 with nothing built: the bench
# then runs without the comparison.
set -eu

BASELINE_COMMIT=${BASELINE_COMMIT:-8e20256a48b512f4e973a743591869314f435ea8}
DIR=${1:-bin/baseline}
GO=${GO:-go}

cd "$(dirname "$0")/.."
stamp="$DIR/.commit"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$BASELINE_COMMIT" ] &&
	[ -x "$DIR/rel-server" ] && [ -x "$DIR/rel-agent" ] && [ -x "$DIR/rel-agent-perconn" ] && [ -x "$DIR/relctl" ]; then
	echo "bench-baseline: $DIR holds the binaries of ${BASELINE_COMMIT%"${BASELINE_COMMIT#????????????}"} already"
	exit 0
fi
if ! git rev-parse --git-dir >/dev/null 2>&1 ||
	! git cat-file -e "$BASELINE_COMMIT^{commit}" 2>/dev/null; then
	echo "bench-baseline: git history with commit $BASELINE_COMMIT is not available here:" \
		"skipping the baseline; make bench prints the TLS figures without the comparison" >&2
	exit 0
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/rel-baseline-XXXXXX")
trap 'rm -rf "$tmp"' EXIT INT TERM
git archive --format=tar "$BASELINE_COMMIT" | tar -x -C "$tmp"
mkdir -p "$DIR"
out=$(cd "$DIR" && pwd)
short=$(git rev-parse --short=12 "$BASELINE_COMMIT")
ldflags="-X github.com/relhq/rel/internal/version.Version=baseline-$short"
echo "bench-baseline: building rel-server, rel-agent and relctl of $short into $DIR"
rm -f "$stamp"
(
	cd "$tmp"
	$GO build -ldflags "$ldflags" -o "$out/rel-server" ./cmd/server
	$GO build -ldflags "$ldflags" -o "$out/rel-agent" ./cmd/agent
	$GO build -ldflags "$ldflags" -o "$out/relctl" ./cmd/relctl
	# The baseline's simulator shares one connection per server among all
	# its agents; real agents (and, with TLS, simulated ones, each being
	# its own certificate) have one connection each. A second agent binary
	# with that one line changed measures the baseline as real agents
	# would load it, so the comparison shows what TLS costs, not what
	# per-agent connections cost.
	grep -q '^			Dial:      dial,$' internal/agent/simulate.go
	sed -i 's/^			Dial:      dial,$/			Dial:      nil,/' internal/agent/simulate.go
	sed -i 's/^	dial := func(addr string)/	_ = func(addr string)/' internal/agent/simulate.go
	$GO build -ldflags "$ldflags-perconn" -o "$out/rel-agent-perconn" ./cmd/agent
)
echo "$BASELINE_COMMIT" >"$stamp"
