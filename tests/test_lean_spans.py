"""The statement spans the lean tracer makes against the SDK tracer's, for the same statements (issue 25), and the
lean tracer's sampling decisions against the SDK samplers' for the same trace ids.

Each scenario runs twice on real SQLAlchemy and a real SDK TracerProvider: with ``reliability_statements`` as it
runs (``LeanTracer`` in front of the SDK's processors) and with the SDK's own tracer (``LeanTracer.for_tracer``
answering None, the path taken for a tracer that is not the SDK's). The spans must agree field for field: name,
kind, attributes, status, parent, trace flags, scope, resource, events, links, dropped counts.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa
from opentelemetry import trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON, ParentBased, Sampler, TraceIdRatioBased
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, TraceFlags, TraceState

from otel_reliability.instrumentation import _samplers, _unsampled
from otel_reliability.instrumentation._lean_span import LeanSpan, LeanTracer
from otel_reliability.instrumentation.statements import StatementsInstrumentor

Scenario = Callable[[trace.Tracer, sa.Engine], None]


def _run(lean: bool, scenario: Scenario, monkeypatch: pytest.MonkeyPatch, **provider: Any) -> list[ReadableSpan]:
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider(resource=Resource({"service.name": "compare"}), **provider)
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    meters = MeterProvider(metric_readers=[InMemoryMetricReader()])
    with monkeypatch.context() as mp:
        if not lean:
            mp.setattr(LeanTracer, "for_tracer", classmethod(lambda cls, tracer: None))
        StatementsInstrumentor().instrument(tracer_provider=tracer_provider, meter_provider=meters)
        try:
            engine = sa.create_engine("sqlite://")
            scenario(tracer_provider.get_tracer("tests.request"), engine)
        finally:
            StatementsInstrumentor().uninstrument()
            meters.shutdown()
    spans = list(exporter.get_finished_spans())
    statements = [s for s in spans if s.instrumentation_scope.name == "otel_reliability.statements"]  # type: ignore[union-attr]
    assert all((type(s) is LeanSpan) is lean for s in statements)
    return spans


def comparable(span: ReadableSpan, ids: dict[int, str]) -> dict[str, Any]:
    """Every field a processor or exporter reads; span ids by the span's name (they are random), times checked
    for order only, the checkout's wait (a float) by its presence."""
    attributes = dict(span.attributes or {})
    wait = attributes.pop("db.client.connection.wait_time", None)
    context, parent = span.context, span.parent
    assert context is not None and span.start_time is not None and span.end_time is not None
    assert span.start_time <= span.end_time
    scope = span.instrumentation_scope
    return {
        "name": span.name,
        "kind": span.kind,
        "attributes": attributes,
        "wait": None if wait is None else type(wait),
        "status": (span.status.status_code, span.status.description),
        "parent": None if parent is None else (ids.get(parent.span_id, "?"), parent.is_remote),
        "flags": int(context.trace_flags),
        "state": str(context.trace_state),
        "remote": context.is_remote,
        "scope": None if scope is None else (scope.name, scope.version, scope.schema_url),
        "resource": dict(span.resource.attributes),
        "events": [(e.name, dict(e.attributes or {})) for e in span.events],
        "links": list(span.links),
        "dropped": (span.dropped_attributes, span.dropped_events, span.dropped_links),
    }


def _same_spans(scenario: Scenario, monkeypatch: pytest.MonkeyPatch, **provider: Any) -> list[dict[str, Any]]:
    compared = []
    for lean in (True, False):
        spans = _run(lean, scenario, monkeypatch, **provider)
        ids = {s.context.span_id: s.name for s in spans}  # type: ignore[union-attr]
        compared.append([comparable(s, ids) for s in spans])
    ours, theirs = compared
    assert ours == theirs
    return ours


def _statements(tracer: trace.Tracer, engine: sa.Engine) -> None:
    with tracer.start_as_current_span("request", kind=SpanKind.SERVER), engine.connect() as conn:
        conn.execute(sa.text("CREATE TABLE t (id INTEGER, name TEXT)"))
        conn.execute(sa.text("INSERT INTO t VALUES (:id, :name)"), [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}])
        conn.execute(sa.text("SELECT name FROM t WHERE id = 4242 AND name = 'secret'")).all()
        with pytest.raises(sa.exc.OperationalError):
            conn.execute(sa.text("SELECT nope FROM missing"))
    with engine.connect() as conn:  # no current span: a root span of its own
        conn.execute(sa.text("SELECT 1"))


def test_statement_spans_are_the_sdk_tracers(monkeypatch: pytest.MonkeyPatch) -> None:
    spans = _same_spans(_statements, monkeypatch)
    names = [s["name"] for s in spans]
    assert names == ["CREATE t", "BATCH INSERT t", "SELECT t", "SELECT missing", "request", "SELECT"]
    assert spans[0]["wait"] is float and spans[1]["attributes"]["db.operation.batch.size"] == 2
    assert spans[2]["attributes"]["db.query.text"] == "SELECT name FROM t WHERE id = ? AND name = ?"
    assert spans[3]["status"][0] is trace.StatusCode.ERROR and spans[3]["attributes"]["error.type"]
    assert spans[2]["parent"] == ("request", False) and spans[5]["parent"] is None
    assert spans[0]["flags"] == TraceFlags.SAMPLED | TraceFlags.RANDOM_TRACE_ID


def test_statement_spans_under_attribute_limits_are_cut_as_the_sdk_cuts_them(monkeypatch: pytest.MonkeyPatch) -> None:
    for limits in (SpanLimits(max_attribute_length=6), SpanLimits(max_span_attributes=2)):
        spans = _same_spans(_statements, monkeypatch, span_limits=limits)
        assert any(s["dropped"][0] for s in spans) or all(
            len(v) <= 6 for s in spans for v in s["attributes"].values() if isinstance(v, str)
        )


def _remote_parent(flags: int, state: TraceState | None = None) -> Scenario:
    def scenario(tracer: trace.Tracer, engine: sa.Engine) -> None:
        remote = SpanContext(0xABC, 0xDEF, True, TraceFlags(flags), state)
        with trace.use_span(NonRecordingSpan(remote)), engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))

    return scenario


@pytest.mark.parametrize(
    "sampler", [ParentBased(TraceIdRatioBased(0.5)), ParentBased(ALWAYS_OFF), TraceIdRatioBased(1.0), ALWAYS_ON]
)
@pytest.mark.parametrize("flags", [0x00, 0x01, 0x02, 0x03])
def test_statement_spans_under_a_remote_parent_are_the_sdk_tracers(
    monkeypatch: pytest.MonkeyPatch, sampler: Sampler, flags: int
) -> None:
    spans = _same_spans(_remote_parent(flags, TraceState([("k", "v")])), monkeypatch, sampler=sampler)
    assert all(s["parent"] == ("?", True) for s in spans)


def test_an_unsampled_parents_statement_makes_no_span_and_is_still_counted() -> None:
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider(sampler=ParentBased(TraceIdRatioBased(0)))
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    StatementsInstrumentor().instrument(tracer_provider=tracer_provider, meter_provider=MeterProvider([reader]))
    try:
        with (
            tracer_provider.get_tracer("t").start_as_current_span("request"),
            sa.create_engine("sqlite://").connect() as conn,
        ):
            conn.execute(sa.text("SELECT 1"))
    finally:
        StatementsInstrumentor().uninstrument()
    assert exporter.get_finished_spans() == ()
    data = reader.get_metrics_data()
    counts = [p.count for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics  # type: ignore[union-attr]
              if m.name == "db.client.operation.duration" for p in m.data.data_points]  # fmt: skip
    assert counts == [1]


class _Ids(IdGenerator):
    """The SDK's random ids, from a seeded generator: both tracers see the same sequence."""

    def __init__(self, seed: int, random_ids: bool = True) -> None:
        self._random = random.Random(seed)
        self._random_ids = random_ids

    def generate_span_id(self) -> int:
        return self._random.getrandbits(64) or 1

    def generate_trace_id(self) -> int:
        return self._random.getrandbits(128) or 1

    def is_trace_id_random(self) -> bool:
        return self._random_ids


SAMPLERS = [
    ParentBased(TraceIdRatioBased(0.1)),
    ParentBased(TraceIdRatioBased(0.5)),
    ParentBased(TraceIdRatioBased(0.0)),
    ParentBased(TraceIdRatioBased(1.0)),
    ParentBased(ALWAYS_ON),
    ParentBased(ALWAYS_OFF),
    ParentBased(TraceIdRatioBased(0.25), remote_parent_sampled=ALWAYS_OFF),  # not the default delegates: asked
    TraceIdRatioBased(0.3),
    ALWAYS_ON,
]


@pytest.mark.parametrize("sampler", SAMPLERS, ids=[s.get_description()[:60] for s in SAMPLERS])
@pytest.mark.parametrize("random_ids", [True, False])
def test_server_span_decisions_and_flags_are_the_sdk_samplers(sampler: Sampler, random_ids: bool) -> None:
    """2,000 roots and children of remote parents of each kind: sampled or not, flags and trace state as the SDK's
    tracer gives them, for the same trace ids."""
    parents: list[Any] = [None] + [
        trace.set_span_in_context(
            NonRecordingSpan(SpanContext(0x5A, 0x7, True, TraceFlags(f), TraceState([("a", "1")])))
        )
        for f in (0, 1, 2, 3)
    ]
    results = []
    for lean in (True, False):
        provider = TracerProvider(sampler=sampler, id_generator=_Ids(7, random_ids))
        tracer = provider.get_tracer("compare")
        made = LeanTracer.for_tracer(tracer)
        assert made is not None
        seen = []
        for i in range(2000):
            parent = parents[i % len(parents)]
            if lean:
                span = made.start("GET", parent, SpanKind.SERVER, dict, {"k": i})
            else:
                span = tracer.start_span("GET", parent, SpanKind.SERVER, {"k": i})
            context = span.get_span_context()
            seen.append((context.trace_id, int(context.trace_flags), str(context.trace_state), span.is_recording()))
            span.end()
        results.append(seen)
    assert results[0] == results[1]
    sampled = sum(1 for _, flags, _, _ in results[0] if flags & 1)
    assert 0 < sampled < 2000 or sampler.get_description() in {"AlwaysOnSampler", "ParentBased{root:AlwaysOnSampler"}


def test_the_parent_and_root_shortcuts_are_taken_only_for_the_sdks_samplers() -> None:
    assert _samplers.parent_decides(ParentBased(TraceIdRatioBased(0.1)))
    assert _samplers.root_bound(ParentBased(TraceIdRatioBased(0.1))) == TraceIdRatioBased(0.1).bound
    assert _samplers.root_bound(ParentBased(ALWAYS_OFF)) == 0
    assert not _samplers.parent_decides(ParentBased(ALWAYS_ON, remote_parent_sampled=ALWAYS_OFF))
    assert not _samplers.parent_decides(TraceIdRatioBased(0.1))

    class Mimic(Sampler):  # a sampler of the user's that describes itself as the SDK's
        def should_sample(self, *args: Any, **kwargs: Any) -> Any:
            return ALWAYS_OFF.should_sample(*args, **kwargs)

        def get_description(self) -> str:
            return ParentBased(ALWAYS_ON).get_description()

    assert not _samplers.parent_decides(Mimic())


def test_an_unsampled_span_draws_its_id_once_when_its_context_is_read() -> None:
    """The lean tracer's non-recording span is the SDK's (same trace id, flags, state; a new span id; not remote),
    its span id drawn at the first read and the same at every later one, from any thread."""
    import threading

    sampler = ParentBased(TraceIdRatioBased(0.0))
    lean_provider = TracerProvider(sampler=sampler, id_generator=_Ids(3))
    sdk_provider = TracerProvider(sampler=sampler, id_generator=_Ids(3))
    made = LeanTracer.for_tracer(lean_provider.get_tracer("compare"))
    assert made is not None
    ours = made.start("GET", None, SpanKind.SERVER, dict, {})
    theirs = sdk_provider.get_tracer("compare").start_span("GET", None, SpanKind.SERVER)
    assert type(ours) is _unsampled.Unsampled and not ours.is_recording()
    assert _unsampled.sampled_context(ours) is None and ours._context is None  # no id drawn by that question
    seen: list[SpanContext] = []
    threads = [threading.Thread(target=lambda: seen.append(ours.get_span_context())) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({(c.trace_id, c.span_id) for c in seen}) == 1 and ours.get_span_context() == seen[0]
    assert ours.get_span_context() == theirs.get_span_context()  # the same seeded ids: every field equal
    assert repr(ours) == repr(theirs)


@pytest.mark.parametrize("sampler", ["always_off", "parentbased_traceidratio"])
def test_the_lean_tracers_start_up_check_passes_whatever_sampler_the_environment_names(
    monkeypatch: pytest.MonkeyPatch, sampler: str
) -> None:
    """The check makes a scratch provider, which reads OTEL_TRACES_SAMPLER: a sampler that drops its probe span
    (a 0.1 ratio, the commonest production setting) must not switch the lean tracer off."""
    from otel_reliability.upstream import tracing

    monkeypatch.setenv("OTEL_TRACES_SAMPLER", sampler)
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "0")
    assert tracing._check_lean_span()


@pytest.mark.parametrize("via", ["start_root", "server span"])
@pytest.mark.parametrize("ratio", [0.0, 0.1, 0.5, 1.0])
def test_a_root_draws_its_trace_id_as_the_sdks_random_id_generator_does(ratio: float, via: str) -> None:
    """With the SDK's own ``RandomIdGenerator`` the lean tracer draws a root's trace id itself (the generator's
    arithmetic on the ``random`` module), and so does the SERVER span's shortcut for a root the ratio drops
    (``ServerSpans.start`` with ``LeanTracer.root_drop``): the same ids and decisions as the SDK's tracer from the
    same seed."""
    from otel_reliability.instrumentation._server_span import ServerSpans

    sampler = ParentBased(TraceIdRatioBased(ratio))
    scope = {"type": "http", "method": "GET", "path": "/", "headers": [(b"host", b"x")]}
    results = []
    for lean in (True, False):
        provider = TracerProvider(sampler=sampler)
        tracer = provider.get_tracer("compare")
        made = LeanTracer.for_tracer(tracer)
        assert made is not None and made._sdk_ids
        spans = ServerSpans(provider)
        assert spans._drop is not None  # the shortcut is there to be taken
        random.seed(11)
        seen = []
        for _ in range(500):
            if not lean:
                span = tracer.start_span("GET", None, SpanKind.SERVER)
            elif via == "start_root":
                span = made.start_root("GET", None, SpanKind.SERVER, dict, {})
            else:
                span, token = spans.start(scope)
                assert trace.get_current_span() is span
                seen.append((span.get_span_context().trace_id, span.is_recording()))
                spans.end(span, token, scope, None, 200, None, None)
                continue
            seen.append((span.get_span_context().trace_id, span.is_recording()))
            span.end()
        results.append(seen)
    assert results[0] == results[1]
    assert {recording for _, recording in results[0]} == (
        {False} if ratio == 0 else {True} if ratio == 1 else {True, False}
    )
