"""The lean layer's SERVER span against the contrib FastAPI instrumentation's, for the same requests (issue 25).

Two copies of one FastAPI app, each on its own real SDK TracerProvider (every span sampled, kept in memory):
one under ``FastAPIInstrumentor`` (receive/send spans off, as the distro runs it), one under the lean layer.
Every request goes to both; the spans must agree on name, kind, attributes, status, parent and events. Also:
trace context in (a ``traceparent`` header) and out (what an HTTP client inside the route would send), child
spans, exemplars pointing at the span, a streaming response whose span ends with its body, a websocket.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from fastapi import FastAPI, WebSocket
from fastapi.responses import StreamingResponse
from opentelemetry import propagate, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from starlette.testclient import TestClient

from otel_reliability.instrumentation.http_server import LeanHTTPMiddleware

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
_OFF = {"tracing": False, "metrics": False, "logs": False}


def build_app(provider: TracerProvider, seen: dict[str, Any]) -> FastAPI:
    app = FastAPI(telemetry=_OFF)
    tracer = provider.get_tracer("tests.child")

    @app.get("/items/{item_id}")
    def read_item(item_id: int) -> dict[str, int]:
        return {"item_id": item_id}

    @app.get("/crash")
    def crash() -> None:
        raise RuntimeError("unhandled")

    @app.get("/child")
    def child() -> dict[str, str]:
        with tracer.start_as_current_span("statement"):
            pass
        headers: dict[str, str] = {}
        propagate.inject(headers)  # what an instrumented HTTP client would send from here
        seen["outgoing"] = headers
        return headers

    @app.get("/annotated")
    def annotated() -> dict[str, bool]:
        span = trace.get_current_span()
        span.set_attribute("app.user", 7)
        span.set_attribute("app.bad", object())  # type: ignore[arg-type]  # the SDK drops it, so do we
        span.add_event("looked up", {"n": 1})
        return {"ok": True}

    @app.get("/stream")
    async def stream() -> StreamingResponse:
        async def chunks() -> AsyncIterator[bytes]:
            for i in range(3):
                await asyncio.sleep(0.02)
                seen["last_chunk"] = time.time_ns()
                yield f"chunk {i}\n".encode()

        return StreamingResponse(chunks(), media_type="text/plain")

    @app.websocket("/ws")
    async def echo(websocket: WebSocket) -> None:
        await websocket.accept()
        text = await websocket.receive_text()
        await websocket.send_text(text.upper())
        await websocket.close()

    return app


class Side:
    def __init__(self, layer: str, sampler: Any = None, limits: Any = None) -> None:
        self.exporter = InMemorySpanExporter()
        self.provider = TracerProvider(sampler=sampler, span_limits=limits)
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.reader = InMemoryMetricReader()
        self.meters = MeterProvider(metric_readers=[self.reader])
        self.seen: dict[str, Any] = {}
        self.app = build_app(self.provider, self.seen)
        if layer == "contrib":
            from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

            FastAPIInstrumentor.instrument_app(
                self.app, tracer_provider=self.provider, meter_provider=self.meters, exclude_spans=["receive", "send"]
            )
        else:
            original = self.app.build_middleware_stack
            self.app.build_middleware_stack = lambda: LeanHTTPMiddleware(  # type: ignore[method-assign]
                original(), meter_provider=self.meters, tracer_provider=self.provider
            )
        self.client = TestClient(self.app, base_url="http://example.com:8080", raise_server_exceptions=False)

    def spans(self) -> list[ReadableSpan]:
        found = list(self.exporter.get_finished_spans())
        self.exporter.clear()
        return found


@pytest.fixture(scope="module", autouse=True)
def stable_conventions() -> Iterator[None]:
    mp = pytest.MonkeyPatch()
    mp.setenv("OTEL_SEMCONV_STABILITY_OPT_IN", "http")
    from opentelemetry.instrumentation._semconv import _OpenTelemetrySemanticConventionStability

    mp.setattr(_OpenTelemetrySemanticConventionStability, "_initialized", False)
    yield
    mp.undo()
    _OpenTelemetrySemanticConventionStability._initialized = False


@pytest.fixture(scope="module")
def sides(stable_conventions: None) -> tuple[Side, Side]:
    return Side("contrib"), Side("lean")


def comparable(span: ReadableSpan) -> dict[str, Any]:
    parent = span.parent
    return {
        "name": span.name,
        "kind": span.kind,
        "attributes": dict(span.attributes or {}),
        "status": (span.status.status_code, span.status.description),
        "parent": (parent.trace_id, parent.span_id, parent.is_remote) if parent else None,
        "flags": int(span.context.trace_flags),  # type: ignore[union-attr]  # sampled, random trace id
        "events": [
            (e.name, (e.attributes or {}).get("exception.type"), (e.attributes or {}).get("exception.message"))
            for e in span.events
        ],
    }


def server_spans(spans: list[ReadableSpan]) -> list[ReadableSpan]:
    return [s for s in spans if s.kind == trace.SpanKind.SERVER]


REQUESTS: list[tuple[str, str, dict[str, str]]] = [
    ("GET", "/items/3?a=b&c=%20d", {"traceparent": TRACEPARENT, "user-agent": "ua/1"}),
    ("GET", "/items/4", {"user-agent": "Mozilla/5.0 (compatible; Googlebot/2.1)"}),
    ("GET", "/items/x", {}),  # a 422
    ("GET", "/crash", {}),  # an exception in the route: a 500 and an exception event
    ("GET", "/no/such/path", {}),  # no route: the method alone
    ("DELETE", "/items/3", {}),  # a 405
    ("PATCH", "/no/such/path", {"user-agent": "curl/8"}),
    ("HEAD", "/items/3", {}),
]


@pytest.mark.parametrize(("method", "path", "headers"), REQUESTS, ids=[f"{m} {p}" for m, p, _ in REQUESTS])
def test_our_server_span_is_contribs(sides: tuple[Side, Side], method: str, path: str, headers: dict[str, str]) -> None:
    contrib, lean = sides
    for side in sides:
        side.client.request(method, path, headers=headers)
    theirs, ours = server_spans(contrib.spans()), server_spans(lean.spans())
    assert len(theirs) == len(ours) == 1
    assert comparable(ours[0]) == comparable(theirs[0])
    assert ours[0].instrumentation_scope.name == "otel_reliability.instrumentation.http_server"  # type: ignore[union-attr]
    assert ours[0].end_time >= ours[0].start_time  # type: ignore[operator]


def test_context_in_and_out_and_child_spans(sides: tuple[Side, Side]) -> None:
    _, lean = sides
    lean.client.get("/child", headers={"traceparent": TRACEPARENT})
    spans = lean.spans()
    (server,) = server_spans(spans)
    (child,) = [s for s in spans if s.name == "statement"]
    assert server.context.trace_id == 0x0AF7651916CD43DD8448EB211C80319C  # type: ignore[union-attr]
    assert server.parent.span_id == 0xB7AD6B7169203331  # type: ignore[union-attr]
    assert child.parent.span_id == server.context.span_id  # type: ignore[union-attr]
    outgoing = lean.seen["outgoing"]["traceparent"]
    assert outgoing == f"00-{server.context.trace_id:032x}-{server.context.span_id:016x}-01"  # type: ignore[union-attr]
    assert trace.get_current_span() is trace.INVALID_SPAN  # the context was restored


def test_exemplars_point_at_the_sampled_span(sides: tuple[Side, Side]) -> None:
    _, lean = sides
    lean.reader.get_metrics_data()  # a fresh interval
    lean.client.get("/items/9")
    (server,) = server_spans(lean.spans())
    data = lean.reader.get_metrics_data()
    exemplars = [
        e
        for rm in data.resource_metrics
        for sm in rm.scope_metrics
        for m in sm.metrics
        if m.name == "http.server.request.duration"
        for p in m.data.data_points
        for e in p.exemplars
    ]
    assert exemplars, "no exemplar on http.server.request.duration"
    assert {(e.trace_id, e.span_id) for e in exemplars} == {(server.context.trace_id, server.context.span_id)}  # type: ignore[union-attr]


def test_a_streaming_span_ends_when_its_body_ends(sides: tuple[Side, Side]) -> None:
    contrib, lean = sides
    for side in sides:
        assert side.client.get("/stream").text.count("chunk") == 3
    (theirs,), (ours,) = server_spans(contrib.spans()), server_spans(lean.spans())
    assert comparable(ours) == comparable(theirs)
    assert ours.end_time >= lean.seen["last_chunk"]  # type: ignore[operator]


def test_a_websocket_gets_one_span_as_under_contrib(sides: tuple[Side, Side]) -> None:
    contrib, lean = sides
    for side in sides:
        with side.client.websocket_connect("/ws") as ws:
            ws.send_text("hello")
            assert ws.receive_text() == "HELLO"
    theirs, ours = server_spans(contrib.spans()), server_spans(lean.spans())
    assert len(theirs) == len(ours) == 1
    assert comparable(ours[0]) == comparable(theirs[0])


def test_the_span_is_fed_to_the_sdk_processors_as_it_is_and_encodes_as_sdk_spans_do(sides: tuple[Side, Side]) -> None:
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

    from otel_reliability.instrumentation._lean_span import LeanSpan
    from otel_reliability.otlp_spans import Encoder

    contrib, lean = sides
    for side in sides:
        side.client.get("/crash?x=1", headers={"traceparent": TRACEPARENT})
    (ours,), (theirs,) = server_spans(lean.spans()), server_spans(contrib.spans())
    assert type(ours) is LeanSpan and not ours.is_recording()
    assert encode_spans([ours]) == encode_spans([ours])  # upstream's encoder reads it as an SDK span
    assert Encoder().encode([ours]) == encode_spans([ours]).SerializePartialToString()
    assert ours.to_json()  # the ReadableSpan API (console exporter)
    assert len(ours.events) == len(theirs.events) == 1


def test_code_in_the_route_annotates_the_span_as_on_an_sdk_span(sides: tuple[Side, Side]) -> None:
    contrib, lean = sides
    for side in sides:
        side.client.get("/annotated")
    (ours,), (theirs,) = server_spans(lean.spans()), server_spans(contrib.spans())
    assert comparable(ours) == comparable(theirs)
    assert ours.attributes["app.user"] == 7  # type: ignore[index]
    assert ours.attributes.get("app.bad") is None  # type: ignore[union-attr]  # checked as the SDK checks it
    assert [(e.name, dict(e.attributes or {})) for e in ours.events] == [("looked up", {"n": 1})]


def test_an_unsampled_request_records_nothing_and_still_propagates(stable_conventions: None) -> None:
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    lean = Side("lean", ParentBased(TraceIdRatioBased(0)))
    lean.client.get("/child")
    outgoing = lean.seen["outgoing"]["traceparent"]
    # a trace id, not sampled, random (the SDK's flags: 0x02)
    assert outgoing.endswith("-02") and outgoing.split("-")[1] != "0" * 32
    assert lean.spans() == []
    lean.client.get("/child", headers={"traceparent": TRACEPARENT})  # a sampled parent: sampled here too
    (server,) = server_spans(lean.spans())
    assert server.parent.span_id == 0xB7AD6B7169203331  # type: ignore[union-attr]


def test_a_sampler_of_its_own_gets_the_request_attributes(stable_conventions: None) -> None:
    from opentelemetry.sdk.trace.sampling import Decision, Sampler, SamplingResult

    seen: list[dict[str, Any]] = []

    class ByPath(Sampler):
        def should_sample(self, parent_context: Any, trace_id: int, name: str, *args: Any, **kw: Any) -> Any:
            attributes = dict(args[1] or {}) if len(args) > 1 else dict(kw.get("attributes") or {})
            seen.append(attributes)
            keep = attributes.get("url.path") != "/items/1"
            return SamplingResult(Decision.RECORD_AND_SAMPLE if keep else Decision.DROP, attributes)

        def get_description(self) -> str:
            return "ByPath"

    lean = Side("lean", ByPath())
    lean.client.get("/items/1")
    lean.client.get("/items/2")
    assert [a.get("url.path") for a in seen] == ["/items/1", "/items/2"]
    assert [s.attributes["url.path"] for s in server_spans(lean.spans())] == ["/items/2"]  # type: ignore[index]


def test_the_context_is_set_directly_and_through_the_api_alike(sides: tuple[Side, Side]) -> None:
    """The span made current by setting the OTel context's ContextVar (the default) is what the API reads, and
    a runtime context that is not a ContextVar gets the same spans through the API's functions."""
    from opentelemetry import context

    from otel_reliability.instrumentation import _context

    found = _context.runtime()
    assert found is not None  # the API's default runtime context: the direct path is the one measured
    var, key = found
    span = trace.NonRecordingSpan(trace.SpanContext(0xABC, 0xDEF, False))
    token = var.set(context.Context({**context.get_current(), key: span}))
    try:
        assert trace.get_current_span() is span
    finally:
        var.reset(token)
    assert trace.get_current_span() is trace.INVALID_SPAN

    contrib, _ = sides
    mp = pytest.MonkeyPatch()
    mp.setattr(_context, "_found", None)  # what runtime() answers for another runtime context
    try:
        by_api = Side("lean")
        for method, path, headers in REQUESTS:
            contrib.client.request(method, path, headers=headers)
            by_api.client.request(method, path, headers=headers)
            (theirs,) = server_spans(contrib.spans())
            (ours,) = server_spans(by_api.spans())
            assert comparable(ours) == comparable(theirs), (method, path)
        by_api.client.get("/child", headers={"traceparent": TRACEPARENT})
        assert by_api.seen["outgoing"]["traceparent"].split("-")[1] == TRACEPARENT.split("-")[1]
    finally:
        mp.undo()
    assert trace.get_current_span() is trace.INVALID_SPAN  # every request's context was restored


def test_a_span_ended_in_another_context_is_detached_as_the_api_does(
    sides: tuple[Side, Side], caplog: pytest.LogCaptureFixture
) -> None:
    """A span ended in another context than it started in (a framework that moved it): the API's own log line,
    no exception out of the request path."""
    import contextvars

    from otel_reliability.instrumentation._server_span import ServerSpans

    spans = ServerSpans(sides[1].provider)
    scope = {"type": "http", "method": "GET", "path": "/", "headers": []}
    span, token = contextvars.copy_context().run(spans.start, scope)
    with caplog.at_level("ERROR", logger="opentelemetry.context"):
        spans.end(span, token, scope, "/", 200, None, None)
    assert "Failed to detach context" in caplog.text
    assert trace.get_current_span() is trace.INVALID_SPAN


@pytest.mark.parametrize(
    "limits",
    [{"max_span_attributes": 9}, {"max_span_attributes": 11}, {"max_span_attributes": 12}, {"max_attribute_length": 4}],
    ids=str,
)
def test_under_span_limits_our_span_is_cut_as_contribs(stable_conventions: None, limits: dict[str, int]) -> None:
    """The request's attributes, then its route and status (one call at the end of a request that went well), are
    cut as the SDK cuts contrib's span: the same attributes kept, the same count dropped."""
    from opentelemetry.sdk.trace import SpanLimits

    contrib, lean = (Side(layer, limits=SpanLimits(**limits)) for layer in ("contrib", "lean"))  # type: ignore[arg-type]
    unlimited = Side("lean")
    for side in (contrib, lean, unlimited):
        side.client.get("/items/3?a=b", headers={"user-agent": "ua/1"})
    (ours,), (theirs,) = server_spans(lean.spans()), server_spans(contrib.spans())
    assert comparable(ours) == comparable(theirs)
    # contrib sets its request attributes twice (each counts as a drop once full); we set each once
    (whole,) = server_spans(unlimited.spans())
    assert len(whole.attributes or {}) == 12  # 10 from the request, then its route and status
    assert ours.dropped_attributes == max(0, 12 - limits.get("max_span_attributes", 128))
