"""The ``operation.in_flight``, ``operation.stuck`` and ``operation.oldest_age`` gauges, fed by two instrumentors.

``reliability_operations`` contributes the operations running in this process (``track_operation``);
``reliability_stuck`` contributes the rows counted by the database stuck detectors (``register_stuck_detector``).
Each keeps what it contributes in its ``Instrumented`` and adds it here as a *source*; the gauges merge the
sources active on their meter, one point per ``operation.name`` (counts added, oldest age the largest). So
disabling one entry point leaves the other's series, with the same scope, names and attributes as when one
instrumentor made both (whichever of the two instruments first creates the gauges; the SDK returns the same ones
to the second).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, NamedTuple, Protocol, TypeVar

from opentelemetry.metrics import CallbackOptions, Meter, Observation

from otel_reliability import semconv
from otel_reliability.instrumentation._instrumented import Instrumented

SCOPE = "otel_reliability.operations"
"""The instrumentation scope of every ``operation.*`` series (the ``otel_scope_name`` label on :9464)."""


class Row(NamedTuple):
    """What one source knows about one operation name."""

    name: str
    in_flight: int
    stuck: int
    oldest_age: float


class Contribution(Protocol):
    def rows(self) -> Iterable[Row]: ...


C = TypeVar("C", bound=Contribution)

_sources: list[Instrumented[Any]] = []


def add_source(source: Instrumented[C]) -> Instrumented[C]:
    """Let the gauges read ``source.state.rows()`` while ``source`` is instrumented on their meter (once)."""
    if not any(s is source for s in _sources):
        _sources.append(source)
    return source


def merged(meter: Meter) -> dict[str, Row]:
    """One row per operation name over the sources active on ``meter``."""
    out: dict[str, Row] = {}
    for source in _sources:
        state = source.state
        if state is None or not source.active_on(meter):
            continue
        for row in state.rows():
            seen = out.get(row.name)
            if seen is not None:
                row = Row(
                    row.name,
                    seen.in_flight + row.in_flight,
                    seen.stuck + row.stuck,
                    max(seen.oldest_age, row.oldest_age),
                )
            out[row.name] = row
    return out


def create(meter: Meter) -> None:
    """Create the three gauges on ``meter`` (a second call on the same meter gets the same gauges)."""

    def callback(field: Callable[[Row], float]) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def observe(options: CallbackOptions) -> Iterable[Observation]:
            return [Observation(field(row), {semconv.ATTR_OPERATION_NAME: name}) for name, row in merged(meter).items()]

        return observe

    meter.create_observable_gauge(
        semconv.METRIC_OPERATION_IN_FLIGHT,
        callbacks=[callback(lambda row: row.in_flight)],
        unit="{operation}",
        description="Tracked operations running now.",
    )
    meter.create_observable_gauge(
        semconv.METRIC_OPERATION_STUCK,
        callbacks=[callback(lambda row: row.stuck)],
        unit="{operation}",
        description="Operations in flight longer than OTEL_RELIABILITY_STUCK_THRESHOLD (in process and in "
        "database-backed detectors).",
    )
    meter.create_observable_gauge(
        semconv.METRIC_OPERATION_OLDEST_AGE,
        callbacks=[callback(lambda row: row.oldest_age)],
        unit=semconv.UNIT_SECONDS,
        description="Age of the oldest operation in flight.",
    )
