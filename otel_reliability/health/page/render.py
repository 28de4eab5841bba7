"""The status page's HTML: a pure function of the model (``model.gather``), for the live page and the snapshot.

Safe by construction: every text from the app (breaker, route, pool and operation names, summaries, advice) goes
through ``_e`` (HTML-escaped, quotes too); nothing is ever placed in a script, a style or a URL. Bars and
sparklines are inline SVG with presentation attributes (no ``style=`` attribute, which a strict
Content-Security-Policy forbids). The style sheet is inline and allowed by its hash (``CSP_STYLE``); the live
page's only script is served from the same origin (``page.js``); the snapshot has none.
"""

from __future__ import annotations

import base64
import hashlib
import html
from collections.abc import Sequence
from importlib import resources
from typing import Any

from otel_reliability.checklist import ACTION, ERROR, OK, SKIPPED, Item
from otel_reliability.checklist.advice import duration

CSS = resources.files(__package__).joinpath("page.css").read_text(encoding="utf-8")
SCRIPT = resources.files(__package__).joinpath("page.js").read_bytes()
CSP_STYLE = "'sha256-" + base64.b64encode(hashlib.sha256(CSS.encode()).digest()).decode() + "'"
_COMMON_CSP = f"default-src 'none'; style-src {CSP_STYLE}; img-src 'self' data:; base-uri 'none'; form-action 'none'"
LIVE_CSP = f"{_COMMON_CSP}; script-src 'self'; connect-src 'self'; frame-ancestors 'none'"
"""The live page's header: its script and its fetches only from its own origin, nothing inline but the sheet."""
SNAPSHOT_CSP = f"{_COMMON_CSP}; script-src 'none'"
"""The snapshot's ``<meta>`` policy (a file has no headers; frame-ancestors cannot be set in a meta)."""

_LABELS = {OK: "ok", ACTION: "action", SKIPPED: "skipped", ERROR: "error"}
_STATE_ORDER = {"open": 0, "half_open": 1, "unknown": 2, "closed": 3}


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _num(value: Any, unit: str = "", digits: int = 1) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "—"
    text = f"{value:.{digits}f}".rstrip("0").rstrip(".") if isinstance(value, float) else str(value)
    return f"{text}{unit}"


def title(model: dict[str, Any]) -> str:
    service = (model.get("service") or {}).get("name") or "service"
    return f"{model.get('status', '?')} · {service} · otel-reliability"


def payload(model: dict[str, Any]) -> dict[str, Any]:
    """What the live page fetches every few seconds (and ``check --html`` writes into a snapshot)."""
    return {"html": sections(model), "title": title(model), "status": model.get("status"),
            "observed_at": model.get("observed_at")}  # fmt: skip


def document(
    html_sections: str,
    title_text: str,
    status: Any,
    observed_at: Any,
    *,
    poll_url: str | None = None,
    script_url: str | None = None,
) -> str:
    """The whole page around the sections of ``payload(...)``: live when ``poll_url`` and ``script_url`` are
    given (it polls), else a static snapshot (no script, the policy in a ``<meta>``)."""
    live = poll_url is not None and script_url is not None
    meta_csp = "" if live else f'<meta http-equiv="Content-Security-Policy" content="{_e(SNAPSHOT_CSP)}">'
    script = f'<script src="{_e(script_url)}" defer></script>' if live else ""
    mode = "live" if live else "snapshot"
    note = "connecting…" if live else f"snapshot of the readings of {_e(observed_at)}; not live"
    poll = f' data-poll="{_e(poll_url)}"' if live else ""
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<meta name="referrer" content="no-referrer"><link rel="icon" href="data:,">'
        f"{meta_csp}<title>{_e(title_text)}</title>"
        f"<style>{CSS}</style></head>"
        f'<body class="{mode}" data-status="{_e(status)}">'
        f'<div id="contact" class="contact" role="status" aria-live="polite">{note}</div>'
        f'<main id="page"{poll}>{html_sections}</main>{script}</body></html>'
    )


def sections(model: dict[str, Any]) -> str:
    """Everything that changes between two polls (the live page swaps exactly this)."""
    views = model.get("views") or {}
    parts = [_header(model), _verdict(model.get("items") or [])]
    if "circuit-breakers" in views:
        parts.append(_breakers(views["circuit-breakers"], model.get("open_for") or {}))
    if "error-rate" in views:
        parts.append(_error_rate(views["error-rate"], model.get("spark") or {}))
    if "pool" in views:
        parts.append(_pools(views["pool"], views.get("db-timeout") or {}))
    if "resources" in views:
        parts.append(_resources(views["resources"], model.get("workers")))
    if "operations" in views:
        parts.append(_operations(views["operations"], model.get("admin_path") or ""))
    return "".join(parts)


def _header(model: dict[str, Any]) -> str:
    service = model.get("service") or {}
    workers = model.get("workers")
    scope = f" · whole host, {_e(workers)} workers" if isinstance(workers, int) and workers > 1 else ""
    return (
        f'<header><h1>{_e(service.get("name"))}</h1><p class="meta">instance {_e(service.get("instance_id") or "?")}'
        f'{scope} · status <b class="s-{_e(model.get("status"))}">{_e(model.get("status"))}</b> · readings of '
        f'<time id="observed">{_e(model.get("observed_at"))}</time></p></header>'
    )


def _verdict(items: list[Item]) -> str:
    acting = [i for i in items if i.needs_action]
    if acting:
        head = f"{len(acting)} item(s) need action: {', '.join(i.name for i in acting)}"
    else:
        head = "Nothing needs action"
    rows = []
    for item in items:
        advice = f'<p class="advice">→ {_e(item.action)}</p>' if item.action else ""
        rows.append(
            f'<li class="i-{_e(item.status)}"><span class="badge">{_e(_LABELS.get(item.status, item.status))}</span> '
            f"<b>{_e(item.name)}</b> <span>{_e(item.summary)}</span>{advice}</li>"
        )
    kind = "bad" if acting else "good"
    return f'<section id="verdict" class="verdict {kind}"><h2>{_e(head)}</h2><ul>{"".join(rows)}</ul></section>'


def _breaker_key(item: tuple[str, dict[str, Any]]) -> tuple[int, int, str]:
    name, info = item
    return (0 if info.get("critical") else 1, _STATE_ORDER.get(str(info.get("state")), 2), name)


def _breakers(body: dict[str, Any], open_for: dict[str, Any]) -> str:
    found: dict[str, Any] = body.get("breakers") or {}
    cards = []
    for name, info in sorted(found.items(), key=_breaker_key):
        state = str(info.get("state") or "unknown")
        since = ""
        timeout = info.get("reset_timeout")
        left = ""
        if state == "open" and name in open_for:
            age = open_for[name]
            seconds = age.get("seconds")
            since = f' <span class="since">for {"over " if age.get("at_least") else ""}{duration(seconds)}</span>'
            if isinstance(timeout, (int, float)) and isinstance(seconds, (int, float)) and not age.get("at_least"):
                remaining = timeout - seconds
                left = f"trial call in {duration(remaining)}" if remaining > 0 else "trial call due (next call)"
        calls = info.get("calls") or {}
        transitions = info.get("transitions") or {}
        workers = info.get("workers_by_state") or {}
        spread = ""
        if sum(workers.values()) > 1:
            spread = "<dt>workers</dt><dd>" + _e(", ".join(f"{n} {s}" for s, n in workers.items())) + "</dd>"
        critical = '<span class="tag">critical</span>' if info.get("critical") else ""
        cards.append(
            f'<article class="breaker b-{_e(state)}" data-breaker="{_e(name)}"><h3><span class="name">{_e(name)}</span>'
            f'{critical}<span class="state">{_e(state.replace("_", "-").upper())}</span>{since}</h3><dl>'
            f"<dt>calls</dt><dd>{_num(calls.get('success'))} ok · {_num(calls.get('failure'))} failed · "
            f"{_num(calls.get('rejected'))} rejected</dd>"
            f"<dt>failures</dt><dd>{_num(info.get('failure_count'))} in a row of {_num(info.get('fail_max'))}</dd>"
            f"<dt>transitions</dt><dd>{_num(transitions.get('open'))} opened · "
            f"{_num(transitions.get('half_open'))} half-open · {_num(transitions.get('closed'))} closed</dd>"
            f"<dt>reset timeout</dt><dd>{_num(timeout, ' s')}{(' · ' + _e(left)) if left else ''}</dd>"
            f"{spread}</dl></article>"
        )
    opened = body.get("open_count") or 0
    summary = f"{len(found)} · {opened} open" if found else "none in this app"
    return (
        f'<section id="breakers"><h2>Circuit breakers <small>{_e(summary)}</small></h2>'
        f'<div class="cards">{"".join(cards)}</div></section>'
    )


def _spark_svg(spark: dict[str, Any], threshold: float) -> str:
    bars = spark.get("bars") or []
    if not bars:
        return ""
    width, height = 300, 48
    slot = width / len(bars)
    rates = [100.0 * b["errors"] / b["requests"] for b in bars if b and b["requests"]]
    top = max([*rates, threshold * 1.5, 1.0])
    rects = []
    for i, bar in enumerate(bars):
        x = i * slot + 0.5
        if bar is None:
            rects.append(f'<rect class="none" x="{x:.1f}" y="{height - 2}" width="{slot - 1:.1f}" height="2"/>')
            continue
        rate = 100.0 * bar["errors"] / bar["requests"] if bar["requests"] else 0.0
        h = max(1.0, rate / top * (height - 4)) if bar["requests"] else 1.0
        kind = "bad" if rate > threshold else ("idle" if not bar["requests"] else "ok")
        tip = f"{bar['errors']} of {bar['requests']} requests failed"
        rects.append(
            f'<rect class="{kind}" x="{x:.1f}" y="{height - h:.1f}" width="{slot - 1:.1f}" height="{h:.1f}">'
            f"<title>{_e(tip)}</title></rect>"
        )
    line_y = height - threshold / top * (height - 4)
    step = spark.get("step_seconds", 30)
    span = spark.get("span_seconds", 900)
    label = f"error rate per {duration(step)}, last {duration(span)}; dashed: threshold {threshold:g}%"
    return (
        f'<figure><svg class="spark" viewBox="0 0 {width} {height}" width="100%" height="{height}" '
        f'preserveAspectRatio="none" role="img" aria-label="{_e(label)}">{"".join(rects)}'
        f'<line class="threshold" x1="0" x2="{width}" y1="{line_y:.1f}" y2="{line_y:.1f}"/></svg>'
        f"<figcaption>{_e(label)}</figcaption></figure>"
    )


def _error_rate(body: dict[str, Any], spark: dict[str, Any]) -> str:
    threshold = float(body.get("threshold_percent") or 0)
    figures = (
        f'<p class="big s-{_e(body.get("status"))}">{_num(body.get("error_rate_percent"), "%", 2)}</p>'
        f"<p>{_num(body.get('error_count'))} errors (5xx or raised) · {_num(body.get('client_error_count'))} client "
        f"errors (4xx) · {_num(body.get('total_requests'))} requests in the last "
        f"{_num(body.get('window_seconds'), ' s')}"
        f" (seen: {_num(body.get('covered_seconds'), ' s')}) · threshold {threshold:g}% from "
        f"{_num(body.get('min_requests'))} requests</p>"
    )
    routes = body.get("top_routes") or []
    rows = [
        [_e(r.get("route")), _num(r.get("errors")), _num(r.get("client_errors")), _num(r.get("requests"))]
        for r in routes
    ]
    table = _table(["route", "errors", "4xx", "requests"], rows, "Top failing routes") if routes else ""
    return f'<section id="errors"><h2>Error rate</h2>{figures}{_spark_svg(spark, threshold)}{table}</section>'


def _row(cells: Sequence[str], css_class: str | None = None) -> str:
    """One table row of cells already escaped."""
    head = "<tr>" if css_class is None else f'<tr class="{css_class}">'
    return head + "".join(f"<td>{cell}</td>" for cell in cells) + "</tr>"


def _table(headers: Sequence[str], rows: Sequence[Sequence[str] | str], caption: str = "") -> str:
    """A table: ``headers`` as text, ``rows`` as lists of escaped cells (or rows made by ``_row``), an optional
    escaped ``caption``."""
    body = "".join(row if isinstance(row, str) else _row(row) for row in rows)
    heading = "".join(f"<th>{_e(h)}</th>" for h in headers)
    return f"<table>{f'<caption>{caption}</caption>' if caption else ''}<tr>{heading}</tr>{body}</table>"


def _bar(percent: Any, warn: float, label: str) -> str:
    """A horizontal bar 0-100% with the warning line."""
    value = float(percent) if isinstance(percent, (int, float)) else 0.0
    kind = "bad" if value > warn else "ok"
    filled = max(0.0, min(100.0, value)) * 2
    return (
        f'<svg class="bar" viewBox="0 0 200 12" width="100%" height="12" preserveAspectRatio="none" role="img" '
        f'aria-label="{_e(label)}"><rect class="track" x="0" y="0" width="200" height="12"/>'
        f'<rect class="{kind}" x="0" y="0" width="{filled:.1f}" height="12"/>'
        f'<line class="warn" x1="{warn * 2:.1f}" x2="{warn * 2:.1f}" y1="0" y2="12"/></svg>'
    )


def _wait(seconds: Any) -> str:
    if not isinstance(seconds, (int, float)):
        return "—"
    return f"{seconds * 1000:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"


def _pools(body: dict[str, Any], timeouts: dict[str, Any]) -> str:
    warn = float(body.get("warn_utilization_percent") or 80)
    found: dict[str, Any] = body.get("pools") or {}
    per_timeout = timeouts.get("pools") or {}
    cards = []
    for name, info in sorted(found.items()):
        current = info.get("current") or {}
        configuration = info.get("configuration") or {}
        utilization = info.get("utilization_percent")
        statement = (per_timeout.get(name) or {}).get("statement_timeout")
        errors = (info.get("connection_errors") or {}).get("recent")
        label = f"{_num(utilization, '%')} of capacity (warn above {warn:g}%)"
        cards.append(
            f'<article class="pool"><h3><span class="name">{_e(name)}</span> <small>{_e(label)}</small></h3>'
            f"{_bar(utilization, warn, label)}<dl>"
            f"<dt>in use</dt><dd>{_num(current.get('checked_out'))} of {_num(configuration.get('total_capacity'))}"
            f" (pool {_num(configuration.get('pool_size'))} + overflow {_num(configuration.get('max_overflow'))})</dd>"
            f"<dt>waiting</dt><dd>{_num(current.get('pending'))}</dd>"
            f"<dt>timeouts</dt><dd>{_num(current.get('timeouts'))} since start</dd>"
            f"<dt>wait p95</dt><dd>{_wait(info.get('wait_time_p95_seconds'))} over "
            f"{_e(duration(info.get('wait_time_window_seconds')))}</dd>"
            f"<dt>statement timeout</dt><dd>{_e(statement or '—')}</dd>"
            f"<dt>connection errors</dt><dd>{_num(errors)} recently</dd></dl></article>"
        )
    inner = "".join(cards) or "<p>No database pool seen.</p>"
    return f'<section id="pools"><h2>Database pools</h2><div class="cards">{inner}</div></section>'


def _resources(body: dict[str, Any], workers: Any) -> str:
    if body.get("available") is False:
        return f'<section id="resources"><h2>Resources</h2><p>{_e(body.get("note"))}</p></section>'
    warned = {w.get("resource"): w for w in body.get("warnings") or [] if isinstance(w, dict)}

    def row(name: str, key: str, percent: Any, text: str) -> str:
        threshold = (warned.get(key) or {}).get("threshold_percent", 90 if key != "open_files" else 80)
        return f"<dt>{_e(name)}</dt><dd>{_e(text)}{_bar(percent, float(threshold), text)}</dd>"

    memory = f"{_num(body.get('memory_mb'), ' MB')} of {_num(body.get('memory_limit_mb'), ' MB')} limit"
    memory += f" ({_num(body.get('memory_percent'), '%')})"
    fds = f"{_num(body.get('open_files'))} of {_num(body.get('open_files_limit'))}"
    fds += f" ({_num(body.get('open_files_percent'), '%')})"
    rows = [
        row("CPU", "cpu", body.get("cpu_percent"), f"{_num(body.get('cpu_percent'), '%')} of the CPUs allowed"),
        row("memory (RSS)", "memory", body.get("memory_percent"), memory),
        row("file descriptors", "open_files", body.get("open_files_percent"), fds),
        f"<dt>threads</dt><dd>{_num(body.get('threads'))}</dd>",
    ]
    per_worker = body.get("per_worker") or []
    lines = [
        [_e(w.get("instance_id")), _num(w.get("cpu_percent"), "%"), _num(w.get("memory_mb"), " MB"),
         _num(w.get("open_files")), _num(w.get("threads"))]
        for w in per_worker
    ]  # fmt: skip
    headers = ["worker", "CPU", "RSS", "fds", "threads"]
    table = _table(headers, lines, f"{_e(workers)} workers") if per_worker else ""
    scope = " <small>whole host</small>" if body.get("scope") == "host" else ""
    return f'<section id="resources"><h2>Resources{scope}</h2><dl class="wide">{"".join(rows)}</dl>{table}</section>'


def _operations(body: dict[str, Any], admin_path: str) -> str:
    found: dict[str, Any] = body.get("operations") or {}

    def row(name: str, info: dict[str, Any]) -> str:
        cells = [_e(name), _num(info.get("in_flight")), _num(info.get("stuck"))]
        cells.append(_e(duration(info.get("oldest_age_seconds"))))
        return _row(cells, "bad" if (info.get("stuck") or 0) > 0 else "")

    ordered = sorted(found.items(), key=lambda kv: (-(kv[1].get("stuck") or 0), kv[0]))
    rows = [row(name, info) for name, info in ordered]
    headers = ["operation", "in flight", "stuck", "oldest"]
    table = _table(headers, rows) if rows else "<p>No tracked operation in flight.</p>"
    threshold = body.get("stuck_threshold_seconds")
    note = (
        f"Stuck: in flight longer than {_e(duration(threshold))}. Cleaning up is an admin action "
        f"(POST {_e(admin_path)}/stuck-operations/cleanup with the admin token), not on this page."
    )
    return (
        f'<section id="operations"><h2>Operations <small>{_num(body.get("in_flight"))} in flight · '
        f'{_num(body.get("stuck_count"))} stuck</small></h2>{table}<p class="note">{note}</p></section>'
    )
