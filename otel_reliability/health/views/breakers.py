"""``GET /api/health/circuit-breakers``: every known breaker, read from the breaker metrics.

Body::

    {"status": "degraded", "open_count": 1, "unknown_count": 0, "critical_open": [],
     "breakers": {"gemini": {"state": "open", "failure_count": 3, "fail_max": 3, "reset_timeout": 30,
                             "critical": false,
                             "calls": {"success": 12, "failure": 3, "rejected": 5},
                             "transitions": {"closed": 0, "open": 1, "half_open": 0}}}}

Every number is a series of the same collection the exporters see: ``circuit_breaker.state`` (the state
whose series is 1; all 0 -> ``"unknown"``; under a prefork server the worst state any worker is in, with
``workers_by_state`` saying how many workers are in each, e.g. {"open": 3, "closed": 1}),
``circuit_breaker.consecutive_failures`` (``failure_count``; the highest worker's),
``circuit_breaker.failure_threshold`` (``fail_max``), ``circuit_breaker.reset_timeout`` (seconds),
``circuit_breaker.calls`` and ``circuit_breaker.transitions``. A value the breaker does not expose is null.

Status: healthy while every breaker is closed; degraded while any is open or half-open; unhealthy while a
breaker named in ``OTEL_RELIABILITY_CRITICAL_BREAKERS`` is open, which also makes ``/ready`` answer 503
(the service cannot do its job: take it out of rotation).
A breaker whose state cannot be read is ``"unknown"``: reported, counted in ``unknown_count``, and it does
not change the status (as Spring Boot ranks UNKNOWN), since we cannot tell whether the dependency is down.
A half-open breaker is degraded: it has been open and its trial call has not yet succeeded.
"""

from __future__ import annotations

from typing import Any

from otel_reliability.health.model import CheckContext, HealthRegistry, HealthView, Status, ViewResult
from otel_reliability.readings import Snapshot
from otel_reliability.semconv import (
    ATTR_CIRCUIT_BREAKER_NAME,
    ATTR_CIRCUIT_BREAKER_OUTCOME,
    ATTR_CIRCUIT_BREAKER_STATE,
    CIRCUIT_BREAKER_OUTCOMES,
    CIRCUIT_BREAKER_STATES,
    METRIC_CIRCUIT_BREAKER_CALLS,
    METRIC_CIRCUIT_BREAKER_CONSECUTIVE_FAILURES,
    METRIC_CIRCUIT_BREAKER_FAILURE_THRESHOLD,
    METRIC_CIRCUIT_BREAKER_RESET_TIMEOUT,
    METRIC_CIRCUIT_BREAKER_STATE,
    METRIC_CIRCUIT_BREAKER_TRANSITIONS,
)

WORST_FIRST = ("open", "half_open", "closed")


def _number(value: float | None) -> int | float | None:
    if value is None:
        return None
    return int(value) if float(value).is_integer() else value


_memo: tuple[Snapshot, frozenset[str], ViewResult] | None = None


def compute(ctx: CheckContext) -> ViewResult:
    """The view of the current collection; computed once per collection (it is a pure function of it), so the
    aggregate, the detail endpoint and repeated probes between two collections share the work."""
    global _memo
    snap = ctx.readings.snapshot()
    critical = frozenset(ctx.settings.critical_breakers)
    memo = _memo
    if memo is not None and memo[0] is snap and memo[1] == critical:
        return memo[2]
    result = _compute(snap, critical)
    _memo = (snap, critical, result)
    return result


def _compute(snap: Snapshot, critical_names: frozenset[str]) -> ViewResult:
    breakers: dict[str, dict[str, Any]] = {}
    # Each metric grouped by breaker once: linear in the number of series, not quadratic.
    by_name = {
        metric: snap.group(metric, by=ATTR_CIRCUIT_BREAKER_NAME)
        for metric in (METRIC_CIRCUIT_BREAKER_CALLS, METRIC_CIRCUIT_BREAKER_TRANSITIONS)
    }
    single = {
        metric: {name: points[0].value for name, points in snap.group(metric, by=ATTR_CIRCUIT_BREAKER_NAME).items()}
        for metric in (
            METRIC_CIRCUIT_BREAKER_CONSECUTIVE_FAILURES,
            METRIC_CIRCUIT_BREAKER_FAILURE_THRESHOLD,
            METRIC_CIRCUIT_BREAKER_RESET_TIMEOUT,
        )
    }
    for name, points in sorted(
        snap.group(METRIC_CIRCUIT_BREAKER_STATE, by=ATTR_CIRCUIT_BREAKER_NAME).items(), key=lambda item: str(item[0])
    ):
        # Under a prefork server each state's series counts the workers in that state (host readings add
        # the workers' gauges); the breaker's state is the worst one any worker is in. One process: 0 or 1.
        in_state = {p.attributes.get(ATTR_CIRCUIT_BREAKER_STATE): round(p.value) for p in points}
        current = next((s for s in WORST_FIRST if in_state.get(s, 0) > 0), None)
        calls = {
            p.attributes.get(ATTR_CIRCUIT_BREAKER_OUTCOME): p.value
            for p in by_name[METRIC_CIRCUIT_BREAKER_CALLS].get(name, ())
        }
        transitions = {
            p.attributes.get(ATTR_CIRCUIT_BREAKER_STATE): p.value
            for p in by_name[METRIC_CIRCUIT_BREAKER_TRANSITIONS].get(name, ())
        }
        breakers[str(name)] = {
            "state": current if current in CIRCUIT_BREAKER_STATES else "unknown",
            "failure_count": _number(single[METRIC_CIRCUIT_BREAKER_CONSECUTIVE_FAILURES].get(name)),
            "fail_max": _number(single[METRIC_CIRCUIT_BREAKER_FAILURE_THRESHOLD].get(name)),
            "reset_timeout": _number(single[METRIC_CIRCUIT_BREAKER_RESET_TIMEOUT].get(name)),
            "critical": name in critical_names,
            "calls": {o: _number(calls[o]) for o in CIRCUIT_BREAKER_OUTCOMES if o in calls} or None,
            "transitions": {s: _number(transitions.get(s, 0.0)) for s in CIRCUIT_BREAKER_STATES},
            "workers_by_state": {s: in_state[s] for s in CIRCUIT_BREAKER_STATES if in_state.get(s, 0) > 0},
        }
    open_names = [n for n, b in breakers.items() if b["state"] == "open"]
    half_open = [n for n, b in breakers.items() if b["state"] == "half_open"]
    unknown = [n for n, b in breakers.items() if b["state"] == "unknown"]
    critical_open = [n for n in open_names if breakers[n]["critical"]]
    if critical_open:
        status = Status.UNHEALTHY
        output = f"critical circuit breaker open: {', '.join(critical_open)}"
    elif open_names or half_open:
        status = Status.DEGRADED
        output = f"circuit breaker open: {', '.join(open_names + half_open)}"
    else:
        status = Status.HEALTHY
        output = None
    body = {
        "open_count": len(open_names),
        "half_open_count": len(half_open),
        "unknown_count": len(unknown),
        "critical_open": critical_open,
        "breakers": breakers,
    }
    summary = {"open_count": len(open_names), "open": open_names + half_open, "critical_open": critical_open}
    if unknown:
        summary["unknown"] = unknown
    return ViewResult(status, body=body, summary=summary, observed=(len(open_names), "{breaker}"), output=output)


def register(registry: HealthRegistry) -> None:
    """Add this module's views and admin actions to ``registry``."""
    registry.add_view(
        HealthView(name="circuit-breakers", compute=compute, protected=False, readiness=True, component_type="system")
    )
