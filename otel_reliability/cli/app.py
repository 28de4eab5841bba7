"""``otel-reliability check --url``: the morning checklist, run against one live app.

    otel-reliability check [--url http://127.0.0.1:8000] [--token T] [--admin-token T] [--json] [--timeout S]

A morning routine of curl calls read by a human misses what it is not shown. This asks the same health
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

from otel_reliability import checklist
from otel_reliability.cli import http
from otel_reliability.cli.report import (
    ACTION,
    ADMIN_TOKEN_ENV,
    ERROR,
    HEALTH_TOKEN_ENV,
    OK,
    SKIPPED,
    Item,
    Report,
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


def _judged(name: str, endpoint: str, reply: Reply, judge: Callable[[Mapping[str, Any], str], Item]) -> Item:
    """The view's body judged by the checklist (``otel_reliability.checklist``), or why it could not be."""
    if reply.status != 200 or not reply.is_json_object:
        return _failed(name, endpoint, reply)
    return judge(reply.body, endpoint)


def _public_view(name: str, view: str, judge: Callable[[Mapping[str, Any], str], Item]) -> Check:
    """The item ``name``: the public health view ``view`` (under the health path) judged by ``judge``."""

    def check(client: Client, paths: Paths, tokens: Tokens, aggregate: Mapping[str, Any]) -> Item:
        endpoint = f"{paths.health}/{view}"
        return _judged(name, endpoint, client.get(endpoint), judge)

    check.__name__ = check.__qualname__ = f"check_{name.replace(' ', '_')}"
    return check


check_breakers = _public_view("breakers", "circuit-breakers", checklist.breakers)
check_error_rate = _public_view("error rate", "error-rate", checklist.error_rate)
check_resources = _public_view("resources", "resources", checklist.resources)
check_statement_timeout = _public_view("statement timeout", "db-timeout", checklist.statement_timeout)
check_error_budget = _public_view("error budget", "error-rate", checklist.error_budget)


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
    return checklist.pool(reply.body, endpoint)


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
        return checklist.stuck_counts(reply.body, cleanup, endpoint, note)
    reply = client.get(endpoint, tokens.admin)
    if reply.status != 200 or not reply.is_json_object:
        return _failed("stuck operations", endpoint, reply, f"--admin-token / {ADMIN_TOKEN_ENV}")
    return checklist.stuck_list(reply.body, cleanup, endpoint)


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


def write_snapshot(url: str, path: str, *, paths: Paths, tokens: Tokens, timeout: float) -> str | None:
    """Write the app's status page (``{health}/ui``) to ``path`` as a static snapshot, for a ticket or an e-mail:
    the same sections the live page shows, without its script. Returns why it could not, or None."""
    if not tokens.health:
        return f"--html needs the health token (--token or {HEALTH_TOKEN_ENV}): the status page is behind it"
    client = Client(url, timeout)
    endpoint = f"{paths.health}/ui"
    reply = client.get(endpoint, tokens.health)
    body = reply.body if reply.is_json_object else {}
    if reply.status != 200 or not isinstance(body.get("html"), str):
        reason = reply.error or f"HTTP {reply.status}" + (" (token rejected)" if reply.status == 401 else "")
        return f"cannot fetch {client.base_url}{endpoint}: {reason}"
    from otel_reliability.health.page import render  # only here: the renderer imports the health floor

    try:
        with open(path, "w", encoding="utf-8") as out:
            out.write(
                render.document(body["html"], str(body.get("title")), body.get("status"), body.get("observed_at"))
            )
    except OSError as exc:
        return f"cannot write {path}: {exc.strerror or exc}"
    return None
