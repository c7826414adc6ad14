#!/usr/bin/env bash
# Docker cluster test: three rel-server containers and two rel-agent
# containers on a private Docker network of their own, with mutual TLS on
# every port: the CA and server certificates are made with relctl, ACLs are
# bootstrapped, and the agents enrol with a join token and the CA pin. It cuts the leader
# off the network (docker network disconnect), checks that the other two
# elect a new leader and keep working (writes, a rollout whose agents move
# off the cut-off server), reconnects it and checks that it catches up.
# Everything it creates is removed at the end. Needs a Docker engine; make
# test does not run it, `make test-docker` does (and .ci/run when Docker
# answers).
set -euo pipefail
cd "$(dirname "$0")/.."

NET=rel-test-net
IMG=rel-test:latest
PFX=rel-test
WORK="$(mktemp -d -t rel-docker-XXXXXX)"
SERVERS=(s1 s2 s3)
AGENTS=(a1 a2)

log() { printf '\033[1m==> %s\033[0m\n' "$*"; }
cleanup() {
  local code=$?
  if [ $code -ne 0 ]; then
    echo "docker test failed (exit $code); container logs:" >&2
    for c in "${SERVERS[@]}" "${AGENTS[@]}"; do
      echo "--- $c" >&2; docker logs --tail 20 "$PFX-$c" >&2 2>&1 || true
    done
  fi
  docker rm -f $(for c in "${SERVERS[@]}" "${AGENTS[@]}"; do echo "$PFX-$c"; done) >/dev/null 2>&1 || true
  docker network rm "$NET" >/dev/null 2>&1 || true
  docker rmi "$IMG" >/dev/null 2>&1 || true
  rm -rf "$WORK"
  exit $code
}
trap cleanup EXIT INT TERM

if ! docker info >/dev/null 2>&1; then
  echo "docker-test: no Docker engine answers; start dockerd or skip this test" >&2
  exit 1
fi
# The image's shell: Debian's static busybox (the plain busybox package is
# dynamically linked and would not run on an empty base).
if ! dpkg -s busybox-static >/dev/null 2>&1; then
  echo "docker-test: installing Debian's busybox-static" >&2
  apt-get update -qq && apt-get install -y -qq busybox-static >/dev/null
fi

log "Building static binaries and the test image"
CTX="$WORK/image"
mkdir -p "$CTX"
for b in server:rel-server agent:rel-agent relctl:relctl; do
  CGO_ENABLED=0 go build -trimpath -o "$CTX/${b#*:}" "./cmd/${b%%:*}"
done
cp /bin/busybox "$CTX/busybox"
cp scripts/docker/Dockerfile "$CTX/Dockerfile"
docker build -q -t "$IMG" "$CTX" >/dev/null
./scripts/bundle.sh 1.0.0 "$WORK/hello-1.0.0.tar.gz" >/dev/null
./scripts/bundle.sh 2.0.0 "$WORK/hello-2.0.0.tar.gz" >/dev/null

log "Making the cluster CA and the servers' certificates (relctl tls)"
PKI="$WORK/pki"
"$CTX/relctl" tls ca create --cluster docker --dir "$PKI"
for n in "${SERVERS[@]}"; do
  "$CTX/relctl" tls cert create --server --node-id "$n" --ca-file "$PKI/ca.pem" --dir "$PKI" >/dev/null
done

docker network rm "$NET" >/dev/null 2>&1 || true
docker network create "$NET" >/dev/null

server() { # server NAME [flags]
  local n=$1; shift
  docker run -d --name "$PFX-$n" --hostname "$n" --network "$NET" -v "$PKI:/pki:ro" "$IMG" \
    "exec rel-server --node-id $n --data-dir /data --grpc-addr $n:7400 --raft-addr $n:7401 --http-addr $n:7480 --heartbeat-interval 1s --agent-grace 4s \
     --ca-file /pki/ca.pem --cert-file /pki/$n.pem --key-file /pki/$n-key.pem --ca-key-file /pki/ca-key.pem $*" >/dev/null
}
relctl() { # runs relctl in a throwaway container on the network, as the management token once there is one
  docker run --rm --network "$NET" -v "$WORK:/work" -v "$PKI:/pki:ro" -e REL_CA_FILE=/pki/ca.pem \
    -e REL_TOKEN_FILE="${TOKEN_FILE:-}" -e REL_ADDR="${REL_ADDR:-s1:7400,s2:7400,s3:7400}" "$IMG" "relctl $*"
}
wait_for() { # wait_for SECONDS WHAT COMMAND...
  local secs=$1 what=$2; shift 2
  local end=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    if [ $SECONDS -ge $end ]; then echo "docker-test: timed out after ${secs}s waiting for $what" >&2; return 1; fi
    sleep 0.5
  done
}
members_json() { relctl "cluster members -o json"; }
leader() { members_json | tr -d ' \n' | grep -o '"id":"s[0-9]","role":"leader"' | cut -d'"' -f4; }
has_leader_other_than() { local l; l=$(REL_ADDR="$2" leader) && [ -n "$l" ] && [ "$l" != "$1" ]; }
three_members() { local m; m=$(members_json); [ "$(echo "$m" | grep -c '"follower"')" = 2 ] && [ "$(echo "$m" | grep -c '"Voter"')" = 3 ]; }

log "Starting three servers on network $NET"
server s1 --bootstrap
server s2 --join s1:7400
server s3 --join s1:7400
relctl_anon_members() { TOKEN_FILE="" relctl "cluster members"; }
whoami() { TOKEN_FILE="" REL_ADDR=s1:7400 relctl "acl whoami"; }
wait_for 30 "s1 to answer over TLS" whoami
log "Bootstrapping ACLs"
boot() { REL_ADDR=s1:7400 relctl "acl bootstrap --out /work/management.token"; }
wait_for 30 "the management token" boot
export TOKEN_FILE=/work/management.token
if relctl_anon_members >/dev/null 2>&1; then echo "docker-test: an anonymous relctl listed the members" >&2; exit 1; fi
wait_for 60 "a three-member cluster" three_members
relctl "cluster members"

log "Starting two agents: each enrols with a join token and the CA pin, then rolling the sample app out"
relctl "agent token create --uses 2 --ttl 10m --description docker-agents --out /work/join.token"
PIN=$("$CTX/relctl" tls cert info "$PKI/ca.pem" -o json | sed -n 's/.*"pin": "\(sha256:[0-9a-f]*\)".*/\1/p' | head -1)
[ -n "$PIN" ] || { echo "docker-test: no CA pin in relctl tls cert info" >&2; exit 1; }
for a in "${AGENTS[@]}"; do
  docker run -d --name "$PFX-$a" --hostname "$a" --network "$NET" -v "$WORK:/work:ro" "$IMG" \
    "exec rel-agent --node-id $a --servers s1:7400,s2:7400,s3:7400 --labels role=web --data-dir /var/lib/rel-agent --install-root /opt/rel --join-token-file /work/join.token --ca-pin $PIN" >/dev/null
done
agents_up() { [ "$(relctl "agent list -o json" | grep -c '"connected": true')" = 2 ]; }
wait_for 60 "two connected agents" agents_up
relctl "app create hello"
relctl "env create web --selector role=web"
relctl "release create hello 1.0.0 --artifact /work/hello-1.0.0.tar.gz"
ID=$(relctl "rollout start hello@1.0.0 --env web -o json" | sed -n 's/^  "id": "\(.*\)",$/\1/p')
relctl "rollout status $ID --watch --timeout 120s" >/dev/null
relctl "rollout status $ID"
for a in "${AGENTS[@]}"; do
  out=$(docker exec "$PFX-$a" sh -c 'wget -qO- "http://$(cat /opt/rel/hello/current/listen.addr)/"')
  echo "$a: $out"
  [ "$out" = "hello from $a, version 1.0.0" ] || { echo "docker-test: $a answered '$out'" >&2; exit 1; }
done

L=$(leader)
log "Cutting the leader $L off the network"
docker network disconnect "$NET" "$PFX-$L"
cut_at=$SECONDS
REST=$(for s in "${SERVERS[@]}"; do [ "$s" != "$L" ] && printf '%s:7400,' "$s"; done)
REST=${REST%,}
wait_for 30 "a new leader among the others" has_leader_other_than "$L" "$REST"
echo "new leader: $(REL_ADDR=$REST leader), $((SECONDS - cut_at))s after the cut"

log "Writes and a rollout through the majority; agents on $L move"
export REL_ADDR=$REST
relctl "release create hello 2.0.0 --artifact /work/hello-2.0.0.tar.gz"
ID=$(relctl "rollout start hello@2.0.0 --env web --strategy rolling -o json" | sed -n 's/^  "id": "\(.*\)",$/\1/p')
relctl "rollout status $ID --watch --timeout 120s" >/dev/null
relctl "rollout status $ID"
for a in "${AGENTS[@]}"; do
  out=$(docker exec "$PFX-$a" sh -c 'wget -qO- "http://$(cat /opt/rel/hello/current/listen.addr)/"')
  [ "$out" = "hello from $a, version 2.0.0" ] || { echo "docker-test: $a answered '$out'" >&2; exit 1; }
done
relctl "agent list"

log "Reconnecting $L: it catches up"
docker network connect "$NET" "$PFX-$L"
unset REL_ADDR
caught_up() { REL_ADDR="$L:7400" relctl "release list hello" | grep -q "2.0.0"; }
wait_for 60 "$L to catch up" caught_up
REL_ADDR="$L:7400" relctl "release list hello"
wait_for 60 "three members again" three_members
relctl "cluster members"
echo
echo "docker test passed: 3 servers, 2 agents, leader cut off and back."
