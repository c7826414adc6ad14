#!/usr/bin/env bash
# Rel demo: a local 3-node cluster on loopback, driven with relctl.
#
# Builds nothing itself (make demo builds first). Makes a cluster CA and a
# certificate per server with relctl, starts three rel-server processes with
# mutual TLS, bootstraps ACLs (a management token), shows a token of the
# wrong role being refused, creates an app, an environment and releases through a follower,
# shows them from every node, kills the leader with SIGKILL, shows that
# writes still work on the survivors and that the old leader catches up after
# a restart. Then starts three rel-agent processes with different labels,
# uploads the sample app (examples/hello, a small Go HTTP service whose
# rel.yaml has a health check), rolls it out to an environment and shows it
# answering on every host. The agents enrol with a join token and the CA pin.
# Finally it stops everything and removes its files. Services outlive their
# agent (a restarted agent adopts them), so the demo's agents run with
# --stop-services-on-exit: stopping them takes their services down too.
#
# Ports: REL_DEMO_PORT (default 17400) and the 29 above it.
set -euo pipefail
cd "$(dirname "$0")/.."

BIN="$(pwd)/bin"
BASE="${REL_DEMO_PORT:-17400}"
WORK="$(mktemp -d -t rel-demo-XXXXXX)"
declare -A PID GRPC RAFT HTTP APID
NODES=(s1 s2 s3)
for i in 0 1 2; do
  n=${NODES[$i]}
  GRPC[$n]="127.0.0.1:$((BASE + i*10))"
  RAFT[$n]="127.0.0.1:$((BASE + i*10 + 1))"
  HTTP[$n]="127.0.0.1:$((BASE + i*10 + 2))"
done
ALL_ADDRS="${GRPC[s1]},${GRPC[s2]},${GRPC[s3]}"
PKI="$WORK/pki"

step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
run() { printf '$'; printf ' %q' "$@"; printf '\n'; "$@"; }
relctl() { "$BIN/relctl" "$@"; }

AGENTS=(web-1 web-2 web-3)
cleanup() {
  local code=$?
  for a in "${AGENTS[@]}"; do
    [ -n "${APID[$a]:-}" ] && kill -TERM "${APID[$a]}" 2>/dev/null || true
  done
  for a in "${AGENTS[@]}"; do
    [ -n "${APID[$a]:-}" ] && wait "${APID[$a]}" 2>/dev/null || true
  done
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
    for a in "${AGENTS[@]}"; do
      [ -f "$WORK/$a.log" ] && { echo "--- agent $a" >&2; tail -n 15 "$WORK/$a.log" >&2; }
    done
  fi
  rm -rf "$WORK"
  exit $code
}
trap cleanup EXIT INT TERM

# A port is in use if a socket holds it, listening or connected (a connect
# test misses another program's outgoing connection from that port): ss
# lists both. Sockets in TIME-WAIT do not count:
# rel-server binds over them (SO_REUSEADDR), so a second demo right after
# the first still starts. Without ss, fall back to trying to connect.
port_used() {
  if command -v ss >/dev/null 2>&1; then
    [ -n "$(ss -Htan exclude time-wait "( sport = :$1 )" 2>/dev/null)" ]
  else
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
  fi
}
for port in $(seq "$BASE" $((BASE + 22))); do
  if port_used "$port"; then
    echo "demo: port $port is in use; set REL_DEMO_PORT to a free range" >&2
    exit 1
  fi
done

start() { # start NODE [extra flags...]
  local n=$1; shift
  "$BIN/rel-server" --node-id "$n" --data-dir "$WORK/$n" \
    --grpc-addr "${GRPC[$n]}" --raft-addr "${RAFT[$n]}" --http-addr "${HTTP[$n]}" \
    --ca-file "$PKI/ca.pem" --cert-file "$PKI/$n.pem" --key-file "$PKI/$n-key.pem" --ca-key-file "$PKI/ca-key.pem" \
    --audit-key-file "$PKI/audit.key" \
    "$@" >>"$WORK/$n.log" 2>&1 &
  PID[$n]=$!
}

# /v1/health needs no client certificate (load balancers); curl checks the
# server against the cluster CA.
health() { curl -s -m 1 --cacert "$PKI/ca.pem" "https://${HTTP[$1]}/v1/health" 2>/dev/null || true; }
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
all_healthy() { for n in "$@"; do curl -sf -m 1 -o /dev/null --cacert "$PKI/ca.pem" "https://${HTTP[$n]}/v1/health" || return 1; done; }

# relctl checks the servers against the CA (REL_CA_FILE); who it acts as
# comes from REL_TOKEN_FILE once ACLs are bootstrapped.
export REL_CA_FILE="$PKI/ca.pem"
unset REL_TOKEN REL_TOKEN_FILE REL_CERT_FILE REL_KEY_FILE

step "Making the cluster CA and a certificate for each server (relctl tls)"
run relctl tls ca create --cluster demo --dir "$PKI"
for n in "${NODES[@]}"; do
  relctl tls cert create --server --node-id "$n" --ca-file "$PKI/ca.pem" --dir "$PKI" >/dev/null
done
run relctl tls cert info "$PKI/s1.pem"

step "Starting a 3-node cluster on 127.0.0.1, mutual TLS on every port (data in $WORK)"
start s1 --bootstrap
wait_for 10 "s1 to elect itself" has_leader
start s2 --join "${GRPC[s1]}"
start s3 --join "${GRPC[s1]}"
wait_for 15 "all three nodes to be healthy" all_healthy s1 s2 s3

step "Bootstrapping ACLs: the first (and only) anonymous call makes the management token"
run relctl --addr "${GRPC[s1]}" acl bootstrap --out "$WORK/management.token"
export REL_TOKEN_FILE="$WORK/management.token"
run relctl --addr "${GRPC[s1]}" acl whoami
set +e
relctl --addr "${GRPC[s1]}" acl bootstrap; echo "exit code $? (a second bootstrap is refused)"
set -e
voters_registered() {
  local m; m=$(relctl --addr "${GRPC[s1]}" cluster members -o json)
  [ "$(echo "$m" | grep -c '"Voter"')" = 3 ] && [ "$(echo "$m" | grep -c '"grpc_addr": "127')" = 3 ]
}
wait_for 15 "three registered voting members" voters_registered
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

step "Roles: a viewer token reads but cannot change anything; a deployer token is limited to its apps"
relctl acl token create --name dashboard --role viewer --out "$WORK/viewer.token" >/dev/null
relctl acl token create --name ci-web --role release-creator --role deployer --app 'web*' --out "$WORK/ci.token" >/dev/null
run relctl acl token list
REL_TOKEN_FILE="$WORK/viewer.token" relctl release list web | head -3
set +e
REL_TOKEN_FILE="$WORK/viewer.token" relctl app create intruder; echo "exit code $?"
REL_TOKEN_FILE="$WORK/ci.token" relctl release create api 1.0.0 --artifact https://artifacts.example.com/api.tgz --sha256 "$SUM"; echo "exit code $?"
REL_TOKEN_FILE= relctl app list; echo "exit code $? (no credentials)"
set -e
REL_TOKEN_FILE="$WORK/ci.token" run relctl release create web 1.4.0 --artifact https://artifacts.example.com/web-1.4.0.tar.gz \
  --sha256 "$(printf 'web 1.4.0' | sha256sum | cut -d' ' -f1)" --notes "made by the ci-web token"

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
caught_up() { [ "$(applied "$L")" -ge "$target" ] 2>/dev/null; }
wait_for 15 "$L to catch up to index $target" caught_up
run relctl --addr "${GRPC[$L]}" release list web
run relctl --addr "${GRPC[$L]}" --consistent release show web@1.3.0

export REL_ADDR="$ALL_ADDRS"
step "Starting three agents (hosts): each enrols with a join token and the CA pin"
run relctl agent token create --uses 3 --ttl 10m --description "demo hosts" --out "$WORK/join.token"
PIN=$(relctl tls cert info "$PKI/ca.pem" -o json | sed -n 's/.*"pin": "\(sha256:[0-9a-f]*\)".*/\1/p' | head -1)
echo "CA pin: $PIN"
ZONES=(eu-1 eu-2 us-1)
for i in 0 1 2; do
  a=${AGENTS[$i]}
  mkdir -p "$WORK/$a"
  "$BIN/rel-agent" --node-id "$a" --servers "$ALL_ADDRS" --labels "role=web,zone=${ZONES[$i]}" \
    --join-token-file "$WORK/join.token" --ca-pin "$PIN" --stop-services-on-exit \
    --data-dir "$WORK/$a/data" --install-root "$WORK/$a/root" >>"$WORK/$a.log" 2>&1 &
  APID[$a]=$!
  echo "$a: labels role=web,zone=${ZONES[$i]}, installs under $WORK/$a/root"
done
agents_connected() { [ "$(relctl agent list -o json | grep -c '"connected": true')" = 3 ]; }
wait_for 15 "three connected agents" agents_connected
run relctl agent list

step "Building the sample app and uploading it to the cluster"
./scripts/bundle.sh 1.0.0 "$WORK/hello-1.0.0.tar.gz" >/dev/null
./scripts/bundle.sh 1.1.0 "$WORK/hello-1.1.0.tar.gz" >/dev/null
./scripts/bundle.sh 1.2.0 "$WORK/hello-1.2.0.tar.gz" >/dev/null
run relctl app create hello --description "sample HTTP service"
run relctl env create web --selector role=web --description "every web host"
run relctl release create hello 1.0.0 --artifact "$WORK/hello-1.0.0.tar.gz" --notes "first cut"

step "Rolling hello@1.0.0 out to every host of env web (all at once)"
ID=$(relctl rollout start hello@1.0.0 --env web -o json | sed -n 's/^  "id": "\(.*\)",$/\1/p')
echo "rollout $ID started"
run relctl rollout status "$ID" --watch --timeout 60s >/dev/null
run relctl rollout status "$ID"

step "The service answers on every host"
for a in "${AGENTS[@]}"; do
  addr=$(cat "$WORK/$a/root/hello/current/listen.addr")
  printf '%s: current -> %s, http://%s/ says: %s\n' "$a" "$(readlink "$WORK/$a/root/hello/current")" "$addr" "$(curl -s "http://$addr/")"
done

step "Upgrading to 1.1.0; the previous release stays on disk for a quick way back"
run relctl release create hello 1.1.0 --artifact "$WORK/hello-1.1.0.tar.gz" --notes "second cut"
ID=$(relctl rollout start hello@1.1.0 --env web -o json | sed -n 's/^  "id": "\(.*\)",$/\1/p')
relctl rollout status "$ID" --watch --timeout 60s >/dev/null
run relctl rollout list --app hello
for a in "${AGENTS[@]}"; do
  addr=$(cat "$WORK/$a/root/hello/current/listen.addr")
  printf '%s: releases on disk: %s; answers: %s\n' "$a" "$(ls "$WORK/$a/root/hello/releases" | tr '\n' ' ')" "$(curl -s "http://$addr/")"
done
run relctl history hello
run relctl agent show web-1

step "Change control: a lifecycle dev -> prod (dev is the canary host, prod the web hosts), and two approvals (not the release's author) for prod"
run relctl env create canary --selector zone=eu-1 --description "the first host"
run relctl lifecycle create std --phase dev=canary --phase prod=web
run relctl app update hello --lifecycle std
run relctl env approval-policy set web --approvals 2 --approver role:approver
for who in carol:release-creator:approver dave:deployer alice:approver bob:approver; do
  IFS=: read -r name r1 r2 <<<"$who"
  relctl acl token create --name "$name" --role "$r1" ${r2:+--role "$r2"} --out "$WORK/$name.token" >/dev/null
done
as() { local who=$1; shift; REL_TOKEN_FILE="$WORK/$who.token" relctl "$@"; }
echo "tokens: carol (release-creator, approver), dave (deployer), alice and bob (approver)"
as carol release create hello 1.2.0 --artifact "$WORK/hello-1.2.0.tar.gz" --notes "third cut" >/dev/null && echo "carol created hello@1.2.0"
echo "$ dave: relctl release promote hello@1.2.0 --to web"
set +e
as dave release promote hello@1.2.0 --to web; echo "exit code $? (phase dev first)"
set -e
ID=$(as dave release promote hello@1.2.0 --to canary -o json | sed -n 's/^  "id": "\(.*\)",$/\1/p')
relctl rollout status "$ID" --watch --timeout 60s >/dev/null
run relctl release status hello@1.2.0
ID=$(as dave release promote hello@1.2.0 --to web -o json | sed -n 's/^  "id": "\(.*\)",$/\1/p')
echo "dave promoted hello@1.2.0 to web: rollout $ID"
run relctl approvals pending
echo "$ carol: relctl rollout approve $ID"
set +e
as carol rollout approve "$ID"; echo "exit code $? (carol created the release)"
set -e
echo "$ alice: relctl rollout approve $ID --comment lgtm"; as alice rollout approve "$ID" --comment lgtm
echo "$ bob: relctl rollout approve $ID"; as bob rollout approve "$ID"
relctl rollout status "$ID" --watch --timeout 60s >/dev/null
run relctl rollout status "$ID"

step "Revoking web-3: its stream is closed and its certificate refused"
run relctl agent revoke web-3 --reason "demo: host decommissioned"
refused() { grep -q "was revoked" "$WORK/web-3.log"; }
wait_for 10 "web-3's stream to be closed as revoked" refused
grep -m1 "was revoked" "$WORK/web-3.log" | sed 's/^/web-3 log: /' | cut -c1-220
kill -TERM "${APID[web-3]}" 2>/dev/null || true; wait "${APID[web-3]}" 2>/dev/null || true; APID[web-3]=""
AGENTS=(web-1 web-2)

step "The audit trail: who changed what, and what was refused; checked against a signed checkpoint"
relctl audit | cut -c1-220
relctl audit checkpoint >"$WORK/audit-checkpoint.json"
run relctl audit verify --checkpoint "$WORK/audit-checkpoint.json" --public-key "$PKI/audit.pub"

step "The event stream: every change, numbered in raft order (relctl events --follow resumes from a seq)"
relctl events --app hello --type 'release.*,rollout.*,approval.*' | tail -n 14
echo "(relctl events --follow --since SEQ follows them live, reconnecting to another server by itself; webhooks deliver them: relctl webhook create --help)"

step "The web dashboard: the viewer token signs in, the overview answers"
UI="https://${HTTP[${NODES[0]}]}"
JAR="$WORK/ui.cookies"
ui() { curl -s --cacert "$PKI/ca.pem" -b "$JAR" -c "$JAR" "$@"; }
csrf=$(ui "$UI/ui/login" | sed -n 's/.*name="csrf" value="\([^"]*\)".*/\1/p' | head -1)
ui -o /dev/null -w "POST $UI/ui/login: %{http_code}, to %{redirect_url}\n" -H "Origin: $UI" \
  --data-urlencode "csrf=$csrf" --data-urlencode "token=$(tr -d '\n' <"$WORK/viewer.token")" --data-urlencode "next=/ui/" "$UI/ui/login"
ui -o "$WORK/ui-overview.html" -w "GET  $UI/ui/: %{http_code}\n" "$UI/ui/"
grep -o '[0-9]*/[0-9]* hosts healthy' "$WORK/ui-overview.html" | sed 's/^/overview cell: /'

step "The management report: the DORA figures of what this demo did"
REPORT="$(relctl report)"
echo "$REPORT"
mkdir -p bin
relctl report -o html >bin/demo-report.html
echo "the same as one HTML page: bin/demo-report.html (relctl report -o html; also the dashboard's Report page)"
if [ "${REL_DEMO_KEEP:-}" = 1 ]; then
  echo
  echo "REL_DEMO_KEEP=1: the cluster keeps running. Dashboard: $UI/ui/"
  echo "  sign in with the viewer token: $(tr -d '\n' <"$WORK/viewer.token")"
  echo "  or the management token (every control): $(tr -d '\n' <"$WORK/management.token")"
  echo "  the certificate is the demo CA's: $PKI/ca.pem (or accept it in the browser)"
  read -r -p "Press Enter to stop the cluster and clean up. " _ || true
fi

step "Stopping agents and servers (SIGTERM: graceful) and cleaning up"
for a in "${AGENTS[@]}"; do kill -TERM "${APID[$a]}"; done
for a in "${AGENTS[@]}"; do wait "${APID[$a]}" || { echo "demo: agent $a exited non-zero" >&2; exit 1; }; APID[$a]=""; done
echo "all agents stopped cleanly"
for n in "${NODES[@]}"; do kill -TERM "${PID[$n]}"; done
for n in "${NODES[@]}"; do wait "${PID[$n]}" || { echo "demo: $n exited non-zero" >&2; exit 1; }; PID[$n]=""; done
echo "all servers stopped cleanly"
echo
echo "Demo finished: 3 servers, a leader killed and recovered; 3 agents running hello, upgraded from 1.0.0 to 1.1.0, then 1.2.0 through a lifecycle and two approvals."
echo
echo "The web dashboard was at $UI/ui/ (every server serves it; sign in with an ACL token)."
echo "To browse it: REL_DEMO_KEEP=1 make demo (keeps this cluster up until Enter), or bin/rel-server --dev."
echo
echo "The report of this demo (bin/demo-report.html is the same as a page):"
echo "$REPORT"
