#!/usr/bin/env python3
"""Generate the otel-reliability Grafana dashboards (collector-config/grafana/dashboards/*.json).

The dashboards are code so that every panel follows the same conventions, which a reviewer cannot check by eye
in thousands of lines of JSON:

- a ``datasource`` template variable (no ``__inputs``), so file provisioning and import both work;
- ``job`` and ``instance`` variables from ``label_values(target_info, ...)``; every query filters on them;
- ``$__rate_interval`` in every rate/increase over a panel's time step;
- a unit on every panel;
- only metric names of shared/CONTRACT.md (plus Prometheus's ``up`` and ``target_info``), identical on the
  collector path and the direct path.

Plain dictionaries and the standard library only, deterministic output (sorted keys, fixed ids).

    python collector-config/grafana/generate.py          # write the JSON files
    python collector-config/grafana/generate.py --check  # exit 1 if the committed files differ
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

DASHBOARD_DIR = Path(__file__).resolve().parent / "dashboards"
TAG = "otel-reliability"
DS = {"type": "prometheus", "uid": "${datasource}"}
SEL = 'job=~"$job", instance=~"$instance"'
"""Label matchers that every selector carries."""

Panel = dict[str, Any]


# --- PromQL helpers ----------------------------------------------------------------------------------------


def sel(metric: str, extra: str = "") -> str:
    """``metric{job=~"$job", instance=~"$instance", extra}``."""
    matchers = SEL + (", " + extra if extra else "")
    return f"{metric}{{{matchers}}}"


def rate(metric: str, extra: str = "", window: str = "$__rate_interval") -> str:
    return f"rate({sel(metric, extra)}[{window}])"


HTTP_COUNT = "http_server_request_duration_seconds_count"
STATUS_5XX = 'http_response_status_code=~"5.."'
RAISED_NOT_5XX = 'error_type!="", http_response_status_code!~"5.."'
USED = 'db_client_connection_state="used"'
REJECTED = 'circuit_breaker_outcome="rejected"'
OPERATION_BY = "job, db_system_name, db_operation_name, db_collection_name"
"""A database operation as the slowest-operations panel and the DatabaseOperationSlow alert group it."""


def http_errors_rate(by: str, window: str = "$__rate_interval") -> str:
    """Requests that failed: 5xx responses, plus requests that raised (error_type set) without a 5xx status.

    The two selectors are disjoint, so ``or`` is their union (the same definition as alerts.yml).
    """
    return (
        f"sum by ({by}) (\n"
        f"  {rate(HTTP_COUNT, STATUS_5XX, window)}\n"
        f"  or\n"
        f"  {rate(HTTP_COUNT, RAISED_NOT_5XX, window)}\n"
        f")"
    )


def http_error_ratio(by: str, window: str = "$__rate_interval") -> str:
    return f"{http_errors_rate(by, window)}\n/\nsum by ({by}) ({rate(HTTP_COUNT, window=window)})"


def quantile(q: float, metric: str, by: str) -> str:
    return f"histogram_quantile({q}, sum by (le, {by}) ({rate(metric + '_bucket')}))"


def pool_utilization(by: str) -> str:
    return (
        f"sum by ({by}) ({sel('db_client_connection_count', USED)})\n/\n"
        f"sum by ({by}) ({sel('db_client_connection_max')})"
    )


def breaker_state(state: str) -> str:
    return sel("circuit_breaker_state", f'circuit_breaker_state="{state}"')


BREAKER_STATE_NUMBER = (
    "max by (job, instance, circuit_breaker_name) (\n"
    f"  ({breaker_state('closed')} * 0)\n"
    f"  or ({breaker_state('half_open')} * 1)\n"
    f"  or ({breaker_state('open')} * 2)\n"
    ")"
)
"""0 closed, 1 half open, 2 open for each breaker: one series per breaker for a state timeline. ``max``: under a
prefork server :9464 has one series per worker (``service_instance_id``), and the worst state is the breaker's."""

OPEN_BREAKERS = f"max by (job, instance, circuit_breaker_name) ({breaker_state('open')}) == 1"
"""Breakers open in any worker of an instance: counted once per breaker, for one process and for N workers."""

BREAKER_STATE_MAPPINGS = [
    {
        "type": "value",
        "options": {
            "0": {"text": "closed", "color": "green", "index": 0},
            "1": {"text": "half open", "color": "yellow", "index": 1},
            "2": {"text": "open", "color": "red", "index": 2},
        },
    }
]


# --- panel builders ----------------------------------------------------------------------------------------


def target(expr: str, legend: str = "", ref: str = "A", instant: bool = False) -> dict[str, Any]:
    t: dict[str, Any] = {"datasource": DS, "expr": expr, "refId": ref, "legendFormat": legend or "__auto"}
    if instant:
        t.update({"instant": True, "range": False, "format": "table"})
    return t


def thresholds(*steps: tuple[float | None, str]) -> dict[str, Any]:
    return {"mode": "absolute", "steps": [{"color": c, "value": v} for v, c in steps]}


GREEN = thresholds((None, "green"))


def panel(
    kind: str,
    title: str,
    targets: list[dict[str, Any]],
    unit: str,
    *,
    description: str = "",
    w: int = 12,
    h: int = 8,
    steps: dict[str, Any] | None = None,
    mappings: list[dict[str, Any]] | None = None,
    minimum: float | None = None,
    maximum: float | None = None,
    options: dict[str, Any] | None = None,
    custom: dict[str, Any] | None = None,
) -> Panel:
    defaults: dict[str, Any] = {"unit": unit, "thresholds": steps or GREEN, "mappings": mappings or []}
    if minimum is not None:
        defaults["min"] = minimum
    if maximum is not None:
        defaults["max"] = maximum
    if kind in ("stat", "gauge") or kind == "state-timeline":
        defaults["color"] = {"mode": "thresholds"}
    else:
        defaults["color"] = {"mode": "palette-classic"}
    if custom:
        defaults["custom"] = custom
    base_options: dict[str, Any] = {
        "timeseries": {
            "legend": {
                "displayMode": "table",
                "placement": "bottom",
                "showLegend": True,
                "calcs": ["lastNotNull", "max"],
            },
            "tooltip": {"mode": "multi", "sort": "desc"},
        },
        "stat": {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "colorMode": "background",
            "graphMode": "area",
            "justifyMode": "auto",
            "orientation": "auto",
            "textMode": "auto",
        },
        "gauge": {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "showThresholdLabels": False,
            "showThresholdMarkers": True,
        },
        "state-timeline": {
            "mergeValues": True,
            "showValue": "auto",
            "alignValue": "left",
            "rowHeight": 0.9,
            "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
        },
        "table": {"showHeader": True, "cellHeight": "sm", "footer": {"show": False}},
    }[kind]
    return {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": DS,
        "targets": targets,
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": {**base_options, **(options or {})},
        "gridPos": {"w": w, "h": h},
    }


def timeseries(title: str, targets: list[dict[str, Any]], unit: str, **kw: Any) -> Panel:
    custom = {"drawStyle": "line", "lineWidth": 1, "fillOpacity": 10, "showPoints": "never", "spanNulls": False}
    custom.update(kw.pop("custom", {}) or {})
    return panel("timeseries", title, targets, unit, custom=custom, **kw)


def stat(title: str, expr: str, unit: str, **kw: Any) -> Panel:
    return panel("stat", title, [target(expr)], unit, w=kw.pop("w", 4), h=kw.pop("h", 5), **kw)


def table(title: str, expr: str, unit: str, **kw: Any) -> Panel:
    return panel("table", title, [target(expr, instant=True)], unit, **kw)


# --- dashboards --------------------------------------------------------------------------------------------


def variables() -> list[dict[str, Any]]:
    def query_var(name: str, label: str, query: str) -> dict[str, Any]:
        return {
            "name": name,
            "label": label,
            "type": "query",
            "datasource": DS,
            "query": {"query": query, "refId": f"PrometheusVariableQueryEditor-VariableQuery-{name}"},
            "definition": query,
            "refresh": 2,
            "includeAll": True,
            "multi": True,
            "allValue": ".*",
            "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
            "sort": 1,
            "regex": "",
            "hide": 0,
            "options": [],
        }

    return [
        {
            "name": "datasource",
            "label": "Data source",
            "type": "datasource",
            "query": "prometheus",
            "current": {},
            "hide": 0,
            "includeAll": False,
            "multi": False,
            "options": [],
            "refresh": 1,
            "regex": "",
        },
        # job = service.name (collector path) or the scrape job (direct path); instance = service.instance.id
        # (collector path) or host:port (direct path).
        query_var("job", "Service (job)", "label_values(target_info, job)"),
        query_var("instance", "Instance", 'label_values(target_info{job=~"$job"}, instance)'),
    ]


def layout(panels: list[Panel]) -> list[Panel]:
    """Assign ids and positions: left to right, wrapping at 24 columns."""
    x = y = row_h = 0
    out = []
    for i, p in enumerate(panels, start=1):
        w, h = p["gridPos"]["w"], p["gridPos"]["h"]
        if x + w > 24:
            x, y, row_h = 0, y + row_h, 0
        p = {**p, "id": i, "gridPos": {"x": x, "y": y, "w": w, "h": h}}
        x += w
        row_h = max(row_h, h)
        out.append(p)
    return out


def dashboard(uid: str, title: str, description: str, panels: list[Panel]) -> dict[str, Any]:
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": [TAG],
        "editable": True,
        "graphTooltip": 1,
        "refresh": "30s",
        "schemaVersion": 39,
        "version": 1,
        "time": {"from": "now-3h", "to": "now"},
        "timepicker": {},
        "timezone": "browser",
        "fiscalYearStartMonth": 0,
        "liveNow": False,
        "weekStart": "",
        "annotations": {"list": []},
        "links": [
            {
                "type": "dashboards",
                "tags": [TAG],
                "asDropdown": True,
                "title": "otel-reliability",
                "includeVars": True,
                "keepTime": True,
                "icon": "external link",
                "targetBlank": False,
                "tooltip": "",
                "url": "",
            }
        ],
        "templating": {"list": variables()},
        "panels": layout(panels),
    }


def services_table() -> Panel:
    """One row per service (job) with the checklist's numbers: the overview across a fleet of many services.

    Instant queries by job, merged on the job column. ``instances`` counts target_info, present on the direct
    path, the collector path and remote-written data alike; a service with no open breaker shows 0, not a gap.
    """
    instances = f"max by (job, instance) ({sel('target_info')})"
    columns: list[tuple[str, str, str]] = [
        ("Instances", f"count by (job) ({instances})", "none"),
        ("Open breakers", f"count by (job) ({OPEN_BREAKERS}) or 0 * count by (job) ({instances})", "none"),
        ("Error ratio (5m)", http_error_ratio("job", "5m"), "percentunit"),
        ("Max pool utilization", f"max by (job) ({pool_utilization('job, instance, db_client_connection_pool_name')})",
         "percentunit"),
        ("Stuck operations", f"sum by (job) ({sel('operation_stuck')})", "none"),
        ("Max memory vs limit", f"max by (job) (max by (job, instance) ({sel('process_memory_usage_bytes')}) / "
         f"max by (job, instance) ({sel('process_memory_limit_bytes')}))", "percentunit"),
    ]  # fmt: skip
    refs = "ABCDEF"
    p = panel(
        "table",
        "Services",
        [target(expr, title, ref, instant=True) for (title, expr, _), ref in zip(columns, refs, strict=True)],
        "none",
        description="One row per service in $job: how many instances report, open breakers, error ratio over 5 "
        "minutes, the fullest pool, stuck operations and the highest memory use. The same items as "
        "`otel-reliability check --prometheus`.",
        w=24,
        h=7,
    )
    p["transformations"] = [
        {"id": "merge", "options": {}},
        {
            "id": "organize",
            "options": {
                "excludeByName": {"Time": True},
                "renameByName": {
                    "job": "Service",
                    **{f"Value #{r}": t for (t, _, _), r in zip(columns, refs, strict=True)},
                },
            },
        },
    ]
    p["fieldConfig"]["overrides"] = [
        {"matcher": {"id": "byName", "options": title}, "properties": [{"id": "unit", "value": unit}]}
        for title, _, unit in columns
        if unit != "none"
    ]
    return p


def overview() -> dict[str, Any]:
    open_breakers = f"count({OPEN_BREAKERS}) or vector(0)"
    return dashboard(
        "otel-rel-overview",
        "otel-reliability / Overview",
        "The morning checklist at a glance: open breakers, error ratio, pool utilization, stuck operations, "
        "memory, for the services picked in $job (one row each in the Services table). Anything red has an "
        "alert in alerts.yml and a detail dashboard.",
        [
            stat(
                "Open circuit breakers",
                open_breakers,
                "none",
                steps=thresholds((None, "green"), (1, "red")),
                description="Breakers in state open now. Action: see the Circuit breakers dashboard.",
            ),
            stat(
                "HTTP error ratio (5m)",
                f"sum({http_errors_rate('job', '5m')}) / sum({rate(HTTP_COUNT, window='5m')})",
                "percentunit",
                steps=thresholds((None, "green"), (0.01, "red")),
                description="5xx responses and raised requests over all requests, last 5 minutes. Red above 1 %.",
            ),
            stat(
                "Max pool utilization",
                f"max({pool_utilization('job, instance, db_client_connection_pool_name')})",
                "percentunit",
                steps=thresholds((None, "green"), (0.8, "orange"), (0.95, "red")),
                description="Busiest connection pool: used / max connections. Orange above 80 %.",
            ),
            stat(
                "Pool timeouts (1h)",
                f"sum(increase({sel('db_client_connection_timeouts_total')}[1h])) or vector(0)",
                "none",
                steps=thresholds((None, "green"), (1, "red")),
                description="Connection checkouts that timed out in the last hour.",
            ),
            stat(
                "Stuck operations",
                f"sum({sel('operation_stuck')}) or vector(0)",
                "none",
                steps=thresholds((None, "green"), (1, "red")),
                description="In flight longer than the stuck threshold. Action: the stuck-operations endpoint.",
            ),
            stat(
                "Max memory vs limit",
                f"max(max by (job, instance) ({sel('process_memory_usage_bytes')}) / "
                f"max by (job, instance) ({sel('process_memory_limit_bytes')}))",
                "percentunit",
                steps=thresholds((None, "green"), (0.8, "orange"), (0.9, "red")),
            ),
            services_table(),
            panel(
                "state-timeline",
                "Circuit breakers",
                [target(BREAKER_STATE_NUMBER, "{{job}} {{circuit_breaker_name}} {{instance}}")],
                "none",
                w=24,
                h=7,
                mappings=BREAKER_STATE_MAPPINGS,
                steps=thresholds((None, "green"), (1, "yellow"), (2, "red")),
                custom={"fillOpacity": 80, "lineWidth": 0},
            ),
            timeseries(
                "HTTP error ratio by service",
                [target(http_error_ratio("job"), "{{job}}")],
                "percentunit",
                minimum=0,
                w=12,
            ),
            timeseries(
                "Pool utilization",
                [
                    target(
                        pool_utilization("job, instance, db_client_connection_pool_name"),
                        "{{job}} {{db_client_connection_pool_name}} {{instance}}",
                    )
                ],
                "percentunit",
                minimum=0,
                maximum=1,
                w=12,
            ),
            table(
                "Reporting instances",
                f"{sel('up')} or max by (job, instance) ({sel('target_info')})",
                "none",
                description="Direct path: `up` of each scraped app (0 = down). Collector path: each app instance that "
                "sent metrics recently (it disappears after the collector's metric_expiration when it stops). "
                "Remote-written by the gateways: each instance whose target_info arrived within the store's lookback "
                "(5 minutes in Prometheus).",
                steps=thresholds((None, "red"), (1, "green")),
                w=24,
                h=6,
            ),
        ],
    )


def breakers() -> dict[str, Any]:
    by = "job, instance, circuit_breaker_name"
    return dashboard(
        "otel-rel-breakers",
        "otel-reliability / Circuit breakers",
        "State, calls and transitions of every registered circuit breaker.",
        [
            panel(
                "state-timeline",
                "State per breaker",
                [target(BREAKER_STATE_NUMBER, "{{circuit_breaker_name}} {{instance}}")],
                "none",
                w=24,
                h=9,
                mappings=BREAKER_STATE_MAPPINGS,
                steps=thresholds((None, "green"), (1, "yellow"), (2, "red")),
                custom={"fillOpacity": 80, "lineWidth": 0},
                description="closed / half open / open over time. Short open periods show because one series "
                "per state is reported at every collection.",
            ),
            timeseries(
                "Calls by outcome",
                [
                    target(
                        f"sum by ({by}, circuit_breaker_outcome) ({rate('circuit_breaker_calls_total')})",
                        "{{circuit_breaker_name}} {{circuit_breaker_outcome}}",
                    )
                ],
                "ops",
                description="success, failure, rejected (refused while open).",
            ),
            timeseries(
                "Rejected calls",
                [
                    target(
                        f"sum by ({by}) ({rate('circuit_breaker_calls_total', REJECTED)})",
                        "{{circuit_breaker_name}} {{instance}}",
                    )
                ],
                "ops",
            ),
            timeseries(
                "Transitions",
                [
                    target(
                        f"sum by ({by}, circuit_breaker_state) "
                        f"(increase({sel('circuit_breaker_transitions_total')}[$__rate_interval]))",
                        "{{circuit_breaker_name}} -> {{circuit_breaker_state}}",
                    )
                ],
                "none",
                custom={"drawStyle": "bars", "fillOpacity": 60},
                description="State changes, by the state entered. Many opens in a short time: flapping.",
            ),
            timeseries(
                "Consecutive failures",
                [
                    target(
                        f"max by ({by}) ({sel('circuit_breaker_consecutive_failures')})",
                        "{{circuit_breaker_name}} {{instance}}",
                    )
                ],
                "none",
            ),
            table(
                "Current state",
                f"max by ({by}, circuit_breaker_state) ({sel('circuit_breaker_state')}) == 1",
                "none",
                w=24,
                h=7,
            ),
        ],
    )


def http() -> dict[str, Any]:
    errors_by_route = (
        "topk(10, sum by (job, http_route, http_request_method, http_response_status_code, error_type) (\n"
        f"  increase({sel(HTTP_COUNT, STATUS_5XX)}[$__range])\n"
        "  or\n"
        f"  increase({sel(HTTP_COUNT, RAISED_NOT_5XX)}[$__range])\n"
        ") > 0)"
    )
    return dashboard(
        "otel-rel-http",
        "otel-reliability / HTTP",
        "Request rate, error ratio and latency from the standard http.server.request.duration histogram.",
        [
            timeseries(
                "Request rate by route",
                [target(f"sum by (job, http_route) ({rate(HTTP_COUNT)})", "{{job}} {{http_route}}")],
                "reqps",
            ),
            timeseries(
                "Request rate by status",
                [
                    target(
                        f"sum by (job, http_response_status_code) ({rate(HTTP_COUNT)})",
                        "{{job}} {{http_response_status_code}}",
                    )
                ],
                "reqps",
            ),
            timeseries(
                "Error ratio",
                [target(http_error_ratio("job"), "{{job}}")],
                "percentunit",
                minimum=0,
                steps=thresholds((None, "green"), (0.01, "red")),
                custom={"thresholdsStyle": {"mode": "line"}},
                description="5xx responses and raised requests over all requests; the alert fires above 1 %.",
            ),
            timeseries(
                "Latency p50 / p99",
                [
                    target(quantile(0.5, "http_server_request_duration_seconds", "job"), "p50 {{job}}", "A"),
                    target(quantile(0.99, "http_server_request_duration_seconds", "job"), "p99 {{job}}", "B"),
                ],
                "s",
            ),
            timeseries(
                "p99 latency by route",
                [
                    target(
                        quantile(0.99, "http_server_request_duration_seconds", "job, http_route"),
                        "{{job}} {{http_route}}",
                    )
                ],
                "s",
            ),
            table(
                "Top failing routes (time range)",
                errors_by_route,
                "none",
                description="Failed requests in the selected time range, by route, status and error type.",
            ),
        ],
    )


def pools() -> dict[str, Any]:
    by = "job, instance, db_client_connection_pool_name"
    legend = "{{db_client_connection_pool_name}} {{instance}}"
    return dashboard(
        "otel-rel-db-pools",
        "otel-reliability / Database pools",
        "Connection pools (OpenTelemetry db.client.connection.* conventions), transaction retries, the "
        "statement timeout and the slowest database operations (db.client.operation.duration).",
        [
            timeseries(
                "Utilization (used / max)",
                [target(pool_utilization(by), legend)],
                "percentunit",
                minimum=0,
                maximum=1,
                steps=thresholds((None, "green"), (0.8, "red")),
                custom={"thresholdsStyle": {"mode": "line"}},
            ),
            timeseries(
                "Connections",
                [
                    target(
                        f"sum by ({by}, db_client_connection_state) ({sel('db_client_connection_count')})",
                        "{{db_client_connection_pool_name}} {{db_client_connection_state}} {{instance}}",
                        "A",
                    ),
                    target(
                        f"sum by ({by}) ({sel('db_client_connection_max')})",
                        "{{db_client_connection_pool_name}} max {{instance}}",
                        "B",
                    ),
                    target(
                        f"sum by ({by}) ({sel('db_client_connection_idle_max')})",
                        "{{db_client_connection_pool_name}} idle max {{instance}}",
                        "C",
                    ),
                ],
                "none",
            ),
            timeseries(
                "Pending requests",
                [target(f"sum by ({by}) ({sel('db_client_connection_pending_requests')})", legend)],
                "none",
                description="Checkouts waiting for a free connection.",
            ),
            timeseries(
                "Timeouts",
                [
                    target(
                        f"sum by ({by}) (increase({sel('db_client_connection_timeouts_total')}[$__rate_interval]))",
                        legend,
                    )
                ],
                "none",
                custom={"drawStyle": "bars", "fillOpacity": 60},
            ),
            timeseries(
                "Wait time p50 / p99",
                [
                    target(quantile(0.5, "db_client_connection_wait_time_seconds", by), "p50 " + legend, "A"),
                    target(quantile(0.99, "db_client_connection_wait_time_seconds", by), "p99 " + legend, "B"),
                ],
                "s",
            ),
            timeseries(
                "Use time p99 / create time p99",
                [
                    target(quantile(0.99, "db_client_connection_use_time_seconds", by), "use " + legend, "A"),
                    target(quantile(0.99, "db_client_connection_create_time_seconds", by), "create " + legend, "B"),
                ],
                "s",
            ),
            timeseries(
                "Transaction retries",
                [
                    target(
                        f"sum by ({by}, error_type) ({rate('db_client_transaction_retries_total')})",
                        "{{db_client_connection_pool_name}} {{error_type}}",
                    )
                ],
                "ops",
            ),
            stat(
                "Statement timeout",
                f"min({sel('db_client_statement_timeout_seconds')})",
                "s",
                w=6,
                h=8,
                steps=thresholds((None, "red"), (1, "green")),
                description="Smallest statement_timeout over the selected pools; 0 = none. Expected 300 s.",
            ),
            table(
                "Statement timeout per pool",
                f"max by ({by}) ({sel('db_client_statement_timeout_seconds')})",
                "s",
                w=6,
                h=8,
            ),
            timeseries(
                "Slowest operations (p99)",
                [
                    target(
                        f"topk(10, {quantile(0.99, 'db_client_operation_duration_seconds', OPERATION_BY)})",
                        "{{db_operation_name}} {{db_collection_name}} {{db_system_name}} {{job}}",
                    )
                ],
                "s",
                w=24,
                description="The ten operations (statement keyword and first table) with the highest p99 of "
                "db.client.operation.duration: time in the driver's execute, without the wait for a connection "
                "(that is the wait time panel). An error_type series is in the same histogram.",
            ),
        ],
    )


def process() -> dict[str, Any]:
    by = "job, instance"
    return dashboard(
        "otel-rel-process",
        "otel-reliability / Process",
        "CPU, memory against the limit, file descriptors and threads of each process.",
        [
            timeseries(
                "CPU utilization",
                [target(f"max by ({by}) ({sel('process_cpu_utilization')})", "{{instance}}")],
                "percentunit",
                minimum=0,
                description="Fraction of the CPUs the process may use (1 = all of them).",
            ),
            timeseries(
                "Memory vs limit",
                [
                    target(f"max by ({by}) ({sel('process_memory_usage_bytes')})", "rss {{instance}}", "A"),
                    target(f"max by ({by}) ({sel('process_memory_limit_bytes')})", "limit {{instance}}", "B"),
                ],
                "bytes",
                minimum=0,
            ),
            panel(
                "gauge",
                "Memory used of limit",
                [
                    target(
                        f"max by ({by}) ({sel('process_memory_usage_bytes')}) / "
                        f"max by ({by}) ({sel('process_memory_limit_bytes')})",
                        "{{instance}}",
                    )
                ],
                "percentunit",
                minimum=0,
                maximum=1,
                w=8,
                steps=thresholds((None, "green"), (0.8, "orange"), (0.9, "red")),
            ),
            timeseries(
                "Open file descriptors",
                [target(f"max by ({by}) ({sel('process_unix_file_descriptor_count')})", "{{instance}}")],
                "none",
                w=8,
            ),
            timeseries(
                "Threads", [target(f"max by ({by}) ({sel('process_thread_count')})", "{{instance}}")], "none", w=8
            ),
        ],
    )


def operations() -> dict[str, Any]:
    by = "job, instance, operation_name"
    legend = "{{operation_name}} {{instance}}"
    return dashboard(
        "otel-rel-operations",
        "otel-reliability / Operations",
        "Long-running operations: in flight, stuck (longer than the stuck threshold) and the oldest one's age.",
        [
            timeseries("In flight", [target(f"sum by ({by}) ({sel('operation_in_flight')})", legend)], "none", w=8),
            timeseries(
                "Stuck",
                [target(f"sum by ({by}) ({sel('operation_stuck')})", legend)],
                "none",
                w=8,
                steps=thresholds((None, "green"), (1, "red")),
            ),
            timeseries(
                "Oldest in flight", [target(f"max by ({by}) ({sel('operation_oldest_age_seconds')})", legend)], "s", w=8
            ),
            table(
                "Stuck now",
                f"sum by ({by}) ({sel('operation_stuck')}) > 0",
                "none",
                w=24,
                h=6,
                description="Action: GET /api/admin/monitoring/stuck-operations, then the cleanup endpoint.",
            ),
        ],
    )


DASHBOARDS = {
    "overview.json": overview,
    "circuit-breakers.json": breakers,
    "http.json": http,
    "db-pools.json": pools,
    "process.json": process,
    "operations.json": operations,
}


def render(build: Any) -> str:
    return json.dumps(build(), indent=2, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if a committed dashboard differs")
    args = parser.parse_args(argv)
    stale = []
    for name, build in DASHBOARDS.items():
        path = DASHBOARD_DIR / name
        text = render(build)
        if args.check:
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                stale.append(name)
        else:
            DASHBOARD_DIR.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
    extra = (
        sorted(p.name for p in DASHBOARD_DIR.glob("*.json") if p.name not in DASHBOARDS)
        if DASHBOARD_DIR.exists()
        else []
    )
    if args.check and (stale or extra):
        for name in stale:
            print(f"{DASHBOARD_DIR / name} differs from generate.py's output", file=sys.stderr)
        for name in extra:
            print(f"{DASHBOARD_DIR / name} is not generated by generate.py", file=sys.stderr)
        print("run: python collector-config/grafana/generate.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
