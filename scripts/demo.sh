#!/usr/bin/env bash
# Rel demo: a local 3-node cluster on loopback, driven with relctl.
#
# Builds nothing itself (make demo builds first). Starts three rel-server
# processes, creates an app, an environment and releases through a follower,
# shows them from every node, kills the leader with SIGKILL, shows that
# writes still work on the survivors and that the old leader catches up after
# a restart, then stops everything and removes its files.
#
# Ports: REL_DEMO_PORT (default 17400) and the 29 above it.
set -euo pipefail
cd "$(dirname "$0")/.."

BIN="$(pwd)/bin"
BASE="${REL_DEMO_PORT:-17400}"
WORK="$(mktemp -d -t rel-demo-XXXXXX)"
declare -A PID GRPC RAFT HTTP
NODES=(s1 s2 s3)
for i in 0 1 2; do
  n=${NODES[$i]}
  GRPC[$n]="127.0.0.1:$((BASE + i*10))"
  RAFT[$n]="127.0.0.1:$((BASE + i*10 + 1))"
  HTTP[$n]="127.0.0.1:$((BASE + i*10 + 2))"
done
ALL_ADDRS="${GRPC[s1]},${GRPC[s2]},${GRPC[s3]}"

step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
run() { printf '$'; printf ' %q' "$@"; printf '\n'; "$@"; }
relctl() { "$BIN/relctl" "$@"; }

cleanup() {
  local code=$?
  for n in "${NODES[@]}"; do
    if [ -n "${PID[$n]:-}" ] && kill -0 "${PID[$n]}" 2>/dev/null; then
      kill -TERM "${PID[$n]}" 2>/dev/null || true
    fi
  done
  for n in "${NODES[@]}"; do
    [ -n "${PID[$n]:-}" ] && wait "${PID[$n]}" 2>/dev/null || true
  done
  if [ $code -ne 0 ]; then
    echo "demo failed (exit $code); the last server log lines:" >&2
    for n in "${NODES[@]}"; do
      [ -f "$WORK/$n.log" ] && { echo "--- $n" >&2; tail -n 15 "$WORK/$n.log" >&2; }
    done
  fi
  rm -rf "$WORK"
  exit $code
}
trap cleanup EXIT INT TERM

for port in $(seq "$BASE" $((BASE + 22))); do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "demo: port $port is in use; set REL_DEMO_PORT to a free range" >&2
    exit 1
  fi
done

start() { # start NODE [extra flags...]
  local n=$1; shift
  "$BIN/rel-server" --node-id "$n" --data-dir "$WORK/$n" \
    --grpc-addr "${GRPC[$n]}" --raft-addr "${RAFT[$n]}" --http-addr "${HTTP[$n]}" \
    "$@" >>"$WORK/$n.log" 2>&1 &
  PID[$n]=$!
}

health() { curl -s -m 1 "http://${HTTP[$1]}/v1/health" 2>/dev/null || true; }
role() { health "$1" | sed -n 's/.*"role": "\([a-z]*\)".*/\1/p'; }
applied() { health "$1" | sed -n 's/.*"applied_index": \([0-9]*\).*/\1/p'; }

wait_for() { # wait_for SECONDS DESCRIPTION COMMAND...
  local secs=$1 what=$2; shift 2
  local deadline=$(( $(date +%s%N) + secs * 1000000000 ))
  until "$@"; do
    if [ "$(date +%s%N)" -gt "$deadline" ]; then
      echo "demo: timed out after ${secs}s waiting for $what" >&2
      return 1
    fi
    sleep 0.05
  done
}

leader() {
  for n in "${NODES[@]}"; do
    if [ -n "${PID[$n]:-}" ] && [ "$(role "$n")" = leader ]; then echo "$n"; return 0; fi
  done
  return 1
}
has_leader() { leader >/dev/null; }
all_healthy() { for n in "$@"; do curl -sf -m 1 -o /dev/null "http://${HTTP[$n]}/v1/health" || return 1; done; }

step "Starting a 3-node cluster on 127.0.0.1 (data in $WORK)"
start s1 --bootstrap
wait_for 10 "s1 to elect itself" has_leader
start s2 --join "${GRPC[s1]}"
start s3 --join "${GRPC[s1]}"
wait_for 15 "all three nodes to be healthy" all_healthy s1 s2 s3
wait_for 10 "three registered members" bash -c "[ \"\$('$BIN/relctl' --addr ${GRPC[s1]} cluster members -o json | grep -c '\"id\"')\" = 3 ]"
run relctl --addr "${GRPC[s1]}" cluster members

L=$(leader)
F=""
for n in "${NODES[@]}"; do [ "$n" != "$L" ] && { F=$n; break; }; done
export REL_ADDR="${GRPC[$F]}"
step "Writing through follower $F (leader is $L): it forwards to the leader"
run relctl app create web --description "the storefront"
run relctl env create prod --selector env=prod,tier=web --description "production web hosts"
SUM=$(printf 'web 1.0.0' | sha256sum | cut -d' ' -f1)
run relctl release create web 1.0.0 --artifact https://artifacts.example.com/web-1.0.0.tar.gz --sha256 "$SUM" \
  --commit 3f2a9c1 --label channel=stable --notes "first release"
for v in 1.2.0 1.10.0 1.2.1-rc.1; do
  relctl release create web "$v" --artifact "https://artifacts.example.com/web-$v.tar.gz" \
    --sha256 "$(printf "web $v" | sha256sum | cut -d' ' -f1)" >/dev/null
  echo "created web@$v"
done

step "The same state on every node (semantic versions sort semantically)"
for n in "${NODES[@]}"; do
  echo "--- $n (${GRPC[$n]})"
  relctl --addr "${GRPC[$n]}" release list web
done
run relctl release show web@1.0.0
run relctl env list

step "Bad input gets one clear line and a non-zero exit"
set +e
relctl app create web; echo "exit code $?"
relctl release create web 1.0.0 --artifact https://x.example.com/a.tgz --sha256 "$SUM"; echo "exit code $?"
relctl release create web 2.0.0 --artifact ftp://x.example.com/a.tgz --sha256 "$SUM"; echo "exit code $?"
relctl release create web 2.0.0 --artifact https://x.example.com/a.tgz --sha256 nothex; echo "exit code $?"
relctl release create nope 1.0.0 --artifact https://x.example.com/a.tgz --sha256 "$SUM"; echo "exit code $?"
set -e

step "Killing the leader $L with SIGKILL"
kill -KILL "${PID[$L]}"
wait "${PID[$L]}" 2>/dev/null || true
killed_at=$(date +%s%N)
PID[$L]=""
wait_for 10 "a new leader" has_leader
NL=$(leader)
echo "new leader: $NL, elected $(( ($(date +%s%N) - killed_at) / 1000000 )) ms after the kill"

SURVIVORS=()
for n in "${NODES[@]}"; do [ "$n" != "$L" ] && SURVIVORS+=("${GRPC[$n]}"); done
export REL_ADDR="${GRPC[$L]},$(IFS=,; echo "${SURVIVORS[*]}")"
step "Writes still work (relctl skips the dead node in REL_ADDR=$REL_ADDR)"
run relctl release create web 1.3.0 --artifact https://artifacts.example.com/web-1.3.0.tar.gz \
  --sha256 "$(printf 'web 1.3.0' | sha256sum | cut -d' ' -f1)" --notes "written while $L was down"
run relctl cluster members

step "Restarting $L on its data dir: it catches up"
start "$L"
target=$(applied "$NL")
wait_for 15 "$L to catch up to index $target" bash -c "[ \"\$(curl -s -m 1 http://${HTTP[$L]}/v1/health | sed -n 's/.*\"applied_index\": \([0-9]*\).*/\1/p')\" -ge $target ] 2>/dev/null"
run relctl --addr "${GRPC[$L]}" release list web
run relctl --addr "${GRPC[$L]}" --consistent release show web@1.3.0

step "Stopping the cluster (SIGTERM: graceful) and cleaning up"
for n in "${NODES[@]}"; do kill -TERM "${PID[$n]}"; done
for n in "${NODES[@]}"; do wait "${PID[$n]}" || { echo "demo: $n exited non-zero" >&2; exit 1; }; PID[$n]=""; done
echo "all servers stopped cleanly"
echo
echo "Demo finished: 3 nodes, 6 releases, a leader killed and recovered."
