"""``otel-reliability check --prometheus``: the fleet checklist against a real Prometheus, in seconds.

Prometheus (the Debian binary, on loopback) scrapes a small exposition served here that stands in for a fleet:
two services, three instances, with the contract's metric names and labels exactly as the collector and the
gateways deliver them (job = service.name, instance = service.instance.id, kept by honor_labels). Each test
reads the real query API through the installed console script. The chain with real apps, agents, gateways and
remote write is tests/test_fleet_e2e.py.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.support import BIN, background, free_port, get_json, http, prometheus_binary, require, wait_until

ITEMS = [
    "breakers",
    "error rate",
    "pool",
    "stuck operations",
    "resources",
    "statement timeout",
    "error budget",
    "reporting",
]


@dataclass
class Exposition:
    """The fleet's metrics; every scrape advances the counters by one tick (10 requests per instance)."""

    ticks: int = 0
    gone: set[str] = field(default_factory=set)  # instances that stopped reporting
    lock: threading.Lock = field(default_factory=threading.Lock)

    def text(self) -> str:
        with self.lock:
            self.ticks += 1
            n = self.ticks
        lines: list[str] = []

        def add(name: str, value: float, job: str, instance: str, **labels: str) -> None:
            if instance in self.gone:
                return
            pairs = ",".join(f'{k}="{v}"' for k, v in {"job": job, "instance": instance, **labels}.items())
            lines.append(f"{name}{{{pairs}}} {value}")

        for job, instance in (("example", "ex-a"), ("example", "ex-b"), ("billing", "bill-1")):
            broken = instance == "ex-a"
            add("target_info", 1, job, instance, service_name=job)
            add("process_memory_usage_bytes", 950e6 if broken else 100e6, job, instance)
            add("process_memory_limit_bytes", 1e9, job, instance)
            add("process_cpu_utilization", 0.05, job, instance)
            for breaker in ("elevenlabs", "gemini"):
                state = "open" if broken and breaker == "elevenlabs" else "closed"
                for s in ("closed", "open", "half_open"):
                    add("circuit_breaker_state", int(s == state), job, instance, circuit_breaker_name=breaker,
                        circuit_breaker_state=s)  # fmt: skip
            route = {"http_route": "/api/episodes/{id}/voice", "http_request_method": "POST"}
            add("http_server_request_duration_seconds_count", 10 * n, job, instance, http_response_status_code="200",
                **route)  # fmt: skip
            if job == "example":  # half of example's requests fail on both instances
                add("http_server_request_duration_seconds_count", 10 * n, job, instance,
                    http_response_status_code="503", **route)  # fmt: skip
            pool = {"db_client_connection_pool_name": "main"}
            add("db_client_connection_count", 3 if broken else 1, job, instance, db_client_connection_state="used",
                **pool)  # fmt: skip
            add("db_client_connection_max", 3, job, instance, **pool)
            add("db_client_connection_pending_requests", 2 if broken else 0, job, instance, **pool)
            add("db_client_connection_timeouts_total", n if broken else 0, job, instance, **pool)
            add("db_client_statement_timeout_seconds", 0 if broken else 300, job, instance, **pool)
            add("operation_in_flight", 1, job, instance, operation_name="podcast_generation")
            add("operation_stuck", 1 if broken else 0, job, instance, operation_name="podcast_generation")
            add("operation_oldest_age_seconds", 9000 if broken else 3, job, instance,
                operation_name="podcast_generation")  # fmt: skip
        return "\n".join(lines) + "\n"


@dataclass
class Fleet:
    prometheus: str
    exposition: Exposition


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    require(prometheus_binary() is not None, "build/prometheus (make tools)")
    tmp = tmp_path_factory.mktemp("fleet")
    exposition = Exposition()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = exposition.text().encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port, dead_port = free_port(), free_port()
    config = tmp / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, scrape_timeout: 1s, evaluation_interval: 1s}\n"
        "scrape_configs:\n"
        "  - job_name: fleet\n    honor_labels: true\n"
        f"    static_configs: [{{targets: ['127.0.0.1:{server.server_address[1]}']}}]\n"
        # An app scraped directly whose process is gone: nothing listens there, so up == 0.
        f"  - job_name: gone\n    static_configs: [{{targets: ['127.0.0.1:{dead_port}']}}]\n"
    )
    cmd = [str(prometheus_binary()), f"--config.file={config}", f"--storage.tsdb.path={tmp / 'tsdb'}",
           f"--web.listen-address=127.0.0.1:{port}"]  # fmt: skip
    try:
        with background(cmd, log_path=tmp / "prometheus.log"):
            url = f"http://127.0.0.1:{port}"
            wait_until(lambda: http("GET", url + "/-/ready")[0] == 200, what="prometheus ready")

            def scraped_three_times() -> bool:
                _, body = get_json(url + "/api/v1/query?query=min(count_over_time(up[1m]))")
                return bool(body["data"]["result"]) and float(body["data"]["result"][0]["value"][1]) >= 3

            wait_until(scraped_three_times, timeout=30, interval=0.5, what="three scrapes")
            yield Fleet(url, exposition)
    finally:
        server.shutdown()
        server.server_close()


def check(*args: str, timeout: float = 60, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_RELIABILITY_")}
    return subprocess.run([str(BIN / "otel-reliability"), "check", *args], capture_output=True, text=True,
                          timeout=timeout, env={**clean, **(env or {})})  # fmt: skip


def line(output: str, item: str) -> str:
    return next(x for x in output.splitlines() if f"] {item} " in x)


@pytest.mark.integration
def test_fleet_checklist_names_the_service_instance_and_breaker(fleet: Fleet) -> None:
    done = check("--prometheus", fleet.prometheus)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "2 services, 3 instances" in done.stdout, done.stdout
    breakers = line(done.stdout, "breakers")
    assert "[ACTION ]" in breakers and "example: elevenlabs on ex-a" in breakers, done.stdout
    assert "gemini" not in breakers and "billing" not in breakers and "ex-b" not in breakers
    # The same advice as `check --url` gives for an open breaker.
    assert "-> elevenlabs (service example) failed its recent calls" in done.stdout and "Retry-After" in done.stdout
    # Half of example's requests fail (within increase()'s extrapolation); billing's do not.
    rate = re.search(r"example (\d+\.\d)% of \d+ requests failed", line(done.stdout, "error rate"))
    assert rate and 45 <= float(rate.group(1)) <= 55 and "billing" not in line(done.stdout, "error rate"), done.stdout
    assert "main on ex-a 100% (3/3 in use, 2 waiting)" in line(done.stdout, "pool")
    assert "checkout timeouts" in line(done.stdout, "pool")
    assert "1 podcast_generation on ex-a (oldest 2.5 h)" in line(done.stdout, "stuck operations")
    assert "ex-a memory 95% of its limit" in line(done.stdout, "resources")
    # Nothing declared (check() clears OTEL_RELIABILITY_*): a disabled timeout is a recommendation, not an action.
    assert "[advice ]" in line(done.stdout, "statement timeout")
    assert "main on ex-a 0 (none); disabled" in line(done.stdout, "statement timeout")
    assert re.search(
        r"\[ACTION \] reporting +gone: 127\.0\.0\.1:\d+ cannot be scraped$", line(done.stdout, "reporting")
    )


@pytest.mark.integration
def test_json_has_every_item_with_service_and_instance(fleet: Fleet) -> None:
    # A declared statement_timeout: the pool running without one needs action (undeclared it is advice, above).
    done = check("--prometheus", fleet.prometheus, "--json", env={"OTEL_RELIABILITY_EXPECTED_STATEMENT_TIMEOUT": "300"})
    report = json.loads(done.stdout)
    assert done.returncode == 1 and report["exit_code"] == 1 and report["needs_action"] is True
    assert report["source"] == "prometheus" and report["services"] == {"billing": ["bill-1"],
                                                                       "example": ["ex-a", "ex-b"]}  # fmt: skip
    items = {i["name"]: i for i in report["items"]}
    assert list(items) == ITEMS
    assert items["breakers"]["details"] == [
        {"job": "example", "instance": "ex-a", "breaker": "elevenlabs", "state": "open"}
    ]
    assert {i["status"] for n, i in items.items() if n != "error budget"} == {"action"}
    assert items["error budget"]["status"] == "skipped"  # this Prometheus has no SLO rules (tests/test_slo.py)
    assert [(d["job"], d["reason"]) for d in items["reporting"]["details"]] == [("gone", "scrape failing (up == 0)")]


@pytest.mark.integration
def test_job_scopes_every_item_to_one_service(fleet: Fleet) -> None:
    done = check("--prometheus", fleet.prometheus, "--job", "billing")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 service, 1 instance" in done.stdout and "Nothing needs action." in done.stdout
    assert "example" not in done.stdout and "ex-a" not in done.stdout


@pytest.mark.integration
def test_an_instance_that_stops_reporting_is_named(fleet: Fleet) -> None:
    fleet.exposition.gone.add("ex-b")
    try:

        def silent() -> str | None:
            done = check("--prometheus", fleet.prometheus, "--job", "example", "--stale-after", "2")
            out = line(done.stdout, "reporting")
            return out if "ACTION" in out else None

        out = wait_until(silent, timeout=20, interval=1, what="ex-b reported silent")
        assert "example: ex-b silent for over 2s" in out
    finally:
        fleet.exposition.gone.clear()


def test_unreachable_or_not_prometheus_or_empty_exits_2(fleet: Fleet) -> None:
    done = check("--prometheus", f"http://127.0.0.1:{free_port()}", "--timeout", "2")
    assert done.returncode == 2 and "cannot reach" in done.stderr and "Traceback" not in done.stderr
    # Prometheus's own web UI path is not a query API: the JSON is missing.
    done = check("--prometheus", fleet.prometheus + "/graph")
    assert done.returncode == 2 and "not a Prometheus query API" in done.stderr, done.stderr
    done = check("--prometheus", fleet.prometheus, "--job", "no-such-service", "--json")
    report = json.loads(done.stdout)
    assert done.returncode == 2 and report["reachable"] is False and "no-such-service" in report["problem"]


def test_bad_arguments_exit_2_with_a_message(tmp_path: Path) -> None:
    done = check("--job", "example")
    assert done.returncode == 2 and "--job needs --prometheus" in done.stderr
    done = subprocess.run([str(BIN / "otel-reliability"), "check", "--prometheus", "http://127.0.0.1:1"],
                          capture_output=True, text=True, timeout=30,
                          env={**os.environ, "OTEL_RELIABILITY_ERROR_RATE_THRESHOLD": "lots"})  # fmt: skip
    assert done.returncode == 2 and "OTEL_RELIABILITY_ERROR_RATE_THRESHOLD" in done.stderr
