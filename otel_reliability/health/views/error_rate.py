"""``GET /api/health/error-rate``: the HTTP error rate over the last OTEL_RELIABILITY_ERROR_WINDOW seconds.

Computed from the Readings' window over the standard ``http.server.request.duration`` counts (see
otel_reliability/request_errors.py for what counts as an error), so the numbers equal what Prometheus computes
with ``increase(http_server_request_duration_seconds_count[5m])`` by status, and stay exact at any rate.

Body: error_count, client_error_count, success_count, total_requests, error_rate_percent, window_seconds,
covered_seconds (how much of the window the snapshots really cover: less just after start-up), threshold
settings and top_routes (route templates with the most errors; "(unmatched)" collects requests that
matched no route).

Aggregate status: *degraded* when error_rate_percent > OTEL_RELIABILITY_ERROR_RATE_THRESHOLD **and** the
window holds at least OTEL_RELIABILITY_ERROR_MIN_REQUESTS requests (default 20), so 1 error in 2 requests
at 3 a.m. pages nobody. Never *unhealthy*: a high error rate is a symptom to look at, while readiness
belongs to the dependencies (a failing pod would be pulled out of rotation for its callers' mistakes).

``register()`` also attaches the error-spike detector (one ERROR log line per episode) to the process's
Readings: the health routes are mounted where there is an HTTP server to watch, and it is idempotent.
"""

from __future__ import annotations

from otel_reliability import request_errors
from otel_reliability.health.model import CheckContext, HealthRegistry, HealthView, Status, ViewResult

TOP_ROUTES = 5


def compute(ctx: CheckContext) -> ViewResult:
    settings = ctx.settings
    window = ctx.readings.window(settings.error_window, (request_errors.HTTP_SERVER_DURATION,))
    counts = request_errors.count(window, settings)
    rate = round(counts.error_rate_percent, 2)
    enough = counts.total >= settings.error_min_requests
    degraded = enough and counts.error_rate_percent > settings.error_rate_threshold
    if degraded:
        reason = (
            f"{rate}% of {counts.total} requests failed in the last {settings.error_window}s "
            f"(threshold {settings.error_rate_threshold:g}%); top: {request_errors.describe_routes(counts)}"
        )
    elif not enough:
        reason = f"{counts.total} requests in the window, fewer than {settings.error_min_requests}: not judged"
    else:
        reason = None
    body = {
        "error_count": counts.errors,
        "client_error_count": counts.client_errors,
        "success_count": counts.successes,
        "total_requests": counts.total,
        "error_rate_percent": rate,
        "window_seconds": settings.error_window,
        "covered_seconds": round(window.covered, 1),
        "threshold_percent": settings.error_rate_threshold,
        "min_requests": settings.error_min_requests,
        "top_routes": [
            {"route": route, "errors": c.errors, "client_errors": c.client_errors, "requests": c.requests}
            for route, c in counts.top_routes(TOP_ROUTES)
        ],
    }
    summary = {"error_rate_percent": rate, "error_count": counts.errors, "total_requests": counts.total}
    return ViewResult(
        status=Status.DEGRADED if degraded else Status.HEALTHY,
        body=body,
        summary=summary,
        observed=(rate, "percent"),
        output=reason,
    )


def register(registry: HealthRegistry) -> None:
    """Add the error-rate view (the spike detector is installed with the Readings, by the configurator)."""
    registry.add_view(HealthView(name="error-rate", compute=compute, component_type="http"))
