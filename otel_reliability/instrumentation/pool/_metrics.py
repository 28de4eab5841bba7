"""The pool instrumentor's instruments: the synchronous ones its hooks record into (``_tracking.instrumented``)
and the observable ones that read the live pools when a reader collects (``_usage``)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from opentelemetry.metrics import CallbackOptions, Meter, Observation

from otel_reliability import semconv
from otel_reliability.instrumentation import statement_timeout
from otel_reliability.instrumentation._published import BufferedHistogram
from otel_reliability.instrumentation.pool import _armed, _tracking
from otel_reliability.instrumentation.pool._tracking import _Instruments
from otel_reliability.instrumentation.pool._usage import _by_name, _sum

POOL_NAME = semconv.ATTR_DB_CLIENT_CONNECTION_POOL_NAME
STATE = semconv.ATTR_DB_CLIENT_CONNECTION_STATE
# Seconds; connection checkouts are usually sub-millisecond, a timeout is 30 s by default.
_DURATION_BUCKETS = (0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


def create(meter: Meter, pool_timeout: type[BaseException]) -> None:
    """Create every pool instrument on ``meter`` and start recording into them (``pool_timeout``: SQLAlchemy's
    ``TimeoutError``, bound once instead of imported per checkout)."""
    hist = {"explicit_bucket_boundaries_advisory": list(_DURATION_BUCKETS)}
    instruments = _Instruments(
        timeouts=meter.create_counter(
            semconv.METRIC_DB_CLIENT_CONNECTION_TIMEOUTS,
            "{timeout}",
            "Checkouts that gave up waiting for a connection.",
        ),
        wait_time=BufferedHistogram(
            meter,
            meter.create_histogram(
                semconv.METRIC_DB_CLIENT_CONNECTION_WAIT_TIME,
                semconv.UNIT_SECONDS,
                "Time it took to obtain a connection from the pool.",
                **hist,
            ),
            _DURATION_BUCKETS,
        ),
        use_time=BufferedHistogram(
            meter,
            meter.create_histogram(
                semconv.METRIC_DB_CLIENT_CONNECTION_USE_TIME,
                semconv.UNIT_SECONDS,
                "Time between checkout and checkin of a connection.",
                **hist,
            ),
            _DURATION_BUCKETS,
        ),
        create_time=meter.create_histogram(
            semconv.METRIC_DB_CLIENT_CONNECTION_CREATE_TIME,
            semconv.UNIT_SECONDS,
            "Time it took to open a new connection.",
            **hist,
        ),
        invalidations=meter.create_counter(
            semconv.METRIC_DB_CLIENT_CONNECTION_INVALIDATIONS,
            "{connection}",
            "Connections invalidated (lost, failed pre-ping, explicitly invalidated).",
        ),
        errors=meter.create_counter(
            semconv.METRIC_DB_CLIENT_CONNECTION_ERRORS,
            "{error}",
            "Connections that could not be opened or were found lost, by error type.",
        ),
        pool_timeout=pool_timeout,
    )
    _tracking.instrumented.start(instruments, meter)

    def gated(observe: Callable[[CallbackOptions], Iterable[Observation]]) -> Any:
        return [_tracking.instrumented.gate(meter, lambda _instruments, options: observe(options))]

    meter.create_observable_up_down_counter(
        semconv.METRIC_DB_CLIENT_CONNECTION_COUNT,
        gated(_observe_count),
        "{connection}",
        "Connections in the pool, by state.",
    )
    meter.create_observable_up_down_counter(
        semconv.METRIC_DB_CLIENT_CONNECTION_MAX,
        gated(_observe_max),
        "{connection}",
        "Most connections the pool will open.",
    )
    meter.create_observable_up_down_counter(
        semconv.METRIC_DB_CLIENT_CONNECTION_IDLE_MAX,
        gated(_observe_idle_max),
        "{connection}",
        "Most idle connections kept.",
    )
    meter.create_observable_up_down_counter(
        semconv.METRIC_DB_CLIENT_CONNECTION_PENDING_REQUESTS,
        gated(_observe_pending),
        "{request}",
        "Callers waiting for a connection now.",
    )
    meter.create_observable_gauge(
        semconv.METRIC_DB_CLIENT_CONNECTION_WAIT_TIMEOUT,
        gated(_observe_timeout),
        semconv.UNIT_SECONDS,
        "How long a checkout waits before it fails.",
    )
    statement_timeout.create_gauge(meter, POOL_NAME, gated)


# --- observable callbacks ---------------------------------------------------------------------------------------
def _observe_count(options: CallbackOptions) -> Iterator[Observation]:
    _armed.ensure()  # our pool listeners removed by something other than Pool.dispatch._clear(): back from now on
    for name, rows in _by_name().items():
        yield Observation(sum(f.used for _, f, _n in rows), {POOL_NAME: name, STATE: "used"})
        yield Observation(sum(f.idle for _, f, _n in rows), {POOL_NAME: name, STATE: "idle"})


def _observe_max(options: CallbackOptions) -> Iterator[Observation]:
    for name, rows in _by_name().items():
        value = _sum(f.maximum for _, f, newest in rows if newest)
        if value is not None:
            yield Observation(value, {POOL_NAME: name})


def _observe_idle_max(options: CallbackOptions) -> Iterator[Observation]:
    for name, rows in _by_name().items():
        value = _sum(f.idle_max for _, f, newest in rows if newest)
        if value is not None:
            yield Observation(value, {POOL_NAME: name})


def _observe_pending(options: CallbackOptions) -> Iterator[Observation]:
    for name, rows in _by_name().items():
        yield Observation(sum(f.pending for _, f, _n in rows), {POOL_NAME: name})


def _observe_timeout(options: CallbackOptions) -> Iterator[Observation]:
    for name, rows in _by_name().items():
        timeouts = [f.timeout for _, f, newest in rows if newest and f.timeout is not None]
        if timeouts:
            yield Observation(max(timeouts), {POOL_NAME: name})
