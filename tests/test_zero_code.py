"""Zero-code: `opentelemetry-instrument uvicorn app:app` with otel-reliability installed and no code change."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest

from tests.support import AppProcess, OtlpReceiver, get_json, http, scrape, series_value, wait_until

StartApp = Callable[..., AppProcess]


def drive(app: AppProcess) -> None:
    for path in ("/items/1", "/items/2", "/items/500", "/items/404", "/api/health", "/api/health/live"):
        http("GET", app.url + path)


def test_defaults_prometheus_route_templates_health_and_a_quiet_log(app_factory: StartApp) -> None:
    app = app_factory("minimal_app:app")
    drive(app)
    metrics = scrape(app.metrics_port)
    count = "http_server_request_duration_seconds_count"
    assert series_value(metrics, count, http_route="/items/{item_id}", http_response_status_code="200") == 2
    assert series_value(metrics, count, http_route="/items/{item_id}", http_response_status_code="500") == 1
    routes = {labels.get("http_route") for labels, _ in metrics[count]}
    assert not any(r and r.startswith("/api/health") for r in routes), routes  # health paths excluded
    assert not any(r == "/items/1" for r in routes)  # templates, never raw paths
    # prometheus_client's own process collectors are off: the direct path shows what the collector path shows
    assert "process_resident_memory_bytes" not in metrics

    status, body = get_json(app.url + "/api/health")
    assert status in (200, 503) and body["status"] in ("healthy", "degraded", "unhealthy")
    assert body["service"]["instance_id"] and isinstance(body["checks"], dict)

    app.stop()
    log = app.log()
    assert not re.search(r"WARNING|ERROR|Traceback|Failed to export|Transient error", log), log


def test_with_an_otlp_endpoint_every_signal_goes_by_otlp(app_factory: StartApp, receiver: OtlpReceiver) -> None:
    app = app_factory(
        "minimal_app:app",
        env={
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            "OTEL_METRIC_EXPORT_INTERVAL": "500",
            "OTEL_BSP_SCHEDULE_DELAY": "200",
            "OTEL_SERVICE_NAME": "zero-code-test",
        },
    )
    drive(app)
    points = wait_until(
        lambda: [p for p in receiver.metric_points("http.server.request.duration") if p[1]["_value"] > 0],
        what="http.server.request.duration over OTLP",
    )
    resource, attrs = points[0]
    assert resource["service.name"] == "zero-code-test" and resource["service.instance.id"]
    assert attrs["http.route"] == "/items/{item_id}"
    wait_until(lambda: receiver.traces, what="spans over OTLP")
    span_names = {s.name for r in receiver.traces for rs in r.resource_spans for ss in rs.scope_spans for s in ss.spans}
    assert "GET /items/{item_id}" in span_names
    assert not any("http send" in n or "http receive" in n for n in span_names)  # cheaper default
    with pytest.raises(OSError):  # with OTLP chosen by default, no Prometheus endpoint is opened
        http("GET", f"http://127.0.0.1:{app.metrics_port}/metrics", timeout=2)
    _, health = get_json(app.url + "/api/health")
    assert health["service"]["name"] == "zero-code-test"


def test_user_environment_wins_over_defaults(app_factory: StartApp) -> None:
    app = app_factory("minimal_app:app", env={"OTEL_SEMCONV_STABILITY_OPT_IN": "default"})
    drive(app)
    metrics = scrape(app.metrics_port)
    assert "http_server_duration_milliseconds_count" in metrics  # the old conventions, as the user asked
    assert "http_server_request_duration_seconds_count" not in metrics


def test_auto_mount_can_be_switched_off(app_factory: StartApp) -> None:
    app = app_factory("minimal_app:app", env={"OTEL_RELIABILITY_AUTO_MOUNT": "false"}, wait_path="/items/1")
    assert http("GET", app.url + "/api/health")[0] == 404
