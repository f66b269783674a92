#!/usr/bin/env bash
# Runs a command against a hub of its own: a server and a worker on a fresh
# SQLite file and Redis namespace, on free ports. The command sees
# SWITCH_TEST_URL and SWITCH_TEST_JWT_SECRET. With --no-worker, only the
# server runs: nothing is delivered anywhere.
#   scripts/with-hub.sh [--bin-dir DIR] [--no-worker] -- COMMAND...
set -euo pipefail
bin_dir="target/debug"
with_worker=1
if [ "${1:-}" = "--bin-dir" ]; then bin_dir="$2"; shift 2; fi
if [ "${1:-}" = "--no-worker" ]; then with_worker=0; shift; fi
[ "${1:-}" = "--" ] && shift
root="$(cd "$(dirname "$0")/.." && pwd)"
bin_dir="$(cd "$root" && cd "$bin_dir" && pwd)"
work="$(mktemp -d)"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
port="$(free_port)"
export SWITCH_JWT_SECRET="hub-test-secret-$RANDOM$RANDOM"
export SWITCH_DATABASE_URL="sqlite://$work/switch.db"
export SWITCH_QUEUE_NAMESPACE="hubtest$RANDOM$RANDOM"
export SWITCH_SERVER_ADDR="127.0.0.1:$port"
export SWITCH_WORKER_METRICS_ADDR="127.0.0.1:$(free_port)"
export SWITCH_REFRESH_INTERVAL="${SWITCH_REFRESH_INTERVAL:-500ms}"
export SWITCH_RETRY_SCHEDULE="${SWITCH_RETRY_SCHEDULE:-200ms,500ms}"
"$bin_dir/switch-server" >"$work/server.log" 2>&1 &
server=$!
cleanup() {
  kill "$server" ${worker:+"$worker"} 2>/dev/null || true
  wait 2>/dev/null || true
  redis-cli --scan --pattern "{$SWITCH_QUEUE_NAMESPACE}*" 2>/dev/null | xargs -r redis-cli del >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
for _ in $(seq 1 100); do
  curl -fsS "http://127.0.0.1:$port/health" >/dev/null 2>&1 && break
  sleep 0.1
done
curl -fsS "http://127.0.0.1:$port/health" >/dev/null || { cat "$work/server.log"; exit 1; }
if [ "$with_worker" = 1 ]; then
  "$bin_dir/switch-worker" >"$work/worker.log" 2>&1 &
  worker=$!
fi
export SWITCH_TEST_URL="http://127.0.0.1:$port"
export SWITCH_TEST_JWT_SECRET="$SWITCH_JWT_SECRET"
set +e
"$@"
rc=$?
set -e
if [ $rc -ne 0 ]; then
  echo "--- server log"; tail -30 "$work/server.log"
  if [ "$with_worker" = 1 ]; then echo "--- worker log"; tail -30 "$work/worker.log"; fi
fi
exit $rc
