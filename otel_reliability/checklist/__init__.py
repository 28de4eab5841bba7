"""The morning checklist's judgement: one item per health view, from the body that view serves.

``otel-reliability check --url`` fetches the bodies over HTTP, the status page (``/api/health/ui``) computes
them in the process; both hand them to the functions here, so the verdict and the advice are the same words
whichever way a person looks. A body is what ``GET {health}/<view>`` answers (``status`` included). The fleet
check judges Prometheus series instead and shares only the advice (``advice.py``).

Below the CLI and the health views (it imports only the standard library, ``config`` and ``slo``): both floors
use it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from otel_reliability import config, slo
from otel_reliability.checklist import advice
from otel_reliability.checklist.advice import duration

# ADVICE: a recommendation about the configuration (a statement_timeout disabled by the database's default, with
# no expectation declared): shown with what to do, but nothing is wrong with the service, so no action is needed.
OK, ACTION, SKIPPED, ERROR, ADVICE = "ok", "action", "skipped", "error", "advice"
HEALTH_TOKEN_ENV = config.HEALTH_TOKEN.name  # the variables are named once, in config
ADMIN_TOKEN_ENV = config.ADMIN_TOKEN.name


@dataclass
class Item:
    """One line of the checklist."""

    name: str
    status: str
    summary: str
    action: str | None = None
    endpoint: str | None = None
    http_status: int | None = None
    details: Any = None

    @property
    def needs_action(self) -> bool:
        return self.status in (ACTION, ERROR)


def needs_action(body: Mapping[str, Any]) -> bool:
    """The view itself says something is wrong."""
    return body.get("status") in ("degraded", "unhealthy")


def breakers(body: Mapping[str, Any], endpoint: str | None = None) -> Item:
    found: Mapping[str, Any] = body.get("breakers") or {}
    states = {name: str((info or {}).get("state", "unknown")) for name, info in found.items()}
    open_ = sorted(n for n, s in states.items() if s == "open")
    half = sorted(n for n, s in states.items() if s == "half_open")
    unknown = sorted(n for n, s in states.items() if s not in ("open", "half_open", "closed"))
    if not found:
        return Item("breakers", OK, "no circuit breakers in this app", None, endpoint, 200, body)
    if not (open_ or half or unknown) and not needs_action(body):
        return Item("breakers", OK, f"{len(found)} breakers, all closed", None, endpoint, 200, body)
    parts = []
    if open_:
        parts.append(f"{len(open_)} of {len(found)} open: {', '.join(_breaker_detail(n, found[n]) for n in open_)}")
    if half:
        parts.append(f"half-open (trying again): {', '.join(half)}")
    if unknown:
        parts.append(f"state unknown: {', '.join(unknown)}")
    action: str | None = None
    if open_:
        action = advice.breakers_open(open_)
    elif unknown:
        action = f"the state getter of {', '.join(unknown)} fails: look at the app's log"
    status = ACTION if (open_ or unknown or needs_action(body)) else OK
    if status == ACTION and action is None:
        action = "a breaker is not closed: watch that it closes after its reset timeout"
    return Item("breakers", status, "; ".join(parts), action, endpoint, 200, body)


def _breaker_detail(name: str, info: Mapping[str, Any]) -> str:
    """'gemini (critical; 3 failures, 15 calls rejected, retries after 30s)' from what the view knows."""
    facts = []
    if info.get("critical"):
        facts.append("critical")
    if isinstance(info.get("failure_count"), (int, float)):
        facts.append(f"{info['failure_count']:g} failures")
    rejected = (info.get("calls") or {}).get("rejected")
    if rejected:
        facts.append(f"{rejected:g} calls rejected")
    if isinstance(info.get("reset_timeout"), (int, float)):
        facts.append(f"tries again {info['reset_timeout']:g}s after opening")
    return f"{name} ({', '.join(facts)})" if facts else name


def error_rate(body: Mapping[str, Any], endpoint: str | None = None) -> Item:
    rate = body.get("error_rate_percent", 0)
    total = body.get("total_requests", 0)
    window = body.get("window_seconds")
    threshold = body.get("threshold_percent")
    summary = f"{rate:g}% of {total} requests failed in the last {window}s"
    if threshold is not None:
        summary += f" (threshold {threshold:g}%)"
    if not needs_action(body):
        minimum = body.get("min_requests")
        if minimum is not None and total < minimum:
            summary += f"; fewer than {minimum} requests, not judged"
        return Item("error rate", OK, summary, None, endpoint, 200, body)
    top = [r for r in body.get("top_routes") or [] if r.get("errors")]
    routes = ", ".join(f"{r.get('route')} ({advice.count(r.get('errors'), 'error')})" for r in top[:3])
    routes = routes or "see the request metrics"
    return Item("error rate", ACTION, summary, advice.error_rate(routes), endpoint, 200, body)


def pool(body: Mapping[str, Any], endpoint: str | None = None) -> Item:
    pools: Mapping[str, Any] = body.get("pools") or {}
    if not pools:
        return Item("pool", OK, "no database pools in this app", None, endpoint, 200, body)
    lines, warned = [], []
    for name, info in pools.items():
        current = info.get("current") or {}
        configuration = info.get("configuration") or {}
        used = current.get("checked_out")
        capacity = configuration.get("total_capacity")
        utilization = info.get("utilization_percent")
        text = f"{name} {utilization:g}%" if isinstance(utilization, (int, float)) else str(name)
        if used is not None and capacity:
            text += f" ({used}/{capacity} in use"
            pending = current.get("pending")
            text += f", {pending} waiting)" if pending else ")"
        lines.append(text)
        if info.get("warning"):
            warned.append(str(name))
    status = ACTION if (warned or needs_action(body)) else OK
    action = advice.pool_full(", ".join(warned) or "a pool") if status == ACTION else None
    return Item("pool", status, "; ".join(lines), action, endpoint, 200, body)


def stuck_counts(body: Mapping[str, Any], cleanup: str, endpoint: str | None = None, note: str = "") -> Item:
    """From the ``operations`` view (counts, no list: the list is an admin view)."""
    count = int(body.get("stuck_count") or 0)
    in_flight = int(body.get("in_flight") or 0)
    suffix = f"; {note}" if note else ""
    if count == 0:
        return Item("stuck operations", OK, f"none stuck ({in_flight} in flight){suffix}", None, endpoint, 200, body)
    action = advice.stuck(cleanup, in_process=False, listed=False)
    summary = f"{count} stuck ({in_flight} in flight){suffix}"
    return Item("stuck operations", ACTION, summary, action, endpoint, 200, body)


def stuck_list(body: Mapping[str, Any], cleanup: str, endpoint: str | None = None) -> Item:
    """From the admin ``stuck-operations`` list."""
    count = int(body.get("stuck_count") or 0)
    threshold = body.get("stuck_threshold_seconds")
    if count == 0 and not body.get("action_required"):
        summary = "none stuck" + (f" (threshold {duration(threshold)})" if threshold else "")
        return Item("stuck operations", OK, summary, None, endpoint, 200, body)
    listed = body.get("stuck_operations") or []
    oldest = max(listed, key=lambda r: r.get("age_seconds") or 0, default=None)
    summary = f"{count} stuck"
    if oldest:
        age = duration(oldest.get("age_seconds"))
        summary += f"; oldest: {oldest.get('name')} {oldest.get('key') or ''} for {age}"
    sources = {r.get("source") for r in listed}
    action = advice.stuck(cleanup, in_process="in_process" in sources)
    return Item("stuck operations", ACTION, summary.strip(), action, endpoint, 200, body)


def resources(body: Mapping[str, Any], endpoint: str | None = None) -> Item:
    parts = []
    if body.get("memory_mb") is not None:
        memory = f"memory {body['memory_mb']:g} MB"
        if body.get("memory_percent") is not None:
            memory += f" ({body['memory_percent']:.1f}% of limit)"
        parts.append(memory)
    if body.get("cpu_percent") is not None:
        parts.append(f"CPU {body['cpu_percent']:.0f}%")
    if body.get("open_files") is not None:
        parts.append(f"{body['open_files']} open files")
    if body.get("threads") is not None:
        parts.append(f"{body['threads']} threads")
    summary = ", ".join(parts) or "no readings"
    if not needs_action(body):
        return Item("resources", OK, summary, None, endpoint, 200, body)
    warnings = body.get("warnings")
    # The view sends {"resource", "percent", "threshold_percent", "message"} per warning: show the message.
    messages = [str(w.get("message", w.get("resource"))) for w in warnings or () if isinstance(w, dict)]
    reason = "; ".join(messages) + ": " if messages else ""
    return Item("resources", ACTION, summary, advice.resources(reason), endpoint, 200, body)


def statement_timeout_as_expected(seconds: float, declared: float | None) -> bool:
    """Whether a pool's statement_timeout is what ``OTEL_RELIABILITY_EXPECTED_STATEMENT_TIMEOUT`` asks: exactly
    the declared value; nothing declared, any timeout at all (0 disables it). One rule for the db-timeout view,
    ``check --url`` (which reads that view) and ``check --prometheus``."""
    return abs(seconds - declared) < 1e-6 if declared is not None else seconds > 0


def statement_timeout(body: Mapping[str, Any], endpoint: str | None = None) -> Item:
    value = body.get("statement_timeout")
    configured = body.get("configured")
    if body.get("advice") and not needs_action(body):  # nothing declared, and the timeout is disabled
        return Item("statement timeout", ADVICE, f"statement_timeout = {value} (disabled)",
                    advice.statement_timeout_disabled(), endpoint, 200, body)  # fmt: skip
    if configured is True and not needs_action(body):
        return Item("statement timeout", OK, f"statement_timeout = {value}", None, endpoint, 200, body)
    if (configured is None or value in (None, "not supported", "unknown")) and not needs_action(body):
        return Item("statement timeout", OK, "not applicable (no PostgreSQL pool to read it from)", None, endpoint,
                    200, body)  # fmt: skip
    if not needs_action(body):  # healthy by the app's own judgement (an app from before the advice)
        return Item("statement timeout", OK, f"statement_timeout = {value}", None, endpoint, 200, body)
    expected = body.get("expected_seconds")
    want = f"{expected}" if expected is not None else config.EXPECTED_STATEMENT_TIMEOUT.name
    summary = f"statement_timeout = {value}, expected {want}"
    return Item("statement timeout", ACTION, summary, advice.statement_timeout(expected), endpoint, 200, body)


def error_budget(
    error_rate: Mapping[str, Any], endpoint: str | None = None, settings: config.Settings | None = None
) -> Item:
    """From the app's error-rate view: the burn rate of the availability budget over its window."""
    settings = settings or config.load()
    availability = slo.objectives(settings)[0]
    total = error_rate.get("total_requests", 0) or 0
    errors = error_rate.get("error_count", 0) or 0
    window = error_rate.get("window_seconds")
    objective = f"{availability.target * 100:g}% availability objective"
    if not total:
        return Item("error budget", OK, f"no requests in the last {window}s ({objective})", None, endpoint, 200)
    burn = (errors / total) / availability.budget
    summary = (
        f"burning the {objective}'s budget at {burn:.1f}x over the last {window}s ({errors} of {total} requests "
        f"failed); the budget left over 30 days needs check --prometheus"
    )
    page = slo.BURN_ALERTS[0][3]
    minimum = error_rate.get("min_requests") or 0
    if burn < page or total < minimum:
        return Item("error budget", OK, summary, None, endpoint, 200)
    days = 30 / burn
    return Item(
        "error budget",
        ACTION,
        summary,
        advice.budget_spent(f"at this pace the 30-day budget lasts {advice.duration(days * 86400)}"),
        endpoint,
        200,
    )
