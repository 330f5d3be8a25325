#!/usr/bin/env bash
# Scale demonstration: NODES sseloop processes share one port (SO_REUSEPORT)
# and one redis-server; ssebench holds CONNS SSE connections from worker
# processes (each with its own source address, past the per-process
# open-files cap) and publishes EVENTS events to one key that every
# connection subscribes to. An event triggered on whichever node receives the
# POST reaches the subscribers of every node through the Redis change feed.
#
#   bash bench/scale.sh                 # 6 nodes, 100,000 connections
#   NODES=3 CONNS=30000 INFLIGHT=1024 bash bench/scale.sh
#
# It reports the connect rate (per second, time to 25/50/75/100 %) and the
# kernel's listen-queue counters over the run (nstat: ListenOverflows and
# ListenDrops count handshakes dropped because an accept queue was full;
# TCPSynRetrans the SYNs clients had to send again, each costing 1 s or more).
#
# Then (STORM=1, the default) the reconnect storm at the same scale: ssebench
# starts NODES fresh nodes on the port itself (--server-nodes), every client
# subscribes to one of 100 keys, 2 events per key reach everyone, all NODES
# are killed with SIGKILL and restarted, 2 more events per key are published
# while the clients are away, and all CONNS reconnect at once with their
# Last-Event-ID (to whichever node the kernel picks). It reports the time
# until all are re-admitted and have every missed event, the restarted
# nodes' peak RSS and CPU (summed), lost, duplicates and gaps.
#
# Needs redis-server. Every process it starts is stopped by PID on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

NODES=${NODES:-6}
CONNS=${CONNS:-100000}
EVENTS=${EVENTS:-5}
INFLIGHT=${INFLIGHT:-256}   # connection attempts in flight per worker process
OUT=${OUT:-bench/results/scale.json}
STORM=${STORM:-1}
STORM_OUT=${STORM_OUT:-bench/results/scale-storm.json}
mkdir -p "$(dirname "$OUT")"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PORT=$(free_port)
RPORT=$(free_port)
tmp=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT

go build -o "$tmp/sseloop" ./cmd/sseloop
go build -o "$tmp/ssebench" ./cmd/ssebench

redis-server --port "$RPORT" --bind 127.0.0.1 --save "" --appendonly no --dir "$tmp" >"$tmp/redis.log" 2>&1 &
pids+=($!)
until redis-cli -p "$RPORT" ping >/dev/null 2>&1; do sleep 0.1; done

node_pids=()
for i in $(seq "$NODES"); do
  "$tmp/sseloop" --listen "127.0.0.1:$PORT" --reuseport \
    --store.driver redis --store.redis.addr "127.0.0.1:$RPORT" --store.redis.prefix "scale:" \
    --presence.off --log.level warn >"$tmp/node$i.log" 2>&1 &
  pids+=($!)
  node_pids+=($!)
done
for _ in $(seq 100); do
  curl -fs "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1 && break
  sleep 0.1
done

procs=$(( (CONNS + 17999) / 18000 ))
counters='TcpExtListenOverflows|TcpExtListenDrops|TcpExtTCPSynRetrans|TcpExtSyncookiesSent|TcpExtTCPReqQFullDrop'
snap() { { nstat -az 2>/dev/null || true; } | awk -v re="^($counters)\$" '$1 ~ re {print $1, $2}' | sort; }
before=$(snap)
echo "== listen backlog $(sysctl -n net.core.somaxconn) (net.core.somaxconn) per loop listener, SYN backlog $(sysctl -n net.ipv4.tcp_max_syn_backlog), $INFLIGHT attempts in flight per worker"
echo "== $NODES sseloop nodes on 127.0.0.1:$PORT (pids ${node_pids[*]}), redis on $RPORT, $CONNS connections from $procs worker processes"
"$tmp/ssebench" run --target "http://127.0.0.1:$PORT" --scenario fanout --conns "$CONNS" \
  --events "$EVENTS" --procs "$procs" --inflight "$INFLIGHT" --name "sseloop x$NODES" \
  --pid "$(IFS=,; echo "${node_pids[*]}")" --json "$OUT"

echo "== kernel counters during the run (whole machine: other processes count too)"
join <(echo "$before") <(snap) | awk '{printf "%-24s %d\n", $1, $3-$2}'

echo "== per node (connections, RSS)"
for p in "${node_pids[@]}"; do
  printf 'pid %s: rss %s kB\n' "$p" "$(awk '/VmRSS/ {print $2}' /proc/"$p"/status)"
done

[ "$STORM" = 1 ] || exit 0
echo "== reconnect storm: stopping the fan-out nodes; ssebench starts $NODES of its own on port $PORT"
for p in "${node_pids[@]}"; do kill "$p" 2>/dev/null || true; done
for p in "${node_pids[@]}"; do wait "$p" 2>/dev/null || true; done
redis-cli -p "$RPORT" flushall >/dev/null
"$tmp/ssebench" run --target "http://127.0.0.1:$PORT" --scenario storm --conns "$CONNS" \
  --procs "$procs" --inflight "$INFLIGHT" --name "sseloop x$NODES" --server-nodes "$NODES" \
  --server-cmd "$tmp/sseloop --listen 127.0.0.1:$PORT --reuseport --store.driver redis --store.redis.addr 127.0.0.1:$RPORT --store.redis.prefix storm: --presence.off --log.level warn" \
  --json "$STORM_OUT"
