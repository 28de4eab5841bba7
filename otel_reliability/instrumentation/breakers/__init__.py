"""Circuit breakers as OpenTelemetry metrics and span events (``reliability_breakers``).

Usage: nothing under ``opentelemetry-instrument`` for pybreaker, circuitbreaker and purgatory breakers
(entry point ``reliability_breakers``; switch it off with
``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=reliability_breakers``). For a breaker no library adapter knows::

    import otel_reliability
    otel_reliability.register_breaker("gcs", gcs_breaker)          # an object with get_state() / .state
    otel_reliability.register_breaker("billing", lambda: billing.status)   # or a callable

(the protocol is in ``otel_reliability.instrumentation.breakers.custom``). By hand::

    from otel_reliability.instrumentation.breakers import BreakersInstrumentor
    BreakersInstrumentor().instrument(meter_provider=provider)   # provider optional: the global one

Instruments (meter ``otel_reliability.breakers``; every one observable, read at collection time, so a reader
added at any moment sees the whole story; Prometheus names as the direct exporter shows them):

=================================== ============ ========================================================
OTel name                           unit         attributes
=================================== ============ ========================================================
circuit_breaker.state               {state}      circuit_breaker.name, circuit_breaker.state (closed,
                                                 open, half_open): 1 for the current state, 0 others
circuit_breaker.calls               {call}       circuit_breaker.name, circuit_breaker.outcome (success,
                                                 failure, rejected)
circuit_breaker.transitions         {transition} circuit_breaker.name, circuit_breaker.state (entered)
circuit_breaker.consecutive_failures {failure}   circuit_breaker.name
circuit_breaker.failure_threshold   {failure}    circuit_breaker.name
circuit_breaker.reset_timeout       s            circuit_breaker.name
=================================== ============ ========================================================

On ``/metrics``: ``circuit_breaker_state``, ``circuit_breaker_calls_total``,
``circuit_breaker_transitions_total``, ``circuit_breaker_consecutive_failures``,
``circuit_breaker_failure_threshold``, ``circuit_breaker_reset_timeout_seconds``.

Why these choices:

- One state series per state (1/0), as resilience4j does: a dashboard sums or filters without knowing the
  state names of each library, and paired with the transitions counter a short OPEN period between two
  scrapes is not lost. A breaker whose state cannot be read shows 0 for all three (health: "unknown").
- Calls and transitions are counted in plain integers on the breaker's registry entry and exported by
  observable counters: a call pays one lock round-trip, not an SDK measurement.
- The configuration (failure threshold, reset timeout) is exported as gauges so that the health view, which
  reads only metrics, can show ``fail_max`` and ``reset_timeout``, and a dashboard can draw
  ``consecutive_failures / failure_threshold``.
- Breakers are held weakly: a breaker the application drops disappears from metrics and health.
- Spans: a call adds ``circuit_breaker.name`` and ``circuit_breaker.state`` to the current span; a refused
  call adds the event ``circuit_breaker.rejected``, ``error.type`` and an error status; a transition adds
  the event ``circuit_breaker.state_change`` (``circuit_breaker.previous_state`` -> ``circuit_breaker.state``)
  to the span current when it happened.
- HTTP: an unhandled breaker-open error in a FastAPI app becomes 503 + ``Retry-After`` (see ``.http``;
  ``OTEL_RELIABILITY_BREAKER_HTTP_MAPPING=false`` switches it off).
- A breaker without a name (pybreaker's ``name=None``) is named after the line that created it
  (``module:line``), which is the same in every process and after every restart. Two live breakers with one
  name are shown as ``name``, ``name#2``, ... (and one warning is logged).
"""

from __future__ import annotations

import functools
import importlib
import logging
import sys
import threading
from collections.abc import Collection
from typing import Any

from opentelemetry import metrics
from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]

from otel_reliability import changes, config, semconv
from otel_reliability.instrumentation import on_import
from otel_reliability.instrumentation._instrumented import Instrumented
from otel_reliability.instrumentation.breakers import _metrics
from otel_reliability.instrumentation.breakers._registry import (
    BREAKERS,
    OUTCOMES,
    STATES,
    TrackedBreaker,
    canonical_state,
)
from otel_reliability.instrumentation.breakers.custom import CALLABLE, CUSTOM
from otel_reliability.version import __version__

__all__ = ["BreakerHandle", "BreakersInstrumentor", "register_breaker", "unregister_breaker"]

_logger = logging.getLogger("otel_reliability.breakers")

# (module, the library it instruments), in the order they are tried.
_LIBRARIES: tuple[tuple[str, str], ...] = (
    ("otel_reliability.instrumentation.breakers.pybreaker", "pybreaker"),
    ("otel_reliability.instrumentation.breakers.circuitbreaker", "circuitbreaker"),
    ("otel_reliability.instrumentation.breakers.purgatory", "purgatory"),
)


class BreakerHandle:
    """What ``register_breaker`` returns: the registered breaker's name, and ways for a hand-written breaker
    to report what only it knows (its calls, its transitions as they happen)."""

    def __init__(self, tracked: TrackedBreaker) -> None:
        self._tracked = tracked

    @property
    def name(self) -> str:
        return self._tracked.name

    def record_call(self, outcome: str) -> None:
        """Count one call: ``success``, ``failure`` or ``rejected``."""
        if outcome not in OUTCOMES:
            raise ValueError(f"outcome must be one of {', '.join(OUTCOMES)}, not {outcome!r}")
        self._tracked.counts_calls = True
        if outcome == "rejected":
            self._tracked.record_rejected(None)
        else:
            self._tracked.record_call(outcome)

    def record_transition(self, state: str) -> None:
        """The breaker entered ``state`` (any spelling of closed / open / half_open)."""
        canonical = canonical_state(state)
        if canonical is None:
            raise ValueError(f"state must be one of {', '.join(STATES)}, not {state!r}")
        self._tracked.record_transition(canonical)

    def unregister(self) -> None:
        BREAKERS.untrack(self._tracked)


_adopt_lock = threading.Lock()


def register_breaker(name: str, breaker: Any) -> BreakerHandle:
    """Make ``breaker`` visible in metrics and health under ``name``.

    ``breaker`` is a pybreaker / circuitbreaker breaker (known automatically when created after
    instrumentation; this names it, or adopts one created before), any object with ``get_state()`` or a
    ``state`` attribute, or a callable returning the state (see ``.custom`` for the protocol). Objects are
    held weakly. Registering the same object again renames it.
    """
    if not isinstance(name, str) or not name.strip():
        raise ValueError("register_breaker needs a non-empty name")
    name = name.strip()
    with _adopt_lock:
        # A library breaker (or a subclass of one): looked up by module, so no library is imported for it.
        roots = {cls.__module__.split(".")[0] for cls in type(breaker).__mro__}
        for module_name, library in _LIBRARIES:
            if library != "purgatory" and library in roots:
                breaker_cls = importlib.import_module(library).CircuitBreaker
                if isinstance(breaker, breaker_cls):
                    adapter_module = importlib.import_module(module_name)
                    return BreakerHandle(adapter_module.adopt(breaker, BREAKERS, name=name))
        existing = BREAKERS.lookup(breaker)
        if existing is not None:
            existing.explicit_name = name
            return BreakerHandle(existing)
        is_object = hasattr(breaker, "get_state") or hasattr(breaker, "state") or hasattr(breaker, "current_state")
        if not is_object and not callable(breaker):
            raise TypeError(
                "register_breaker needs an object with get_state() or a state attribute, or a callable "
                f"returning the state; got {type(breaker).__name__}"
            )
        adapter = CUSTOM if is_object else CALLABLE
        # A plain function or lambda may be the only reference to itself: held strongly. A bound method is
        # held through its object, anything else weakly.
        strong = not is_object and not hasattr(breaker, "__self__")
        tracked = BREAKERS.track(breaker, adapter, name=name, strong=strong, counts_calls=False, initial_state=None)
        return BreakerHandle(tracked)


def unregister_breaker(name: str) -> int:
    """Forget every breaker registered under ``name``; returns how many there were."""
    found = BREAKERS.by_name(name)
    for tracked in found:
        BREAKERS.untrack(tracked)
    return len(found)


_instrumented: Instrumented[list[str]] = Instrumented()
"""While instrumented: the adapter modules that instrumented their library."""


_instruments: tuple[str, ...] = ()
"""Empty on purpose: this instrumentor covers pybreaker, circuitbreaker and purgatory, each only if installed,
plus hand-registered breakers that need no library. A requirement on any one of them would make
``instrument()`` skip the others (the contrib check demands every listed library); each library's adapter
checks for its own module instead."""


class BreakersInstrumentor(BaseInstrumentor):  # type: ignore[misc]
    """Entry point ``reliability_breakers``: pybreaker, circuitbreaker and purgatory, when installed."""

    def instrumentation_dependencies(self) -> Collection[str]:
        return _instruments

    def _instrument(self, **kwargs: Any) -> None:
        meter = metrics.get_meter(
            "otel_reliability.breakers", __version__, kwargs.get("meter_provider"), semconv.SCHEMA_URL
        )
        libraries = _instrumented.start([], meter)
        # Creating the instruments again on the same meter returns the existing ones (with their callbacks), so
        # the callbacks ask whether we are instrumented now, on their meter, rather than capturing an instrumentation.
        _metrics.create_instruments(meter, BREAKERS, functools.partial(_instrumented.active_on, meter))

        def adapt(module_name: str) -> Any:
            def hook(_library: Any) -> None:
                if _instrumented.state is libraries:  # not uninstrumented (or instrumented again) meanwhile
                    importlib.import_module(module_name).instrument(BREAKERS)
                    libraries.append(module_name)
                    changes.mark_changed()

            return hook

        # Each library is patched when the program imports it, not before (no breaker exists before that).
        self._pending = [on_import.when_imported(library, adapt(module)) for module, library in _LIBRARIES]
        settings = kwargs.get("settings") or config.settings()

        def mapping(_fastapi: Any) -> None:
            from otel_reliability.instrumentation.breakers import http

            http.install(settings)

        self._pending.append(on_import.when_imported("fastapi", mapping))
        changes.mark_changed()

    def _uninstrument(self, **kwargs: Any) -> None:
        on_import.cancel(*getattr(self, "_pending", ()))
        # The instruments created so far report nothing from now on.
        for module_name in _instrumented.stop() or []:
            importlib.import_module(module_name).uninstrument(BREAKERS)
        if "fastapi" in sys.modules:
            from otel_reliability.instrumentation.breakers import http

            http.uninstall()
        changes.mark_changed()
