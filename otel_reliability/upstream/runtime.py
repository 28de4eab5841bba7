"""What is asked on a hot path: whether instrumentation is suppressed, and the value of a lock-free counter (see
``otel_reliability.upstream``). Both choose their implementation once, at import."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from typing import Any

from opentelemetry.context import attach, detach, get_current
from opentelemetry.instrumentation.utils import is_instrumentation_enabled, suppress_instrumentation

from otel_reliability.upstream._registry import GUARDED, guard

try:
    from opentelemetry.instrumentation.utils import (  # type: ignore[attr-defined]
        _SUPPRESS_INSTRUMENTATION_KEY as _KEY,
    )
    from opentelemetry.instrumentation.utils import (  # type: ignore[attr-defined]
        _SUPPRESS_INSTRUMENTATION_KEY_PLAIN as _KEY_PLAIN,
    )
except ImportError:
    _KEY = _KEY_PLAIN = None  # type: ignore[assignment]


def _suppressed_by_keys() -> bool:
    current = get_current()
    return bool(current.get(_KEY) or current.get(_KEY_PLAIN))  # type: ignore[arg-type]


def _suppressed_public() -> bool:
    return not is_instrumentation_enabled()


@guard(
    "instrumentation.suppress_keys",
    "opentelemetry.instrumentation.utils",
    ("_SUPPRESS_INSTRUMENTATION_KEY", "_SUPPRESS_INSTRUMENTATION_KEY_PLAIN"),
    "the two context keys is_instrumentation_enabled() reads",
    "is_instrumentation_enabled() (two context lookups instead of one)",
)
def _check_suppress() -> bool:
    if _KEY is None or _KEY_PLAIN is None:
        raise AttributeError("the keys are not importable")
    if _suppressed_by_keys() != _suppressed_public():
        return False
    with suppress_instrumentation():
        inside = (_suppressed_by_keys(), _suppressed_public())
    token = attach(get_current())
    detach(token)
    return inside == (True, True) and not _suppressed_by_keys()


suppressed: Callable[[], bool] = (
    _suppressed_by_keys if GUARDED["instrumentation.suppress_keys"].usable() else _suppressed_public
)
"""``not is_instrumentation_enabled()``, at half its cost where the keys are as expected."""


# --- lock-free counters: the value of an itertools.count ----------------------------------------------------------
class LockedCount:
    """The public path for a counter: an int under a lock (where ``repr(itertools.count)`` is not ``count(N)``)."""

    __slots__ = ("_lock", "value")

    def __init__(self) -> None:
        self.value = 0
        self._lock = threading.Lock()

    def __next__(self) -> int:
        with self._lock:
            value = self.value
            self.value = value + 1
        return value


def _repr_value(counter: Any) -> int:
    return int(repr(counter)[6:-1])


def _locked_value(counter: Any) -> int:
    return int(counter.value)


@guard(
    "cpython.count_repr",
    "itertools",
    ("repr(itertools.count)",),
    "'count(N)', N being how many times next() was called on a count()",
    "an int under a lock per counter",
)
def _check_count() -> bool:
    counter = itertools.count()
    for _ in range(3):
        next(counter)
    big = itertools.count(2**40)
    return _repr_value(counter) == 3 and _repr_value(big) == 2**40


_COUNT_REPR = GUARDED["cpython.count_repr"].usable()
counter: Callable[[], Any] = itertools.count if _COUNT_REPR else LockedCount
"""A new counter: ``next(c)`` counts one (lock-free where CPython allows), ``count_value(c)`` reads it."""
count_value: Callable[[Any], int] = _repr_value if _COUNT_REPR else _locked_value
