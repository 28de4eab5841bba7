"""Helpers for tests that run real processes: apps under opentelemetry-instrument, PostgreSQL, Prometheus.

Everything listens on 127.0.0.1 only. Where ``CI=true`` a missing tool or service fails the test
(``require``); elsewhere it skips with the reason.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
IN_CI = os.environ.get("CI", "").lower() == "true"


def require(condition: bool, what: str) -> None:
    """A missing tool or service: a failure where CI=true, a skip elsewhere."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"required for this test and missing in CI: {what}")
    pytest.skip(f"missing: {what}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http(
    method: str, url: str, *, headers: Mapping[str, str] | None = None, body: bytes | None = None, timeout: float = 10
) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, data=body, method=method, headers=dict(headers or {}))
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


def get_json(url: str, **kw: Any) -> tuple[int, Any]:
    status, _, body = http("GET", url, **kw)
    return status, json.loads(body)


def wait_until(predicate: Any, timeout: float = 20, interval: float = 0.1, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
            if last:
                return last
        except Exception as exc:  # keep polling until the deadline
            last = exc
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def points_by_name(data: Any) -> dict[str, list[Any]]:
    """Every data point of an SDK ``MetricsData`` (or None), by metric name."""
    found: dict[str, list[Any]] = {}
    for rm in data.resource_metrics if data else ():
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                found.setdefault(metric.name, []).extend(metric.data.data_points)
    return found


def scrape(port: int, host: str = "127.0.0.1") -> dict[str, list[tuple[dict[str, str], float]]]:
    """Parse a Prometheus text exposition into {name: [(labels, value)]}."""
    _, _, body = http("GET", f"http://{host}:{port}/metrics")
    return parse_exposition(body.decode())


def parse_exposition(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        if "{" in line:
            name, rest = line.split("{", 1)
            labels_text, value_text = rest.rsplit("}", 1)
            labels = _parse_labels(labels_text)
        else:
            name, value_text = line.split(" ", 1)
            labels = {}
        out.setdefault(name, []).append((labels, float(value_text.strip().split(" ")[0])))
    return out


def _parse_labels(text: str) -> dict[str, str]:
    labels: dict[str, str] = {}
    i = 0
    while i < len(text):
        eq = text.index("=", i)
        key = text[i:eq].strip().lstrip(",").strip()
        j = eq + 2
        value = []
        while text[j] != '"':
            if text[j] == "\\":
                j += 1
                value.append({"n": "\n"}.get(text[j], text[j]))
            else:
                value.append(text[j])
            j += 1
        labels[key] = "".join(value)
        i = j + 1
        while i < len(text) and text[i] in ", ":
            i += 1
    return labels


def series_value(metrics: Mapping[str, list[tuple[dict[str, str], float]]], name: str, **labels: str) -> float | None:
    for lab, value in metrics.get(name, []):
        if all(lab.get(k) == v for k, v in labels.items()):
            return value
    return None


@dataclass
class AppProcess:
    """An app started under opentelemetry-instrument; ``url`` is its base URL."""

    proc: subprocess.Popen[bytes]
    port: int
    metrics_port: int
    log_path: Path
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 15) -> int:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        return int(self.proc.returncode or 0)


LAUNCHERS = ("uvicorn", "gunicorn", "gunicorn-preload", "fastapi-run", "fastapi-dev", "hypercorn", "granian")


def launcher_command(server: str, target: str, port: int, workers: int) -> list[str]:
    """The command line a user types to serve ``target`` (``module:app``) with ``server`` on ``port``."""
    module_path = target.split(":")[0].replace(".", "/") + ".py"  # what fastapi run/dev take
    if server == "uvicorn":
        cmd = [str(BIN / "uvicorn"), target, "--host", "127.0.0.1", "--port", str(port)]
        # uvicorn's supervisor kills a worker not answering its ping 5 s after it started (and aborts a SIGHUP
        # restart): on a loaded CI machine an instrumented worker can take longer to import the app.
        return cmd + (["--workers", str(workers), "--timeout-worker-healthcheck", "30"] if workers > 1 else [])
    if server in ("gunicorn", "gunicorn-preload"):
        cmd = [str(BIN / "gunicorn"), target, "-k", "uvicorn.workers.UvicornWorker", "-w", str(workers)]
        cmd += ["-b", f"127.0.0.1:{port}", "--graceful-timeout", "5"]
        return cmd + (["--preload"] if server == "gunicorn-preload" else [])
    if server == "fastapi-run":
        cmd = [str(BIN / "fastapi"), "run", module_path, "--host", "127.0.0.1", "--port", str(port)]
        return cmd + (["--workers", str(workers)] if workers > 1 else [])
    if server == "fastapi-dev":  # a reloader and one worker: `fastapi dev` has no --workers
        if workers != 1:
            raise ValueError("fastapi dev has one worker")
        return [str(BIN / "fastapi"), "dev", module_path, "--host", "127.0.0.1", "--port", str(port)]
    if server == "hypercorn":
        return [str(BIN / "hypercorn"), target, "-w", str(workers), "-b", f"127.0.0.1:{port}"]
    if server == "granian":
        return [str(BIN / "granian"), "--interface", "asgi", target, "--workers", str(workers),
                "--host", "127.0.0.1", "--port", str(port)]  # fmt: skip
    if server == "script":  # ``python target PORT``: a script that serves on its own
        return [str(BIN / "python"), target, str(port)]
    raise ValueError(server)


def start_app(
    target: str,
    *,
    app_dir: Path,
    env: Mapping[str, str] | None = None,
    server: str = "uvicorn",
    workers: int = 1,
    instrument: bool = True,
    wait_path: str = "/api/health/live",
    # An instrumented start takes 1-2 s on an idle machine and ~10 s at load 7 (2 cores); a hang shows its stacks.
    timeout: float = 60,
    log_dir: Path | None = None,
    port: int | None = None,
    metrics_port: int | None = None,
    server_args: tuple[str, ...] = (),
) -> AppProcess:
    """Start ``target`` (``module:app``) on a free port, wait until ``wait_path`` answers, return it."""
    port, metrics_port = port or free_port(), metrics_port or free_port()
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "UVICORN_", "WEB_CONCURRENCY"))}
    full_env.update(
        {
            "OTEL_EXPORTER_PROMETHEUS_PORT": str(metrics_port),
            "OTEL_EXPORTER_PROMETHEUS_HOST": "127.0.0.1",
            # Tests act and then look at once: health reads a fresh collection on every call.
            "OTEL_RELIABILITY_HEALTH_CACHE": "0",
            "PYTHONUNBUFFERED": "1",
        }
    )
    full_env.update(env or {})
    cmd = launcher_command(server, target, port, workers)
    cmd += list(server_args)
    if instrument:
        cmd = [str(BIN / "opentelemetry-instrument"), *cmd]
    log_dir = log_dir or Path(tempfile.mkdtemp(prefix="otel-rel-app-"))
    log_path = log_dir / f"app-{port}.log"
    log_file = open(log_path, "wb")  # noqa: SIM115 - owned by the process for its lifetime
    proc = subprocess.Popen(
        cmd, cwd=app_dir, env=full_env, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True
    )
    app = AppProcess(proc, port, metrics_port, log_path)
    try:
        wait_until(
            lambda: proc.poll() is None and http("GET", app.url + wait_path, timeout=2)[0] == 200,
            timeout=timeout,
            what=f"{target} to answer {wait_path}",
        )
    except AssertionError:
        stacks = python_stacks(proc.pid) if proc.poll() is None else "(the process had exited)"
        app.stop()
        raise AssertionError(f"app did not start; log:\n{app.log()}\nits threads then:\n{stacks}") from None
    return app


def python_stacks(pid: int) -> str:
    """Every thread's Python stack in ``pid`` and its children (py-spy), to tell a hang from a slow start."""
    pids = [
        pid,
        *(int(p) for p in subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()),
    ]
    out = []
    for one in pids:
        done = subprocess.run(
            [str(BIN / "py-spy"), "dump", "--pid", str(one)], capture_output=True, text=True, timeout=30
        )
        out.append(f"--- pid {one}\n{done.stdout or done.stderr}")
    return "\n".join(out)


# --- PostgreSQL: a private cluster owned by the postgres user, on a free loopback port ---------------------------
PG_BIN_CANDIDATES = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)


@dataclass
class Postgres:
    datadir: Path
    port: int
    bindir: Path
    password: str = "s3cret-pw-never-shown"
    user: str = "reliability"
    database: str = "reliability"

    @property
    def dsn(self) -> str:
        return f"postgresql+psycopg://{self.user}:{self.password}@127.0.0.1:{self.port}/{self.database}"

    def url(self, driver: str = "psycopg") -> str:
        return f"postgresql+{driver}://{self.user}:{self.password}@127.0.0.1:{self.port}/{self.database}"

    def _as_postgres(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        cmd = [*args]
        if os.geteuid() == 0:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        return subprocess.run(cmd, check=check, capture_output=True, text=True, timeout=120)

    def start(self) -> None:
        self._as_postgres(
            str(self.bindir / "pg_ctl"), "-D", str(self.datadir), "-w", "-t", "60", "-l",
            str(self.datadir / "server.log"), "-o", f"-p {self.port} -k {self.datadir} -c listen_addresses=127.0.0.1",
            "start",
        )  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        self._as_postgres(str(self.bindir / "pg_ctl"), "-D", str(self.datadir), "-m", mode, "-w", "stop", check=False)

    def psql(self, sql: str) -> str:
        out = self._as_postgres(
            str(self.bindir / "psql"), "-h", str(self.datadir), "-p", str(self.port), "-d", "postgres",
            "-v", "ON_ERROR_STOP=1", "-Atc", sql,
        )  # fmt: skip
        return out.stdout.strip()


def start_postgres() -> Postgres:
    require(bool(PG_BIN_CANDIDATES), "PostgreSQL server (apt-get install postgresql)")
    bindir = PG_BIN_CANDIDATES[0]
    base = Path(tempfile.mkdtemp(prefix="otel-rel-pg-"))
    datadir = base / "data"
    datadir.mkdir()
    if os.geteuid() == 0:
        shutil.chown(base, "postgres")
        shutil.chown(datadir, "postgres")
    pg = Postgres(datadir=datadir, port=free_port(), bindir=bindir)
    pg._as_postgres(str(bindir / "initdb"), "-D", str(datadir), "-A", "trust", "-U", "postgres", "--no-sync")
    with open(datadir / "postgresql.conf", "a") as conf:
        # Benchmarks start every variant's app at once and pause the idle ones, each holding up to 10 connections
        # (figure 1: 14 variants); PostgreSQL's default of 100 refused the tenth app's.
        conf.write("max_connections = 300\n")
    with open(datadir / "pg_hba.conf", "w") as hba:
        hba.write(
            "local all all trust\nhost all postgres 127.0.0.1/32 trust\nhost all all 127.0.0.1/32 scram-sha-256\n"
        )
    pg.start()
    pg.psql(f"CREATE ROLE {pg.user} LOGIN PASSWORD '{pg.password}'")
    pg.psql(f"CREATE DATABASE {pg.database} OWNER {pg.user}")
    pg.psql(f"ALTER DATABASE {pg.database} SET statement_timeout = '300s'")
    return pg


CACHE = Path(os.environ.get("OTEL_RELIABILITY_CACHE", "/var/cache/otel-reliability"))


def upstream_distro_dir() -> Path:
    """Upstream's opentelemetry-distro (the version matching our instrumentation), installed once into a cached
    folder to put first on PYTHONPATH: beside ours for one test or one benchmark variant, never in .venv."""
    return upstream_instrumentation_dir("opentelemetry-distro")


def upstream_instrumentation_dir(distribution: str) -> Path:
    """An upstream instrumentation package (e.g. ``opentelemetry-instrumentation-sqlalchemy``) at the version of
    our opentelemetry-instrumentation, without its dependencies, installed once into a cached folder to put on
    PYTHONPATH: to prove what happens when a user installs it beside us, never in .venv."""
    from importlib import metadata

    version = metadata.version("opentelemetry-instrumentation")
    target = CACHE / f"{distribution}-{version}"
    if not (target / ".complete").exists():
        proc = subprocess.run(
            [str(BIN / "python"), "-m", "pip", "install", "-q", "--no-deps", "--target", str(target),
             f"{distribution}=={version}"],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        if proc.returncode != 0:
            raise RuntimeError(f"{distribution}=={version} from PyPI: {proc.stderr[-300:]}")
        (target / ".complete").touch()
    return target


def built_tool(name: str) -> str | None:
    """A Go program scripts/build-tools.sh built from the Go module proxy and linked as build/<name>
    (prometheus and promtool 3.x, victoria-metrics, helm); None when it is not built (``make tools``)."""
    path = ROOT / "build" / name
    return str(path) if os.access(path, os.X_OK) else None


def prometheus_binary() -> str | None:
    """Prometheus 3 (built, not Debian's 2.x: users run 3, which also takes OTLP directly)."""
    return built_tool("prometheus")


def promtool_binary() -> str | None:
    return built_tool("promtool")


@contextlib.contextmanager
def breakers_instrumented(provider: Any, *others: Any) -> Iterator[None]:
    """The breaker instrumentor (and the instrumentors ``others``) on ``provider`` for one test, undone in reverse
    order: the breaker registry empty before and after, and circuitbreaker's process-wide monitor as it was (it
    holds every decorated breaker for the life of the process)."""
    import circuitbreaker

    from otel_reliability.instrumentation.breakers import BREAKERS, BreakersInstrumentor

    BREAKERS.clear()
    monitored = dict(circuitbreaker.CircuitBreakerMonitor.circuit_breakers)
    instrumentors = [BreakersInstrumentor(), *others]
    for instrumentor in instrumentors:
        instrumentor.instrument(meter_provider=provider)
    try:
        yield
    finally:
        for instrumentor in reversed(instrumentors):
            instrumentor.uninstrument()
        BREAKERS.clear()
        circuitbreaker.CircuitBreakerMonitor.circuit_breakers.clear()
        circuitbreaker.CircuitBreakerMonitor.circuit_breakers.update(monitored)


@contextlib.contextmanager
def pool_readings() -> Iterator[Any]:
    """A foreground Readings on its own MeterProvider with the pool instrumentor on it, for one test."""
    from opentelemetry.sdk.metrics import MeterProvider

    from otel_reliability.instrumentation.pool import PoolInstrumentor
    from otel_reliability.readings import Readings

    reader = Readings(background=False)
    provider = MeterProvider(metric_readers=[reader])
    PoolInstrumentor().instrument(meter_provider=provider)
    try:
        yield reader
    finally:
        PoolInstrumentor().uninstrument()
        provider.shutdown()


def collector_env(grpc: int, http: int, prometheus: int, health: int) -> dict[str, str]:
    """The environment that puts collector-config/otelcol.yaml's four listeners on these loopback ports."""
    ports = {"GRPC": grpc, "HTTP": http, "PROMETHEUS": prometheus, "HEALTH": health}
    return {f"OTEL_RELIABILITY_COLLECTOR_{name}_ENDPOINT": f"127.0.0.1:{port}" for name, port in ports.items()}


def collector_binary() -> Path:
    return ROOT / "build" / "otelcol-reliability"


def ensure_collector() -> Path:
    """Build (or reuse the cached) collector; fail in CI if it cannot be built."""
    binary = collector_binary()
    if not binary.exists():
        require(shutil.which("go") is not None, "Go toolchain to build the collector")
        subprocess.run(["bash", str(ROOT / "scripts" / "build-collector.sh")], check=True, timeout=1800)
    require(binary.exists(), "build/otelcol-reliability")
    return binary


@contextlib.contextmanager
def background(
    cmd: list[str], *, log_path: Path, env: Mapping[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
                                start_new_session=True)  # fmt: skip
        try:
            yield proc
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)


class OtlpReceiver:
    """A minimal OTLP/HTTP (protobuf) receiver on loopback: keeps what it received, answers 200.

    Enough to prove that an app exports by OTLP before the real collector is in the picture.
    """

    def __init__(self, keep: bool = True) -> None:
        """``keep=False`` (benchmarks): requests are parsed and counted (``span_count``, ``span_bytes``), not kept."""
        import http.server
        import threading

        from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

        self.metrics: list[Any] = []
        self.traces: list[Any] = []
        self.span_count = 0
        self.span_bytes = 0
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.path == "/v1/metrics" and keep:
                    receiver.metrics.append(ExportMetricsServiceRequest.FromString(body))
                elif self.path == "/v1/traces":
                    request = ExportTraceServiceRequest.FromString(body)
                    receiver.span_bytes += len(body)
                    receiver.span_count += sum(len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans)
                    if keep:
                        receiver.traces.append(request)
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def metric_points(self, name: str) -> list[tuple[dict[str, str], dict[str, Any]]]:
        """(resource attributes, data point attributes+value) of every point of metric ``name`` received."""
        out = []
        for request in list(self.metrics):
            for rm in request.resource_metrics:
                resource = {kv.key: kv.value.string_value for kv in rm.resource.attributes}
                for sm in rm.scope_metrics:
                    for metric in sm.metrics:
                        if metric.name != name:
                            continue
                        kind = metric.WhichOneof("data")
                        for dp in getattr(metric, kind).data_points:
                            attrs = {kv.key: _any_value(kv.value) for kv in dp.attributes}
                            value = dp.count if kind in ("histogram", "exponential_histogram") else (
                                dp.as_double if dp.HasField("as_double") else dp.as_int
                            )  # fmt: skip
                            out.append((resource, {**attrs, "_value": value}))
        return out

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _any_value(value: Any) -> Any:
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind else None
