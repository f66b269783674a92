#!/usr/bin/env bash
# Benchmarks of the message log (README "The message log", SPEC §10), against
# loopback only, with the conventions of bench/run.sh but ports 18490-18493:
#   1. publish/s at fan-out 0 with one worker archiving vs with no worker (the
#      log accumulates in Redis, nothing is archived); for context, the same at
#      fan-out 1 with the worker also delivering. Variants alternate per run.
#   2. archiver throughput: N messages logged with no worker running, then one
#      worker starts and the time until the log stream is empty gives rows/s,
#      on SQLite and on PostgreSQL (a database created for the run, dropped
#      after); and the log's lag (XLEN / rate, sampled every 100 ms) while
#      publishing at a fixed rate with one worker (fan-out 1: it delivers and
#      archives; fan-out 0: it only archives).
#   3. GET /messages latency over ROWS rows written by SQL (SQLite).
#   4. publish latency at fan-out 1 while retention deletes ROWS old rows, vs
#      the same run with no old rows (SQLite).
# Writes bench/results/log.json and bench/results/log.md and prints the latter
# (a "## Reading" section already in log.md is kept). About 9 minutes with the
# defaults; the temporary directory needs about 2 GB.
#
# Settings (environment):
#   LOG_ONLY="publish archive lag list retention"  sections to run (default all)
#   LOG_SECONDS=10            length of each publish run (1)
#   LOG_RUNS=3                runs per figure, variants alternating; medians reported
#   LOG_ARCHIVE_MESSAGES=200000  log entries pre-filled for the archiver runs (2)
#   LOG_LAG_SECONDS=20        length of the fixed-rate run (2b: wrk paced by a delay() hook)
#   LOG_LAG_RATE              its rate, msg/s (default 80 % of section 1's median
#                             fan-out-1 rate without a worker, or 16000 without it)
#   LOG_LAG_TOPICS="bench.f1 bench.f0"
#                             topics of the fixed-rate runs: fan-out 1 (the worker
#                             delivers and archives) and fan-out 0 (it only archives)
#   LOG_ROWS=1000000          rows written by SQL for sections 3 and 4
#   LOG_GET_REQUESTS=1000     requests per GET /messages query (3)
#   LOG_GET_MAX_SECONDS=20    longest time spent on one query (3)
#   LOG_RETENTION_SECONDS=20  length of each publish run of section 4
#   LOG_PG_URL=postgres://postgres@127.0.0.1:5432
#                             PostgreSQL server for section 2 (`none`: skip it)
#   LOG_DRAIN_TIMEOUT=300     longest wait for the log stream to empty, seconds
#   LOG_RESULTS_DIR=bench/results
#   LOG_KEEP_LOGS=1           keep the temporary directory with every log
#   BENCH_BIN_DIR, BENCH_TOOL_DIR, SWITCH_REDIS_URL as in bench/run.sh
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

ALL_SECTIONS="publish archive lag list retention"
ONLY="${LOG_ONLY:-$ALL_SECTIONS}"
RUN_SECONDS="${LOG_SECONDS:-10}"
RUNS="${LOG_RUNS:-3}"
ARCHIVE_N="${LOG_ARCHIVE_MESSAGES:-200000}"
LAG_SECONDS="${LOG_LAG_SECONDS:-20}"
LAG_RATE="${LOG_LAG_RATE:-}"
LAG_TOPICS="${LOG_LAG_TOPICS:-bench.f1 bench.f0}"
ROWS="${LOG_ROWS:-1000000}"
GET_REQUESTS="${LOG_GET_REQUESTS:-1000}"
GET_MAX_SECONDS="${LOG_GET_MAX_SECONDS:-20}"
RET_SECONDS="${LOG_RETENTION_SECONDS:-20}"
PG_URL="${LOG_PG_URL:-postgres://postgres@127.0.0.1:5432}"
DRAIN_TIMEOUT="${LOG_DRAIN_TIMEOUT:-300}"
SERVER_PORT=18490
RECEIVER_PORT=18491
METRICS_PORT=18492
MIGRATE_PORT=18493
CONNECTIONS=32
# The paced run (2b) keeps more connections, so a slow answer rarely delays the next slot.
LAG_CONNECTIONS=64
THREADS=2
WORKER_CONCURRENCY=64
REDIS_URL="${SWITCH_REDIS_URL:-redis://127.0.0.1:6379}"
src_bin="${BENCH_BIN_DIR:-$root/target/release}"
src_bench="${BENCH_TOOL_DIR:-$root/target/release}/switch-bench"
results_dir="${LOG_RESULTS_DIR:-$root/bench/results}"
helper="$root/bench/log_bench.py"

die() { echo "log-bench: $*" >&2; exit 1; }
log() { echo "[log-bench $(date +%H:%M:%S)] $*" >&2; }
is_uint() { [[ "$1" =~ ^[0-9]+$ ]] && [ "$1" -gt 0 ]; }
for v in RUN_SECONDS RUNS ARCHIVE_N LAG_SECONDS ROWS GET_REQUESTS GET_MAX_SECONDS RET_SECONDS DRAIN_TIMEOUT; do
  is_uint "${!v}" || die "$v must be a positive integer, not \`${!v}\`"
done
[ -z "$LAG_RATE" ] || is_uint "$LAG_RATE" || die "LOG_LAG_RATE must be a positive integer"
for section in $ONLY; do
  [[ " $ALL_SECTIONS " == *" $section "* ]] || die "LOG_ONLY: unknown section \`$section\` (known: $ALL_SECTIONS)"
done
runs_section() { [[ " $ONLY " == *" $1 "* ]]; }

for tool in wrk curl redis-cli python3; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool is required (bench/run.sh installs wrk)"
done
if [ ! -x "$src_bin/switch-server" ] || [ ! -x "$src_bin/switch-worker" ] || [ ! -x "$src_bench" ]; then
  [ -z "${BENCH_BIN_DIR:-}${BENCH_TOOL_DIR:-}" ] || die "no switch-server, switch-worker or switch-bench in $src_bin or $src_bench"
  log "building release binaries"
  cargo build --release
fi
rcli() { redis-cli -u "$REDIS_URL" "$@"; }
[ "$(rcli PING 2>/dev/null)" = "PONG" ] || die "Redis does not answer at $REDIS_URL"
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for p in "$SERVER_PORT" "$RECEIVER_PORT" "$METRICS_PORT" "$MIGRATE_PORT"; do
  if port_busy "$p"; then die "port $p is in use; stop what listens there"; fi
done
use_pg=0
if runs_section archive && [ "$PG_URL" != none ]; then
  if command -v psql >/dev/null 2>&1 && psql "$PG_URL/postgres" -Atqc 'select 1' >/dev/null 2>&1; then
    use_pg=1
  else
    log "PostgreSQL does not answer at $PG_URL; the archiver runs are SQLite only"
  fi
fi

# ------------------------------------------------------------------ processes

work="$(mktemp -d "${TMPDIR:-/tmp}/switch-log-bench.XXXXXX")"
ns="logbench$$x$RANDOM"
raw="$work/raw.jsonl"
: >"$raw"
receiver_pid=""
server_pid=""
worker_pid=""
sampler_pids=()
pg_db=""

# The binaries are linked (or copied) into the run's directory first, so a
# build finishing during the run does not change what is measured.
mkdir -p "$work/bin"
for b in "$src_bin/switch-server" "$src_bin/switch-worker" "$src_bench"; do
  ln "$b" "$work/bin/" 2>/dev/null || cp "$b" "$work/bin/"
done
bin="$work/bin"

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
  local rc=$? pid
  trap - EXIT INT TERM
  for pid in "${sampler_pids[@]}"; do stop_pid "$pid" 2; done
  stop_pid "$worker_pid" 35
  stop_pid "$server_pid" 10
  stop_pid "$receiver_pid" 5
  rcli --scan --pattern "{$ns}*" 2>/dev/null | while read -r key; do
    rcli DEL "$key" >/dev/null 2>&1 || true
  done
  if [ -n "$pg_db" ]; then
    psql "$PG_URL/postgres" -qc "DROP DATABASE IF EXISTS $pg_db WITH (FORCE)" >/dev/null 2>&1 ||
      echo "log-bench: could not drop database $pg_db" >&2
  fi
  if [ "$rc" -ne 0 ] || [ "${LOG_KEEP_LOGS:-}" = "1" ]; then
    echo "log-bench: logs kept in $work" >&2
  else
    rm -rf "$work"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

export SWITCH_JWT_SECRET="bench-secret-$RANDOM$RANDOM$RANDOM"
export SWITCH_REDIS_URL="$REDIS_URL"
export SWITCH_QUEUE_NAMESPACE="$ns"
export SWITCH_REFRESH_INTERVAL=1s
export SWITCH_WORKER_CONCURRENCY="$WORKER_CONCURRENCY"
unset SWITCH_DATABASE_URL SWITCH_MESSAGE_RETENTION
base="http://127.0.0.1:$SERVER_PORT"
receiver="http://127.0.0.1:$RECEIVER_PORT"
stream="{$ns}:jobs"
delayed="{$ns}:delayed"
parked="{$ns}:parked"
logkey="{$ns}:log"
retention_lock="{$ns}:retention"
main_db="$work/main.db"
template_db="$work/template.db"

wait_http() { # url seconds
  local i
  for ((i = 0; i < $2 * 10; i++)); do
    curl -fsS -o /dev/null "$1" 2>/dev/null && return 0
    sleep 0.1
  done
  return 1
}

# Starts (or restarts) the server on database URL $1.
start_server() { # database-url
  stop_pid "$server_pid" 10
  SWITCH_DATABASE_URL="$1" SWITCH_SERVER_ADDR="127.0.0.1:$SERVER_PORT" \
    "$bin/switch-server" >>"$work/server.log" 2>&1 &
  server_pid=$!
  wait_http "$base/health" 30 || die "server did not start; see $work/server.log"
}

# Starts the worker on database URL $1, extra environment NAME=value after it.
start_worker() { # database-url log-name [NAME=value...]
  local url="$1" name="$2"
  shift 2
  env "$@" SWITCH_DATABASE_URL="$url" SWITCH_WORKER_METRICS_ADDR="127.0.0.1:$METRICS_PORT" \
    "$bin/switch-worker" >>"$work/$name.log" 2>&1 &
  worker_pid=$!
  wait_http "http://127.0.0.1:$METRICS_PORT/health" 30 || die "worker did not start; see $work/$name.log"
}
stop_worker() { stop_pid "$worker_pid" 35; worker_pid=""; }
stop_samplers() {
  local pid
  for pid in "${sampler_pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  sampler_pids=()
}

now_s() { date +%s.%N; }
# CPU seconds (user + system) Redis has used so far (all its clients, this run's or not).
redis_cpu_s() { rcli INFO cpu | tr -d '\r' | awk -F: '/^used_cpu_(sys|user):/ {s += $2} END {printf "%.2f", s}'; }
# CPU seconds (user + system) a process has used so far.
cpu_s() { awk -v hz="$(getconf CLK_TCK)" '{printf "%.2f", ($14 + $15) / hz}' "/proc/$1/stat" 2>/dev/null || echo 0; }
json_get() { python3 -c 'import json,sys; v=json.loads(sys.argv[1]); [v := v[k] for k in sys.argv[2:]]; print(v)' "$@"; }
record() { echo "$1" >>"$raw"; }
sql() { # db statement -> first column of the first row
  python3 -c 'import sqlite3,sys; c=sqlite3.connect(sys.argv[1], timeout=60, isolation_level=None); r=c.execute(sys.argv[2]).fetchone(); print("" if r is None else r[0])' "$@"
}
msg_rows() { sql "$1" "SELECT count(*) FROM messages"; }

# Empties the jobs of this namespace and recreates the workers' group.
reset_queue() {
  rcli DEL "$stream" "$delayed" "$parked" >/dev/null
  rcli --scan --pattern "$parked:*" | while read -r key; do rcli DEL "$key" >/dev/null; done
  rcli XGROUP CREATE "$stream" workers 0 MKSTREAM >/dev/null
}
# Empties the log stream (no worker may be running). The stream is not
# recreated: an archiver recreates it with its group, and a publish creates it.
reset_log() { rcli DEL "$logkey" "$retention_lock" >/dev/null; }

wrk_publish() { # topic seconds -> wrk's JSON summary
  local out="$work/wrk.out"
  TOPIC="$1" TOKEN="$token" wrk -t"$THREADS" -c"$CONNECTIONS" -d"$2s" --timeout 10s \
    -s "$root/bench/publish.lua" "$base" >"$out" 2>&1 || die "wrk failed: $(cat "$out")"
  grep '^WRK_JSON ' "$out" | tail -1 | cut -c10-
}

# Load from processes other than this run's, over half a second.
ours_pids() { echo "$$ $server_pid $worker_pid $receiver_pid ${sampler_pids[*]}"; }
disturbance() { # section
  local others
  others="$(top -b -n 2 -d 0.5 -w 200 2>/dev/null | awk -v ours=" $(ours_pids) " '
    /^ *PID / { frame++; next }
    frame == 2 && $1 ~ /^[0-9]+$/ && $9 + 0 >= 5 && index(ours, " " $1 " ") == 0 {
      printf "%s%s %s%% CPU", sep, $12, $9; sep = ", " }')"
  record "{\"kind\": \"disturbance\", \"section\": \"$1\", \"loadavg\": \"$(cut -d' ' -f1-3 /proc/loadavg)\", \"others\": \"$others\"}"
  log "$1: load $(cut -d' ' -f1-3 /proc/loadavg)${others:+; others: $others}"
}

# ------------------------------------------------------------------ machine

cpu_model="$(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | cut -d: -f2- | sed 's/^ *//' || true)"
redis_version="$(rcli INFO server | grep '^redis_version:' | cut -d: -f2 | tr -d '\r')"
sqlite_lib="$(grep -A1 'name = "libsqlite3-sys"' Cargo.lock | sed -n 's/version = "\(.*\)"/\1/p' | head -1)"
pg_version=""
[ "$use_pg" = 0 ] || pg_version="$(psql "$PG_URL/postgres" -Atqc 'show server_version' 2>/dev/null | cut -d' ' -f1)"
commit="$(git rev-parse --short HEAD 2>/dev/null || echo '?')"
changed="$(git status --porcelain --untracked-files=no 2>/dev/null | awk '{print $2}' | grep -E '^(core|server|worker)/' | tr '\n' ' ' || true)"
[ -z "$changed" ] || commit="$commit with local changes to ${changed% }"
[ -z "${BENCH_BIN_DIR:-}" ] || commit="binaries of $BENCH_BIN_DIR"
log "machine: $(nproc) cores ($cpu_model), Redis $redis_version${pg_version:+, PostgreSQL $pg_version}; tree $commit"
python3 - "$raw" <<EOF
import json, os, sys, subprocess, time
def sh(c):
    return subprocess.run(c, shell=True, capture_output=True, text=True).stdout.strip()
with open(sys.argv[1], "a") as f:
    f.write(json.dumps({"kind": "machine", "nproc": int(sh("nproc") or 0),
        "cpu_model": """$cpu_model""",
        "memory_mb": int(sh("awk '/MemTotal/ {print int(\$2/1024)}' /proc/meminfo") or 0),
        "redis": "Redis $redis_version",
        "sqlite": "SQLite (bundled by libsqlite3-sys $sqlite_lib)",
        "sqlite_version": "bundled by libsqlite3-sys $sqlite_lib",
        "postgres": ("PostgreSQL $pg_version" if "$pg_version" else "PostgreSQL not used"),
        "wrk": sh("wrk -v 2>&1 | head -1"),
        "commit": """$commit""",
        "binaries": [n + " of " + time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(os.stat("$bin/" + n).st_mtime)) for n in ("switch-server", "switch-worker", "switch-bench")],
        "date": sh("date -u +%Y-%m-%dT%H:%M:%SZ"),
        "settings": {"only": "$ONLY".split(), "seconds": $RUN_SECONDS, "runs": $RUNS,
            "archive_messages": $ARCHIVE_N, "lag_seconds": $LAG_SECONDS, "lag_rate": "${LAG_RATE:-80 % of fan-out 1}",
            "rows": $ROWS, "get_requests": $GET_REQUESTS, "get_max_seconds": $GET_MAX_SECONDS,
            "retention_seconds": $RET_SECONDS, "wrk_threads": $THREADS, "wrk_connections": $CONNECTIONS,
            "worker_concurrency": $WORKER_CONCURRENCY, "log_level": """${RUST_LOG:-info (default)}"""}}) + "\n")
EOF

# ------------------------------------------------------------------ receiver, server, subscribers

"$bin/switch-bench" receiver --addr "127.0.0.1:$RECEIVER_PORT" --workers 2 >"$work/receiver.log" 2>&1 &
receiver_pid=$!
wait_http "$receiver/__stats" 10 || die "receiver did not start; see $work/receiver.log"

token="$("$bin/switch-server" --print-dev-token)"
start_server "sqlite://$main_db"
# bench.f1: one subscriber at the receiver; bench.f0: none.
# template.db: the schema and that subscriber, copied for every fresh database.
python3 - "$main_db" "$receiver" "$template_db" <<'EOF'
import sqlite3, sys
con = sqlite3.connect(sys.argv[1], timeout=30)
with con:
    con.execute("INSERT INTO subscribers (topic, target_url, filter_expression) VALUES (?, ?, NULL)",
                ("bench.f1", f"{sys.argv[2]}/hook/f1/0"))
con.execute("VACUUM INTO ?", (sys.argv[3],))
con.close()
EOF
curl -fsS -X POST -H "Authorization: Bearer $token" "$base/refresh" >/dev/null
for t in bench.f1:1 bench.f0:0; do
  got="$(curl -fsS -X POST -H "Authorization: Bearer $token" -H 'Content-Type: application/json' \
    -d "{\"topic\": \"${t%:*}\", \"body\": {\"probe\": true}}" "$base/publish")"
  [ "$(json_get "$got" matched)" = "${t#*:}" ] || die "publishing on ${t%:*} matched $got"
done
reset_queue
reset_log

# ------------------------------------------------------------------ 1. publish with and without the archiver

f1_rates=()
if runs_section publish; then
  disturbance publish
  for ((run = 1; run <= RUNS; run++)); do
    if ((run % 2)); then order="f0_none f0_worker f1_none f1_worker"; else order="f0_worker f0_none f1_worker f1_none"; fi
    for variant in $order; do
      reset_queue
      reset_log
      topic="bench.${variant%%_*}"
      before="$(msg_rows "$main_db")"
      [ "${variant#*_}" = none ] || start_worker "sqlite://$main_db" "worker-publish"
      log "1. publish $topic, $([ "${variant#*_}" = none ] && echo "no worker" || echo "one worker"), run $run/$RUNS (${RUN_SECONDS}s)"
      server_cpu0="$(cpu_s "$server_pid")"
      redis_cpu0="$(redis_cpu_s)"
      worker_cpu0=0
      [ -z "$worker_pid" ] || worker_cpu0="$(cpu_s "$worker_pid")"
      w="$(wrk_publish "$topic" "$RUN_SECONDS")"
      xlen="$(rcli XLEN "$logkey")"
      jobs="$(rcli XLEN "$stream")"
      load="$(cut -d' ' -f1 /proc/loadavg)"
      server_cpu="$(python3 -c "print(round($(cpu_s "$server_pid") - $server_cpu0, 2))")"
      redis_cpu="$(python3 -c "print(round($(redis_cpu_s) - $redis_cpu0, 2))")"
      worker_cpu=0
      [ -z "$worker_pid" ] || worker_cpu="$(python3 -c "print(round($(cpu_s "$worker_pid") - $worker_cpu0, 2))")"
      [ "${variant#*_}" = none ] || stop_worker
      after="$(msg_rows "$main_db")"
      [ "$variant" != f1_none ] || f1_rates+=("$(python3 -c 'import json,sys; w=json.loads(sys.argv[1]); print((w["requests"]-w["errors_status"])/(w["duration_us"]/1e6))' "$w")")
      record "{\"kind\": \"publish\", \"variant\": \"$variant\", \"run\": $run, \"wrk\": $w, \"log_xlen_end\": $xlen, \
\"jobs_xlen_end\": $jobs, \"archived\": $((after - before)), \"loadavg1\": $load, \
\"server_cpu_s\": $server_cpu, \"worker_cpu_s\": $worker_cpu, \"redis_cpu_s\": $redis_cpu}"
      log "   $(json_get "$w" requests) requests, log entries left $xlen, archived $((after - before))"
    done
  done
  reset_queue
  reset_log
fi

# ------------------------------------------------------------------ 2. archiver throughput

# Fills the log with ARCHIVE_N messages (fan-out 0, no worker), starts one
# worker on database URL $2 and samples XLEN every 50 ms until it is 0.
archive_run() { # label database-url db-name run
  local label="$1" url="$2" dbname="$3" run="$4" f n t_spawn rows
  reset_log
  f="$("$bin/switch-bench" fill --url "$base" --token "$token" --topic bench.f0 --messages "$ARCHIVE_N" \
    --concurrency "$CONNECTIONS" --max-seconds "$DRAIN_TIMEOUT")"
  n="$(rcli XLEN "$logkey")"
  log "2. archiver, $dbname, run $run/$RUNS: $n entries logged in $(json_get "$f" elapsed_s | cut -c1-5)s; starting one worker"
  python3 "$helper" xlen "$REDIS_URL" "$logkey" 0.05 "$DRAIN_TIMEOUT" "$work/archive-$label-$run.tsv" --until-zero &
  sampler_pids+=($!)
  sleep 0.2
  t_spawn="$(now_s)"
  start_worker "$url" "worker-archive-$label"
  stop_samplers
  if [ "$label" = sqlite ]; then rows="$(msg_rows "${url#sqlite://}")"; else rows="$(psql "$url" -Atqc 'select count(*) from messages')"; fi
  stop_worker
  python3 - "$work/archive-$label-$run.tsv" "$t_spawn" "$n" "$f" <<EOF >>"$raw"
import json, sys
samples = [tuple(map(float, l.split())) for l in open(sys.argv[1]) if l.strip()]
t_spawn, n = float(sys.argv[2]), int(sys.argv[3])
first_drop = next((t for t, x in samples if x < n), None)
t_zero = samples[-1][0] if samples and samples[-1][1] == 0 else None
print(json.dumps({"kind": "archive", "db": "$label", "db_name": "$dbname", "run": $run, "n": n,
    "fill": json.loads(sys.argv[4]), "rows_in_table": int("$rows" or 0), "drained": t_zero is not None,
    "first_archived_after_spawn_s": None if first_drop is None else round(first_drop - t_spawn, 3),
    "drained_after_spawn_s": None if t_zero is None else round(t_zero - t_spawn, 3),
    "rows_per_s": None if t_zero is None or first_drop is None else n / max(1e-9, t_zero - first_drop),
    "rows_per_s_from_start": None if t_zero is None else n / (t_zero - t_spawn)}))
EOF
  local r
  r="$(tail -1 "$raw")"
  log "   $(json_get "$r" rows_per_s) rows/s, empty $(json_get "$r" drained_after_spawn_s) s after the worker started; $(json_get "$r" rows_in_table) rows"
}

if runs_section archive; then
  disturbance archive
  if [ "$use_pg" = 1 ]; then
    pg_db="switch_bench_log_$$_$RANDOM"
    createdb_out="$(psql "$PG_URL/postgres" -qc "CREATE DATABASE $pg_db" 2>&1)" || die "could not create $pg_db: $createdb_out"
    pg_url="$PG_URL/$pg_db"
    # The server migrates; the worker does not.
    SWITCH_DATABASE_URL="$pg_url" SWITCH_SERVER_ADDR="127.0.0.1:$MIGRATE_PORT" \
      "$bin/switch-server" >"$work/server-migrate-pg.log" 2>&1 &
    migrate_pid=$!
    wait_http "http://127.0.0.1:$MIGRATE_PORT/health" 60 || die "migrating $pg_db failed; see $work/server-migrate-pg.log"
    stop_pid "$migrate_pid" 10
  fi
  for ((run = 1; run <= RUNS; run++)); do
    dbs="sqlite postgres"
    ((run % 2)) || dbs="postgres sqlite"
    for d in $dbs; do
      if [ "$d" = sqlite ]; then
        rm -f "$work/archive.db" "$work/archive.db-wal" "$work/archive.db-shm"
        cp "$template_db" "$work/archive.db"
        archive_run sqlite "sqlite://$work/archive.db" "SQLite" "$run"
      elif [ "$use_pg" = 1 ]; then
        psql "$pg_url" -qc 'TRUNCATE messages' >/dev/null
        archive_run postgres "$pg_url" "PostgreSQL $pg_version" "$run"
      fi
    done
  done
  reset_log
fi

# ------------------------------------------------------------------ 2b. log lag at a fixed rate

if runs_section lag; then
  disturbance lag
  if [ -z "$LAG_RATE" ]; then
    if [ "${#f1_rates[@]}" -gt 0 ]; then
      LAG_RATE="$(printf '%s\n' "${f1_rates[@]}" | sort -g | awk '{a[NR]=$1} END {m = (NR % 2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2; printf "%d", m * 0.8}')"
    else
      LAG_RATE=16000
    fi
  fi
  # bench/publish.lua, each wrk thread sending at RATE / THREADS per second:
  # every request waits for the next free slot of its thread (wrk's delay()).
  cat >"$work/rate.lua" <<'EOF'
dofile(os.getenv("PUBLISH_LUA"))
local ffi = require("ffi")
ffi.cdef [[
struct log_bench_timespec { long tv_sec; long tv_nsec; };
int clock_gettime(int clk_id, struct log_bench_timespec *tp);
]]
local ts = ffi.new("struct log_bench_timespec")
local function now()
  ffi.C.clock_gettime(1, ts)
  return tonumber(ts.tv_sec) + tonumber(ts.tv_nsec) / 1e9
end
local interval = tonumber(os.getenv("THREADS")) / tonumber(os.getenv("RATE"))
local slot = nil
function delay()
  local t = now()
  -- A thread that fell behind does not make up more than 50 ms at once.
  if slot == nil or slot < t - 0.05 then slot = t end
  local wait = slot - t
  slot = slot + interval
  return math.floor(wait * 1000 + 0.5)
end
EOF
  for topic in $LAG_TOPICS; do
    fanout="${topic#bench.f}"
    reset_queue
    reset_log
    start_worker "sqlite://$main_db" "worker-lag-$fanout"
    curl -fsS -X POST "$receiver/__reset" >/dev/null
    log "2b. log lag: $topic at $LAG_RATE msg/s for ${LAG_SECONDS}s (wrk -t$THREADS -c$LAG_CONNECTIONS, paced), one worker; XLEN every 100 ms"
    python3 "$helper" xlen "$REDIS_URL" "$logkey" 0.1 $((LAG_SECONDS + 3)) "$work/lag-$fanout.tsv" &
    sampler_pids+=($!)
    sleep 0.5
    worker_cpu0="$(cpu_s "$worker_pid")"
    t0="$(now_s)"
    l="$(TOPIC="$topic" TOKEN="$token" RATE="$LAG_RATE" THREADS="$THREADS" PUBLISH_LUA="$root/bench/publish.lua" \
      wrk -t"$THREADS" -c"$LAG_CONNECTIONS" -d"${LAG_SECONDS}s" --timeout 10s -s "$work/rate.lua" "$base" 2>&1 |
      grep '^WRK_JSON ' | tail -1 | cut -c10-)"
    t1="$(now_s)"
    [ -n "$l" ] || die "the fixed-rate wrk run failed"
    # Until the log is empty after the last publish.
    drained=""
    for ((i = 0; i < DRAIN_TIMEOUT * 10; i++)); do
      if [ "$(rcli XLEN "$logkey")" -eq 0 ]; then drained="$(python3 -c "print(round($(now_s) - $t1, 2))")"; break; fi
      sleep 0.1
    done
    stop_samplers
    jobs_left="$(rcli XLEN "$stream")"
    worker_cpu="$(python3 -c "print(round($(cpu_s "$worker_pid") - $worker_cpu0, 2))")"
    stop_worker
    python3 - "$work/lag-$fanout.tsv" "$t0" "$t1" "$l" <<EOF >>"$raw"
import json, sys
l = json.loads(sys.argv[4])
t0, t1 = float(sys.argv[2]), float(sys.argv[3])
rate = (l["requests"] - l["errors_status"]) / (l["duration_us"] / 1e6)
errors = l["errors_connect"] + l["errors_read"] + l["errors_write"] + l["errors_timeout"]
xs = sorted(x for t, x in (tuple(map(float, s.split())) for s in open(sys.argv[1]) if s.strip()) if t0 <= t <= t1)
def pct(p):
    return xs[max(0, min(len(xs) - 1, int(round(p / 100 * len(xs) + 0.5)) - 1))] / rate if xs else None
print(json.dumps({"kind": "lag", "fanout": $fanout, "topic": "$topic", "worker_cpu_s": $worker_cpu,
    "db_name": "SQLite", "rate_target": $LAG_RATE, "seconds": $LAG_SECONDS,
    "accepted_per_s": rate, "refused": l["errors_status"], "errors": errors, "wrk": l,
    "publish_p99_ms": l["latency_p99_us"] / 1000, "samples": len(xs),
    "xlen_p99": xs[max(0, min(len(xs) - 1, int(round(0.99 * len(xs) + 0.5)) - 1))] if xs else None,
    "lag_p50_s": pct(50), "lag_p99_s": pct(99), "lag_max_s": xs[-1] / rate if xs else None,
    "drained_after_s": float("$drained") if "$drained" else None, "jobs_left_at_end": $jobs_left}))
EOF
    r="$(tail -1 "$raw")"
    log "   achieved $(json_get "$r" accepted_per_s) msg/s; lag p99 $(json_get "$r" lag_p99_s) s, max $(json_get "$r" lag_max_s) s"
  done
  reset_queue
  reset_log
fi

# ------------------------------------------------------------------ 3. GET /messages over ROWS rows

list_db="$work/list.db"
now_ms() { python3 -c 'import time; print(int(time.time() * 1000))'; }
# ROWS rows 25 h old (10 a millisecond), tagged so that refills never collide.
fill_old() { # tag hours-back
  local f
  f="$(python3 "$helper" fill-sql "$list_db" "$ROWS" $(($(now_ms) - $2 * 3600000)) "$1")"
  record "{\"kind\": \"fill\", \"tag\": \"$1\", \"result\": $f}"
  echo "$f"
}
if runs_section list || runs_section retention; then
  rm -f "$list_db"*
  cp "$template_db" "$list_db"
  start_server "sqlite://$list_db"
  log "3. writing $ROWS rows by SQL into $list_db"
  f="$(fill_old old0 25)"
  log "   $(json_get "$f" seconds) s"
  last_seq="$(json_get "$f" last_seq)"
fi
if runs_section list; then
  disturbance list
  # No log stream: the horizon is Redis' clock, above every row written.
  reset_log
  end_seq="$(sql "$list_db" "SELECT log_seq FROM messages ORDER BY log_seq DESC LIMIT 1 OFFSET 200")"
  end_seq_topic="$(sql "$list_db" "SELECT log_seq FROM messages WHERE topic = 'bench.e3' ORDER BY log_seq DESC LIMIT 1 OFFSET 50")"
  h=9000000000000000000
  # label | query | SQL WHERE of its first database query (for the plan) | has a target
  while IFS='|' read -r label query where target; do
    [ -n "$label" ] || continue
    log "3. GET /messages?$query"
    g="$(python3 "$helper" get "$base/messages?$query" "$token" "$GET_REQUESTS" "$GET_MAX_SECONDS")"
    plan="$(python3 -c 'import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); print("; ".join(r[3] for r in c.execute("EXPLAIN QUERY PLAN SELECT * FROM messages WHERE " + sys.argv[2])))' "$list_db" "$where")"
    record "$(python3 -c 'import json,sys; print(json.dumps({"kind": "list", "label": sys.argv[1], "query": sys.argv[2], "where": sys.argv[3], "target": sys.argv[4] == "1", "plan": sys.argv[5], "rows": int(sys.argv[6]), "db_name": "SQLite", "result": json.loads(sys.argv[7])}))' "$label" "$query" "$where" "$target" "$plan" "$ROWS" "$g")"
    log "   p50 $(json_get "$g" p50_ms) ms, p99 $(json_get "$g" p99_ms) ms, max $(json_get "$g" max_ms) ms over $(json_get "$g" requests) requests; $plan"
  done <<EOF
exact topic|topic=bench.e3&limit=100|topic = 'bench.e3' AND log_seq < $h ORDER BY log_seq LIMIT 100|1
pattern, 10 % of rows|topic=bench.*&limit=100|topic LIKE 'bench%' ESCAPE '\\' AND log_seq < $h ORDER BY log_seq LIMIT 1000|1
since near the end|since=$end_seq&limit=100|log_seq > $end_seq AND log_seq < $h ORDER BY log_seq LIMIT 100|1
exact topic, since near the end|topic=bench.e3&since=$end_seq_topic&limit=100|topic = 'bench.e3' AND log_seq > $end_seq_topic AND log_seq < $h ORDER BY log_seq LIMIT 100|1
pattern, 1 % of rows|topic=bench.e3.%23&limit=100|topic LIKE 'bench.e3%' ESCAPE '\\' AND log_seq < $h ORDER BY log_seq LIMIT 1000|0
pattern matching no row|topic=nothing.*&limit=100|topic LIKE 'nothing%' ESCAPE '\\' AND log_seq < $h ORDER BY log_seq LIMIT 1000|0
EOF
fi

# ------------------------------------------------------------------ 4. retention while publishing

if runs_section retention; then
  disturbance retention
  fills=0
  for ((run = 1; run <= RUNS; run++)); do
    if ((run % 2)); then order="old none"; else order="none old"; fi
    for variant in $order; do
      cutoff="$(python3 -c 'import datetime as d; print((d.datetime.now(d.timezone.utc) - d.timedelta(hours=2)).strftime("%Y-%m-%d %H:%M:%S"))')"
      old="$(sql "$list_db" "SELECT count(*) FROM messages WHERE created_at < '$cutoff'")"
      if [ "$variant" = old ] && [ "$old" -lt "$ROWS" ]; then
        fills=$((fills + 1))
        log "4. writing $ROWS old rows again"
        fill_old "old$fills" $((25 + fills)) >/dev/null
        old="$(sql "$list_db" "SELECT count(*) FROM messages WHERE created_at < '$cutoff'")"
      elif [ "$variant" = none ] && [ "$old" -gt 0 ]; then
        log "4. $old old rows left from before; deleting them by SQL first"
        sql "$list_db" "DELETE FROM messages WHERE created_at < '$cutoff'" >/dev/null
        old=0
      fi
      reset_queue
      reset_log
      python3 "$helper" xlen "$REDIS_URL" "$logkey" 0.5 $((RET_SECONDS + 1)) "$work/ret-xlen-$variant-$run.tsv" &
      sampler_pids+=($!)
      python3 "$helper" old-rows "$list_db" "$cutoff" 0.5 $((RET_SECONDS * 3)) "$work/ret-old-$variant-$run.tsv" &
      sampler_pids+=($!)
      t_spawn="$(now_s)"
      start_worker "sqlite://$list_db" worker-retention SWITCH_MESSAGE_RETENTION=1h
      log "4. publish bench.f1 while retention runs, $old old rows, run $run/$RUNS (${RET_SECONDS}s)"
      server_cpu0="$(cpu_s "$server_pid")"
      worker_cpu0="$(cpu_s "$worker_pid")"
      w="$(wrk_publish bench.f1 "$RET_SECONDS")"
      server_cpu="$(python3 -c "print(round($(cpu_s "$server_pid") - $server_cpu0, 2))")"
      worker_cpu="$(python3 -c "print(round($(cpu_s "$worker_pid") - $worker_cpu0, 2))")"
      old_left="$(sql "$list_db" "SELECT count(*) FROM messages WHERE created_at < '$cutoff'")"
      stop_samplers
      stop_worker
      python3 - "$work/ret-xlen-$variant-$run.tsv" "$work/ret-old-$variant-$run.tsv" "$t_spawn" "$w" <<EOF >>"$raw"
import json, sys
xl = [tuple(map(float, l.split())) for l in open(sys.argv[1]) if l.strip()]
od = [tuple(map(float, l.split())) for l in open(sys.argv[2]) if l.strip()]
t_spawn = float(sys.argv[3])
gone = next((t for t, n in od if n == 0), None)
print(json.dumps({"kind": "retention", "variant": "$variant", "run": $run, "old_rows": $ROWS, "old_at_start": $old,
    "old_left": $old_left, "db_name": "SQLite", "wrk": json.loads(sys.argv[4]),
    "deleted_after_s": None if gone is None or $old == 0 else round(gone - t_spawn, 2),
    "log_xlen_max": int(max((x for _, x in xl), default=0)),
    "server_cpu_s": $server_cpu, "worker_cpu_s": $worker_cpu}))
EOF
      log "   p99 $(json_get "$w" latency_p99_us) us, $(json_get "$w" requests) requests; old rows left $old_left"
    done
  done
fi

# ------------------------------------------------------------------ report

stop_pid "$server_pid" 10
server_pid=""
stop_pid "$receiver_pid" 5
receiver_pid=""
problems="$(cat "$work"/worker-*.log "$work"/server.log 2>/dev/null | sed 's/\x1b\[[0-9;]*m//g' | grep -cE '^\S+\s+(WARN|ERROR)\b' || true)"
record "{\"kind\": \"logs\", \"warn_error_lines\": ${problems:-0}}"
mkdir -p "$results_dir"
python3 "$helper" report "$raw" "$results_dir"
