"""SQLAlchemy statements as client spans and the ``db.client.operation.duration`` histogram
(``reliability_statements``).

Usage: nothing for ``opentelemetry-instrument``; by hand::

    from otel_reliability.instrumentation.statements import StatementsInstrumentor
    StatementsInstrumentor().instrument(tracer_provider=tp, meter_provider=mp)   # before or after create_engine

Why not upstream's ``opentelemetry-instrumentation-sqlalchemy`` (0.66b2 on SQLAlchemy 2.1.9, its version gate
bypassed, ``OTEL_SEMCONV_STABILITY_OPT_IN=database``): it puts the statement text into ``db.query.text`` as
written (``... where id = 4242 and name = 'secret'``), names spans by keyword and database instead of operation
and table, sets no ``db.collection.name``, records no ``db.client.operation.duration``, misses engines created
before it was loaded and the connection-pool wait, and emits ``db.client.connections.usage`` beside our pool
metrics. The distro keeps it switched off (see ``otel_reliability.distro``).

What each statement gives, in the stable database semantic conventions, on SQLAlchemy 1.4, 2.0 and 2.1, sync
and async engines, whenever they were created:

- a CLIENT span named ``{db.operation.name} {db.collection.name}`` (``SELECT users``), child of the current
  span, with the attributes ``statement_attributes`` describes (literals of the SQL text replaced by ``?``).
- on the first statement after a connection was taken from the pool, ``db.client.connection.wait_time`` (s):
  how long that checkout took, so a slow request tells waiting for a connection from running the statement.
  A checkout that fails (pool timeout, database down) adds the event ``db.client.connection.wait`` with the
  same attribute and ``error.type`` to the current span, since no statement span follows.
- ``db.client.operation.duration`` (s, histogram, the semantic conventions' buckets) by ``db.system.name``,
  ``db.operation.name``, ``db.collection.name`` and ``error.type``. Bounded: operations come from a fixed list;
  after ``MAX_COLLECTIONS`` distinct table names, new ones are left out of the metric (not of the span).

Time measured: the DBAPI ``execute``/``executemany`` call SQLAlchemy makes for the statement (the dialect's
``do_execute``, ``do_executemany`` or ``do_execute_no_params``), not fetching the rows.

Cost: a span start and one histogram record per statement (figure 6 of benchmarks/RESULTS.md). With an SDK
sampler of ``always_off`` (the distro's default while traces are not exported) no span is started at all, and the
duration is queued per statement shape and handed to the SDK when a reader collects (``BufferedHistogram`` in
``_published``: the same buckets, counts, sum, min and max as a ``record()`` per statement, at a fraction of its
cost); with spans, a sampled statement's duration is queued with its span's context (the exemplar candidate of
its bucket); a failed statement is recorded at once.

Suppression: statements run under ``opentelemetry.instrumentation.utils.suppress_instrumentation()`` are neither
traced nor counted; our own probes (stuck detectors) run that way.

How: the dialect's ``do_execute``, ``do_executemany`` and ``do_execute_no_params`` are overridden (plain
functions with SQLAlchemy's signatures, ``override`` in ``_instrumented``: a wrapt wrapper would cost ~0.8 µs a
statement) on every dialect class that defines them (those imported at instrumentation, and the class of each
engine created later), so every engine, including those created before instrumentation and the ``sync_engine`` of
an ``AsyncEngine``, is covered, and a failing DBAPI call is seen as it raises; ``Engine.raw_connection`` is
wrapped to time checkouts (only while spans can be recorded: the wait is a span attribute).
Not SQLAlchemy's ``before_cursor_execute``/``after_cursor_execute``/``handle_error`` events: an engine-level
listener switches every connection of every engine to SQLAlchemy's event-dispatching path (``engine_connect``,
``begin``, ``before_execute``, ... all looked up on each statement), which cost ~28 µs per statement here, more
than the telemetry itself (benchmarks/RESULTS.md, section 8).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
import weakref
from collections.abc import Callable, Collection
from dataclasses import dataclass
from time import perf_counter
from typing import Any, TypeVar

from opentelemetry import metrics, trace
from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]
from opentelemetry.instrumentation.utils import unwrap
from opentelemetry.trace import SpanKind, Status, StatusCode
from wrapt import wrap_function_wrapper

from otel_reliability import semconv
from otel_reliability.instrumentation import dialect_checks, on_import
from otel_reliability.instrumentation._instrumented import (
    Instrumented,
    classes_defining,
    definer,
    outermost,
    override,
    restore,
    suppressed,
)
from otel_reliability.instrumentation._lean_span import LeanSpan, LeanTracer
from otel_reliability.instrumentation._published import BufferedHistogram, HistogramSeries
from otel_reliability.instrumentation.spans import drops_every_span
from otel_reliability.instrumentation.statement_attributes import (
    BATCH_SIZE,
    ERROR_TYPE,
    STATUS_CODE,
    WAIT_EVENT,
    EngineInfo,
    describe,
    engine_info,
    engines,
    error_type,
    forget_collections,
    sqlstate,
)
from otel_reliability.version import __version__

_logger = logging.getLogger(__name__)

_instruments = ("sqlalchemy >= 1.4",)

DURATION = semconv.METRIC_DB_CLIENT_OPERATION_DURATION
WAIT_TIME = semconv.METRIC_DB_CLIENT_CONNECTION_WAIT_TIME

# The stable semantic conventions' advisory buckets for db.client.operation.duration (seconds).
BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10)
_CACHE_SIZE = 1024

# Beside SQLAlchemy's objects, never in their __dict__ (theirs and the application's to read and compare).
# The checkout's wait, by the pool's connection proxy, until the first statement takes it (while spans record).
_waits: weakref.WeakKeyDictionary[Any, float] = weakref.WeakKeyDictionary()


@dataclass(frozen=True)
class _Described:
    span_name: str
    span_attrs: dict[str, Any]
    metric_attrs: dict[str, str]
    series: HistogramSeries  # db.client.operation.duration of metric_attrs, while no span is recorded


@dataclass
class _Telemetry:
    tracer: trace.Tracer | LeanTracer | None  # None: no span at all (sampler always_off); lean for an SDK tracer
    duration: BufferedHistogram


_instrumented: Instrumented[_Telemetry] = Instrumented()
"""While instrumented: the tracer and the duration histogram the statement hooks record into."""
_METHODS = ("do_execute", "do_executemany", "do_execute_no_params")  # every DBAPI execute SQLAlchemy makes
_covered: list[tuple[type, str]] = []  # the dialect classes' methods we wrapped (each class that defines one)
_cover_lock = threading.Lock()


class StatementsInstrumentor(BaseInstrumentor):  # type: ignore[misc]
    """Entry point ``opentelemetry_instrumentor: reliability_statements``."""

    _wrapped: list[tuple[Any, str]]

    def instrumentation_dependencies(self) -> Collection[str]:
        return _instruments

    def _instrument(self, **kwargs: Any) -> None:
        self._wrapped = []
        # SQLAlchemy is patched when the program imports it (a program that never does pays nothing for it).
        self._pending = on_import.when_imported("sqlalchemy", lambda _module: self._patch(**kwargs))

    def _patch(self, **kwargs: Any) -> None:
        from sqlalchemy.engine import Engine

        version = __version__
        tracer_provider = kwargs.get("tracer_provider") or trace.get_tracer_provider()
        tracer = trace.get_tracer("otel_reliability.statements", version, tracer_provider, semconv.SCHEMA_URL)
        meter = metrics.get_meter(
            "otel_reliability.statements", version, kwargs.get("meter_provider"), semconv.SCHEMA_URL
        )
        duration = meter.create_histogram(
            DURATION,
            semconv.UNIT_SECONDS,
            "Duration of database client operations.",
            explicit_bucket_boundaries_advisory=list(BUCKETS),
        )
        buffered = BufferedHistogram(meter, duration, BUCKETS)
        traced = None if drops_every_span(tracer_provider) else (LeanTracer.for_tracer(tracer) or tracer)
        telemetry = _instrumented.start(_Telemetry(traced, buffered), meter)
        _describe.cache_clear()
        forget_collections()
        from sqlalchemy.engine.default import DefaultDialect

        with _cover_lock:
            for method in (*_METHODS, dialect_checks.METHOD):  # the executes, and the first-connect checks
                for cls in classes_defining(DefaultDialect, method):
                    _cover_dialect(cls)
        wrap_function_wrapper(Engine, "__init__", _wrap_engine_init)
        self._wrapped.append((Engine, "__init__"))
        if telemetry.tracer is not None:  # the checkout's wait is a span attribute: nothing to time without spans
            wrap_function_wrapper(Engine, "raw_connection", _wrap_raw_connection)
            self._wrapped.append((Engine, "raw_connection"))

    def _uninstrument(self, **kwargs: Any) -> None:
        on_import.cancel(getattr(self, "_pending", None))
        if not getattr(self, "_wrapped", None):
            return
        with _cover_lock:
            for cls, attr in self._wrapped:
                unwrap(cls, attr)
            for cls, attr in _covered:
                restore(cls, attr)
            _covered.clear()
        self._wrapped = []
        _instrumented.stop()


# --- what a statement is called -----------------------------------------------------------------------------------
@functools.lru_cache(maxsize=_CACHE_SIZE)
def _describe(statement: str, info: EngineInfo, batch: bool) -> _Described:
    """What a statement text on an engine is called, and its duration series; cached, since an app sends few
    distinct texts."""
    name, span_attrs, metric_attrs = describe(statement, info, batch)
    tel = _instrumented.state
    if tel is None:
        raise RuntimeError("not instrumented")  # _begin checked it; the instrumentor was removed meanwhile
    return _Described(
        name, span_attrs, metric_attrs, tel.duration.series(frozenset(metric_attrs.items()), metric_attrs)
    )


# --- hooks (cheap: they run on every statement) ---------------------------------------------------------------------
_R = TypeVar("_R")
_failures_logged = False
_State = tuple[trace.Span, _Described, float]  # the statement's span, what it is, its start


def _telemetry_failed() -> None:
    """A failure in our telemetry (a span processor, an SDK change) must never fail the app's statement: the
    hooks catch it, and it is logged once per process."""
    global _failures_logged
    if not _failures_logged:
        _failures_logged = True
        _logger.warning("otel-reliability: statement telemetry failed (once per process)", exc_info=True)


def _guarded(hook: Callable[..., _R]) -> Callable[..., _R | None]:
    """``hook`` with its failures caught (``_telemetry_failed``): for the hooks off the per-statement path."""

    @functools.wraps(hook)
    def guarded(*args: Any) -> _R | None:
        try:
            return hook(*args)
        except Exception:
            _telemetry_failed()
            return None

    return guarded


def _timed(owner: type, method: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """The override of ``owner.<method>`` (``do_execute``, ``do_executemany`` or ``do_execute_no_params``): times
    the DBAPI call it makes. Same signature as SQLAlchemy's (it passes ``context`` positionally, last)."""
    acting = outermost(owner, method)  # an override's super() call is timed by the outer one

    def make(original: Callable[..., Any]) -> Callable[..., Any]:
        if method == "do_execute_no_params":

            def do_execute_no_params(self: Any, cursor: Any, statement: str, context: Any = None) -> Any:
                if _instrumented.state is None or context is None or not acting(type(self)):
                    return original(self, cursor, statement, context)
                return _run(_begin(statement, (), context, False), original, self, cursor, statement, context)

            return do_execute_no_params
        many = method == "do_executemany"

        def execute(self: Any, cursor: Any, statement: str, parameters: Any, context: Any = None) -> Any:
            if _instrumented.state is None or context is None or not acting(type(self)):
                return original(self, cursor, statement, parameters, context)
            state = _begin(statement, parameters, context, many)
            return _run(state, original, self, cursor, statement, parameters, context)

        execute.__name__ = execute.__qualname__ = method
        return execute

    return make


def _run(state: _State | None, original: Callable[..., Any], *args: Any) -> Any:
    if state is None:
        return original(*args)
    try:
        result = original(*args)
    except BaseException as exc:  # what SQLAlchemy's handle_error sees: cancellations included
        _failed(state, exc)
        raise
    _ended(state)
    return result


def _begin(statement: str, parameters: Any, context: Any, many: bool) -> _State | None:
    try:
        tel = _instrumented.state
        if tel is None or suppressed():
            return None
        if dialect_checks.initializing():  # the dialect's own first-connect checks, not the application's
            return None
        conn = context.root_connection
        engine = conn.engine
        info = engines.get(id(engine)) or engine_info(engine)
        # An executemany, or one batch of an "insertmanyvalues" INSERT (SQLAlchemy runs those through
        # do_execute); the cheap tests first (context.executemany compares enums).
        batch = isinstance(parameters, (list, tuple)) and len(parameters) > 1 and (many or context.executemany)
        described = _describe(statement, info, batch)
        span: trace.Span = trace.INVALID_SPAN
        if tel.tracer is not None:
            span = tel.tracer.start_span(described.span_name, kind=SpanKind.CLIENT, attributes=described.span_attrs)
            if span.is_recording():
                set_attribute = span.set_lean_attribute if type(span) is LeanSpan else span.set_attribute
                if batch:
                    set_attribute(BATCH_SIZE, len(parameters))
                wait = _take_wait(conn)
                if wait is not None:
                    set_attribute(WAIT_TIME, wait)
        return (span, described, perf_counter())
    except Exception:
        _telemetry_failed()
        return None


def _ended(state: _State) -> None:
    try:
        span, described, start = state
        elapsed = perf_counter() - start
        if span is trace.INVALID_SPAN:  # no span, so no exemplar: the value may reach the SDK at collection
            described.series.record(elapsed)
            return
        context = span.get_span_context()
        if context.trace_flags.sampled:  # queued with its span: an exemplar candidate (see _published)
            described.series.record_sampled(elapsed, context)
        else:
            described.series.record(elapsed)
        span.end()
    except Exception:
        _telemetry_failed()


@_guarded
def _failed(state: _State, exc: BaseException) -> None:
    span, described, start = state
    elapsed = perf_counter() - start
    kind = error_type(exc)
    tel = _instrumented.state
    code = sqlstate(exc)
    if tel is not None:
        failed = {**described.metric_attrs, ERROR_TYPE: kind}
        if code is not None:  # conditionally required on failure, where the database gives one (a SQLSTATE)
            failed[STATUS_CODE] = code
        tel.duration.record(elapsed, failed)
    if span.is_recording():
        span.set_attribute(ERROR_TYPE, kind)
        if code is not None:
            span.set_attribute(STATUS_CODE, code)
        span.set_status(Status(StatusCode.ERROR, kind))
    span.end()


def _cover_dialect(dialect_cls: type) -> None:
    """Override the execute methods ``dialect_cls`` calls that are not overridden yet (a dialect module imported
    after instrumentation may define its own: psycopg2's ``do_executemany``). Called with ``_cover_lock`` held."""
    for method in _METHODS:
        owner = definer(dialect_cls, method)
        if owner is not None and (owner, method) not in _covered:
            override(owner, method, _timed(owner, method))
            _covered.append((owner, method))
    for owner in dialect_cls.__mro__:  # every initialize of the chain: a subclass checks after super()'s
        if dialect_checks.METHOD in owner.__dict__ and (owner, dialect_checks.METHOD) not in _covered:
            override(owner, dialect_checks.METHOD, dialect_checks.quiet_initialize)
            _covered.append((owner, dialect_checks.METHOD))


def _wrap_engine_init(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> None:
    wrapped(*args, **kwargs)
    try:
        with _cover_lock:
            _cover_dialect(type(instance.dialect))
    except Exception:  # never break create_engine; the engine's statements go untimed
        _logger.debug("otel-reliability: could not cover an engine's dialect", exc_info=True)


@_guarded
def _note_failed_checkout(waited: float, exc: BaseException) -> None:
    span = trace.get_current_span()
    if span.is_recording():
        span.add_event(WAIT_EVENT, {WAIT_TIME: waited, ERROR_TYPE: error_type(exc)})


def _take_wait(conn: Any) -> float | None:
    try:
        proxy = conn.connection
    except Exception:  # an invalidated connection: nothing to report
        return None
    try:
        return _waits.pop(proxy, None)
    except TypeError:  # not weakly referenceable: its wait was never kept
        return None


def _wrap_raw_connection(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    tel = _instrumented.state
    if tel is None or tel.tracer is None or suppressed():  # no span would carry the wait
        return wrapped(*args, **kwargs)
    start = perf_counter()
    try:
        proxy = wrapped(*args, **kwargs)
    except Exception as exc:
        _note_failed_checkout(perf_counter() - start, exc)
        raise
    with contextlib.suppress(TypeError):
        _waits[proxy] = perf_counter() - start
    return proxy
