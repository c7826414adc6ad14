#!/usr/bin/env bash
# Docker cluster test: three rel-server containers and two rel-agent
# containers on a private Docker network of their own, with mutual TLS on
# every port: the CA and server certificates are made with relctl, ACLs are
# bootstrapped, and the agents enrol with a join token and the CA pin. It cuts the leader
# off the network (docker network disconnect), checks that the other two
# elect a new leader and keep working (writes, a rollout whose agents move
# off the cut-off server), reconnects it and checks that it catches up.
#
# Then the partition stage (issue 8), on a new cluster: the servers on a
# core network, and a follower with an agent network of its own shared only
# with its two agents. Cutting that follower off the core network leaves its
# agents connected to it. A release whose health check fails is rolled out
# to every host with --auto-rollback right after the cut: the rollback must
# cover the cut-off hosts too, stay running while they are away, and
# succeed once the network is back, with no cut-off host ever holding the
# rolled-back release.
#
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
# The partition stage: its networks, servers and agents.
P_CORE=rel-test-core
P_AGNET=rel-test-agents
P_SERVERS=(p-s1 p-s2 p-s3)
P_AGENTS=(p-m1 p-m2 p-m3 p-c1 p-c2)

# REL_DOCKER_STAGES picks stages (comma-separated): cut-leader, partition.
STAGES=",${REL_DOCKER_STAGES:-cut-leader,partition},"
want_stage() { [[ $STAGES == *",$1,"* ]]; }

log() { printf '\033[1m==> %s\033[0m\n' "$*"; }
cleanup() {
  local code=$?
  if [ $code -ne 0 ]; then
    echo "docker test failed (exit $code); container logs:" >&2
    for c in "${SERVERS[@]}" "${AGENTS[@]}" "${P_SERVERS[@]}" "${P_AGENTS[@]}"; do
      docker container inspect "$PFX-$c" >/dev/null 2>&1 || continue
      echo "--- $c" >&2; docker logs --tail 30 "$PFX-$c" >&2 2>&1 || true
    done
  fi
  if [ -n "${WATCH_PID:-}" ]; then kill "$WATCH_PID" 2>/dev/null || true; wait "$WATCH_PID" 2>/dev/null || true; fi
  docker rm -f $(for c in "${SERVERS[@]}" "${AGENTS[@]}" "${P_SERVERS[@]}" "${P_AGENTS[@]}"; do echo "$PFX-$c"; done) >/dev/null 2>&1 || true
  docker network rm "$NET" "$P_CORE" "$P_AGNET" >/dev/null 2>&1 || true
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
PIN=$("$CTX/relctl" tls cert info "$PKI/ca.pem" -o json | sed -n 's/.*"pin": "\(sha256:[0-9a-f]*\)".*/\1/p' | head -1)
[ -n "$PIN" ] || { echo "docker-test: no CA pin in relctl tls cert info" >&2; exit 1; }

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

if want_stage cut-leader; then
  docker network rm "$NET" >/dev/null 2>&1 || true
  docker network create "$NET" >/dev/null
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
  echo "leader cut off and back: passed"
fi

if want_stage partition; then
  # Stage 1's containers are done with: free their memory.
  docker rm -f $(for c in "${SERVERS[@]}" "${AGENTS[@]}"; do echo "$PFX-$c"; done) >/dev/null 2>&1 || true
  unset REL_ADDR TOKEN_FILE

  log "Partition stage: a core network for the servers, an agent network for the follower to be cut off"
  # Pinned addresses need subnets of our own: random 10.X.Y.0/24s, another
  # pick when Docker says one overlaps a network it has.
  make_net() { # make_net NAME: prints the subnet's first three octets
    local i sub
    docker network rm "$1" >/dev/null 2>&1 || true
    for i in $(seq 20); do
      sub="10.$((100 + RANDOM % 150)).$((RANDOM % 256))"
      if docker network create --subnet "$sub.0/24" "$1" >/dev/null 2>&1; then echo "$sub"; return 0; fi
    done
    echo "docker-test: no free 10.X.Y.0/24 for network $1" >&2; return 1
  }
  CORE=$(make_net "$P_CORE")
  AGN=$(make_net "$P_AGNET")
  S1=$CORE.11 S2=$CORE.12 S3_CORE=$CORE.13 S3=$AGN.2
  # p-s3, the one to be cut off, listens on its agent-network address:
  # once it is off the core network its agents still reach it there. Its
  # peers reach that address through its core address (a host route in
  # their containers); it reaches them on the core network directly.
  # Without the core network it reaches no peer and no peer reaches it.
  pserver() { # pserver NAME ADDR [flags]
    local n=$1 addr=$2 id=${1#p-}; shift 2
    echo "exec rel-server --node-id $id --data-dir /data --grpc-addr $addr:7400 --raft-addr $addr:7401 --http-addr $addr:7480 \
      --heartbeat-interval 500ms --agent-grace 3s \
      --ca-file /pki/ca.pem --cert-file /pki/$id.pem --key-file /pki/$id-key.pem --ca-key-file /pki/ca-key.pem $*"
  }
  docker run -d --name "$PFX-p-s1" --network "$P_CORE" --ip "$S1" --cap-add NET_ADMIN -v "$PKI:/pki:ro" "$IMG" \
    "ip route add $S3/32 via $S3_CORE && $(pserver p-s1 "$S1" --bootstrap)" >/dev/null
  docker run -d --name "$PFX-p-s2" --network "$P_CORE" --ip "$S2" --cap-add NET_ADMIN -v "$PKI:/pki:ro" "$IMG" \
    "ip route add $S3/32 via $S3_CORE && $(pserver p-s2 "$S2" --join "$S1:7400")" >/dev/null
  docker create --name "$PFX-p-s3" --network "$P_AGNET" --ip "$S3" -v "$PKI:/pki:ro" "$IMG" \
    "$(pserver p-s3 "$S3" --join "$S1:7400")" >/dev/null
  docker network connect --ip "$S3_CORE" "$P_CORE" "$PFX-p-s3"
  docker start "$PFX-p-s3" >/dev/null

  MAJ="$S1:7400,$S2:7400"
  # prelctl runs relctl on the core network against the majority's two
  # servers (or REL_ADDR), as the partition cluster's management token.
  prelctl() {
    docker run --rm --network "$P_CORE" -v "$WORK:/work" -v "$PKI:/pki:ro" -e REL_CA_FILE=/pki/ca.pem \
      -e REL_TOKEN_FILE=/work/p-management.token -e REL_ADDR="${REL_ADDR:-$MAJ}" "$IMG" "relctl $*"
  }
  # s3relctl asks p-s3 itself, from its agent network (it answers there
  # even while cut off).
  s3relctl() {
    docker run --rm --network "$P_AGNET" -v "$WORK:/work" -v "$PKI:/pki:ro" -e REL_CA_FILE=/pki/ca.pem \
      -e REL_TOKEN_FILE=/work/p-management.token -e REL_ADDR="$S3:7400" "$IMG" "relctl $*"
  }
  pboot() { docker run --rm --network "$P_CORE" -v "$WORK:/work" -v "$PKI:/pki:ro" -e REL_CA_FILE=/pki/ca.pem -e REL_ADDR="$S1:7400" "$IMG" \
    "relctl acl bootstrap --out /work/p-management.token"; }
  wait_for 30 "the partition cluster's management token" pboot
  pthree() { local m; m=$(prelctl "cluster members -o json"); [ "$(echo "$m" | grep -c '"follower"')" = 2 ] && [ "$(echo "$m" | grep -c '"Voter"')" = 3 ]; }
  pleader() { prelctl "cluster members -o json" | tr -d ' \n' | grep -o '"id":"s[0-9]","role":"leader"' | cut -d'"' -f4; }
  wait_for 60 "a three-voter partition cluster" pthree
  # The server to cut off must be a follower. It joined last and is one
  # unless an election happened (a busy machine can miss a leader lease);
  # then a graceful restart hands its leadership on (a leader transfers it
  # before stopping). Checked again right before the cut.
  s3_follows() {
    local i l
    for i in 1 2 3; do
      l=$(pleader || true)
      if [ -n "$l" ] && [ "$l" != s3 ]; then return 0; fi
      echo "leader is '$l': restarting s3 so that it follows"
      docker restart -t 20 "$PFX-p-s3" >/dev/null
      wait_for 60 "three voters again" pthree
      [ "${1:-}" != agents ] || wait_for 60 "five connected agents again" all_connected
    done
    echo "docker-test: s3 still leads after 3 restarts" >&2; return 1
  }
  s3_follows
  prelctl "cluster members"

  log "Five agents: three on the core network with s1 and s2, two beside s3 on its agent network only"
  prelctl "agent token create --uses 5 --ttl 10m --description docker-partition --out /work/p-join.token" >/dev/null
  pagent() { # pagent NAME NETWORK SERVER
    docker run -d --name "$PFX-$1" --hostname "$1" --network "$2" -v "$WORK:/work:ro" "$IMG" \
      "exec rel-agent --node-id $1 --servers $3:7400 --labels role=web --data-dir /var/lib/rel-agent --install-root /opt/rel \
       --join-token-file /work/p-join.token --ca-pin $PIN --log-level debug" >/dev/null
  }
  pagent p-m1 "$P_CORE" "$S1"
  pagent p-m2 "$P_CORE" "$S1"
  pagent p-m3 "$P_CORE" "$S2"
  pagent p-c1 "$P_AGNET" "$S3"
  pagent p-c2 "$P_AGNET" "$S3"
  connected() { prelctl "agent show $1 -o json" | grep -q '"connected": true'; }
  not_connected() { prelctl "agent show $1 -o json" | grep -q '"connected": false'; }
  all_connected() { [ "$(prelctl "agent list -o json" | grep -c '"connected": true')" = "${#P_AGENTS[@]}" ]; }
  wait_for 60 "five connected agents" all_connected

  # rstate ID: a rollout's state; rhost ID AGENT: its host's state and
  # target version ("dispatched 1.0.0"), from rollout status -o json.
  rjson() { prelctl "rollout status $1 -o json" | tr -d ' \n'; }
  rstate() { rjson "$1" | grep -o '"state":"[a-z_]*"' | head -1 | cut -d'"' -f4; }
  rhost() {
    rjson "$1" | grep -o "\"agent_id\":\"$2\",\"wave\":[0-9]*,\"state\":\"[a-z_]*\",\"phase\":\"[a-z_]*\",\"version\":\"[^\"]*\",\"previous_version\":\"[^\"]*\",\"target_version\":\"[^\"]*\"" |
      sed 's/.*"state":"\([a-z_]*\)".*"target_version":"\([^"]*\)"/\1 \2/'
  }
  is_state() { [ "$(rstate "$1")" = "$2" ]; }
  not_state() { local s; s=$(rstate "$1") && [ -n "$s" ] && [ "$s" != "$2" ]; }

  log "1.0.0 on every host"
  prelctl "app create hello" >/dev/null
  prelctl "env create web --selector role=web" >/dev/null
  prelctl "release create hello 1.0.0 --artifact /work/hello-1.0.0.tar.gz" >/dev/null
  ID=$(prelctl "rollout start hello@1.0.0 --env web -o json" | sed -n 's/^  "id": "\(.*\)",$/\1/p')
  prelctl "rollout status $ID --watch --timeout 120s" >/dev/null
  for a in "${P_AGENTS[@]}"; do
    cur=$(docker exec "$PFX-$a" readlink /opt/rel/hello/current)
    [ "$cur" = releases/1.0.0 ] || { echo "docker-test: $a: current -> '$cur' after the rollout of 1.0.0" >&2; exit 1; }
  done

  # 2.0.0 is the sample app with a health check that always fails.
  BAD="$WORK/bad"
  mkdir -p "$BAD"
  tar -C "$BAD" -xzf "$WORK/hello-1.0.0.tar.gz"
  echo 2.0.0 >"$BAD/VERSION"
  cat >"$BAD/rel.yaml" <<'YAML'
run: ./hello serve
health:
  exec: "false"
  interval: 200ms
  timeout: 2s
  healthy_after: 1s
  deadline: 5s
stop_timeout: 5s
YAML
  tar -C "$BAD" -czf "$WORK/hello-2.0.0-bad.tar.gz" hello rel.yaml VERSION
  BAD_SHA=$(sha256sum "$WORK/hello-2.0.0-bad.tar.gz" | cut -d' ' -f1)
  prelctl "release create hello 2.0.0 --artifact /work/hello-2.0.0-bad.tar.gz" >/dev/null
  s3_has_2() { s3relctl "release list hello" | grep -q 2.0.0; }
  wait_for 30 "s3 to have release 2.0.0" s3_has_2

  # Every cut-off host's disk is looked at from the cut to the end: no
  # 2.0.0 release directory (complete or being extracted), no download of
  # its artifact, current never on it. What is found goes to p-watch.log.
  : >"$WORK/p-watch.log"
  watch_cut() {
    local a found
    while :; do
      for a in p-c1 p-c2; do
        found=$(docker exec "$PFX-$a" sh -c "ls -a /opt/rel/hello/releases /var/lib/rel-agent/downloads 2>/dev/null; readlink /opt/rel/hello/current" |
          grep -E "(^|[^0-9.])2\.0\.0([^0-9.]|\$)|$BAD_SHA" || true)
        [ -z "$found" ] || echo "$(date +%T.%N) $a: $found" >>"$WORK/p-watch.log"
      done
      sleep 0.2
    done
  }
  watch_cut &
  WATCH_PID=$!

  s3_follows agents
  log "Cutting s3 off the core network (leader: $(pleader)); its agents stay connected to it"
  docker network disconnect "$P_CORE" "$PFX-p-s3"
  cut_at=$SECONDS
  OUT=$(prelctl "rollout start hello@2.0.0 --env web --strategy all-at-once --auto-rollback --max-failures 0 -o json")
  ORIG=$(echo "$OUT" | sed -n 's/^  "id": "\(.*\)",$/\1/p')
  [ -n "$ORIG" ] || { echo "docker-test: no rollout id in: $OUT" >&2; exit 1; }
  for a in p-c1 p-c2; do
    echo "$OUT" | grep -q "\"agent_id\": \"$a\"" || { echo "docker-test: the rollout of 2.0.0, started $((SECONDS - cut_at))s after the cut, does not target $a: $OUT" >&2; exit 1; }
  done
  # 100 writes between the rollout's dispatch and its rollback, more than
  # raft sends in one AppendEntries: s3, catching up after the heal,
  # applies the dispatch well before the rollback, and must not hand its
  # agents 2.0.0 in between.
  docker run --rm --network "$P_CORE" -v "$WORK:/work" -v "$PKI:/pki:ro" -e REL_CA_FILE=/pki/ca.pem \
    -e REL_TOKEN_FILE=/work/p-management.token -e REL_ADDR="$MAJ" "$IMG" \
    'for w in 0 1 2 3 4 5 6 7; do (for i in 0 1 2 3 4 5 6 7 8 9 10 11 12; do relctl app create "churn-$w-$i" >/dev/null || exit 1; done) & done; fails=0; for j in $(jobs -p); do wait $j || fails=1; done; exit $fails'
  st=$(rstate "$ORIG")
  echo "104 writes done $((SECONDS - cut_at))s after the cut; rollout $ORIG is $st"
  wait_for 60 "rollout $ORIG to fail" not_state "$ORIG" running
  st=$(rstate "$ORIG")
  [ "$st" = rolling_back ] || { echo "docker-test: rollout $ORIG is '$st', want rolling_back while s3's hosts are away" >&2; prelctl "rollout status $ORIG" >&2; exit 1; }
  RB=$(rjson "$ORIG" | grep -o '"rolled_back_by":"[^"]*"' | head -1 | cut -d'"' -f4)
  echo "rollout $ORIG failed $((SECONDS - cut_at))s after the cut; automatic rollback $RB"

  log "The rollback covers every host, the cut-off ones too, and waits for them"
  for a in "${P_AGENTS[@]}"; do
    h=$(rhost "$RB" "$a")
    case "$a:$h" in
      p-c*:"dispatched 1.0.0" | p-m*:*" 1.0.0") ;;
      *) echo "docker-test: rollback $RB has $a as '$h', want it taken back to 1.0.0 (dispatched at once for the cut-off hosts)" >&2; prelctl "rollout status $RB" >&2; exit 1 ;;
    esac
  done
  maj_back() { for a in p-m1 p-m2 p-m3; do [ "$(rhost "$RB" "$a")" = "healthy 1.0.0" ] || return 1; done; }
  wait_for 60 "the majority's hosts back on 1.0.0" maj_back
  cut_down() { not_connected p-c1 && not_connected p-c2; }
  wait_for 60 "s3's agents to be recorded down" cut_down
  echo "s3's agents recorded down $((SECONDS - cut_at))s after the cut"
  st=$(rstate "$RB")
  [ "$st" = running ] || { echo "docker-test: rollback $RB is '$st' while s3's hosts are away; want running" >&2; prelctl "rollout status $RB" >&2; exit 1; }
  for a in p-c1 p-c2; do
    h=$(rhost "$RB" "$a")
    [ "${h%% *}" != healthy ] || { echo "docker-test: rollback $RB has the cut-off $a healthy while it is away" >&2; exit 1; }
  done
  prelctl "rollout status $RB"

  log "Reconnecting s3: its agents are recorded connected again, the rollback ends"
  docker network connect --ip "$S3_CORE" "$P_CORE" "$PFX-p-s3"
  heal_at=$SECONDS
  echo "healed at $(date -u +%T.%N | cut -c1-12)"
  wait_for 15 "every agent recorded connected" all_connected
  echo "every agent recorded connected again $((SECONDS - heal_at))s after the heal; s3 says:"
  docker logs "$PFX-p-s3" 2>&1 | grep -E 'recording it connected again|could not record a live agent' | sed 's/^time=[0-9-]*T\([0-9:.]*\)Z .*msg="\([^"]*\)".* agent=\([^ ]*\).*/  \1 \3: \2/'
  wait_for 60 "rollback $RB to end" not_state "$RB" running
  st=$(rstate "$RB")
  [ "$st" = succeeded ] || { echo "docker-test: rollback $RB ended '$st'" >&2; prelctl "rollout status $RB" >&2; exit 1; }
  st=$(rstate "$ORIG")
  [ "$st" = rolled_back ] || { echo "docker-test: rollout $ORIG is '$st' after its rollback, want rolled_back" >&2; exit 1; }
  echo "rollback $RB succeeded $((SECONDS - heal_at))s after the heal; rollout $ORIG rolled_back"
  # Once s3 has applied the rollback's end, it has streamed its agents
  # whatever it ever will of this story.
  s3_done() { s3relctl "rollout status $RB -o json" | tr -d ' \n' | grep -q '"state":"succeeded"'; }
  wait_for 30 "s3 to apply the rollback's end" s3_done
  prelctl "rollout status $RB"

  kill "$WATCH_PID" 2>/dev/null || true
  wait "$WATCH_PID" 2>/dev/null || true
  WATCH_PID=
  if [ -s "$WORK/p-watch.log" ]; then
    echo "docker-test: a cut-off host held the rolled-back release:" >&2; cat "$WORK/p-watch.log" >&2; exit 1
  fi
  for a in "${P_AGENTS[@]}"; do
    out=$(docker exec "$PFX-$a" sh -c 'wget -qO- "http://$(cat /opt/rel/hello/current/listen.addr)/"')
    [ "$out" = "hello from $a, version 1.0.0" ] || { echo "docker-test: $a answered '$out' at the end" >&2; exit 1; }
  done
  for a in p-c1 p-c2; do
    echo "$a: $(docker exec "$PFX-$a" busybox ls /opt/rel/hello/releases | tr '\n' ' ')"
    if docker exec "$PFX-$a" busybox ls -a /opt/rel/hello/releases | grep -q 2.0.0; then
      echo "docker-test: $a has 2.0.0 in its release directory" >&2; exit 1
    fi
    if docker logs "$PFX-$a" 2>&1 | grep -E '=2\.0\.0([^0-9.]|$)'; then
      echo "docker-test: $a acted on or reported 2.0.0 (log lines above)" >&2; exit 1
    fi
  done
  echo "partition: passed"
fi
echo
echo "docker test passed: $(echo "$STAGES" | sed 's/^,//; s/,$//; s/,/, /g')."
