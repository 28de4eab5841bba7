"""Service level objectives: the two SLIs, their objectives, and the Prometheus rules that watch them.

Two SLIs, both from ``http.server.request.duration`` (the histogram every HTTP layer writes, so no new cost on the
request path):

- availability: the share of requests that did not fail (5xx, or raised: ``error_type`` set), the same definition
  as the health error rate and ``HighErrorRatio``;
- latency: the share of requests that finished within the threshold (the histogram's bucket at that bound).

The rules follow the multiwindow, multi-burn-rate alerts of Google's SRE workbook (chapter 5, as Sloth and Pyrra
generate them) for a 30-day SLO period: a page when the budget burns 14.4 times too fast over 1 h (confirmed over
5 m: 2 % of the budget gone) or 6 times over 6 h (30 m: 5 %), a ticket at 3 times over 1 d (2 h: 10 %) or once
over 3 d (6 h). The short window makes an alert resolve minutes after the burn stops. The objectives are the
service's own (``OTEL_RELIABILITY_SLO_*``, config); ``collector-config/slo.yml`` holds the rules for the
defaults, for every job; ``otel-reliability slo-rules --job NAME`` writes them for one service's objectives.
"""

from __future__ import annotations

from dataclasses import dataclass

from otel_reliability import config, semconv

PERIOD = "30d"
# (severity, long window, short window, burn rate): the workbook's table for a 30-day period.
BURN_ALERTS: tuple[tuple[str, str, str, float], ...] = (
    ("page", "1h", "5m", 14.4),
    ("page", "6h", "30m", 6.0),
    ("ticket", "1d", "2h", 3.0),
    ("ticket", "3d", "6h", 1.0),
)
WINDOWS = ("5m", "30m", "1h", "2h", "6h", "1d", "3d")
RATIO = "job_slo:request_errors:ratio_rate"
"""Recorded per job and ``slo`` (availability, latency): the share of requests that spent budget, per window."""
BUDGET_REMAINING = "job_slo:error_budget_remaining:ratio"
"""Recorded per job and ``slo``: 1 - (bad share over the period) / (allowed share); below 0 once overspent."""

_DURATION = semconv.METRIC_HTTP_SERVER_REQUEST_DURATION.replace(".", "_") + "_seconds"
_STATUS = semconv.ATTR_HTTP_RESPONSE_STATUS_CODE.replace(".", "_")
_ERROR_TYPE = semconv.ATTR_ERROR_TYPE.replace(".", "_")


@dataclass(frozen=True)
class Objective:
    """One SLO: its name (the ``slo`` label), the share of good requests it promises, what a good request is."""

    name: str
    target: float  # a fraction, e.g. 0.999
    meaning: str

    @property
    def budget(self) -> float:
        return 1.0 - self.target


def objectives(settings: config.Settings) -> tuple[Objective, Objective]:
    """The service's availability and latency objectives, from its configuration."""
    threshold = settings.slo_latency_threshold
    return (
        Objective("availability", settings.slo_availability / 100, "requests that do not fail (5xx or raised)"),
        Objective("latency", settings.slo_latency_target / 100, f"requests that finish within {threshold:g} s"),
    )


def _number(value: float) -> str:
    return f"{value:.6g}"


def _le_matcher(threshold: float) -> str:
    """The bucket's ``le`` as each path writes it: "0.5"; a whole number "1" (Python exporter, collector) or
    "1.0" (Prometheus 3 normalises on ingestion)."""
    text = _number(threshold)
    return f'le=~"{text}|{float(threshold)!r}"' if float(threshold).is_integer() else f'le="{text}"'


def _selector(job: str | None, *matchers: str) -> str:
    parts = ([f'job="{job}"'] if job else []) + list(matchers)
    return "{" + ", ".join(parts) + "}" if parts else ""


def _bad_share(objective: Objective, window: str, job: str | None, threshold: float) -> str:
    total = f"sum by (job) (rate({_DURATION}_count{_selector(job)}[{window}]))"
    if objective.name == "availability":
        failed = _selector(job, f'{_STATUS}=~"5.."')
        raised = _selector(job, f'{_ERROR_TYPE}!=""', f'{_STATUS}!~"5.."')
        bad = f"sum by (job) (rate({_DURATION}_count{failed}[{window}]) or rate({_DURATION}_count{raised}[{window}]))"
        # `or 0 * total`: a service that never failed has no 5xx series; its share is 0, not absent (the budget
        # is an average over the period, and a missing quiet hour would count as not there).
        return f"({bad} or 0 * {total}) / {total}"
    fast = f"sum by (job) (rate({_DURATION}_bucket{_selector(job, _le_matcher(threshold))}[{window}]))"
    return f"1 - {fast} / {total}"


def _alert(objective: Objective, severity: str, job: str | None) -> list[str]:
    pairs = [(long, short, rate) for sev, long, short, rate in BURN_ALERTS if sev == severity]
    sel = _selector(job, f'slo="{objective.name}"')
    clauses = [
        f"({RATIO}{long}{sel} > {_number(rate * objective.budget)} and {RATIO}{short}{sel} > "
        f"{_number(rate * objective.budget)})"
        for long, short, rate in pairs
    ]
    name = "SLOErrorBudgetBurnFast" if severity == "page" else "SLOErrorBudgetBurnSlow"
    windows = " or ".join(f"{rate:g}x over {long} (and {short})" for long, short, rate in pairs)
    spent = (
        "2 % of its 30-day error budget in an hour or 5 % in 6 hours"
        if severity == "page"
        else ("10 % of its 30-day error budget in a day or in 3 days")
    )
    if severity == "page":
        action = (
            "Action: this is an incident: open the HTTP dashboard's failing or slow routes, check open circuit "
            "breakers, pool and database alerts, roll back a recent deployment if the burn started with it."
        )
    else:
        action = (
            "Action: not urgent, but the objective will be missed at this pace: find the routes and error types "
            "behind it (HTTP dashboard) and plan the fix; check the SLO row of the overview dashboard."
        )
    return [
        f"      - alert: {name}",
        f"        # Burn rate {windows}: the error budget ({_number(objective.budget * 100)} % of requests) would",
        "        # be gone long before the 30 days are over.",
        f"        expr: {' or '.join(clauses)}",
        "        labels:",
        f"          severity: {'critical' if severity == 'page' else 'warning'}",
        f"          slo: {objective.name}",
        "        annotations:",
        f'          summary: "{{{{ $labels.job }}}}: {objective.name} SLO error budget burning '
        f'({{{{ $value | humanizePercentage }}}} of requests bad, {_number(objective.budget * 100)} % allowed)"',
        "          description: >-",
        f"            {{{{ $labels.job }}}} promises {_number(objective.target * 100)} % of {objective.meaning} over"
        f" 30 days; at the current rate it spends {spent}.",
        f"            {action}",
    ]


def rules(settings: config.Settings, job: str | None = None) -> str:
    """The recording and alert rules (Prometheus rule file YAML) for these objectives, for ``job`` or every job."""
    scope = f"job {job}" if job else "every job"
    groups = [
        "# Generated by `otel-reliability slo-rules` (otel_reliability/slo.py) for " + scope + ": do not edit by hand.",
        "# Objectives: "
        + "; ".join(f"{o.name} {_number(o.target * 100)} % ({o.meaning})" for o in objectives(settings))
        + ".",
        "# Multiwindow, multi-burn-rate alerts for a 30-day period (Google SRE workbook, chapter 5).",
        "groups:",
    ]
    threshold = settings.slo_latency_threshold
    for objective in objectives(settings):
        groups += [f"  - name: otel-reliability.slo.{objective.name}", "    rules:"]
        for window in WINDOWS:
            groups += [
                f"      - record: {RATIO}{window}",
                f"        expr: {_bad_share(objective, window, job, threshold)}",
                "        labels:",
                f"          slo: {objective.name}",
            ]
        groups += _alert(objective, "page", job) + _alert(objective, "ticket", job)
    groups += [
        "  # The budget left over the 30-day period, from the recorded 5-minute shares (evaluated every 5 minutes:",
        "  # a 30-day range is not read every few seconds).",
        "  - name: otel-reliability.slo.budget",
        "    interval: 5m",
        "    rules:",
    ]
    for objective in objectives(settings):
        sel = _selector(job, f'slo="{objective.name}"')
        groups += [
            f"      - record: {BUDGET_REMAINING}",
            f"        expr: 1 - avg_over_time({RATIO}5m{sel}[{PERIOD}]) / {_number(objective.budget)}",
            "        labels:",
            f"          slo: {objective.name}",
        ]
    return "\n".join(groups) + "\n"
