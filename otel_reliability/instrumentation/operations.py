"""Operations in flight, stuck operations and their durations (``reliability_operations``).

Usage::

    from otel_reliability import track_operation

    with track_operation("transcribe", key=episode_id):      # sync context manager
        ...

    async with track_operation("publish", key=episode_id):   # async context manager
        ...

    @track_operation("nightly-report")                         # decorator, sync or async function
    def build_report() -> None: ...

``opentelemetry-instrument`` loads this instrumentor (entry point ``reliability_operations``); programmatic
set-up: ``OperationsInstrumentor().instrument(meter_provider=..., tracer_provider=...)``.

What it measures, all with the attribute ``operation.name``:

- ``operation.in_flight`` ({operation}): operations running now;
- ``operation.stuck`` ({operation}): those running longer than ``OTEL_RELIABILITY_STUCK_THRESHOLD`` seconds
  (the stuck rows of the database-backed detectors, ``register_stuck_detector``, are added to the same gauges by
  their own entry point, ``reliability_stuck``: see ``_operation_gauges``);
- ``operation.oldest_age`` (s): the age of the oldest one running;
- ``operation.duration`` (s, histogram): how long finished operations took, with ``error.type`` on failure;
- a span named after the operation, with ``operation.name`` and ``operation.key``.

Why a registry and observable gauges: a stuck operation is one that has *not* finished, so no measurement
recorded at its end can reveal it. Each ``track_operation`` puts one entry (start time, name, key) in a dict
on entry and removes it on exit (O(1) both); the gauges walk that dict only when a reader collects.

``operation.name`` must be a small fixed set (it is a metric label); put the unbounded identifier in ``key``,
which only goes to the span and to the admin endpoint's list of stuck operations.

Without this instrumentor ``track_operation`` still keeps the registry (the admin endpoint lists the
operations) and creates spans with the global tracer, but records no metrics.
"""

from __future__ import annotations

import functools
import inspect
import itertools
import math
import threading
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from opentelemetry import context as otel_context
from opentelemetry import metrics, trace
from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]
from opentelemetry.trace import Status, StatusCode

from otel_reliability import changes, config, semconv
from otel_reliability.instrumentation import _operation_gauges
from otel_reliability.instrumentation._instrumented import Instrumented
from otel_reliability.instrumentation._operation_gauges import SCOPE, Row
from otel_reliability.version import __version__

F = TypeVar("F", bound=Callable[..., Any])

NAME_ATTR = semconv.ATTR_OPERATION_NAME
KEY_ATTR = semconv.ATTR_OPERATION_KEY

# Monotonic clock for ages; tests replace it to age operations without sleeping.
_clock: Callable[[], float] = time.monotonic


@dataclass(frozen=True, slots=True)
class InFlight:
    """One operation running now."""

    name: str
    key: str | None
    started: float  # _clock() at entry
    threshold: float | None  # per-operation stuck threshold; None: the configured one

    def age(self, now: float) -> float:
        return max(0.0, now - self.started)

    def is_stuck(self, now: float, default_threshold: float) -> bool:
        limit = default_threshold if self.threshold is None else self.threshold
        return now - self.started > limit


class _Registry:
    """The operations in flight, by a private id. Enter and exit are one dict insert / pop each."""

    def __init__(self) -> None:
        self._ops: dict[int, InFlight] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self.names: set[str] = set()  # every name seen, so a finished name reports 0 instead of vanishing

    def enter(self, op: InFlight) -> int:
        token = next(self._ids)
        with self._lock:
            self._ops[token] = op
            if op.name not in self.names:
                self.names.add(op.name)
        return token

    def exit(self, token: int) -> None:
        with self._lock:
            self._ops.pop(token, None)

    def current(self) -> list[InFlight]:
        with self._lock:
            return list(self._ops.values())

    def known_names(self) -> set[str]:
        with self._lock:
            return set(self.names)


RUNNING_OPERATIONS = _Registry()


def in_flight() -> list[InFlight]:
    """The operations running now (a copy)."""
    return RUNNING_OPERATIONS.current()


def stuck_in_process(threshold: float | None = None) -> list[tuple[InFlight, float]]:
    """In-process operations older than their threshold, with their age, oldest first."""
    default = config.settings().stuck_threshold if threshold is None else threshold
    now = _clock()
    found = [(op, op.age(now)) for op in RUNNING_OPERATIONS.current() if op.is_stuck(now, default)]
    found.sort(key=lambda pair: -pair[1])
    return found


# --- instruments -----------------------------------------------------------------------------------------------
class _Instruments:
    """The instruments of one ``instrument()`` call, and the in-process rows of the ``operation.*`` gauges (their
    callbacks read the current one, see ``_operation_gauges``)."""

    def __init__(self, settings: config.Settings, meter: metrics.Meter, tracer_provider: Any = None) -> None:
        self._stuck_threshold = settings.stuck_threshold  # read once: the callbacks run at every collection
        self.tracer = trace.get_tracer(SCOPE, __version__, tracer_provider, semconv.SCHEMA_URL)
        self.duration = meter.create_histogram(
            semconv.METRIC_OPERATION_DURATION,
            unit=semconv.UNIT_SECONDS,
            description="Duration of finished tracked operations.",
        )
        _operation_gauges.create(meter)

    def rows(self) -> list[Row]:
        """One row per operation name seen in this process (0 for a name with nothing running now)."""
        threshold = self._stuck_threshold
        now = _clock()
        out: dict[str, tuple[int, int, float]] = {name: (0, 0, 0.0) for name in RUNNING_OPERATIONS.known_names()}
        soonest = math.inf  # seconds until the next operation turns stuck: health must not miss that moment
        for op in RUNNING_OPERATIONS.current():
            count, stuck_count, oldest = out.get(op.name, (0, 0, 0.0))
            is_stuck = op.is_stuck(now, threshold)
            if not is_stuck:
                limit = threshold if op.threshold is None else op.threshold
                soonest = min(soonest, limit - op.age(now))
            out[op.name] = (count + 1, stuck_count + (1 if is_stuck else 0), max(oldest, op.age(now)))
        if soonest < math.inf:
            changes.expires_at(time.monotonic() + max(0.0, soonest) + 0.001)
        return [Row(name, *values) for name, values in out.items()]


_instrumented = _operation_gauges.add_source(Instrumented[_Instruments]())
"""While instrumented: the duration histogram, the tracer, and this process's rows of the ``operation.*`` gauges."""
_fallback_tracer: trace.Tracer | None = None


def _tracer() -> trace.Tracer:
    """The instrumentor's tracer, else the global one (spans without the instrumentor, metrics only with it)."""
    global _fallback_tracer
    instruments = _instrumented.state
    if instruments is not None:
        return instruments.tracer
    if _fallback_tracer is None:
        _fallback_tracer = trace.get_tracer(SCOPE, __version__, schema_url=semconv.SCHEMA_URL)
    return _fallback_tracer


_instruments: tuple[str, ...] = ()
"""Empty: tracked operations are this package's own API, no library is patched."""


class OperationsInstrumentor(BaseInstrumentor):
    """Entry point ``reliability_operations``. Accepts ``settings=`` (the distro passes the loaded Settings),
    ``meter_provider=``, ``tracer_provider=``. Creates the ``operation.*`` instruments (temp files have their own,
    ``reliability_tempfiles``)."""

    def instrumentation_dependencies(self) -> Collection[str]:
        return _instruments

    def _instrument(self, **kwargs: Any) -> None:
        settings = kwargs.get("settings") or config.settings()
        meter = metrics.get_meter(SCOPE, __version__, kwargs.get("meter_provider"), semconv.SCHEMA_URL)
        _instrumented.start(_Instruments(settings, meter, kwargs.get("tracer_provider")), meter)

    def _uninstrument(self, **kwargs: Any) -> None:
        _instrumented.stop()


# --- track_operation -------------------------------------------------------------------------------------------
class _Active:
    """What one entry of ``track_operation`` holds until its exit."""

    __slots__ = ("ctx_token", "registry_token", "span", "started")

    def __init__(self, registry_token: int, started: float, span: trace.Span, ctx_token: object) -> None:
        self.registry_token = registry_token
        self.started = started
        self.span = span
        self.ctx_token = ctx_token


class track_operation:
    """Mark an operation in flight: ``with`` / ``async with`` it, or decorate a sync or async function.

    ``name`` is a metric label (keep it to a small fixed set); ``key`` identifies this run (an episode id) and
    only goes to the span and the stuck-operations list. ``threshold`` overrides the stuck threshold for this
    operation (default ``OTEL_RELIABILITY_STUCK_THRESHOLD``).

    Create one per run (``with track_operation(...)``) rather than sharing one object between threads or
    tasks that enter it at the same time; as a decorator each call gets its own.
    """

    __slots__ = ("_stack", "key", "name", "threshold")

    def __init__(self, name: str, *, key: object = None, threshold: float | None = None) -> None:
        self.name = name
        self.key = None if key is None else str(key)
        self.threshold = threshold
        self._stack: list[_Active] = []  # one object may be entered again while entered (recursion)

    # context manager -------------------------------------------------------------------------------------------
    def _start(self) -> _Active:
        started = _clock()
        attributes: dict[str, str] = {NAME_ATTR: self.name}
        if self.key is not None:
            attributes[KEY_ATTR] = self.key
        span = _tracer().start_span(self.name, attributes=attributes)
        ctx_token = otel_context.attach(trace.set_span_in_context(span))
        token = RUNNING_OPERATIONS.enter(InFlight(self.name, self.key, started, self.threshold))
        return _Active(token, started, span, ctx_token)

    def _finish(self, active: _Active, exc: BaseException | None) -> None:
        RUNNING_OPERATIONS.exit(active.registry_token)
        elapsed = _clock() - active.started
        span = active.span
        instruments = _instrumented.state
        if exc is None:
            if instruments is not None:
                instruments.duration.record(elapsed, {NAME_ATTR: self.name})
        else:
            error_type = semconv.error_type(exc, qualified=False)
            if instruments is not None:
                instruments.duration.record(elapsed, {NAME_ATTR: self.name, semconv.ATTR_ERROR_TYPE: error_type})
            if span.is_recording():
                span.record_exception(exc)
                span.set_attribute(semconv.ATTR_ERROR_TYPE, error_type)
                span.set_status(Status(StatusCode.ERROR, error_type))
        otel_context.detach(active.ctx_token)  # type: ignore[arg-type]
        span.end()

    def __enter__(self) -> track_operation:
        self._stack.append(self._start())
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        self._finish(self._stack.pop(), exc)

    async def __aenter__(self) -> track_operation:
        return self.__enter__()

    async def __aexit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        self.__exit__(exc_type, exc, tb)

    # decorator ---------------------------------------------------------------------------------------------------
    def __call__(self, func: F) -> F:
        name, key, threshold = self.name, self.key, self.threshold
        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                async with track_operation(name, key=key, threshold=threshold):
                    return await func(*args, **kwargs)

            return cast(F, async_wrapper)

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with track_operation(name, key=key, threshold=threshold):
                return func(*args, **kwargs)

        return cast(F, wrapper)
