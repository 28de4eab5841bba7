"""Past one machine, on real binaries: two hosts (an example service and its agent collector each) -> two gateway
collectors -> Prometheus started with --web.enable-remote-write-receiver (standing in for Mimir, Thanos Receive,
Cortex or VictoriaMetrics). All on 127.0.0.1, about a minute.

Proves: a breaker open in one service shows for that job only; both gateways stopped for 5 s and started again
lose no request (the totals are exact and the samples taken during the outage arrive afterwards, from the
agents' queues); the fleet checklist exits 1 naming the service and the breaker; the overview's Services table
has a row per service on remote-written data.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.support import (
    BIN,
    ROOT,
    AppProcess,
    background,
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
SERVICES = ("studio", "publisher")  # the breaker opens in studio only
ROUTE = "/api/episodes"
# The standard HTTP server instruments beside the request duration (stable semantic conventions), as the
# Prometheus exporter names them: an UpDownCounter without _total, the body-size histograms in bytes.
SEMCONV_HTTP = {
    "http_server_active_requests",
    "http_server_request_body_size_bytes",
    "http_server_response_body_size_bytes",
}


@dataclass
class Gateway:
    """A gateway collector that can be stopped and started again on the same ports."""

    binary: Path
    env: dict[str, str]
    health: str
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the process
        self.proc = subprocess.Popen([str(self.binary), f"--config={CONFIG / 'gateway.yaml'}"], env=self.env,
                                     stdout=log, stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
        log.close()
        wait_until(lambda: http("GET", self.health, timeout=1)[0] == 200, what=f"gateway {self.health}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)


@dataclass
class Fleet:
    prometheus: str
    fake_url: str
    apps: dict[str, AppProcess]
    gateways: list[Gateway]
    logs: Path
    sent: dict[str, int] = field(default_factory=dict)

    def query(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        params = {"query": expr, **({"time": f"{at:.3f}"} if at is not None else {})}
        status, body = get_json(f"{self.prometheus}/api/v1/query?{urllib.parse.urlencode(params)}")
        assert status == 200 and body["status"] == "success", (expr, body)
        return list(body["data"]["result"])

    def by_job(self, expr: str, at: float | None = None) -> dict[str, float]:
        return {r["metric"].get("job", ""): float(r["value"][1]) for r in self.query(expr, at)}

    def send(self, service: str, n: int) -> None:
        for _ in range(n):
            status, _, _ = http("GET", f"{self.apps[service].url}{ROUTE}")
            assert status == 200
        self.sent[service] = self.sent.get(service, 0) + n


def _collector_env(**ports: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    return {**env, **ports}


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    require(prometheus_binary() is not None, "prometheus (apt-get install prometheus)")
    collector = ensure_collector()
    tmp = tmp_path_factory.mktemp("fleet-e2e")
    port = {name: free_port() for name in ("prometheus", "fake")}
    prom_config = tmp / "prometheus.yml"
    # Nothing scraped: every series arrives by remote write. The out-of-order window is what a store needs
    # when a host's series move between gateways (README, "Past one machine").
    prom_config.write_text("global: {evaluation_interval: 1s}\nstorage:\n  tsdb:\n    out_of_order_time_window: 10m\n")
    prometheus_url = f"http://127.0.0.1:{port['prometheus']}"
    fake_url = f"http://127.0.0.1:{port['fake']}"
    with ExitStack() as stack:
        stack.enter_context(background(
            [str(prometheus_binary()), f"--config.file={prom_config}", f"--storage.tsdb.path={tmp / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{port['prometheus']}", "--web.enable-remote-write-receiver"],
            log_path=tmp / "prometheus.log"))  # fmt: skip
        stack.enter_context(background(
            [str(BIN / "python"), str(ROOT / "examples" / "fake_services.py"), "--port", str(port["fake"])],
            log_path=tmp / "fake.log"))  # fmt: skip
        wait_until(lambda: http("GET", prometheus_url + "/-/ready")[0] == 200, what="prometheus ready")
        wait_until(lambda: http("GET", fake_url + "/health")[0] == 200, what="fake services")

        gateways = []
        for i in range(2):
            grpc, health = free_port(), free_port()
            env = _collector_env(
                OTEL_RELIABILITY_COLLECTOR_GRPC_ENDPOINT=f"127.0.0.1:{grpc}",
                OTEL_RELIABILITY_COLLECTOR_HEALTH_ENDPOINT=f"127.0.0.1:{health}",
                OTEL_RELIABILITY_REMOTE_WRITE_URL=f"{prometheus_url}/api/v1/write",
            )
            gateways.append(Gateway(collector, env, f"http://127.0.0.1:{health}/", tmp / f"gateway-{i}.log"))
            gateways[-1].start()
            stack.callback(gateways[-1].stop)

        apps: dict[str, AppProcess] = {}
        for i, service in enumerate(SERVICES):  # host i: an agent and a service, the agent to gateway i
            agent = {name: free_port() for name in ("grpc", "http", "health")}
            env = _collector_env(
                OTEL_RELIABILITY_COLLECTOR_GRPC_ENDPOINT=f"127.0.0.1:{agent['grpc']}",
                OTEL_RELIABILITY_COLLECTOR_HTTP_ENDPOINT=f"127.0.0.1:{agent['http']}",
                OTEL_RELIABILITY_COLLECTOR_HEALTH_ENDPOINT=f"127.0.0.1:{agent['health']}",
                OTEL_RELIABILITY_GATEWAY_ENDPOINT=gateways[i].env["OTEL_RELIABILITY_COLLECTOR_GRPC_ENDPOINT"],
            )
            stack.enter_context(background([str(collector), f"--config={CONFIG / 'agent.yaml'}"],
                                           log_path=tmp / f"agent-{service}.log", env=env))  # fmt: skip
            agent_health = f"http://127.0.0.1:{agent['health']}/"
            wait_until(lambda url=agent_health: http("GET", url)[0] == 200, what="agent")
            app = start_app("app.main:app", app_dir=ROOT / "examples", log_dir=tmp, env={
                "OTEL_SERVICE_NAME": service,
                "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{agent['http']}",
                "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
                "OTEL_METRIC_EXPORT_INTERVAL": "1000",
                "FAKE_SERVICES_URL": fake_url,
                "DATABASE_URL": f"sqlite:///{tmp / service}.db",
                "EXAMPLE_DATA_DIR": str(tmp / service),
                "EXAMPLE_BREAKER_RESET_TIMEOUT": "600",
            })  # fmt: skip
            stack.callback(app.stop)
            apps[service] = app
        yield Fleet(prometheus_url, fake_url, apps, gateways, tmp)
        http("POST", fake_url + "/control/reset")


def _requests_counted(fleet: Fleet) -> dict[str, float]:
    return fleet.by_job(f'sum by (job) (http_server_request_duration_seconds_count{{http_route="{ROUTE}"}})')


@pytest.mark.integration
@pytest.mark.timeout(300)
def test_a_breaker_open_in_one_service_shows_for_that_job_only(fleet: Fleet) -> None:
    http("POST", f"{fleet.fake_url}/control/elevenlabs?failure_rate=1")
    try:
        for _ in range(4):
            http("POST", f"{fleet.apps['studio'].url}/api/episodes/1/voice")
    finally:
        http("POST", f"{fleet.fake_url}/control/reset")
    open_ = 'circuit_breaker_state{circuit_breaker_name="elevenlabs", circuit_breaker_state="open"} == 1'
    jobs = wait_until(lambda: fleet.by_job(open_), timeout=60, interval=1, what="open breaker remote-written")
    assert set(jobs) == {"studio"}
    # publisher reports the same breaker, closed: the series arrive per job, not merged.
    closed = 'circuit_breaker_state{circuit_breaker_name="elevenlabs", circuit_breaker_state="closed"} == 1'
    assert "publisher" in wait_until(lambda: fleet.by_job(closed), timeout=30, interval=1, what="closed breaker")
    # job/instance come from service.name/service.instance.id, as on every other path.
    instances = {r["metric"]["instance"] for r in fleet.query('circuit_breaker_state{job="studio"}')}
    _, body = get_json(fleet.apps["studio"].url + "/api/health/live")
    assert instances == {body["service"]["instance_id"]}


@pytest.mark.integration
@pytest.mark.timeout(300)
def test_both_gateways_away_for_5_seconds_lose_no_request(fleet: Fleet) -> None:
    for service in SERVICES:
        fleet.send(service, 20)
    wait_until(lambda: _requests_counted(fleet) == fleet.sent, timeout=60, interval=1, what="first requests")

    for gateway in fleet.gateways:
        gateway.stop()
    stopped = time.time()
    while time.time() - stopped < 5:  # requests keep coming while no gateway is up
        for service in SERVICES:
            fleet.send(service, 5)
        time.sleep(0.5)
    for gateway in fleet.gateways:
        gateway.start()
    restarted = time.time()
    for service in SERVICES:
        fleet.send(service, 10)

    counted = wait_until(lambda: _requests_counted(fleet) == fleet.sent and _requests_counted(fleet), timeout=90,
                         interval=1, what=f"every request counted ({fleet.sent})")  # fmt: skip
    assert counted == fleet.sent
    # Not only the totals: the samples taken while both gateways were down arrived afterwards (from the agents'
    # queues), so the outage leaves no gap in the stored series.
    window = f"{restarted - stopped - 1:.0f}s"
    inside = fleet.by_job(
        f'count_over_time(http_server_request_duration_seconds_count{{http_route="{ROUTE}"}}[{window}])',
        at=restarted - 0.5,
    )
    assert set(inside) == set(SERVICES) and min(inside.values()) >= 2, inside
    # The outage was real (each agent's exports failed and were retried), and nothing was given up on.
    for service in SERVICES:
        log = (fleet.logs / f"agent-{service}.log").read_text()
        assert "Will retry the request" in log and "Dropping data" not in log, service


@pytest.mark.integration
@pytest.mark.timeout(300)
def test_fleet_checklist_exits_1_naming_service_and_breaker(fleet: Fleet) -> None:
    open_ = 'circuit_breaker_state{circuit_breaker_name="elevenlabs", circuit_breaker_state="open"} == 1'
    if not fleet.by_job(open_):
        test_a_breaker_open_in_one_service_shows_for_that_job_only(fleet)
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_RELIABILITY_")}
    done = subprocess.run([str(BIN / "otel-reliability"), "check", "--prometheus", fleet.prometheus],
                          capture_output=True, text=True, timeout=60, env=clean)  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr
    breakers = next(line for line in done.stdout.splitlines() if "] breakers " in line)
    assert "[ACTION ]" in breakers and "studio: elevenlabs on" in breakers and "publisher" not in breakers
    assert "-> elevenlabs (service studio) failed its recent calls" in done.stdout
    report = json.loads(subprocess.run(
        [str(BIN / "otel-reliability"), "check", "--prometheus", fleet.prometheus, "--job", "publisher", "--json"],
        capture_output=True, text=True, timeout=60, env=clean).stdout)  # fmt: skip
    breakers_item = next(i for i in report["items"] if i["name"] == "breakers")
    assert report["services"].keys() == {"publisher"} and breakers_item["status"] == "ok", report


@pytest.mark.integration
def test_overview_services_table_has_a_row_per_service_on_remote_written_data(fleet: Fleet) -> None:
    overview = json.loads((CONFIG / "grafana" / "dashboards" / "overview.json").read_text())
    table = next(p for p in overview["panels"] if p["title"] == "Services")
    for target in table["targets"]:
        expr = target["expr"].replace("$job", ".*").replace("$instance", ".*")
        if target["refId"] in ("A", "B", "F"):  # instances, open breakers, memory: every service has them
            rows = wait_until(lambda e=expr: set(fleet.by_job(e)) >= set(SERVICES) and fleet.by_job(e),
                              timeout=30, interval=1, what=f"Services column {target['legendFormat']}")  # fmt: skip
            assert set(rows) == set(SERVICES)
    assert fleet.by_job(table["targets"][0]["expr"].replace("$job", ".*").replace("$instance", ".*")) == {
        s: 1.0 for s in SERVICES
    }


@pytest.mark.integration
def test_remote_written_names_are_the_contract_names(fleet: Fleet) -> None:
    """The gateway path names metrics as :9464 does: every name is a contract name or one the README documents
    (no `_ratio`, no missing `_total` or unit suffix), and the core families all arrive."""
    from tests.test_stack_e2e import HISTOGRAMS, contract_metric_names

    contract = set()
    for name in contract_metric_names():
        contract |= {f"{name}_{s}" for s in ("bucket", "count", "sum")} if name in HISTOGRAMS else {name}
    families = '__name__=~"(circuit_breaker|db_client|process|operation|http_server|temp_file)_.*"'

    def names() -> set[str]:
        rows = fleet.query(f'group by (__name__) ({{job="studio", {families}}})')
        return {r["metric"]["__name__"] for r in rows}

    fleet.send("studio", 3)  # requests (and so the pool) in use, whichever tests ran before
    core = {"circuit_breaker_state", "http_server_request_duration_seconds_bucket", "process_memory_usage_bytes",
            "process_cpu_utilization", "db_client_connection_max", "db_client_connection_count"}  # fmt: skip
    try:
        found = wait_until(lambda: core <= names() and names(), timeout=60, interval=1, what="core families")
    finally:
        assert core - names() == set(), "not remote-written"
    readme = (ROOT / "README.md").read_text()
    extras = sorted(found - contract)
    undocumented = []
    for name in extras:
        base = name.removesuffix("_bucket").removesuffix("_count").removesuffix("_sum")
        if f"`{base}`" not in readme and f"`{name}`" not in readme and base not in SEMCONV_HTTP:
            undocumented.append(name)
    assert undocumented == [], f"neither contract names nor documented: {undocumented} (all extras: {extras})"
    assert "target_info" in {r["metric"]["__name__"] for r in fleet.query('group by (__name__) ({job="studio"})')}
