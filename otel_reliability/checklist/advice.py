"""The advice of the morning checklist: the same words for the same finding, whichever source found it.

One app (``otel-reliability check --url``), a fleet (``--prometheus``) and the status page (``/api/health/ui``)
judge different readings, but a person reading any of them must get the same words for the same problem: an
open breaker, a failing route, a full pool, a stuck job, a process near its limits, a missing statement
timeout. So every action text lives here, once, and each source fills in the names it found. Only the
standard library.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def breakers_open(names: Sequence[str]) -> str:
    joined = ", ".join(names)
    return (
        f"{joined} failed {plural(len(names), 'its', 'their')} recent calls: check the provider's status page and "
        f"this app's log for the errors behind it. Callers get 503 + Retry-After meanwhile; the breaker closes by "
        f"itself after a successful trial call, so no restart is needed. If it keeps reopening while the provider "
        f"is up, its timeout is too short or fail_max too low."
    )


def error_rate(routes: str) -> str:
    return (
        f"most errors come from {routes}: read the exceptions for those routes in the log or traces; if they began "
        f"with a deploy, roll it back. 502/503 on routes that call a provider usually match an open breaker above."
    )


def pool_full(names: str) -> str:
    return (
        f"{names} is nearly full: find what holds connections (slow queries; sessions kept open across calls to "
        f"external services: compare db_client_connection_use_time_seconds with request durations). Raise "
        f"pool_size/max_overflow only if the database's max_connections has room for every instance."
    )


def stuck(cleanup: str, *, in_process: bool, listed: bool = True) -> str:
    if not listed:
        return (
            f"rerun with --admin-token to list them, then POST {cleanup}?dry_run=true to preview and without "
            f"dry_run to mark the stuck database rows as error"
        )
    text = (
        f"preview with POST {cleanup}?dry_run=true, then POST {cleanup} marks the stuck database rows as error "
        f"(users can retry them)."
    )
    if in_process:
        text += " In-process operations cannot be killed: restart that worker once it has drained."
    return text + " Then find why they hung: usually a call without a timeout."


def resources(reason: str) -> str:
    return (
        f"{reason}memory that grows steadily (process_memory_usage_bytes) is a leak, a step follows one kind of "
        f"request; CPU pinned at the limit means too few workers or a hot loop; file descriptors climbing mean "
        f"unclosed files or connections. A restart buys time, not a fix."
    )


def statement_timeout(expected: Any) -> str:
    return (
        f"set it on the server, e.g. ALTER DATABASE <db> SET statement_timeout = '{seconds_literal(expected)}' "
        f"(or per role), then let the pool reconnect; without it one runaway query holds its connection and its locks "
        f"indefinitely. If the new value is intended, set OTEL_RELIABILITY_EXPECTED_STATEMENT_TIMEOUT to match."
    )


def statement_timeout_disabled() -> str:
    # The names are config's (this module imports only the standard library): ADVISED_STATEMENT_TIMEOUT and
    # EXPECTED_STATEMENT_TIMEOUT; tests/test_cli_checks.py checks they agree.
    return (
        "the database runs without a statement_timeout (PostgreSQL's default): one runaway query can hold its "
        "connection and its locks for hours. Recommended: ALTER DATABASE <db> SET statement_timeout = '300s' (or per "
        "role), then declare it with OTEL_RELIABILITY_EXPECTED_STATEMENT_TIMEOUT=300 so that health degrades if it "
        "is ever lost."
    )


def budget_spent(what: str) -> str:
    return (
        f"{what}: by the SLO's error-budget policy, put reliability first (fix the failing or slow routes, hold "
        "risky deployments) until the budget recovers; the SLO row of the overview dashboard shows since when"
    )


def stopped_reporting() -> str:
    return (
        "check that each instance named is running (its health endpoint, its process manager's log); if it runs, "
        "its metrics do not arrive: check OTEL_EXPORTER_OTLP_ENDPOINT, the agent and gateway collectors' "
        "health_check and logs, or, scraped directly, that Prometheus reaches its :9464. Until then no alert can "
        "fire for it."
    )


# --- small formatting helpers ---------------------------------------------------------------------------------


def plural(n: int, one: str, many: str) -> str:
    return one if n == 1 else many


def count(n: Any, noun: str) -> str:
    """``1 error``, ``3 errors`` (``n`` as a JSON body gives it: an int, a float, or missing)."""
    number = f"{n:.0f}" if isinstance(n, (int, float)) else "?"
    return f"{number} {noun}" if number == "1" else f"{number} {noun}s"


def duration(seconds: Any) -> str:
    if not isinstance(seconds, (int, float)):
        return "?"
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def seconds_literal(expected: Any) -> str:
    return f"{expected:g}s" if isinstance(expected, (int, float)) else "300s"
