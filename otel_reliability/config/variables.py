"""Every ``OTEL_RELIABILITY_*`` variable, declared once: its default, the form it accepts and what it means.

The README's configuration table lists the same variables with the same defaults (tests/test_docs.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from otel_reliability.config.variable import (
    Variable,
    _boolean,
    _directory,
    _integer,
    _names,
    _number,
    _path,
    _token,
)

HEALTH_PATH = Variable(
    "OTEL_RELIABILITY_HEALTH_PATH",
    "/api/health",
    _path,
    "a URL path starting with '/', e.g. /api/health",
)
"""Base path of the health endpoints."""
ADMIN_PATH = Variable(
    "OTEL_RELIABILITY_ADMIN_PATH",
    "/api/admin/monitoring",
    _path,
    "a URL path starting with '/', e.g. /api/admin/monitoring",
)
"""Base path of the admin endpoints."""
HEALTH_TOKEN = Variable(
    "OTEL_RELIABILITY_HEALTH_TOKEN",
    "",
    _token,
    "a bearer token of at least 8 characters without spaces",
    secret=True,
)
"""Bearer token for the protected health details (pool). Unset: those answer 401."""
ADMIN_TOKEN = Variable(
    "OTEL_RELIABILITY_ADMIN_TOKEN",
    "",
    _token,
    "a bearer token of at least 8 characters without spaces",
    secret=True,
)
"""Bearer token for the admin endpoints. Unset: admin endpoints answer 401."""
ERROR_WINDOW = Variable(
    "OTEL_RELIABILITY_ERROR_WINDOW",
    "300",
    _integer(10),
    "a whole number of seconds >= 10",
)
"""Seconds in the error-rate window."""
ERROR_RATE_THRESHOLD = Variable(
    "OTEL_RELIABILITY_ERROR_RATE_THRESHOLD",
    "1",
    _number(0, 100),
    "a percentage between 0 and 100",
)
"""Percent of requests failing (5xx or raised) in the window above which health is degraded."""
ERROR_MIN_REQUESTS = Variable(
    "OTEL_RELIABILITY_ERROR_MIN_REQUESTS",
    "20",
    _integer(1),
    "a whole number >= 1",
)
"""Requests the window must hold before the error rate can degrade health (1 error in 2 requests at 3 a.m. pages
nobody)."""
ERROR_SPIKE_THRESHOLD = Variable(
    "OTEL_RELIABILITY_ERROR_SPIKE_THRESHOLD",
    "10",
    _integer(1),
    "a whole number >= 1",
)
"""Errors within 60 s that log one ERROR line (again only after the spike has cleared)."""
POOL_WARN_UTILIZATION = Variable(
    "OTEL_RELIABILITY_POOL_WARN_UTILIZATION",
    "80",
    _number(0, 100),
    "a percentage between 0 and 100",
)
"""Percent of a pool's capacity in use above which pool health warns."""
STUCK_THRESHOLD = Variable(
    "OTEL_RELIABILITY_STUCK_THRESHOLD",
    "7200",
    _number(1),
    "a number of seconds >= 1",
)
"""Seconds after which an in-progress operation counts as stuck."""
STUCK_CHECK_INTERVAL = Variable(
    "OTEL_RELIABILITY_STUCK_CHECK_INTERVAL",
    "60",
    _number(1),
    "a number of seconds >= 1",
)
"""How often a database-backed stuck detector runs its query (never on the request path)."""


def _optional_number(minimum: float) -> Callable[[str], float | None]:
    number = _number(minimum)

    def parse(raw: str) -> float | None:
        return None if raw == "" else number(raw)

    return parse


EXPECTED_STATEMENT_TIMEOUT = Variable(
    "OTEL_RELIABILITY_EXPECTED_STATEMENT_TIMEOUT",
    "",
    _optional_number(0),
    "a number of seconds >= 0",
)
"""Seconds the database statement_timeout must be: set, a PostgreSQL pool running with another value degrades health.
Unset, nothing is expected: a disabled timeout (0) is advice (the db-timeout view, a recommendation of `check`),
never a degraded health."""
ADVISED_STATEMENT_TIMEOUT = 300.0
"""The statement_timeout the advice suggests when none is set (seconds)."""
STATEMENT_TIMEOUT_INTERVAL = Variable(
    "OTEL_RELIABILITY_STATEMENT_TIMEOUT_INTERVAL",
    "300",
    _number(1),
    "a number of seconds >= 1",
    deprecated="the PostgreSQL statement_timeout is read on each new connection's first checkout",
)
"""Deprecated and ignored (still accepted and validated, so a 0.1.0 set-up keeps starting)."""
AUTO_MOUNT = Variable(
    "OTEL_RELIABILITY_AUTO_MOUNT",
    "true",
    _boolean,
    "true or false",
)
"""Mount the health routes on every FastAPI app run under opentelemetry-instrument."""
CHECK_TIMEOUT = Variable(
    "OTEL_RELIABILITY_CHECK_TIMEOUT",
    "2",
    _number(0.01, 60),
    "a number of seconds between 0.01 and 60",
)
"""Seconds one health check may take; past that it is a failed component."""
HEALTH_CACHE = Variable(
    "OTEL_RELIABILITY_HEALTH_CACHE",
    "1",
    _number(0, 300),
    "a number of seconds between 0 and 300",
)
"""Seconds a health response may reuse the last collection for counts (collected again in the background before it is
that old, and by every scrape of :9464). A state change (breaker transition, new breaker or pool, failed
connection, operation turning stuck) is never hidden by it. 0 collects on every call."""
SNAPSHOT_INTERVAL = Variable(
    "OTEL_RELIABILITY_SNAPSHOT_INTERVAL",
    "1",
    _number(0.1, 300),
    "a number of seconds between 0.1 and 300",
)
"""Seconds between the Readings snapshots that windows (error rate) are computed from."""
CRITICAL_BREAKERS = Variable(
    "OTEL_RELIABILITY_CRITICAL_BREAKERS",
    "",
    _names,
    "a comma-separated list of breaker names",
)
"""Breakers whose OPEN state makes the service unhealthy (and /ready answer 503), not only degraded."""
BREAKER_HTTP_MAPPING = Variable(
    "OTEL_RELIABILITY_BREAKER_HTTP_MAPPING",
    "true",
    _boolean,
    "true or false",
)
"""Turn an unhandled breaker-open error in a FastAPI app into 503 + Retry-After instead of a 500."""
MEMORY_WARN_PERCENT = Variable(
    "OTEL_RELIABILITY_MEMORY_WARN_PERCENT",
    "90",
    _number(0, 100),
    "a percentage between 0 and 100",
)
"""Percent of the memory limit (cgroup, else physical) in use above which resource health warns."""
CPU_WARN_PERCENT = Variable(
    "OTEL_RELIABILITY_CPU_WARN_PERCENT",
    "90",
    _number(0, 100),
    "a percentage between 0 and 100",
)
"""Percent of the CPUs the process may use above which resource health warns."""
FD_WARN_PERCENT = Variable(
    "OTEL_RELIABILITY_FD_WARN_PERCENT",
    "80",
    _number(0, 100),
    "a percentage between 0 and 100",
)
"""Percent of the open-file soft limit in use above which resource health warns."""
PREFORK = Variable(
    "OTEL_RELIABILITY_PREFORK",
    "true",
    _boolean,
    "true or false",
)
"""Under a prefork server (gunicorn, granian, `uvicorn --workers`, `fastapi run --workers`, reloaders, hypercorn),
answer health and :9464 for every worker of the host (false: each worker answers for itself and one worker serves
:9464, as in one process)."""
HOST_DIR = Variable(
    "OTEL_RELIABILITY_HOST_DIR",
    "",
    _directory,
    "an absolute directory path",
)
"""Set by otel-reliability in a prefork master for its workers (the private directory where they publish their
readings); not for users."""

# semconv.HTTP_SERVER_DURATION_BUCKETS (config is the bottom floor and imports no semconv; tests/test_config.py
# checks they are equal):
# a latency SLI is the share of requests in the bucket at the threshold, so the threshold must be a bound.
_HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10)


def _latency_threshold(raw: str) -> float:
    value = float(raw)
    for bound in _HTTP_BUCKETS:
        if value == bound:
            return bound
    raise ValueError(raw)


SLO_AVAILABILITY = Variable(
    "OTEL_RELIABILITY_SLO_AVAILABILITY",
    "99.9",
    _number(50, 99.999),
    "a percentage between 50 and 99.999",
)
"""Availability objective: percent of HTTP requests that must not fail (5xx or raised) over 30 days; the rest is the
error budget. Read by `otel-reliability check` and `otel-reliability slo-rules`."""
SLO_LATENCY_THRESHOLD = Variable(
    "OTEL_RELIABILITY_SLO_LATENCY_THRESHOLD",
    "0.5",
    _latency_threshold,
    "seconds, one of the HTTP duration buckets " + ", ".join(f"{b:g}" for b in _HTTP_BUCKETS),
)
"""Latency objective: a request slower than this many seconds counts against the latency budget."""
SLO_LATENCY_TARGET = Variable(
    "OTEL_RELIABILITY_SLO_LATENCY_TARGET",
    "99",
    _number(50, 99.999),
    "a percentage between 50 and 99.999",
)
"""Latency objective: percent of HTTP requests that must finish within OTEL_RELIABILITY_SLO_LATENCY_THRESHOLD over 30
days."""
STARTUP_LINE = Variable(
    "OTEL_RELIABILITY_STARTUP_LINE",
    "true",
    _boolean,
    "true or false",
)
"""Print one line on stderr at start-up (version, service.name, HTTP layer and why, metrics and traces destinations,
health path, instrumentors active), whatever the app's logging configuration; false: none."""

HTTP_LAYERS = ("auto", "lean", "contrib", "native")


def _http_layer(raw: str) -> str:
    value = raw.strip().lower()
    if value not in HTTP_LAYERS:
        raise ValueError(raw)
    return value


HTTP_LAYER = Variable(
    "OTEL_RELIABILITY_HTTP_LAYER",
    "auto",
    _http_layer,
    "one of auto, lean, contrib, native",
)
"""Which one layer wraps FastAPI requests. auto: lean (the request histogram and, while spans may be sampled, the
SERVER span with propagation and exemplars), unless a contrib-only feature is asked for (old HTTP conventions,
captured headers, OTEL_RELIABILITY_HTTP_MESSAGE_SPANS); lean: always the lean middleware; contrib: always
opentelemetry-instrumentation-fastapi; native: FastAPI's own telemetry (FastAPI(telemetry=...), FastAPI >= 0.165),
with operation spans only while spans are exported."""

HTTP_MESSAGE_SPANS = Variable(
    "OTEL_RELIABILITY_HTTP_MESSAGE_SPANS",
    "false",
    _boolean,
    "true or false",
)
"""true: one span per ASGI message (contrib's `http receive` / `http send` spans) under each request's SERVER span,
as upstream does by default; this picks the contrib HTTP layer (with OTEL_RELIABILITY_HTTP_LAYER=auto). false:
none (they cost a third of a small route's throughput and carry only the message type)."""

VARIABLES: tuple[Variable[Any], ...] = (
    HEALTH_PATH, ADMIN_PATH, HEALTH_TOKEN, ADMIN_TOKEN, ERROR_WINDOW, ERROR_RATE_THRESHOLD,
    ERROR_MIN_REQUESTS, ERROR_SPIKE_THRESHOLD, POOL_WARN_UTILIZATION, STUCK_THRESHOLD, STUCK_CHECK_INTERVAL,
    EXPECTED_STATEMENT_TIMEOUT, STATEMENT_TIMEOUT_INTERVAL, AUTO_MOUNT, CHECK_TIMEOUT, HEALTH_CACHE, SNAPSHOT_INTERVAL,
    CRITICAL_BREAKERS, BREAKER_HTTP_MAPPING, MEMORY_WARN_PERCENT, CPU_WARN_PERCENT, FD_WARN_PERCENT, HTTP_LAYER,
    PREFORK, HOST_DIR, SLO_AVAILABILITY, SLO_LATENCY_THRESHOLD, SLO_LATENCY_TARGET, HTTP_MESSAGE_SPANS,
    STARTUP_LINE,
)  # fmt: skip
