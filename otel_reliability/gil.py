"""Background collections give way to requests.

One collection with 100 breakers and 10 pools is ~7 ms of pure Python (the SDK builds a data point per series).
CPython hands the interpreter lock to a waiting thread only after ``sys.getswitchinterval()`` (5 ms), so a
health request (or any request) that arrived while our background thread collected waited up to 5 ms before it
could even start: that wait, a few times a second, was the whole p99 of the health endpoints.

So code that runs once per data point calls ``pause_point()``; inside ``yielding_to_requests()`` (the Readings'
background thread) it releases the lock about every ``SLICE`` seconds with a short ``time.sleep``, and a waiting
request runs at once. Everywhere else (a health call that collects itself, the Prometheus endpoint, a test) it does
nothing but count: the caller *is* the request, and giving way would only make it slower.

The bottom floor, like ``changes``: it imports nothing of ours. The common path is an integer increment.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TypeVar

_T = TypeVar("_T")

SLICE = 0.0005  # seconds of work between two chances for a waiting thread to run
_CHECK_EVERY = 32  # data points between two looks at the clock (a look costs more than a point's counting)
# A sleep that really sleeps (the kernel's timer slack, ~50 µs), so that a waiting thread has woken and taken the lock
# before this one asks for it again. ``sleep(0)`` does so from Python 3.11 on; on 3.10 it returns in ~1 µs, and the
# waiting thread lost the race at 16 pause points of 20 (measured).
_GIVE_WAY = 1e-6

_local = threading.local()
_count = 0


@contextmanager
def yielding_to_requests() -> Iterator[None]:
    """Run the block in this thread giving way to waiting threads every ``SLICE`` seconds."""
    _local.next_at = time.perf_counter() + SLICE
    try:
        yield
    finally:
        _local.next_at = None


def pause_point(work: int = 1) -> None:
    """A point where the current thread may let a waiting one run (only inside ``yielding_to_requests()``), after
    ``work`` data points' worth of work since the previous point."""
    global _count
    _count += work  # not atomic across threads: it only spaces the checks, a lost increment is harmless
    if _count < _CHECK_EVERY:
        return
    _count = 0
    next_at = getattr(_local, "next_at", None)
    if next_at is not None and time.perf_counter() >= next_at:
        time.sleep(_GIVE_WAY)  # releases the interpreter lock: a thread waiting for it takes it now
        _local.next_at = time.perf_counter() + SLICE


def in_slices(items: Sequence[_T]) -> Iterator[Sequence[_T]]:
    """``items`` in slices of a few dozen, with a pause point after each (for a loop over many data points)."""
    for start in range(0, len(items), _CHECK_EVERY):
        yield items[start : start + _CHECK_EVERY]
        pause_point(_CHECK_EVERY)
