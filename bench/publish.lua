-- wrk script: POST /publish of {"topic": TOPIC, "body": {"n": 1}} with a bearer token.
--   TOPIC=bench.f10 TOKEN=... wrk -t2 -c32 -d10s -s bench/publish.lua http://127.0.0.1:18480
-- Prints one line "WRK_JSON {...}" with the totals when wrk finishes.

local topic = os.getenv("TOPIC") or "bench.f1"
local token = os.getenv("TOKEN")
if token == nil or token == "" then
  error("set TOKEN to a publisher JWT")
end

wrk.method = "POST"
wrk.path = "/publish"
wrk.body = string.format('{"topic": "%s", "body": {"n": 1}}', topic)
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. token

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"topic": "%s", "duration_us": %d, "requests": %d, "bytes": %d, '
      .. '"errors_connect": %d, "errors_read": %d, "errors_write": %d, '
      .. '"errors_status": %d, "errors_timeout": %d, '
      .. '"latency_p50_us": %d, "latency_p99_us": %d, "latency_max_us": %d}\n',
    topic, summary.duration, summary.requests, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99), latency.max))
end
