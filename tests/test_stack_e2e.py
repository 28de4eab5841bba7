"""End to end, on real software: the example app -> (a) OTLP -> the built collector -> Prometheus, (b) the
app's :9464 -> Prometheus, and (c) OTLP straight into Prometheus 3 (--web.enable-otlp-receiver, with the `otlp:`
block of collector-config/prometheus-otlp.yml), driven through an outage, an error burst, pool saturation and a
stuck job.

Proves on the three paths: the metric names of the contract are identical, every panel query of every dashboard
returns data, and the alert rules (with `for:` shortened) fire on the real Prometheus 3; two instances through
the collector are told apart. Everything on 127.0.0.1, bounded in time.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support import (
    BIN,
    ROOT,
    AppProcess,
    Postgres,
    background,
    collector_env,
    ensure_collector,
    free_port,
    get_json,
    http,
    prometheus_binary,
    require,
    start_app,
    wait_until,
)

CONFIG = ROOT / "collector-config"
SERVICE = "example"
DIRECT_JOB = "otel-reliability"
OTLP_JOB = "example-otlp"  # path (c): Prometheus 3 names the job after service.name, as the collector does
JOBS = (DIRECT_JOB, SERVICE, OTLP_JOB)


def contract_metric_names() -> list[str]:
    """The Prometheus names of shared/CONTRACT.md's metric table (shared/ sits beside the clone)."""
    contract = ROOT.parent / "shared" / "CONTRACT.md"
    require(contract.exists(), f"{contract} (the shared folder beside the clone)")
    section = contract.read_text().split("## Metrics", 1)[1].split("\n## ", 1)[0]
    names = re.findall(r"^\| ([a-z_*]+) \|", section, flags=re.M)
    return [n.removesuffix("_*") for n in names if n != "Prometheus"]


HISTOGRAMS = {
    "http_server_request_duration_seconds",
    "db_client_connection_wait_time_seconds",
    "db_client_connection_use_time_seconds",
    "db_client_connection_create_time_seconds",
    "db_client_operation_duration_seconds",
}


@dataclass
class Stack:
    prometheus: str
    direct: AppProcess
    via_collector: list[AppProcess]
    fake_url: str
    otlp_direct: AppProcess

    def query(self, expr: str) -> list[dict[str, Any]]:
        url = f"{self.prometheus}/api/v1/query?query={urllib.parse.quote(expr)}"
        status, body = get_json(url)
        assert status == 200 and body["status"] == "success", (expr, body)
        return body["data"]["result"]


def _alerts_with_short_for(tmp: Path) -> Path:
    text = (CONFIG / "alerts.yml").read_text()
    short = re.sub(r"^(\s+for:\s*)\S+", r"\g<1>2s", text, flags=re.M)
    path = tmp / "alerts.yml"
    path.write_text(short)
    return path


def _prometheus_config(tmp: Path, collector_port: int, direct_port: int) -> Path:
    text = (CONFIG / "prometheus.yml").read_text()
    text = re.sub(r"scrape_interval: \S+", "scrape_interval: 1s", text)
    text = re.sub(r"scrape_timeout: \S+", "scrape_timeout: 1s", text)
    text = re.sub(r"evaluation_interval: \S+", "evaluation_interval: 1s", text)
    text = text.replace("127.0.0.1:8889", f"127.0.0.1:{collector_port}").replace(
        "127.0.0.1:9464", f"127.0.0.1:{direct_port}"
    )
    text = text.replace("  - alerts.yml", f"  - {_alerts_with_short_for(tmp)}")
    # The SLO budget group runs every 5 minutes in production; here every second, so its panel has data.
    slo = tmp / "slo.yml"
    slo.write_text((CONFIG / "slo.yml").read_text().replace("    interval: 5m\n", "    interval: 1s\n"))
    text = text.replace("  - slo.yml", f"  - {slo}")
    config = yaml.safe_load(text)
    # Path (c): prometheus-otlp.yml's OTLP translation and storage, as a Prometheus that takes OTLP runs them.
    otlp = yaml.safe_load((CONFIG / "prometheus-otlp.yml").read_text())
    config["otlp"] = otlp["otlp"]
    config.setdefault("storage", {}).update(otlp.get("storage", {}))
    path = tmp / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    return path


def _example_env(pg: Postgres, database: str, fake_url: str, tmp: Path) -> dict[str, str]:
    pg.psql(f"CREATE DATABASE {database} OWNER {pg.user}")
    pg.psql(f"ALTER DATABASE {database} SET statement_timeout = '300s'")
    url = pg.url("psycopg").rsplit("/", 1)[0] + "/" + database
    return {
        "DATABASE_URL": url,
        "FAKE_SERVICES_URL": fake_url,
        "EXAMPLE_DATA_DIR": str(tmp / database),
        "EXAMPLE_POOL_SIZE": "2",
        "EXAMPLE_POOL_MAX_OVERFLOW": "1",
        "EXAMPLE_POOL_TIMEOUT": "1",
        "EXAMPLE_BREAKER_RESET_TIMEOUT": "600",
        "OTEL_SERVICE_NAME": SERVICE,
        "OTEL_RELIABILITY_STUCK_THRESHOLD": "2",
        "OTEL_RELIABILITY_STUCK_CHECK_INTERVAL": "1",
        "OTEL_RELIABILITY_SNAPSHOT_INTERVAL": "1",
        "OTEL_RELIABILITY_STATEMENT_TIMEOUT_INTERVAL": "1",
        "OTEL_RELIABILITY_HEALTH_TOKEN": "e2e-health-token",
    }


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, postgres: Postgres) -> Iterator[Stack]:
    require(prometheus_binary() is not None, "build/prometheus (make tools)")
    collector = ensure_collector()
    tmp = tmp_path_factory.mktemp("stack")
    ports = {name: free_port() for name in ("grpc", "http", "prom", "health", "fake", "prometheus")}
    listeners = collector_env(ports["grpc"], ports["http"], ports["prom"], ports["health"])
    fake_url = f"http://127.0.0.1:{ports['fake']}"
    apps: list[AppProcess] = []
    with (
        background([str(collector), f"--config={CONFIG / 'otelcol.yaml'}"], log_path=tmp / "collector.log",
                   env=listeners),
        background([str(BIN / "python"), str(ROOT / "examples" / "fake_services.py"), "--port", str(ports["fake"])],
                   log_path=tmp / "fake.log"),
    ):  # fmt: skip
        wait_until(lambda: http("GET", f"http://127.0.0.1:{ports['health']}/")[0] == 200, what="collector health")
        wait_until(lambda: http("GET", fake_url + "/health")[0] == 200, what="fake services")
        try:
            otlp = {
                "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{ports['http']}",
                "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
                "OTEL_METRIC_EXPORT_INTERVAL": "1000",
            }
            for i in range(2):
                env = {**_example_env(postgres, f"e2e_collector_{i}", fake_url, tmp), **otlp}
                apps.append(start_app("app.main:app", app_dir=ROOT / "examples", env=env, log_dir=tmp))
            direct = start_app(
                "app.main:app",
                app_dir=ROOT / "examples",
                env=_example_env(postgres, "e2e_direct", fake_url, tmp),
                log_dir=tmp,
            )
            apps.append(direct)
            config = _prometheus_config(tmp, ports["prom"], direct.metrics_port)
            prometheus = [
                str(prometheus_binary()), f"--config.file={config}", f"--storage.tsdb.path={tmp / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{ports['prometheus']}", "--web.enable-otlp-receiver",
            ]  # fmt: skip
            with background(prometheus, log_path=tmp / "prometheus.log"):
                url = f"http://127.0.0.1:{ports['prometheus']}"
                wait_until(lambda: http("GET", url + "/-/ready")[0] == 200, what="prometheus ready")
                env = {
                    **_example_env(postgres, "e2e_otlp", fake_url, tmp),
                    "OTEL_SERVICE_NAME": OTLP_JOB,
                    "OTEL_METRICS_EXPORTER": "otlp",
                    "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": f"{url}/api/v1/otlp/v1/metrics",
                    "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL": "http/protobuf",
                    "OTEL_METRIC_EXPORT_INTERVAL": "1000",
                    "OTEL_TRACES_EXPORTER": "none",  # Prometheus takes metrics only
                    "OTEL_LOGS_EXPORTER": "none",
                }
                otlp_app = start_app("app.main:app", app_dir=ROOT / "examples", env=env, log_dir=tmp)
                apps.append(otlp_app)
                yield Stack(url, direct, apps[:2], fake_url, otlp_app)
        finally:
            for app in apps:
                app.stop()


def load(stack: Stack, app: AppProcess, scenario: str, *extra: str, wait: bool = True) -> subprocess.Popen[bytes]:
    cmd = [str(BIN / "python"), str(ROOT / "examples" / "load.py"), "--scenario", scenario, "--url", app.url,
           "--fake-url", stack.fake_url, "--quiet", *extra]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    if wait:
        assert proc.wait(120) == 0, proc.stderr.read() if proc.stderr else ""
    return proc


@pytest.fixture(scope="module")
def driven(stack: Stack) -> Iterator[Stack]:
    """Every app through the scenarios; pool saturation keeps running in the background while tests look."""
    targets = [stack.direct, *stack.via_collector, stack.otlp_direct]
    for app in targets:
        load(stack, app, "steady", "--duration", "3", "--max-requests", "200")
    load(stack, stack.direct, "outage", "--service", "elevenlabs", "--no-restore", "--duration", "4")
    for app in targets:
        load(stack, app, "error-burst", "--duration", "4", "--max-requests", "120")
        load(stack, app, "outage", "--service", "elevenlabs", "--no-restore", "--duration", "3")
    for app in targets:
        load(stack, app, "contention", "--duration", "4", "--max-requests", "300")
    load(stack, stack.direct, "stuck-job", "--duration", "1")
    load(stack, stack.via_collector[0], "stuck-job", "--duration", "1")
    load(stack, stack.otlp_direct, "stuck-job", "--duration", "1")
    saturating = [
        load(stack, app, "pool-saturation", "--duration", "240", "--hold-ms", "1500", "--concurrency", "6", wait=False)
        for app in targets
    ]
    try:
        yield stack
    finally:
        for proc in saturating:
            proc.terminate()
            proc.wait(10)
        http("POST", stack.fake_url + "/control/reset")


def _names(stack: Stack, job: str) -> set[str]:
    result = stack.query(
        f'group by (__name__) ({{job="{job}", __name__=~"(circuit|db_client|process|operation|http_server).*"}})'
    )
    return {r["metric"]["__name__"] for r in result}


def _expected(names: list[str]) -> set[str]:
    out = set()
    for name in names:
        if name in HISTOGRAMS:
            out |= {f"{name}_bucket", f"{name}_count", f"{name}_sum"}
        else:
            out.add(name)
    return out


# Counters whose every series carries error_type have no series before their first event, and the scenario
# makes no connection fail: the counter itself is covered by tests/test_pool.py.
FIRST_EVENT_ONLY = {"db_client_connection_errors_total"}


def test_contract_names_identical_on_the_three_paths(driven: Stack) -> None:
    expected = _expected(contract_metric_names()) - FIRST_EVENT_ONLY
    assert len(expected) >= 25

    def complete() -> bool:
        return all(expected <= _names(driven, job) for job in JOBS)

    try:
        wait_until(complete, timeout=60, interval=1, what="every contract metric on the three paths")
    finally:
        names = {job: _names(driven, job) for job in JOBS}
        assert expected - names[DIRECT_JOB] == set(), "missing on the direct path (:9464)"
        assert expected - names[SERVICE] == set(), "missing on the collector path"
        assert expected - names[OTLP_JOB] == set(), "missing on the OTLP path into Prometheus 3"
    # Not only the contract's: every name of these families is the same on the three paths.
    assert names[DIRECT_JOB] == names[SERVICE] == names[OTLP_JOB], {
        job: sorted(names[job] ^ names[DIRECT_JOB]) for job in JOBS
    }


def test_the_otlp_path_has_the_labels_of_the_other_two(driven: Stack) -> None:
    """job and instance from service.name and service.instance.id, no resource attribute copied onto series
    (they are on target_info), so a dashboard's label filters work the same on every path."""

    def labels(job: str) -> set[str]:
        rows = driven.query(f'circuit_breaker_state{{job="{job}"}}')
        return {k for r in rows for k in r["metric"]} - {"__name__"}

    assert labels(OTLP_JOB) == labels(SERVICE), (labels(OTLP_JOB), labels(SERVICE))
    _, body = get_json(driven.otlp_direct.url + "/api/health/live")
    instances = {r["metric"]["instance"] for r in driven.query(f'process_memory_usage_bytes{{job="{OTLP_JOB}"}}')}
    assert instances == {body["service"]["instance_id"]}
    assert driven.query(f'target_info{{job="{OTLP_JOB}"}}'), "resource attributes on target_info"


def test_two_instances_through_the_collector_are_told_apart(driven: Stack) -> None:
    def instances() -> set[str]:
        rows = driven.query(f'process_memory_usage_bytes{{job="{SERVICE}"}}')
        return {r["metric"]["instance"] for r in rows}

    found = wait_until(lambda: len(instances()) == 2 and instances(), timeout=30, interval=1, what="2 instances")
    ids = set()
    for app in driven.via_collector:
        _, body = get_json(app.url + "/api/health/live")
        ids.add(body["service"]["instance_id"])
    assert found == ids  # the instance label is each process's service.instance.id


def _panel_queries() -> list[tuple[str, str, str]]:
    out = []
    for path in sorted((CONFIG / "grafana" / "dashboards").glob("*.json")):
        dashboard = json.loads(path.read_text())
        for panel in dashboard["panels"]:
            for target in panel.get("targets", []):
                out.append((path.stem, panel["title"], target["expr"]))
    return out


@pytest.mark.parametrize("job", JOBS)
def test_every_dashboard_panel_returns_data(driven: Stack, job: str) -> None:
    queries = _panel_queries()
    assert len(queries) > 30

    def substituted(expr: str) -> str:
        return (
            expr.replace("$job", job)
            .replace("$instance", ".*")
            .replace("$__rate_interval", "30s")
            .replace("$__interval", "5s")
            .replace("$__range", "5m")
        )

    def empty_panels() -> list[str]:
        return [f"{d} / {t}" for d, t, e in queries if not driven.query(substituted(e))]

    try:
        wait_until(lambda: not empty_panels(), timeout=60, interval=2, what=f"data in every panel ({job})")
    finally:
        assert empty_panels() == []


@pytest.mark.parametrize("alert", ["CircuitBreakerOpen", "HighErrorRatio", "DatabasePoolUtilizationHigh"])
def test_alerts_fire_on_the_real_prometheus(driven: Stack, alert: str) -> None:
    def firing() -> set[str]:
        _, body = get_json(driven.prometheus + "/api/v1/alerts")
        return {
            a["labels"].get("job", "")
            for a in body["data"]["alerts"]
            if a["labels"]["alertname"] == alert and a["state"] == "firing"
        }

    jobs = wait_until(lambda: set(JOBS) <= firing() and firing(), timeout=90, interval=1,
                      what=f"{alert} firing on the three paths")  # fmt: skip
    assert set(JOBS) <= jobs


def test_health_and_scrape_agree_while_the_breaker_is_open(driven: Stack) -> None:
    _, body = get_json(driven.direct.url + "/api/health/circuit-breakers")
    assert body["breakers"]["elevenlabs"]["state"] == "open"
    rows = driven.query(
        f'circuit_breaker_state{{job="{DIRECT_JOB}", circuit_breaker_name="elevenlabs", circuit_breaker_state="open"}}'
    )
    assert rows and float(rows[0]["value"][1]) == 1.0
    time.sleep(0)  # the aggregate reflects it too
    _, aggregate = get_json(driven.direct.url + "/api/health")
    assert aggregate["status"] in ("degraded", "unhealthy")
