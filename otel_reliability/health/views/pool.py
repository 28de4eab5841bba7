"""``GET /api/health/pool`` (health token): each database pool's use against its capacity.

Every number is read from the Readings, i.e. from the same ``db.client.connection.*`` series Prometheus
scrapes (see otel_reliability/instrumentation/pool/ for how each pool class reports them):

- current: checked_out (``count{state=used}``), idle (``count{state=idle}``), overflow (open connections beyond
  ``pool_size``: used + idle - ``idle.max``, never negative), pending (``pending_requests``), timeouts
  (``timeouts`` since start);
- configuration: pool_size (``idle.max``), max_overflow (``max`` - ``idle.max``), timeout (``wait_timeout``,
  seconds), total_capacity (``max``); null for a pool without a bound (NullPool, StaticPool,
  ``max_overflow=-1``), which then has no utilization either, rather than a made-up one;
- utilization_percent = checked_out / total_capacity * 100; warning when above
  ``OTEL_RELIABILITY_POOL_WARN_UTILIZATION`` (default 80).

- wait_time_p95_seconds: the 95th percentile of the time checkouts waited for a connection over the last
  ``OTEL_RELIABILITY_ERROR_WINDOW`` seconds (``wait_time_window_seconds``), from the buckets of
  ``db.client.connection.wait_time`` (as ``histogram_quantile`` reads them); null without checkouts in the window,
  and under a prefork server (the host's combined readings keep no buckets);
- connection_errors: connections that could not be opened or were found lost (``db.client.connection.errors``)
  in the last ``RECENT_SECONDS`` and since start, by error type.

Aggregate status: *degraded* while a pool warns (approaching its limit: watch it, consider more connections) or
while connections fail; *unhealthy* while connections fail and no checkout succeeded in the
last ``RECENT_SECONDS`` (no connection can be had: the database is down or unreachable). A connection error
marks the Readings stale, so the next health call shows it; the status recovers ``RECENT_SECONDS`` (plus at most
one snapshot interval) after the last error.
"""

from __future__ import annotations

from typing import Any

from otel_reliability import semconv
from otel_reliability.health.model import CheckContext, HealthRegistry, HealthView, Status, ViewResult
from otel_reliability.readings import Point, Snapshot, quantile

POOL_NAME = semconv.ATTR_DB_CLIENT_CONNECTION_POOL_NAME
STATE = semconv.ATTR_DB_CLIENT_CONNECTION_STATE
ERRORS = semconv.METRIC_DB_CLIENT_CONNECTION_ERRORS
CHECKOUTS = semconv.METRIC_DB_CLIENT_CONNECTION_WAIT_TIME  # one histogram count per successful checkout
RECENT_SECONDS = 2.0  # the status recovers within this (+ one snapshot interval + the cache time) of the last error


def _int(value: float | None) -> int | None:
    return None if value is None else round(value)


_METRICS = (
    semconv.METRIC_DB_CLIENT_CONNECTION_COUNT,
    semconv.METRIC_DB_CLIENT_CONNECTION_PENDING_REQUESTS,
    semconv.METRIC_DB_CLIENT_CONNECTION_MAX,
    semconv.METRIC_DB_CLIENT_CONNECTION_IDLE_MAX,
    semconv.METRIC_DB_CLIENT_CONNECTION_WAIT_TIMEOUT,
    semconv.METRIC_DB_CLIENT_CONNECTION_TIMEOUTS,
)


def _by_pool(snap: Snapshot) -> dict[str, dict[str, list[Point]]]:
    """Every pool metric grouped by pool once: linear in the number of series, not pools x series."""
    pools: dict[str, dict[str, list[Point]]] = {}
    for metric in _METRICS:
        for name, points in snap.group(metric, by=POOL_NAME).items():
            pools.setdefault(str(name), {})[metric] = points
    return pools


def _first(points: list[Point] | None, state: str | None = None) -> float | None:
    for p in points or ():
        if state is None or p.attributes.get(STATE) == state:
            return p.value
    return None


def _report(metrics: dict[str, list[Point]], warn_percent: float) -> dict[str, Any]:
    count = metrics.get(semconv.METRIC_DB_CLIENT_CONNECTION_COUNT)
    used = _int(_first(count, "used")) or 0
    idle = _int(_first(count, "idle")) or 0
    pending = _int(_first(metrics.get(semconv.METRIC_DB_CLIENT_CONNECTION_PENDING_REQUESTS))) or 0
    capacity = _int(_first(metrics.get(semconv.METRIC_DB_CLIENT_CONNECTION_MAX)))
    pool_size = _int(_first(metrics.get(semconv.METRIC_DB_CLIENT_CONNECTION_IDLE_MAX)))
    timeout = _first(metrics.get(semconv.METRIC_DB_CLIENT_CONNECTION_WAIT_TIMEOUT))
    timeouts = _int(sum(p.value for p in metrics.get(semconv.METRIC_DB_CLIENT_CONNECTION_TIMEOUTS, ()))) or 0
    overflow = max(0, used + idle - pool_size) if pool_size is not None else 0
    utilization = round(used / capacity * 100, 2) if capacity else None
    return {
        "current": {"checked_out": used, "idle": idle, "overflow": overflow, "pending": pending, "timeouts": timeouts},
        "configuration": {
            "pool_size": pool_size,
            "max_overflow": capacity - pool_size if capacity is not None and pool_size is not None else None,
            "timeout": timeout,
            "total_capacity": capacity,
        },
        "utilization_percent": utilization,
        "warning": utilization is not None and utilization > warn_percent,
    }


def _errors(snap: Snapshot, recent: Snapshot) -> dict[str, dict[str, Any]]:
    """Per pool: connection errors in the recent window and since start, and the recent successful checkouts."""
    out: dict[str, dict[str, Any]] = {}
    for name, points in snap.group(ERRORS, by=POOL_NAME).items():
        entry = out.setdefault(str(name), {"recent": 0, "total": 0, "types": {}, "recent_checkouts": 0})
        entry["total"] = round(sum(p.value for p in points))
    for name, points in recent.group(ERRORS, by=POOL_NAME).items():
        entry = out.setdefault(str(name), {"recent": 0, "total": 0, "types": {}, "recent_checkouts": 0})
        for p in points:
            if p.value > 0:
                entry["recent"] += round(p.value)
                kind = str(p.attributes.get(semconv.ATTR_ERROR_TYPE, "_OTHER"))
                entry["types"][kind] = entry["types"].get(kind, 0) + round(p.value)
    for name, points in recent.group(CHECKOUTS, by=POOL_NAME).items():
        if str(name) in out:
            out[str(name)]["recent_checkouts"] = round(sum(p.value for p in points))
    return out


def compute(ctx: CheckContext) -> ViewResult:
    snap = ctx.readings.snapshot()
    recent = ctx.readings.window(RECENT_SECONDS, names=(ERRORS, CHECKOUTS))
    warn = ctx.settings.pool_warn_utilization
    by_pool = _by_pool(snap)
    errors = _errors(snap, recent)
    names = sorted(
        {str(p.attributes.get(POOL_NAME)) for p in snap.points(semconv.METRIC_DB_CLIENT_CONNECTION_COUNT)} | set(errors)
    )
    pools = {name: _report(by_pool.get(name, {}), warn) for name in names}
    waits = ctx.readings.window(ctx.settings.error_window, names=(CHECKOUTS,)).group(CHECKOUTS, by=POOL_NAME)
    for name, report in pools.items():
        p95 = quantile(waits.get(name, ()), 0.95)
        report["wait_time_p95_seconds"] = None if p95 is None else round(p95, 6)
        report["wait_time_window_seconds"] = ctx.settings.error_window
        found = errors.get(name, {"recent": 0, "total": 0, "types": {}, "recent_checkouts": 0})
        report["connection_errors"] = {
            "recent": found["recent"],
            "window_seconds": RECENT_SECONDS,
            "total": found["total"],
            "types": found["types"],
        }
    failing = sorted(n for n in names if errors.get(n, {}).get("recent"))
    down = [n for n in failing if not errors[n]["recent_checkouts"]]
    warning = sorted(n for n, r in pools.items() if r["warning"])
    if down:
        status = Status.UNHEALTHY
    elif failing or warning:
        status = Status.DEGRADED
    else:
        status = Status.HEALTHY
    utilizations = [r["utilization_percent"] for r in pools.values() if r["utilization_percent"] is not None]
    highest = max(utilizations, default=None)
    reasons = [
        f"{n}: {errors[n]['recent']} connection error(s) in {RECENT_SECONDS:g}s "
        f"({', '.join(sorted(errors[n]['types']))})" + ("; no connection could be had" if n in down else "")
        for n in failing
    ]
    reasons += [f"{n} at {pools[n]['utilization_percent']}% of capacity (warn above {warn:g}%)" for n in warning]
    output = "; ".join(reasons) or None
    if not pools:
        output = "no SQLAlchemy pool seen"
    return ViewResult(
        status=status,
        body={"pools": pools, "warn_utilization_percent": warn},
        summary={"pools": len(pools), "warning": warning, "failing": failing, "max_utilization_percent": highest},
        observed=(highest, "percent") if highest is not None else None,
        output=output,
    )


def register(registry: HealthRegistry) -> None:
    registry.add_view(
        HealthView(name="pool", compute=compute, protected=True, readiness=False, component_type="datastore")
    )
