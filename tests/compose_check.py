"""Static checks of docker-compose.yml and the Dockerfile.

Needs only Python 3, PyYAML and pytest; no Docker engine:

    python3 -m pytest tests/compose_check.py

The repository root defaults to the parent of this file's folder and can be
overridden with COMPOSE_CHECK_ROOT; the contract with COMPOSE_CHECK_SPEC
(otherwise /work/shared/SPEC.md, ../shared/SPEC.md or ./SPEC.md is used).

Compose interpolation (``${VAR:-default}``) is resolved with defaults only,
never from the caller's environment, so the result does not depend on the
shell the checks run in.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

ROOT = Path(os.environ.get("COMPOSE_CHECK_ROOT", Path(__file__).resolve().parent.parent))
COMPOSE_FILE = ROOT / "docker-compose.yml"
CONFIG_RS = ROOT / "core" / "src" / "config.rs"

SERVER = "server"
WORKER = "worker"
APP_SERVICES = (SERVER, WORKER)

SERVER_NEEDS = ("SWITCH_DATABASE_URL", "SWITCH_REDIS_URL", "SWITCH_JWT_SECRET")
WORKER_NEEDS = ("SWITCH_DATABASE_URL", "SWITCH_REDIS_URL")
EXTRA_DOCUMENTED = {"SWITCH_LOG_FORMAT", "SWITCH_WORKER_METRICS_ADDR"}

BINARIES = ("switch-server", "switch-worker", "switch-seed")

# Defaults the binaries use when a variable is unset (SPEC §2 / §9).
DEFAULT_SERVER_ADDR = "0.0.0.0:8080"
DEFAULT_WORKER_METRICS_ADDR = "0.0.0.0:9090"
# The worker waits this long for in-flight deliveries after SIGTERM.
WORKER_DRAIN_SECONDS = 30


# ---------------------------------------------------------------- helpers


def spec_path() -> Path:
    candidates = []
    if os.environ.get("COMPOSE_CHECK_SPEC"):
        candidates.append(Path(os.environ["COMPOSE_CHECK_SPEC"]))
    candidates += [
        Path("/work/shared/SPEC.md"),
        ROOT.parent / "shared" / "SPEC.md",
        ROOT / "SPEC.md",
    ]
    for c in candidates:
        if c.is_file():
            return c
    pytest.fail("SPEC.md not found in: " + ", ".join(str(c) for c in candidates))


_INTERP = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?+])([^}]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)")


def interpolate(value):
    """Resolves compose ``${VAR:-default}`` forms using only their defaults."""
    if not isinstance(value, str):
        return value

    def sub(m):
        if m.group(0) == "$$":
            return "$"
        op, arg = m.group(2), m.group(3)
        if op in (":-", "-"):
            return arg
        if op in (":?", "?"):
            pytest.fail(f"{m.group(0)} requires {m.group(1)} to be set in the environment")
        return ""  # unset variable, or ${VAR:+alt} with VAR unset

    return _INTERP.sub(sub, value)


@pytest.fixture(scope="module")
def compose_text() -> str:
    assert COMPOSE_FILE.is_file(), f"{COMPOSE_FILE} is missing"
    return COMPOSE_FILE.read_text()


@pytest.fixture(scope="module")
def compose(compose_text) -> dict:
    doc = yaml.safe_load(compose_text)  # SafeLoader resolves anchors and << merges
    assert isinstance(doc, dict), "docker-compose.yml is not a mapping"
    assert isinstance(doc.get("services"), dict) and doc["services"], "no services"
    return doc


@pytest.fixture(scope="module")
def services(compose) -> dict:
    """The services `docker compose up` starts (those of no profile)."""
    return {n: s for n, s in compose["services"].items() if not s.get("profiles")}


@pytest.fixture(scope="module")
def cluster_services(compose) -> dict:
    """The services of the `cluster` profile."""
    return {n: s for n, s in compose["services"].items() if "cluster" in (s.get("profiles") or [])}


def env_of(service: dict) -> dict:
    """The service's environment as a dict, interpolated with defaults."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        out = {}
        for item in env:
            key, sep, val = str(item).partition("=")
            out[key] = val if sep else None
        env = out
    return {str(k): (None if v is None else interpolate(str(v))) for k, v in env.items()}


def depends_on(service: dict) -> dict:
    """depends_on as {name: condition}; the short list form means service_started."""
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):
        return {d: "service_started" for d in deps}
    return {name: (spec or {}).get("condition", "service_started") for name, spec in deps.items()}


def service_by_image(services: dict, prefix: str) -> str:
    names = [n for n, s in services.items() if str(s.get("image", "")).split("/")[-1].startswith(prefix)]
    assert len(names) == 1, f"expected exactly one service with a {prefix} image, found {names}"
    return names[0]


def volume_mounts(service: dict):
    """Yields (source, target, is_named) for each volume entry."""
    for v in service.get("volumes") or []:
        if isinstance(v, dict):
            kind = v.get("type", "volume")
            source, target = v.get("source"), v.get("target")
            yield source, target, kind == "volume" and bool(source)
        else:
            parts = interpolate(str(v)).split(":")
            if len(parts) == 1:  # anonymous volume
                yield None, parts[0], False
            else:
                source, target = parts[0], parts[1]
                named = not source.startswith(("/", ".", "~", "$"))
                yield source, target, named


def published_ports(service: dict):
    """Yields (host_port or None, container_port) for each ports entry."""
    for p in service.get("ports") or []:
        if isinstance(p, dict):
            host = p.get("published")
            yield (str(host) if host not in (None, "") else None), str(p.get("target"))
            continue
        text = interpolate(str(p)).split("/")[0]
        parts = text.rsplit(":", 2)
        if len(parts) == 1:
            yield None, parts[0]
        elif len(parts) == 2:
            yield (parts[0] or None), parts[1]
        else:
            yield (parts[1] or None), parts[2]


def port_of(addr: str) -> str:
    assert addr and ":" in addr, f"`{addr}` is not HOST:PORT"
    return addr.rsplit(":", 1)[1]


def healthcheck_test(service: dict) -> str:
    test = (service.get("healthcheck") or {}).get("test")
    if isinstance(test, list):
        return " ".join(str(t) for t in test)
    return str(test or "")


def command_text(service: dict) -> str:
    cmd = service.get("command", "")
    return " ".join(str(c) for c in cmd) if isinstance(cmd, list) else str(cmd)


def compose_var_names(service: dict) -> set:
    return {k for k in env_of(service) if k.startswith("SWITCH_")}


def parse_duration(text) -> float:
    total, rest = 0.0, str(text).strip()
    units = {"us": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}
    for num, unit in re.findall(r"(\d+(?:\.\d+)?)(us|ms|s|m|h)", rest):
        total += float(num) * units[unit]
    assert re.fullmatch(r"((\d+(\.\d+)?)(us|ms|s|m|h))+", rest), f"`{text}` is not a compose duration"
    return total


def dockerfile_stages(text: str):
    """Splits a Dockerfile into stages: list of (from_line, [instructions])."""
    joined = re.sub(r"\\\s*\n", " ", text)  # line continuations
    stages = []
    for raw in joined.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if re.match(r"(?i)^FROM\s", line):
            stages.append((line, []))
        elif stages:
            stages[-1][1].append(line)
    return stages


# ---------------------------------------------------------------- compose: wiring


def test_app_services_present(services):
    for name in APP_SERVICES:
        assert name in services, f"service `{name}` missing"
    assert "switch-server" in command_text(services[SERVER]), "server must run switch-server"
    assert "switch-worker" in command_text(services[WORKER]), "worker must run switch-worker"


def test_dependencies_exist(services):
    for name, svc in services.items():
        for dep in depends_on(svc):
            assert dep in services, f"`{name}` depends on `{dep}`, which is not a service"


def test_app_dependencies_wait_for_health(services):
    redis, postgres = service_by_image(services, "redis"), service_by_image(services, "postgres")
    wanted = {SERVER: {redis, postgres}, WORKER: {SERVER, redis, postgres}}
    for name, needed in wanted.items():
        deps = depends_on(services[name])
        missing = needed - set(deps)
        assert not missing, f"`{name}` must depend on {sorted(missing)}"
        for dep, cond in deps.items():
            assert cond == "service_healthy", f"`{name}` -> `{dep}` uses {cond}, not service_healthy"


def test_every_service_has_healthcheck(services):
    for name, svc in services.items():
        hc = svc.get("healthcheck")
        assert isinstance(hc, dict), f"`{name}` has no healthcheck"
        assert not hc.get("disable"), f"`{name}` disables its healthcheck"
        test = hc.get("test")
        assert test and test != ["NONE"], f"`{name}` healthcheck has no test"


def test_health_endpoints_match_listen_ports(services):
    server_env, worker_env = env_of(services[SERVER]), env_of(services[WORKER])
    server_port = port_of(server_env.get("SWITCH_SERVER_ADDR") or DEFAULT_SERVER_ADDR)
    worker_port = port_of(worker_env.get("SWITCH_WORKER_METRICS_ADDR") or DEFAULT_WORKER_METRICS_ADDR)
    srv, wrk = healthcheck_test(services[SERVER]), healthcheck_test(services[WORKER])
    assert f"localhost:{server_port}/health" in srv, f"server healthcheck `{srv}` misses :{server_port}/health"
    assert f"localhost:{worker_port}/health" in wrk, f"worker healthcheck `{wrk}` misses :{worker_port}/health"
    for name, test in ((SERVER, srv), (WORKER, wrk)):
        assert re.search(r"curl\b.*-\w*f", test), f"`{name}` healthcheck must fail on HTTP errors (curl -f)"


def test_server_and_worker_env_complete(services):
    for name, needs in ((SERVER, SERVER_NEEDS), (WORKER, WORKER_NEEDS)):
        env = env_of(services[name])
        for var in needs:
            assert env.get(var), f"`{name}` does not set {var}"


def test_urls_point_at_compose_services(services):
    redis, postgres = service_by_image(services, "redis"), service_by_image(services, "postgres")
    pg_env = env_of(services[postgres])
    pg_user = pg_env.get("POSTGRES_USER") or "postgres"
    pg_password = pg_env.get("POSTGRES_PASSWORD")
    pg_db = pg_env.get("POSTGRES_DB") or pg_user
    assert pg_password, "postgres service sets no POSTGRES_PASSWORD"
    for name in APP_SERVICES:
        env = env_of(services[name])
        db = urlsplit(env["SWITCH_DATABASE_URL"])
        assert db.scheme in ("postgres", "postgresql"), f"`{name}` database is not postgres: {db.geturl()}"
        assert db.hostname == postgres, f"`{name}` database host {db.hostname} != service `{postgres}`"
        assert (db.port or 5432) == 5432, f"`{name}` database port {db.port}"
        assert db.username == pg_user, f"`{name}` database user {db.username} != POSTGRES_USER {pg_user}"
        assert db.password == pg_password, f"`{name}` database password does not match POSTGRES_PASSWORD"
        assert db.path.lstrip("/") == pg_db, f"`{name}` database {db.path} != POSTGRES_DB {pg_db}"
        rd = urlsplit(env["SWITCH_REDIS_URL"])
        assert rd.scheme in ("redis", "rediss"), f"`{name}` redis URL scheme {rd.scheme}"
        assert rd.hostname == redis, f"`{name}` redis host {rd.hostname} != service `{redis}`"
        assert (rd.port or 6379) == 6379, f"`{name}` redis port {rd.port}"


def test_server_and_worker_share_queue_and_database(services):
    s, w = env_of(services[SERVER]), env_of(services[WORKER])
    for var in ("SWITCH_DATABASE_URL", "SWITCH_REDIS_URL", "SWITCH_QUEUE_NAMESPACE"):
        assert s.get(var) == w.get(var), f"server and worker disagree on {var}: {s.get(var)!r} vs {w.get(var)!r}"


def test_redis_persistence(services):
    name = service_by_image(services, "redis")
    svc = services[name]
    cmd = " " + " ".join(command_text(svc).split()) + " "
    assert " --appendonly yes " in cmd, f"redis command `{cmd.strip()}` lacks --appendonly yes"
    assert " --appendfsync everysec " in cmd, f"redis command `{cmd.strip()}` lacks --appendfsync everysec"
    assert any(t == "/data" and named for _, t, named in volume_mounts(svc)), "redis has no named volume on /data"


def test_postgres_persistence(services):
    name = service_by_image(services, "postgres")
    svc = services[name]
    pgdata = env_of(svc).get("PGDATA") or "/var/lib/postgresql/data"
    targets = [(t, named) for _, t, named in volume_mounts(svc)]
    assert any(named and (pgdata == t or pgdata.startswith(t.rstrip("/") + "/")) for t, named in targets), (
        f"postgres has no named volume holding {pgdata}: {targets}"
    )


def test_named_volumes_declared(compose, services):
    declared = set((compose.get("volumes") or {}).keys())
    for name, svc in services.items():
        for source, _, named in volume_mounts(svc):
            if named:
                assert source in declared, f"`{name}` uses volume `{source}`, not declared under volumes:"


def test_worker_is_scalable(services):
    worker = services[WORKER]
    fixed = [(h, c) for h, c in published_ports(worker) if h is not None]
    assert not fixed, f"worker publishes fixed host ports {fixed}; `--scale worker=N` would clash"
    assert not worker.get("container_name"), "worker sets container_name; it cannot be scaled"


def test_worker_stop_grace_period(services):
    grace = services[WORKER].get("stop_grace_period")
    assert grace, "worker has no stop_grace_period"
    assert parse_duration(grace) > WORKER_DRAIN_SECONDS, (
        f"worker stop_grace_period {grace} does not cover its {WORKER_DRAIN_SECONDS}s drain"
    )


def test_server_publishes_its_listen_port(services):
    server = services[SERVER]
    addr = env_of(server).get("SWITCH_SERVER_ADDR") or DEFAULT_SERVER_ADDR
    container_port = port_of(addr)
    ports = list(published_ports(server))
    assert ("8080", container_port) in ports, (
        f"server must publish host 8080 to container port {container_port} (SWITCH_SERVER_ADDR={addr}); has {ports}"
    )


def test_app_services_build_the_repo_image(services):
    for name in APP_SERVICES:
        build = services[name].get("build")
        assert build, f"`{name}` has no build"
        context = build if isinstance(build, str) else build.get("context", ".")
        dockerfile = "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
        assert (ROOT / context / dockerfile).resolve() == (ROOT / "Dockerfile").resolve(), (
            f"`{name}` builds {context}/{dockerfile}, not the repository Dockerfile"
        )
    assert services[SERVER].get("image") == services[WORKER].get("image"), "server and worker should share one image"


# ---------------------------------------------------------------- env names vs. spec and code


def test_env_names_documented(services, compose_text):
    text = spec_path().read_text()
    m = re.search(r"^## 2\..*?(?=^## )", text, re.S | re.M)
    assert m, "SPEC.md has no section 2"
    documented = set(re.findall(r"`(SWITCH_[A-Z0-9_]+)`", m.group(0))) | EXTRA_DOCUMENTED
    used = set()
    for name in APP_SERVICES:
        used |= compose_var_names(services[name])
    used |= set(re.findall(r"\$\{?(SWITCH_[A-Z0-9_]+)", compose_text))  # interpolated from the host
    undocumented = sorted(used - documented)
    assert not undocumented, f"compose uses SWITCH_* names not in SPEC.md §2: {undocumented}"


def test_env_names_read_by_code(services):
    assert CONFIG_RS.is_file(), f"{CONFIG_RS} is missing"
    source = CONFIG_RS.read_text().split("#[cfg(test)]")[0]  # names in unit tests are not reads
    read = set(re.findall(r'"(SWITCH_[A-Z0-9_]+)"', source))
    for name in APP_SERVICES:
        unread = sorted(compose_var_names(services[name]) - read)
        assert not unread, f"`{name}` sets {unread}, which core/src/config.rs never reads"


# ---------------------------------------------------------------- Dockerfile


@pytest.fixture(scope="module")
def dockerfile_text() -> str:
    path = ROOT / "Dockerfile"
    assert path.is_file(), f"{path} is missing"
    return path.read_text()


def test_dockerfile_multi_stage(dockerfile_text):
    stages = dockerfile_stages(dockerfile_text)
    assert len(stages) >= 2, f"Dockerfile has {len(stages)} FROM line(s); expected a multi-stage build"


def test_dockerfile_builds_release(dockerfile_text):
    runs = [i for _, body in dockerfile_stages(dockerfile_text) for i in body if re.match(r"(?i)^RUN\s", i)]
    builds = [r for r in runs if re.search(r"\bcargo\s+build\b.*--release\b", r)]
    assert builds, "no RUN ... cargo build --release in the Dockerfile"
    joined = " ".join(builds)
    for pkg in ("switch-server", "switch-worker"):
        # building the whole workspace also covers them; -p narrows it
        if "-p " in joined or "--package" in joined:
            assert re.search(rf"(-p|--package)\s+{pkg}\b", joined), f"cargo build does not build {pkg}"


def test_dockerfile_final_stage_has_binaries(dockerfile_text):
    stages = dockerfile_stages(dockerfile_text)
    assert len(stages) >= 2
    final = stages[-1][1]
    copies = " ".join(i for i in final if re.match(r"(?i)^COPY\s", i) and "--from" in i)
    for binary in BINARIES:
        assert re.search(rf"/{re.escape(binary)}\b", copies), f"final stage does not copy {binary} from the builder"
    assert any(re.match(r"(?i)^USER\s+(?!root\b|0\b)", i) for i in final), "final stage runs as root"


# ---------------------------------------------------------------- compose: the cluster profile

CLUSTER_NODES = [f"redis-node-{i}" for i in range(1, 7)]


def test_cluster_profile_has_six_cluster_nodes(cluster_services):
    for name in CLUSTER_NODES:
        assert name in cluster_services, f"cluster profile lacks `{name}`"
        cmd = " " + command_text(cluster_services[name]) + " "
        assert " --cluster-enabled yes " in cmd, f"`{name}` is not cluster-enabled: {cmd}"
        assert " --appendonly yes " in cmd, f"`{name}` does not persist: {cmd}"
        assert cluster_services[name].get("healthcheck"), f"`{name}` has no healthcheck"


def test_cluster_is_created_with_one_replica_per_master(cluster_services):
    init = cluster_services.get("redis-cluster-init")
    assert init, "no `redis-cluster-init` service"
    text = command_text(init)
    assert "--cluster create" in text and "--cluster-replicas 1" in text, text
    assert "--cluster-yes" in text, "cluster create would wait for a confirmation"
    assert "1 2 3 4 5 6" in text, "every node joins the cluster"
    deps = depends_on(init)
    assert set(deps) == set(CLUSTER_NODES), f"init waits for {sorted(deps)}"
    assert all(c == "service_healthy" for c in deps.values())


def test_cluster_hub_uses_every_node_partitions_and_replica_waits(cluster_services):
    for name, binary in (("server-cluster", "switch-server"), ("worker-cluster", "switch-worker")):
        svc = cluster_services.get(name)
        assert svc, f"cluster profile lacks `{name}`"
        assert binary in command_text(svc)
        env = env_of(svc)
        url = env.get("SWITCH_REDIS_URL", "")
        assert url.startswith("redis+cluster://"), f"`{name}` SWITCH_REDIS_URL is {url!r}"
        hosts = [h.split(":")[0] for h in url[len("redis+cluster://"):].split(",")]
        assert sorted(hosts) == sorted(CLUSTER_NODES), f"`{name}` names {hosts}"
        assert int(env.get("SWITCH_QUEUE_PARTITIONS", "1")) >= 3, "partitions spread over the shards"
        assert env.get("SWITCH_REDIS_WAIT_REPLICAS") == "1"
        assert env.get("SWITCH_DATABASE_URL") == env_of(cluster_services["server-cluster"])["SWITCH_DATABASE_URL"]
    server_deps = depends_on(cluster_services["server-cluster"])
    assert server_deps.get("redis-cluster-init") == "service_completed_successfully"
    assert depends_on(cluster_services["worker-cluster"]).get("server-cluster") == "service_healthy"


def test_cluster_env_names_are_documented_and_read_by_code(cluster_services):
    docs = spec_path().read_text() + (ROOT / "README.md").read_text()
    source = CONFIG_RS.read_text().split("#[cfg(test)]")[0]
    read = set(re.findall(r'"(SWITCH_[A-Z0-9_]+)"', source))
    for name in ("server-cluster", "worker-cluster"):
        for var in compose_var_names(cluster_services[name]):
            assert f"`{var}" in docs or var in EXTRA_DOCUMENTED, f"{var} is in neither SPEC.md nor README.md"
            assert var in read, f"{var} is never read by core/src/config.rs"


def test_profiles_do_not_clash_on_host_ports(compose):
    seen = {}
    for name, svc in compose["services"].items():
        for p in svc.get("ports") or []:
            host = str(interpolate(str(p))).split(":")[0]
            assert host not in seen, f"`{name}` and `{seen[host]}` both publish host port {host}"
            seen[host] = name
