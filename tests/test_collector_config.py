"""collector-config/ proven on real software: the ocb-built collector, promtool, the generated dashboards.

Self-contained (subprocesses, loopback ports picked free). Where ``CI=true`` a missing tool (go, promtool) fails
the test; elsewhere it skips with the reason.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from otel_reliability import slo
from tests.support import collector_env, free_port, promtool_binary, require

ROOT = Path(__file__).resolve().parent.parent
CONFIG_DIR = ROOT / "collector-config"
COLLECTOR = ROOT / "build" / "otelcol-reliability"
DASHBOARDS = sorted((CONFIG_DIR / "grafana" / "dashboards").glob("*.json"))

# shared/CONTRACT.md's metric names (histograms with their series suffixes), plus Prometheus's own.
CONTRACT_METRICS = {
    "circuit_breaker_state",
    "circuit_breaker_calls_total",
    "circuit_breaker_transitions_total",
    "circuit_breaker_consecutive_failures",
    "db_client_connection_count",
    "db_client_connection_max",
    "db_client_connection_idle_max",
    "db_client_connection_pending_requests",
    "db_client_connection_timeouts_total",
    "db_client_connection_errors_total",
    "db_client_transaction_retries_total",
    "db_client_statement_timeout_seconds",
    "process_cpu_utilization",
    "process_memory_usage_bytes",
    "process_memory_limit_bytes",
    "process_unix_file_descriptor_count",
    "process_thread_count",
    "operation_in_flight",
    "operation_stuck",
    "operation_oldest_age_seconds",
}
CONTRACT_HISTOGRAMS = {
    "http_server_request_duration_seconds",
    "db_client_connection_wait_time_seconds",
    "db_client_connection_use_time_seconds",
    "db_client_connection_create_time_seconds",
    "db_client_operation_duration_seconds",
}
KNOWN_METRICS = (
    CONTRACT_METRICS
    | {f"{h}_{s}" for h in CONTRACT_HISTOGRAMS for s in ("bucket", "count", "sum")}
    | {"up", "target_info"}
)
PANEL_TYPES = {"timeseries", "stat", "state-timeline", "gauge", "table"}


def collector_test(fn: Any) -> Any:
    """A test that needs the built collector: the first build on a new machine downloads ~2 GB of Go modules
    and compiles for ~5 minutes, longer than the default test timeout."""
    return pytest.mark.integration(pytest.mark.timeout(1800)(fn))


# --- helpers -----------------------------------------------------------------------------------------------


def find_go() -> str | None:
    return shutil.which("go") or ("/usr/local/go/bin/go" if os.access("/usr/local/go/bin/go", os.X_OK) else None)


def promtool() -> str:
    path = promtool_binary()
    require(path is not None, "build/promtool (make tools)")
    assert path is not None
    return path


def run(cmd: list[str], timeout: float = 120, **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, **kw)


def http_get(url: str, timeout: float = 2) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s")


def samples(exposition: str) -> list[tuple[str, dict[str, str]]]:
    """(name, labels) of every sample line of a Prometheus text exposition."""
    out = []
    for line in exposition.splitlines():
        m = SAMPLE.match(line)
        if m:
            out.append(
                (m.group(1), dict(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"', m.group(2) or "")))
            )
    return out


# --- the collector -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def collector_binary() -> Path:
    """scripts/build-collector.sh's result (cached outside the clone: seconds after the first build)."""
    if not (COLLECTOR.exists() and os.access(COLLECTOR, os.X_OK)):
        require(find_go() is not None, "go (to build the collector with ocb)")
    result = run(["bash", "scripts/build-collector.sh"], timeout=3600)
    assert result.returncode == 0, f"build-collector.sh failed:\n{result.stdout}\n{result.stderr}"
    assert COLLECTOR.is_symlink() and os.access(COLLECTOR, os.X_OK), "build/otelcol-reliability is not a runnable link"
    return COLLECTOR


@collector_test
def test_second_build_reuses_the_cached_collector(collector_binary: Path) -> None:
    start = time.monotonic()
    result = run(["bash", "scripts/build-collector.sh"], timeout=120)
    assert result.returncode == 0, result.stderr
    assert "cached collector" in result.stderr
    assert time.monotonic() - start < 10
    assert not str(collector_binary.resolve()).startswith(str(ROOT)), "the binary must live outside the clone"


@collector_test
@pytest.mark.parametrize("config", ["otelcol.yaml", "agent.yaml", "gateway.yaml"])
def test_collector_config_validates(collector_binary: Path, config: str) -> None:
    result = run([str(collector_binary), "validate", f"--config={CONFIG_DIR / config}"])
    assert result.returncode == 0, result.stdout + result.stderr


@collector_test
def test_a_config_with_an_unknown_component_fails_validation(collector_binary: Path, tmp_path: Path) -> None:
    """Validation is not a rubber stamp: the contrib loadbalancing exporter is not in the binary."""
    broken = tmp_path / "agent.yaml"
    broken.write_text((CONFIG_DIR / "agent.yaml").read_text().replace("otlp_grpc/gateway", "loadbalancing"))
    result = run([str(collector_binary), "validate", f"--config={broken}"])
    assert result.returncode != 0 and "loadbalancing" in result.stdout + result.stderr


def test_the_package_leaves_the_collector_variables_to_the_collector() -> None:
    """One environment may serve an app and its agent: the app must not refuse the agent's variables."""
    from otel_reliability import config

    shared = {
        "OTEL_RELIABILITY_GATEWAY_ENDPOINT": "dns:///gateways:4417",
        "OTEL_RELIABILITY_GATEWAY_INSECURE": "false",
        "OTEL_RELIABILITY_REMOTE_WRITE_URL": "http://mimir:8080/api/v1/push",
    }
    assert config.load(shared) == config.load({})
    with pytest.raises(config.ConfigError, match="OTEL_RELIABILITY_GATEWAY_ENDPIONT"):
        config.load({"OTEL_RELIABILITY_GATEWAY_ENDPIONT": "x"})


@collector_test
def test_agent_and_gateway_take_their_addresses_from_the_environment(collector_binary: Path) -> None:
    """The variables the README and CONTRACT.md name are the ones the configs read, with loopback defaults."""
    agent = (CONFIG_DIR / "agent.yaml").read_text()
    gateway = (CONFIG_DIR / "gateway.yaml").read_text()
    assert "endpoint: ${env:OTEL_RELIABILITY_GATEWAY_ENDPOINT:-127.0.0.1:4417}" in agent
    assert "endpoint: ${env:OTEL_RELIABILITY_REMOTE_WRITE_URL:-http://127.0.0.1:9090/api/v1/write}" in gateway
    assert "endpoint: ${env:OTEL_RELIABILITY_COLLECTOR_GRPC_ENDPOINT:-127.0.0.1:4417}" in gateway
    # The gateway names metrics as the other paths do, and keeps resource attributes off the series.
    assert "translation_strategy: UnderscoreEscapingWithSuffixes" in gateway
    assert "resource_to_telemetry_conversion" not in gateway and "resource_constant_labels" not in gateway
    for text in (agent, gateway):
        assert "0.0.0.0" not in text.split("extensions:", 1)[1]


@collector_test
def test_collector_has_exactly_the_components_of_the_config(collector_binary: Path) -> None:
    result = run([str(collector_binary), "components"])
    assert result.returncode == 0, result.stderr
    names = set(re.findall(r"^\s+- name: (\S+)$", result.stdout, re.M))
    assert names == {
        "otlp",
        "memory_limiter",
        "batch",
        "prometheus",
        "debug",
        "otlp_http",
        "nop",
        "health_check",
        "otlp_grpc",  # agent.yaml -> the gateways
        "prometheus_remote_write",  # gateway.yaml -> the store
    }
    modules = re.findall(r"module: (\S+) (v\S+)", result.stdout)
    versions = {v for m, v in modules if m.startswith("go.opentelemetry.io/collector/") and "/confmap/" not in m}
    contrib = {v for m, v in modules if m.startswith("github.com/open-telemetry/opentelemetry-collector-contrib/")}
    assert versions == {"v0.165.0"} and contrib == {"v0.165.1"}, modules


@pytest.fixture
def running_collector(collector_binary: Path, tmp_path: Path) -> Iterator[dict[str, int]]:
    ports = {name: free_port() for name in ("grpc", "http", "prometheus", "health")}
    env = {**os.environ, **collector_env(ports["grpc"], ports["http"], ports["prometheus"], ports["health"])}
    log = (tmp_path / "collector.log").open("w")
    proc = subprocess.Popen(
        [str(collector_binary), f"--config={CONFIG_DIR / 'otelcol.yaml'}"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, (tmp_path / "collector.log").read_text()
            try:
                if http_get(f"http://127.0.0.1:{ports['health']}/")[0] == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "collector health_check not ready in 30 s"
            time.sleep(0.2)
        yield ports
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
    text = (tmp_path / "collector.log").read_text()
    assert '"level":"error"' not in text and "\terror\t" not in text, text


PUSH_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.exporter.prometheus import PrometheusMetricReader
    from opentelemetry.metrics import Observation
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
    from opentelemetry.sdk.resources import Resource
    from prometheus_client import REGISTRY, generate_latest

    otlp = PeriodicExportingMetricReader(
        OTLPMetricExporter(endpoint=sys.argv[1] + "/v1/metrics"), export_interval_millis=60_000
    )
    provider = MeterProvider(
        resource=Resource.create({"service.name": "names-test", "service.instance.id": "instance-7"}),
        metric_readers=[otlp, PrometheusMetricReader()],
    )
    meter = provider.get_meter("otel_reliability.test")
    meter.create_counter("circuit_breaker.calls", unit="{call}").add(
        3, {"circuit_breaker.name": "payments", "circuit_breaker.outcome": "failure"})
    meter.create_histogram("db.client.connection.wait_time", unit="s").record(
        0.02, {"db.client.connection.pool.name": "main"})
    meter.create_histogram("db.client.operation.duration", unit="s").record(
        0.003, {"db.system.name": "postgresql", "db.operation.name": "SELECT", "db.collection.name": "orders"})
    meter.create_observable_gauge("process.memory.usage", [lambda o: [Observation(1234)]], unit="By")
    meter.create_observable_gauge("process.cpu.utilization", [lambda o: [Observation(0.25)]], unit="")
    meter.create_observable_gauge(
        "operation.oldest_age", [lambda o: [Observation(5, {"operation.name": "x"})]], unit="s")
    meter.create_observable_gauge("circuit_breaker.state", [lambda o: [
        Observation(1, {"circuit_breaker.name": "payments", "circuit_breaker.state": "open"})]], unit="")
    # Unit "1" is where the two paths differ (the collector appends _ratio): the package avoids it.
    meter.create_observable_gauge("unit_one.gauge", [lambda o: [Observation(0.5)]], unit="1")
    direct = generate_latest(REGISTRY).decode()
    assert otlp.force_flush(10_000), "OTLP export failed"
    provider.shutdown()
    print(json.dumps(direct))
    """
)

PUSHED = {
    "circuit_breaker_calls_total",
    "db_client_connection_wait_time_seconds_bucket",
    "db_client_connection_wait_time_seconds_count",
    "db_client_connection_wait_time_seconds_sum",
    "db_client_operation_duration_seconds_bucket",
    "db_client_operation_duration_seconds_count",
    "db_client_operation_duration_seconds_sum",
    "process_memory_usage_bytes",
    "process_cpu_utilization",
    "operation_oldest_age_seconds",
    "circuit_breaker_state",
}


@collector_test
def test_collector_path_names_metrics_like_the_python_exporter(running_collector: dict[str, int]) -> None:
    push = subprocess.run(
        [sys.executable, "-c", PUSH_SCRIPT, f"http://127.0.0.1:{running_collector['http']}"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert push.returncode == 0, push.stderr
    direct = {name for name, _ in samples(json.loads(push.stdout))}

    url = f"http://127.0.0.1:{running_collector['prometheus']}/metrics"
    deadline = time.monotonic() + 15
    while True:  # the batch processor forwards within ~200 ms
        status, body = http_get(url)
        via_collector = samples(body) if status == 200 else []
        names = {name for name, _ in via_collector}
        if names >= PUSHED or time.monotonic() > deadline:
            break
        time.sleep(0.3)

    assert direct >= PUSHED, f"direct path is missing {PUSHED - direct}"
    assert names >= PUSHED, f"collector path is missing {PUSHED - names}"
    # The one difference we know of, and why the package never uses unit "1".
    assert "unit_one_gauge" in direct and "unit_one_gauge_ratio" in names

    for name, labels in via_collector:
        if name in PUSHED:
            assert labels.get("job") == "names-test" and labels.get("instance") == "instance-7", (name, labels)
    calls = [labels for name, labels in via_collector if name == "circuit_breaker_calls_total"]
    assert calls and calls[0]["circuit_breaker_name"] == "payments" and calls[0]["circuit_breaker_outcome"] == "failure"


# --- Prometheus and alert rules ----------------------------------------------------------------------------


def test_prometheus_config_is_valid() -> None:
    result = run([promtool(), "check", "config", str(CONFIG_DIR / "prometheus.yml")])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "alerts.yml" in result.stdout  # the rule file is loaded from it


def test_alert_rules_are_valid() -> None:
    result = run([promtool(), "check", "rules", str(CONFIG_DIR / "alerts.yml")])
    assert result.returncode == 0, result.stdout + result.stderr


def test_alert_rule_unit_tests_pass() -> None:
    result = run([promtool(), "test", "rules", str(CONFIG_DIR / "alerts.test.yml")])
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_severity_summary_and_action_and_a_unit_test() -> None:
    # Plain text parsing (no YAML library needed): the files are laid out one rule / one check per block.
    rules = re.split(r"^\s+- alert: ", (CONFIG_DIR / "alerts.yml").read_text(), flags=re.M)[1:]
    tests = (CONFIG_DIR / "alerts.test.yml").read_text()
    fires = set(re.findall(r"alertname: (\w+)\n\s+exp_alerts:\n", tests))
    silent = set(re.findall(r"alertname: (\w+)\n\s+exp_alerts: \[\]", tests))
    assert len(rules) >= 9
    for block in rules:
        alert = block.split()[0]
        assert re.search(r"severity: (critical|warning)\n", block), alert
        assert "summary:" in block and "Action:" in block, alert
        assert alert in fires and alert in silent, f"{alert} lacks a fire and a no-fire test"
        for name in re.findall(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\{", block.split("annotations:")[0]):
            assert name in KNOWN_METRICS, f"{alert}: unknown metric {name}"


# --- Grafana dashboards ------------------------------------------------------------------------------------


def test_committed_dashboards_equal_the_generated_ones() -> None:
    result = run([sys.executable, str(CONFIG_DIR / "grafana" / "generate.py"), "--check"])
    assert result.returncode == 0, result.stderr


def all_panels() -> Iterator[tuple[str, dict[str, Any]]]:
    for path in DASHBOARDS:
        for panel in json.loads(path.read_text())["panels"]:
            yield path.name, panel


def test_dashboards_follow_the_conventions() -> None:
    assert len(DASHBOARDS) >= 6
    for path in DASHBOARDS:
        board = json.loads(path.read_text())
        assert "__inputs" not in board, path.name
        variables = {v["name"]: v for v in board["templating"]["list"]}
        assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
        for name in ("job", "instance"):
            query = variables[name]["query"]  # the SDK's model has no "definition"; Grafana reads the query
            assert "label_values(target_info" in (query["query"] if isinstance(query, dict) else query)
    for name, panel in all_panels():
        where = f"{name}: {panel['title']}"
        assert panel["type"] in PANEL_TYPES, where
        assert panel["fieldConfig"]["defaults"].get("unit"), f"{where} has no unit"
        assert panel["datasource"]["uid"] == "${datasource}", where
        assert panel["targets"], where
        for target in panel["targets"]:
            expr = target["expr"]
            assert "[$__interval]" not in expr and not re.search(r"\[\d+s\]", expr), where
            if re.search(r"\b(rate|increase)\(", expr):
                assert "$__rate_interval" in expr or "$__range" in expr or re.search(r"\[\d+[mh]\]", expr), where


SLO_RECORDED = {slo.BUDGET_REMAINING, *(slo.RATIO + window for window in slo.WINDOWS)}


def test_dashboard_queries_use_only_contract_metric_names_with_the_variables() -> None:
    for name, panel in all_panels():
        for target in panel["targets"]:
            selectors = re.findall(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\{([^}]*)\}", target["expr"])
            assert selectors, f"{name}: {panel['title']}: no metric selector"
            for metric, matchers in selectors:
                if metric in SLO_RECORDED:  # slo.yml's series: per service (job), no instance label
                    assert matchers == 'job=~"$job"', (name, panel["title"])
                    continue
                assert metric in KNOWN_METRICS, f"{name}: {panel['title']}: unknown metric {metric}"
                assert 'job=~"$job"' in matchers and 'instance=~"$instance"' in matchers, (name, panel["title"])


def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    """Each panel query, with Grafana's variables filled in, as a recording rule that promtool parses."""
    lines = ["groups:", "  - name: dashboards", "    rules:"]
    for i, (_, panel) in enumerate(all_panels()):
        for j, target in enumerate(panel["targets"]):
            expr = (
                target["expr"]
                .replace("$__rate_interval", "1m")
                .replace("$__range", "1h")
                .replace("$job", ".*")
                .replace("$instance", ".*")
            )
            lines += [f"      - record: dashboard:panel_{i}_{j}", f"        expr: {json.dumps(expr)}"]
    rules = tmp_path / "dashboard-queries.yml"
    rules.write_text("\n".join(lines) + "\n")
    result = run([promtool(), "check", "rules", str(rules)])
    assert result.returncode == 0, result.stdout + result.stderr


def test_known_metric_names_match_the_contract() -> None:
    contract = ROOT.parent / "shared" / "CONTRACT.md"
    if not contract.exists():
        pytest.skip("shared/CONTRACT.md is not beside this clone")
    names = set()
    for row in re.findall(r"^\| ([a-z_]+(?:_\*)?) \|", contract.read_text(), re.M):
        if row.endswith("_*"):
            names |= {row[:-1] + s for s in ("bucket", "count", "sum")}
        elif row != "variable":
            names.add(row)
    documented = {n for n in names if n.startswith(("circuit_", "http_", "db_", "process_", "operation_"))}
    assert documented == KNOWN_METRICS - {"up", "target_info"}
