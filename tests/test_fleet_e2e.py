"""Past one machine, on real binaries: two hosts (an example service and its agent collector each) -> two gateway
collectors -> two independent stores by remote write: Prometheus started with --web.enable-remote-write-receiver
(standing in for Mimir, Thanos Receive or Cortex) and VictoriaMetrics single node (built by `make tools`). Each
gateway runs collector-config/gateway.yaml with a second remote-write exporter (the same settings, the second
store's URL), so both stores receive the same samples. All on 127.0.0.1, about a minute.

Proves, on both stores: a breaker open in one service shows for that job only; both gateways stopped for 5 s and
started again lose no request (the totals are exact and the samples taken during the outage arrive afterwards,
from the agents' queues); the fleet checklist exits 1 naming the service and the breaker, with the same report
from either store's query API; the overview's Services table has a row per service on remote-written data; the
remote-written names are the contract's.
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
import yaml

from tests.support import (
    BIN,
    ROOT,
    AppProcess,
    background,
    built_tool,
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
STORES = ("prometheus", "victoria-metrics")
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
    second_store: Path  # gateway.yaml's remote-write exporter again, to the second store
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the process
        cmd = [str(self.binary), f"--config={CONFIG / 'gateway.yaml'}", f"--config={self.second_store}"]
        self.proc = subprocess.Popen(cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
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
    stores: dict[str, str]  # name -> base URL of its Prometheus-compatible query API
    fake_url: str
    apps: dict[str, AppProcess]
    gateways: list[Gateway]
    logs: Path
    sent: dict[str, int] = field(default_factory=dict)

    @property
    def prometheus(self) -> str:
        return self.stores["prometheus"]

    def query(self, expr: str, at: float | None = None, store: str = "prometheus") -> list[dict[str, Any]]:
        params = {"query": expr, **({"time": f"{at:.3f}"} if at is not None else {})}
        status, body = get_json(f"{self.stores[store]}/api/v1/query?{urllib.parse.urlencode(params)}")
        assert status == 200 and body["status"] == "success", (store, expr, body)
        return list(body["data"]["result"])

    def by_job(self, expr: str, at: float | None = None, store: str = "prometheus") -> dict[str, float]:
        return {r["metric"].get("job", ""): float(r["value"][1]) for r in self.query(expr, at, store)}

    def send(self, service: str, n: int) -> None:
        for _ in range(n):
            status, _, _ = http("GET", f"{self.apps[service].url}{ROUTE}")
            assert status == 200
        self.sent[service] = self.sent.get(service, 0) + n


def _collector_env(**ports: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    return {**env, **ports}


def _second_store(tmp: Path, url: str) -> Path:
    """A config merged over gateway.yaml: its remote-write exporter, unchanged but for the URL, to a second store."""
    gateway = yaml.safe_load((CONFIG / "gateway.yaml").read_text())
    exporter = gateway["exporters"]["prometheus_remote_write"]
    exporter["http"]["endpoint"] = url
    pipeline = gateway["service"]["pipelines"]["metrics"]
    overlay = {
        "exporters": {"prometheus_remote_write/second": exporter},
        "service": {
            "pipelines": {"metrics": {"exporters": [*pipeline["exporters"], "prometheus_remote_write/second"]}}
        },
    }
    path = tmp / "second-store.yaml"
    path.write_text(yaml.safe_dump(overlay))
    return path


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    require(prometheus_binary() is not None, "build/prometheus (make tools)")
    victoria = built_tool("victoria-metrics")
    require(victoria is not None, "build/victoria-metrics (make tools)")
    collector = ensure_collector()
    tmp = tmp_path_factory.mktemp("fleet-e2e")
    port = {name: free_port() for name in ("prometheus", "victoria-metrics", "fake")}
    prom_config = tmp / "prometheus.yml"
    # Nothing scraped: every series arrives by remote write. The out-of-order window is what a store needs
    # when a host's series move between gateways (README, "Past one machine").
    prom_config.write_text("global: {evaluation_interval: 1s}\nstorage:\n  tsdb:\n    out_of_order_time_window: 10m\n")
    stores = {name: f"http://127.0.0.1:{port[name]}" for name in STORES}
    fake_url = f"http://127.0.0.1:{port['fake']}"
    with ExitStack() as stack:
        stack.enter_context(background(
            [str(prometheus_binary()), f"--config.file={prom_config}", f"--storage.tsdb.path={tmp / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{port['prometheus']}", "--web.enable-remote-write-receiver"],
            log_path=tmp / "prometheus.log"))  # fmt: skip
        # VictoriaMetrics accepts out-of-order samples by default. Its queries leave out the last 30 s by default
        # (-search.latencyOffset, for scrapes still in flight) and cache results: neither suits a test that
        # writes and reads at once.
        stack.enter_context(background(
            [str(victoria), f"-httpListenAddr=127.0.0.1:{port['victoria-metrics']}", f"-storageDataPath={tmp / 'vm'}",
             "-search.latencyOffset=0s", "-search.disableCache", "-retentionPeriod=1d"],
            log_path=tmp / "victoria-metrics.log"))  # fmt: skip
        stack.enter_context(background(
            [str(BIN / "python"), str(ROOT / "examples" / "fake_services.py"), "--port", str(port["fake"])],
            log_path=tmp / "fake.log"))  # fmt: skip
        wait_until(lambda: http("GET", stores["prometheus"] + "/-/ready")[0] == 200, what="prometheus ready")
        wait_until(lambda: http("GET", stores["victoria-metrics"] + "/health")[0] == 200, what="victoria-metrics")
        wait_until(lambda: http("GET", fake_url + "/health")[0] == 200, what="fake services")
        second = _second_store(tmp, f"{stores['victoria-metrics']}/api/v1/write")

        gateways = []
        for i in range(2):
            grpc, health = free_port(), free_port()
            env = _collector_env(
                OTEL_RELIABILITY_COLLECTOR_GRPC_ENDPOINT=f"127.0.0.1:{grpc}",
                OTEL_RELIABILITY_COLLECTOR_HEALTH_ENDPOINT=f"127.0.0.1:{health}",
                OTEL_RELIABILITY_REMOTE_WRITE_URL=f"{stores['prometheus']}/api/v1/write",
            )
            gateways.append(Gateway(collector, env, f"http://127.0.0.1:{health}/", tmp / f"gateway-{i}.log", second))
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
        yield Fleet(stores, fake_url, apps, gateways, tmp)
        http("POST", fake_url + "/control/reset")


def _requests_counted(fleet: Fleet, store: str) -> dict[str, float]:
    expr = f'sum by (job) (http_server_request_duration_seconds_count{{http_route="{ROUTE}"}})'
    return fleet.by_job(expr, store=store)


def _all_counted(fleet: Fleet) -> bool:
    return all(_requests_counted(fleet, store) == fleet.sent for store in STORES)


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
    closed = 'circuit_breaker_state{circuit_breaker_name="elevenlabs", circuit_breaker_state="closed"} == 1'
    _, body = get_json(fleet.apps["studio"].url + "/api/health/live")
    for store in STORES:
        jobs = wait_until(lambda s=store: fleet.by_job(open_, store=s), timeout=60, interval=1,
                          what=f"open breaker remote-written to {store}")  # fmt: skip
        assert set(jobs) == {"studio"}, store
        # publisher reports the same breaker, closed: the series arrive per job, not merged.
        assert "publisher" in wait_until(lambda s=store: fleet.by_job(closed, store=s), timeout=30, interval=1,
                                         what=f"closed breaker in {store}")  # fmt: skip
        # job/instance come from service.name/service.instance.id, as on every other path.
        instances = {r["metric"]["instance"] for r in fleet.query('circuit_breaker_state{job="studio"}', store=store)}
        assert instances == {body["service"]["instance_id"]}, store


@pytest.mark.integration
@pytest.mark.timeout(300)
def test_both_gateways_away_for_5_seconds_lose_no_request(fleet: Fleet) -> None:
    for service in SERVICES:
        fleet.send(service, 20)
    wait_until(lambda: _all_counted(fleet), timeout=60, interval=1, what="first requests in both stores")

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

    wait_until(lambda: _all_counted(fleet), timeout=90, interval=1, what=f"every request counted ({fleet.sent})")
    for store in STORES:
        assert _requests_counted(fleet, store) == fleet.sent, store

    def samples_inside_outage(store: str) -> dict[str, int]:
        # The raw samples (a range selector at one instant), not count_over_time: the stores' window edges differ.
        window = f"{time.time() - stopped + 5:.0f}s"
        rows = fleet.query(f'http_server_request_duration_seconds_count{{http_route="{ROUTE}"}}[{window}]', store=store)
        inside: dict[str, int] = {}
        for row in rows:
            n = sum(1 for ts, _ in row["values"] if stopped + 0.5 < float(ts) < restarted - 0.5)
            inside[row["metric"]["job"]] = max(inside.get(row["metric"]["job"], 0), n)
        return inside

    # Not only the totals: the samples taken while both gateways were down arrive afterwards (from the agents'
    # queues), so the outage leaves no gap in the stored series. They may land after the newest samples: each
    # of a gateway's remote-write queues sends its batches with several consumers, so an older batch can reach
    # one store a little later than the newest one does.
    for store in STORES:
        seen: dict[str, int] = {}

        def no_gap(s: str = store, seen: dict[str, int] = seen) -> bool:
            seen.update(samples_inside_outage(s))
            return set(seen) == set(SERVICES) and min(seen.values()) >= 2

        try:
            wait_until(no_gap, timeout=30, interval=1, what=f"the outage's samples in {store}")
        except AssertionError as exc:
            raise AssertionError((store, seen)) from exc
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

    def check(store: str, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(BIN / "otel-reliability"), "check", "--prometheus", fleet.stores[store], *args],
                              capture_output=True, text=True, timeout=60, env=clean)  # fmt: skip

    verdicts = {}
    for store in STORES:
        done = check(store)
        assert done.returncode == 1, (store, done.stdout + done.stderr)
        breakers = next(line for line in done.stdout.splitlines() if "] breakers " in line)
        assert "[ACTION ]" in breakers and "studio: elevenlabs on" in breakers and "publisher" not in breakers
        assert "-> elevenlabs (service studio) failed its recent calls" in done.stdout
        report = json.loads(check(store, "--json").stdout)
        verdicts[store] = {i["name"]: i["status"] for i in report["items"]}
        report = json.loads(check(store, "--job", "publisher", "--json").stdout)
        breakers_item = next(i for i in report["items"] if i["name"] == "breakers")
        assert report["services"].keys() == {"publisher"} and breakers_item["status"] == "ok", (store, report)
    # The same verdict, item by item, from either store's query API; but the error rate: MetricsQL's increase()
    # counts the first sample of a series that appears within the window (a status code's first 5xx), PromQL's
    # does not (README, "On Kubernetes").
    for verdict in verdicts.values():
        verdict.pop("error rate")
    assert verdicts["victoria-metrics"] == verdicts["prometheus"], verdicts


@pytest.mark.integration
def test_overview_services_table_has_a_row_per_service_on_remote_written_data(fleet: Fleet) -> None:
    overview = json.loads((CONFIG / "grafana" / "dashboards" / "overview.json").read_text())
    table = next(p for p in overview["panels"] if p["title"] == "Services")
    for store in STORES:
        for target in table["targets"]:
            expr = target["expr"].replace("$job", ".*").replace("$instance", ".*")
            if target["refId"] in ("A", "B", "F"):  # instances, open breakers, memory: every service has them
                rows = wait_until(
                    lambda e=expr, s=store: set(fleet.by_job(e, store=s)) >= set(SERVICES) and fleet.by_job(e, store=s),
                    timeout=30, interval=1, what=f"Services column {target['legendFormat']} in {store}",
                )  # fmt: skip
                assert set(rows) == set(SERVICES), store
        instances = table["targets"][0]["expr"].replace("$job", ".*").replace("$instance", ".*")
        assert fleet.by_job(instances, store=store) == {s: 1.0 for s in SERVICES}, store


@pytest.mark.integration
def test_remote_written_names_are_the_contract_names(fleet: Fleet) -> None:
    """The gateway path names metrics as :9464 does: every name is a contract name or one the README documents
    (no `_ratio`, no missing `_total` or unit suffix), and the core families all arrive."""
    from tests.test_stack_e2e import HISTOGRAMS, contract_metric_names

    contract = set()
    for name in contract_metric_names():
        contract |= {f"{name}_{s}" for s in ("bucket", "count", "sum")} if name in HISTOGRAMS else {name}
    families = '__name__=~"(circuit_breaker|db_client|process|operation|http_server|temp_file)_.*"'

    def names(store: str = "prometheus") -> set[str]:
        rows = fleet.query(f'group by (__name__) ({{job="studio", {families}}})', store=store)
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
    # The second store holds the very same names (it received the same samples).
    assert wait_until(lambda: names("victoria-metrics") == names() and names(), timeout=30, interval=1,
                      what="the same names in victoria-metrics")  # fmt: skip
