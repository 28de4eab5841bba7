"""The checklist's ``error budget`` item: how much of each SLO's 30-day budget is left, and how fast it burns.

A fleet (``--prometheus``) has the 30 days: ``slo.yml``'s recording rules keep the budget left per service and
SLO, and its alerts say which budgets burn too fast now. One app (``--url``) only remembers its error-rate
window (minutes), so it reports the burn rate over that window against the availability objective; the budget
left needs the fleet's Prometheus.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from otel_reliability import config, slo
from otel_reliability.checklist import advice
from otel_reliability.cli.report import ACTION, OK, SKIPPED, Item

NAME = "error budget"
Query = Callable[[str], list[tuple[dict[str, str], float]]]


def _spent_advice(what: str) -> str:
    return (
        f"{what}: by the SLO's error-budget policy, put reliability first (fix the failing or slow routes, hold "
        "risky deployments) until the budget recovers; the SLO row of the overview dashboard shows since when"
    )


def fleet_item(query: Query, selector: Callable[[str, str], str]) -> Item:
    """From the recorded ``job_slo:error_budget_remaining:ratio`` and the firing burn-rate alerts."""
    left = query(selector(slo.BUDGET_REMAINING, ""))
    if not left:
        return Item(
            NAME,
            SKIPPED,
            "no SLO recording rules in this Prometheus (add slo.yml to rule_files; the budget needs 5 minutes "
            "of evaluations to appear)",
        )
    burning = query(selector("ALERTS", 'alertstate="firing", alertname=~"SLOErrorBudgetBurn.*"'))
    fast = {(s.get("job", "?"), s.get("slo", "?"), s.get("alertname", "")) for s, _ in burning}
    details = []
    parts = []
    spent = []
    for labels, value in sorted(left, key=lambda row: (row[0].get("job", ""), row[0].get("slo", ""))):
        job, name = labels.get("job", "?"), labels.get("slo", "?")
        alerts = sorted(a.removeprefix("SLOErrorBudgetBurn").lower() for j, n, a in fast if (j, n) == (job, name))
        details.append({"job": job, "slo": name, "budget_remaining": round(value, 4), "burning": alerts})
        text = f"{job} {name} {value * 100:.0f}% left"
        if alerts:
            text += f" (burning {'/'.join(alerts)})"
        parts.append(text)
        if value <= 0 or alerts:
            spent.append(f"{job} {name}")
    summary = "; ".join(parts) + " of the 30-day budgets"
    if not spent:
        return Item(NAME, OK, summary, details=details)
    return Item(NAME, ACTION, summary, _spent_advice(", ".join(spent) + " spent or burning too fast"), details=details)


def app_item(error_rate: Mapping[str, Any], endpoint: str, settings: config.Settings | None = None) -> Item:
    """From the app's error-rate view: the burn rate of the availability budget over its window."""
    settings = settings or config.load()
    availability = slo.objectives(settings)[0]
    total = error_rate.get("total_requests", 0) or 0
    errors = error_rate.get("error_count", 0) or 0
    window = error_rate.get("window_seconds")
    objective = f"{availability.target * 100:g}% availability objective"
    if not total:
        return Item(NAME, OK, f"no requests in the last {window}s ({objective})", None, endpoint, 200)
    burn = (errors / total) / availability.budget
    summary = (
        f"burning the {objective}'s budget at {burn:.1f}x over the last {window}s ({errors} of {total} requests "
        f"failed); the budget left over 30 days needs check --prometheus"
    )
    page = slo.BURN_ALERTS[0][3]
    minimum = error_rate.get("min_requests") or 0
    if burn < page or total < minimum:
        return Item(NAME, OK, summary, None, endpoint, 200)
    days = 30 / burn
    return Item(
        NAME,
        ACTION,
        summary,
        _spent_advice(f"at this pace the 30-day budget lasts {advice.duration(days * 86400)}"),
        endpoint,
        200,
    )
