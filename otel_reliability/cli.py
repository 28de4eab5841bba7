"""``otel-reliability check``: the seed's morning checklist, run against a live app, with what to do about it.

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
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import textwrap
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

OK, ACTION, SKIPPED, ERROR = "ok", "action", "skipped", "error"
EXIT_OK, EXIT_ACTION, EXIT_UNREACHABLE = 0, 1, 2
_LABELS = {OK: "ok", ACTION: "ACTION", SKIPPED: "skipped", ERROR: "ERROR"}
HEALTH_TOKEN_ENV = "OTEL_RELIABILITY_HEALTH_TOKEN"
ADMIN_TOKEN_ENV = "OTEL_RELIABILITY_ADMIN_TOKEN"


@dataclass
class Reply:
    """One HTTP answer: ``status`` 0 means no answer at all (``error`` says why)."""

    status: int
    body: Any = None
    error: str | None = None

    @property
    def is_json_object(self) -> bool:
        return isinstance(self.body, dict)


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


class Client:
    """GETs JSON from the app, every call bounded by ``timeout``; never raises for HTTP or network errors."""

    def __init__(self, base_url: str, timeout: float) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout

    def get(self, path: str, token: str | None = None) -> Reply:
        headers = {"Accept": "application/json", "User-Agent": "otel-reliability-check"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        request = urllib.request.Request(self.base_url + path, headers=headers, method="GET")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as resp:
                status, raw = resp.status, resp.read()
        except urllib.error.HTTPError as err:
            status, raw = err.code, err.read()
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            return Reply(0, error=f"{type(reason).__name__}: {reason}" if str(reason) else type(reason).__name__)
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
        names = ", ".join(open_)
        action = (
            f"{names} failed {_plural(len(open_), 'its', 'their')} recent calls: check the provider's status page and "
            f"this app's log for the errors behind it. Callers get 503 + Retry-After meanwhile; the breaker closes by "
            f"itself after a successful trial call, so no restart is needed. If it keeps reopening while the provider "
            f"is up, its timeout is too short or fail_max too low."
        )
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
    action = (
        f"most errors come from {routes}: read the exceptions for those routes in the log or traces; if they began "
        f"with a deploy, roll it back. 502/503 on routes that call a provider usually match an open breaker above."
    )
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
        config = info.get("configuration") or {}
        used = current.get("checked_out", current.get("used"))
        capacity = config.get("total_capacity")
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
        action = (
            f"{names} is nearly full: find what holds connections (slow queries; sessions kept open across calls to "
            f"external services: compare db_client_connection_use_time_seconds with request durations). Raise "
            f"pool_size/max_overflow only if the database's max_connections has room for every instance."
        )
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
        action = (
            f"rerun with --admin-token to list them, then POST {cleanup}?dry_run=true to preview and without "
            f"dry_run to mark the stuck database rows as error"
        )
        return Item("stuck operations", ACTION, f"{count} stuck ({in_flight} in flight); {note}", action, endpoint,
                    200, reply.body)  # fmt: skip
    reply = client.get(endpoint, tokens.admin)
    if reply.status != 200 or not reply.is_json_object:
        return _failed("stuck operations", endpoint, reply, f"--admin-token / {ADMIN_TOKEN_ENV}")
    body = reply.body
    count = int(body.get("stuck_count") or 0)
    threshold = body.get("stuck_threshold_seconds")
    if count == 0 and not body.get("action_required"):
        summary = "none stuck" + (f" (threshold {_duration(threshold)})" if threshold else "")
        return Item("stuck operations", OK, summary, None, endpoint, 200, body)
    listed = body.get("stuck_operations") or []
    oldest = max(listed, key=lambda r: r.get("age_seconds") or 0, default=None)
    summary = f"{count} stuck"
    if oldest:
        age = _duration(oldest.get("age_seconds"))
        summary += f"; oldest: {oldest.get('name')} {oldest.get('key') or ''} for {age}"
    sources = {r.get("source") for r in listed}
    action = (
        f"preview with POST {cleanup}?dry_run=true, then POST {cleanup} marks the stuck database rows as error "
        f"(users can retry them)."
    )
    if "in_process" in sources:
        action += " In-process operations cannot be killed: restart that worker once it has drained."
    action += " Then find why they hung: usually a call without a timeout."
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
    reason = "; ".join(str(w) for w in warnings) + ": " if isinstance(warnings, list) and warnings else ""
    action = (
        f"{reason}memory that grows steadily (process_memory_usage_bytes) is a leak, a step follows one kind of "
        f"request; "
        f"CPU pinned at the limit means too few workers or a hot loop; file descriptors climbing mean unclosed files "
        f"or connections. A restart buys time, not a fix."
    )
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
        reason = body.get("reason") or body.get("message") or "no PostgreSQL pool to read it from"
        return Item("statement timeout", OK, f"not applicable ({reason})", None, endpoint, 200, body)
    expected = body.get("expected") or body.get("expected_seconds")
    want = f"{expected}" if expected is not None else "OTEL_RELIABILITY_EXPECTED_STATEMENT_TIMEOUT"
    summary = f"statement_timeout = {value}, expected {want}"
    action = (
        f"set it on the server, e.g. ALTER DATABASE <db> SET statement_timeout = '{_seconds_literal(expected)}' "
        f"(or per role), then let the pool reconnect; without it one runaway query holds its connection and its locks "
        f"indefinitely. If the new value is intended, set OTEL_RELIABILITY_EXPECTED_STATEMENT_TIMEOUT to match."
    )
    return Item("statement timeout", ACTION, summary, action, endpoint, 200, body)


Check = Callable[["Client", "Paths", "Tokens", Mapping[str, Any]], Item]
CHECKS: tuple[Check, ...] = (
    check_breakers,
    check_error_rate,
    check_pool,
    check_stuck,
    check_resources,
    check_statement_timeout,
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


def _plural(n: int, one: str, many: str) -> str:
    return one if n == 1 else many


def _duration(seconds: Any) -> str:
    if not isinstance(seconds, (int, float)):
        return "?"
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _seconds_literal(expected: Any) -> str:
    return f"{expected:g}s" if isinstance(expected, (int, float)) else "300s"


# --- running it -----------------------------------------------------------------------------------------------


@dataclass
class Report:
    url: str
    reachable: bool
    service: Any = None
    health_status: str | None = None
    items: list[Item] = field(default_factory=list)
    problem: str | None = None

    @property
    def exit_code(self) -> int:
        if not self.reachable:
            return EXIT_UNREACHABLE
        return EXIT_ACTION if any(i.status in (ACTION, ERROR) for i in self.items) else EXIT_OK

    def as_json(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "reachable": self.reachable,
            "problem": self.problem,
            "service": self.service,
            "health_status": self.health_status,
            "exit_code": self.exit_code,
            "needs_action": self.exit_code == EXIT_ACTION,
            "items": [asdict(i) for i in self.items],
        }


def run_check(url: str, *, paths: Paths, tokens: Tokens, timeout: float) -> Report:
    """Run every item against the app at ``url``; never raises for anything the app answers or fails to."""
    client = Client(url, timeout)
    report = Report(url=client.base_url, reachable=False)
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


def render(report: Report) -> str:
    if not report.reachable:
        return f"otel-reliability check: {report.problem}\n"
    service = report.service or {}
    who = f"{service.get('name', '?')}, instance {service.get('instance_id') or '?'}"
    lines = [f"otel-reliability check of {report.url} ({who}): {report.health_status}"]
    width = max(len(i.name) for i in report.items) if report.items else 10
    for item in report.items:
        lines.append(f"  [{_LABELS[item.status]:^7}] {item.name:<{width}}  {item.summary}")
        if item.action:
            indent = " " * (14 + width)
            lines.extend(textwrap.wrap(f"-> {item.action}", _columns(), initial_indent=indent,
                                       subsequent_indent=indent + "   ", break_on_hyphens=False))  # fmt: skip
    acting = [i.name for i in report.items if i.status in (ACTION, ERROR)]
    skipped = [i.name for i in report.items if i.status == SKIPPED]
    if acting:
        lines.append(f"{len(acting)} item(s) need action: {', '.join(acting)}.")
    else:
        lines.append("Nothing needs action.")
    if skipped:
        lines.append(f"Not checked: {', '.join(skipped)} (see the notes above).")
    return "\n".join(lines) + "\n"


def _columns() -> int:
    return max(80, min(shutil.get_terminal_size((110, 24)).columns, 140))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="otel-reliability", description="Tools for apps run with otel-reliability.")
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser(
        "check",
        help="run the morning checklist against a running app",
        description=(
            "The morning checklist: breakers, error rate, pool, stuck operations, resources, statement timeout. "
            "Exit 0 nothing to do, 1 action needed, 2 unreachable or not an otel-reliability app."
        ),
    )
    check.add_argument("--url", default="http://127.0.0.1:8000", help="base URL of the app (default %(default)s)")
    check.add_argument("--token", default=None, help=f"health token for the pool details (or {HEALTH_TOKEN_ENV})")
    check.add_argument("--admin-token", default=None, help=f"admin token for stuck operations (or {ADMIN_TOKEN_ENV})")
    check.add_argument("--json", action="store_true", help="print one JSON document instead of lines")
    check.add_argument("--timeout", type=float, default=5.0, help="seconds per HTTP call (default %(default)s)")
    check.add_argument("--health-path", default=os.environ.get("OTEL_RELIABILITY_HEALTH_PATH") or "/api/health")
    check.add_argument("--admin-path", default=os.environ.get("OTEL_RELIABILITY_ADMIN_PATH") or "/api/admin/monitoring")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.timeout <= 0:
        sys.stderr.write("otel-reliability: --timeout must be a positive number of seconds\n")
        return EXIT_UNREACHABLE
    tokens = Tokens(
        health=args.token or os.environ.get(HEALTH_TOKEN_ENV) or None,
        admin=args.admin_token or os.environ.get(ADMIN_TOKEN_ENV) or None,
    )
    paths = Paths(health=args.health_path.rstrip("/"), admin=args.admin_path.rstrip("/"))
    report = run_check(args.url, paths=paths, tokens=tokens, timeout=args.timeout)
    if args.json:
        sys.stdout.write(json.dumps(report.as_json(), indent=2) + "\n")
    else:
        (sys.stdout if report.reachable else sys.stderr).write(render(report))
    return report.exit_code


if __name__ == "__main__":
    sys.exit(main())
