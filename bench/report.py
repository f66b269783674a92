#!/usr/bin/env python3
"""Turns the raw measurements of bench/run.sh into results.json and results.md.

    python3 bench/report.py RAW.jsonl RESULTS_DIR

RAW.jsonl has one JSON object per line with a "kind"; RESULTS_DIR/drain.tsv holds
the backlog drain samples ("seconds received_count stream_length" per line).
Prints the Markdown report.
"""

import json
import os
import statistics
import sys


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def fmt(x, digits=0):
    if x is None:
        return "n/a"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if digits == 0:
        return f"{x:,.0f}"
    return f"{x:,.{digits}f}"


def crossing(samples, target):
    """Time at which the received count reached `target`, interpolated."""
    prev = None
    for t, c, _ in samples:
        if c >= target:
            if prev is None or c == prev[1]:
                return t
            pt, pc = prev
            return pt + (t - pt) * (target - pc) / (c - pc)
        prev = (t, c)
    return None


def drain_windows_exact(progress, total, start_ns):
    """Jobs/s over the first, middle and last 10% of the drain, from the arrival
    times the receiver noted (every `mark_every`th request, first and last)."""
    first, last = progress["first_us"], progress["last_us"]
    marks = [(0, first)] + [tuple(m) for m in progress["marks"]]
    if not first or not last or total <= 0:
        return None

    def at(n):
        if n >= total:
            return last
        prev = marks[0]
        for m in marks:
            if m[0] >= n:
                if m[0] == prev[0]:
                    return m[1]
                return prev[1] + (m[1] - prev[1]) * (n - prev[0]) / (m[0] - prev[0])
            prev = m
        return last

    def rate(lo, hi):
        a, b = at(lo * total), at(hi * total)
        return (hi - lo) * total / ((b - a) / 1e6) if b > a else None

    return {
        "first_10pct_jobs_per_s": rate(0.0, 0.1),
        "middle_10pct_jobs_per_s": rate(0.45, 0.55),
        "last_10pct_jobs_per_s": rate(0.9, 1.0),
        "overall_jobs_per_s": total / ((last - first) / 1e6) if last > first else None,
        "drain_seconds": (last - first) / 1e6,
        "first_delivery_after_s": (first * 1000 - start_ns) / 1e9,
        "window_source": f"receiver arrival times (every {progress['mark_every']}th request)",
    }


def drain_windows(samples, total):
    """Jobs/s over the first, middle and last 10% of the drain."""
    started = [t for t, c, _ in samples if c == 0]
    t_start = started[-1] if started else 0.0

    def rate(lo, hi):
        a = t_start if lo == 0 else crossing(samples, lo * total)
        b = crossing(samples, hi * total)
        if a is None or b is None or b <= a:
            return None
        return (hi - lo) * total / (b - a)

    end = crossing(samples, total)
    return {
        "first_10pct_jobs_per_s": rate(0.0, 0.1),
        "middle_10pct_jobs_per_s": rate(0.45, 0.55),
        "last_10pct_jobs_per_s": rate(0.9, 1.0),
        "overall_jobs_per_s": (total / (end - t_start)) if end and end > t_start else None,
        "drain_seconds": (end - t_start) if end else None,
        "first_delivery_after_s": t_start,
        "window_source": "receiver count samples",
    }


def main():
    raw_path, out_dir = sys.argv[1], sys.argv[2]
    rows = [json.loads(line) for line in open(raw_path) if line.strip()]
    by = {}
    for r in rows:
        by.setdefault(r["kind"], []).append(r)
    machine = by["machine"][0]
    settings = machine["settings"]
    summary = {"machine": {k: v for k, v in machine.items() if k not in ("kind", "settings")},
               "settings": settings}

    summary["receiver_capacity_requests_per_s"] = by.get("receiver", [{}])[0].get("requests_per_s")

    # a. publish throughput
    publish = {}
    for r in by.get("publish", []):
        w = r["wrk"]
        secs = w["duration_us"] / 1e6
        publish.setdefault(r["fanout"], []).append({
            "messages_per_s": (w["requests"] - w["errors_status"]) / secs,
            "jobs_per_s": r["jobs_in_stream"] / secs,
            "p50_ms": w["latency_p50_us"] / 1000,
            "p99_ms": w["latency_p99_us"] / 1000,
            "errors": w["errors_status"] + w["errors_connect"] + w["errors_read"]
            + w["errors_write"] + w["errors_timeout"],
        })
    summary["publish"] = {
        str(f): {
            "messages_per_s": median([x["messages_per_s"] for x in runs]),
            "jobs_per_s": median([x["jobs_per_s"] for x in runs]),
            "p50_ms": median([x["p50_ms"] for x in runs]),
            "p99_ms": median([x["p99_ms"] for x in runs]),
            "errors": sum(x["errors"] for x in runs),
            "runs": runs,
        }
        for f, runs in sorted(publish.items())
    }

    # b. end-to-end
    e2e = {}
    for r in by.get("e2e", []):
        w = r["wrk"]
        e2e.setdefault(r["workers"], []).append({
            "deliveries_per_s": r["delivered"] / r["total_seconds"],
            "delivered": r["delivered"],
            "expected": r["expected"],
            "total_seconds": r["total_seconds"],
            "publish_messages_per_s": (w["requests"] - w["errors_status"]) / (w["duration_us"] / 1e6),
            "deliveries_per_s_while_publishing": r["delivered_while_publishing"] / r["publish_seconds"],
            "stream_at_publish_end": r["stream_at_publish_end"],
            "timed_out": r["timed_out"],
        })
    summary["end_to_end"] = {
        str(n): {
            "deliveries_per_s": median([x["deliveries_per_s"] for x in runs]),
            "deliveries_per_s_while_publishing": median([x["deliveries_per_s_while_publishing"] for x in runs]),
            "publish_messages_per_s": median([x["publish_messages_per_s"] for x in runs]),
            "total_seconds": median([x["total_seconds"] for x in runs]),
            "stream_at_publish_end": median([x["stream_at_publish_end"] for x in runs]),
            "timed_out": any(x["timed_out"] for x in runs),
            "runs": runs,
        }
        for n, runs in sorted(e2e.items())
    }

    # b2. sustained rate: delivered within 1 s of the end of publishing = kept up
    sustained = []
    for r in by.get("sustained", []):
        p, rc = r["publisher"], r["receiver"]
        offered = p["rate_achieved"] * 10
        sustained.append({
            "rate_msg_per_s": r["rate"],
            "offered_deliveries_per_s": offered,
            "delivered_per_s_while_publishing": r["delivered_while_publishing"] / r["publish_seconds"],
            "drained_after_s": r["drained_after_s"],
            "kept_up": (not r["timed_out"]) and r["drained_after_s"] <= 1.0 and p["refused"] == 0
            and p["errors"] == 0,
            "p50_ms": rc["p50_us"] / 1000, "p99_ms": rc["p99_us"] / 1000,
            "p999_ms": rc["p999_us"] / 1000,
            "publish_p99_ms": p["publish_p99_us"] / 1000,
            "refused": p["refused"], "errors": p["errors"], "timed_out": r["timed_out"],
        })
    kept = [x for x in sustained if x["kept_up"]]
    summary["sustained"] = {
        "best_kept_up": max(kept, key=lambda x: x["offered_deliveries_per_s"]) if kept else None,
        "runs": sustained,
    }

    # c. latency
    lat = []
    for r in by.get("latency", []):
        p, s = r["publisher"], r["receiver"]
        lat.append({
            "p50_ms": s["p50_us"] / 1000, "p99_ms": s["p99_us"] / 1000,
            "p999_ms": s["p999_us"] / 1000, "max_ms": s.get("max_us", 0) / 1000,
            "samples": s["latency_samples"], "accepted": p["accepted"], "sent": p["sent"],
            "rate_achieved": p["rate_achieved"], "publish_p50_ms": p["publish_p50_us"] / 1000,
            "publish_p99_ms": p["publish_p99_us"] / 1000, "timed_out": r["timed_out"],
        })
    summary["latency"] = {
        k: median([x[k] for x in lat])
        for k in ("p50_ms", "p99_ms", "p999_ms", "max_ms", "samples", "rate_achieved",
                  "publish_p50_ms", "publish_p99_ms")
    } | {"runs": lat, "timed_out": any(x["timed_out"] for x in lat)}

    # d. backlog
    if by.get("backlog"):
        b = by["backlog"][0]
        samples = []
        tsv = os.path.join(out_dir, b["samples_file"])
        if os.path.exists(tsv):
            for line in open(tsv):
                parts = line.split()
                if len(parts) == 3:
                    samples.append((float(parts[0]), int(parts[1]), int(parts[2])))
        progress = None
        if b.get("progress_file") and os.path.exists(b["progress_file"]):
            with open(b["progress_file"]) as f:
                progress = json.load(f)
        windows = (drain_windows_exact(progress, b["queued"], b["start_ns"]) if progress else None) \
            or drain_windows(samples, b["queued"])
        summary["backlog"] = {
            "queued": b["queued"],
            "fill_messages_per_s": b["fill"]["accepted_per_s"],
            "fill_jobs_per_s": b["queued"] / b["fill_seconds"] if b["fill_seconds"] else None,
            "redis_used_memory_mb": b["redis_used_memory_bytes"] / 1048576,
            "redis_bytes_per_job": b["redis_used_memory_bytes"] / max(b["queued"], 1),
            "worker_warn_error_lines": b["worker_warn_error_lines"],
            "worker_problem_examples": b["worker_problem_examples"],
            "timed_out": b["timed_out"],
            "delivered": samples[-1][1] if samples else None,
            "worker_healthy_after_s": b.get("worker_healthy_s"),
            "samples": samples,
        } | windows

    # f. memory
    if by.get("rss"):
        m = by["rss"][0]
        summary["memory"] = {
            "server_peak_rss_mb": m["server"]["vm_hwm_mb"],
            "worker_peak_rss_mb": m["worker"]["vm_hwm_mb"],
            "redis_peak_mb": m["redis_used_memory_peak_bytes"] / 1048576,
        }

    if by.get("logs"):
        summary["logs"] = {k: v for k, v in by["logs"][0].items() if k != "kind"}

    # e. filter cost
    if by.get("filter_cost"):
        summary["filter_cost"] = by["filter_cost"][0]["result"]

    with open(os.path.join(out_dir, "results.json"), "w") as f:
        json.dump(summary, f, indent=2)
        f.write("\n")
    md = render(summary)
    with open(os.path.join(out_dir, "results.md"), "w") as f:
        f.write(md)
    print(md)


def render(s):
    m, st = s["machine"], s["settings"]
    runs, secs = st["runs"], st["seconds"]
    out = []
    w = out.append
    w("# Switch benchmark results\n")
    w(f"Run {m['date']} on commit {m['commit']}.\n")
    w("## Machine\n")
    w("| | |\n| --- | --- |")
    w(f"| CPU | {m['nproc']} cores, {m['cpu_model'] or 'unknown model'} |")
    w(f"| memory | {fmt(m['memory_mb'])} MB |")
    w(f"| kernel | {m['kernel']} |")
    w(f"| Redis | {m['redis']} |")
    w(f"| Rust | {m['rustc']} |")
    w(f"| load generator | {m['wrk']} |")
    w(f"| database | {st['database']} |")
    w(f"| logs | {st['log_level']}, written to files |")
    w("")
    w("## Method\n")
    w(f"Everything runs on this one machine over loopback: Redis, the server, the worker(s), the "
      f"receiver (`switch-bench receiver`, 2 actix-web workers, answers 200 to everything) and the "
      f"load generator, so they share the {m['nproc']} cores. Each figure is the median of "
      f"{runs} run(s) of {secs} s unless said otherwise. Publishing uses "
      f"`wrk -t{st['wrk_threads']} -c{st['wrk_connections']}` with `bench/publish.lua` "
      f"(`{{\"topic\": ..., \"body\": {{\"n\": 1}}}}`, 202 expected). Subscribers are seeded by SQL "
      f"on `bench.f1`, `bench.f10`, `bench.f100` (1, 10, 100 subscribers without filters) "
      f"pointing at the receiver. Workers run with `SWITCH_WORKER_CONCURRENCY={st['worker_concurrency']}`.\n")
    w("- **Publish throughput**: no worker; the stream is deleted between runs; messages/s are "
      "wrk's accepted requests over its duration, jobs/s the stream length over the same duration.")
    w("- **End-to-end**: fan-out 10, wrk publishes for the run length while the worker(s) deliver; "
      "deliveries/s = requests the receiver got / time from the start of publishing until the "
      "stream and the retry set are empty and every expected delivery has arrived.")
    w("- **Sustained**: one worker, fan-out 10, `switch-bench latency` publishes at each fixed rate "
      f"of {', '.join(str(r) for r in st.get('sustain_rates', []))} msg/s for the run length while the "
      "worker delivers; deliveries/s while publishing = requests the receiver got by the time the "
      "publisher finished / its duration. A rate is kept up when the queue is empty within 1 s of "
      "the last publish and no publish was refused; one run per rate.")
    w(f"- **Latency**: one worker, fan-out 1, `switch-bench latency` publishes {fmt(st['rate'])} msg/s "
      "(fixed rate, each publish on its own task) with the publish time in the body; the receiver "
      "records arrival − publish time.")
    w(f"- **Backlog**: with no worker, {fmt(st['backlog'])} jobs are enqueued (fan-out 100), then one "
      f"worker starts and the receiver count is sampled every {st['sample_seconds']} s "
      "(`drain.tsv`: seconds, received, stream length). The rates of the first, middle (45–55 %) "
      "and last 10 % of the jobs come from the arrival times the receiver notes for every 100th "
      "request, from the first delivery to the last.")
    w("- **Filter cost**: `switch-bench filter-cost`, in process: `Index::matching` over 1,000 "
      "subscribers on one topic (90 % with filters from a mix of nine, legacy ones included), "
      "median of 5 runs.")
    w("- **Peak RSS**: VmHWM of the server (over the whole run) and of the backlog worker, read "
      "right after the drain.\n")

    w("## Results\n")
    w("| measurement | figure |\n| --- | --- |")
    w(f"| receiver capacity (wrk, 5 s) | {fmt(s.get('receiver_capacity_requests_per_s'))} req/s |")
    for f, p in s.get("publish", {}).items():
        w(f"| publish, fan-out {f}, no worker | {fmt(p['messages_per_s'])} msg/s = "
          f"{fmt(p['jobs_per_s'])} jobs/s (p50 {fmt(p['p50_ms'], 2)} ms, p99 {fmt(p['p99_ms'], 2)} ms"
          f"{', ' + str(p['errors']) + ' errors' if p['errors'] else ''}) |")
    for n, e in s.get("end_to_end", {}).items():
        w(f"| end-to-end deliveries, {n} worker{'s' if n != '1' else ''}, fan-out 10 | "
          f"{fmt(e['deliveries_per_s'])} deliveries/s (publishing {fmt(e['publish_messages_per_s'])} msg/s; "
          f"{fmt(e['deliveries_per_s_while_publishing'])} deliveries/s while publishing; "
          f"drained {fmt(e['total_seconds'], 1)} s after publishing started"
          f"{'; TIMED OUT' if e['timed_out'] else ''}) |")
    sus = s.get("sustained", {})
    for x in sus.get("runs", []):
        w(f"| sustained, 1 worker, fan-out 10, publishing {fmt(x['rate_msg_per_s'])} msg/s "
          f"({fmt(x['offered_deliveries_per_s'])} deliveries/s offered) | "
          f"{fmt(x['delivered_per_s_while_publishing'])} deliveries/s while publishing; "
          f"{'kept up' if x['kept_up'] else 'fell behind'} (queue empty {fmt(x['drained_after_s'], 2)} s after "
          f"the last publish); latency p50 {fmt(x['p50_ms'], 2)} ms, p99 {fmt(x['p99_ms'], 2)} ms"
          f"{'; ' + str(x['refused'] + x['errors']) + ' publishes refused or failed' if x['refused'] + x['errors'] else ''} |")
    lat = s.get("latency")
    if lat and lat.get("runs"):
        w(f"| delivery latency at {fmt(st['rate'])} msg/s, 1 worker, fan-out 1 | "
          f"p50 {fmt(lat['p50_ms'], 2)} ms, p99 {fmt(lat['p99_ms'], 2)} ms, p99.9 {fmt(lat['p999_ms'], 2)} ms "
          f"(max {fmt(lat['max_ms'], 1)} ms; {fmt(lat['samples'])} samples; publish answer p50 "
          f"{fmt(lat['publish_p50_ms'], 2)} ms, p99 {fmt(lat['publish_p99_ms'], 2)} ms"
          f"{'; TIMED OUT' if lat['timed_out'] else ''}) |")
    b = s.get("backlog")
    if b:
        w(f"| backlog enqueued | {fmt(b['queued'])} jobs at {fmt(b['fill_jobs_per_s'])} jobs/s; "
          f"Redis {fmt(b['redis_used_memory_mb'])} MB ({fmt(b['redis_bytes_per_job'])} B/job) |")
        w(f"| backlog drain, first 10 % | {fmt(b['first_10pct_jobs_per_s'])} jobs/s |")
        w(f"| backlog drain, middle 10 % | {fmt(b['middle_10pct_jobs_per_s'])} jobs/s |")
        w(f"| backlog drain, last 10 % | {fmt(b['last_10pct_jobs_per_s'])} jobs/s |")
        w(f"| backlog drain, overall | {fmt(b['overall_jobs_per_s'])} jobs/s over "
          f"{fmt(b['drain_seconds'], 1)} s (first delivery {fmt(b['first_delivery_after_s'], 2)} s "
          f"after the worker was started){'; TIMED OUT' if b['timed_out'] else ''} |")
        w(f"| worker WARN/ERROR log lines during the drain | {b['worker_warn_error_lines']} |")
    fc = s.get("filter_cost")
    if fc:
        w(f"| filter cost, {fmt(fc['subscribers'])} subscribers, exact topic | "
          f"{fmt(fc['ns_per_subscriber'], 1)} ns/subscriber ({fmt(fc['us_per_publish'], 1)} µs per publish, "
          f"{fmt(fc['matched'])} matched) |")
        w(f"| filter cost, same subscribers on `{fc['wildcard_pattern']}` | "
          f"{fmt(fc['wildcard_ns_per_subscriber'], 1)} ns/subscriber |")
        w(f"| matching without filters (lookup only) | {fmt(fc['unfiltered_ns_per_subscriber'], 1)} ns/subscriber |")
    mem = s.get("memory")
    if mem:
        w(f"| peak RSS, server | {fmt(mem['server_peak_rss_mb'], 1)} MB |")
        w(f"| peak RSS, worker (after the backlog) | {fmt(mem['worker_peak_rss_mb'], 1)} MB |")
        w(f"| Redis peak memory (whole instance, since it started) | {fmt(mem['redis_peak_mb'])} MB |")
    logs = s.get("logs")
    if logs:
        w(f"| WARN/ERROR log lines over the whole run | server {logs['server_warn_error_lines']}, "
          f"workers {logs['worker_warn_error_lines']} (logs: server {fmt(logs['server_log_bytes'] / 1048576)} MB, "
          f"workers {fmt(logs['worker_log_bytes'] / 1048576)} MB) |")
    if b and b["worker_problem_examples"]:
        w("\nLast WARN/ERROR lines of the worker logs:\n")
        w("```")
        for line in b["worker_problem_examples"]:
            w(line)
        w("```")
    w("")
    return "\n".join(out)


if __name__ == "__main__":
    main()
