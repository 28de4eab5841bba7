"""What the fleet check asks Prometheus about: which instances form the fleet, the ``--job`` scope every query
carries, the thresholds it judges by, and the report it fills (the items are in ``otel_reliability.cli.fleet``).
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from otel_reliability.checklist import advice
from otel_reliability.cli.promapi import PromClient, Sample
from otel_reliability.cli.report import Report

# Series whose presence makes an instance part of the fleet: one per instrumentor, so an app with only some
# of them switched on still counts.
PRESENCE = (
    "process_memory_usage_bytes",
    "http_server_request_duration_seconds_count",
    "circuit_breaker_state",
    "db_client_connection_max",
    "operation_in_flight",
)
SEEN_WINDOW = "15m"  # an instance seen within this and silent for --stale-after has stopped reporting
RATE_WINDOW = "5m"  # the error-rate and pool-timeout window, as in the health views and alert rules
REQUESTS = "http_server_request_duration_seconds_count"
# Failed requests, as the health view and the HighErrorRatio alert count them: a 5xx response, or a request that
# raised (error_type set) without one. The two selectors are disjoint, so `or` is their union.
STATUS_5XX = 'http_response_status_code=~"5.."'
RAISED = ('error_type!=""', 'http_response_status_code!~"5.."')
USED = 'db_client_connection_state="used"'


@dataclass(frozen=True)
class Thresholds:
    """When a finding needs action; the defaults are the apps' (``otel_reliability.config``)."""

    error_rate_percent: float = 1.0
    min_requests: int = 20
    pool_warn_percent: float = 80.0
    memory_warn_percent: float = 90.0
    cpu_warn_percent: float = 90.0
    expected_statement_timeout: float | None = None  # None: nothing declared, a disabled timeout is advice
    stale_after: float = 180.0


@dataclass
class FleetReport(Report):
    """The fleet's report: which services and instances were found, and the items over all of them."""

    job: str | None = None
    services: dict[str, list[str]] = field(default_factory=dict)

    def heading(self) -> str:
        count = sum(len(v) for v in self.services.values())
        jobs = ", ".join(f"{job} ({len(ids)})" for job, ids in sorted(self.services.items()))
        return (
            f"otel-reliability check of the fleet in {self.url}: {len(self.services)} "
            f"{advice.plural(len(self.services), 'service', 'services')}, {count} "
            f"{advice.plural(count, 'instance', 'instances')}: {jobs}"
        )

    def as_json(self) -> dict[str, Any]:
        return {"source": "prometheus", "job": self.job, "services": self.services, **super().as_json()}


class Fleet:
    """Queries scoped to ``--job``; ``sel()`` builds a selector with that scope and extra matchers."""

    def __init__(self, client: PromClient, job: str | None, thresholds: Thresholds, admin_path: str) -> None:
        self.client = client
        self.job = job
        self.th = thresholds
        self.admin_path = admin_path

    def sel(self, metric: str, *matchers: str) -> str:
        scope = [f"job={json.dumps(self.job)}"] if self.job is not None else []
        return f"{metric}{{{', '.join([*scope, *matchers])}}}"

    def q(self, expr: str) -> list[Sample]:
        return self.client.query(expr)

    def present(self, window: str) -> set[tuple[str, str]]:
        expr = " or ".join(f"group by (job, instance) (last_over_time({self.sel(m)}[{window}]))" for m in PRESENCE)
        return {(s["job"], s.get("instance", "")) for s, _ in self.q(expr)}


def grouped(rows: Iterable[tuple[str, str]]) -> str:
    """'example: a, b; other: c' from (service, what) pairs."""
    by: dict[str, list[str]] = defaultdict(list)
    for service, what in rows:
        by[service].append(what)
    return "; ".join(f"{service}: {', '.join(sorted(set(v)))}" for service, v in sorted(by.items()))
