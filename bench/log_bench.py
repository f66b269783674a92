#!/usr/bin/env python3
"""Helpers of bench/log.sh (the message log benchmarks), standard library only.

  fill-sql DB ROWS BASE_MS TAG
      inserts ROWS rows into the messages table of SQLite file DB in one
      statement: 10 rows a millisecond from BASE_MS (log_seq = ms * 1e6 + n,
      created_at the same millisecond), 100 topics (10 first words x 10
      second words, `bench.e0` .. `search.e9`), ids `msg_<TAG><n>`.
  xlen REDIS_URL KEY INTERVAL SECONDS OUT [--until-zero]
      samples XLEN of KEY every INTERVAL s for SECONDS s (or until it is 0
      after having been above 0), one "unix-seconds xlen" line per sample in OUT.
  old-rows DB CUTOFF INTERVAL SECONDS OUT
      samples whether rows with created_at < CUTOFF (SQLite text time) are
      left, one "unix-seconds 1|0" line per sample, stopping at the first 0.
  get URL TOKEN REQUESTS MAX_SECONDS
      GETs URL sequentially over one keep-alive connection; prints a JSON
      summary (latency percentiles, statuses, items of the last answer).
  report RAW OUT_DIR
      writes OUT_DIR/log.json and OUT_DIR/log.md from the records in RAW.
"""

import http.client
import json
import socket
import sqlite3
import statistics
import sys
import time
import urllib.parse

FIRST = ["bench", "orders", "users", "billing", "ship", "stock", "auth", "mail", "audit", "search"]


# ------------------------------------------------------------------ fill

def fill_sql(db, rows, base_ms, tag):
    con = sqlite3.connect(db, timeout=60)
    con.execute("PRAGMA busy_timeout = 60000")
    first = " ".join(f"WHEN {i} THEN '{w}'" for i, w in enumerate(FIRST))
    started = time.monotonic()
    with con:
        con.execute(
            f"""
WITH RECURSIVE c(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM c WHERE n < ?)
INSERT INTO messages (id, log_seq, topic, author, body, headers, query_params, path_params,
                      http_method, ordering_key, matched, subscriber_ids, created_at)
SELECT printf('msg_%s%012d', ?, n), (? + n / 10) * 1000000 + n % 10,
       (CASE n % 10 {first} END) || '.e' || ((n / 10) % 10),
       'dev', '{{"n":1}}', '{{}}', '{{}}', '{{}}', 'POST', NULL, 1, '[1]',
       strftime('%Y-%m-%d %H:%M:%f', (? + n / 10) / 1000.0, 'unixepoch')
FROM c""",
            (rows - 1, tag, base_ms, base_ms),
        )
    seconds = time.monotonic() - started
    con.close()
    print(json.dumps({"rows": rows, "seconds": round(seconds, 3), "base_ms": base_ms,
                      "last_seq": (base_ms + (rows - 1) // 10) * 1_000_000 + (rows - 1) % 10}))


# ------------------------------------------------------------------ redis

class Redis:
    """Just enough RESP for XLEN."""

    def __init__(self, url):
        u = urllib.parse.urlparse(url)
        self.sock = socket.create_connection((u.hostname or "127.0.0.1", u.port or 6379))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.f = self.sock.makefile("rb")
        if u.password:
            self.cmd("AUTH", *([urllib.parse.unquote(u.username)] if u.username else []),
                     urllib.parse.unquote(u.password))
        db = (u.path or "/").lstrip("/")
        if db:
            self.cmd("SELECT", db)

    def cmd(self, *args):
        out = [f"*{len(args)}\r\n".encode()]
        for a in args:
            b = str(a).encode()
            out.append(b"$%d\r\n%s\r\n" % (len(b), b))
        self.sock.sendall(b"".join(out))
        line = self.f.readline()
        if line[:1] == b":":
            return int(line[1:])
        if line[:1] == b"+":
            return line[1:].strip().decode()
        if line[:1] == b"-":
            raise RuntimeError(line.decode().strip())
        raise RuntimeError(f"unexpected reply {line!r}")


def sample_xlen(url, key, interval, seconds, out, until_zero):
    r = Redis(url)
    start = time.monotonic()
    seen = False
    with open(out, "w") as f:
        while True:
            t = time.monotonic() - start
            n = r.cmd("XLEN", key)
            f.write(f"{time.time():.3f} {n}\n")
            f.flush()
            seen = seen or n > 0
            if until_zero and seen and n == 0:
                break
            if t >= seconds:
                break
            # Keep to the grid, not interval after the sample.
            nxt = start + (int(t / interval) + 1) * interval
            time.sleep(max(0.0, nxt - time.monotonic()))


def sample_old_rows(db, cutoff, interval, seconds, out):
    # min(created_at) is one index lookup; counting would read the index.
    con = sqlite3.connect(db, timeout=60, isolation_level=None)
    start = time.monotonic()
    with open(out, "w") as f:
        while True:
            t = time.monotonic() - start
            try:
                oldest = con.execute("SELECT min(created_at) FROM messages").fetchone()[0]
                n = int(oldest is not None and oldest < cutoff)
            except sqlite3.OperationalError:
                n = -1
            f.write(f"{time.time():.3f} {n}\n")
            f.flush()
            if n == 0 or t >= seconds:
                break
            nxt = start + (int(t / interval) + 1) * interval
            time.sleep(max(0.0, nxt - time.monotonic()))


# ------------------------------------------------------------------ http

def pct(sorted_values, p):
    if not sorted_values:
        return None
    k = max(0, min(len(sorted_values) - 1, int(round(p / 100 * len(sorted_values) + 0.5)) - 1))
    return sorted_values[k]


def get_latency(url, token, requests, max_seconds):
    u = urllib.parse.urlparse(url)
    path = u.path + ("?" + u.query if u.query else "")
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
    headers = {"Authorization": f"Bearer {token}"}
    took, statuses, last = [], {}, None
    deadline = time.monotonic() + max_seconds
    # Two warm-up requests (connection, page cache), not counted.
    for i in range(requests + 2):
        t = time.perf_counter()
        conn.request("GET", path, headers=headers)
        resp = conn.getresponse()
        body = resp.read()
        dt = (time.perf_counter() - t) * 1000
        if i >= 2:
            took.append(dt)
            statuses[resp.status] = statuses.get(resp.status, 0) + 1
        last = (resp.status, body)
        if time.monotonic() >= deadline:
            break
    conn.close()
    items = None
    try:
        items = len(json.loads(last[1])["items"])
    except Exception:
        pass
    s = sorted(took)
    print(json.dumps({
        "requests": len(took), "statuses": statuses, "items_last": items,
        "p50_ms": round(pct(s, 50), 3), "p90_ms": round(pct(s, 90), 3),
        "p99_ms": round(pct(s, 99), 3), "max_ms": round(s[-1], 3),
        "mean_ms": round(statistics.fmean(s), 3),
        "stopped_at_max_seconds": len(took) < requests,
    }))


# ------------------------------------------------------------------ report

def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def fmt(x, digits=0):
    if x is None:
        return "–"
    if digits == 0:
        return f"{x:,.0f}"
    return f"{x:,.{digits}f}"


def verdict(ok):
    return "meets" if ok else "**misses**"


METHOD = [
    "Ports 18490-18493; one server, the receiver (`switch-bench receiver`, 2 actix workers) and at most one "
    "worker (`SWITCH_WORKER_CONCURRENCY=64`); `bench.f1` has one subscriber at the receiver, `bench.f0` none. "
    "Every archiver writes batches of up to 1,000 log entries (one transaction) and XACK+XDELs them after the commit.",
    "",
    "1. **Publish with and without the archiver.** The archiver cannot be switched off while a worker runs, so "
    "the comparison is publishing at fan-out 0 (`bench.f0`: the message is logged, no job) with one worker "
    "running, whose only work is archiving the log, against publishing with no worker at all (log entries "
    "accumulate in Redis, nothing is archived). Both add the entry to the log stream; what differs is the "
    "archiver's reads, XACK/XDEL and SQLite writes competing for the 2 cores. `wrk -t2 -c32 -s bench/publish.lua`, "
    "each run on an empty log stream, variants alternating (none, worker / worker, none / ...); medians. "
    "Row 1b, for context only: fan-out 1 with the worker also delivering to the receiver.",
    "2. **Archiver throughput.** With no worker, `switch-bench fill` publishes N messages at fan-out 0; one worker "
    "starts and XLEN of the log is sampled every 50 ms until 0. rows/s = N / (time the log reached 0 − first "
    "sample below N), i.e. without the worker's startup (also given from the spawn). SQLite: a fresh file each "
    "run; PostgreSQL: a database created for the run (migrated by starting a server on it), `TRUNCATE messages` "
    "before each run, dropped at the end. Runs alternate SQLite / PostgreSQL.",
    "2b. **Log lag.** One worker (SQLite); wrk (64 connections) paced by a `delay()` hook to a fixed rate "
    "(80 % of row 1's median fan-out-1 rate without a worker, unless set) publishes `bench.f1` (the worker "
    "delivers and archives) and then `bench.f0` (it only archives) for the run length; XLEN of the log every "
    "100 ms over the publishing window; lag = XLEN / achieved publish rate. wrk is closed-loop: when the hub "
    "cannot answer at the rate, the achieved rate is lower (given).",
    "3. **Listing.** Rows written by one SQL statement into a fresh SQLite file (10 per millisecond, 25 h old, "
    "100 topics `bench.e0` … `search.e9`, 1 % each; `bench.*` matches 10 %); no log stream (the horizon is "
    "Redis' clock). Each query is sent sequentially over one keep-alive connection (python http.client; two "
    "warm-up requests not counted), at most the set number of requests or seconds. The plan is SQLite's "
    "EXPLAIN QUERY PLAN (python's SQLite) of the first statement the server runs for the query.",
    "4. **Retention.** The same file with its old rows (written again by SQL before each later run that needs "
    "them); one worker with `SWITCH_MESSAGE_RETENTION=1h` starts and wrk publishes `bench.f1` (fan-out 1, "
    "delivered to the receiver) for the run length, against the same run with no old rows. Whether old rows are "
    "left is sampled every 0.5 s (`min(created_at)`), log XLEN every 0.5 s. Variants alternate (old, none / "
    "none, old / ...); medians.",
]


def report(raw, out_dir):
    recs = [json.loads(l) for l in open(raw) if l.strip()]
    by = {}
    for r in recs:
        by.setdefault(r["kind"], []).append(r)
    machine = (by.get("machine") or [{}])[0]
    rows = []  # (measurement, database, figure, target, verdict)
    summary = {"machine": machine}
    notes = []

    def wrk_rate(w):
        return (w["requests"] - w["errors_status"]) / (w["duration_us"] / 1e6)

    # 1. publish
    pub = by.get("publish", [])
    if pub:
        fig = {}
        for v in ("f0_none", "f0_worker", "f1_none", "f1_worker"):
            runs = [r for r in pub if r["variant"] == v]
            if not runs:
                continue
            fig[v] = {
                "runs": [round(wrk_rate(r["wrk"])) for r in runs],
                "msg_per_s": med([wrk_rate(r["wrk"]) for r in runs]),
                "p99_ms": med([r["wrk"]["latency_p99_us"] / 1000 for r in runs]),
                "log_left": [r["log_xlen_end"] for r in runs],
                "archived": [r.get("archived") for r in runs],
                "worker_cpu_s": med([r.get("worker_cpu_s") for r in runs]),
                "server_cpu_s": med([r.get("server_cpu_s") for r in runs]),
                "redis_cpu_s": med([r.get("redis_cpu_s") for r in runs]),
            }
        summary["publish"] = fig
        def pairs(a, b):
            # Per run: variant a / variant b (the two ran next to each other).
            ra = {r["run"]: wrk_rate(r["wrk"]) for r in pub if r["variant"] == a}
            rb = {r["run"]: wrk_rate(r["wrk"]) for r in pub if r["variant"] == b}
            return [round(ra[k] / rb[k] * 100, 1) for k in sorted(ra) if k in rb]
        if "f0_none" in fig and "f0_worker" in fig:
            ratio = fig["f0_worker"]["msg_per_s"] / fig["f0_none"]["msg_per_s"]
            fig["ratio_f0"] = ratio
            fig["ratio_f0_per_run_pct"] = pairs("f0_worker", "f0_none")
            rows.append((
                "1. publish/s, fan-out 0, one worker archiving vs no worker",
                machine.get("sqlite", "SQLite"),
                f"{fmt(fig['f0_worker']['msg_per_s'])} vs {fmt(fig['f0_none']['msg_per_s'])} msg/s = "
                f"**{ratio * 100:.1f} %** (runs {fig['f0_worker']['runs']} vs {fig['f0_none']['runs']}, "
                f"per pair {fig['ratio_f0_per_run_pct']} %; "
                f"p99 {fmt(fig['f0_worker']['p99_ms'], 2)} vs {fmt(fig['f0_none']['p99_ms'], 2)} ms; "
                f"log entries left at the end of the worker runs {fig['f0_worker']['log_left']}; the worker used "
                f"{fmt(fig['f0_worker']['worker_cpu_s'], 1)} CPU-s per run, the server {fmt(fig['f0_worker']['server_cpu_s'], 1)} "
                f"vs {fmt(fig['f0_none']['server_cpu_s'], 1)}, Redis {fmt(fig['f0_worker']['redis_cpu_s'], 1)} "
                f"vs {fmt(fig['f0_none']['redis_cpu_s'], 1)})",
                "≥ 90 %", verdict(ratio >= 0.9)))
        if "f1_none" in fig and "f1_worker" in fig:
            ratio = fig["f1_worker"]["msg_per_s"] / fig["f1_none"]["msg_per_s"]
            fig["ratio_f1"] = ratio
            rows.append((
                "1b. publish/s, fan-out 1, one worker delivering and archiving vs no worker (context)",
                machine.get("sqlite", "SQLite"),
                f"{fmt(fig['f1_worker']['msg_per_s'])} vs {fmt(fig['f1_none']['msg_per_s'])} msg/s = "
                f"{ratio * 100:.1f} % (runs {fig['f1_worker']['runs']} vs {fig['f1_none']['runs']}; "
                f"p99 {fmt(fig['f1_worker']['p99_ms'], 2)} vs {fmt(fig['f1_none']['p99_ms'], 2)} ms)",
                "–", "–"))

    # 2. archiver throughput
    arc = by.get("archive", [])
    if arc:
        summary["archive"] = {}
        for dbk in ("sqlite", "postgres"):
            runs = [r for r in arc if r["db"] == dbk]
            if not runs:
                continue
            rates = [r["rows_per_s"] for r in runs]
            rates_all = [r["rows_per_s_from_start"] for r in runs]
            summary["archive"][dbk] = {"runs": runs, "rows_per_s": med(rates),
                                       "rows_per_s_from_start": med(rates_all)}
            rows.append((
                f"2. archiver throughput, {runs[0]['n']:,} entries pre-filled, one worker",
                runs[0]["db_name"],
                f"**{fmt(med(rates))} rows/s** (runs {[round(x) for x in rates]}; from the worker's start "
                f"incl. its startup {fmt(med(rates_all))} rows/s; rows in the table "
                f"{[r['rows_in_table'] for r in runs]})",
                "–", "–"))
    lag = by.get("lag", [])
    if lag:
        summary["lag"] = lag
        for r in lag:
            rows.append((
                f"2b. log lag, publishing {fmt(r['rate_target'])} msg/s (fan-out {r['fanout']}) for "
                f"{r['seconds']} s, one worker {'delivering and archiving' if r['fanout'] else 'archiving'}; "
                f"XLEN every 100 ms, lag = XLEN / rate",
                r["db_name"],
                f"**p99 {fmt(r['lag_p99_s'], 2)} s**, p50 {fmt(r['lag_p50_s'], 2)} s, max {fmt(r['lag_max_s'], 2)} s "
                f"(achieved {fmt(r['accepted_per_s'])} msg/s, publish p99 {fmt(r['publish_p99_ms'], 1)} ms, "
                f"{r['refused']} refused, {r['errors']} errors; log empty {fmt(r['drained_after_s'], 1)} s after the last publish; "
                f"worker {fmt(r.get('worker_cpu_s'), 1)} CPU-s)",
                "p99 < 2 s", verdict(r["lag_p99_s"] < 2)))

    # 3. list
    lst = by.get("list", [])
    if lst:
        summary["list"] = lst
        for r in lst:
            g = r["result"]
            target = r.get("target", True)
            rows.append((
                f"3. GET /messages {r['label']} (`{r['query']}`), {r['rows']:,} rows, "
                f"{g['requests']} sequential requests, keep-alive",
                r["db_name"],
                f"**p99 {fmt(g['p99_ms'], 2)} ms**, p50 {fmt(g['p50_ms'], 2)} ms, max {fmt(g['max_ms'], 2)} ms; "
                f"{g['items_last']} items; plan: {r['plan']}",
                "p99 ≤ 20 ms" if target else "– (worst case, no target)",
                verdict(g["p99_ms"] <= 20) if target else ("within 20 ms" if g["p99_ms"] <= 20 else "above 20 ms")))

    # 4. retention
    ret = by.get("retention", [])
    if ret:
        fig = {}
        for v in ("old", "none"):
            runs = [r for r in ret if r["variant"] == v]
            if not runs:
                continue
            fig[v] = {
                "p99_ms": med([r["wrk"]["latency_p99_us"] / 1000 for r in runs]),
                "p99_runs": [round(r["wrk"]["latency_p99_us"] / 1000, 2) for r in runs],
                "p50_ms": med([r["wrk"]["latency_p50_us"] / 1000 for r in runs]),
                "msg_per_s": med([wrk_rate(r["wrk"]) for r in runs]),
                "deleted_after_s": [r.get("deleted_after_s") for r in runs],
                "old_left": [r.get("old_left") for r in runs],
                "log_xlen_max": [r.get("log_xlen_max") for r in runs],
                "worker_cpu_s": med([r.get("worker_cpu_s") for r in runs]),
                "server_cpu_s": med([r.get("server_cpu_s") for r in runs]),
            }
        summary["retention"] = {"runs": ret, "figures": fig}
        if "old" in fig and "none" in fig:
            d = fig["old"]["p99_ms"] / fig["none"]["p99_ms"] - 1
            fig["p99_change"] = d
            po = {r["run"]: r["wrk"]["latency_p99_us"] for r in ret if r["variant"] == "old"}
            pn = {r["run"]: r["wrk"]["latency_p99_us"] for r in ret if r["variant"] == "none"}
            fig["p99_change_per_run_pct"] = [round((po[k] / pn[k] - 1) * 100) for k in sorted(po) if k in pn]
            rows.append((
                f"4. publish p99 (wrk -t2 -c32, fan-out 1, worker with SWITCH_MESSAGE_RETENTION=1h) "
                f"while retention deletes {ret[0]['old_rows']:,} old rows vs no old rows",
                ret[0]["db_name"],
                f"**{fmt(fig['old']['p99_ms'], 2)} vs {fmt(fig['none']['p99_ms'], 2)} ms = {d * 100:+.1f} %** "
                f"(runs {fig['old']['p99_runs']} vs {fig['none']['p99_runs']}, per pair "
                f"[{', '.join('%+d' % x for x in fig['p99_change_per_run_pct'])}] %; p50 {fmt(fig['old']['p50_ms'], 2)} vs "
                f"{fmt(fig['none']['p50_ms'], 2)} ms; {fmt(fig['old']['msg_per_s'])} vs {fmt(fig['none']['msg_per_s'])} msg/s; "
                f"old rows gone after {fig['old']['deleted_after_s']} s; log backlog max "
                f"{fig['old']['log_xlen_max']} vs {fig['none']['log_xlen_max']} entries; worker CPU "
                f"{fmt(fig['old']['worker_cpu_s'], 1)} vs {fmt(fig['none']['worker_cpu_s'], 1)} s, server "
                f"{fmt(fig['old']['server_cpu_s'], 1)} vs {fmt(fig['none']['server_cpu_s'], 1)} s per run)",
                "within 20 %", verdict(d <= 0.2)))

    summary["table"] = [dict(zip(("measurement", "database", "figure", "target", "verdict"), r)) for r in rows]
    summary["records"] = recs
    with open(f"{out_dir}/log.json", "w") as f:
        json.dump(summary, f, indent=1, default=str)

    md = ["# Switch message log benchmarks", ""]
    md.append(f"Run {machine.get('date', '?')} on {machine.get('commit', '?')}, by `bench/log.sh` "
              f"(raw records in `log.json`); binaries: {', '.join(machine.get('binaries', []))}.")
    md.append("")
    md.append(f"Machine: {machine.get('nproc', '?')} cores ({machine.get('cpu_model', '?')}), "
              f"{machine.get('memory_mb', 0):,} MB, {machine.get('redis', '?')}, "
              f"SQLite {machine.get('sqlite_version', '?')}, {machine.get('postgres', 'PostgreSQL not used')}. "
              "Redis, server, worker, receiver, database and load generator share the cores over loopback.")
    md.append("")
    md.append("| measurement | database | figure | target | verdict |")
    md.append("| --- | --- | --- | --- | --- |")
    for r in rows:
        md.append("| " + " | ".join(str(x).replace("|", "\\|") for x in r) + " |")
    md.append("")
    md.append("## Method")
    md.append("")
    md.extend(METHOD)
    md.append("")
    md.append("## Settings")
    md.append("")
    md.append("```")
    md.append(json.dumps(machine.get("settings", {}), indent=1))
    md.append("```")
    dist = by.get("disturbance", [])
    if dist:
        md.append("")
        md.append("## Load from other processes")
        md.append("")
        md.append("1-minute load average and the busiest processes not started by this run, "
                  "at the start of each section:")
        md.append("")
        for d in dist:
            md.append(f"- {d['section']}: load {d['loadavg']}; {d['others'] or 'nothing else above 5 % CPU'}")
    # A "## Reading" section written by hand after a run is kept.
    try:
        previous = open(f"{out_dir}/log.md").read()
    except OSError:
        previous = ""
    at = previous.find("\n## Reading")
    if at >= 0:
        md.append(previous[at:].rstrip("\n"))
    with open(f"{out_dir}/log.md", "w") as f:
        f.write("\n".join(md) + "\n")
    print("\n".join(md))


def main():
    a = sys.argv[1:]
    if not a:
        sys.exit(__doc__)
    cmd = a[0]
    if cmd == "fill-sql":
        fill_sql(a[1], int(a[2]), int(a[3]), a[4])
    elif cmd == "xlen":
        sample_xlen(a[1], a[2], float(a[3]), float(a[4]), a[5], "--until-zero" in a[6:])
    elif cmd == "old-rows":
        sample_old_rows(a[1], a[2], float(a[3]), float(a[4]), a[5])
    elif cmd == "get":
        get_latency(a[1], a[2], int(a[3]), float(a[4]))
    elif cmd == "report":
        report(a[1], a[2])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
