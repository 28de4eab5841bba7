"""The breakers this process knows, held weakly, and what happened to each of them.

One ``TrackedBreaker`` per breaker: a weak reference to the breaker object (so the registry never keeps a
breaker alive: when the application drops it, it disappears from metrics and health), the adapter that
knows how to read its live state, and the counts of calls by outcome and of transitions by state entered.

The counts are plain integers under a small lock, exported by *observable* counters at collection time.
That makes a call through an instrumented breaker cost one lock round-trip instead of an SDK measurement,
and any reader added at any time (the Readings, a late exporter) sees the full counts.

This module is the registry; the vocabulary is in ``_model.py`` and the tracked breaker in ``_tracked.py``.
Their names are re-exported here, so every adapter imports the breaker vocabulary from one module.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

from otel_reliability import changes, gil
from otel_reliability.instrumentation.breakers._model import (
    ATTR_NAME,
    ATTR_OUTCOME,
    ATTR_PREVIOUS_STATE,
    ATTR_STATE,
    CLOSED,
    EVENT_REJECTED,
    EVENT_STATE_CHANGE,
    FAILURE,
    HALF_OPEN,
    OPEN,
    OUTCOMES,
    REJECTED,
    STATES,
    SUCCESS,
    UNKNOWN,
    Reading,
    canonical_state,
)
from otel_reliability.instrumentation.breakers._tracked import (
    Adapter,
    SelfNamed,
    TrackedBreaker,
    annotate_span,
    creation_site,
    spans_possible,
    tag_error,
    tagged,
)

__all__ = [
    "ATTR_NAME",
    "ATTR_OUTCOME",
    "ATTR_PREVIOUS_STATE",
    "ATTR_STATE",
    "BREAKERS",
    "CLOSED",
    "EVENT_REJECTED",
    "EVENT_STATE_CHANGE",
    "FAILURE",
    "HALF_OPEN",
    "OPEN",
    "OUTCOMES",
    "REJECTED",
    "STATES",
    "SUCCESS",
    "UNKNOWN",
    "Adapter",
    "BreakerRegistry",
    "Entry",
    "Reading",
    "SelfNamed",
    "TrackedBreaker",
    "annotate_span",
    "canonical_state",
    "creation_site",
    "spans_possible",
    "tag_error",
    "tagged",
]

_logger = logging.getLogger("otel_reliability.breakers")


@dataclass(frozen=True)
class Entry:
    """One breaker as a collection sees it: its (unique) name, its counts and its live reading."""

    name: str
    tracked: TrackedBreaker
    reading: Reading
    calls: tuple[int, int, int]
    transitions: dict[str, int]


class BreakerRegistry:
    """Every breaker this process knows, weakly held, in registration order."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._entries: dict[Hashable, TrackedBreaker] = {}
        self._seq = 0
        self._duplicates_logged: set[str] = set()
        self._cache: tuple[float, list[Entry]] | None = None
        # Called (without arguments) before each collection: libraries with their own registry sync here.
        self.before_collect: list[Callable[[], None]] = []

    def track(
        self,
        breaker: Any,
        adapter: Adapter,
        *,
        key: Hashable | None = None,
        name: str | None = None,
        fallback_name: str | None = None,
        counts_calls: bool = True,
        strong: bool = False,
        initial_state: str | None = CLOSED,
        ref_target: Any = None,
    ) -> TrackedBreaker:
        """Know ``breaker`` (idempotent per key). ``ref_target`` is what is held weakly (default: the breaker)."""
        target = breaker if ref_target is None else ref_target
        key = ("obj", id(target)) if key is None else key
        with self._lock:
            existing = self._entries.get(key)
            if existing is not None and existing.breaker is not None:
                if name:
                    existing.explicit_name = name
                return existing
            self._seq += 1
            ref = self._reference(target, key, strong)
            tracked = TrackedBreaker(
                key=key,
                ref=ref,
                adapter=adapter,
                seq=self._seq,
                explicit_name=name,
                fallback_name=fallback_name or f"{adapter.library}-{self._seq}",
                counts_calls=counts_calls,
                initial_state=initial_state,
            )
            self._entries[key] = tracked
            self._cache = None
        changes.mark_changed()
        return tracked

    def _reference(self, target: Any, key: Hashable, strong: bool) -> Callable[[], Any]:
        if strong:
            return lambda: target
        registry = weakref.ref(self)

        def gone(_: Any, key: Hashable = key) -> None:
            owner = registry()
            if owner is not None:
                owner._discard(key)

        try:
            if hasattr(target, "__self__") and hasattr(target, "__func__"):
                return weakref.WeakMethod(target, gone)
            return weakref.ref(target, gone)
        except TypeError:  # not weak-referenceable (e.g. a builtin): held for the life of the process
            return lambda: target

    def _discard(self, key: Hashable) -> None:
        with self._lock:
            tracked = self._entries.get(key)
            if tracked is not None and tracked.breaker is None:
                del self._entries[key]
                self._cache = None
        changes.mark_changed()

    def lookup(self, breaker: Any) -> TrackedBreaker | None:
        return self.get(("obj", id(breaker)))

    def get(self, key: Hashable) -> TrackedBreaker | None:
        tracked = self._entries.get(key)
        if tracked is None or tracked.breaker is None:
            return None
        return tracked

    def untrack(self, tracked: TrackedBreaker) -> None:
        with self._lock:
            if self._entries.get(tracked.key) is tracked:
                del self._entries[tracked.key]
                self._cache = None
        changes.mark_changed()

    def by_name(self, name: str) -> list[TrackedBreaker]:
        return [t for t in self.tracked() if t.explicit_name == name or t.name == name]

    def adopt(self, breaker: Any, adapter: Adapter, state: Any, name: str | None = None) -> TrackedBreaker:
        """Know a library's breaker, in the state the library shows (``state``, any spelling; closed if it cannot
        be read), named ``name``, else by the adapter, else after the code that created it."""
        return self.track(
            breaker,
            adapter,
            name=name,
            fallback_name=creation_site(2),
            initial_state=canonical_state(state) or CLOSED,
        )

    def tracked(self, library: str | None = None) -> list[TrackedBreaker]:
        with self._lock:
            items = list(self._entries.values())
        return [t for t in items if t.breaker is not None and (library is None or t.adapter.library == library)]

    def clear(self, library: str | None = None) -> None:
        with self._lock:
            for key, tracked in list(self._entries.items()):
                if library is None or tracked.adapter.library == library:
                    del self._entries[key]
            self._cache = None

    def collect(self, max_age: float = 0.0) -> list[Entry]:
        """Read every live breaker once. Instruments of one collection share the read (``max_age``)."""
        now = time.monotonic()
        cached = self._cache
        if max_age > 0 and cached is not None and now - cached[0] <= max_age:
            return cached[1]
        for sync in list(self.before_collect):
            try:
                sync()
            except Exception:
                _logger.debug("otel-reliability: breaker registry sync failed", exc_info=True)
        entries: list[Entry] = []
        used: dict[str, int] = {}
        for tracked in sorted(self.tracked(), key=lambda t: t.seq):
            gil.pause_point()
            reading = tracked.read()
            if reading is None:
                continue
            name = tracked.name
            count = used.get(name, 0) + 1
            used[name] = count
            if count > 1:
                if name not in self._duplicates_logged:
                    self._duplicates_logged.add(name)
                    _logger.warning(
                        "otel-reliability: several live circuit breakers are named %r; the later ones are shown "
                        "as %r, ... Give each breaker its own name.",
                        name,
                        f"{name}#2",
                    )
                name = f"{name}#{count}"
            calls, transitions = tracked.counts()
            entries.append(Entry(name, tracked, reading, calls, transitions))
        self._cache = (now, entries)
        return entries


BREAKERS = BreakerRegistry()
