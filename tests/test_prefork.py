"""Prefork servers: every worker has its SDK, its instrumentation and its own service.instance.id."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable

import pytest

from tests.support import ROOT, AppProcess, OtlpReceiver, get_json, http, scrape, wait_until

APP_DIR = ROOT / "tests" / "apps" / "prefork"
StartApp = Callable[..., AppProcess]


def spread_requests(app: AppProcess, n: int = 12) -> None:
    with concurrent.futures.ThreadPoolExecutor(n) as pool:
        list(pool.map(lambda _: http("GET", app.url + "/block"), range(n)))


def instances_serving(receiver: OtlpReceiver) -> set[str]:
    return {
        resource["service.instance.id"]
        for resource, point in receiver.metric_points("http.server.request.duration")
        if point["_value"] > 0
    }


@pytest.mark.parametrize("server", ["gunicorn", "uvicorn"])
def test_two_workers_are_both_instrumented(server: str, app_factory: StartApp, receiver: OtlpReceiver) -> None:
    app = app_factory(
        "app:app",
        app_dir=APP_DIR,
        server=server,
        workers=2,
        env={
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            "OTEL_METRIC_EXPORT_INTERVAL": "500",
        },
    )

    def both_workers_seen() -> bool:
        spread_requests(app)
        return len(instances_serving(receiver)) >= 2

    wait_until(both_workers_seen, timeout=40, interval=0.5, what="request metrics from both workers")
    assert len(instances_serving(receiver)) == 2
    ids = set()
    for _ in range(40):
        status, body = get_json(app.url + "/api/health/live")
        assert status == 200
        ids.add(body["service"]["instance_id"])
    assert None not in ids
    app.stop()
    assert "address already in use" not in app.log().lower() or "keeps its SDK" in app.log()


def test_direct_prometheus_with_two_uvicorn_workers_is_served_by_a_worker(app_factory: StartApp) -> None:
    app = app_factory("app:app", app_dir=APP_DIR, server="uvicorn", workers=2)

    def worker_metrics() -> bool:
        spread_requests(app, 4)
        return "http_server_request_duration_seconds_count" in scrape(app.metrics_port)

    # The supervisor does not bind :9464 (it serves no requests); one worker does.
    wait_until(worker_metrics, timeout=30, interval=0.5, what="worker metrics on the direct endpoint")
