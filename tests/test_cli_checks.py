"""Each ``otel-reliability check`` item on the JSON the health views actually send, without starting an app.

The end-to-end tests (test_cli.py) run a healthy app and an open breaker; the items that need action on a
pool, a statement timeout or resources were never exercised there, which hid a dict repr in the resources
advice and keys the views never send. Here every item reads a body shaped like its view's (the resources body
is the real view's output), and a static check keeps the CLI from reading keys no view writes.
"""

from __future__ import annotations

import ast
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider

from otel_reliability import config
from otel_reliability.cli import app
from otel_reliability.cli.report import ACTION, ADVICE, OK, Report, render
from otel_reliability.health.model import CheckContext
from otel_reliability.health.views import resources
from otel_reliability.instrumentation.process import ProcessInstrumentor
from otel_reliability.readings import Readings

ROOT = Path(__file__).resolve().parents[1]
PATHS = app.Paths(health="/api/health", admin="/api/admin/monitoring")
TOKENS = app.Tokens(health="h", admin="a")
STAMP = {"service": {"name": "svc", "instance_id": "i-1"}, "observed_at": "2026-01-01T00:00:00Z", "workers": 1}


class CannedClient(app.Client):
    """Answers each path with a canned body (HTTP 200), as the health routes would."""

    def __init__(self, bodies: Mapping[str, Any]) -> None:
        super().__init__("http://127.0.0.1:1", timeout=1.0)
        self.bodies = bodies

    def get(self, path: str, token: str | None = None) -> app.Reply:
        if path not in self.bodies:
            return app.Reply(404)
        return app.Reply(200, {**self.bodies[path], **STAMP})


def run(check: app.Check, path: str, body: Mapping[str, Any]) -> app.Item:
    return check(CannedClient({path: body}), PATHS, TOKENS, {"checks": {}})


def test_resources_warnings_are_the_views_messages_not_dict_reprs() -> None:
    reader = Readings(background=False)
    instrumentor = ProcessInstrumentor()
    instrumentor.instrument(meter_provider=MeterProvider(metric_readers=[reader]))
    try:
        # Any process uses more than 0.01% of its memory limit: the view warns, as it would at 90%.
        settings = config.load({"OTEL_RELIABILITY_MEMORY_WARN_PERCENT": "0.01"})
        result = resources.compute(CheckContext(readings=reader, settings=settings))
    finally:
        instrumentor.uninstrument()
    assert result.body["warnings"] and isinstance(result.body["warnings"][0], dict)
    item = run(app.check_resources, "/api/health/resources", {"status": result.status.value, **result.body})
    assert item.status == ACTION
    assert item.action is not None and item.action.startswith(result.body["warnings"][0]["message"])
    assert "{" not in item.action and "'resource'" not in item.action


def test_pool_in_use_is_read_from_checked_out() -> None:
    body = {
        "status": "degraded",
        "pools": {
            "db:5432/shop": {
                "current": {"checked_out": 9, "idle": 0, "overflow": 4, "pending": 2, "timeouts": 0},
                "configuration": {"pool_size": 5, "max_overflow": 5, "timeout": 30.0, "total_capacity": 10},
                "utilization_percent": 90.0,
                "warning": True,
            }
        },
    }
    item = run(app.check_pool, "/api/health/pool", body)
    assert item.status == ACTION
    assert item.summary == "db:5432/shop 90% (9/10 in use, 2 waiting)"


def test_statement_timeout_misconfigured_names_the_expected_seconds() -> None:
    body = {
        "status": "degraded",
        "statement_timeout": "5s",
        "configured": False,
        "expected_seconds": 300.0,
        "pools": {"db:5432/shop": {"supported": True, "statement_timeout": "5s", "seconds": 5.0, "configured": False}},
    }
    item = run(app.check_statement_timeout, "/api/health/db-timeout", body)
    assert item.status == ACTION
    assert item.summary == "statement_timeout = 5s, expected 300.0"
    assert item.action is not None and "'300s'" in item.action


def test_statement_timeout_on_a_database_without_it_is_not_applicable() -> None:
    sqlite = {"supported": False, "statement_timeout": "not supported", "dialect": "sqlite"}
    body = {"status": "healthy", "statement_timeout": "not supported", "configured": False,
            "expected_seconds": 300.0, "pools": {"sqlite::memory:": sqlite}}  # fmt: skip
    item = run(app.check_statement_timeout, "/api/health/db-timeout", body)
    assert (item.status, item.summary) == (OK, "not applicable (no PostgreSQL pool to read it from)")


def test_open_breaker_details_come_from_the_views_fields() -> None:
    body = {
        "open_count": 1,
        "half_open_count": 0,
        "unknown_count": 0,
        "critical_open": [],
        "breakers": {
            "gemini": {
                "state": "open",
                "failure_count": 3,
                "fail_max": 3,
                "reset_timeout": 30,
                "critical": False,
                "calls": {"success": 10, "failure": 3, "rejected": 15},
                "transitions": {"closed": 0, "open": 1, "half_open": 0},
                "workers_by_state": {"open": 1},
            }
        },
        "status": "degraded",
    }
    item = run(app.check_breakers, "/api/health/circuit-breakers", body)
    assert item.status == ACTION
    assert item.summary == "1 of 1 open: gemini (3 failures, 15 calls rejected, tries again 30s after opening)"


def test_error_rate_names_the_top_failing_routes() -> None:
    body = {
        "status": "degraded",
        "error_count": 30,
        "client_error_count": 0,
        "success_count": 70,
        "total_requests": 100,
        "error_rate_percent": 30.0,
        "window_seconds": 300,
        "covered_seconds": 300.0,
        "threshold_percent": 1.0,
        "min_requests": 20,
        "top_routes": [
            {"route": "/upload", "errors": 29, "client_errors": 0, "requests": 40},
            {"route": "/login", "errors": 1, "client_errors": 0, "requests": 5},
        ],
    }
    item = run(app.check_error_rate, "/api/health/error-rate", body)
    assert item.status == ACTION
    assert item.summary == "30% of 100 requests failed in the last 300s (threshold 1%)"
    assert item.action is not None and "/upload (29 errors), /login (1 error)" in item.action


def test_stuck_operations_list_names_the_oldest() -> None:
    body = {
        "stuck_count": 1,
        "stuck_threshold_seconds": 7200,
        "action_required": True,
        "stuck_operations": [{"name": "transcribe", "key": "ep-7", "age_seconds": 9000.0, "source": "in_process"}],
    }
    item = run(app.check_stuck, "/api/admin/monitoring/stuck-operations", body)
    assert item.status == ACTION
    assert item.summary.startswith("1 stuck; oldest: transcribe ep-7 for ")


# --- the keys the CLI reads exist in some view ---------------------------------------------------------------


def _read_keys(source: Path) -> set[str]:
    """String keys read from response bodies: ``x.get("key")`` and ``x["key"]`` (loads only)."""
    keys = set()
    for node in ast.walk(ast.parse(source.read_text())):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get":
            if node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
                keys.add(node.args[0].value)
        elif (
            isinstance(node, ast.Subscript)
            and isinstance(node.ctx, ast.Load)
            and isinstance(node.slice, ast.Constant)
            and isinstance(node.slice.value, str)
        ):
            keys.add(node.slice.value)
    return keys


READERS = ("cli/app.py", "checklist/__init__.py", "health/page/render.py")


def _written_strings(reader: Path) -> set[str]:
    """Every string constant in the health package and semconv (view bodies are built from these), but for the
    reader's own module (the page's renderer is in the health package)."""
    strings = set()
    for path in [*(ROOT / "otel_reliability" / "health").rglob("*.py"), ROOT / "otel_reliability" / "semconv.py"]:
        if path == reader:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                strings.add(node.value)
    return strings


@pytest.mark.parametrize("module", READERS)
def test_the_cli_and_the_status_page_read_no_key_that_no_view_writes(module: str) -> None:
    """A key no view sends makes a fallback that never runs (the CLI read "reason" and "expected", which no
    view ever sent), so the output silently differs from what the code suggests."""
    reader = ROOT / "otel_reliability" / module
    assert sorted(_read_keys(reader) - _written_strings(reader)) == []


def test_a_disabled_statement_timeout_without_expectation_is_advice_and_exit_0() -> None:
    body = {
        "status": "healthy",
        "statement_timeout": "0",
        "configured": False,
        "expected_seconds": None,
        "advice": ["db:5432/shop: statement_timeout is disabled (0) ..."],
        "pools": {"db:5432/shop": {"supported": True, "statement_timeout": "0", "seconds": 0.0, "configured": False}},
    }
    item = run(app.check_statement_timeout, "/api/health/db-timeout", body)
    assert (item.status, item.summary) == (ADVICE, "statement_timeout = 0 (disabled)")
    assert item.action is not None and "ALTER DATABASE" in item.action
    # advice.py names config's values as literals (it imports only the standard library): they must agree
    assert f"'{config.ADVISED_STATEMENT_TIMEOUT:g}s'" in item.action
    assert f"{config.EXPECTED_STATEMENT_TIMEOUT.name}={config.ADVISED_STATEMENT_TIMEOUT:g}" in item.action
    done = Report(url="http://app", reachable=True, items=[item])
    assert done.exit_code == 0 and not item.needs_action
    text = render(done)
    assert "[advice ] statement timeout" in text and "Nothing needs action." in text and "Recommended:" in text
