"""``GET /api/health/db-timeout``: the ``statement_timeout`` the database applies, per pool, vs the expected one.

The value is read on each new connection's first checkout (otel_reliability/instrumentation/statement_timeout.py:
never an extra checkout, never waiting in the pool queue) and exported as ``db.client.statement_timeout``; the
seconds here are that gauge from the Readings, the text is the server's own (``5min``), kept beside it because a
string is not a metric.

Body: ``statement_timeout`` (the server's text for the first PostgreSQL pool, or "not supported"),
``configured`` (true when every PostgreSQL pool runs with the expected timeout: the declared
``OTEL_RELIABILITY_EXPECTED_STATEMENT_TIMEOUT``, else any timeout at all), ``expected_seconds`` (the declared
value, null when none is declared), ``advice`` (a list of configuration advice, empty when there is none) and
``pools`` {name: {statement_timeout, seconds, configured, supported, sampled_at, error}}. Other dialects say
"not supported", which is not an error.

Status: *degraded* only while a PostgreSQL pool runs with another timeout than the one the user declared. A
stock install declares nothing, and PostgreSQL's default is 0 (none at all): that is advice ("one runaway query
can hold its locks for hours; set one"), shown here and as a recommendation by ``otel-reliability check``, never
a degraded health: a service is not unhealthy for running with its database's defaults.
"""

from __future__ import annotations

from typing import Any

from otel_reliability import config, semconv
from otel_reliability.checklist import statement_timeout_as_expected
from otel_reliability.health.model import CheckContext, HealthRegistry, HealthView, Status, ViewResult
from otel_reliability.instrumentation import statement_timeout
from otel_reliability.readings import rfc3339

POOL_NAME = semconv.ATTR_DB_CLIENT_CONNECTION_POOL_NAME
NOT_SUPPORTED = "not supported"


def compute(ctx: CheckContext) -> ViewResult:
    snap = ctx.readings.snapshot()
    declared = ctx.settings.expected_statement_timeout
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
            "configured": seconds is not None and statement_timeout_as_expected(seconds, declared),
            "sampled_at": rfc3339(reading.sampled_at) if reading and reading.sampled_at else None,
            "error": reading.error if reading else None,
        }
    read = {n: p for n, p in pools.items() if p.get("supported") and p.get("seconds") is not None}
    unmet = sorted(n for n, p in read.items() if not p["configured"])
    first = next(iter(read.values()), None)
    status = Status.DEGRADED if unmet and declared is not None else Status.HEALTHY
    output = None
    if declared is not None and unmet:
        output = "; ".join(
            f"{n}: statement_timeout {pools[n]['statement_timeout']} ({pools[n]['seconds']:g}s), expected {declared:g}s"
            for n in unmet
        )
    advice = [] if declared is not None else [_DISABLED.format(pool=n) for n in unmet]
    body = {
        "statement_timeout": first["statement_timeout"] if first else NOT_SUPPORTED,
        "configured": bool(read) and not unmet,
        "expected_seconds": declared,
        "advice": advice,
        "pools": pools,
    }
    summary: dict[str, Any] = {"configured": body["configured"], "statement_timeout": body["statement_timeout"]}
    if advice:
        summary["advice"] = advice
    return ViewResult(
        status=status,
        body=body,
        summary=summary,
        observed=(first["seconds"], "s") if first else None,
        output=output,
    )


_DISABLED = (
    "{pool}: statement_timeout is disabled (0): one runaway query can hold its connection and locks for hours. "
    f"Set one on the server, e.g. ALTER DATABASE <db> SET statement_timeout = '{config.ADVISED_STATEMENT_TIMEOUT:g}s', "
    f"and declare it with {config.EXPECTED_STATEMENT_TIMEOUT.name} so that health degrades if it is ever lost."
)


def register(registry: HealthRegistry) -> None:
    registry.add_view(HealthView(name="db-timeout", compute=compute, protected=False, component_type="datastore"))
