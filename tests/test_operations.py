"""In-process operations: track_operation's registry, gauges, histogram and spans; the operations view and
the stuck-operations admin actions. Ages are driven by a fake clock, not by sleeping."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from opentelemetry import trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from otel_reliability import config
from otel_reliability.health.model import CheckContext, Status
from otel_reliability.health.views import operations as view
from otel_reliability.instrumentation import operations
from otel_reliability.instrumentation.operations import OperationsInstrumentor, track_operation
from otel_reliability.readings import Readings


class FakeClock:
    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


@dataclass
class Env:
    readings: Readings
    spans: InMemorySpanExporter
    clock: FakeClock
    tracer_provider: TracerProvider

    def snap(self):  # type: ignore[no-untyped-def]
        return self.readings.snapshot(max_age=0.0)

    def value(self, metric: str, name: str) -> float | None:
        return self.snap().value(metric, {"operation.name": name})

    def ctx(self) -> CheckContext:
        return CheckContext(readings=self.readings, settings=SETTINGS)


SETTINGS = config.load({"OTEL_RELIABILITY_STUCK_THRESHOLD": "60"})
"""Passed to the instrumentor and the views, as the distro does; no global is patched."""


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> Iterator[Env]:
    clock = FakeClock()
    monkeypatch.setattr(operations, "_clock", clock)
    readings = Readings(background=False)
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    instrumentor = OperationsInstrumentor()
    instrumentor.instrument(
        meter_provider=MeterProvider(metric_readers=[readings]), tracer_provider=tracer_provider, settings=SETTINGS
    )
    try:
        yield Env(readings, exporter, clock, tracer_provider)
    finally:
        instrumentor.uninstrument()
    assert not [op for op in operations.in_flight() if op.name.startswith("t-")], "a test left an operation open"


def test_threads_in_flight_become_stuck_after_the_threshold_and_leave_on_exit(env: Env) -> None:
    release = threading.Event()
    entered = threading.Barrier(4)

    def job(i: int) -> None:
        with track_operation("t-threads", key=f"ep-{i}"):
            entered.wait(5)
            release.wait(5)

    threads = [threading.Thread(target=job, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    try:
        entered.wait(5)
        assert env.value("operation.in_flight", "t-threads") == 3
        assert env.value("operation.stuck", "t-threads") == 0

        env.clock.now += 59.0
        assert env.value("operation.stuck", "t-threads") == 0  # not yet past the 60 s threshold
        env.clock.now += 2.0
        assert env.value("operation.stuck", "t-threads") == 3
        assert env.value("operation.oldest_age", "t-threads") == pytest.approx(61.0)
    finally:
        release.set()
        for t in threads:
            t.join(5)
    assert env.value("operation.in_flight", "t-threads") == 0  # a finished name reports 0, not nothing
    assert env.value("operation.stuck", "t-threads") == 0
    assert env.value("operation.oldest_age", "t-threads") == 0
    duration = env.snap().points("operation.duration", {"operation.name": "t-threads"})
    assert [(p.value, p.total) for p in duration] == [(3.0, pytest.approx(3 * 61.0))]


def test_asyncio_tasks_and_async_decorator_are_tracked_per_task(env: Env) -> None:
    async def main() -> None:
        release = asyncio.Event()

        @track_operation("t-async-decorated")
        async def decorated() -> str:
            await release.wait()
            return "done"

        async def with_block(i: int) -> None:
            async with track_operation("t-async", key=i):
                await release.wait()

        tasks = [asyncio.create_task(with_block(i)) for i in range(4)]
        tasks.append(asyncio.create_task(decorated()))
        await asyncio.sleep(0)  # let every task enter
        assert env.value("operation.in_flight", "t-async") == 4
        assert env.value("operation.in_flight", "t-async-decorated") == 1
        env.clock.now += 61
        assert env.value("operation.stuck", "t-async") == 4
        keys = sorted(op.key for op, _ in operations.stuck_in_process(SETTINGS.stuck_threshold) if op.name == "t-async")
        assert keys == ["0", "1", "2", "3"]
        release.set()
        results = await asyncio.gather(*tasks)
        assert results[-1] == "done"

    asyncio.run(main())
    assert env.value("operation.in_flight", "t-async") == 0
    assert env.value("operation.stuck", "t-async-decorated") == 0
    spans = [s for s in env.spans.get_finished_spans() if s.name == "t-async"]
    assert sorted(s.attributes["operation.key"] for s in spans) == ["0", "1", "2", "3"]


def test_explicit_threshold_overrides_the_configured_one(env: Env) -> None:
    with track_operation("t-short", threshold=5), track_operation("t-default"):
        env.clock.now += 10
        assert env.value("operation.stuck", "t-short") == 1
        assert env.value("operation.stuck", "t-default") == 0


def test_failure_records_error_type_on_histogram_and_span(env: Env) -> None:
    @track_operation("t-fails", key="k1")
    def fails() -> None:
        env.clock.now += 2
        raise TimeoutError("upstream")

    with pytest.raises(TimeoutError):
        fails()
    points = env.snap().points("operation.duration", {"operation.name": "t-fails"})
    assert [(dict(p.attributes), p.value, p.total) for p in points] == [
        ({"operation.name": "t-fails", "error.type": "TimeoutError"}, 1.0, 2.0)
    ]
    (span,) = [s for s in env.spans.get_finished_spans() if s.name == "t-fails"]
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes["operation.name"] == "t-fails" and span.attributes["operation.key"] == "k1"
    assert [e.name for e in span.events] == ["exception"]
    assert env.value("operation.in_flight", "t-fails") == 0


class QuotaExceeded(Exception):
    pass


def test_an_application_error_class_is_its_bare_name_in_error_type(env: Env) -> None:
    """``error.type`` of an operation is the bare class name (semconv.error_type, unqualified), as it always was."""

    @track_operation("t-quota")
    def fails() -> None:
        raise QuotaExceeded

    with pytest.raises(QuotaExceeded):
        fails()
    points = env.snap().points("operation.duration", {"operation.name": "t-quota"})
    assert [p.attributes.get("error.type") for p in points] == ["QuotaExceeded"]
    (span,) = [s for s in env.spans.get_finished_spans() if s.name == "t-quota"]
    assert span.attributes["error.type"] == "QuotaExceeded"


def test_span_is_current_inside_the_operation(env: Env) -> None:
    tracer = env.tracer_provider.get_tracer("test")
    with track_operation("t-parent"), tracer.start_as_current_span("child"):
        pass
    spans = {s.name: s for s in env.spans.get_finished_spans()}
    assert spans["child"].parent is not None
    assert spans["child"].parent.span_id == spans["t-parent"].context.span_id
    assert not trace.get_current_span().get_span_context().is_valid  # context restored


def test_uninstrument_silences_the_gauges(env: Env) -> None:
    OperationsInstrumentor().uninstrument()
    with track_operation("t-after-uninstrument"):
        assert env.snap().points("operation.in_flight") == ()
    # The fixture's own uninstrument is then a no-op; re-instrument so its teardown stays symmetric.
    OperationsInstrumentor().instrument(meter_provider=MeterProvider(metric_readers=[Readings(background=False)]))


def test_view_is_degraded_while_stuck_and_its_numbers_are_the_readings(env: Env) -> None:
    assert view.compute(env.ctx()).status is Status.HEALTHY
    with track_operation("t-view", key="a"), track_operation("t-view", key="b"):
        env.clock.now += 100
        with track_operation("t-view", key="fresh"):
            snap = env.snap()  # the view reuses this collection (the Readings cache it briefly)
            result = view.compute(env.ctx())
    assert result.status is Status.DEGRADED
    assert result.body["stuck_count"] == snap.total("operation.stuck") == 2
    assert result.body["operations"]["t-view"] == {"in_flight": 3, "stuck": 2, "oldest_age_seconds": 100.0}
    assert result.summary == {"stuck_count": 2, "in_flight": 3}


def test_admin_list_matches_the_readings_count_and_cleanup_cannot_kill_in_process(env: Env) -> None:
    with track_operation("t-admin", key="old"):
        env.clock.now += 120
        with track_operation("t-admin", key="young"):
            env.clock.now += 1
            body = view.stuck_operations(env.ctx(), {})
            assert body["stuck_count"] == env.snap().total("operation.stuck") == 1
            assert body["action_required"] is True
            assert body["stuck_operations"] == [
                {"name": "t-admin", "key": "old", "age_seconds": 121.0, "source": "in_process"}
            ]
            result = view.cleanup(env.ctx(), {"dry_run": "false"})
            assert result["marked"] == [] and result["marked_count"] == 0
            assert result["in_process_not_killable"] == [{"name": "t-admin", "key": "old", "age_seconds": 121.0}]
            # Reporting is not killing: the operation is still in flight and still stuck.
            assert env.value("operation.stuck", "t-admin") == 1
    body = view.stuck_operations(env.ctx(), {})
    assert body == {**body, "stuck_count": 0, "stuck_operations": [], "action_required": False}


@pytest.mark.parametrize("query", [{"dryrun": "true"}, {"dry_run": "maybe"}])
def test_cleanup_rejects_unknown_or_bad_parameters(env: Env, query: dict[str, str]) -> None:
    with pytest.raises(ValueError):
        view.cleanup(env.ctx(), query)


def test_registry_is_kept_without_the_instrumentor(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(operations._instrumented, "state", None)
    with track_operation("t-uninstrumented", key=7):
        assert [op.key for op in operations.in_flight() if op.name == "t-uninstrumented"] == ["7"]
    assert not [op for op in operations.in_flight() if op.name == "t-uninstrumented"]


def test_public_api_resolves() -> None:
    import otel_reliability

    assert otel_reliability.track_operation is track_operation
