"""What the status page shows, gathered from the same views and Readings as the JSON endpoints.

``gather`` runs every registered view (as ``/api/health`` does), keeps each view's body exactly as its detail
endpoint serves it, judges them with the morning checklist (``otel_reliability.checklist``, the words of
``otel-reliability check``), and adds two things only the Readings' window history can tell:

- the error-rate sparkline: requests and errors per ``SPARK_STEP`` seconds over the last ``SPARK_SECONDS``,
  each bar the difference of two windows (``Readings.window``), so no second set of counters exists and the
  classification of an error stays ``request_errors``'s;
- for each open breaker, how long it has been open: the shortest window in which its ``transitions{state=open}``
  counter grew (a binary search over window lengths), as precise as the history's spacing at that age.

Both work alike on one process's Readings and on a prefork host's (``HostReadings.window``). The model is a
plain dict, so the renderer is a pure function of it.
"""

from __future__ import annotations

from typing import Any

from otel_reliability import checklist, request_errors, semconv
from otel_reliability.health.model import CheckContext, HealthRegistry, Status, run_views

SPARK_SECONDS = 900.0  # the sparkline's span: the last 15 minutes
SPARK_STEP = 30.0  # seconds per bar
OPEN_SEARCH_STEPS = 12  # binary-search steps for "open since": ~0.2 s resolution over 15 minutes

TRANSITIONS = semconv.METRIC_CIRCUIT_BREAKER_TRANSITIONS
BREAKER = semconv.ATTR_CIRCUIT_BREAKER_NAME
STATE = semconv.ATTR_CIRCUIT_BREAKER_STATE

_JUDGES = (
    ("circuit-breakers", checklist.breakers),
    ("error-rate", checklist.error_rate),
    ("pool", checklist.pool),
    ("resources", checklist.resources),
    ("db-timeout", checklist.statement_timeout),
)
_BUDGET = ("error-rate", checklist.error_budget)  # the last item, as in ``otel-reliability check``


async def gather(ctx: CheckContext, registry: HealthRegistry, stamp: dict[str, Any]) -> dict[str, Any]:
    """The page's model: status, stamp, checklist items, view bodies, sparkline and breaker ages."""
    settings = ctx.settings
    views = registry.views()
    results = await run_views(views, ctx)
    bodies = {name: {"status": r.status.value, **r.body} for name, r in results.items()}
    status = Status.worst([r.status for r in results.values()])
    health = settings.health_path
    items = [judge(bodies[name], f"{health}/{name}") for name, judge in _JUDGES[:3] if name in bodies]
    if "operations" in bodies:
        cleanup = f"{settings.admin_path}/stuck-operations/cleanup"
        items.append(checklist.stuck_counts(bodies["operations"], cleanup, f"{health}/operations"))
    items += [judge(bodies[name], f"{health}/{name}") for name, judge in _JUDGES[3:] if name in bodies]
    if _BUDGET[0] in bodies:
        items.append(checklist.error_budget(bodies[_BUDGET[0]], f"{health}/{_BUDGET[0]}", settings))
    breakers = (bodies.get("circuit-breakers") or {}).get("breakers") or {}
    opened = {name: _open_for(ctx, name) for name, b in breakers.items() if b.get("state") == "open"}
    return {
        "status": status.value,
        **stamp,
        "items": items,
        "views": bodies,
        "open_for": opened,
        "spark": sparkline(ctx),
        "health_path": health,
        "admin_path": settings.admin_path,
    }


def _count(ctx: CheckContext, seconds: float) -> tuple[int, int, float]:
    """(errors, requests, covered seconds) in the last ``seconds``."""
    window = ctx.readings.window(seconds, (request_errors.HTTP_SERVER_DURATION,))
    counts = request_errors.count(window, ctx.settings)
    return counts.errors, counts.total, window.covered


_memo: tuple[object, float, float, dict[str, Any]] | None = None


def sparkline(ctx: CheckContext, span: float = SPARK_SECONDS, step: float = SPARK_STEP) -> dict[str, Any]:
    """Bars oldest first: {"errors", "requests"} per step, or None where the history does not reach.

    31 windows over the HTTP series: computed once per collection, so pages open in several browsers, polling
    within the health cache time, share the work."""
    global _memo
    snap = ctx.readings.snapshot()
    memo = _memo
    if memo is not None and memo[0] is snap and memo[1:3] == (span, step):
        return memo[3]
    steps = int(span // step)
    cumulative = [_count(ctx, k * step) for k in range(steps + 1)]  # k steps back from now
    bars: list[dict[str, int] | None] = []
    for k in range(steps, 0, -1):  # the bar from k steps back to k-1 steps back
        older, newer = cumulative[k], cumulative[k - 1]
        if older[2] < (k - 1) * step + step / 2:  # the history does not reach this far back
            bars.append(None)
            continue
        bars.append({"errors": max(0, older[0] - newer[0]), "requests": max(0, older[1] - newer[1])})
    result = {"step_seconds": step, "span_seconds": span, "bars": bars}
    _memo = (snap, span, step, result)
    return result


def _opened_within(ctx: CheckContext, name: str, seconds: float) -> bool:
    window = ctx.readings.window(seconds, (TRANSITIONS,))
    return any(p.value >= 1 for p in window.points(TRANSITIONS, {BREAKER: name, STATE: "open"}))


def _open_for(ctx: CheckContext, name: str) -> dict[str, Any]:
    """Seconds since the breaker last opened, as {"seconds", "at_least"}: ``at_least`` when it opened before the
    history reaches (or before this process saw it)."""
    longest = SPARK_SECONDS
    if not _opened_within(ctx, name, longest):
        covered = ctx.readings.window(longest, (TRANSITIONS,)).covered
        return {"seconds": round(covered), "at_least": True}
    low, high = 0.0, longest
    for _ in range(OPEN_SEARCH_STEPS):
        middle = (low + high) / 2
        if _opened_within(ctx, name, middle):
            high = middle
        else:
            low = middle
    return {"seconds": round(high, 1), "at_least": False}
