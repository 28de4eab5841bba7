"""``otel-reliability check --prometheus URL [--job NAME]``: the morning checklist for a whole fleet.

    otel-reliability check --prometheus http://prometheus:9090 [--job NAME] [--json] [--stale-after S]

Where ``--url`` asks one app's health endpoints, this asks a Prometheus-compatible query API (Prometheus,
Mimir, Thanos Query, Cortex, VictoriaMetrics: anything answering ``/api/v1/query``) about every service
(``job``) and instance it holds, whether the data was scraped from :9464, scraped from a collector, or
remote-written by the gateways. It reads the metric names of shared/CONTRACT.md only, so it needs nothing from
the apps but their metrics, and it gives the same items and the same advice as ``--url``
(``otel_reliability/checklist/advice.py``), naming the service and instance of each finding, plus one item
``--url`` cannot have: instances that stopped reporting.

Thresholds are the apps' own defaults, read through ``otel_reliability.config`` (so
``OTEL_RELIABILITY_ERROR_RATE_THRESHOLD`` and friends mean the same here). Exit codes as for ``--url``: 0 nothing
needs action, 1 something does (a query that fails is an item in error), 2 the query API cannot be reached,
is not one, or holds no otel-reliability metrics (for ``--job``). Only the standard library.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from typing import Any

from otel_reliability.checklist import advice, statement_timeout_as_expected
from otel_reliability.checklist.advice import duration
from otel_reliability.cli import budget
from otel_reliability.cli.fleet_scope import (
    PRESENCE,
    RAISED,
    RATE_WINDOW,
    REQUESTS,
    SEEN_WINDOW,
    STATUS_5XX,
    USED,
    Fleet,
    FleetReport,
    Thresholds,
    grouped,
)
from otel_reliability.cli.promapi import PromClient, QueryError, Unreachable
from otel_reliability.cli.report import ACTION, ADVICE, ERROR, OK, Item

# --- the items ------------------------------------------------------------------------------------------------


def check_breakers(f: Fleet) -> Item:
    rows = f.q(
        f"max by (job, instance, circuit_breaker_name, circuit_breaker_state) ({f.sel('circuit_breaker_state')}) == 1"
    )
    if not rows:
        return Item("breakers", OK, "no circuit breakers in the fleet")
    states = {(s["job"], s.get("instance", ""), s["circuit_breaker_name"]): s["circuit_breaker_state"] for s, _ in rows}
    open_ = sorted(k for k, v in states.items() if v == "open")
    half = sorted(k for k, v in states.items() if v == "half_open")
    total = len({(j, n) for j, _, n in states})
    if not open_ and not half:
        return Item("breakers", OK, f"{total} breakers in {len({j for j, _, _ in states})} services, all closed")
    details = [{"job": j, "instance": i, "breaker": n, "state": states[(j, i, n)]} for j, i, n in open_ + half]
    parts = []
    if open_:
        parts.append(f"open: {grouped((j, f'{n} on {i}') for j, i, n in open_)}")
    if half:
        parts.append(f"half-open (trying again): {grouped((j, f'{n} on {i}') for j, i, n in half)}")
    if not open_:  # a trial call is under way: it closes or reopens by itself
        return Item("breakers", OK, "; ".join(parts), details=details)
    names = sorted({f"{n} (service {j})" for j, _, n in open_})
    return Item("breakers", ACTION, "; ".join(parts), advice.breakers_open(names), details=details)


def check_error_rate(f: Fleet) -> Item:
    count = f"increase({f.sel(REQUESTS)}[{RATE_WINDOW}])"
    failed = (
        f"increase({f.sel(REQUESTS, STATUS_5XX)}[{RATE_WINDOW}]) or increase({f.sel(REQUESTS, *RAISED)}[{RATE_WINDOW}])"
    )
    totals = {s["job"]: v for s, v in f.q(f"sum by (job) ({count})")}
    if not totals:
        return Item("error rate", OK, f"no HTTP requests in the last {RATE_WINDOW}")
    errors = {s["job"]: v for s, v in f.q(f"sum by (job) ({failed})")}
    routes: dict[str, list[tuple[float, str]]] = defaultdict(list)
    for s, v in f.q(f"sum by (job, http_route) ({failed}) > 0"):
        routes[s["job"]].append((v, s.get("http_route", "?")))
    details: list[dict[str, Any]] = []
    failing = []
    for job, total in sorted(totals.items()):
        rate = 100.0 * errors.get(job, 0.0) / total if total else 0.0
        judged = total >= f.th.min_requests
        details.append(
            {
                "job": job,
                "requests": round(total),
                "errors": round(errors.get(job, 0.0)),
                "error_rate_percent": round(rate, 2),
                "judged": judged,
            }
        )
        if judged and rate > f.th.error_rate_percent:
            failing.append((job, rate, total))
    window = f"in the last {RATE_WINDOW} (threshold {f.th.error_rate_percent:g}%)"
    if not failing:
        worst = max(details, key=lambda d: d["error_rate_percent"])
        summary = (
            f"{len(totals)} services under the threshold {window}; highest {worst['job']} "
            f"{worst['error_rate_percent']:g}% of {worst['requests']} requests"
        )
        return Item("error rate", OK, summary, details=details)
    summary = (
        "; ".join(f"{job} {rate:.1f}% of {total:.0f} requests failed" for job, rate, total in failing) + " " + window
    )
    top = [
        f"{job} {route} ({advice.count(n, 'error')})"
        for job, _, _ in failing
        for n, route in sorted(routes[job], reverse=True)[:3]
    ]
    return Item(
        "error rate", ACTION, summary, advice.error_rate(", ".join(top) or "see the request metrics"), details=details
    )


def check_pool(f: Fleet) -> Item:
    by = "sum by (job, instance, db_client_connection_pool_name)"
    used = f.q(f"{by} ({f.sel('db_client_connection_count', USED)})")
    maxes = {_pool_key(s): v for s, v in f.q(f"{by} ({f.sel('db_client_connection_max')})")}
    if not maxes:
        return Item("pool", OK, "no database pools in the fleet")
    pending = {_pool_key(s): v for s, v in f.q(f"{by} ({f.sel('db_client_connection_pending_requests')})")}
    timeouts = {
        _pool_key(s): v
        for s, v in f.q(f"{by} (increase({f.sel('db_client_connection_timeouts_total')}[{RATE_WINDOW}])) > 0")
    }
    in_use = {_pool_key(s): v for s, v in used}
    details: list[dict[str, Any]] = []
    warned: list[dict[str, Any]] = []
    for key, capacity in sorted(maxes.items()):
        job, instance, pool = key
        utilization = 100.0 * in_use.get(key, 0.0) / capacity if capacity else 0.0
        row = {
            "job": job,
            "instance": instance,
            "pool": pool,
            "utilization_percent": round(utilization, 1),
            "used": in_use.get(key, 0.0),
            "max": capacity,
            "pending": pending.get(key, 0.0),
            "timeouts": round(timeouts.get(key, 0.0)),
        }
        details.append(row)
        if utilization >= f.th.pool_warn_percent or key in timeouts:
            warned.append(row)
    if not warned:
        top = max(details, key=lambda d: d["utilization_percent"])
        summary = (
            f"{len(maxes)} pools; fullest {top['pool']} on {top['job']}/{top['instance']} "
            f"{top['utilization_percent']:g}%"
        )
        return Item("pool", OK, summary, details=details)
    lines = []
    for r in warned:
        text = f"{r['pool']} on {r['instance']} {r['utilization_percent']:g}% ({r['used']:.0f}/{r['max']:.0f} in use"
        text += f", {r['pending']:.0f} waiting)" if r["pending"] else ")"
        if r["timeouts"]:
            text += f", {r['timeouts']} checkout timeouts in {RATE_WINDOW}"
        lines.append((r["job"], text))
    names = ", ".join(sorted({f"{r['pool']} (service {r['job']})" for r in warned}))
    return Item("pool", ACTION, grouped(lines), advice.pool_full(names), details=details)


def _pool_key(labels: dict[str, str]) -> tuple[str, str, str]:
    return labels.get("job", "?"), labels.get("instance", "?"), labels.get("db_client_connection_pool_name", "?")


def check_stuck(f: Fleet) -> Item:
    by = "max by (job, instance, operation_name)"
    rows = f.q(f"{by} ({f.sel('operation_stuck')}) > 0")
    if not rows:
        return Item("stuck operations", OK, "none stuck")
    ages = {
        (s["job"], s.get("instance", ""), s.get("operation_name", "")): v
        for s, v in f.q(f"{by} ({f.sel('operation_oldest_age_seconds')})")
    }
    details: list[dict[str, Any]] = []
    lines = []
    for s, count in rows:
        key = (s["job"], s.get("instance", ""), s.get("operation_name", ""))
        details.append(
            {
                "job": key[0],
                "instance": key[1],
                "operation": key[2],
                "stuck": count,
                "oldest_age_seconds": ages.get(key),
            }
        )
        lines.append((key[0], f"{count:.0f} {key[2]} on {key[1]} (oldest {duration(ages.get(key))})"))
    action = "on each instance named, " + advice.stuck(f"{f.admin_path}/stuck-operations/cleanup", in_process=True)
    return Item("stuck operations", ACTION, grouped(lines), action, details=details)


def check_resources(f: Fleet) -> Item:
    memory = {
        (s["job"], s.get("instance", "")): v
        for s, v in f.q(
            f"max by (job, instance) ({f.sel('process_memory_usage_bytes')}) / "
            f"max by (job, instance) ({f.sel('process_memory_limit_bytes')})"
        )
    }
    cpu = {
        (s["job"], s.get("instance", "")): v
        for s, v in f.q(f"max by (job, instance) ({f.sel('process_cpu_utilization')})")
    }
    if not memory and not cpu:
        return Item("resources", OK, "no process metrics in the fleet")
    findings = []
    for (job, instance), ratio in sorted(memory.items()):
        if ratio * 100 >= f.th.memory_warn_percent:
            findings.append((job, instance, f"memory {ratio * 100:.0f}% of its limit"))
    for (job, instance), ratio in sorted(cpu.items()):
        if ratio * 100 >= f.th.cpu_warn_percent:
            findings.append((job, instance, f"CPU {ratio * 100:.0f}% of its allowed CPUs"))
    details = [
        {
            "job": j,
            "instance": i,
            "memory_percent": round(memory[(j, i)] * 100, 1) if (j, i) in memory else None,
            "cpu_percent": round(cpu[(j, i)] * 100, 1) if (j, i) in cpu else None,
        }
        for j, i in sorted(set(memory) | set(cpu))
    ]
    if not findings:
        top = max(memory.items(), key=lambda kv: kv[1], default=None)
        summary = f"{len(details)} instances under the limits"
        if top:
            summary += f"; highest memory {top[1] * 100:.0f}% of limit ({top[0][0]}/{top[0][1]})"
        return Item("resources", OK, summary, details=details)
    reason = "; ".join(f"{j}/{i} {what}" for j, i, what in findings) + ": "
    return Item(
        "resources",
        ACTION,
        grouped((j, f"{i} {w}") for j, i, w in findings),
        advice.resources(reason),
        details=details,
    )


def check_statement_timeout(f: Fleet) -> Item:
    rows = f.q(
        f"max by (job, instance, db_client_connection_pool_name) ({f.sel('db_client_statement_timeout_seconds')})"
    )
    if not rows:
        return Item("statement timeout", OK, "not applicable (no PostgreSQL pool reports statement_timeout)")
    expected = f.th.expected_statement_timeout
    wrong = [(s, v) for s, v in rows if not statement_timeout_as_expected(v, expected)]
    details = [
        {
            "job": s["job"],
            "instance": s.get("instance"),
            "pool": s.get("db_client_connection_pool_name"),
            "statement_timeout_seconds": v,
        }
        for s, v in rows
    ]
    if not wrong:
        shown = f"{expected:g}s" if expected is not None else "set"
        return Item("statement timeout", OK, f"{len(rows)} pools, all statement_timeout {shown}", details=details)
    lines = [
        (
            s["job"],
            f"{s.get('db_client_connection_pool_name')} on {s.get('instance')} {'0 (none)' if v == 0 else f'{v:g}s'}",
        )
        for s, v in wrong
    ]
    if expected is None:
        summary = f"{grouped(lines)}; disabled"
        return Item("statement timeout", ADVICE, summary, advice.statement_timeout_disabled(), details=details)
    summary = f"{grouped(lines)}; expected {expected:g}s"
    return Item("statement timeout", ACTION, summary, advice.statement_timeout(expected), details=details)


def check_reporting(f: Fleet, seen: set[tuple[str, str]]) -> Item:
    fresh = f.present(f"{max(1, round(f.th.stale_after))}s")
    silent = sorted(seen - fresh)
    down = sorted({(s["job"], s.get("instance", "")) for s, _ in f.q(f"{f.sel('up')} == 0")})
    details = [{"job": j, "instance": i, "reason": "no sample"} for j, i in silent]
    details += [{"job": j, "instance": i, "reason": "scrape failing (up == 0)"} for j, i in down]
    if not details:
        return Item("reporting", OK, f"all {len(seen)} instances reported in the last {duration(f.th.stale_after)}")
    lines = [(j, f"{i} silent for over {duration(f.th.stale_after)}") for j, i in silent]
    lines += [(j, f"{i} cannot be scraped") for j, i in down]
    return Item("reporting", ACTION, grouped(lines), advice.stopped_reporting(), details=details)


CHECKS: tuple[tuple[str, Callable[[Fleet], Item]], ...] = (
    ("breakers", check_breakers),
    ("error rate", check_error_rate),
    ("pool", check_pool),
    ("stuck operations", check_stuck),
    ("resources", check_resources),
    ("statement timeout", check_statement_timeout),
    ("error budget", lambda f: budget.fleet_item(f.q, lambda m, extra: f.sel(m, *([extra] if extra else [])))),
)


def run_fleet_check(
    url: str, *, job: str | None, thresholds: Thresholds, timeout: float, admin_path: str = "/api/admin/monitoring"
) -> FleetReport:
    """Run every item over the fleet at ``url``; never raises for anything the query API answers or fails to."""
    client = PromClient(url, timeout)
    report = FleetReport(url=client.base_url, reachable=False, job=job)
    fleet = Fleet(client, job, thresholds, admin_path.rstrip("/"))
    try:
        seen = fleet.present(SEEN_WINDOW)
    except Unreachable as exc:
        report.problem = f"cannot reach {client.base_url}/api/v1/query: {exc}"
        return report
    except QueryError as exc:
        report.problem = f"{client.base_url}/api/v1/query: {exc}"
        return report
    if not seen:
        scope = f" for job {job!r}" if job is not None else ""
        report.problem = (
            f"{client.base_url} holds no otel-reliability metrics{scope} from the last {SEEN_WINDOW} "
            f"(looked for {', '.join(PRESENCE)}): is it the Prometheus the apps or gateways write to?"
        )
        return report
    report.reachable = True
    for service, instance in sorted(seen):
        report.services.setdefault(service, []).append(instance)
    checks: list[tuple[str, Callable[[Fleet], Item]]] = [*CHECKS, ("reporting", lambda f: check_reporting(f, seen))]
    for name, check in checks:
        try:
            report.items.append(check(fleet))
        except (QueryError, Unreachable) as exc:
            report.items.append(Item(name, ERROR, f"query failed ({exc})", "check the query API's log"))
        except Exception as exc:  # an unexpected answer must not stop the other items
            report.items.append(Item(name, ERROR, f"unexpected answer ({type(exc).__name__}: {exc})"))
    return report
