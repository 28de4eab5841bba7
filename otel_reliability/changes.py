"""Change signals: how an instrumentor tells the Readings that a collection made before now is out of date.

Health answers from a collection that may be reused for a moment (``OTEL_RELIABILITY_HEALTH_CACHE``), but a
cache may save cost, never hide a change. So every event that changes what health would say bumps a
generation here (a breaker transition, a breaker or pool created or gone, an instrumentor that became active,
a connection that failed), and a collection taken before the bump is never served again. Changes that happen
with the passing of time, not at an event (an operation that turns stuck when its threshold passes), announce
the moment in advance with ``expires_at``.

This module is the bottom floor: instrumentors import it, the Readings read it, it imports nothing of ours.
Both calls are a few hundred nanoseconds and take no lock on the common path.
"""

from __future__ import annotations

import itertools
import math
import threading
import time

_counter = itertools.count(1)  # next() is atomic in CPython: no lock for the common case
_generation = 0
_deadline = math.inf  # time.monotonic() at which the earliest announced change happens by itself
_deadline_lock = threading.Lock()


def mark_changed() -> None:
    """Something health shows has changed now: the next health call, CLI run and scrape collect anew."""
    global _generation
    _generation = next(_counter)


def expires_at(moment: float) -> None:
    """Something health shows will change by itself at ``moment`` (``time.monotonic()``), without an event."""
    global _deadline
    if moment < _deadline:
        with _deadline_lock:
            _deadline = min(_deadline, moment)


def generation() -> int:
    """The current generation; a collection remembers the one it started in."""
    return _generation


def due(now: float | None = None) -> bool:
    """True once an announced moment has come; the collection that follows clears it (``settle``)."""
    return (time.monotonic() if now is None else now) >= _deadline


def settle(now: float) -> None:
    """A collection that started at ``now`` has seen every change announced for up to ``now``; sources
    announce their next moments again while it runs."""
    global _deadline
    with _deadline_lock:
        if _deadline <= now:
            _deadline = math.inf
