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

Built with Grafana's typed builders (``grafana-foundation-sdk``, the ``dashboards`` extra: only generating needs
it, Grafana provisions the committed JSON); deterministic output (sorted keys, fixed ids). Metric and label names
are the Prometheus forms of otel_reliability/semconv.py (tests/test_architecture.py checks every one).

    python collector-config/grafana/generate.py          # write the JSON files
    python collector-config/grafana/generate.py --check  # exit 1 if the committed files differ
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.builders import dashboard, gauge, prometheus, stat, statetimeline, table, timeseries
from grafana_foundation_sdk.cog.builder import Builder
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common as cm
from grafana_foundation_sdk.models import dashboard as dm
from grafana_foundation_sdk.models import prometheus as prom_models

DASHBOARD_DIR = Path(__file__).resolve().parent / "dashboards"
TAG = "otel-reliability"
DS = dm.DataSourceRef(type_val="prometheus", uid="${datasource}")
SEL = 'job=~"$job", instance=~"$instance"'
"""Label matchers that every selector carries."""

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


# --- panel builders ----------------------------------------------------------------------------------------


def target(expr: str, legend: str = "", ref: str = "A", instant: bool = False) -> prometheus.Dataquery:
    query = prometheus.Dataquery().datasource(DS).expr(expr).ref_id(ref).legend_format(legend or "__auto")
    if instant:
        query = query.instant().format(prom_models.PromQueryFormat.TABLE)
    return query


def thresholds(*steps: tuple[float | None, str]) -> dashboard.ThresholdsConfig:
    return (
        dashboard.ThresholdsConfig()
        .mode(dm.ThresholdsMode.ABSOLUTE)
        .steps([dm.Threshold(value=v, color=c) for v, c in steps])
    )


GREEN = ((None, "green"),)

BREAKER_STATE_MAPPINGS: list[dm.ValueMapping] = [
    dm.ValueMap(
        options={
            "0": dm.ValueMappingResult(text="closed", color="green", index=0),
            "1": dm.ValueMappingResult(text="half open", color="yellow", index=1),
            "2": dm.ValueMappingResult(text="open", color="red", index=2),
        }
    )
]

# Descriptions of the panels whose call does not give one (Grafana shows it in the panel's (i) tooltip). Every panel
# has one: ``common`` raises for a title that has neither (dashboard-linter's panel-title-description rule).
DESCRIPTIONS = {
    "Rejected calls": "Calls refused without reaching the dependency because the breaker was open, per second.",
    "Consecutive failures": "Failures since the last success; the breaker opens when this reaches its fail_max.",
    "Current state": "Each breaker's state now: closed, half open (reset timeout passed: the next call is a trial) "
    "or open.",
    "Utilization (used / max)": "Connections in use over pool_size + max_overflow. The alert fires above 80 % for "
    "5 minutes.",
    "Connections": "Connections by state: used (checked out) and idle (in the pool).",
    "Timeouts": "Checkouts that gave up waiting for a connection; each one failed a request.",
    "Wait time p50 / p99": "How long a checkout waited for a free connection.",
    "Use time p99 / create time p99": "How long a connection stayed checked out, and how long opening one took.",
    "Transaction retries": "run_in_transaction retries, by the transient error that caused them.",
    "Statement timeout per pool": "The server's statement_timeout per pool (0 = none); expected 300 s.",
    "Request rate by route": "Requests per second by route template (health and metrics paths excluded).",
    "Request rate by status": "Requests per second by HTTP status code.",
    "Latency p50 / p99": "Request duration percentiles over all routes of the service.",
    "p99 latency by route": "The slowest routes by their 99th percentile.",
    "In flight": "track_operation blocks and database rows in progress now.",
    "Stuck": "Operations in flight longer than the stuck threshold (default 2 h); they will not finish by themselves.",
    "Oldest in flight": "Age of the oldest operation in progress, per operation name.",
    "Max memory vs limit": "The highest RSS over memory limit of any instance. The alert fires above 90 %.",
    "Circuit breakers": "Every breaker's state over time; a short open period shows as well (one series per state).",
    "HTTP error ratio by service": "5xx responses and raised requests over all requests, per service.",
    "Pool utilization": "Used over max connections of every pool.",
    "Memory vs limit": "Resident memory and the limit it is held to (cgroup limit, else physical memory).",
    "Memory used of limit": "Resident memory as a share of the limit. The alert fires above 90 % for 5 minutes.",
    "Open file descriptors": "File descriptors the process has open (sockets included).",
    "Threads": "Threads of the process.",
    "SLO error budget left (30 days)": "Share of each SLO's 30-day error budget not spent yet (slo.yml's "
    "job_slo:error_budget_remaining:ratio): 100 % untouched, 0 spent, below 0 overspent.",
    "SLO bad share (1 h)": "Share of requests that spent budget over the last hour, per service and SLO "
    "(availability: failed; latency: slower than the threshold). The page fires at 14.4x the allowed share.",
}

AnyPanel = TypeVar("AnyPanel", timeseries.Panel, stat.Panel, gauge.Panel, statetimeline.Panel, table.Panel)
PanelBuilder = timeseries.Panel | stat.Panel | gauge.Panel | statetimeline.Panel | table.Panel


def common(
    p: AnyPanel,
    title: str,
    targets: list[prometheus.Dataquery],
    unit: str,
    *,
    description: str = "",
    w: int = 12,
    h: int = 8,
    steps: tuple[tuple[float | None, str], ...] = GREEN,
    minimum: float | None = None,
    maximum: float | None = None,
    color: dm.FieldColorModeId = dm.FieldColorModeId.PALETTE_CLASSIC,
    mappings: list[dm.ValueMapping] | None = None,
) -> AnyPanel:
    """What every panel carries: title, description, data source, targets, unit, thresholds, colour mode, size."""
    p = (
        p.title(title)
        .description(description or DESCRIPTIONS[title])
        .datasource(DS)
        .targets(list(targets))
        .unit(unit)
        .thresholds(thresholds(*steps))
        .mappings(mappings or [])
        .color_scheme(dashboard.FieldColor().mode(color))
        .span(w)
        .height(h)
    )
    if minimum is not None:
        p = p.min(minimum)
    if maximum is not None:
        p = p.max(maximum)
    return p


def timeseries_panel(
    title: str,
    targets: list[prometheus.Dataquery],
    unit: str,
    *,
    bars: bool = False,
    threshold_line: bool = False,
    **kw: Any,
) -> timeseries.Panel:
    p = (
        timeseries.Panel()
        .draw_style(cm.GraphDrawStyle.BARS if bars else cm.GraphDrawStyle.LINE)
        .line_width(1)
        .fill_opacity(60 if bars else 10)
        .show_points(cm.VisibilityMode.NEVER)
        .span_nulls(False)
        .legend(
            common_builders.VizLegendOptions()
            .display_mode(cm.LegendDisplayMode.TABLE)
            .placement(cm.LegendPlacement.BOTTOM)
            .show_legend(True)
            .calcs(["lastNotNull", "max"])
        )
        .tooltip(common_builders.VizTooltipOptions().mode(cm.TooltipDisplayMode.MULTI).sort(cm.SortOrder.DESCENDING))
    )
    if threshold_line:
        p = p.thresholds_style(common_builders.GraphThresholdsStyleConfig().mode(cm.GraphThresholdsStyleMode.LINE))
    return common(p, title, targets, unit, **kw)


def reduce_last() -> common_builders.ReduceDataOptions:
    return common_builders.ReduceDataOptions().calcs(["lastNotNull"]).values(False)


def stat_panel(title: str, expr: str, unit: str, *, w: int = 4, h: int = 5, legend: str = "", **kw: Any) -> stat.Panel:
    p = (
        stat.Panel()
        .reduce_options(reduce_last())
        .color_mode(cm.BigValueColorMode.BACKGROUND)
        .graph_mode(cm.BigValueGraphMode.AREA)
        .justify_mode(cm.BigValueJustifyMode.AUTO)
        .orientation(cm.VizOrientation.AUTO)
        .text_mode(cm.BigValueTextMode.AUTO)
    )
    return common(p, title, [target(expr, legend)], unit, w=w, h=h, color=dm.FieldColorModeId.THRESHOLDS, **kw)


def gauge_panel(title: str, targets: list[prometheus.Dataquery], unit: str, **kw: Any) -> gauge.Panel:
    p = gauge.Panel().reduce_options(reduce_last()).show_threshold_labels(False).show_threshold_markers(True)
    return common(p, title, targets, unit, color=dm.FieldColorModeId.THRESHOLDS, **kw)


def breaker_timeline(title: str, legend: str, h: int, **kw: Any) -> statetimeline.Panel:
    """0 closed / 1 half open / 2 open per breaker, from BREAKER_STATE_NUMBER."""
    p = (
        statetimeline.Panel()
        .merge_values(True)
        .show_value(cm.VisibilityMode.AUTO)
        .align_value(cm.TimelineValueAlignment.LEFT)
        .row_height(0.9)
        .legend(
            common_builders.VizLegendOptions()
            .display_mode(cm.LegendDisplayMode.LIST)
            .placement(cm.LegendPlacement.BOTTOM)
            .show_legend(True)
        )
        .fill_opacity(80)
        .line_width(0)
    )
    return common(
        p,
        title,
        [target(BREAKER_STATE_NUMBER, legend)],
        "none",
        w=24,
        h=h,
        steps=((None, "green"), (1, "yellow"), (2, "red")),
        color=dm.FieldColorModeId.THRESHOLDS,
        mappings=BREAKER_STATE_MAPPINGS,
        **kw,
    )


def table_panel(title: str, targets: list[prometheus.Dataquery], unit: str, **kw: Any) -> table.Panel:
    p = (
        table.Panel()
        .show_header(True)
        .cell_height(cm.TableCellHeight.SM)
        .footer(common_builders.TableFooterOptions().show(False))
    )
    return common(p, title, targets, unit, **kw)


def instant_table(title: str, expr: str, unit: str, **kw: Any) -> table.Panel:
    return table_panel(title, [target(expr, instant=True)], unit, **kw)


# --- dashboards --------------------------------------------------------------------------------------------


def query_variable(name: str, label: str, query: str) -> dashboard.QueryVariable:
    return (
        dashboard.QueryVariable(name)
        .label(label)
        .datasource(DS)
        .query({"query": query, "refId": f"PrometheusVariableQueryEditor-VariableQuery-{name}"})
        .refresh(dm.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .include_all(True)
        .multi(True)
        .all_value(".+")
        .current(dm.VariableOption(selected=True, text=["All"], value=["$__all"]))
        .sort(dm.VariableSort.ALPHABETICAL_ASC)
        .regex("")
        .hide(dm.VariableHide.DONT_HIDE)
        .options([])
    )


def variables() -> list[Builder[dm.VariableModel]]:
    return [
        dashboard.DatasourceVariable("datasource")
        .label("Data source")
        .type("prometheus")
        .hide(dm.VariableHide.DONT_HIDE)
        .multi(False)
        .include_all(False),
        # job = service.name (collector path) or the scrape job (direct path); instance = service.instance.id
        # (collector path) or host:port (direct path).
        query_variable("job", "Job", "label_values(target_info, job)"),
        query_variable("instance", "Instance", 'label_values(target_info{job=~"$job"}, instance)'),
    ]


def build(uid: str, title: str, description: str, panels: list[PanelBuilder]) -> dm.Dashboard:
    """A dashboard with the shared variables, links and time settings; panels laid out left to right, wrapping at
    24 columns (the SDK's layout), with ids in order."""
    board = (
        dashboard.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags([TAG])
        .readonly()
        .tooltip(dm.DashboardCursorSync.CROSSHAIR)
        .refresh("30s")
        .version(1)
        .time("now-3h", "now")
        .timezone("browser")
        .fiscal_year_start_month(0)
        .live_now(False)
        .week_start("")
        .link(
            dashboard.DashboardLink("otel-reliability")
            .type(dm.DashboardLinkType.DASHBOARDS)
            .tags([TAG])
            .as_dropdown(True)
            .include_vars(True)
            .keep_time(True)
            .icon("external link")
            .target_blank(False)
            .tooltip("")
            .url("")
        )
        .variables(variables())
    )
    for i, p in enumerate(panels, start=1):
        board = board.with_panel(p.id(i))
    built = board.build()
    for panel in built.panels or []:
        pos = panel.grid_pos
        if pos is not None and pos.x + pos.w > 24:  # the SDK wraps only after a row is full: keep rows at 24
            raise ValueError(f"{uid}: panel {panel.title!r} ends at column {pos.x + pos.w} (> 24)")
    return built


def services_table() -> table.Panel:
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
    organize = {
        "excludeByName": {"Time": True},
        "renameByName": {"job": "Service", **{f"Value #{r}": t for (t, _, _), r in zip(columns, refs, strict=True)}},
    }
    p = table_panel(
        "Services",
        [target(expr, title, ref, instant=True) for (title, expr, _), ref in zip(columns, refs, strict=True)],
        "none",
        description="One row per service in $job: how many instances report, open breakers, error ratio over 5 "
        "minutes, the fullest pool, stuck operations and the highest memory use. The same items as "
        "`otel-reliability check --prometheus`.",
        w=24,
        h=7,
    ).transformations(
        [
            dm.DataTransformerConfig(id_val="merge", options={}),
            dm.DataTransformerConfig(id_val="organize", options=organize),
        ]
    )
    for title, _, unit in columns:
        if unit != "none":
            p = p.override_by_name(title, [dm.DynamicConfigValue(id_val="unit", value=unit)])
    return p


def overview() -> dm.Dashboard:
    open_breakers = f"count({OPEN_BREAKERS}) or vector(0)"
    return build(
        "otel-rel-overview",
        "otel-reliability / Overview",
        "The morning checklist at a glance: open breakers, error ratio, pool utilization, stuck operations, "
        "memory, the SLOs' error budgets, for the services picked in $job (one row each in the Services table). "
        "Anything red has an alert in alerts.yml or slo.yml and a detail dashboard.",
        [
            stat_panel(
                "Open circuit breakers",
                open_breakers,
                "none",
                steps=((None, "green"), (1, "red")),
                description="Breakers in state open now. Action: see the Circuit breakers dashboard.",
            ),
            stat_panel(
                "HTTP error ratio (5m)",
                f"sum({http_errors_rate('job', '5m')}) / sum({rate(HTTP_COUNT, window='5m')})",
                "percentunit",
                steps=((None, "green"), (0.01, "red")),
                description="5xx responses and raised requests over all requests, last 5 minutes. Red above 1 %.",
            ),
            stat_panel(
                "Max pool utilization",
                f"max({pool_utilization('job, instance, db_client_connection_pool_name')})",
                "percentunit",
                steps=((None, "green"), (0.8, "orange"), (0.95, "red")),
                description="Busiest connection pool: used / max connections. Orange above 80 %.",
            ),
            stat_panel(
                "Pool timeouts (1h)",
                f"sum(increase({sel('db_client_connection_timeouts_total')}[1h])) or vector(0)",
                "none",
                steps=((None, "green"), (1, "red")),
                description="Connection checkouts that timed out in the last hour.",
            ),
            stat_panel(
                "Stuck operations",
                f"sum({sel('operation_stuck')}) or vector(0)",
                "none",
                steps=((None, "green"), (1, "red")),
                description="In flight longer than the stuck threshold. Action: the stuck-operations endpoint.",
            ),
            stat_panel(
                "Max memory vs limit",
                f"max(max by (job, instance) ({sel('process_memory_usage_bytes')}) / "
                f"max by (job, instance) ({sel('process_memory_limit_bytes')}))",
                "percentunit",
                steps=((None, "green"), (0.8, "orange"), (0.9, "red")),
            ),
            services_table(),
            # SLOs are per service: slo.yml records them by job only, so these two filter on $job alone.
            stat_panel(
                "SLO error budget left (30 days)",
                'job_slo:error_budget_remaining:ratio{job=~"$job"}',
                "percentunit",
                legend="{{job}} {{slo}}",
                steps=((None, "red"), (0, "orange"), (0.25, "green")),
                w=8,
                h=6,
            ),
            timeseries_panel(
                "SLO bad share (1 h)",
                [target('job_slo:request_errors:ratio_rate1h{job=~"$job"}', "{{job}} {{slo}}")],
                "percentunit",
                minimum=0,
                w=16,
                h=6,
            ),
            breaker_timeline("Circuit breakers", "{{job}} {{circuit_breaker_name}} {{instance}}", h=7),
            timeseries_panel(
                "HTTP error ratio by service",
                [target(http_error_ratio("job"), "{{job}}")],
                "percentunit",
                minimum=0,
                w=12,
            ),
            timeseries_panel(
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
            instant_table(
                "Reporting instances",
                f"{sel('up')} or max by (job, instance) ({sel('target_info')})",
                "none",
                description="Direct path: `up` of each scraped app (0 = down). Collector path: each app instance that "
                "sent metrics recently (it disappears after the collector's metric_expiration when it stops). "
                "Remote-written by the gateways: each instance whose target_info arrived within the store's lookback "
                "(5 minutes in Prometheus).",
                steps=((None, "red"), (1, "green")),
                w=24,
                h=6,
            ),
        ],
    )


def breakers() -> dm.Dashboard:
    by = "job, instance, circuit_breaker_name"
    return build(
        "otel-rel-breakers",
        "otel-reliability / Circuit breakers",
        "State, calls and transitions of every registered circuit breaker.",
        [
            breaker_timeline(
                "State per breaker",
                "{{circuit_breaker_name}} {{instance}}",
                h=9,
                description="closed / half open / open over time. Short open periods show because one series "
                "per state is reported at every collection.",
            ),
            timeseries_panel(
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
            timeseries_panel(
                "Rejected calls",
                [
                    target(
                        f"sum by ({by}) ({rate('circuit_breaker_calls_total', REJECTED)})",
                        "{{circuit_breaker_name}} {{instance}}",
                    )
                ],
                "ops",
            ),
            timeseries_panel(
                "Transitions",
                [
                    target(
                        f"sum by ({by}, circuit_breaker_state) "
                        f"(increase({sel('circuit_breaker_transitions_total')}[$__rate_interval]))",
                        "{{circuit_breaker_name}} -> {{circuit_breaker_state}}",
                    )
                ],
                "none",
                bars=True,
                description="State changes, by the state entered. Many opens in a short time: flapping.",
            ),
            timeseries_panel(
                "Consecutive failures",
                [
                    target(
                        f"max by ({by}) ({sel('circuit_breaker_consecutive_failures')})",
                        "{{circuit_breaker_name}} {{instance}}",
                    )
                ],
                "none",
            ),
            instant_table(
                "Current state",
                f"max by ({by}, circuit_breaker_state) ({sel('circuit_breaker_state')}) == 1",
                "none",
                w=24,
                h=7,
            ),
        ],
    )


def http() -> dm.Dashboard:
    errors_by_route = (
        "topk(10, sum by (job, http_route, http_request_method, http_response_status_code, error_type) (\n"
        f"  increase({sel(HTTP_COUNT, STATUS_5XX)}[$__range])\n"
        "  or\n"
        f"  increase({sel(HTTP_COUNT, RAISED_NOT_5XX)}[$__range])\n"
        ") > 0)"
    )
    return build(
        "otel-rel-http",
        "otel-reliability / HTTP",
        "Request rate, error ratio and latency from the standard http.server.request.duration histogram.",
        [
            timeseries_panel(
                "Request rate by route",
                [target(f"sum by (job, http_route) ({rate(HTTP_COUNT)})", "{{job}} {{http_route}}")],
                "reqps",
            ),
            timeseries_panel(
                "Request rate by status",
                [
                    target(
                        f"sum by (job, http_response_status_code) ({rate(HTTP_COUNT)})",
                        "{{job}} {{http_response_status_code}}",
                    )
                ],
                "reqps",
            ),
            timeseries_panel(
                "Error ratio",
                [target(http_error_ratio("job"), "{{job}}")],
                "percentunit",
                minimum=0,
                steps=((None, "green"), (0.01, "red")),
                threshold_line=True,
                description="5xx responses and raised requests over all requests; the alert fires above 1 %.",
            ),
            timeseries_panel(
                "Latency p50 / p99",
                [
                    target(quantile(0.5, "http_server_request_duration_seconds", "job"), "p50 {{job}}", "A"),
                    target(quantile(0.99, "http_server_request_duration_seconds", "job"), "p99 {{job}}", "B"),
                ],
                "s",
            ),
            timeseries_panel(
                "p99 latency by route",
                [
                    target(
                        quantile(0.99, "http_server_request_duration_seconds", "job, http_route"),
                        "{{job}} {{http_route}}",
                    )
                ],
                "s",
            ),
            instant_table(
                "Top failing routes (time range)",
                errors_by_route,
                "none",
                description="Failed requests in the selected time range, by route, status and error type.",
            ),
        ],
    )


def pools() -> dm.Dashboard:
    by = "job, instance, db_client_connection_pool_name"
    legend = "{{db_client_connection_pool_name}} {{instance}}"
    return build(
        "otel-rel-db-pools",
        "otel-reliability / Database pools",
        "Connection pools (OpenTelemetry db.client.connection.* conventions), transaction retries, the "
        "statement timeout and the slowest database operations (db.client.operation.duration).",
        [
            timeseries_panel(
                "Utilization (used / max)",
                [target(pool_utilization(by), legend)],
                "percentunit",
                minimum=0,
                maximum=1,
                steps=((None, "green"), (0.8, "red")),
                threshold_line=True,
            ),
            timeseries_panel(
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
            timeseries_panel(
                "Pending requests",
                [target(f"sum by ({by}) ({sel('db_client_connection_pending_requests')})", legend)],
                "none",
                description="Checkouts waiting for a free connection.",
            ),
            timeseries_panel(
                "Timeouts",
                [
                    target(
                        f"sum by ({by}) (increase({sel('db_client_connection_timeouts_total')}[$__rate_interval]))",
                        legend,
                    )
                ],
                "none",
                bars=True,
            ),
            timeseries_panel(
                "Wait time p50 / p99",
                [
                    target(quantile(0.5, "db_client_connection_wait_time_seconds", by), "p50 " + legend, "A"),
                    target(quantile(0.99, "db_client_connection_wait_time_seconds", by), "p99 " + legend, "B"),
                ],
                "s",
            ),
            timeseries_panel(
                "Use time p99 / create time p99",
                [
                    target(quantile(0.99, "db_client_connection_use_time_seconds", by), "use " + legend, "A"),
                    target(quantile(0.99, "db_client_connection_create_time_seconds", by), "create " + legend, "B"),
                ],
                "s",
            ),
            timeseries_panel(
                "Transaction retries",
                [
                    target(
                        f"sum by ({by}, error_type) ({rate('db_client_transaction_retries_total')})",
                        "{{db_client_connection_pool_name}} {{error_type}}",
                    )
                ],
                "ops",
            ),
            stat_panel(
                "Statement timeout",
                f"min({sel('db_client_statement_timeout_seconds')})",
                "s",
                w=6,
                h=8,
                steps=((None, "red"), (1, "green")),
                description="Smallest statement_timeout over the selected pools; 0 = none. Expected 300 s.",
            ),
            instant_table(
                "Statement timeout per pool",
                f"max by ({by}) ({sel('db_client_statement_timeout_seconds')})",
                "s",
                w=6,
                h=8,
            ),
            timeseries_panel(
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


def process() -> dm.Dashboard:
    by = "job, instance"
    return build(
        "otel-rel-process",
        "otel-reliability / Process",
        "CPU, memory against the limit, file descriptors and threads of each process.",
        [
            timeseries_panel(
                "CPU utilization",
                [target(f"max by ({by}) ({sel('process_cpu_utilization')})", "{{instance}}")],
                "percentunit",
                minimum=0,
                description="Fraction of the CPUs the process may use (1 = all of them).",
            ),
            timeseries_panel(
                "Memory vs limit",
                [
                    target(f"max by ({by}) ({sel('process_memory_usage_bytes')})", "rss {{instance}}", "A"),
                    target(f"max by ({by}) ({sel('process_memory_limit_bytes')})", "limit {{instance}}", "B"),
                ],
                "bytes",
                minimum=0,
            ),
            gauge_panel(
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
                steps=((None, "green"), (0.8, "orange"), (0.9, "red")),
            ),
            timeseries_panel(
                "Open file descriptors",
                [target(f"max by ({by}) ({sel('process_unix_file_descriptor_count')})", "{{instance}}")],
                "none",
                w=8,
            ),
            timeseries_panel(
                "Threads", [target(f"max by ({by}) ({sel('process_thread_count')})", "{{instance}}")], "none", w=8
            ),
        ],
    )


def operations() -> dm.Dashboard:
    by = "job, instance, operation_name"
    legend = "{{operation_name}} {{instance}}"
    return build(
        "otel-rel-operations",
        "otel-reliability / Operations",
        "Long-running operations: in flight, stuck (longer than the stuck threshold) and the oldest one's age.",
        [
            timeseries_panel(
                "In flight", [target(f"sum by ({by}) ({sel('operation_in_flight')})", legend)], "none", w=8
            ),
            timeseries_panel(
                "Stuck",
                [target(f"sum by ({by}) ({sel('operation_stuck')})", legend)],
                "none",
                w=8,
                steps=((None, "green"), (1, "red")),
            ),
            timeseries_panel(
                "Oldest in flight", [target(f"max by ({by}) ({sel('operation_oldest_age_seconds')})", legend)], "s", w=8
            ),
            instant_table(
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


def render(make: Callable[[], dm.Dashboard]) -> str:
    return json.dumps(make(), cls=JSONEncoder, indent=2, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if a committed dashboard differs")
    args = parser.parse_args(argv)
    stale = []
    for name, make in DASHBOARDS.items():
        path = DASHBOARD_DIR / name
        text = render(make)
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
