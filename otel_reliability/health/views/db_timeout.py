"""``GET /api/health/db-timeout``: the ``statement_timeout`` the database applies, per pool, vs the expected one.

The value is read on each new connection's first checkout (otel_reliability/instrumentation/statement_timeout.py:
never an extra checkout, never waiting in the pool queue) and exported as ``db.client.statement_timeout``; the
seconds here are that gauge from the Readings, the text is the server's own (``5min``), kept beside it because a
string is not a metric.

Body: ``statement_timeout`` (the server's text for the first PostgreSQL pool, or "not supported"),
``configured`` (true when every PostgreSQL pool's timeout equals ``OTEL_RELIABILITY_EXPECTED_STATEMENT_TIMEOUT``),
``expected_seconds`` and ``pools`` {name: {statement_timeout, seconds, configured, supported, sampled_at, error}}.
Other dialects say "not supported", which is not an error. Status: *degraded* while a PostgreSQL pool runs with a
different timeout (0 = none at all: one runaway query can hold its locks for hours); healthy otherwise.
"""

from __future__ import annotations

from typing import Any

from otel_reliability import semconv
from otel_reliability.health.model import CheckContext, HealthRegistry, HealthView, Status, ViewResult
from otel_reliability.instrumentation import statement_timeout
from otel_reliability.readings import rfc3339

POOL_NAME = semconv.ATTR_DB_CLIENT_CONNECTION_POOL_NAME
NOT_SUPPORTED = "not supported"


def compute(ctx: CheckContext) -> ViewResult:
    snap = ctx.readings.snapshot()
    expected = float(ctx.settings.expected_statement_timeout)
    texts = statement_timeout.server_settings()
    names = {str(p.attributes.get(POOL_NAME)) for p in snap.points(semconv.METRIC_DB_CLIENT_CONNECTION_COUNT)} | set(
        texts
    )
    pools: dict[str, dict[str, Any]] = {}
    for name in sorted(names):
        reading = texts.get(name)
        seconds = snap.value(semconv.METRIC_DB_CLIENT_STATEMENT_TIMEOUT, {POOL_NAME: name})
        if reading is not None and not reading.supported:
            pools[name] = {"supported": False, "statement_timeout": NOT_SUPPORTED, "dialect": reading.dialect}
            continue
        if reading is None and seconds is None:
            pools[name] = {"supported": None, "statement_timeout": None, "note": "not read yet"}
            continue
        pools[name] = {
            "supported": True,
            "statement_timeout": reading.shown if reading else None,
            "seconds": seconds,
            "configured": seconds is not None and abs(seconds - expected) < 1e-6,
            "sampled_at": rfc3339(reading.sampled_at) if reading and reading.sampled_at else None,
            "error": reading.error if reading else None,
        }
    read = {n: p for n, p in pools.items() if p.get("supported") and p.get("seconds") is not None}
    misconfigured = sorted(n for n, p in read.items() if not p["configured"])
    first = next(iter(read.values()), None)
    status = Status.DEGRADED if misconfigured else Status.HEALTHY
    output = None
    if misconfigured:
        output = "; ".join(
            f"{n}: statement_timeout {pools[n]['statement_timeout']} ({pools[n]['seconds']:g}s), expected {expected:g}s"
            for n in misconfigured
        )
    body = {
        "statement_timeout": first["statement_timeout"] if first else NOT_SUPPORTED,
        "configured": bool(read) and not misconfigured,
        "expected_seconds": expected,
        "pools": pools,
    }
    return ViewResult(
        status=status,
        body=body,
        summary={"configured": body["configured"], "statement_timeout": body["statement_timeout"]},
        observed=(first["seconds"], "s") if first else None,
        output=output,
    )


def register(registry: HealthRegistry) -> None:
    registry.add_view(HealthView(name="db-timeout", compute=compute, protected=False, component_type="datastore"))
