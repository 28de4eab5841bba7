"""``otel-reliability check``: exit codes 0/1/2, --json with every item, token handling, against real apps."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.support import BIN, ROOT, AppProcess, Postgres, free_port, get_json, http, start_app, wait_until

sys.path.insert(0, str(ROOT / "examples"))
import fake_services

HEALTH_TOKEN = "cli-health-token"
ADMIN_TOKEN = "cli-admin-token"
ITEMS = ["breakers", "error rate", "pool", "stuck operations", "resources", "statement timeout", "error budget"]


def check(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run the installed console script, as a user would."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_RELIABILITY_")}
    return subprocess.run([str(BIN / "otel-reliability"), "check", *args], capture_output=True, text=True,
                          timeout=timeout, env={**clean, **(env or {})})  # fmt: skip


def start_example(tmp: Path, fake: ThreadingHTTPServer, **env: str) -> AppProcess:
    return start_app(
        "app.main:app",
        app_dir=ROOT / "examples",
        log_dir=tmp,
        env={
            "FAKE_SERVICES_URL": f"http://127.0.0.1:{fake.server_address[1]}",
            "DATABASE_URL": f"sqlite:///{tmp / 'cli.db'}",
            "OTEL_RELIABILITY_HEALTH_TOKEN": HEALTH_TOKEN,
            "OTEL_RELIABILITY_ADMIN_TOKEN": ADMIN_TOKEN,
            **env,
        },
    )


@pytest.fixture(scope="module")
def fake() -> Iterator[ThreadingHTTPServer]:
    server = fake_services.serve(free_port())
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def healthy_app(fake: ThreadingHTTPServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppProcess]:
    """An example app nobody drives: nothing should need action. (Only read by the tests that use it.)"""
    app = start_example(tmp_path_factory.mktemp("cli-healthy"), fake)
    yield app
    app.stop()


@pytest.mark.integration
def test_healthy_app_exits_0_with_one_line_per_item(healthy_app: AppProcess) -> None:
    done = check("--url", healthy_app.url, "--token", HEALTH_TOKEN, "--admin-token", ADMIN_TOKEN)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    for item in ITEMS:
        assert any(f"] {item}" in line and "[  ok   ]" in line for line in lines), (item, done.stdout)
    assert "Nothing needs action." in done.stdout
    assert HEALTH_TOKEN not in done.stdout + done.stderr and ADMIN_TOKEN not in done.stdout + done.stderr


@pytest.mark.integration
def test_json_is_valid_and_has_every_item(healthy_app: AppProcess) -> None:
    done = check("--url", healthy_app.url, "--json", env={"OTEL_RELIABILITY_HEALTH_TOKEN": HEALTH_TOKEN,
                                                          "OTEL_RELIABILITY_ADMIN_TOKEN": ADMIN_TOKEN})  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert [item["name"] for item in report["items"]] == ITEMS
    assert report["exit_code"] == 0 and report["reachable"] is True and report["needs_action"] is False
    assert report["service"]["name"] and report["health_status"] == "healthy"
    assert all(item["status"] == "ok" for item in report["items"]), report["items"]  # tokens from the environment
    pool = next(i for i in report["items"] if i["name"] == "pool")
    assert pool["http_status"] == 200 and "example" in pool["summary"], pool


@pytest.mark.integration
def test_without_tokens_the_protected_details_are_noted_as_skipped(healthy_app: AppProcess) -> None:
    done = check("--url", healthy_app.url, "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    items = {i["name"]: i for i in json.loads(done.stdout)["items"]}
    assert "--token" in items["pool"]["summary"] and "OTEL_RELIABILITY_HEALTH_TOKEN" in items["pool"]["summary"]
    assert "--admin-token" in items["stuck operations"]["summary"]
    text = check("--url", healthy_app.url)
    assert "skipped" in text.stdout and text.returncode == 0


@pytest.mark.integration
def test_a_wrong_token_is_reported_not_crashed_on(healthy_app: AppProcess) -> None:
    done = check("--url", healthy_app.url, "--token", "not-the-token", "--admin-token", "not-the-admin-token")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    pool = next(line for line in done.stdout.splitlines() if "] pool" in line)
    stuck = next(line for line in done.stdout.splitlines() if "] stuck operations" in line)
    assert "401" in pool and "401" in stuck, done.stdout
    assert "not-the-token" not in done.stdout


@pytest.mark.integration
def test_an_open_breaker_exits_1_with_the_action(fake: ThreadingHTTPServer, tmp_path: Path) -> None:
    app = start_example(tmp_path, fake, EXAMPLE_BREAKER_RESET_TIMEOUT="120")
    fake_url = f"http://127.0.0.1:{fake.server_address[1]}"
    try:
        http("POST", f"{fake_url}/control/elevenlabs?failure_rate=1")
        for _ in range(4):
            http("POST", f"{app.url}/api/episodes/1/voice")
        done = check("--url", app.url, "--token", HEALTH_TOKEN, "--admin-token", ADMIN_TOKEN)
        assert done.returncode == 1, done.stdout + done.stderr
        line = next(line for line in done.stdout.splitlines() if "] breakers" in line)
        assert "[ACTION ]" in line and "elevenlabs" in line, done.stdout
        assert "-> elevenlabs failed" in done.stdout and "Retry-After" in done.stdout
        report = json.loads(check("--url", app.url, "--json").stdout)
        breakers = next(i for i in report["items"] if i["name"] == "breakers")
        assert report["exit_code"] == 1 and breakers["status"] == "action" and breakers["action"], breakers
    finally:
        http("POST", f"{fake_url}/control/reset")
        app.stop()


def test_nothing_listening_exits_2() -> None:
    done = check("--url", f"http://127.0.0.1:{free_port()}", "--timeout", "2")
    assert done.returncode == 2, done.stdout + done.stderr
    assert "cannot reach" in done.stderr and "Traceback" not in done.stderr
    report = json.loads(check("--url", f"http://127.0.0.1:{free_port()}", "--json", "--timeout", "2").stdout)
    assert report["exit_code"] == 2 and report["reachable"] is False and report["items"] == []


class _NotOurs(BaseHTTPRequestHandler):
    """Answers /api/health like many apps do: {"status": "ok"} with no checks or service."""

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        data = b'{"status": "ok"}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class _Silent(BaseHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        threading.Event().wait(5)  # never answers within the client's timeout


@pytest.mark.parametrize(
    ("handler", "expected"), [(_NotOurs, "not an otel-reliability app"), (_Silent, "cannot reach")]
)
def test_not_our_app_or_hanging_exits_2(handler: type[BaseHTTPRequestHandler], expected: str) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        done = check("--url", url, "--timeout", "1", timeout=20)
        assert done.returncode == 2, done.stdout + done.stderr
        assert expected in done.stderr, done.stderr
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.integration
def test_a_stock_postgresql_is_healthy_with_advice_and_degrades_only_when_expected(
    postgres: Postgres, fake: ThreadingHTTPServer, tmp_path: Path
) -> None:
    """PostgreSQL's default statement_timeout is 0. With nothing declared: healthy, the advice in the detail view
    and as a recommendation of `check` (exit 0); with OTEL_RELIABILITY_EXPECTED_STATEMENT_TIMEOUT set: degraded."""
    postgres.psql("DROP DATABASE IF EXISTS stock")
    postgres.psql(f"CREATE DATABASE stock OWNER {postgres.user}")  # no ALTER DATABASE ... SET: the stock default
    url = postgres.url("psycopg").rsplit("/", 1)[0] + "/stock"
    app = start_example(tmp_path, fake, DATABASE_URL=url)
    try:
        http("GET", app.url + "/api/episodes")  # a checkout: the pool reads statement_timeout on it

        def advised() -> dict | None:
            body = get_json(app.url + "/api/health/db-timeout")[1]
            return body if body.get("advice") else None

        detail = wait_until(advised, what="the statement_timeout advice")
        assert detail["status"] == "healthy" and detail["statement_timeout"] == "0", detail
        assert detail["expected_seconds"] is None and "ALTER DATABASE" in detail["advice"][0], detail
        aggregate = get_json(app.url + "/api/health")[1]
        assert aggregate["checks"]["db-timeout"]["status"] == "healthy", aggregate
        done = check("--url", app.url, "--token", HEALTH_TOKEN, "--admin-token", ADMIN_TOKEN)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "[advice ] statement timeout" in done.stdout and "ALTER DATABASE" in done.stdout, done.stdout
        assert "Nothing needs action." in done.stdout and "Recommended: statement timeout" in done.stdout
    finally:
        app.stop()
    expecting = start_example(tmp_path, fake, DATABASE_URL=url, OTEL_RELIABILITY_EXPECTED_STATEMENT_TIMEOUT="300")
    try:
        http("GET", expecting.url + "/api/episodes")
        wait_until(lambda: get_json(expecting.url + "/api/health/db-timeout")[1].get("status") == "degraded",
                   what="db-timeout degraded")  # fmt: skip
        assert get_json(expecting.url + "/api/health")[1]["checks"]["db-timeout"]["status"] == "degraded"
        done = check("--url", expecting.url, "--token", HEALTH_TOKEN, "--admin-token", ADMIN_TOKEN)
        assert done.returncode == 1, done.stdout + done.stderr
        assert "[ACTION ] statement timeout" in done.stdout and "expected 300.0" in done.stdout, done.stdout
    finally:
        expecting.stop()
