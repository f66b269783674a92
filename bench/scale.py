#!/usr/bin/env python3
"""Scale-out benchmarks of Switch on this machine, against loopback only.

  a. publish/s (wrk, fan-out 10) and drain/s (two workers) with 1 and with 4
     queue partitions on one Redis, side by side in one run
  b. the same on a 3-master, 3-replica Redis Cluster (six redis-server
     processes started here) with 6 partitions
  c. Redis bytes per job at fan-out 100 with a 230-byte and a 20 KB body: the
     whole growth of used_memory per job, and the part that grows with the
     number of jobs (fan-out 100 against fan-out 1, the message's own copies
     taken out)
  d. publish latency (wrk p50/p99) on the cluster with and without
     SWITCH_REDIS_WAIT_REPLICAS=1

Writes bench/results/scale.json and bench/results/scale.md and prints the latter.

Settings (environment): BENCH_SECONDS (10) per publish run, BENCH_RUNS (3)
runs per publish figure (the median is kept), BENCH_DRAIN_JOBS (100000) jobs
per drain, BENCH_BIN_DIR (target/release), SWITCH_REDIS_URL (the single
Redis, default redis://127.0.0.1:6379), BENCH_RESULTS_DIR (bench/results).
"""

import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
BIN = os.environ.get("BENCH_BIN_DIR", os.path.join(ROOT, "target/release"))
SECONDS = int(os.environ.get("BENCH_SECONDS", "10"))
RUNS = int(os.environ.get("BENCH_RUNS", "3"))
DRAIN_JOBS = int(os.environ.get("BENCH_DRAIN_JOBS", "100000"))
REDIS_URL = os.environ.get("SWITCH_REDIS_URL", "redis://127.0.0.1:6379")
RESULTS = os.environ.get("BENCH_RESULTS_DIR", os.path.join(ROOT, "bench/results"))
SERVER_PORT, RECEIVER_PORT = 18580, 18581
METRICS_PORTS = [18582, 18583]
WORK = tempfile.mkdtemp(prefix="switch-scale.")
PROCS = []


def log(msg):
    print(f"[scale {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def free_port(avoid=()):
    while True:
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        p = s.getsockname()[1]
        s.close()
        if p < 55000 and p not in avoid:
            b = socket.socket()
            try:
                b.bind(("127.0.0.1", p + 10000))
                return p
            except OSError:
                pass
            finally:
                b.close()


def start(args, env=None, name="proc"):
    out = open(os.path.join(WORK, f"{name}.log"), "ab")
    p = subprocess.Popen(args, env=env, stdout=out, stderr=out)
    PROCS.append(p)
    return p


def stop(p, grace=20):
    if p.poll() is None:
        p.terminate()
        try:
            p.wait(grace)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def wait_http(url, seconds=30):
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url, timeout=1).read()
            return
        except Exception:
            time.sleep(0.1)
    raise SystemExit(f"scale: {url} did not answer")


def http(method, url, token=None, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read() or b"null")


def rcli(port_or_url, *args):
    target = ["-u", port_or_url] if isinstance(port_or_url, str) else ["-p", str(port_or_url)]
    if not isinstance(port_or_url, str):
        target = ["-h", "127.0.0.1"] + target
    return subprocess.run(["redis-cli", *target, *map(str, args)], capture_output=True,
                          text=True).stdout.strip()


class Cluster:
    """Three masters and three replicas on free ports."""

    def __init__(self):
        self.ports = []
        for _ in range(6):
            self.ports.append(free_port(self.ports))
        for p in self.ports:
            d = os.path.join(WORK, f"node{p}")
            os.makedirs(d)
            start(["redis-server", "--port", str(p), "--bind", "127.0.0.1",
                   "--cluster-enabled", "yes", "--cluster-node-timeout", "2000",
                   "--save", "", "--appendonly", "no", "--dir", d], name=f"node{p}")
        for p in self.ports:
            while rcli(p, "PING") != "PONG":
                time.sleep(0.05)
        subprocess.run(["redis-cli", "--cluster", "create",
                        *[f"127.0.0.1:{p}" for p in self.ports],
                        "--cluster-replicas", "1", "--cluster-yes"],
                       check=True, capture_output=True)
        deadline = time.time() + 30
        while time.time() < deadline:
            if all("cluster_state:ok" in rcli(p, "CLUSTER", "INFO") for p in self.ports) and \
                    all("connected_slaves:1" in rcli(m, "INFO", "replication") for m in self.masters()):
                return
            time.sleep(0.2)
        raise SystemExit("scale: the cluster did not become healthy")

    def masters(self):
        return [p for p in self.ports if rcli(p, "ROLE").startswith("master")]

    def url(self):
        return "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in self.ports)

    def calls(self, command):
        """Calls of `command` per master since the last reset."""
        out = {}
        for m in self.masters():
            stats = rcli(m, "INFO", "commandstats")
            calls = 0
            for line in stats.splitlines():
                if line.startswith(f"cmdstat_{command}:"):
                    calls = int(line.split("calls=")[1].split(",")[0])
            out[m] = calls
        return out


class Hub:
    """A server (and workers on demand) on its own namespace and database."""

    def __init__(self, redis_url, partitions, wait_replicas=0):
        self.ns = f"scale{os.getpid()}x{int(time.time() * 1000) % 10**8}"
        self.env = dict(os.environ)
        self.env.update({
            "SWITCH_JWT_SECRET": "scale-bench-secret",
            "SWITCH_DATABASE_URL": f"sqlite://{WORK}/{self.ns}.db",
            "SWITCH_REDIS_URL": redis_url,
            "SWITCH_QUEUE_NAMESPACE": self.ns,
            "SWITCH_QUEUE_PARTITIONS": str(partitions),
            "SWITCH_REDIS_WAIT_REPLICAS": str(wait_replicas),
            "SWITCH_SERVER_ADDR": f"127.0.0.1:{SERVER_PORT}",
            "SWITCH_WORKER_CONCURRENCY": "64",
            "SWITCH_REFRESH_INTERVAL": "1s",
            "RUST_LOG": "warn",
        })
        self.base = f"http://127.0.0.1:{SERVER_PORT}"
        self.server = start([f"{BIN}/switch-server"], env=self.env, name=f"server-{self.ns}")
        wait_http(f"{self.base}/ping")
        self.token = subprocess.run([f"{BIN}/switch-server", "--print-dev-token"], env=self.env,
                                    capture_output=True, text=True, check=True).stdout.strip()
        self.workers = []

    def subscribe(self, topic, n):
        for i in range(n):
            http("POST", f"{self.base}/subscribers", self.token,
                 {"topic": topic, "target_url": f"http://127.0.0.1:{RECEIVER_PORT}/r{i}"})

    def start_workers(self, n):
        for i in range(n):
            env = dict(self.env, SWITCH_WORKER_METRICS_ADDR=f"127.0.0.1:{METRICS_PORTS[i]}")
            self.workers.append(start([f"{BIN}/switch-worker"], env=env, name=f"worker{i}-{self.ns}"))
        for i in range(n):
            wait_http(f"http://127.0.0.1:{METRICS_PORTS[i]}/health")

    def close(self, nodes=()):
        for w in self.workers:
            stop(w, 40)
        stop(self.server)
        # Whatever the namespace left (a publish run leaves its jobs): on
        # the shared Redis its keys, on the bench's own cluster everything.
        for n in nodes:
            if isinstance(n, str):
                subprocess.run(f"redis-cli -u {n} --scan --pattern '{{{self.ns}*' | "
                               f"xargs -r -n 500 redis-cli -u {n} UNLINK >/dev/null",
                               shell=True, check=False)
            else:
                rcli(n, "FLUSHALL")


def wrk(hub, topic, seconds, body_bytes=None):
    env = dict(os.environ, TOPIC=topic, TOKEN=hub.token)
    out = subprocess.run(["wrk", "-t2", "-c32", f"-d{seconds}s", "--timeout", "10s",
                          "-s", os.path.join(ROOT, "bench/publish.lua"), hub.base],
                         env=env, capture_output=True, text=True)
    line = [l for l in out.stdout.splitlines() if l.startswith("WRK_JSON ")]
    if not line:
        raise SystemExit(f"scale: wrk failed: {out.stdout}{out.stderr}")
    r = json.loads(line[-1][9:])
    r["rate"] = r["requests"] / (r["duration_us"] / 1e6)
    return r


def receiver_count():
    return json.loads(urllib.request.urlopen(f"http://127.0.0.1:{RECEIVER_PORT}/__stats").read())["count"]


def receiver_reset():
    urllib.request.urlopen(urllib.request.Request(
        f"http://127.0.0.1:{RECEIVER_PORT}/__reset", method="POST")).read()


def fill(hub, topic, messages):
    out = subprocess.run([f"{BIN}/switch-bench", "fill", "--url", hub.base, "--token", hub.token,
                          "--topic", topic, "--messages", str(messages)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def drain(hub, expected, workers=2):
    receiver_reset()
    started = time.time()
    hub.start_workers(workers)
    deadline = started + 900
    while receiver_count() < expected:
        if time.time() > deadline:
            raise SystemExit("scale: drain timed out")
        time.sleep(0.05)
    return expected / (time.time() - started)


def redis_usec(nodes):
    """Microseconds Redis spent in commands since the last reset, over `nodes`."""
    total = 0
    for n in nodes:
        for line in rcli(n, "INFO", "commandstats").splitlines():
            if line.startswith("cmdstat_") and "usec=" in line:
                total += int(line.split("usec=")[1].split(",")[0])
    return total


def reset_stats(nodes):
    for n in nodes:
        rcli(n, "CONFIG", "RESETSTAT")


def publish_and_drain(redis_url, partitions, fanout=10, nodes=None):
    """Median publish/s over RUNS wrk runs, then drain/s of a DRAIN_JOBS
    backlog; and the Redis time (all nodes) per publish and per delivered job."""
    nodes = nodes or [redis_url]
    hub = Hub(redis_url, partitions)
    try:
        hub.subscribe("bench.f10", fanout)
        reset_stats(nodes)
        runs = [wrk(hub, "bench.f10", SECONDS) for _ in range(RUNS)]
        rates = [r["rate"] for r in runs]
        publish_usec = redis_usec(nodes) / max(1, sum(r["requests"] for r in runs))
    finally:
        hub.close(nodes)
    # The drain: a backlog of DRAIN_JOBS on a namespace of its own.
    hub = Hub(redis_url, partitions)
    try:
        hub.subscribe("bench.f10", fanout)
        fill(hub, "bench.f10", DRAIN_JOBS // fanout)
        total = receiver_total_expected(hub)
        reset_stats(nodes)
        drain_rate = drain(hub, total)
        job_usec = redis_usec(nodes) / max(1, total)
        # Jobs finished per node (one XACK each): each shard's share of the work.
        acks = {str(n): calls for n, calls in
                ((n, sum(int(l.split("calls=")[1].split(",")[0])
                         for l in rcli(n, "INFO", "commandstats").splitlines()
                         if l.startswith("cmdstat_xack:"))) for n in nodes)}
        return {"xack_per_node": acks,"publish_per_s": statistics.median(rates), "publish_runs": rates,
                "drain_per_s": drain_rate, "drained_jobs": total,
                "redis_usec_per_publish": publish_usec, "redis_usec_per_job": job_usec}
    finally:
        hub.close(nodes)


def receiver_total_expected(hub):
    """Jobs published so far: the hub-wide `matched` total."""
    text = urllib.request.urlopen(
        urllib.request.Request(f"{hub.base}/metrics",
                               headers={"Authorization": f"Bearer {hub.token}"})).read().decode()
    for line in text.splitlines():
        if line.startswith("switch_hub_matches_total "):
            return int(float(line.split()[1]))
    raise SystemExit("scale: switch_hub_matches_total missing from /metrics")


def used_memory(url):
    info = rcli(url, "INFO", "memory")
    for line in info.splitlines():
        if line.startswith("used_memory:"):
            return int(line.split(":")[1])
    raise SystemExit("scale: no used_memory")


def memory_per_job(body_bytes, messages=200):
    """Growth of Redis memory per job at fan-out 100 and at fan-out 1."""
    pad = "x" * max(0, body_bytes - len('{"pad":""}'))
    body = {"pad": pad}
    result = {}
    for fanout in (1, 100):
        hub = Hub(REDIS_URL, 1)
        try:
            hub.subscribe(f"mem.f{fanout}", fanout)
            before = used_memory(REDIS_URL)
            for _ in range(messages):
                http("POST", f"{hub.base}/publish", hub.token, {"topic": f"mem.f{fanout}", "body": body})
            after = used_memory(REDIS_URL)
            result[fanout] = after - before
        finally:
            hub.close()
            keys = rcli(REDIS_URL, "--scan", "--pattern", f"{{{hub.ns}}}*").split()
            for k in keys:
                rcli(REDIS_URL, "DEL", k)
    jobs = messages * 100
    return {
        "body_bytes": body_bytes,
        "bytes_per_job_total": result[100] / jobs,
        "bytes_per_job_marginal": (result[100] - result[1]) / (messages * 99),
        "bytes_per_message_fanout1": result[1] / messages,
    }


def main():
    for tool in ("wrk", "redis-cli", "redis-server"):
        if not shutil.which(tool):
            raise SystemExit(f"scale: {tool} is required")
    for b in ("switch-server", "switch-worker", "switch-bench"):
        if not os.access(f"{BIN}/{b}", os.X_OK):
            raise SystemExit(f"scale: {BIN}/{b} missing; run `cargo build --release`")
    receiver = start([f"{BIN}/switch-bench", "receiver", "--addr", f"127.0.0.1:{RECEIVER_PORT}"],
                     name="receiver")
    wait_http(f"http://127.0.0.1:{RECEIVER_PORT}/__stats")
    results = {"machine": machine(), "seconds": SECONDS, "runs": RUNS, "drain_jobs": DRAIN_JOBS}
    try:
        log("one Redis, 1 and 4 partitions")
        results["single"] = {str(p): publish_and_drain(REDIS_URL, p) for p in (1, 4)}
        log("Redis bytes per job")
        results["memory"] = [memory_per_job(230), memory_per_job(20 * 1024)]
        log("starting a 3-master Redis Cluster")
        cluster = Cluster()
        results["cluster"] = publish_and_drain(cluster.url(), 6, nodes=cluster.masters())
        acks = results["cluster"]["xack_per_node"]
        total = sum(acks.values())
        results["cluster"]["job_share"] = {m: round(a / max(total, 1), 3) for m, a in acks.items()}
        log("publish latency with and without WAIT")
        lat = {}
        for wait in (0, 1):
            hub = Hub(cluster.url(), 6, wait)
            try:
                hub.subscribe("bench.f10", 10)
                r = wrk(hub, "bench.f10", SECONDS)
                lat[str(wait)] = {"rate": r["rate"], "p50_ms": r["latency_p50_us"] / 1000,
                                  "p99_ms": r["latency_p99_us"] / 1000,
                                  "errors": r["errors_status"]}
            finally:
                hub.close(cluster.masters())
        results["wait_replicas"] = lat
    finally:
        for p in reversed(PROCS):
            stop(p, 40)
        shutil.rmtree(WORK, ignore_errors=True)
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, "scale.json"), "w") as f:
        json.dump(results, f, indent=2)
    md = report(results)
    with open(os.path.join(RESULTS, "scale.md"), "w") as f:
        f.write(md)
    print(md)


def machine():
    cpus = os.cpu_count()
    model = ""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpus} cores ({model})"


def report(r):
    s1, s4 = r["single"]["1"], r["single"]["4"]
    c = r["cluster"]
    lines = [
        "# Scale-out: partitions, Redis Cluster, bytes per job",
        "",
        f"Machine: {r['machine']}; publish figures are medians of {r['runs']} wrk runs of "
        f"{r['seconds']} s (2 threads, 32 connections, fan-out 10); drains are of "
        f"~{r['drain_jobs']:,} jobs by two workers (64 slots each). Everything on this one "
        "machine, so the cluster's six Redis processes share its cores with the hub.",
        "",
        "| Setup | publish/s | drain (jobs/s) | Redis µs per publish | Redis µs per delivered job |",
        "|---|---:|---:|---:|---:|",
        f"| one Redis, 1 partition | {s1['publish_per_s']:,.0f} | {s1['drain_per_s']:,.0f} | "
        f"{s1['redis_usec_per_publish']:.1f} | {s1['redis_usec_per_job']:.1f} |",
        f"| one Redis, 4 partitions | {s4['publish_per_s']:,.0f} | {s4['drain_per_s']:,.0f} | "
        f"{s4['redis_usec_per_publish']:.1f} | {s4['redis_usec_per_job']:.1f} |",
        f"| 4 vs 1 partition | {s4['publish_per_s'] / s1['publish_per_s']:.2f}× | "
        f"{s4['drain_per_s'] / s1['drain_per_s']:.2f}× | | |",
        f"| Redis Cluster, 3 masters + 3 replicas, 6 partitions | {c['publish_per_s']:,.0f} | "
        f"{c['drain_per_s']:,.0f} | {c['redis_usec_per_publish']:.1f} (all masters) | "
        f"{c['redis_usec_per_job']:.1f} (all masters) |",
        "",
        "Share of the drained jobs per cluster master (XACKs, one per job finished): "
        + ", ".join(f"{v:.0%}" for v in c["job_share"].values())
        + ". Redis µs: the time Redis spent in commands (INFO commandstats) over the "
        "publishes, or over the jobs delivered in the drain.",
        "",
        "## Redis memory per job (fan-out 100, no worker running)",
        "",
        "| Body | bytes per job, all growth | bytes per job that grow with jobs | bytes per message at fan-out 1 |",
        "|---:|---:|---:|---:|",
    ]
    for m in r["memory"]:
        lines.append(f"| {m['body_bytes']:,} B | {m['bytes_per_job_total']:,.0f} | "
                     f"{m['bytes_per_job_marginal']:,.0f} | {m['bytes_per_message_fanout1']:,.0f} |")
    lines += [
        "",
        "The message is stored once per partition a publish touches (and once in the log "
        "until the archiver has it), so its size is shared by every job; what grows with "
        "the number of jobs is the stream entry naming the message.",
        "",
        "## Publish latency on the cluster (wrk, fan-out 10)",
        "",
        "| SWITCH_REDIS_WAIT_REPLICAS | publish/s | p50 ms | p99 ms | non-2xx |",
        "|---:|---:|---:|---:|---:|",
    ]
    for k, v in r["wait_replicas"].items():
        lines.append(f"| {k} | {v['rate']:,.0f} | {v['p50_ms']:.2f} | {v['p99_ms']:.2f} | {v['errors']} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
