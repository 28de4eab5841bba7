"""Stuck operations: the ``operations`` health view and the two admin actions.

- ``GET {health}/operations`` (and the ``operations`` component of the aggregate): in flight, stuck and
  oldest age per ``operation.name``, read from the Readings (``operation.in_flight``, ``operation.stuck``,
  ``operation.oldest_age``). Degraded while anything is stuck.
- ``GET {admin}/stuck-operations``: ``stuck_count`` (the Readings' ``operation.stuck`` total), the first 10
  stuck operations (name, key, age_seconds, source) and ``action_required``.
- ``POST {admin}/stuck-operations/cleanup[?dry_run=true]``: marks the stuck rows of every database-backed
  detector as error (one transaction per detector) and returns exactly what was marked; in-process operations
  cannot be killed from outside, so they are listed under ``in_process_not_killable``, not marked.

Why the list does not come from the Readings: metrics carry no keys (a key is an unbounded value and never a
label). The count is the Readings' number; the list is read right after it from the same registries the
gauges observe (the in-process registry now, the detectors' cached query results), so an operation that
finished or became stuck in between can make the list differ from the count by that one operation.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from otel_reliability import semconv
from otel_reliability.health.model import AdminAction, CheckContext, HealthRegistry, HealthView, Status, ViewResult
from otel_reliability.instrumentation import operations, stuck

LIST_SIZE = 10


def compute(ctx: CheckContext) -> ViewResult:
    snap = ctx.readings.snapshot()
    per_name: dict[str, dict[str, float]] = {}
    for metric, field in (
        (semconv.METRIC_OPERATION_IN_FLIGHT, "in_flight"),
        (semconv.METRIC_OPERATION_STUCK, "stuck"),
        (semconv.METRIC_OPERATION_OLDEST_AGE, "oldest_age_seconds"),
    ):
        for name, points in snap.group(metric, by=operations.NAME_ATTR).items():
            entry = per_name.setdefault(str(name), {"in_flight": 0, "stuck": 0, "oldest_age_seconds": 0.0})
            value = sum(p.value for p in points) if field != "oldest_age_seconds" else max(p.value for p in points)
            entry[field] = round(value, 3) if field == "oldest_age_seconds" else int(value)
    stuck_count = int(snap.total(semconv.METRIC_OPERATION_STUCK))
    in_flight = int(snap.total(semconv.METRIC_OPERATION_IN_FLIGHT))
    oldest = max((p.value for p in snap.points(semconv.METRIC_OPERATION_OLDEST_AGE)), default=0.0)
    status = Status.DEGRADED if stuck_count > 0 else Status.HEALTHY
    body = {
        "in_flight": in_flight,
        "stuck_count": stuck_count,
        "oldest_age_seconds": round(oldest, 3),
        "stuck_threshold_seconds": ctx.settings.stuck_threshold,
        "operations": per_name,
    }
    output = (
        f"{stuck_count} operation(s) in flight longer than {ctx.settings.stuck_threshold:g}s" if stuck_count else None
    )
    return ViewResult(
        status,
        body=body,
        summary={"stuck_count": stuck_count, "in_flight": in_flight},
        observed=(stuck_count, "{operation}"),
        output=output,
    )


def _stuck_list(ctx: CheckContext) -> list[dict[str, Any]]:
    threshold = ctx.settings.stuck_threshold
    rows: list[dict[str, Any]] = [
        {"name": op.name, "key": op.key, "age_seconds": round(age, 3), "source": "in_process"}
        for op, age in operations.stuck_in_process(threshold)
    ]
    for reading in stuck.readings():
        rows.extend({**row.as_json(), "source": "database"} for row in reading.sample)
    rows.sort(key=lambda r: -r["age_seconds"])
    return rows


def stuck_operations(ctx: CheckContext, query: Mapping[str, str]) -> dict[str, Any]:
    """``GET stuck-operations``: the count from the Readings, the first 10 from the registries."""
    if query:
        raise ValueError(f"unknown query parameter(s): {', '.join(sorted(query))}")
    snap = ctx.readings.snapshot(max_age=0.0)
    stuck_count = int(snap.total(semconv.METRIC_OPERATION_STUCK))
    listed = _stuck_list(ctx)[:LIST_SIZE] if stuck_count else []
    return {
        "stuck_count": stuck_count,
        "stuck_operations": listed,
        "action_required": stuck_count > 0,
        "stuck_threshold_seconds": ctx.settings.stuck_threshold,
        "detectors": {
            d.name: {
                "checked_seconds_ago": None if d.last is None else round(_since(d.last.checked_at), 1),
                "last_error": d.last_error,
            }
            for d in stuck.detectors()
        },
    }


def _since(monotonic_at: float) -> float:
    import time

    return time.monotonic() - monotonic_at


def _dry_run(query: Mapping[str, str]) -> bool:
    unknown = set(query) - {"dry_run"}
    if unknown:  # a typo such as ?dryrun=true must not turn a preview into a real cleanup
        raise ValueError(f"unknown query parameter(s): {', '.join(sorted(unknown))}")
    raw = query.get("dry_run", "false").strip().lower()
    if raw in ("true", "1", "yes"):
        return True
    if raw in ("false", "0", "no"):
        return False
    raise ValueError("dry_run must be true or false")


def cleanup(ctx: CheckContext, query: Mapping[str, str]) -> dict[str, Any]:
    """``POST stuck-operations/cleanup``: mark stuck database rows as error; report in-process ones."""
    dry_run = _dry_run(query)
    marked: list[dict[str, Any]] = []
    failed: list[dict[str, str]] = []
    for detector in stuck.detectors():
        try:
            marked.extend(row.as_json() for row in detector.cleanup(dry_run=dry_run))
        except Exception as exc:  # one database down must not hide the others' results
            failed.append({"name": detector.name, "error": type(exc).__name__})
    not_killable = [
        {"name": op.name, "key": op.key, "age_seconds": round(age, 3)}
        for op, age in operations.stuck_in_process(ctx.settings.stuck_threshold)
    ]
    return {
        "dry_run": dry_run,
        "marked": marked,
        "marked_count": len(marked),
        "in_process_not_killable": not_killable,
        "failed": failed,
    }


def register(registry: HealthRegistry) -> None:
    """Add the operations view and the stuck-operations admin actions to ``registry``."""
    registry.add_view(HealthView(name="operations", compute=compute, component_type="component"))
    registry.add_action(AdminAction(path="stuck-operations", method="GET", handle=stuck_operations))
    registry.add_action(AdminAction(path="stuck-operations/cleanup", method="POST", handle=cleanup))
