#!/usr/bin/env bash
# Scale demonstration: NODES sseloop processes share one port (SO_REUSEPORT)
# and one redis-server; ssebench holds CONNS SSE connections from worker
# processes (each with its own source address, past the per-process
# open-files cap) and publishes EVENTS events to one key that every
# connection subscribes to. An event triggered on whichever node receives the
# POST reaches the subscribers of every node through the Redis change feed.
#
#   bash bench/scale.sh                 # 6 nodes, 100,000 connections
#   NODES=3 CONNS=30000 bash bench/scale.sh
#
# Needs redis-server. Every process it starts is stopped by PID on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

NODES=${NODES:-6}
CONNS=${CONNS:-100000}
EVENTS=${EVENTS:-5}
OUT=${OUT:-bench/results/scale.json}
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
    --log.level warn >"$tmp/node$i.log" 2>&1 &
  pids+=($!)
  node_pids+=($!)
done
for _ in $(seq 100); do
  curl -fs "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1 && break
  sleep 0.1
done

procs=$(( (CONNS + 17999) / 18000 ))
echo "== $NODES sseloop nodes on 127.0.0.1:$PORT (pids ${node_pids[*]}), redis on $RPORT, $CONNS connections from $procs worker processes"
"$tmp/ssebench" run --target "http://127.0.0.1:$PORT" --scenario fanout --conns "$CONNS" \
  --events "$EVENTS" --procs "$procs" --name "sseloop x$NODES" \
  --pid "$(IFS=,; echo "${node_pids[*]}")" --json "$OUT"

echo "== per node (connections, RSS)"
for p in "${node_pids[@]}"; do
  printf 'pid %s: rss %s kB\n' "$p" "$(awk '/VmRSS/ {print $2}' /proc/"$p"/status)"
done
