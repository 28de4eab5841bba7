"""Our OTLP span encoder against upstream's: the same ExportTraceServiceRequest for the same spans (issue 25)."""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode

from otel_reliability import otlp_spans


def ours(spans: list[Any]) -> ExportTraceServiceRequest:
    return ExportTraceServiceRequest.FromString(otlp_spans.Encoder().encode(spans))


def test_the_probe_batch_encodes_as_upstream_byte_for_byte() -> None:
    spans = otlp_spans.probe_spans()
    assert ours(spans) == encode_spans(spans)
    assert otlp_spans.Encoder().encode(spans) == encode_spans(spans).SerializePartialToString()
    assert otlp_spans.self_check(encode_spans)


def many_spans() -> list[Any]:
    """Two resources, several scopes, every kind, repeated attributes (the cache), a span without a parent."""
    exporter = InMemorySpanExporter()
    out = []
    for service in ("a", "b"):
        provider = TracerProvider(resource=Resource.create({"service.name": service}))
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        for scope in ("one", "two"):
            tracer = provider.get_tracer(scope)
            for i, kind in enumerate(SpanKind):
                with tracer.start_as_current_span(f"s{i}", kind=kind, attributes={"i": i, "k": "v", "f": i / 3}) as s:
                    s.set_status(Status(StatusCode.OK) if i % 2 else Status(StatusCode.ERROR, f"e{i}"))
                    s.add_event("ev", {"n": i})
    out = list(exporter.get_finished_spans())
    # the same spans interleaved: grouping by resource, then scope, in first-seen order
    return out[::2] + out[1::2]


def test_mixed_batches_encode_as_upstream() -> None:
    spans = many_spans()
    encoder = otlp_spans.Encoder()
    for _ in range(2):  # the second time from the attribute cache
        assert ExportTraceServiceRequest.FromString(encoder.encode(spans)) == encode_spans(spans)


@pytest.mark.parametrize("grpc", [False, True])
def test_a_value_ours_refuses_goes_to_upstreams_encoder(grpc: bool) -> None:
    spans = otlp_spans.probe_spans()
    calls: list[int] = []

    def upstream(batch: Any) -> Any:
        calls.append(len(batch))
        return encode_spans(batch)

    encode = otlp_spans.encoder_for(upstream, grpc)
    first = encode(spans)
    assert not calls
    data = first.SerializePartialToString()
    assert ExportTraceServiceRequest.FromString(data) == encode_spans(spans)
    spans[0]._attributes = {"huge": 1 << 70}  # past int64: upstream logs and skips it
    encode(spans)
    assert calls == [len(spans)]


def test_install_puts_ours_in_the_exporters_and_they_still_export(receiver: Any) -> None:
    import importlib

    from opentelemetry.exporter.otlp.proto.http import trace_exporter

    modules = [importlib.import_module(name) for name, _ in otlp_spans._EXPORTER_MODULES]  # both imported
    originals = [module.encode_spans for module in modules]
    try:
        assert "opentelemetry.exporter.otlp.proto.http.trace_exporter" in otlp_spans.install()
        assert otlp_spans.install() == []  # idempotent
        exporter = trace_exporter.OTLPSpanExporter(endpoint=receiver.endpoint + "/v1/traces")
        spans = many_spans()
        assert exporter.export(spans).name == "SUCCESS"
        assert receiver.traces[-1] == encode_spans(spans)
    finally:
        for module, original in zip(modules, originals, strict=True):
            module.encode_spans = original


@pytest.mark.parametrize("limited", [False, True])
def test_lean_spans_encode_as_upstream_from_their_fields_read_in_one_call(limited: bool) -> None:
    """``LeanSpan.readable_fields`` (what the encoder reads of our own spans, in one call) gives what the
    ReadableSpan properties give: the same bytes as upstream's encoder, with events, links, a remote parent, a status
    and, under tight limits, dropped attributes, events and links."""
    from opentelemetry.sdk.trace import SpanLimits
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, set_span_in_context

    from otel_reliability.instrumentation._lean_span import LeanSpan, LeanTracer

    exporter = InMemorySpanExporter()
    limits = SpanLimits(max_span_attributes=2, max_events=1, max_links=1) if limited else SpanLimits()
    provider = TracerProvider(resource=Resource.create({"service.name": "lean"}), span_limits=limits)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    lean = LeanTracer.for_tracer(provider.get_tracer("lean", "1"))
    assert lean is not None
    remote = set_span_in_context(NonRecordingSpan(SpanContext(0xABC, 0xDEF, True, TraceFlags(1))))
    for parent in (None, remote):
        span = lean.start("GET /x", parent, SpanKind.SERVER, dict, {"a": 1, "b": "two", "c": 3.0})
        span.add_event("first", {"n": 1})
        span.add_event("second")
        for n in (1, 2):
            span.add_link(SpanContext(n, n + 1, True, TraceFlags(1)), {"l": n})
        span.set_status(Status(StatusCode.ERROR, "why"))
        span.end()
    spans = list(exporter.get_finished_spans())
    assert [type(s) for s in spans] == [LeanSpan, LeanSpan]
    assert bool(spans[0].dropped_attributes and spans[0].dropped_events and spans[0].dropped_links) is limited
    encoder = otlp_spans.Encoder()
    assert encoder.encode(spans) == encode_spans(spans).SerializePartialToString()
    assert encoder._readers[LeanSpan] is LeanSpan.readable_fields
