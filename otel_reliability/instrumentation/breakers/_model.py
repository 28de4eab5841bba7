"""What a breaker is, in this package's words: its states and outcomes, their attribute names, a ``Reading``.

The vocabulary the adapters, the tracked breaker and the instruments share; no state of its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any

from otel_reliability import semconv

CLOSED, OPEN, HALF_OPEN = semconv.CIRCUIT_BREAKER_STATES
STATES: tuple[str, ...] = semconv.CIRCUIT_BREAKER_STATES
SUCCESS, FAILURE, REJECTED = semconv.CIRCUIT_BREAKER_OUTCOMES
OUTCOMES: tuple[str, ...] = semconv.CIRCUIT_BREAKER_OUTCOMES

# Attribute names (otel_reliability/semconv.py; Prometheus shows them with "_" for ".").
ATTR_NAME = semconv.ATTR_CIRCUIT_BREAKER_NAME
ATTR_STATE = semconv.ATTR_CIRCUIT_BREAKER_STATE
ATTR_OUTCOME = semconv.ATTR_CIRCUIT_BREAKER_OUTCOME
ATTR_PREVIOUS_STATE = semconv.ATTR_CIRCUIT_BREAKER_PREVIOUS_STATE
EVENT_STATE_CHANGE = semconv.EVENT_CIRCUIT_BREAKER_STATE_CHANGE
EVENT_REJECTED = semconv.EVENT_CIRCUIT_BREAKER_REJECTED

# The state names the libraries use, mapped onto ours.
_STATE_ALIASES = {
    "closed": CLOSED,
    "close": CLOSED,
    "open": OPEN,
    "opened": OPEN,
    "half_open": HALF_OPEN,
    "half-open": HALF_OPEN,
    "half_opened": HALF_OPEN,
    "half-opened": HALF_OPEN,
    "halfopen": HALF_OPEN,
    "half open": HALF_OPEN,
}


def canonical_state(raw: Any) -> str | None:
    """``closed``/``open``/``half_open`` for any library's spelling (str, bytes or Enum); None if unknown."""
    if isinstance(raw, Enum):
        raw = raw.value if isinstance(raw.value, str) else raw.name
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8", "replace")
    if not isinstance(raw, str):
        return None
    return _STATE_ALIASES.get(raw.strip().lower())


@dataclass(frozen=True, slots=True)
class Reading:
    """A breaker's live state at one instant. ``state`` None means it could not be read ("unknown")."""

    state: str | None
    consecutive_failures: float | None = None
    failure_threshold: float | None = None
    reset_timeout: float | None = None


UNKNOWN = Reading(None)
