"""The one instrumentor idiom (instrumentation/_instrumented.py): what is active while instrumented, what is wrapped.

The SDK cannot remove an instrument and, asked again for one on the same meter, returns the first with its
callbacks; these tests pin down what every instrumentor relies on because of that.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import wrapt
from opentelemetry.instrumentation.utils import unwrap
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from otel_reliability.instrumentation._instrumented import (
    Instrumented,
    is_wrapped,
    outermost,
    override,
    restore,
    unwrap_own,
)
from otel_reliability.instrumentation.operations import OperationsInstrumentor, track_operation


def _values(reader: InMemoryMetricReader, name: str) -> list[float]:
    data = reader.get_metrics_data()
    if data is None:
        return []
    return [
        point.value
        for rm in data.resource_metrics
        for sm in rm.scope_metrics
        for metric in sm.metrics
        if metric.name == name
        for point in metric.data.data_points
    ]


def _observe(state: float, options: CallbackOptions) -> Iterable[Observation]:
    return [Observation(state)]


def test_a_gated_callback_reports_the_current_state_only_while_instrumented_on_its_meter() -> None:
    reader, other_reader = InMemoryMetricReader(), InMemoryMetricReader()
    meter = MeterProvider(metric_readers=[reader]).get_meter("t")
    other = MeterProvider(metric_readers=[other_reader]).get_meter("t")
    instrumented: Instrumented[float] = Instrumented()

    def instrument(state: float, on: Any) -> None:
        instrumented.start(state, on)
        on.create_observable_gauge("g", callbacks=[instrumented.gate(on, _observe)])

    instrument(1.0, meter)
    assert instrumented.active_on(meter) and not instrumented.active_on(other)
    assert _values(reader, "g") == [1.0]
    assert instrumented.stop() == 1.0 and instrumented.state is None
    assert _values(reader, "g") == []
    instrument(2.0, meter)  # the SDK keeps the first callback: it reads the state of now
    assert _values(reader, "g") == [2.0]
    instrument(3.0, other)  # instrumented elsewhere now: the first provider's callback is quiet
    assert _values(reader, "g") == [] and _values(other_reader, "g") == [3.0]


def test_operations_report_again_after_reinstrumenting_on_the_same_provider() -> None:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    instrumentor = OperationsInstrumentor()
    instrumentor.instrument(meter_provider=provider)
    instrumentor.uninstrument()
    with track_operation("t-quiet"):
        assert _values(reader, "operation.in_flight") == []
    instrumentor.instrument(meter_provider=provider)
    try:
        with track_operation("t-again"):
            assert 1 in _values(reader, "operation.in_flight")
    finally:
        instrumentor.uninstrument()


class _Target:
    def method(self) -> str:
        return "plain"


def test_is_wrapped_sees_wrapt_wrappers_of_wrapt_1_and_2_on_the_class_itself() -> None:
    original = _Target.__dict__["method"]
    assert not is_wrapped(_Target, "method")
    wrapt.wrap_function_wrapper(_Target, "method", lambda wrapped, instance, args, kwargs: "wrapped")
    try:
        assert is_wrapped(_Target, "method") and _Target().method() == "wrapped"

        class Sub(_Target):
            pass

        assert not is_wrapped(Sub, "method")  # inherited: unwrap(Sub, ...) would restore nothing
    finally:
        unwrap(_Target, "method")
    assert _Target.__dict__["method"] is original and not is_wrapped(_Target, "method")


def test_override_is_idempotent_restored_exactly_and_acts_once_through_super() -> None:
    calls: list[str] = []

    class Base:
        def run(self, value: int) -> int:
            return value

    class Child(Base):
        def run(self, value: int) -> int:  # an override that calls super(): only its patch may count
            return super().run(value) + 1

    originals = (Base.__dict__["run"], Child.__dict__["run"])

    def counting(owner: type) -> Any:
        outer = outermost(owner, "run")

        def make(original: Any) -> Any:
            def run(self: Any, value: int) -> int:
                if outer(type(self)):
                    calls.append(owner.__name__)
                return int(original(self, value))

            return run

        return make

    for owner in (Base, Child):
        override(owner, "run", counting(owner))
        override(owner, "run", counting(owner))  # a second instrument(): no second layer
    try:
        assert Child().run(1) == 2 and Base().run(1) == 1
        assert calls == ["Child", "Base"]  # Child's call counted once (by Child's patch), Base's by Base's
    finally:
        for owner in (Base, Child):
            restore(owner, "run")
            restore(owner, "run")  # nothing left to undo: harmless
    assert (Base.__dict__["run"], Child.__dict__["run"]) == originals


def test_unwrap_own_leaves_an_inherited_method_inherited_and_restores_an_own_one() -> None:
    class Base:
        def inherited(self) -> str:
            return "base"

    class Child(Base):
        def own(self) -> str:
            return "child"

    def shout(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> str:
        return str(wrapped(*args, **kwargs)).upper()

    for name in ("inherited", "own"):
        wrapt.wrap_function_wrapper(Child, name, shout)
    assert (Child().inherited(), Child().own()) == ("BASE", "CHILD")
    unwrap_own(Child, "inherited")
    unwrap_own(Child, "own")
    unwrap_own(Child, "own")  # nothing left to undo
    assert "inherited" not in vars(Child) and not is_wrapped(Child, "own")
    assert (Child().inherited(), Child().own()) == ("base", "child")
