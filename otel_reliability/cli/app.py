"""``otel-reliability check --url``: the seed's morning checklist, run against one live app.

    otel-reliability check [--url http://127.0.0.1:8000] [--token T] [--admin-token T] [--json] [--timeout S]

The seed's routine is four curl calls read by a human. This runs them (and two more), reads the same health
views Prometheus-side alerts are built from, and prints one line per item: circuit breakers, error rate,
database pool, stuck operations, process resources, statement timeout. An item that needs attention says
what to do next. ``--json`` prints the same as one JSON document for scripts.

Tokens: ``--token`` (or ``OTEL_RELIABILITY_HEALTH_TOKEN``) opens the pool details; ``--admin-token`` (or
``OTEL_RELIABILITY_ADMIN_TOKEN``) the stuck-operations list. Without them those items fall back to what the
public ``/api/health`` says and note what was skipped; a wrong token is reported, not a crash. Tokens are sent
only as ``Authorization: Bearer`` headers and never printed.

Exit codes: 0 nothing needs action; 1 something does (including a check that could not be done, such as a
rejected token); 2 the app cannot be reached, or is not an otel-reliability app (``/api/health`` has no
``checks``/``service``). Every HTTP call has a timeout (``--timeout``, default 5 s). Only the standard library.
The items, their rendering and the advice they give are shared with the fleet check (``report.py``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from otel_reliability import config
from otel_reliability.cli import budget, http
from otel_reliability.cli import report as advice
from otel_reliability.cli.report import (
    ACTION,
    ADMIN_TOKEN_ENV,
    ERROR,
    HEALTH_TOKEN_ENV,
    OK,
    SKIPPED,
    Item,
    Report,
    duration,
)


@dataclass
class Reply:
    """One HTTP answer: ``status`` 0 means no answer at all (``error`` says why)."""

    status: int
    body: Any = None
    error: str | None = None

    @property
    def is_json_object(self) -> bool:
        return isinstance(self.body, dict)


class Client:
    """GETs JSON from the app, every call bounded by ``timeout``; never raises for HTTP or network errors."""

    def __init__(self, base_url: str, timeout: float) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout

    def get(self, path: str, token: str | None = None) -> Reply:
        headers = {"Authorization": f"Bearer {token}"} if token else None
        try:
            status, raw = http.get(self.base_url + path, self.timeout, headers)
        except http.Unreachable as exc:
            return Reply(0, error=str(exc))
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        return Reply(status, body)


# --- the items ------------------------------------------------------------------------------------------------


def _failed(name: str, endpoint: str, reply: Reply, token_hint: str | None = None) -> Item:
    """An item that could not be checked: 401 (token), 404 (view absent), 5xx or no answer."""
    if reply.status == 401:
        hint = token_hint or "the token"
        return Item(name, ERROR, "token rejected (HTTP 401)", f"check that {hint} matches the app's", endpoint, 401)
    if reply.status == 404:
        summary = "not available in this app (HTTP 404): the feature is not installed or is disabled"
        return Item(name, SKIPPED, summary, None, endpoint, 404)
    if reply.status == 0:
        return Item(name, ERROR, f"no answer ({reply.error})", "check that the app is responsive", endpoint, None)
    return Item(name, ERROR, f"HTTP {reply.status}", "look at the app's log for this endpoint", endpoint, reply.status)


def _view_needs_action(body: Mapping[str, Any]) -> bool:
    return body.get("status") in ("degraded", "unhealthy")


def check_breakers(client: Client, paths: Paths, tokens: Tokens, aggregate: Mapping[str, Any]) -> Item:
    endpoint = f"{paths.health}/circuit-breakers"
    reply = client.get(endpoint)
    if reply.status != 200 or not reply.is_json_object:
        return _failed("breakers", endpoint, reply)
    breakers: Mapping[str, Any] = reply.body.get("breakers") or {}
    states = {name: str((info or {}).get("state", "unknown")) for name, info in breakers.items()}
    open_ = sorted(n for n, s in states.items() if s == "open")
    half = sorted(n for n, s in states.items() if s == "half_open")
    unknown = sorted(n for n, s in states.items() if s not in ("open", "half_open", "closed"))
    if not breakers:
        return Item("breakers", OK, "no circuit breakers in this app", None, endpoint, 200, reply.body)
    if not (open_ or half or unknown) and not _view_needs_action(reply.body):
        return Item("breakers", OK, f"{len(breakers)} breakers, all closed", None, endpoint, 200, reply.body)
    parts = []
    if open_:
        parts.append(
            f"{len(open_)} of {len(breakers)} open: {', '.join(_breaker_detail(n, breakers[n]) for n in open_)}"
        )
    if half:
        parts.append(f"half-open (trying again): {', '.join(half)}")
    if unknown:
        parts.append(f"state unknown: {', '.join(unknown)}")
    action: str | None = None
    if open_:
        action = advice.breakers_open(open_)
    elif unknown:
        action = f"the state getter of {', '.join(unknown)} fails: look at the app's log"
    status = ACTION if (open_ or unknown or _view_needs_action(reply.body)) else OK
    if status == ACTION and action is None:
        action = "a breaker is not closed: watch that it closes after its reset timeout"
    return Item("breakers", status, "; ".join(parts), action, endpoint, 200, reply.body)


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


def check_error_rate(client: Client, paths: Paths, tokens: Tokens, aggregate: Mapping[str, Any]) -> Item:
    endpoint = f"{paths.health}/error-rate"
    reply = client.get(endpoint)
    if reply.status != 200 or not reply.is_json_object:
        return _failed("error rate", endpoint, reply)
    body = reply.body
    rate = body.get("error_rate_percent", 0)
    total = body.get("total_requests", 0)
    window = body.get("window_seconds")
    threshold = body.get("threshold_percent")
    summary = f"{rate:g}% of {total} requests failed in the last {window}s"
    if threshold is not None:
        summary += f" (threshold {threshold:g}%)"
    if not _view_needs_action(body):
        minimum = body.get("min_requests")
        if minimum is not None and total < minimum:
            summary += f"; fewer than {minimum} requests, not judged"
        return Item("error rate", OK, summary, None, endpoint, 200, body)
    top = [r for r in body.get("top_routes") or [] if r.get("errors")]
    routes = ", ".join(f"{r.get('route')} ({r.get('errors')} errors)" for r in top[:3]) or "see the request metrics"
    action = advice.error_rate(routes)
    return Item("error rate", ACTION, summary, action, endpoint, 200, body)


def check_pool(client: Client, paths: Paths, tokens: Tokens, aggregate: Mapping[str, Any]) -> Item:
    endpoint = f"{paths.health}/pool"
    public = _aggregate_status(aggregate, "pool")
    if not tokens.health:
        if public is None:
            summary = f"skipped: the pool details need the health token (--token or {HEALTH_TOKEN_ENV})"
            return Item("pool", SKIPPED, summary, None, endpoint)
        note = f"details skipped: pass --token or set {HEALTH_TOKEN_ENV}"
        if public == "healthy":
            return Item("pool", OK, f"healthy per {paths.health}; {note}", None, endpoint)
        hint = f"a pool is near its limit: rerun with --token (or {HEALTH_TOKEN_ENV}) to see which and how full"
        return Item("pool", ACTION, f"{public} per {paths.health}; {note}", hint, endpoint)
    reply = client.get(endpoint, tokens.health)
    if reply.status != 200 or not reply.is_json_object:
        return _failed("pool", endpoint, reply, f"--token / {HEALTH_TOKEN_ENV}")
    pools: Mapping[str, Any] = reply.body.get("pools") or {}
    if not pools:
        return Item("pool", OK, "no database pools in this app", None, endpoint, 200, reply.body)
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
    status = ACTION if (warned or _view_needs_action(reply.body)) else OK
    action: str | None = None
    if status == ACTION:
        names = ", ".join(warned) or "a pool"
        action = advice.pool_full(names)
    return Item("pool", status, "; ".join(lines), action, endpoint, 200, reply.body)


def check_stuck(client: Client, paths: Paths, tokens: Tokens, aggregate: Mapping[str, Any]) -> Item:
    endpoint = f"{paths.admin}/stuck-operations"
    cleanup = f"{paths.admin}/stuck-operations/cleanup"
    if not tokens.admin:
        reply = client.get(f"{paths.health}/operations")
        note = f"list skipped: pass --admin-token or set {ADMIN_TOKEN_ENV}"
        if reply.status != 200 or not reply.is_json_object:
            if reply.status == 404 or reply.status == 0:
                summary = f"skipped: the stuck-operations list needs --admin-token (or {ADMIN_TOKEN_ENV})"
                return Item("stuck operations", SKIPPED, summary, None, endpoint)
            return _failed("stuck operations", f"{paths.health}/operations", reply)
        count = int(reply.body.get("stuck_count") or 0)
        in_flight = int(reply.body.get("in_flight") or 0)
        if count == 0:
            return Item("stuck operations", OK, f"none stuck ({in_flight} in flight); {note}", None, endpoint, 200,
                        reply.body)  # fmt: skip
        action = advice.stuck(cleanup, in_process=False, listed=False)
        return Item("stuck operations", ACTION, f"{count} stuck ({in_flight} in flight); {note}", action, endpoint,
                    200, reply.body)  # fmt: skip
    reply = client.get(endpoint, tokens.admin)
    if reply.status != 200 or not reply.is_json_object:
        return _failed("stuck operations", endpoint, reply, f"--admin-token / {ADMIN_TOKEN_ENV}")
    body = reply.body
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


def check_resources(client: Client, paths: Paths, tokens: Tokens, aggregate: Mapping[str, Any]) -> Item:
    endpoint = f"{paths.health}/resources"
    reply = client.get(endpoint)
    if reply.status != 200 or not reply.is_json_object:
        return _failed("resources", endpoint, reply)
    body = reply.body
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
    if not _view_needs_action(body):
        return Item("resources", OK, summary, None, endpoint, 200, body)
    warnings = body.get("warnings")
    # The view sends {"resource", "percent", "threshold_percent", "message"} per warning: show the message.
    messages = [str(w.get("message", w.get("resource"))) for w in warnings or () if isinstance(w, dict)]
    reason = "; ".join(messages) + ": " if messages else ""
    action = advice.resources(reason)
    return Item("resources", ACTION, summary, action, endpoint, 200, body)


def check_statement_timeout(client: Client, paths: Paths, tokens: Tokens, aggregate: Mapping[str, Any]) -> Item:
    endpoint = f"{paths.health}/db-timeout"
    reply = client.get(endpoint)
    if reply.status != 200 or not reply.is_json_object:
        return _failed("statement timeout", endpoint, reply)
    body = reply.body
    value = body.get("statement_timeout")
    configured = body.get("configured")
    if configured is True and not _view_needs_action(body):
        return Item("statement timeout", OK, f"statement_timeout = {value}", None, endpoint, 200, body)
    if (configured is None or value in (None, "not supported", "unknown")) and not _view_needs_action(body):
        return Item("statement timeout", OK, "not applicable (no PostgreSQL pool to read it from)", None, endpoint,
                    200, body)  # fmt: skip
    expected = body.get("expected_seconds")
    want = f"{expected}" if expected is not None else config.EXPECTED_STATEMENT_TIMEOUT.name
    summary = f"statement_timeout = {value}, expected {want}"
    action = advice.statement_timeout(expected)
    return Item("statement timeout", ACTION, summary, action, endpoint, 200, body)


def check_error_budget(client: Client, paths: Paths, tokens: Tokens, aggregate: Mapping[str, Any]) -> Item:
    endpoint = f"{paths.health}/error-rate"
    reply = client.get(endpoint)
    if reply.status != 200 or not reply.is_json_object:
        return _failed("error budget", endpoint, reply)
    return budget.app_item(reply.body, endpoint)


Check = Callable[["Client", "Paths", "Tokens", Mapping[str, Any]], Item]
CHECKS: tuple[Check, ...] = (
    check_breakers,
    check_error_rate,
    check_pool,
    check_stuck,
    check_resources,
    check_statement_timeout,
    check_error_budget,
)


@dataclass(frozen=True)
class Paths:
    health: str
    admin: str


@dataclass(frozen=True)
class Tokens:
    health: str | None
    admin: str | None


def _aggregate_status(aggregate: Mapping[str, Any], name: str) -> str | None:
    check = (aggregate.get("checks") or {}).get(name)
    return check.get("status") if isinstance(check, dict) else None


# --- running it -----------------------------------------------------------------------------------------------


@dataclass
class AppReport(Report):
    """The report of one app: who answered (its ``service`` block) and its aggregate health status."""

    service: Any = None
    health_status: str | None = None

    def heading(self) -> str:
        service = self.service or {}
        who = f"{service.get('name', '?')}, instance {service.get('instance_id') or '?'}"
        return f"otel-reliability check of {self.url} ({who}): {self.health_status}"

    def as_json(self) -> dict[str, Any]:
        out = super().as_json()
        return {**{k: out[k] for k in ("url", "reachable", "problem")}, "service": self.service,
                "health_status": self.health_status, **out}  # fmt: skip


def run_check(url: str, *, paths: Paths, tokens: Tokens, timeout: float) -> AppReport:
    """Run every item against the app at ``url``; never raises for anything the app answers or fails to."""
    client = Client(url, timeout)
    report = AppReport(url=client.base_url, reachable=False)
    reply = client.get(paths.health)
    if reply.status == 0:
        report.problem = f"cannot reach {client.base_url}{paths.health}: {reply.error}"
        return report
    body = reply.body if reply.is_json_object else {}
    if not isinstance(body.get("checks"), dict) or "service" not in body:
        report.problem = (
            f"{client.base_url}{paths.health} answered HTTP {reply.status} without 'checks' and 'service': "
            f"not an otel-reliability app (is it running under opentelemetry-instrument, or is the health path "
            f"different? see --health-path)"
        )
        return report
    report.reachable = True
    report.service = body.get("service")
    report.health_status = body.get("status")
    for check in CHECKS:
        try:
            report.items.append(check(client, paths, tokens, body))
        except Exception as exc:  # an unexpected body must not stop the other items
            name = check.__name__.removeprefix("check_").replace("_", " ")
            report.items.append(Item(name, ERROR, f"unexpected answer ({type(exc).__name__}: {exc})", None))
    return report
