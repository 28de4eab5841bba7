"""``GET /api/health/pool`` (health token): each database pool's use against its capacity.

Every number is read from the Readings, i.e. from the same ``db.client.connection.*`` series Prometheus
scrapes (see otel_reliability/instrumentation/pool.py for how each pool class reports them):

- current: checked_out (``count{state=used}``), idle (``count{state=idle}``), overflow (open connections beyond
  ``pool_size``: used + idle - ``idle.max``, never negative), pending (``pending_requests``), timeouts
  (``timeouts`` since start);
- configuration: pool_size (``idle.max``), max_overflow (``max`` - ``idle.max``), timeout (``wait_timeout``,
  seconds), total_capacity (``max``); null for a pool without a bound (NullPool, StaticPool,
  ``max_overflow=-1``), which then has no utilization either, rather than a made-up one;
- utilization_percent = checked_out / total_capacity * 100; warning when above
  ``OTEL_RELIABILITY_POOL_WARN_UTILIZATION`` (default 80).

Aggregate status: *degraded* while a pool warns (the seed's "approaching the limit: monitor closely, consider more
connections"), never unhealthy: a busy pool still serves.
"""

from __future__ import annotations

from typing import Any

from otel_reliability.health.model import CheckContext, HealthRegistry, HealthView, Status, ViewResult
from otel_reliability.readings import Point, Snapshot

POOL_NAME = "db.client.connection.pool.name"
STATE = "db.client.connection.state"


def _int(value: float | None) -> int | None:
    return None if value is None else round(value)


_METRICS = (
    "db.client.connection.count",
    "db.client.connection.pending_requests",
    "db.client.connection.max",
    "db.client.connection.idle.max",
    "db.client.connection.wait_timeout",
    "db.client.connection.timeouts",
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
    count = metrics.get("db.client.connection.count")
    used = _int(_first(count, "used")) or 0
    idle = _int(_first(count, "idle")) or 0
    pending = _int(_first(metrics.get("db.client.connection.pending_requests"))) or 0
    capacity = _int(_first(metrics.get("db.client.connection.max")))
    pool_size = _int(_first(metrics.get("db.client.connection.idle.max")))
    timeout = _first(metrics.get("db.client.connection.wait_timeout"))
    timeouts = _int(sum(p.value for p in metrics.get("db.client.connection.timeouts", ()))) or 0
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


def compute(ctx: CheckContext) -> ViewResult:
    snap = ctx.readings.snapshot()
    warn = ctx.settings.pool_warn_utilization
    by_pool = _by_pool(snap)
    names = sorted({str(p.attributes.get(POOL_NAME)) for p in snap.points("db.client.connection.count")})
    pools = {name: _report(by_pool.get(name, {}), warn) for name in names}
    warning = sorted(n for n, r in pools.items() if r["warning"])
    status = Status.DEGRADED if warning else Status.HEALTHY
    utilizations = [r["utilization_percent"] for r in pools.values() if r["utilization_percent"] is not None]
    highest = max(utilizations, default=None)
    output = None
    if warning:
        output = "; ".join(
            f"{n} at {pools[n]['utilization_percent']}% of capacity (warn above {warn:g}%)" for n in warning
        )
    elif not pools:
        output = "no SQLAlchemy pool seen"
    return ViewResult(
        status=status,
        body={"pools": pools, "warn_utilization_percent": warn},
        summary={"pools": len(pools), "warning": warning, "max_utilization_percent": highest},
        observed=(highest, "percent") if highest is not None else None,
        output=output,
    )


def register(registry: HealthRegistry) -> None:
    registry.add_view(
        HealthView(name="pool", compute=compute, protected=True, readiness=False, component_type="datastore")
    )
