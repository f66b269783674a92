#!/usr/bin/env bash
# Benchmarks of Switch on this machine, against loopback only:
#   a. publish throughput without workers at fan-out 1, 10, 100
#   b. end-to-end deliveries/s with one and with two workers, and the
#      deliveries/s one worker sustains while publishing goes on at fixed rates
#   c. delivery latency (publish -> receiver) at a fixed publish rate
#   d. draining a backlog: jobs/s at the start, middle and end
#   e. filter cost per subscriber at publish time
#   f. peak RSS of the server and the worker
#   g. isolation: healthy deliveries/s of one worker with and without a
#      subscriber whose endpoint hangs
#   h. live stream: 1,000 SSE clients of GET /stream, each watching one of ten
#      topics, while messages are published at a fixed rate: publish -> client
#      latency, the server's RSS, and publish throughput with the clients vs without
#   i. API keys: publish throughput with an API key vs an HS256 token
# Writes bench/results/results.json and bench/results/results.md and prints the latter;
# what a run did not measure (BENCH_ONLY) is kept from the previous results.json,
# marked with the run it comes from.
#
# Settings (environment):
#   BENCH_ONLY="receiver publish e2e sustained latency backlog filter isolation stream keys"
#                           sections to run (default all): receiver capacity, a, b, b2,
#                           c, d (with f), e, g, h, i
#   BENCH_SECONDS=10        length of each timed run
#   BENCH_RUNS=3            runs per figure; the median is reported
#   BENCH_PUBLISH_FANOUTS="1 10 100"
#                           fan-outs of the publish throughput runs
#   BENCH_E2E_WORKERS="1 2" worker counts of the end-to-end runs
#   BENCH_BACKLOG=1000000   jobs enqueued for the backlog drain
#   BENCH_RATE=1000         publishes/s of the latency run
#   BENCH_SUSTAIN_RATES="600 900 1200 1500 1800"
#                           publishes/s (fan-out 10) of the sustained-rate runs
#   BENCH_SAMPLE_SECONDS=1  sampling period of the backlog drain
#   BENCH_DRAIN_TIMEOUT=900 longest wait for a queue to drain, seconds
#   BENCH_ISOLATION_SECONDS=20
#                           window over which healthy deliveries are counted (g)
#   BENCH_ISOLATION_MESSAGES=400*window
#                           messages (fan-out 101) enqueued before each part of g
#   BENCH_HANG_MS=10000     how long the hanging endpoint takes to answer (g)
#   BENCH_STREAM_CLIENTS=1000
#                           SSE clients of the live-stream runs (h)
#   BENCH_STREAM_RATE=2000  publishes/s of the live-stream latency runs (h)
#   BENCH_BIN_DIR=target/release
#                           where switch-server and switch-worker are taken from
#                           (another build, to compare; switch-bench always comes
#                           from BENCH_TOOL_DIR, default target/release)
#   BENCH_COMMIT            what the report names as the commit measured (default:
#                           this tree's HEAD, or BENCH_BIN_DIR when that is set)
#   BENCH_RESULTS_DIR=bench/results
#                           where results.{md,json}, drain.tsv and raw.jsonl go
#   BENCH_KEEP_LOGS=1       keep the temporary directory with every log
#   SWITCH_REDIS_URL        Redis to use (default redis://127.0.0.1:6379)
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

RUN_SECONDS="${BENCH_SECONDS:-10}"
RUNS="${BENCH_RUNS:-3}"
BACKLOG="${BENCH_BACKLOG:-1000000}"
RATE="${BENCH_RATE:-1000}"
SUSTAIN_RATES="${BENCH_SUSTAIN_RATES:-600 900 1200 1500 1800}"
SAMPLE="${BENCH_SAMPLE_SECONDS:-1}"
DRAIN_TIMEOUT="${BENCH_DRAIN_TIMEOUT:-900}"
ALL_SECTIONS="receiver publish e2e sustained latency backlog filter isolation stream keys"
ONLY="${BENCH_ONLY:-$ALL_SECTIONS}"
PUBLISH_FANOUTS="${BENCH_PUBLISH_FANOUTS:-1 10 100}"
E2E_WORKERS="${BENCH_E2E_WORKERS:-1 2}"
ISO_SECONDS="${BENCH_ISOLATION_SECONDS:-20}"
ISO_MESSAGES="${BENCH_ISOLATION_MESSAGES:-}"
HANG_MS="${BENCH_HANG_MS:-10000}"
STREAM_CLIENTS="${BENCH_STREAM_CLIENTS:-1000}"
STREAM_RATE="${BENCH_STREAM_RATE:-2000}"
# The live-stream clients watch s.0 ... s.9 (client i watches s.(i mod 10)); the
# latency publisher goes round these topics, so each client gets 10 % of it.
STREAM_TOPICS="s.0,s.1,s.2,s.3,s.4,s.5,s.6,s.7,s.8,s.9"
# The hanging endpoint answers within the delivery timeout: it is slow, not failing.
ISO_DELIVERY_TIMEOUT=15s
SERVER_PORT=18480
RECEIVER_PORT=18481
METRICS_PORTS=(18482 18483)
CONNECTIONS=32
THREADS=2
WORKER_CONCURRENCY=64
REDIS_URL="${SWITCH_REDIS_URL:-redis://127.0.0.1:6379}"
bin="${BENCH_BIN_DIR:-$root/target/release}"
bench_bin="${BENCH_TOOL_DIR:-$root/target/release}/switch-bench"
results_dir="${BENCH_RESULTS_DIR:-$root/bench/results}"

die() { echo "bench: $*" >&2; exit 1; }
log() { echo "[bench $(date +%H:%M:%S)] $*" >&2; }
is_uint() { [[ "$1" =~ ^[0-9]+$ ]] && [ "$1" -gt 0 ]; }
is_uint "$RUN_SECONDS" || die "BENCH_SECONDS must be a positive integer"
is_uint "$RUNS" || die "BENCH_RUNS must be a positive integer"
is_uint "$BACKLOG" || die "BENCH_BACKLOG must be a positive integer"
is_uint "$RATE" || die "BENCH_RATE must be a positive integer"
is_uint "$DRAIN_TIMEOUT" || die "BENCH_DRAIN_TIMEOUT must be a positive integer"
[[ "$SAMPLE" =~ ^[0-9]*\.?[0-9]+$ ]] || die "BENCH_SAMPLE_SECONDS must be a positive number"
is_uint "$ISO_SECONDS" || die "BENCH_ISOLATION_SECONDS must be a positive integer"
[ -n "$ISO_MESSAGES" ] || ISO_MESSAGES=$((400 * ISO_SECONDS))
is_uint "$ISO_MESSAGES" || die "BENCH_ISOLATION_MESSAGES must be a positive integer"
is_uint "$HANG_MS" || die "BENCH_HANG_MS must be a positive integer"
is_uint "$STREAM_CLIENTS" || die "BENCH_STREAM_CLIENTS must be a positive integer"
is_uint "$STREAM_RATE" || die "BENCH_STREAM_RATE must be a positive integer"
for section in $ONLY; do
  [[ " $ALL_SECTIONS " == *" $section "* ]] || die "BENCH_ONLY: unknown section \`$section\` (known: $ALL_SECTIONS)"
done
[ -n "${ONLY// /}" ] || die "BENCH_ONLY names no section"
for n in $PUBLISH_FANOUTS; do
  [[ " 1 10 100 " == *" $n "* ]] || die "BENCH_PUBLISH_FANOUTS: fan-outs are 1, 10 or 100, not $n"
done
for n in $E2E_WORKERS; do
  [[ " 1 2 " == *" $n "* ]] || die "BENCH_E2E_WORKERS: worker counts are 1 or 2, not $n"
done
runs_section() { [[ " $ONLY " == *" $1 "* ]]; }

# Every stream client is a socket of the server (and of switch-bench): both
# inherit this limit.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
if runs_section stream && [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt $((STREAM_CLIENTS + 256)) ]; then
  die "the file-descriptor limit ($(ulimit -n), hard $(ulimit -Hn)) is too low for $STREAM_CLIENTS stream clients"
fi

# ------------------------------------------------------------------ tools

if ! command -v wrk >/dev/null 2>&1; then
  log "installing wrk"
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq wrk >/dev/null
fi
for tool in wrk curl redis-cli python3; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool is required"
done
if [ ! -x "$bin/switch-server" ] || [ ! -x "$bin/switch-worker" ] || [ ! -x "$bench_bin" ]; then
  [ -z "${BENCH_BIN_DIR:-}${BENCH_TOOL_DIR:-}" ] || die "no switch-server, switch-worker or switch-bench in $bin or $bench_bin"
  log "building release binaries"
  cargo build --release
fi
rcli() { redis-cli -u "$REDIS_URL" "$@"; }
[ "$(rcli PING 2>/dev/null)" = "PONG" ] || die "Redis does not answer at $REDIS_URL"
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for p in "$SERVER_PORT" "$RECEIVER_PORT" "${METRICS_PORTS[@]}"; do
  if port_busy "$p"; then die "port $p is in use; stop what listens there"; fi
done

# ------------------------------------------------------------------ processes

work="$(mktemp -d "${TMPDIR:-/tmp}/switch-bench.XXXXXX")"
ns="bench$$x$RANDOM"
raw="$work/raw.jsonl"
: >"$raw"
receiver_pid=""
server_pid=""
clients_pid=""
worker_pids=()
# Extra environment of the next worker started (NAME=value...).
worker_env=()

stop_pid() { # pid [grace seconds]
  local pid="$1" grace="${2:-10}" i
  [ -n "$pid" ] || return 0
  kill -TERM "$pid" 2>/dev/null || return 0
  for ((i = 0; i < grace * 10; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  local pid
  for pid in "${worker_pids[@]}"; do stop_pid "$pid" 35; done
  stop_pid "$clients_pid" 20
  stop_pid "$server_pid" 10
  stop_pid "$receiver_pid" 5
  # Every key of this run's namespace.
  rcli --scan --pattern "{$ns}*" 2>/dev/null | while read -r key; do
    rcli DEL "$key" >/dev/null 2>&1 || true
  done
  if [ "$rc" -ne 0 ] || [ "${BENCH_KEEP_LOGS:-}" = "1" ]; then
    echo "bench: logs kept in $work" >&2
  else
    rm -rf "$work"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

export SWITCH_JWT_SECRET="bench-secret-$RANDOM$RANDOM$RANDOM"
export SWITCH_DATABASE_URL="sqlite://$work/switch.db"
export SWITCH_REDIS_URL="$REDIS_URL"
export SWITCH_QUEUE_NAMESPACE="$ns"
export SWITCH_SERVER_ADDR="127.0.0.1:$SERVER_PORT"
export SWITCH_REFRESH_INTERVAL=1s
export SWITCH_WORKER_CONCURRENCY="$WORKER_CONCURRENCY"
base="http://127.0.0.1:$SERVER_PORT"
receiver="http://127.0.0.1:$RECEIVER_PORT"
stream="{$ns}:jobs"
msglog="{$ns}:log"
live_flag="{$ns}:live:on"
live_stream="{$ns}:live"
delayed="{$ns}:delayed"
parked="{$ns}:parked"

wait_http() { # url seconds
  local i
  for ((i = 0; i < $2 * 10; i++)); do
    curl -fsS -o /dev/null "$1" 2>/dev/null && return 0
    sleep 0.1
  done
  return 1
}

start_worker() { # index log-name
  local i="$1" logf="$work/$2.log"
  env "${worker_env[@]}" SWITCH_WORKER_METRICS_ADDR="127.0.0.1:${METRICS_PORTS[$i]}" \
    "$bin/switch-worker" >>"$logf" 2>&1 &
  worker_pids+=($!)
  wait_http "http://127.0.0.1:${METRICS_PORTS[$i]}/health" 30 ||
    die "worker $i did not start; see $logf"
}

stop_workers() {
  local pid
  for pid in "${worker_pids[@]}"; do stop_pid "$pid" 35; done
  worker_pids=()
}

now_ns() { date +%s%N; }
secs_since() { # start (ns) -> seconds elapsed, e.g. 1.234567
  local d=$(($(date +%s%N) - $1))
  printf '%d.%06d' $((d / 1000000000)) $(((d % 1000000000) / 1000))
}
recv_reset() { curl -fsS -X POST "$receiver/__reset" >/dev/null; }
recv_stats() { curl -fsS "$receiver/__stats"; }
recv_count() { recv_stats | grep -o '"count":[0-9]*' | cut -d: -f2; }
json_get() { python3 -c 'import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])' "$1" "$2"; }
record() { echo "$1" >>"$raw"; }

# Empties the queue of this namespace (the stream, the retry set and the jobs
# parked per subscriber) and recreates the consumer group.
reset_queue() {
  rcli DEL "$stream" "$delayed" "$parked" >/dev/null
  rcli --scan --pattern "$parked:*" | while read -r key; do
    rcli DEL "$key" >/dev/null
  done
  rcli XGROUP CREATE "$stream" workers 0 MKSTREAM >/dev/null
}
# Jobs parked for subscribers at their in-flight limit.
parked_jobs() {
  local n=0 key
  while read -r key; do
    [ -n "$key" ] && n=$((n + $(rcli LLEN "$key")))
  done < <(rcli --scan --pattern "$parked:*")
  echo "$n"
}

# Runs wrk against /publish on TOPIC for RUN_SECONDS with the admin token (or
# the credential given); prints wrk's JSON summary.
wrk_publish() { # topic [credential]
  local out="$work/wrk.out"
  TOPIC="$1" TOKEN="${2:-$token}" wrk -t"$THREADS" -c"$CONNECTIONS" -d"${RUN_SECONDS}s" --timeout 10s \
    -s "$root/bench/publish.lua" "$base" >"$out" 2>&1 || die "wrk failed: $(cat "$out")"
  grep '^WRK_JSON ' "$out" | tail -1 | cut -c10-
}

# Waits until the queue is empty and the receiver has at least EXPECTED requests;
# prints "<seconds waited> <timed out 0|1>".
wait_drained() { # expected
  local expected="$1" start deadline xlen zcard count
  start="$(now_ns)"
  deadline=$(($(date +%s) + DRAIN_TIMEOUT))
  while :; do
    xlen="$(rcli XLEN "$stream")"
    zcard="$(rcli ZCARD "$delayed")"
    count="$(recv_count)"
    if [ "$xlen" -eq 0 ] && [ "$zcard" -eq 0 ] && [ "$count" -ge "$expected" ]; then
      echo "$(secs_since "$start") 0"
      return
    fi
    if [ "$(date +%s)" -ge "$deadline" ]; then
      log "queue not drained after ${DRAIN_TIMEOUT}s (xlen=$xlen delayed=$zcard received=$count of $expected)"
      echo "$(secs_since "$start") 1"
      return
    fi
    sleep 0.05
  done
}

# WARN and ERROR lines of logs (text or JSON format, colours removed).
problem_lines() { # file...
  LC_ALL=C grep -hE 'WARN|ERROR' "$@" 2>/dev/null | sed 's/\x1b\[[0-9;]*m//g' |
    grep -E '^\S+\s+(WARN|ERROR)\b|"level":"(WARN|ERROR)"' || true
}

# ------------------------------------------------------------------ machine

cpu_model="$(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | cut -d: -f2- | sed 's/^ *//' || true)"
mem_total_mb=$(($(grep MemTotal /proc/meminfo | awk '{print $2}') / 1024))
redis_version="$(redis-server --version 2>/dev/null || rcli INFO server | grep redis_version | tr -d '\r')"
log "machine: $(nproc) cores ($cpu_model), ${mem_total_mb} MB, $redis_version"
python3 - "$raw" <<EOF
import json, sys, platform, subprocess
def sh(c):
    try:
        return subprocess.run(c, shell=True, capture_output=True, text=True, cwd="$root").stdout.strip()
    except Exception:
        return ""
with open(sys.argv[1], "a") as f:
    f.write(json.dumps({"kind": "machine",
        "nproc": int(sh("nproc") or 0),
        "cpu_model": """$cpu_model""",
        "memory_mb": $mem_total_mb,
        "kernel": platform.release(),
        "redis": """$redis_version""",
        "rustc": sh("rustc --version"),
        "wrk": sh("wrk -v 2>&1 | head -1"),
        "commit": """${BENCH_COMMIT:-}""" or (
            ("binaries of " + """${BENCH_BIN_DIR:-}""") if """${BENCH_BIN_DIR:-}""" else
            sh("git rev-parse --short HEAD") + (" (with local changes)" if sh("git status --porcelain --untracked-files=no") else "")),
        "binaries": """$bin""",
        "date": sh("date -u +%Y-%m-%dT%H:%M:%SZ"),
        "settings": {"seconds": $RUN_SECONDS, "runs": $RUNS, "backlog": $BACKLOG, "rate": $RATE,
                     "only": "$ONLY".split(),
                     "publish_fanouts": [int(x) for x in "$PUBLISH_FANOUTS".split()],
                     "e2e_workers": [int(x) for x in "$E2E_WORKERS".split()],
                     "sustain_rates": [int(x) for x in "$SUSTAIN_RATES".split()],
                     "sample_seconds": $SAMPLE, "wrk_threads": $THREADS, "wrk_connections": $CONNECTIONS,
                     "worker_concurrency": $WORKER_CONCURRENCY, "database": "SQLite (temporary file)",
                     "isolation_seconds": $ISO_SECONDS, "isolation_messages": $ISO_MESSAGES,
                     "hang_ms": $HANG_MS, "isolation_delivery_timeout": "$ISO_DELIVERY_TIMEOUT",
                     "stream_clients": $STREAM_CLIENTS, "stream_rate": $STREAM_RATE,
                     "stream_topics": "$STREAM_TOPICS".split(","),
                     "fd_limit": """$(ulimit -n)""",
                     "subscriber_concurrency": """${SWITCH_SUBSCRIBER_CONCURRENCY:-8 (default)}""",
                     "log_level": """${RUST_LOG:-info (default)}"""}}) + "\n")
EOF

# ------------------------------------------------------------------ receiver

"$bench_bin" receiver --addr "127.0.0.1:$RECEIVER_PORT" --workers 2 --hang-ms "$HANG_MS" >"$work/receiver.log" 2>&1 &
receiver_pid=$!
wait_http "$receiver/__stats" 10 || die "receiver did not start; see $work/receiver.log"
if runs_section receiver; then
  cat >"$work/hook.lua" <<'EOF'
wrk.method = "POST"
wrk.body = '{"n": 1}'
wrk.headers["Content-Type"] = "application/json"
EOF
  log "receiver capacity (wrk -t$THREADS -c$CONNECTIONS -d5s)"
  wrk -t"$THREADS" -c"$CONNECTIONS" -d5s -s "$work/hook.lua" "$receiver/hook" >"$work/wrk-receiver.out" 2>&1
  receiver_rps="$(awk '/^Requests\/sec:/ {print $2}' "$work/wrk-receiver.out")"
  record "{\"kind\": \"receiver\", \"requests_per_s\": ${receiver_rps:-0}}"
  log "receiver: ${receiver_rps} requests/s"
fi

# ------------------------------------------------------------------ server and subscribers

token="$("$bin/switch-server" --print-dev-token)"
"$bin/switch-server" >"$work/server.log" 2>&1 &
server_pid=$!
wait_http "$base/health" 30 || die "server did not start; see $work/server.log"

# bench.f1, bench.f10, bench.f100: 1, 10, 100 subscribers. For the isolation
# runs, bench.iso.base: 101 healthy subscribers; bench.iso.hang: 100 healthy and
# one whose endpoint hangs (the receiver's /__hang), subscribed first.
python3 - "$work/switch.db" "$receiver" <<'EOF'
import sqlite3, sys
db, receiver = sys.argv[1], sys.argv[2]
con = sqlite3.connect(db, timeout=30)
rows = []
for n in (1, 10, 100):
    rows += [(f"bench.f{n}", f"{receiver}/hook/f{n}/{i}") for i in range(n)]
rows += [("bench.iso.base", f"{receiver}/hook/iso-base/{i}") for i in range(101)]
rows += [("bench.iso.hang", f"{receiver}/__hang/iso")]
rows += [("bench.iso.hang", f"{receiver}/hook/iso-hang/{i}") for i in range(100)]
with con:
    con.executemany(
        "INSERT INTO subscribers (topic, target_url, filter_expression) VALUES (?, ?, NULL)", rows)
con.close()
EOF
subs="$(curl -fsS -X POST -H "Authorization: Bearer $token" "$base/refresh")"
[ "$(json_get "$subs" subscribers)" = "313" ] || die "expected 313 subscribers after /refresh, got $subs"
for topic in bench.f1:1 bench.f10:10 bench.f100:100 bench.iso.base:101 bench.iso.hang:101; do
  got="$(curl -fsS -X POST -H "Authorization: Bearer $token" -H 'Content-Type: application/json' \
    -d "{\"topic\": \"${topic%:*}\", \"body\": {\"probe\": true}}" "$base/publish")"
  [ "$(json_get "$got" matched)" = "${topic#*:}" ] || die "publishing on ${topic%:*} matched $got"
done
reset_queue

# ------------------------------------------------------------------ h. live stream

# Before the other sections, so the server's memory is that of a fresh server.
# 1. Latency and memory, RUNS runs: STREAM_CLIENTS SSE clients open their
#    streams (client i watches s.(i mod 10)), switch-bench latency publishes
#    STREAM_RATE msg/s round s.0 ... s.9 for RUN_SECONDS with the publish time in
#    the body, and the clients stop. The server's VmRSS is read before the
#    clients connect, once they are all connected, and 1 s after publishing.
# 2. Publish throughput with the clients vs without, RUNS runs each, the order
#    alternating run by run: wrk publishes on s.0 (no subscriber: fan-out 0)
#    with a fresh set of STREAM_CLIENTS clients connected (100 of them watch
#    s.0), and with none and the live stream off.
# Between parts the server lets go of every client before the next starts.

# Starts STREAM_CLIENTS stream clients; returns once every stream is open, with
# switch-bench's note of it in $clients_ready. (Not to be called in $(...): the
# clients must be children of this shell.)
start_clients() { # log-name
  local ready="$work/$1.ready" i
  rm -f "$ready"
  "$bench_bin" stream-clients --url "$base" --token "$token" --clients "$STREAM_CLIENTS" \
    --patterns "$STREAM_TOPICS" --seconds 3600 --ready-file "$ready" \
    >"$work/$1.json" 2>"$work/$1.log" &
  clients_pid=$!
  for ((i = 0; i < 900; i++)); do
    [ -s "$ready" ] && break
    kill -0 "$clients_pid" 2>/dev/null || die "stream clients exited; see $work/$1.log"
    sleep 0.1
  done
  [ -s "$ready" ] || die "stream clients not connected after 90 s; see $work/$1.log"
  [ "$(json_get "$(cat "$ready")" connected)" = "$STREAM_CLIENTS" ] ||
    die "only $(cat "$ready") stream clients connected; see $work/$1.log"
  clients_ready="$(cat "$ready")"
}
# Stops the stream clients; their report goes to $clients_report.
stop_clients() { # log-name
  kill -TERM "$clients_pid" 2>/dev/null || true
  wait "$clients_pid" || die "stream clients failed; see $work/$1.log"
  clients_pid=""
  clients_report="$(cat "$work/$1.json")"
}
# Server-side sockets of the API port still open (established, or closed by
# the client and not yet by the server).
api_sockets() {
  ss -Htn state established state close-wait "( sport = :$SERVER_PORT )" 2>/dev/null | wc -l | tr -d ' '
}
# Waits until the server has let go of every stream client, and turns the live
# stream off. A closed client's socket goes at its stream's next write (a
# heartbeat within 15 s), but the server may count the client somewhat longer,
# and while it counts any it renews the live flag every 10 s: done once the
# flag, deleted, has stayed away for 11 s. Prints "<seconds until the sockets
# were closed> <seconds until the flag stayed away>".
wait_released() {
  local t0 i sockets_s quiet_since
  t0="$(now_ns)"
  if command -v ss >/dev/null 2>&1; then
    for ((i = 0; i < 300; i++)); do
      [ "$(api_sockets)" -eq 0 ] && break
      sleep 0.1
    done
    [ "$(api_sockets)" -eq 0 ] || log "h. the server still holds $(api_sockets) client sockets"
  else
    sleep 16 # no ss: a heartbeat's time
  fi
  sockets_s="$(secs_since "$t0")"
  rcli DEL "$live_flag" >/dev/null
  quiet_since="$(now_ns)"
  while [ $(($(now_ns) - quiet_since)) -lt 11000000000 ]; do
    if [ "$(rcli EXISTS "$live_flag")" = 1 ]; then
      rcli DEL "$live_flag" >/dev/null
      quiet_since="$(now_ns)"
    fi
    if [ $(($(now_ns) - t0)) -gt 90000000000 ]; then
      log "h. the server still renews the live flag 90 s after its clients left"
      break
    fi
    sleep 0.2
  done
  rcli DEL "$live_stream" >/dev/null
  echo "$sockets_s $(secs_since "$t0")"
}
server_mem() { "$bench_bin" rss --pid "$server_pid"; }
redis_pid="$(rcli INFO server | awk -F: '/^process_id:/ {print $2 + 0}')"
# Only a Redis on this machine (not one in a container or elsewhere) is counted.
grep -qs redis "/proc/${redis_pid:-0}/comm" || redis_pid=""
# CPU ticks (1/100 s) of a process so far, or null.
pid_ticks() { awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$1/stat" 2>/dev/null || echo null; }
# Where the CPU time goes, for a window between two of these: the first line
# of /proc/stat (user nice system idle iowait irq softirq steal ..., in ticks),
# the ticks of the server, Redis and the stream clients, and those of every
# child this script has waited for (wrk, switch-bench latency, redis-cli, ...).
cpu_mark() {
  local clients=null
  [ -z "$clients_pid" ] || clients="$(pid_ticks "$clients_pid")"
  printf '{"stat": %s, "tools": %s, "server": %s, "redis": %s, "clients": %s}' \
    "$(head -1 /proc/stat | awk '{printf "["; for (i = 2; i <= NF; i++) printf "%s%s", (i > 2 ? "," : ""), $i; printf "]"}')" \
    "$(awk '{ sub(/^.*\) /, ""); print $14 + $15 }' "/proc/$$/stat")" \
    "$(pid_ticks "$server_pid")" "$([ -n "$redis_pid" ] && pid_ticks "$redis_pid" || echo null)" "$clients"
}

if runs_section stream; then
  rss_fresh="$(server_mem)"
  for ((run = 1; run <= RUNS; run++)); do
    reset_queue
    rcli DEL "$msglog" >/dev/null
    log "h. $STREAM_CLIENTS stream clients, $STREAM_RATE msg/s round s.0..s.9, run $run/$RUNS (${RUN_SECONDS}s)"
    rss_before="$(server_mem)"
    start_clients "stream-latency-$run"
    rss_connected="$(server_mem)"
    cpu0="$(cpu_mark)"
    l="$("$bench_bin" latency --url "$base" --token "$token" --topics "$STREAM_TOPICS" \
      --rate "$STREAM_RATE" --seconds "$RUN_SECONDS")"
    cpu1="$(cpu_mark)"
    sleep 1
    rss_published="$(server_mem)"
    stop_clients "stream-latency-$run"
    c="$clients_report"
    read -r sockets_s released_s <<<"$(wait_released)"
    log "h. latency p50 $(json_get "$c" latency_p50_ms) ms, p99 $(json_get "$c" latency_p99_ms) ms; \
$(json_get "$c" events_total) events; server VmRSS $(json_get "$rss_connected" vm_rss_mb) MB connected, \
$(json_get "$rss_published" vm_rss_mb) MB after publishing; clients let go of in ${sockets_s}s / ${released_s}s"
    record "{\"kind\": \"stream_latency\", \"run\": $run, \"ready\": $clients_ready, \"publisher\": $l, \
\"stream_clients\": $c, \"rss_before\": $rss_before, \"rss_connected\": $rss_connected, \
\"rss_after_publishing\": $rss_published, \"sockets_closed_s\": $sockets_s, \"released_s\": $released_s, \
\"cpu\": [$cpu0, $cpu1]}"
  done
  for ((run = 1; run <= RUNS; run++)); do
    order="without with"
    [ $((run % 2)) -eq 0 ] && order="with without"
    for part in $order; do
      reset_queue
      rcli DEL "$msglog" >/dev/null
      if [ "$part" = without ]; then
        flag="$(rcli EXISTS "$live_flag")"
        log "h. publish on s.0 (fan-out 0), no stream client, run $run/$RUNS (${RUN_SECONDS}s)"
        rss_before="$(server_mem)"
        cpu0="$(cpu_mark)"
        w="$(wrk_publish s.0)"
        cpu1="$(cpu_mark)"
        record "{\"kind\": \"stream_publish\", \"clients\": 0, \"run\": $run, \"live_flag_at_start\": $flag, \
\"rss_before\": $rss_before, \"rss_after\": $(server_mem), \"cpu\": [$cpu0, $cpu1], \"wrk\": $w}"
        continue
      fi
      log "h. publish on s.0 (fan-out 0) with $STREAM_CLIENTS stream clients, run $run/$RUNS (${RUN_SECONDS}s)"
      start_clients "stream-wrk-$run"
      rss_connected="$(server_mem)"
      cpu0="$(cpu_mark)"
      w="$(wrk_publish s.0)"
      cpu1="$(cpu_mark)"
      rss_published="$(server_mem)"
      stop_clients "stream-wrk-$run"
      c="$clients_report"
      read -r sockets_s released_s <<<"$(wait_released)"
      log "h. with clients: $(json_get "$c" slow_consumer) closed as slow consumers, \
$(json_get "$c" reconnects) reconnects, $(json_get "$c" open_min) open at the fewest; clients let go of in ${sockets_s}s / ${released_s}s"
      record "{\"kind\": \"stream_publish\", \"clients\": $STREAM_CLIENTS, \"run\": $run, \"ready\": $clients_ready, \
\"stream_clients\": $c, \"rss_connected\": $rss_connected, \"rss_after\": $rss_published, \
\"sockets_closed_s\": $sockets_s, \"released_s\": $released_s, \"cpu\": [$cpu0, $cpu1], \"wrk\": $w}"
    done
  done
  record "{\"kind\": \"stream_rss\", \"fresh\": $rss_fresh, \"end\": $(server_mem)}"
  reset_queue
  rcli DEL "$msglog" "$live_flag" "$live_stream" >/dev/null
fi

# ------------------------------------------------------------------ i. API keys

# Publish throughput at fan-out 1 (no worker, as in a.) with an API key and with
# the HS256 admin token, alternating run by run (key first in odd runs).
if runs_section keys; then
  created="$(curl -fsS -X POST -H "Authorization: Bearer $token" -H 'Content-Type: application/json' \
    -d '{"name": "bench", "scope": "publish"}' "$base/keys")"
  api_key="$(json_get "$created" key)"
  [[ "$api_key" == sk_* ]] || die "POST /keys answered $created"
  for ((i = 0; i < 50; i++)); do
    code="$(curl -s -o /dev/null -w '%{http_code}' -X POST -H "Authorization: Bearer $api_key" \
      -H 'Content-Type: application/json' -d '{"topic": "bench.f1", "body": {"probe": true}}' "$base/publish")"
    [ "$code" = 202 ] && break
    sleep 0.1
  done
  [ "$code" = 202 ] || die "publishing with the new API key answered $code"
  for ((run = 1; run <= RUNS; run++)); do
    order="key jwt"
    [ $((run % 2)) -eq 0 ] && order="jwt key"
    for cred in $order; do
      reset_queue
      rcli DEL "$msglog" >/dev/null
      secret="$token"
      [ "$cred" = key ] && secret="$api_key"
      log "i. publish, fan-out 1, no worker, with $([ "$cred" = key ] && echo "an API key" || echo "an HS256 token"), run $run/$RUNS (${RUN_SECONDS}s)"
      cpu0="$(cpu_mark)"
      w="$(wrk_publish bench.f1 "$secret")"
      cpu1="$(cpu_mark)"
      xlen="$(rcli XLEN "$stream")"
      record "{\"kind\": \"keys\", \"credential\": \"$cred\", \"run\": $run, \"fanout\": 1, \"jobs_in_stream\": $xlen, \
\"cpu\": [$cpu0, $cpu1], \"wrk\": $w}"
    done
  done
  reset_queue
  rcli DEL "$msglog" >/dev/null
fi

# ------------------------------------------------------------------ a. publish throughput

runs_section publish || PUBLISH_FANOUTS=""
for fanout in $PUBLISH_FANOUTS; do
  for ((run = 1; run <= RUNS; run++)); do
    reset_queue
    log "a. publish, no worker, fan-out $fanout, run $run/$RUNS (${RUN_SECONDS}s)"
    w="$(wrk_publish "bench.f$fanout")"
    xlen="$(rcli XLEN "$stream")"
    record "{\"kind\": \"publish\", \"fanout\": $fanout, \"run\": $run, \"jobs_in_stream\": $xlen, \"wrk\": $w}"
  done
done
reset_queue

# ------------------------------------------------------------------ b. end-to-end deliveries

runs_section e2e || E2E_WORKERS=""
for workers in $E2E_WORKERS; do
  reset_queue
  for ((i = 0; i < workers; i++)); do start_worker "$i" "worker-e2e-$workers-$i"; done
  for ((run = 1; run <= RUNS; run++)); do
    recv_reset
    log "b. deliveries, $workers worker(s), fan-out 10, run $run/$RUNS (${RUN_SECONDS}s of publishing, then drain)"
    t0="$(now_ns)"
    w="$(wrk_publish bench.f10)"
    publish_seconds="$(secs_since "$t0")"
    during="$(recv_count)"
    backlog_at_end="$(rcli XLEN "$stream")"
    accepted="$(python3 -c 'import json,sys; w=json.loads(sys.argv[1]); print(w["requests"]-w["errors_status"])' "$w")"
    read -r waited timed_out <<<"$(wait_drained $((accepted * 10)))"
    total_seconds="$(secs_since "$t0")"
    count="$(recv_count)"
    record "{\"kind\": \"e2e\", \"workers\": $workers, \"run\": $run, \"fanout\": 10, \"wrk\": $w, \
\"publish_seconds\": $publish_seconds, \"delivered_while_publishing\": $during, \
\"stream_at_publish_end\": $backlog_at_end, \"expected\": $((accepted * 10)), \"delivered\": $count, \
\"total_seconds\": $total_seconds, \"timed_out\": $([ "$timed_out" = 1 ] && echo true || echo false)}"
  done
  stop_workers
done

# ------------------------------------------------------------------ b2. sustained rate

# Publishing at fixed rates (fan-out 10) while one worker delivers: the highest
# rate whose deliveries keep up is what the hub sustains with both at once.
if runs_section sustained; then
  reset_queue
  start_worker 0 worker-sustained
  for rate in $SUSTAIN_RATES; do
    recv_reset
    log "b2. sustained, 1 worker, fan-out 10, $rate msg/s = $((rate * 10)) deliveries/s offered (${RUN_SECONDS}s)"
    t0="$(now_ns)"
    l="$("$bench_bin" latency --url "$base" --token "$token" --topic bench.f10 --rate "$rate" --seconds "$RUN_SECONDS")"
    publish_seconds="$(secs_since "$t0")"
    during="$(recv_count)"
    backlog_at_end="$(rcli XLEN "$stream")"
    expected=$(($(json_get "$l" accepted) * 10))
    read -r waited timed_out <<<"$(wait_drained "$expected")"
    s="$(recv_stats)"
    record "{\"kind\": \"sustained\", \"rate\": $rate, \"publisher\": $l, \"receiver\": $s, \
\"publish_seconds\": $publish_seconds, \"delivered_while_publishing\": $during, \
\"stream_at_publish_end\": $backlog_at_end, \"expected\": $expected, \"drained_after_s\": $waited, \
\"timed_out\": $([ "$timed_out" = 1 ] && echo true || echo false)}"
  done
  stop_workers
fi

# ------------------------------------------------------------------ c. latency

if runs_section latency; then
  reset_queue
  start_worker 0 worker-latency
  for ((run = 1; run <= RUNS; run++)); do
    recv_reset
    log "c. latency, 1 worker, fan-out 1, $RATE msg/s, run $run/$RUNS (${RUN_SECONDS}s)"
    l="$("$bench_bin" latency --url "$base" --token "$token" --topic bench.f1 --rate "$RATE" --seconds "$RUN_SECONDS")"
    read -r waited timed_out <<<"$(wait_drained "$(json_get "$l" accepted)")"
    s="$(recv_stats)"
    record "{\"kind\": \"latency\", \"run\": $run, \"publisher\": $l, \"receiver\": $s, \"timed_out\": $([ "$timed_out" = 1 ] && echo true || echo false)}"
  done
  stop_workers
fi

# ------------------------------------------------------------------ d. backlog drain

samples=""
if runs_section backlog; then
  reset_queue
  recv_reset
  messages=$(((BACKLOG + 99) / 100))
  log "d. backlog: enqueueing $((messages * 100)) jobs ($messages messages at fan-out 100, no worker)"
  fill_started="$(now_ns)"
  f="$("$bench_bin" fill --url "$base" --token "$token" --topic bench.f100 --messages "$messages" \
    --concurrency "$CONNECTIONS" --max-seconds "$DRAIN_TIMEOUT")"
  fill_seconds="$(secs_since "$fill_started")"
  queued="$(rcli XLEN "$stream")"
  [ "$queued" -gt 0 ] || die "backlog fill enqueued nothing: $f"
  redis_mem="$(rcli INFO memory | grep '^used_memory:' | cut -d: -f2 | tr -d '\r')"
  log "d. $queued jobs queued (Redis used_memory $((redis_mem / 1048576)) MB); draining with 1 worker"
  samples="$work/drain.tsv"
  t0="$(now_ns)"
  echo "0.000000 0 $queued" >"$samples"
  start_worker 0 worker-backlog
  worker_started_s="$(secs_since "$t0")"
  deadline=$(($(date +%s) + DRAIN_TIMEOUT))
  drain_timed_out=false
  while :; do
    sleep "$SAMPLE"
    count="$(recv_count)"
    xlen="$(rcli XLEN "$stream")"
    zcard="$(rcli ZCARD "$delayed")"
    echo "$(secs_since "$t0") $count $xlen" >>"$samples"
    if [ "$xlen" -eq 0 ] && [ "$zcard" -eq 0 ] && [ "$count" -ge "$queued" ]; then break; fi
    if [ "$(date +%s)" -ge "$deadline" ]; then
      drain_timed_out=true
      log "d. backlog not drained after ${DRAIN_TIMEOUT}s"
      break
    fi
  done
  curl -fsS "$receiver/__progress" >"$work/progress.json"
  log "d. drain over: $count delivered, stream $xlen, retries $zcard"
  problems="$(problem_lines "$work/worker-backlog.log" | wc -l | tr -d ' ')"
  problem_examples="$(problem_lines "$work/worker-backlog.log" | tail -5 |
    python3 -c 'import json,sys; print(json.dumps([l.rstrip()[:300] for l in sys.stdin]))')"

  # ---------------------------------------------------------------- f. peak memory

  server_rss="$("$bench_bin" rss --pid "$server_pid")"
  worker_rss="$("$bench_bin" rss --pid "${worker_pids[0]}")"
  redis_peak="$(rcli INFO memory | grep '^used_memory_peak:' | cut -d: -f2 | tr -d '\r')"
  record "{\"kind\": \"backlog\", \"fill\": $f, \"fill_seconds\": $fill_seconds, \"queued\": $queued, \
\"redis_used_memory_bytes\": $redis_mem, \"samples_file\": \"drain.tsv\", \"timed_out\": $drain_timed_out, \
\"start_ns\": $t0, \"worker_healthy_s\": $worker_started_s, \"progress_file\": \"$work/progress.json\", \
\"worker_warn_error_lines\": $problems, \"worker_problem_examples\": $problem_examples}"
  record "{\"kind\": \"rss\", \"server\": $server_rss, \"worker\": $worker_rss, \"redis_used_memory_peak_bytes\": $redis_peak}"
  stop_workers
fi

# ------------------------------------------------------------------ g. isolation

# One worker and a backlog of ISO_MESSAGES messages at fan-out 101, in two parts
# that alternate: bench.iso.base (101 healthy subscribers) and bench.iso.hang
# (100 healthy and one whose endpoint answers only after HANG_MS). Deliveries to
# the healthy subscribers are counted over a fixed window of ISO_SECONDS,
# starting 1 s after the worker is up, so a worker that stalls still finishes.
# The queue (stream, retries, parked jobs) is emptied before each part.
if runs_section isolation; then
  for ((run = 1; run <= RUNS; run++)); do
    for part in base hang; do
      reset_queue
      recv_reset
      healthy_subs=101
      [ "$part" = hang ] && healthy_subs=100
      log "g. isolation, $part ($healthy_subs healthy$([ "$part" = hang ] && echo ", 1 answering after ${HANG_MS} ms")), run $run/$RUNS: enqueueing $ISO_MESSAGES messages at fan-out 101"
      f="$("$bench_bin" fill --url "$base" --token "$token" --topic "bench.iso.$part" --messages "$ISO_MESSAGES" \
        --concurrency "$CONNECTIONS" --max-seconds "$DRAIN_TIMEOUT")"
      queued="$(rcli XLEN "$stream")"
      [ "$queued" -gt 0 ] || die "isolation fill enqueued nothing: $f"
      worker_env=("SWITCH_DELIVERY_TIMEOUT=$ISO_DELIVERY_TIMEOUT")
      start_worker 0 "worker-isolation-$part-$run"
      worker_env=()
      sleep 1
      c0="$(recv_count)"
      t0="$(now_ns)"
      sleep "$ISO_SECONDS"
      c1="$(recv_count)"
      window="$(secs_since "$t0")"
      s="$(recv_stats)"
      xlen="$(rcli XLEN "$stream")"
      parked_now="$(parked_jobs)"
      log "g. isolation, $part: $((c1 - c0)) healthy deliveries in ${window}s; stream $xlen, parked $parked_now; stopping the worker"
      stop_workers
      record "{\"kind\": \"isolation\", \"part\": \"$part\", \"run\": $run, \"messages\": $ISO_MESSAGES, \
\"queued\": $queued, \"fill\": $f, \"healthy_subscribers\": $healthy_subs, \"window_s\": $window, \
\"healthy_at_start\": $c0, \"healthy_at_end\": $c1, \"healthy_expected\": $((ISO_MESSAGES * healthy_subs)), \
\"receiver\": $s, \"stream_at_end\": $xlen, \"parked_at_end\": $parked_now}"
    done
  done
  reset_queue
fi
stop_pid "$server_pid" 10
server_pid=""

# ------------------------------------------------------------------ e. filter cost

if runs_section filter; then
  log "e. filter cost (1,000 subscribers, median of 5 runs)"
  fc="$("$bench_bin" filter-cost --subscribers 1000 --runs 5)"
  record "{\"kind\": \"filter_cost\", \"result\": $fc}"
fi

stop_pid "$receiver_pid" 5
receiver_pid=""

log_bytes() { cat "$@" 2>/dev/null | wc -c | tr -d ' '; }
record "{\"kind\": \"logs\", \"server_warn_error_lines\": $(problem_lines "$work/server.log" | wc -l | tr -d ' '), \
\"worker_warn_error_lines\": $(problem_lines "$work"/worker-*.log | wc -l | tr -d ' '), \
\"server_log_bytes\": $(log_bytes "$work/server.log"), \"worker_log_bytes\": $(log_bytes "$work"/worker-*.log)}"

# ------------------------------------------------------------------ report

mkdir -p "$results_dir"
[ -z "$samples" ] || cp "$samples" "$results_dir/drain.tsv"
cp "$raw" "$results_dir/raw.jsonl"
python3 "$root/bench/report.py" "$raw" "$results_dir"
