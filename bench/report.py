#!/usr/bin/env python3
"""Turns the raw measurements of bench/run.sh into results.json and results.md.

    python3 bench/report.py RAW.jsonl [RAW.jsonl...] RESULTS_DIR
    python3 bench/report.py --compare BEFORE_DIR AFTER_DIR [--note TEXT]

RAW.jsonl has one JSON object per line with a "kind"; drain.tsv next to it (or in
RESULTS_DIR) holds the backlog drain samples ("seconds received_count
stream_length" per line). Several raw files (runs of the same settings, e.g.
rounds alternating with another build) are summarised together: each figure is
the median over all their runs. What the raw files do not measure is kept from
RESULTS_DIR/results.json, if there is one, marked with the run it comes from.

--compare puts the figures of BEFORE_DIR/results.json and AFTER_DIR/results.json
side by side (before, after, after/before) into AFTER_DIR/results.json under
"before_after" and renders AFTER_DIR/results.md again.

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


def backlog_run(b, raw_dir, out_dir):
    """Figures of one backlog drain."""
    samples = []
    tsv = b["samples_file"]
    if not os.path.isabs(tsv):
        tsv = next((p for p in (os.path.join(raw_dir, tsv), os.path.join(out_dir, tsv))
                    if os.path.exists(p)), tsv)
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
    return {
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


BACKLOG_MEDIANS = ("queued", "fill_messages_per_s", "fill_jobs_per_s", "redis_used_memory_mb",
                   "redis_bytes_per_job", "worker_healthy_after_s", "first_10pct_jobs_per_s",
                   "middle_10pct_jobs_per_s", "last_10pct_jobs_per_s", "overall_jobs_per_s",
                   "drain_seconds", "first_delivery_after_s")


def isolation(rows):
    """Healthy deliveries/s of one worker without (base) and with (hang) a
    subscriber whose endpoint hangs. The ratio is the median of each run's
    ratio, its two parts having run back to back, which other load on the
    machine disturbs less than a ratio of medians."""
    runs = []
    for r in rows:
        rc = r["receiver"]
        delivered = r["healthy_at_end"] - r["healthy_at_start"]
        runs.append({
            "part": r["part"], "run": r["run"], "round": r.get("_round"),
            "healthy_subscribers": r["healthy_subscribers"],
            "healthy_per_s": delivered / r["window_s"] if r["window_s"] else None,
            "healthy_delivered": delivered, "window_s": r["window_s"],
            "backlog_ran_out": r["healthy_at_end"] >= r["healthy_expected"],
            "queued": r["queued"], "stream_at_end": r["stream_at_end"],
            "parked_at_end": r["parked_at_end"],
            "hang_requests": rc.get("hang_arrived"), "hang_answered": rc.get("hang_answered"),
        })
    base = median([x["healthy_per_s"] for x in runs if x["part"] == "base"])
    hang = median([x["healthy_per_s"] for x in runs if x["part"] == "hang"])
    pairs = {}
    for x in runs:
        pairs.setdefault((x["round"], x["run"]), {})[x["part"]] = x["healthy_per_s"]
    run_ratios = [p["hang"] / p["base"] for p in pairs.values() if p.get("base") and "hang" in p]
    ratio = median(run_ratios)
    return {
        "base_healthy_per_s": base,
        "hang_healthy_per_s": hang,
        "ratio": ratio,
        "run_ratios": run_ratios,
        "drop_pct": (1 - ratio) * 100 if ratio is not None else None,
        "target_drop_pct": 10,
        "target_met": ratio is not None and (1 - ratio) * 100 <= 10,
        "backlog_ran_out": any(x["backlog_ran_out"] for x in runs),
        "hang_requests": median([x["hang_requests"] for x in runs if x["part"] == "hang"]),
        "parked_at_end": median([x["parked_at_end"] for x in runs if x["part"] == "hang"]),
        "runs": runs,
    }


def paired_ratios(runs, key, num, den):
    """Ratios num/den of `key` between the two variants of each run (same round
    and run number): they ran back to back, which other load on the machine
    disturbs less than a ratio of medians."""
    pairs = {}
    for x in runs:
        pairs.setdefault((x["round"], x["run"]), {})[x["variant"]] = x[key]
    return [p[num] / p[den] for p in pairs.values() if p.get(den) and p.get(num) is not None]


def wrk_row(r):
    w = r["wrk"]
    secs = w["duration_us"] / 1e6
    return {
        "run": r["run"], "round": r.get("_round"),
        "messages_per_s": (w["requests"] - w["errors_status"]) / secs,
        "p50_ms": w["latency_p50_us"] / 1000,
        "p99_ms": w["latency_p99_us"] / 1000,
        "errors": w["errors_status"] + w["errors_connect"] + w["errors_read"]
        + w["errors_write"] + w["errors_timeout"],
    }


def window_cpu(marks, nproc):
    """Where the CPU time went between two `cpu_mark`s of run.sh, in cores:
    the machine (busy, from /proc/stat), the server, Redis, the stream
    clients, the load tools run.sh waited for (wrk, switch-bench latency, ...),
    and other processes (the rest: other work sharing the machine)."""
    if not marks or len(marks) != 2 or not nproc:
        return None
    a, b = marks
    d = [y - x for x, y in zip(a["stat"][:8], b["stat"][:8])]
    total = sum(d)
    if total <= 0:
        return None
    secs = total / nproc / 100

    def proc(k):
        if a.get(k) is None or b.get(k) is None:
            return None
        return (b[k] - a[k]) / 100 / secs

    out = {"seconds": secs, "machine_busy_cores": (total - d[3] - d[4]) / 100 / secs,
           "steal_pct": 100 * d[7] / total, "server_cores": proc("server"),
           "redis_cores": proc("redis"), "clients_cores": proc("clients"),
           "tools_cores": proc("tools")}
    ours = sum(out[k] or 0 for k in ("server_cores", "redis_cores", "clients_cores", "tools_cores"))
    out["others_cores"] = max(out["machine_busy_cores"] - ours, 0.0)
    return out


CPU_KEYS = ("machine_busy_cores", "server_cores", "redis_cores", "clients_cores", "tools_cores",
            "others_cores", "steal_pct")


def server_us_per_msg(x):
    """Server CPU per accepted publish of a wrk run, µs."""
    c = x.get("cpu") or {}
    if c.get("server_cores") is None or not x.get("messages_per_s"):
        return None
    return c["server_cores"] * 1e6 / x["messages_per_s"]


def cpu_medians(runs):
    cpus = [x["cpu"] for x in runs if x.get("cpu")]
    return {k: median([c[k] for c in cpus]) for k in CPU_KEYS} if cpus else None


def cpu_text(c, clients=True, tools="load generator"):
    if not c:
        return "n/a"
    parts = [f"server {fmt(c['server_cores'], 2)}"]
    if clients and c.get("clients_cores") is not None:
        parts.append(f"stream clients {fmt(c['clients_cores'], 2)}")
    parts += [f"Redis {fmt(c['redis_cores'], 2)}", f"{tools} {fmt(c['tools_cores'], 2)}",
              f"other processes {fmt(c['others_cores'], 2)}"]
    return ", ".join(parts) + f" cores ({fmt(c['machine_busy_cores'], 2)} busy)"


STREAM_P99_TARGET_MS = 50
STREAM_RSS_TARGET_MB = 100
KEYS_TARGET_PCT = 5


def live_stream(lat_rows, pub_rows, rss_rows, nproc):
    """h. SSE clients: publish -> client latency at a fixed rate, the server's
    VmRSS with the clients connected, publish/s with them vs without."""
    lat = []
    for r in lat_rows:
        c, p = r["stream_clients"], r["publisher"]
        accepted = p.get("accepted_by_topic") or {}
        expected = sum(v["clients"] * accepted.get(pat, 0) for pat, v in c["events_by_pattern"].items())
        lat.append({
            "run": r["run"], "round": r.get("_round"),
            "clients": c["clients"], "connected": c["connected"], "connect_s": c["connect_s"],
            "p50_ms": c["latency_p50_ms"], "p90_ms": c["latency_p90_ms"], "p99_ms": c["latency_p99_ms"],
            "p999_ms": c["latency_p999_ms"], "max_ms": c["latency_max_ms"],
            "samples": c["latency_samples"], "events": c["events_total"],
            "expected_events": expected, "missing_events": expected - c["timed_events"],
            "events_per_client_min": c["events_per_client_min"],
            "events_per_client_max": c["events_per_client_max"],
            "rate_target": p["rate_target"], "rate_achieved": p["rate_achieved"],
            "accepted": p["accepted"], "refused": p["refused"], "errors": p["errors"],
            "publish_p50_ms": p["publish_p50_us"] / 1000, "publish_p99_ms": p["publish_p99_us"] / 1000,
            "slow_consumer": c["slow_consumer"], "disconnects": c["disconnects"],
            "wrong_topic": c["wrong_topic"], "unparsed": c["unparsed"],
            "rss_before_mb": r["rss_before"]["vm_rss_mb"],
            "rss_connected_mb": r["rss_connected"]["vm_rss_mb"],
            "rss_after_publishing_mb": r["rss_after_publishing"]["vm_rss_mb"],
            "sockets_closed_s": r.get("sockets_closed_s"), "released_s": r.get("released_s"),
            "cpu": window_cpu(r.get("cpu"), nproc),
        })
    pub = []
    for r in pub_rows:
        x = wrk_row(r) | {"variant": "with" if r["clients"] else "without", "clients": r["clients"],
                          "rss_after_mb": r["rss_after"]["vm_rss_mb"],
                          "cpu": window_cpu(r.get("cpu"), nproc)}
        x["server_us_per_msg"] = server_us_per_msg(x)
        if r["clients"]:
            c = r["stream_clients"]
            x |= {"rss_connected_mb": r["rss_connected"]["vm_rss_mb"], "events": c["events_total"],
                  "slow_consumer": c["slow_consumer"], "disconnects": c["disconnects"],
                  "reconnects": c["reconnects"], "connect_failures": c["connect_failures"],
                  "open_min": c["open_min"], "open_mean": c["open_mean"],
                  "sockets_closed_s": r.get("sockets_closed_s"), "released_s": r.get("released_s")}
        else:
            x["live_flag_at_start"] = bool(r.get("live_flag_at_start"))
        pub.append(x)
    with_, without = ([x for x in pub if x["variant"] == v] for v in ("with", "without"))
    ratios = paired_ratios(pub, "messages_per_s", "with", "without")
    # The target applies to the fixed-rate runs: every VmRSS read there while
    # the clients were connected.
    rss_lat = [v for x in lat for v in (x["rss_connected_mb"], x["rss_after_publishing_mb"]) if v is not None]
    p99 = median([x["p99_ms"] for x in lat])
    out = {
        "latency": {k: median([x[k] for x in lat]) for k in (
            "p50_ms", "p90_ms", "p99_ms", "p999_ms", "max_ms", "samples", "events", "expected_events",
            "rate_achieved", "publish_p50_ms", "publish_p99_ms", "connect_s")} | {
            "clients": lat[0]["clients"],
            "rate_target": lat[0]["rate_target"],
            "missing_events": sum(x["missing_events"] for x in lat),
            "slow_consumer": sum(x["slow_consumer"] for x in lat),
            "disconnects": sum(x["disconnects"] for x in lat),
            "wrong_topic": sum(x["wrong_topic"] for x in lat),
            "refused_or_failed": sum(x["refused"] + x["errors"] for x in lat),
            "released_s": median([x["released_s"] for x in lat]),
            "sockets_closed_s": median([x["sockets_closed_s"] for x in lat]),
            "cpu": cpu_medians(lat),
            "target_p99_ms": STREAM_P99_TARGET_MS,
            "target_met": p99 is not None and p99 <= STREAM_P99_TARGET_MS,
            "runs": lat,
        } if lat else None,
        "rss": {
            "fresh_mb": rss_rows[0]["fresh"]["vm_rss_mb"] if rss_rows else None,
            "connected_idle_mb": median([x["rss_connected_mb"] for x in lat]),
            "after_publishing_mb": median([x["rss_after_publishing_mb"] for x in lat]),
            "with_clients_max_mb": max(rss_lat) if rss_lat else None,
            "after_wrk_with_clients_mb": median([x["rss_after_mb"] for x in with_]),
            "wrk_with_clients_max_mb": max((x["rss_after_mb"] for x in with_), default=None),
            "peak_mb": max((r["end"]["vm_hwm_mb"] for r in rss_rows), default=None),
            "target_mb": STREAM_RSS_TARGET_MB,
            "target_met": bool(rss_lat) and max(rss_lat) <= STREAM_RSS_TARGET_MB,
        } if lat or with_ else None,
        "publish": {
            "topic": "s.0", "fanout": 0,
            "with_messages_per_s": median([x["messages_per_s"] for x in with_]),
            "without_messages_per_s": median([x["messages_per_s"] for x in without]),
            "with_p99_ms": median([x["p99_ms"] for x in with_]),
            "without_p99_ms": median([x["p99_ms"] for x in without]),
            "with_cpu": cpu_medians(with_), "without_cpu": cpu_medians(without),
            "with_server_us_per_msg": median([x["server_us_per_msg"] for x in with_]),
            "without_server_us_per_msg": median([x["server_us_per_msg"] for x in without]),
            "ratio": median(ratios), "run_ratios": ratios,
            "slow_consumer": sum(x["slow_consumer"] for x in with_),
            "reconnects": sum(x["reconnects"] for x in with_),
            "open_min": min((x["open_min"] for x in with_), default=None),
            "live_flag_on_without": sum(x["live_flag_at_start"] for x in without),
            "released_s": median([x["released_s"] for x in with_]),
            "errors": sum(x["errors"] for x in pub),
            "runs": pub,
        } if pub else None,
    }
    return out


def api_keys(rows, nproc):
    """i. Publish/s at fan-out 1 with an API key vs an HS256 token."""
    runs = []
    for r in rows:
        secs = r["wrk"]["duration_us"] / 1e6
        runs.append(wrk_row(r) | {
            "variant": r["credential"], "jobs_per_s": r["jobs_in_stream"] / secs,
            "cpu": window_cpu(r.get("cpu"), nproc)})
        runs[-1]["server_us_per_msg"] = server_us_per_msg(runs[-1])
    ratios = paired_ratios(runs, "messages_per_s", "key", "jwt")
    ratio = median(ratios)
    key = [x for x in runs if x["variant"] == "key"]
    jwt = [x for x in runs if x["variant"] == "jwt"]
    return {
        "key_messages_per_s": median([x["messages_per_s"] for x in key]),
        "jwt_messages_per_s": median([x["messages_per_s"] for x in jwt]),
        "key_p99_ms": median([x["p99_ms"] for x in key]),
        "jwt_p99_ms": median([x["p99_ms"] for x in jwt]),
        "key_cpu": cpu_medians(key), "jwt_cpu": cpu_medians(jwt),
        "key_server_us_per_msg": median([x["server_us_per_msg"] for x in key]),
        "jwt_server_us_per_msg": median([x["server_us_per_msg"] for x in jwt]),
        "ratio": ratio, "run_ratios": ratios,
        "ratio_of_medians": (median([x["messages_per_s"] for x in key])
                             / median([x["messages_per_s"] for x in jwt])) if key and jwt else None,
        "errors": sum(x["errors"] for x in runs),
        "target_pct": KEYS_TARGET_PCT,
        "target_met": ratio is not None and abs(1 - ratio) * 100 <= KEYS_TARGET_PCT,
        "runs": runs,
    }


def provenance(prev):
    m, st = prev.get("machine", {}), prev.get("settings", {})
    return {"date": m.get("date"), "commit": m.get("commit"), "runs": st.get("runs"),
            "seconds": st.get("seconds"), "backlog": st.get("backlog"), "rate": st.get("rate"),
            "hang_ms": st.get("hang_ms")}


def carry_over(summary, prev):
    """Keeps what this run did not measure from the previous results, each item
    marked with the run it comes from (`from_run`)."""
    prov = provenance(prev)

    def mark(item):
        if isinstance(item, dict) and "from_run" not in item:
            item = dict(item, from_run=prov)
        return item

    if summary.get("receiver_capacity_requests_per_s") is None \
            and prev.get("receiver_capacity_requests_per_s") is not None:
        summary["receiver_capacity_requests_per_s"] = prev["receiver_capacity_requests_per_s"]
        summary["receiver_capacity_from_run"] = prev.get("receiver_capacity_from_run") or prov
    for key in ("publish", "end_to_end"):
        for k, v in (prev.get(key) or {}).items():
            if k not in summary.get(key, {}):
                summary.setdefault(key, {})[k] = mark(v)
        summary[key] = dict(sorted(summary.get(key, {}).items(), key=lambda kv: int(kv[0])))
    if not summary.get("sustained", {}).get("runs") and (prev.get("sustained") or {}).get("runs"):
        summary["sustained"] = mark(prev["sustained"])
    if not summary.get("latency", {}).get("runs") and (prev.get("latency") or {}).get("runs"):
        summary["latency"] = mark(prev["latency"])
    for key in ("backlog", "memory", "filter_cost", "isolation", "stream", "keys", "before_after"):
        if key not in summary and prev.get(key):
            summary[key] = mark(prev[key]) if key != "before_after" else prev[key]


def main():
    args = sys.argv[1:]
    if args and args[0] == "--compare":
        return compare_main(args[1:])
    if len(args) < 2:
        sys.exit(__doc__)
    raw_paths, out_dir = args[:-1], args[-1]
    by = {}
    # Each machine row starts the rows of one invocation of run.sh (a round).
    rounds = 0
    for raw_path in raw_paths:
        raw_dir = os.path.dirname(os.path.abspath(raw_path))
        for line in open(raw_path):
            if line.strip():
                r = json.loads(line)
                rounds += r["kind"] == "machine"
                r["_raw_dir"], r["_round"] = raw_dir, rounds
                by.setdefault(r["kind"], []).append(r)
    machine = {k: v for k, v in by["machine"][0].items() if not k.startswith("_")}
    settings = dict(machine["settings"])
    if rounds > 1:
        settings["runs"] = sum(m["settings"]["runs"] for m in by["machine"])
        settings["rounds"] = rounds
        machine["date_end"] = by["machine"][-1]["date"]
    summary = {"machine": {k: v for k, v in machine.items() if k not in ("kind", "settings")},
               "settings": settings}

    summary["receiver_capacity_requests_per_s"] = median(
        [r.get("requests_per_s") for r in by.get("receiver", [])])

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

    # d. backlog: the first drain's samples, the median of every figure over the drains
    if by.get("backlog"):
        runs = [backlog_run(b, b["_raw_dir"], out_dir) for b in by["backlog"]]
        summary["backlog"] = runs[0] | {k: median([x.get(k) for x in runs]) for k in BACKLOG_MEDIANS} | {
            "worker_warn_error_lines": sum(x["worker_warn_error_lines"] for x in runs),
            "timed_out": any(x["timed_out"] for x in runs),
        }
        if len(runs) > 1:
            summary["backlog"]["runs"] = [{k: v for k, v in x.items() if k != "samples"} for x in runs]

    # f. memory
    if by.get("rss"):
        ms = by["rss"]
        summary["memory"] = {
            "server_peak_rss_mb": median([m["server"]["vm_hwm_mb"] for m in ms]),
            "worker_peak_rss_mb": median([m["worker"]["vm_hwm_mb"] for m in ms]),
            "redis_peak_mb": max(m["redis_used_memory_peak_bytes"] for m in ms) / 1048576,
        }

    # g. isolation
    if by.get("isolation"):
        summary["isolation"] = isolation(by["isolation"])

    # h. live stream, i. API keys
    if by.get("stream_latency") or by.get("stream_publish"):
        summary["stream"] = live_stream(by.get("stream_latency", []), by.get("stream_publish", []),
                                        by.get("stream_rss", []), machine.get("nproc"))
    if by.get("keys"):
        summary["keys"] = api_keys(by["keys"], machine.get("nproc"))

    if by.get("logs"):
        summary["logs"] = {k: sum(r[k] for r in by["logs"])
                           for k in by["logs"][0] if k != "kind" and not k.startswith("_")}

    # e. filter cost
    if by.get("filter_cost"):
        summary["filter_cost"] = by["filter_cost"][0]["result"]

    prev_path = os.path.join(out_dir, "results.json")
    if os.path.exists(prev_path):
        try:
            with open(prev_path) as f:
                carry_over(summary, json.load(f))
        except (OSError, ValueError, KeyError, TypeError) as e:
            print(f"report: previous {prev_path} not carried over: {e}", file=sys.stderr)

    write(summary, out_dir)


def write(summary, out_dir):
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
    # Rows kept from earlier runs get a note [n] naming the run.
    earlier = []

    def mark(item, key="from_run"):
        prov = item.get(key) if isinstance(item, dict) else None
        if not prov:
            return ""
        if prov not in earlier:
            earlier.append(prov)
        return f" [{earlier.index(prov) + 1}]"

    w("# Switch benchmark results\n")
    when = m["date"] + (f" to {m['date_end']}" if m.get("date_end") else "")
    rounds = f" ({st['rounds']} rounds of {runs // st['rounds']} run(s) each)" if st.get("rounds") else ""
    w(f"Run {when} on commit {m['commit']}{rounds}.\n")
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
      "right after the drain.")
    iso_secs = st.get("isolation_seconds", 20)
    w(f"- **Isolation**: one worker (`SWITCH_WORKER_CONCURRENCY={st['worker_concurrency']}`, "
      f"`SWITCH_DELIVERY_TIMEOUT={st.get('isolation_delivery_timeout', '15s')}`, "
      f"`SWITCH_SUBSCRIBER_CONCURRENCY` {st.get('subscriber_concurrency', '8 (default)')}) drains a "
      f"backlog of {fmt(st.get('isolation_messages', 400 * iso_secs))} messages at fan-out 101, "
      "enqueued with no worker running, in two parts that alternate run by run: `bench.iso.base`, 101 "
      "healthy subscribers, and `bench.iso.hang`, 100 healthy subscribers and one whose endpoint "
      f"(the receiver's `/__hang`) answers only after {fmt(st.get('hang_ms', 10000))} ms. Healthy "
      f"deliveries/s = requests the healthy endpoints got over a fixed {iso_secs} s window starting "
      "1 s after the worker is up, not the time to drain, so a worker that stalls still finishes. The "
      "queue, parked jobs included, is emptied before each part. Target: no more than 10 % fewer "
      "healthy deliveries/s with the hanging subscriber than without.")

    stc = st.get("stream_clients", 1000)
    w(f"- **Live stream**: {fmt(stc)} SSE clients of `GET /stream?topic=<pattern>` "
      "(`switch-bench stream-clients`: one tokio task per client over one reqwest client, the admin "
      "token in the `Authorization` header), client i watching `s.<i mod 10>`, so 100 clients per "
      "topic; no subscriber on `s.*` (fan-out 0), no worker. First, run by run: once every stream is "
      f"open, `switch-bench latency --topics s.0,…,s.9` publishes {fmt(st.get('stream_rate', 2000))} "
      "msg/s round the ten topics for the run length (each message reaches 100 clients, each client "
      "10 % of the messages) with the publish time in the body; each client records arrival − "
      "publish time per event and counts its events. The server's VmRSS (`/proc/<pid>/status`) is "
      "read before the clients connect, once they are all connected, and 1 s after publishing ends; "
      "the target applies to these readings. Then publish/s with and without clients, alternating "
      f"run by run: a fresh set of {fmt(stc)} clients connects and wrk publishes on `s.0` as in the "
      "publish runs (100 of the clients watch it), or wrk publishes the same with no client and the "
      "live stream off; the ratio is the median of each run's with ÷ without. A client closed as a "
      "slow consumer reconnects after 1 s (counted). After each part with clients the script waits "
      "until the server has closed their sockets and stopped renewing the live flag (deleted, it stays "
      "away 11 s) before going on. CPU per window: /proc/stat for the machine, /proc/<pid>/stat for "
      "the server, Redis and the stream clients, the script's waited-for children for the load "
      "generator; other processes = the machine's busy time minus these. Targets: latency p99 ≤ "
      f"{STREAM_P99_TARGET_MS} ms, server VmRSS with the clients connected ≤ {STREAM_RSS_TARGET_MB} MB.")
    w(f"- **API keys**: publish/s at fan-out 1 with no worker (`wrk -t{st['wrk_threads']} "
      f"-c{st['wrk_connections']}`, `bench/publish.lua`) with an API key (`POST /keys "
      "{\"name\": \"bench\", \"scope\": \"publish\"}`, sent as `Authorization: Bearer sk_…`) "
      "and with the HS256 admin token, alternating run by run (key first in odd runs); the ratio "
      f"is the median of each run's key ÷ token. Target: within {KEYS_TARGET_PCT} %.\n")

    w("## Results\n")
    w("| measurement | figure |\n| --- | --- |")
    if s.get("receiver_capacity_requests_per_s") is not None:
        w(f"| receiver capacity (wrk, 5 s){mark(s, 'receiver_capacity_from_run')} | "
          f"{fmt(s.get('receiver_capacity_requests_per_s'))} req/s |")
    for f, p in s.get("publish", {}).items():
        w(f"| publish, fan-out {f}, no worker{mark(p)} | {fmt(p['messages_per_s'])} msg/s = "
          f"{fmt(p['jobs_per_s'])} jobs/s (p50 {fmt(p['p50_ms'], 2)} ms, p99 {fmt(p['p99_ms'], 2)} ms"
          f"{', ' + str(p['errors']) + ' errors' if p['errors'] else ''}) |")
    for n, e in s.get("end_to_end", {}).items():
        w(f"| end-to-end deliveries, {n} worker{'s' if n != '1' else ''}, fan-out 10{mark(e)} | "
          f"{fmt(e['deliveries_per_s'])} deliveries/s (publishing {fmt(e['publish_messages_per_s'])} msg/s; "
          f"{fmt(e['deliveries_per_s_while_publishing'])} deliveries/s while publishing; "
          f"drained {fmt(e['total_seconds'], 1)} s after publishing started"
          f"{'; TIMED OUT' if e['timed_out'] else ''}) |")
    sus = s.get("sustained", {})
    for x in sus.get("runs", []):
        w(f"| sustained, 1 worker, fan-out 10, publishing {fmt(x['rate_msg_per_s'])} msg/s "
          f"({fmt(x['offered_deliveries_per_s'])} deliveries/s offered){mark(sus)} | "
          f"{fmt(x['delivered_per_s_while_publishing'])} deliveries/s while publishing; "
          f"{'kept up' if x['kept_up'] else 'fell behind'} (queue empty {fmt(x['drained_after_s'], 2)} s after "
          f"the last publish); latency p50 {fmt(x['p50_ms'], 2)} ms, p99 {fmt(x['p99_ms'], 2)} ms"
          f"{'; ' + str(x['refused'] + x['errors']) + ' publishes refused or failed' if x['refused'] + x['errors'] else ''} |")
    lat = s.get("latency")
    if lat and lat.get("runs"):
        rate = (lat.get("from_run") or {}).get("rate") or st["rate"]
        w(f"| delivery latency at {fmt(rate)} msg/s, 1 worker, fan-out 1{mark(lat)} | "
          f"p50 {fmt(lat['p50_ms'], 2)} ms, p99 {fmt(lat['p99_ms'], 2)} ms, p99.9 {fmt(lat['p999_ms'], 2)} ms "
          f"(max {fmt(lat['max_ms'], 1)} ms; {fmt(lat['samples'])} samples; publish answer p50 "
          f"{fmt(lat['publish_p50_ms'], 2)} ms, p99 {fmt(lat['publish_p99_ms'], 2)} ms"
          f"{'; TIMED OUT' if lat['timed_out'] else ''}) |")
    b = s.get("backlog")
    if b:
        bm = mark(b)
        w(f"| backlog enqueued{bm} | {fmt(b['queued'])} jobs at {fmt(b['fill_jobs_per_s'])} jobs/s; "
          f"Redis {fmt(b['redis_used_memory_mb'])} MB ({fmt(b['redis_bytes_per_job'])} B/job) |")
        w(f"| backlog drain, first 10 %{bm} | {fmt(b['first_10pct_jobs_per_s'])} jobs/s |")
        w(f"| backlog drain, middle 10 %{bm} | {fmt(b['middle_10pct_jobs_per_s'])} jobs/s |")
        w(f"| backlog drain, last 10 %{bm} | {fmt(b['last_10pct_jobs_per_s'])} jobs/s |")
        w(f"| backlog drain, overall{bm} | {fmt(b['overall_jobs_per_s'])} jobs/s over "
          f"{fmt(b['drain_seconds'], 1)} s (first delivery {fmt(b['first_delivery_after_s'], 2)} s "
          f"after the worker was started){'; TIMED OUT' if b['timed_out'] else ''} |")
        w(f"| worker WARN/ERROR log lines during the drain{bm} | {b['worker_warn_error_lines']} |")
    fc = s.get("filter_cost")
    if fc:
        fm = mark(fc)
        w(f"| filter cost, {fmt(fc['subscribers'])} subscribers, exact topic{fm} | "
          f"{fmt(fc['ns_per_subscriber'], 1)} ns/subscriber ({fmt(fc['us_per_publish'], 1)} µs per publish, "
          f"{fmt(fc['matched'])} matched) |")
        w(f"| filter cost, same subscribers on `{fc['wildcard_pattern']}`{fm} | "
          f"{fmt(fc['wildcard_ns_per_subscriber'], 1)} ns/subscriber |")
        w(f"| matching without filters (lookup only){fm} | {fmt(fc['unfiltered_ns_per_subscriber'], 1)} ns/subscriber |")
    mem = s.get("memory")
    if mem:
        mm = mark(mem)
        w(f"| peak RSS, server{mm} | {fmt(mem['server_peak_rss_mb'], 1)} MB |")
        w(f"| peak RSS, worker (after the backlog){mm} | {fmt(mem['worker_peak_rss_mb'], 1)} MB |")
        w(f"| Redis peak memory (whole instance, since it started){mm} | {fmt(mem['redis_peak_mb'])} MB |")
    iso = s.get("isolation")
    if iso:
        target = (f"no more than {iso['target_drop_pct']} % lower: "
                  f"{'met' if iso['target_met'] else 'NOT MET'}")
        w(f"| isolation, 1 worker, fan-out 101, healthy deliveries/s with a subscriber hanging "
          f"{((iso.get('from_run') or {}).get('hang_ms') or st.get('hang_ms', 10000)) / 1000:g} s vs "
          f"without{mark(iso)} | {fmt(iso['hang_healthy_per_s'])} with it (100 healthy + 1 hanging) vs "
          f"{fmt(iso['base_healthy_per_s'])} without (101 healthy); with ÷ without, median of the "
          f"runs' ratios: {fmt(iso['ratio'], 3)}{spread(iso.get('run_ratios', []), 3)} ({'−' if (iso['drop_pct'] or 0) >= 0 else '+'}"
          f"{fmt(abs(iso['drop_pct'] or 0), 1)} %; target {target}); the hanging endpoint got "
          f"{fmt(iso['hang_requests'])} requests, {fmt(iso['parked_at_end'])} of its jobs parked at "
          f"the end of the window{'; BACKLOG RAN OUT before the window ended' if iso['backlog_ran_out'] else ''} |")
    sm = s.get("stream")
    if sm:
        smk = mark(sm)
        sl, sr, sp = sm.get("latency"), sm.get("rss"), sm.get("publish")
        nclients = fmt((sl or {}).get("clients") or st.get("stream_clients", 1000))
        if sl:
            w(f"| live stream: publish → client latency, {nclients} SSE clients, "
              f"{fmt(sl['rate_target'])} msg/s round 10 topics, each client 10 %{smk} | "
              f"p50 {fmt(sl['p50_ms'], 2)} ms{spread([x['p50_ms'] for x in sl['runs']], 2)}, "
              f"p90 {fmt(sl['p90_ms'], 2)} ms, p99 {fmt(sl['p99_ms'], 2)} ms"
              f"{spread([x['p99_ms'] for x in sl['runs']], 2)}, p99.9 {fmt(sl['p999_ms'], 2)} ms "
              f"(max {fmt(sl['max_ms'], 1)} ms; target p99 ≤ {sl['target_p99_ms']} ms: "
              f"{'met' if sl['target_met'] else 'NOT MET'}); {fmt(sl['samples'])} events received per run "
              f"(median) of {fmt(sl['expected_events'])} expected, {fmt(sl['missing_events'])} missing over all runs"
              f"{', ' + fmt(sl['slow_consumer']) + ' clients closed as slow consumers' if sl['slow_consumer'] else ''}"
              f"{', ' + fmt(sl['wrong_topic']) + ' events of another topic' if sl['wrong_topic'] else ''}; "
              f"publisher at {fmt(sl['rate_achieved'])} msg/s, publish answer p99 {fmt(sl['publish_p99_ms'], 2)} ms"
              f"{'; ' + fmt(sl['refused_or_failed']) + ' publishes refused or failed' if sl['refused_or_failed'] else ''}; "
              f"CPU while publishing: {cpu_text(sl.get('cpu'), tools='publisher')} |")
        if sr:
            w(f"| live stream: server VmRSS with {nclients} clients connected{smk} | "
              f"{fmt(sr['connected_idle_mb'], 1)} MB connected and idle, {fmt(sr['after_publishing_mb'], 1)} MB "
              f"after the fixed-rate run (medians); at most {fmt(sr['with_clients_max_mb'], 1)} MB (target ≤ "
              f"{sr['target_mb']} MB: {'met' if sr['target_met'] else 'NOT MET'}); fresh server before any "
              f"client {fmt(sr['fresh_mb'], 1)} MB; after wrk with the clients {fmt(sr['after_wrk_with_clients_mb'], 1)} MB "
              f"(at most {fmt(sr['wrk_with_clients_max_mb'], 1)} MB); peak (VmHWM) over the section "
              f"{fmt(sr['peak_mb'], 1)} MB |")
        if sp:
            w(f"| live stream: publish on `s.0`, fan-out 0, no worker, with {nclients} stream clients vs "
              f"without{smk} | {fmt(sp['with_messages_per_s'])} msg/s with (p99 {fmt(sp['with_p99_ms'], 2)} ms) vs "
              f"{fmt(sp['without_messages_per_s'])} without (p99 {fmt(sp['without_p99_ms'], 2)} ms); with ÷ "
              f"without, median of the runs' ratios: {fmt(sp['ratio'], 3)}{spread(sp['run_ratios'], 3)}; "
              f"{fmt(sp['slow_consumer'])} clients closed as slow consumers over all runs "
              f"({fmt(sp['reconnects'])} reconnects; fewest streams open at once {fmt(sp['open_min'])})"
              f"{'; ' + fmt(sp['errors']) + ' wrk errors' if sp['errors'] else ''}; server CPU per publish "
              f"{fmt(sp.get('with_server_us_per_msg'))} µs with vs {fmt(sp.get('without_server_us_per_msg'))} µs "
              f"without; CPU with: "
              f"{cpu_text(sp.get('with_cpu'))}; without: {cpu_text(sp.get('without_cpu'), clients=False)} |")
        if sl or sp:
            w(f"| live stream: time for the server to let go of {nclients} closed clients{smk} | "
              f"sockets closed {fmt((sl or {}).get('sockets_closed_s'), 1)} s after the clients left, live flag "
              f"no longer renewed after {fmt((sl or {}).get('released_s'), 1)} s (fixed-rate runs; after the "
              f"wrk runs {fmt((sp or {}).get('released_s'), 1)} s) |")
    ks = s.get("keys")
    if ks:
        w(f"| publish, fan-out 1, no worker: API key vs HS256 token{mark(ks)} | "
          f"{fmt(ks['key_messages_per_s'])} msg/s with the key (p99 {fmt(ks['key_p99_ms'], 2)} ms) vs "
          f"{fmt(ks['jwt_messages_per_s'])} with the token (p99 {fmt(ks['jwt_p99_ms'], 2)} ms); key ÷ "
          f"token, median of the runs' ratios: {fmt(ks['ratio'], 3)}{spread(ks['run_ratios'], 3)} "
          f"(target within {ks['target_pct']} %: {'met' if ks['target_met'] else 'NOT MET'}"
          f"{', the key being faster' if not ks['target_met'] and (ks['ratio'] or 0) > 1 else ''}); "
          f"server CPU per publish {fmt(ks.get('key_server_us_per_msg'), 1)} µs with the key vs "
          f"{fmt(ks.get('jwt_server_us_per_msg'), 1)} µs with the token"
          f"{'; ' + fmt(ks['errors']) + ' wrk errors' if ks['errors'] else ''}; CPU with the key: "
          f"{cpu_text(ks.get('key_cpu'), clients=False)}; with the token: "
          f"{cpu_text(ks.get('jwt_cpu'), clients=False)} |")
    logs = s.get("logs")
    if logs:
        w(f"| WARN/ERROR log lines over the whole run | server {logs['server_warn_error_lines']}, "
          f"workers {logs['worker_warn_error_lines']} (logs: server {fmt(logs['server_log_bytes'] / 1048576)} MB, "
          f"workers {fmt(logs['worker_log_bytes'] / 1048576)} MB) |")
    for i, prov in enumerate(earlier, 1):
        w(f"\n[{i}] From the run of {prov.get('date')} on commit {prov.get('commit')} "
          f"(median of {prov.get('runs')} run(s) of {prov.get('seconds')} s; backlog "
          f"{fmt(prov.get('backlog'))} jobs).")
    if s.get("before_after"):
        render_compare(s["before_after"], w)
    if b and b["worker_problem_examples"]:
        w("\nLast WARN/ERROR lines of the worker logs:\n")
        w("```")
        for line in b["worker_problem_examples"]:
            w(line)
        w("```")
    w("")
    return "\n".join(out)


# ---------------------------------------------------------------- before/after

def spread(xs, digits=None):
    xs = [x for x in xs if x is not None]
    if len(xs) < 2:
        return ""
    if digits is None:
        digits = 2 if max(xs) < 100 else 0
    return f" ({fmt(min(xs), digits)}–{fmt(max(xs), digits)})"


def compare_rows(before, after):
    """(name, unit, before median, after median, before runs, after runs, higher is better)."""
    rows = []

    def fresh(item):
        return item and not item.get("from_run")

    for f in sorted(set(before.get("publish", {})) & set(after.get("publish", {})), key=int):
        b, a = before["publish"][f], after["publish"][f]
        if fresh(b) and fresh(a):
            rows.append((f"publish, fan-out {f}, no worker", "msg/s", b["messages_per_s"],
                         a["messages_per_s"], [x["messages_per_s"] for x in b["runs"]],
                         [x["messages_per_s"] for x in a["runs"]], True))
    for n in sorted(set(before.get("end_to_end", {})) & set(after.get("end_to_end", {})), key=int):
        b, a = before["end_to_end"][n], after["end_to_end"][n]
        if fresh(b) and fresh(a):
            rows.append((f"end-to-end, {n} worker{'s' if n != '1' else ''}, fan-out 10", "deliveries/s",
                         b["deliveries_per_s"], a["deliveries_per_s"],
                         [x["deliveries_per_s"] for x in b["runs"]],
                         [x["deliveries_per_s"] for x in a["runs"]], True))
    b, a = before.get("latency"), after.get("latency")
    if fresh(b) and fresh(a) and b.get("runs") and a.get("runs"):
        for k, name in (("p50_ms", "p50"), ("p99_ms", "p99"), ("p999_ms", "p99.9")):
            rows.append((f"delivery latency {name}, {fmt(before['settings']['rate'])} msg/s, fan-out 1",
                         "ms", b[k], a[k], [x[k] for x in b["runs"]], [x[k] for x in a["runs"]], False))
    b, a = before.get("backlog"), after.get("backlog")
    if fresh(b) and fresh(a):
        for k, name in (("overall_jobs_per_s", "overall"), ("first_10pct_jobs_per_s", "first 10 %"),
                        ("middle_10pct_jobs_per_s", "middle 10 %"), ("last_10pct_jobs_per_s", "last 10 %")):
            rows.append((f"backlog drain of {fmt(a['queued'])} jobs, fan-out 100, {name}", "jobs/s",
                         b[k], a[k], [x[k] for x in b.get("runs", [b])], [x[k] for x in a.get("runs", [a])],
                         True))
    b, a = before.get("isolation"), after.get("isolation")
    if fresh(b) and fresh(a):
        for part, name in (("base", "without a hanging subscriber (101 healthy)"),
                           ("hang", "with one (100 healthy + 1 hanging)")):
            rows.append((f"isolation: healthy deliveries/s {name}", "deliveries/s",
                         b[f"{part}_healthy_per_s"], a[f"{part}_healthy_per_s"],
                         [x["healthy_per_s"] for x in b["runs"] if x["part"] == part],
                         [x["healthy_per_s"] for x in a["runs"] if x["part"] == part], True))
        rows.append(("isolation: with ÷ without (median of the runs' ratios)", "", b["ratio"], a["ratio"],
                     b.get("run_ratios", []), a.get("run_ratios", []), True))
    return rows


def compare_main(args):
    note = None
    if "--note" in args:
        i = args.index("--note")
        note = args[i + 1]
        args = args[:i] + args[i + 2:]
    if len(args) != 2:
        sys.exit(__doc__)
    before_dir, after_dir = args
    with open(os.path.join(before_dir, "results.json")) as f:
        before = json.load(f)
    with open(os.path.join(after_dir, "results.json")) as f:
        after = json.load(f)
    rows = compare_rows(before, after)
    after["before_after"] = {
        "before": {"commit": before["machine"]["commit"], "date": before["machine"]["date"],
                   "date_end": before["machine"].get("date_end"), "settings": before["settings"]},
        "after": {"commit": after["machine"]["commit"], "date": after["machine"]["date"],
                  "date_end": after["machine"].get("date_end"), "settings": after["settings"]},
        "machine": {k: after["machine"].get(k) for k in ("nproc", "cpu_model", "redis", "kernel")},
        "note": note,
        "rows": [{"measurement": n, "unit": u, "before": b, "after": a,
                  "after_over_before": (a / b) if a is not None and b else None,
                  "before_runs": br, "after_runs": ar, "higher_is_better": hb}
                 for n, u, b, a, br, ar, hb in rows],
    }
    write(after, after_dir)


def render_compare(c, w):
    bs, as_ = c["before"], c["after"]
    m = c["machine"]
    st = as_["settings"]
    w("\n## Isolation and before/after\n")
    redis = (m.get("redis") or "").split(" sha=")[0]
    w(f"Before: commit {bs['commit']}; after: {as_['commit']}. Same machine and sitting "
      f"({bs['date']} to {as_.get('date_end') or as_['date']}): {m.get('nproc')} cores, "
      f"{m.get('cpu_model')}, {redis}. Each cell is the median over "
      f"{st['runs']} run(s) of {st['seconds']} s (isolation: {st.get('isolation_seconds')} s windows), "
      "range in brackets; the two builds alternated"
      + (f" in {st['rounds']} rounds" if st.get("rounds") else "") + ", the same `bench/run.sh` and "
      "`switch-bench` driving both.\n")
    if c.get("note"):
        w(c["note"] + "\n")
    w("| measurement | before | after | after ÷ before |\n| --- | --- | --- | --- |")
    for r in c["rows"]:
        digits = 3 if not r["unit"] else (2 if r["unit"] == "ms" else 0)
        unit = f" {r['unit']}" if r["unit"] else ""
        ratio = r["after_over_before"]
        w(f"| {r['measurement']} | {fmt(r['before'], digits)}{unit}{spread(r['before_runs'], 3 if digits == 3 else None)} | "
          f"{fmt(r['after'], digits)}{unit}{spread(r['after_runs'], 3 if digits == 3 else None)} | "
          f"{fmt(ratio, 2) if ratio is not None else 'n/a'} |")


if __name__ == "__main__":
    main()
