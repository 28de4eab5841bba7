"""The checklist's ``error budget`` item: how much of each SLO's 30-day budget is left, and how fast it burns.

A fleet (``--prometheus``) has the 30 days: ``slo.yml``'s recording rules keep the budget left per service and
SLO, and its alerts say which budgets burn too fast now. One app (``--url``) only remembers its error-rate
window (minutes), so it reports the burn rate over that window against the availability objective; the budget
left needs the fleet's Prometheus. That one is judged in ``otel_reliability.checklist`` (``error_budget``), which
the status page shares; both say the same words (``checklist/advice.py``).
"""

from __future__ import annotations

from collections.abc import Callable

from otel_reliability import slo
from otel_reliability.checklist import advice
from otel_reliability.cli.report import ACTION, OK, SKIPPED, Item

NAME = "error budget"
Query = Callable[[str], list[tuple[dict[str, str], float]]]


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
    return Item(
        NAME, ACTION, summary, advice.budget_spent(", ".join(spent) + " spent or burning too fast"), details=details
    )
