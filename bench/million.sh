#!/usr/bin/env bash
# One million SSE connections on one machine: NODES sseloop processes share
# one port (SO_REUSEPORT) and one redis-server; ssebench worker processes,
# each dialing from its own source address (127.0.0.2, .3, ...), hold CONNS
# streams, each on its own per-user key and on one shared key. It holds
# them idle (memory, idle CPU over QUIET), then publishes EVENTS events to
# the shared key (each reaches every stream before the next is sent) and
# one event to each of SAMPLE per-user keys, and reports connections held,
# connect rate, per-node and total RSS, the MemAvailable drop per
# connection, idle CPU, deliveries expected/received/lost/duplicates,
# latency and CPU per delivery.
#
#   bash bench/million.sh                        # 1,000,000 streams
#   CONNS=60000 NODES=4 bash bench/million.sh    # the scaled-down CI run
#
# Why so many processes: the open-files cap here is 20,000 per process
# (ulimit -Hn, which root cannot raise in this container), so a node holds
# at most PER_NODE streams and a worker PER_WORKER. Kernel settings it
# needs are printed, set when writable (root) and restored at exit. Needs
# redis-server. Every process it starts is stopped by PID on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
ulimit -n "$(ulimit -Hn)" # children inherit the soft limit

CONNS=${CONNS:-1000000}
PER_NODE=${PER_NODE:-18000}
NODES=${NODES:-$(( (CONNS + PER_NODE - 1) / PER_NODE ))}
PER_WORKER=${PER_WORKER:-18000}
# Connection attempts in flight per worker. The connect rate is bound by
# CPU (about 8,000/s here at a million); an attempt that waits longer than
# 10 s for its response head fails. At 1,024 x 56 workers, 57,000 attempts
# queued for ~7 s on average and 17,908 of a million timed out; 256 keeps
# the queue near 2 s.
INFLIGHT=${INFLIGHT:-256}
LOOPS=${LOOPS:-1}            # event loops per node: 2 cores, many nodes
QUIET=${QUIET:-10s}          # idle CPU window
SETTLE=${SETTLE:-5s}         # pause after connecting, before memory is read
EVENTS=${EVENTS:-1}          # broadcasts to the shared key
SAMPLE=${SAMPLE:-1000}       # per-user keys that get one event each
HEARTBEAT=${HEARTBEAT:-30s}  # sseloop's default: one ":" per stream per 30 s
POLL=${POLL:-100ms}          # sseloop's default: each node reads the Redis feed 10 times a second
PRESENCE_OFF=${PRESENCE_OFF:-true}
OUT=${OUT:-bench/results/million.json}
# PRESENCE_OFF: true (default) runs the nodes with --presence.off: nothing
# here asks who is online, and presence on Redis costs every node a count
# per subscribed key. PRESENCE_OFF=false measures it; PRESENCE_OFF= (empty)
# passes no flag, for a SERVER_BIN older than the setting.
# SERVER_BIN: an sseloop binary to run instead of building this checkout.
mkdir -p "$(dirname "$OUT")"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PORT=$(free_port)
RPORT=$(free_port)
tmp=$(mktemp -d)
pids=()
restore=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do
    for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$p" 2>/dev/null || true
  done
  for r in "${restore[@]}"; do
    echo "restore: sysctl -w ${r%%=*}=\"${r#*=}\""
    sysctl -q -w "$r" || echo "restore failed: $r"
  done
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# at_least KEY VALUE: raise a single-valued sysctl to VALUE when lower.
at_least() {
  local key=$1 want=$2 cur
  cur=$(sysctl -n "$key")
  if (( cur >= want )); then
    echo "sysctl $key = $cur (enough)"
    return
  fi
  if sysctl -q -w "$key=$want" 2>/dev/null; then
    restore+=("$key=$cur")
    echo "sysctl $key: $cur -> $want (restored at exit)"
  else
    echo "sysctl $key = $cur: cannot raise it to $want (not root?): the run may stop early"
  fi
}
echo "== kernel settings"
# A node's loop listener gets net.core.somaxconn as its accept-queue length
# (gnet asks for the maximum); half-open handshakes queue up to
# tcp_max_syn_backlog. When either is full, SYNs are dropped and the client
# waits 1 s (then 2, 4 ...) to retry: the connect rate collapses.
at_least net.core.somaxconn 65535
at_least net.ipv4.tcp_max_syn_backlog 65535
# Two descriptors per stream (server and client end) plus slack.
at_least fs.file-max $(( 2 * CONNS + 200000 ))
echo "sysctl net.ipv4.ip_local_port_range = $(sysctl -n net.ipv4.ip_local_port_range | tr '\t' ' ') (each worker spreads its streams over source addresses, at most 5,000 each)"
# Idle streams queue nothing, but a broadcast queues an event on every
# socket at once: past tcp_mem's maximum (pages, machine-wide) the kernel
# drops and aborts connections ("TCP: out of memory"). Give a broadcast to
# CONNS streams about 8 KiB per stream of room.
read -r mem_lo mem_press mem_max < <(sysctl -n net.ipv4.tcp_mem)
if (( mem_max < 2 * CONNS )); then
  if sysctl -q -w net.ipv4.tcp_mem="$CONNS $(( 3 * CONNS / 2 )) $(( 2 * CONNS ))" 2>/dev/null; then
    restore+=("net.ipv4.tcp_mem=$mem_lo $mem_press $mem_max")
    echo "sysctl net.ipv4.tcp_mem: $mem_lo $mem_press $mem_max -> $CONNS $(( 3 * CONNS / 2 )) $(( 2 * CONNS )) pages (restored at exit)"
  else
    echo "sysctl net.ipv4.tcp_mem = $mem_lo $mem_press $mem_max pages: cannot raise it: a broadcast may hit its maximum"
  fi
else
  echo "sysctl net.ipv4.tcp_mem = $mem_lo $mem_press $mem_max pages (enough)"
fi
echo "open files per process: $(ulimit -n) (soft), $(ulimit -Hn) (hard)"
if (( PER_NODE + 100 > $(ulimit -n) || PER_WORKER + 100 > $(ulimit -n) )); then
  echo "million.sh: PER_NODE and PER_WORKER must stay below the open-files limit $(ulimit -n)" >&2
  exit 2
fi
if (( CONNS > NODES * PER_NODE + NODES * PER_NODE / 20 )); then
  echo "million.sh: $NODES nodes cannot hold $CONNS streams at $PER_NODE each" >&2
  exit 2
fi

if [ -n "${SERVER_BIN:-}" ]; then
  cp "$SERVER_BIN" "$tmp/sseloop"   # e.g. an older build, to compare
else
  go build -o "$tmp/sseloop" ./cmd/sseloop
fi
go build -o "$tmp/ssebench" ./cmd/ssebench

redis-server --port "$RPORT" --bind 127.0.0.1 --save "" --appendonly no --dir "$tmp" \
  --maxclients 10000 >"$tmp/redis.log" 2>&1 &
redis_pid=$!
pids+=("$redis_pid")
for _ in $(seq 100); do redis-cli -p "$RPORT" ping >/dev/null 2>&1 && break; sleep 0.1; done

node_pids=()
for i in $(seq "$NODES"); do
  "$tmp/sseloop" --listen "127.0.0.1:$PORT" --reuseport --loops "$LOOPS" \
    --store.driver redis --store.redis.addr "127.0.0.1:$RPORT" --store.redis.prefix "million:" \
    --limits.max_conns "$(( $(ulimit -n) - 200 ))" --heartbeat "$HEARTBEAT" --poll "$POLL" \
    ${PRESENCE_OFF:+--presence.off="$PRESENCE_OFF"} --log.level warn >"$tmp/node$i.log" 2>&1 &
  pids+=($!)
  node_pids+=($!)
done
for _ in $(seq 300); do
  curl -fs "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1 && break
  sleep 0.1
done
for p in "${node_pids[@]}"; do
  kill -0 "$p" 2>/dev/null || { echo "million.sh: node $p exited: $(cat "$tmp"/node*.log | tail -5)" >&2; exit 1; }
done

procs=$(( (CONNS + PER_WORKER - 1) / PER_WORKER ))
counters='TcpExtListenOverflows|TcpExtListenDrops|TcpExtTCPSynRetrans|TcpExtSyncookiesSent|TcpExtTCPReqQFullDrop|TcpExtTCPAbortOnMemory'
snap() { { nstat -az 2>/dev/null || true; } | awk -v re="^($counters)\$" '$1 ~ re {print $1, $2}' | sort; }
before=$(snap)
echo "== $NODES sseloop nodes ($LOOPS loop each, --heartbeat $HEARTBEAT --poll $POLL) on 127.0.0.1:$PORT, redis on $RPORT; $CONNS streams from $procs workers, $INFLIGHT attempts in flight each"
"$tmp/ssebench" run --target "http://127.0.0.1:$PORT" --scenario hold --conns "$CONNS" \
  --events "$EVENTS" --sample "$SAMPLE" --procs "$procs" --inflight "$INFLIGHT" \
  --settle "$SETTLE" --quiet "$QUIET" --name "sseloop x$NODES" \
  --pid "$(IFS=,; echo "${node_pids[*]}")" --json "$OUT" &
bench_pid=$!
pids+=("$bench_pid")
wait "$bench_pid"

echo "== kernel counters during the run (whole machine: other processes count too)"
join <(echo "$before") <(snap) | awk '{printf "%-24s %d\n", $1, $3-$2}'

echo "redis: rss $(awk '/VmRSS/ {print $2}' /proc/"$redis_pid"/status) kB"
