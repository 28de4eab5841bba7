"""The example app injected exactly as the OpenTelemetry Operator injects Python (issue 28, README "On Kubernetes").

`make autoinstrumentation` builds the directory deploy/operator/Dockerfile puts in the image; it is copied to a
fresh place with the init container's command (`cp -r <image>/autoinstrumentation/. <volume>`), and the app runs
from a virtualenv of its own with no OpenTelemetry package but the API FastAPI itself requires (an older one
than the injected directory's, which must win), started with its own command (uvicorn, gunicorn,
fastapi run) and the Operator's environment: its PYTHONPATH, the OTEL_* variables it sets (OTLP over
http/protobuf, the k8s resource attributes, service.instance.id = namespace.pod.container). The app exports to
the real collector (collector-config/otelcol.yaml). Proves: health answers, breakers, pool and HTTP metrics
arrive under the contract's names, and under prefork health answers for every worker while each worker exports
under its own instance.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import pytest

from tests.support import (
    CACHE,
    ROOT,
    AppProcess,
    background,
    collector_env,
    ensure_collector,
    free_port,
    get_json,
    http,
    scrape,
    wait_until,
)

CONFIG = ROOT / "collector-config"
MOUNT = "otel-auto-instrumentation-python"  # the Operator's volume (pythonInstrMountPath)
NAMESPACE, POD, CONTAINER = "shop", "example-app-6d9f8-x2b7q", "app"
INSTANCE = f"{NAMESPACE}.{POD}.{CONTAINER}"  # what the Operator puts in service.instance.id
# The example app's own dependencies (examples extra), pinned to the versions in .venv, plus fastapi-cli for
# `fastapi run`. FastAPI requires opentelemetry-api (>= 1.44: it records its own request metrics when an SDK is
# set); the app's venv gets the oldest it accepts, so the injected (newer) API must shadow it.
APP_PACKAGES = ("fastapi", "uvicorn", "gunicorn", "sqlalchemy", "pybreaker", "circuitbreaker", "httpx",
                "python-multipart", "pydantic", "fastapi-cli")  # fmt: skip
APP_OTEL_API = "1.44.0"


def _pinned(name: str) -> str:
    try:
        return f"{name}=={metadata.version(name)}"
    except metadata.PackageNotFoundError:
        return name


@pytest.fixture(scope="module")
def app_venv() -> Path:
    """A virtualenv with the app's dependencies only, cached outside the clone (keyed by the pins)."""
    pins = [*sorted(_pinned(n) for n in APP_PACKAGES), f"uvicorn[standard]=={metadata.version('uvicorn')}",
            f"opentelemetry-api=={APP_OTEL_API}"]  # fmt: skip
    key = hashlib.sha256(" ".join([sys.version, *pins]).encode()).hexdigest()[:12]
    venv = CACHE / f"operator-app-venv-{key}"
    if not (venv / ".complete").exists():
        shutil.rmtree(venv, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
        done = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", *pins],
                              capture_output=True, text=True, timeout=600)  # fmt: skip
        assert done.returncode == 0, done.stderr[-2000:]
        (venv / ".complete").touch()
    # The point of the test: no SDK, instrumentation, exporter or otel-reliability in the app's environment.
    listed = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "list", "--format=freeze"],
                            capture_output=True, text=True, check=True).stdout.lower().split()  # fmt: skip
    otel = [p for p in listed if "opentelemetry" in p or "otel" in p]
    assert otel == [f"opentelemetry-api=={APP_OTEL_API}"], otel
    return venv


@pytest.fixture(scope="module")
def injected(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`make autoinstrumentation` into a scratch directory, then the init container's copy into a fresh volume."""
    tmp = tmp_path_factory.mktemp("operator")
    image = tmp / "image" / "autoinstrumentation"
    done = subprocess.run(["make", "-s", "autoinstrumentation", f"AUTOINSTRUMENTATION={image}"], cwd=ROOT,
                          capture_output=True, text=True, timeout=900)  # fmt: skip
    assert done.returncode == 0, done.stdout[-1000:] + done.stderr[-2000:]
    volume = tmp / MOUNT
    volume.mkdir()
    subprocess.run(["cp", "-r", f"{image}/.", str(volume)], check=True)
    assert (volume / "opentelemetry" / "instrumentation" / "auto_instrumentation" / "sitecustomize.py").exists()
    return volume


@dataclass
class Collector:
    otlp_http: str
    metrics_port: int

    def names(self, job: str) -> set[str]:
        return {
            name for name, rows in scrape(self.metrics_port).items() if any(lab.get("job") == job for lab, _ in rows)
        }

    def rows(self, name: str, job: str) -> list[tuple[dict[str, str], float]]:
        return [(lab, v) for lab, v in scrape(self.metrics_port).get(name, []) if lab.get("job") == job]


@pytest.fixture(scope="module")
def collector(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Collector]:
    binary = ensure_collector()
    tmp = tmp_path_factory.mktemp("operator-collector")
    ports = {name: free_port() for name in ("grpc", "http", "prom", "health")}
    env = collector_env(ports["grpc"], ports["http"], ports["prom"], ports["health"])
    with background([str(binary), f"--config={CONFIG / 'otelcol.yaml'}"], log_path=tmp / "collector.log", env=env):
        wait_until(lambda: http("GET", f"http://127.0.0.1:{ports['health']}/")[0] == 200, what="collector health")
        yield Collector(f"http://127.0.0.1:{ports['http']}", ports["prom"])


@pytest.fixture(scope="module")
def fake_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    log = tmp_path_factory.mktemp("operator-fake") / "fake.log"
    with background([sys.executable, str(ROOT / "examples" / "fake_services.py"), "--port", str(port)], log_path=log):
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: http("GET", url + "/health")[0] == 200, what="fake services")
        yield url


def operator_env(volume: Path, collector: Collector, service: str) -> dict[str, str]:
    """What the Operator sets on the app's container for `instrumentation.opentelemetry.io/inject-python`."""
    return {
        "PYTHONPATH": f"{volume}/opentelemetry/instrumentation/auto_instrumentation:{volume}",
        "OTEL_SERVICE_NAME": service,
        "OTEL_EXPORTER_OTLP_ENDPOINT": collector.otlp_http,
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_METRICS_EXPORTER": "otlp",
        "OTEL_LOGS_EXPORTER": "otlp",
        "OTEL_PROPAGATORS": "tracecontext,baggage",
        "OTEL_RESOURCE_ATTRIBUTES_POD_NAME": POD,
        "OTEL_RESOURCE_ATTRIBUTES_NODE_NAME": "node-1",
        "OTEL_RESOURCE_ATTRIBUTES": (
            f"k8s.container.name={CONTAINER},k8s.deployment.name=example-app,k8s.namespace.name={NAMESPACE},"
            f"k8s.node.name=node-1,k8s.pod.name={POD},k8s.replicaset.name=example-app-6d9f8,"
            f"service.instance.id={INSTANCE},service.version=1.0"
        ),
        # From the Instrumentation resource's spec.python.env (the chart's values): exports every second here.
        "OTEL_METRIC_EXPORT_INTERVAL": "1000",
    }


def start(venv: Path, command: str, workers: int, env: dict[str, str], log_dir: Path) -> AppProcess:
    """The app's own command from its own virtualenv: no opentelemetry-instrument in front."""
    port = free_port()
    bin_ = venv / "bin"
    if command == "uvicorn":
        cmd = [str(bin_ / "uvicorn"), "app.main:app", "--host", "127.0.0.1", "--port", str(port)]
        # uvicorn kills a worker that does not answer its health ping within 5 s, which a worker still importing
        # on a loaded machine may miss (uvicorn itself, without us, too): give it longer.
        cmd += ["--workers", str(workers), "--timeout-worker-healthcheck", "60"] if workers > 1 else []
    elif command == "gunicorn":
        cmd = [str(bin_ / "gunicorn"), "app.main:app", "-k", "uvicorn.workers.UvicornWorker", "-w", str(workers),
               "-b", f"127.0.0.1:{port}", "--graceful-timeout", "5"]  # fmt: skip
    else:
        cmd = [str(bin_ / "fastapi"), "run", "app/main.py", "--host", "127.0.0.1", "--port", str(port)]
        cmd += ["--workers", str(workers)] if workers > 1 else []
    base = {k: v for k, v in os.environ.items()
            if not k.startswith(("OTEL_", "UVICORN_", "WEB_CONCURRENCY", "PYTHON", "VIRTUAL_ENV"))}  # fmt: skip
    full = {**base, "PATH": f"{bin_}:{base.get('PATH', '')}", "PYTHONUNBUFFERED": "1", **env}
    log_path = log_dir / f"{command}-{port}.log"
    log = open(log_path, "wb")  # noqa: SIM115 - owned by the process
    proc = subprocess.Popen(cmd, cwd=ROOT / "examples", env=full, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)  # fmt: skip
    log.close()
    app = AppProcess(proc, port, 0, log_path)
    try:
        wait_until(lambda: proc.poll() is None and http("GET", app.url + "/api/health/live", timeout=2)[0] == 200,
                   timeout=60, what=f"{command} to answer")  # fmt: skip
    except AssertionError:
        app.stop()
        raise AssertionError(f"{command} did not start; log:\n{app.log()}") from None
    return app


def test_a_prefork_worker_appends_its_pid_to_a_given_instance_id() -> None:
    from otel_reliability.configurator import instance_id

    assert instance_id(INSTANCE, worker=True) == f"{INSTANCE}.{os.getpid()}"
    assert instance_id(INSTANCE, worker=False) == INSTANCE  # a single process keeps what it was given
    generated = {instance_id(None, worker=w) for w in (True, False)}
    assert len(generated) == 2 and INSTANCE not in generated


CASES = [("uvicorn", 1), ("fastapi run", 1), ("gunicorn", 2), ("uvicorn", 2)]


@pytest.mark.integration
@pytest.mark.timeout(900)
@pytest.mark.parametrize(("command", "workers"), CASES, ids=[f"{c.split()[0]}-{w}" for c, w in CASES])
def test_the_app_injected_as_the_operator_does(
    command: str,
    workers: int,
    app_venv: Path,
    injected: Path,
    collector: Collector,
    fake_url: str,
    tmp_path: Path,
) -> None:
    from tests.test_fleet_e2e import SEMCONV_HTTP
    from tests.test_stack_e2e import HISTOGRAMS, contract_metric_names

    service = f"op-{command.split()[0]}-{workers}"
    env = {
        **operator_env(injected, collector, service),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'app.db'}",
        "EXAMPLE_DATA_DIR": str(tmp_path / "data"),
        "FAKE_SERVICES_URL": fake_url,
        "EXAMPLE_BREAKER_RESET_TIMEOUT": "600",
        "OTEL_RELIABILITY_HEALTH_CACHE": "0",
    }
    # The injected directory comes before site-packages: its API shadows the app's older one.
    probe = [str(app_venv / "bin" / "python"), "-c", "import opentelemetry.version as v; print(v.__version__)"]
    api = subprocess.run(probe, env={"PYTHONPATH": str(injected)}, capture_output=True, text=True, check=True)
    shipped = [d.name.removesuffix(".dist-info").split("-")[1] for d in injected.glob("opentelemetry_api-*.dist-info")]
    assert [api.stdout.strip()] == shipped and shipped != [APP_OTEL_API], (api.stdout, shipped)
    # The schema first, as a deployment's migration job would: prefork workers would race to create it.
    schema = [str(app_venv / "bin" / "python"), "-c", "from app.db import create_schema; create_schema()"]
    subprocess.run(schema, cwd=ROOT / "examples", env={k: env[k] for k in ("DATABASE_URL", "EXAMPLE_DATA_DIR")},
                   check=True, timeout=60)  # fmt: skip
    app = start(app_venv, command.split()[0], workers, env, tmp_path)
    try:
        # Health, from the injected distro (the app's venv cannot import it by itself).
        for path in ("/api/health/live", "/api/health/ready"):
            status, body = get_json(app.url + path)
            assert status == 200, (path, body)
        if workers > 1:  # host-wide: whichever worker answers counts every worker
            wait_until(lambda: get_json(app.url + "/api/health/live")[1].get("workers") == workers, timeout=30,
                       what="every worker publishing")  # fmt: skip
        sent = 0
        for _ in range(20):
            assert http("GET", app.url + "/api/episodes")[0] == 200
            sent += 1
        http("POST", f"{fake_url}/control/elevenlabs?failure_rate=1")
        try:
            for _ in range(4 * workers):
                http("POST", f"{app.url}/api/episodes/1/voice")
        finally:
            http("POST", f"{fake_url}/control/reset")

        # At least one worker took fail_max failures; its state reaches the other worker's answers once it has
        # published its readings, a moment later.
        def elevenlabs() -> dict[str, object]:
            return get_json(app.url + "/api/health/circuit-breakers")[1]["breakers"]["elevenlabs"]

        wait_until(lambda: elevenlabs()["state"] == "open", timeout=5, what="elevenlabs open host-wide")

        # Through the collector: every request counted, once, per worker instance.
        def counted() -> float:
            rows = collector.rows("http_server_request_duration_seconds_count", service)
            return sum(v for lab, v in rows if lab.get("http_route") == "/api/episodes")

        wait_until(lambda: counted() == sent, timeout=60, interval=1, what=f"{sent} requests through the collector")

        def seen() -> set[str]:
            return {lab["instance"] for lab, _ in collector.rows("process_memory_usage_bytes", service)}

        enough = workers if workers > 1 else 0  # every process exports every second
        instances = wait_until(lambda: len(seen() - {INSTANCE}) >= enough and seen(), timeout=20, interval=1,
                               what="every worker's process metrics")  # fmt: skip
        if workers == 1:
            assert instances == {INSTANCE}, instances  # the Operator's id, as it set it
        else:  # each worker under the Operator's id and its pid (a uvicorn supervisor keeps the id itself)
            per_worker = instances - {INSTANCE}
            assert len(per_worker) == workers, instances
            assert all(re.fullmatch(re.escape(INSTANCE) + r"\.\d+", i) for i in per_worker), instances

        def states() -> set[tuple[str | None, str | None]]:
            rows = collector.rows("circuit_breaker_state", service)
            return {(lab.get("circuit_breaker_name"), lab.get("circuit_breaker_state")) for lab, v in rows if v == 1}

        wait_until(lambda: ("elevenlabs", "open") in states(), timeout=30, interval=1,
                   what="the open breaker through the collector")  # fmt: skip

        core = {"circuit_breaker_state", "circuit_breaker_calls_total", "http_server_request_duration_seconds_bucket",
                "db_client_connection_count", "db_client_connection_max", "db_client_operation_duration_seconds_count",
                "process_memory_usage_bytes", "process_cpu_utilization"}  # fmt: skip
        names = wait_until(lambda: core <= collector.names(service) and collector.names(service), timeout=30,
                           interval=1, what="breaker, pool, HTTP and process metrics")  # fmt: skip
        contract = set()
        for name in contract_metric_names():
            contract |= {f"{name}_{s}" for s in ("bucket", "count", "sum")} if name in HISTOGRAMS else {name}
        readme = (ROOT / "README.md").read_text()

        def documented(name: str) -> bool:
            base = name.removesuffix("_bucket").removesuffix("_count").removesuffix("_sum")
            return base in SEMCONV_HTTP or f"`{base}`" in readme or f"`{name}`" in readme

        odd = [n for n in names - contract - {"target_info"} if not documented(n)]
        assert odd == [], f"names neither in the contract nor documented: {sorted(odd)}"
    finally:
        app.stop()
    log = app.log()
    assert "Traceback" not in log, log[-3000:]
