"""Exporter logs while an OTLP endpoint is unreachable: one WARNING naming it and what is kept, at most one
reminder a minute, one INFO when it is back, no upstream line, no traceback, no credential.

Real OTLP exporters (HTTP and gRPC) against a closed loopback port, then a real HTTP receiver on that port.
"""

from __future__ import annotations

import http.server
import logging
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, MetricExportResult
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult

from otel_reliability import export_logs
from tests.support import free_port


@pytest.fixture(autouse=True)
def folded() -> Iterator[None]:
    export_logs.install()
    export_logs._watches.clear()
    yield
    export_logs._watches.clear()


def lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    """Every record a user would see at WARNING (ours at INFO too)."""
    return [
        r
        for r in caplog.records
        if r.levelno >= logging.WARNING or (r.name.startswith("otel_reliability") and r.levelno >= logging.INFO)
    ]


def metrics_data() -> Any:
    reader = InMemoryMetricReader()
    MeterProvider(metric_readers=[reader]).get_meter("t").create_counter("requests").add(3)
    return reader.get_metrics_data()


class Receiver:
    """Answers 200 to every OTLP/HTTP POST on a given loopback port."""

    def __init__(self, port: int) -> None:
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_http_metrics_one_warning_while_down_one_info_when_back(caplog: pytest.LogCaptureFixture) -> None:
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

    caplog.set_level(logging.DEBUG)
    port = free_port()
    exporter = OTLPMetricExporter(endpoint=f"http://user:pw-never-logged@127.0.0.1:{port}/v1/metrics", timeout=0.5)
    data = metrics_data()
    for _ in range(6):
        assert exporter.export(data) == MetricExportResult.FAILURE
    seen = lines(caplog)
    assert [(r.name, r.levelname) for r in seen] == [("otel_reliability.export", "WARNING")], seen
    warning = seen[0].getMessage()
    assert f"127.0.0.1:{port}/v1/metrics" in warning and "Connection refused" in warning
    assert "no count is lost" in warning
    assert "pw-never-logged" not in caplog.text and all(r.exc_info is None for r in caplog.records)
    receiver = Receiver(port)
    try:
        assert exporter.export(data) == MetricExportResult.SUCCESS
        assert exporter.export(data) == MetricExportResult.SUCCESS
    finally:
        receiver.close()
    back = lines(caplog)[1:]
    assert [(r.levelname, "is back" in r.getMessage()) for r in back] == [("INFO", True)], back
    assert "(6 exports failed meanwhile)" in back[0].getMessage()


def test_grpc_traces_down_is_one_warning_saying_what_is_dropped(caplog: pytest.LogCaptureFixture) -> None:
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    caplog.set_level(logging.DEBUG)
    exporter = OTLPSpanExporter(endpoint=f"http://127.0.0.1:{free_port()}", insecure=True, timeout=1)
    provider = TracerProvider()
    spans: list[Any] = []

    class Keep(SimpleSpanProcessor):
        def on_end(self, span: Any) -> None:
            spans.append(span)

    provider.add_span_processor(Keep(exporter))
    with provider.get_tracer("t").start_as_current_span("work"):
        pass
    for _ in range(2):
        assert exporter.export(spans) == SpanExportResult.FAILURE
    provider.shutdown()
    seen = lines(caplog)
    assert [(r.name, r.levelname) for r in seen] == [("otel_reliability.export", "WARNING")], seen
    assert "UNAVAILABLE" in seen[0].getMessage() and "spans" in seen[0].getMessage()
    assert "dropped" in seen[0].getMessage()


def test_reminders_at_most_once_a_minute(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    now = [0.0]
    watch = export_logs.ExportWatch("metrics", "http://127.0.0.1:4318/v1/metrics", "kept", clock=lambda: now[0])
    for second in range(0, 150, 5):  # an export every 5 s for 150 s, all failing
        now[0] = float(second)
        watch.fold("Transient error StatusCode.UNAVAILABLE encountered while exporting")
        watch.outcome(False)
    now[0] = 151.0
    watch.outcome(True)
    messages = [r.getMessage() for r in lines(caplog)]
    assert len(messages) == 4, messages  # the first line, reminders at 60 s and 120 s, back
    assert "still failing after 60 s" in messages[1] and "still failing after 120 s" in messages[2]
    assert "back after 151 s (30 exports failed meanwhile)" in messages[3]


@pytest.mark.parametrize(
    ("upstream", "gist"),
    [
        ("HTTPConnectionPool(host='127.0.0.1', port=1): Max retries exceeded ([Errno 111] Connection refused'))",
             "Connection refused"),
        ("Failed to export traces to 127.0.0.1:4317, error code: StatusCode.DEADLINE_EXCEEDED", "DEADLINE_EXCEEDED"),
        ("Failed to export metrics batch code: 503, reason: Service Unavailable", "HTTP 503"),
        ("something new upstream said about http://u:secret@host/", "something new upstream said about http://***@host/"),
    ],
)  # fmt: skip
def test_short_reason_keeps_the_gist_and_masks_credentials(upstream: str, gist: str) -> None:
    assert export_logs.short_reason(upstream) == gist
