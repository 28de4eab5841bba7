"""The example app under opentelemetry-instrument, driven through each scenario of examples/load.py.

Each test starts the fake services and its own app (so one scenario's breaker or error burst does not leak
into another's health), runs the scenario as a user would (``python examples/load.py ...``), and checks that
the expected health change happens. The last test runs scripts/demo.sh as ``make demo`` does, without the
interactive wait.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.support import BIN, ROOT, AppProcess, free_port, get_json, http, scrape, series_value, wait_until

sys.path.insert(0, str(ROOT / "examples"))
import fake_services

pytestmark = pytest.mark.integration

HEALTH_TOKEN = "health-token-for-tests"
ADMIN_TOKEN = "admin-token-for-tests"
SERVICES = ("assemblyai", "gemini", "auphonic", "elevenlabs", "gcs")


@dataclass
class Example:
    app: AppProcess
    fake: ThreadingHTTPServer

    @property
    def fake_url(self) -> str:
        return f"http://127.0.0.1:{self.fake.server_address[1]}"

    def load(self, scenario: str, *args: str, timeout: float = 60) -> str:
        """Run a scenario of examples/load.py to its end; return its output (progress lines)."""
        cmd = [sys.executable, str(ROOT / "examples" / "load.py"), "--scenario", scenario, "--url", self.app.url,
               "--fake-url", self.fake_url, *args]  # fmt: skip
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    def health(self, view: str = "", token: str | None = None) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return get_json(f"{self.app.url}/api/health{view}", headers=headers)


@pytest.fixture
def example(app_factory: Callable[..., AppProcess], tmp_path: Path) -> Iterator[Callable[..., Example]]:
    fakes: list[ThreadingHTTPServer] = []

    def make(**env: str) -> Example:
        fake = fake_services.serve(free_port())
        fakes.append(fake)
        app = app_factory(
            "app.main:app",
            env={
                "FAKE_SERVICES_URL": f"http://127.0.0.1:{fake.server_address[1]}",
                "DATABASE_URL": f"sqlite:///{tmp_path / 'example.db'}",
                "OTEL_RELIABILITY_SNAPSHOT_INTERVAL": "0.5",
                **env,
            },
        )
        return Example(app, fake)

    yield make
    for fake in fakes:
        fake.shutdown()
        fake.server_close()


def test_steady_traffic_keeps_everything_healthy(example: Callable[..., Example]) -> None:
    ex = example()
    output = ex.load("steady", "--duration", "3", "--max-requests", "300")
    assert "[steady]" in output and "5xx" not in output, output
    status, body = ex.health()
    assert status == 200 and body["status"] == "healthy", body
    status, breakers = ex.health("/circuit-breakers")
    assert status == 200 and set(breakers["breakers"]) >= set(SERVICES), breakers  # all three kinds of breaker
    assert all(b["state"] == "closed" for b in breakers["breakers"].values()), breakers
    # A media upload goes through temp_file, gcs and run_in_transaction.
    status, user = post_json(f"{ex.app.url}/api/users", {"email": "u@example.com", "name": "U"})
    assert status == 201, user
    status, episode = post_json(f"{ex.app.url}/api/users/{user['id']}/episodes", {"title": "T"})
    multipart = (b"--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.mp3\"\r\n"
                 b"Content-Type: audio/mpeg\r\n\r\n" + b"x" * 5000 + b"\r\n--b--\r\n")  # fmt: skip
    status, _, raw = http("POST", f"{ex.app.url}/api/episodes/{episode['id']}/media", body=multipart,
                          headers={"Content-Type": "multipart/form-data; boundary=b"})  # fmt: skip
    assert status == 201, raw
    metrics = scrape(ex.app.metrics_port)
    count = series_value(metrics, "http_server_request_duration_seconds_count", http_route="/api/episodes/{episode_id}")
    assert count and count > 0


def test_outage_opens_breakers_and_degrades_health(example: Callable[..., Example]) -> None:
    ex = example(EXAMPLE_BREAKER_RESET_TIMEOUT="120")
    status, body = ex.health()
    assert body["status"] == "healthy", body
    for service in SERVICES:  # pybreaker x3, the circuitbreaker package, the hand-written one
        output = ex.load("outage", "--service", service, "--no-restore", "--duration", "3", "--max-requests", "12")
        assert "breaker is open" in output, output
    status, breakers = ex.health("/circuit-breakers")
    assert {n: b["state"] for n, b in breakers["breakers"].items() if n in SERVICES} == dict.fromkeys(SERVICES, "open")
    assert breakers["open_count"] >= 5
    status, body = ex.health()
    assert status == 200 and body["status"] == "degraded", body
    metrics = scrape(ex.app.metrics_port)
    for service in SERVICES:
        labels = {"circuit_breaker_name": service}
        assert series_value(metrics, "circuit_breaker_state", circuit_breaker_state="open", **labels) == 1, service
    # Callers are told to come back later: 503 + Retry-After + retryable, for library and hand-written breakers.
    for route in ("summarize", "publish"):
        code, headers, raw = http("POST", f"{ex.app.url}/api/episodes/1/{route}")
        assert code == 503 and int(headers.get("Retry-After") or headers.get("retry-after")) >= 1, (code, raw)
        assert b'"retryable":true' in raw.replace(b" ", b""), raw


def test_error_burst_raises_the_error_rate(example: Callable[..., Example]) -> None:
    ex = example()
    output = ex.load("error-burst", "--duration", "5", "--max-requests", "60")
    assert "5xx=" in output, output

    def degraded() -> Any:
        _status, body = ex.health("/error-rate")
        return body if body["status"] == "degraded" else None

    body = wait_until(degraded, timeout=10, what="error-rate degraded")
    assert body["error_rate_percent"] > 50 and body["error_count"] >= 50, body
    assert body["top_routes"][0]["route"] == "/api/users/{user_id}/stats", body
    assert ex.health()[1]["checks"]["error-rate"]["status"] == "degraded"


def test_pool_saturation_shows_a_pool_warning(example: Callable[..., Example]) -> None:
    ex = example(OTEL_RELIABILITY_HEALTH_TOKEN=HEALTH_TOKEN)
    cmd = [sys.executable, str(ROOT / "examples" / "load.py"), "--scenario", "pool-saturation", "--url", ex.app.url,
           "--fake-url", ex.fake_url, "--duration", "6", "--concurrency", "10", "--hold-ms", "1500"]  # fmt: skip
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as load:
        try:

            def warning() -> Any:
                _status, body = ex.health("/pool", token=HEALTH_TOKEN)
                warned = {n: p for n, p in body["pools"].items() if p.get("warning")}
                return (body, warned) if warned else None

            body, warned = wait_until(warning, timeout=15, interval=0.2, what="a pool warning")
            pool = next(iter(warned.values()))
            assert pool["utilization_percent"] >= 80, body
            assert ex.health()[1]["checks"]["pool"]["status"] != "healthy"
        finally:
            output, _ = load.communicate(timeout=60)
    assert load.returncode == 0, output


def test_stuck_job_appears_in_the_admin_view_and_cleanup_marks_it(example: Callable[..., Example]) -> None:
    ex = example(
        OTEL_RELIABILITY_ADMIN_TOKEN=ADMIN_TOKEN,
        OTEL_RELIABILITY_STUCK_THRESHOLD="1",
        OTEL_RELIABILITY_STUCK_CHECK_INTERVAL="1",
    )
    admin = f"{ex.app.url}/api/admin/monitoring/stuck-operations"
    auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    assert get_json(admin)[0] == 401
    ex.load("stuck-job", "--duration", "1.5")
    try:

        def stuck() -> Any:
            _status, body = get_json(admin, headers=auth)
            sources = {op["source"] for op in body["stuck_operations"]}
            return body if body["action_required"] and sources >= {"in_process", "database"} else None

        body = wait_until(stuck, timeout=15, interval=0.3, what="stuck jobs in the admin view")
        assert body["stuck_count"] >= 4, body  # 2 in process + 2 processing rows
        status, preview = post_json(f"{admin}/cleanup?dry_run=true", None, headers=auth)
        assert status == 200 and preview["dry_run"] is True and len(preview["marked"]) == 2, preview
        status, done = post_json(f"{admin}/cleanup", None, headers=auth)
        assert status == 200 and len(done["marked"]) == 2, done
        marked = {int(row["key"]) for row in done["marked"]}
        for episode_id in marked:
            assert get_json(f"{ex.app.url}/api/episodes/{episode_id}")[1]["status"] == "error"
    finally:
        http("POST", f"{ex.fake_url}/control/reset")  # release the hanging provider calls
    # The released jobs finish, but do not overwrite the operator's "error" (conditional update).
    wait_until(lambda: get_json(admin, headers=auth)[1]["stuck_count"] == 0, timeout=15, what="jobs to finish")
    for episode_id in marked:
        assert get_json(f"{ex.app.url}/api/episodes/{episode_id}")[1]["status"] == "error"


def test_demo_script_serves_health_and_prints_the_checklist(tmp_path: Path) -> None:
    ports = {"DEMO_APP_PORT": free_port(), "DEMO_METRICS_PORT": free_port(), "DEMO_FAKE_PORT": free_port()}
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.update({k: str(v) for k, v in ports.items()})
    env.update({"DEMO_NO_WAIT": "1", "DEMO_DURATION": "3", "DEMO_DATA_DIR": str(tmp_path), "DEMO_BIN": str(BIN)})
    app_url = f"http://127.0.0.1:{ports['DEMO_APP_PORT']}"
    with subprocess.Popen(["bash", str(ROOT / "scripts" / "demo.sh")], env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, start_new_session=True) as demo:  # fmt: skip
        try:
            wait_until(lambda: http("GET", f"{app_url}/api/health", timeout=2)[0] == 200, timeout=60,
                       what="the demo's /api/health")  # fmt: skip
            metrics = wait_until(lambda: scrape(ports["DEMO_METRICS_PORT"]), timeout=10, what="the demo's metrics")
            assert "http_server_request_duration_seconds_count" in metrics or "target_info" in metrics
            output, _ = demo.communicate(timeout=90)
        finally:
            if demo.poll() is None:
                os.killpg(demo.pid, 15)
    assert demo.returncode == 0, output
    assert "otel-reliability check of" in output, output
    assert f"{app_url}/api/health" in output and f":{ports['DEMO_METRICS_PORT']}/metrics" in output
    assert "make stack" in output
    assert "demo: stopping" in output
    # Everything it started has stopped.
    wait_until(lambda: _closed(ports["DEMO_APP_PORT"]) and _closed(ports["DEMO_FAKE_PORT"]), timeout=10,
               what="the demo's processes to stop")  # fmt: skip
    assert "TOKEN=" not in output  # the demo tokens stay in their file


def post_json(url: str, payload: Any, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    body = json.dumps(payload).encode() if payload is not None else b""
    status, _, raw = http("POST", url, body=body, headers={"Content-Type": "application/json", **(headers or {})})
    return status, json.loads(raw) if raw else None


def _closed(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0
