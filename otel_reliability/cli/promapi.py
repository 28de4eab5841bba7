"""A client for the Prometheus HTTP query API (``/api/v1/query``), as the fleet checklist needs it.

Prometheus, Mimir, Thanos Query, Cortex and VictoriaMetrics answer the same JSON, so one small client serves them
all. It tells apart "no answer" (:class:`Unreachable`: exit code 2 before anything was checked) from "an answer
that is not a result" (:class:`QueryError`: one item in error). Only the standard library.
"""

from __future__ import annotations

import json
import urllib.parse

from otel_reliability.cli import http
from otel_reliability.cli.http import Unreachable as Unreachable  # re-exported: the fleet check catches it


class QueryError(Exception):
    """The query API answered, but not with a result (bad query, server error, not Prometheus JSON)."""


Sample = tuple[dict[str, str], float]


class PromClient:
    """Instant queries against ``<base>/api/v1/query``, each bounded by ``timeout``."""

    def __init__(self, base_url: str, timeout: float) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout

    def query(self, expr: str) -> list[Sample]:
        url = f"{self.base_url}/api/v1/query?{urllib.parse.urlencode({'query': expr})}"
        status, raw = http.get(url, self.timeout)
        try:
            body = json.loads(raw)
        except ValueError:
            raise QueryError(f"HTTP {status} without JSON: not a Prometheus query API") from None
        if not isinstance(body, dict) or body.get("status") != "success":
            error = body.get("error") if isinstance(body, dict) else None
            raise QueryError(f"HTTP {status}: {error or 'not a Prometheus query API answer'}")
        data = body.get("data") or {}
        if data.get("resultType") != "vector":
            raise QueryError(f"expected an instant vector, got {data.get('resultType')!r}")
        return [(dict(r["metric"]), float(r["value"][1])) for r in data.get("result", [])]
