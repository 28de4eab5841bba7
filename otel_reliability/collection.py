"""Collection hooks: work that must run at the start of every collection, before any instrument is read.

Some of our values live in our own objects and reach the SDK only when a reader collects: breaker states and
counts are published into synchronous instruments, queued histogram values are handed over
(``otel_reliability.instrumentation._published`` says why both are cheaper that way). Each such publisher is a
hook registered here with ``before_collect(meter, name, hook)``; a hook runs once per collection, under its own
lock (two readers collecting at once must not publish the same difference twice).

Who calls the hooks:

- our reader, ``Readings`` (health, the CLI and the :9464 endpoint, which renders the Readings' collections),
  runs them right before each of its collections (``hooks_first()``);
- every other reader of the provider (the periodic OTLP reader that upstream's configuration builds, a reader
  the application added) reaches them through one observable instrument per meter, ``BRIDGE``, that reports
  no data point: its callback runs that meter's hooks. Why an instrument: the SDK has no public "before
  collect" callback, and the only public code that runs inside every reader's collection, before the
  synchronous instruments are read, is an observable instrument's callback (``MetricReader.collect`` is
  final, and the periodic OTLP reader is built by upstream's private configuration functions, so neither a
  subclass nor a wrapper of the reader can call them). Inside ``hooks_first()`` the bridge does nothing,
  so each hook runs once per collection either way.

The first hook registered under a (meter, name) is the one that runs: instrumenting again on the same meter
gets the SDK's existing instruments back, whose values the first hook already publishes (a second one would
add them twice). A hook lives as long as its meter, as an instrument's callback would: the registry holds
meters and hooks weakly; the bridge instrument, kept by the SDK with the meter, holds them.

The bottom floor: it imports nothing of ours.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

from opentelemetry.metrics import CallbackOptions, Meter, Observation

_logger = logging.getLogger(__name__)

BRIDGE = "otel_reliability.collection.before_collect"
"""The name of the observable instrument, one per meter with hooks, that runs them for other readers."""

Hook = Callable[[], None]
_H = TypeVar("_H", bound=Callable[[], None])


class MeterHooks:
    """The hooks of one meter, by name, in the order registered."""

    __slots__ = ("__weakref__", "hooks", "lock")

    def __init__(self) -> None:
        self.hooks: dict[str, Hook] = {}
        self.lock = threading.Lock()

    def run(self) -> None:
        with self.lock:
            for name, hook in list(self.hooks.items()):
                try:
                    hook()
                except Exception:  # a failing source must not break the collection of everything else
                    _logger.debug("otel-reliability: collection hook %s failed", name, exc_info=True)


_by_meter: weakref.WeakKeyDictionary[Any, weakref.ReferenceType[MeterHooks]] = weakref.WeakKeyDictionary()
_all: weakref.WeakSet[MeterHooks] = weakref.WeakSet()
_registry_lock = threading.Lock()
_local = threading.local()


def before_collect(meter: Meter, name: str, hook: _H) -> _H:
    """Run ``hook()`` at the start of every collection of every reader of ``meter``'s provider; returns the hook
    that runs under ``name`` on this meter (``hook``, or the one registered first)."""
    with _registry_lock:
        found = _by_meter.get(meter)
        hooks = found() if found is not None else None
        if hooks is None:
            hooks = MeterHooks()
            _by_meter[meter] = weakref.ref(hooks)
            _all.add(hooks)
            meter.create_observable_gauge(
                BRIDGE, [_bridge(hooks)], description="(internal: runs collection hooks; no data points)"
            )
        return hooks.hooks.setdefault(name, hook)  # type: ignore[return-value]


def _bridge(hooks: MeterHooks) -> Callable[[CallbackOptions], Iterable[Observation]]:
    def callback(options: CallbackOptions) -> Iterable[Observation]:
        if not getattr(_local, "running", False):  # hooks_first() ran them for this collection already
            hooks.run()
        return ()

    return callback


@contextlib.contextmanager
def hooks_first() -> Iterator[None]:
    """Run every hook now, then the block (our reader's ``collect()``) with the bridge instruments quiet, so each
    hook runs once per collection."""
    for hooks in list(_all):
        hooks.run()
    outer = getattr(_local, "running", False)
    _local.running = True
    try:
        yield
    finally:
        _local.running = outer


def _after_fork() -> None:
    for hooks in list(_all):
        hooks.lock = threading.Lock()  # another thread may have held it while forking


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)
