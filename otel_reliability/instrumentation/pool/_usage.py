"""One pool's usage now (``PoolUsage``: connections used, idle, waited for, and the bounds), read from the pool
object by its class, and grouped by pool name.

See the package docstring for what each pool class (QueuePool, StaticPool, SingletonThreadPool, NullPool)
reports and why.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from otel_reliability.instrumentation.pool._tracking import POOL_NAME, _is_newest, _state, tracked_pools
from otel_reliability.upstream import pools as upstream

_logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PoolUsage:
    """One pool's state now. ``maximum`` None: the pool puts no bound on connections (callers never wait)."""

    used: int
    idle: int
    pending: int
    maximum: int | None
    idle_max: int | None
    timeout: float | None


def usage(pool: Any) -> PoolUsage:
    """Read ``pool`` now; see the module docstring for what each pool class reports."""
    state = _state(pool)
    pending = max(0, state.pending) if state is not None else 0
    in_progress = len(state.checked_out_at) if state is not None else 0
    if callable(getattr(pool, "checkedout", None)) and callable(getattr(pool, "overflow", None)):  # QueuePool & co
        size = int(pool.size())
        max_overflow = upstream.max_overflow(pool)  # None: it cannot be read, no maximum is published
        bounded = max_overflow is not None and max_overflow > -1 and size > 0
        return PoolUsage(
            used=max(0, int(pool.checkedout())),
            idle=max(0, int(pool.checkedin())),
            pending=pending,
            maximum=size + max_overflow if bounded and max_overflow is not None else None,
            idle_max=size if size > 0 else None,
            timeout=float(pool.timeout()),
        )
    if any(cls.__name__ == "StaticPool" for cls in type(pool).__mro__):
        opened = 1 if "connection" in pool.__dict__ else 0
        used = 1 if in_progress else 0
        return PoolUsage(used=used, idle=max(0, opened - used), pending=pending, maximum=None, idle_max=1, timeout=None)
    if any(cls.__name__ == "SingletonThreadPool" for cls in type(pool).__mro__):
        opened = upstream.open_connections(pool)
        return PoolUsage(
            used=in_progress,
            idle=max(0, opened - in_progress),
            pending=pending,
            maximum=None,
            idle_max=int(getattr(pool, "size", 0)),
            timeout=None,
        )
    return PoolUsage(used=in_progress, idle=0, pending=pending, maximum=None, idle_max=0, timeout=None)


def _by_name() -> dict[str, list[tuple[Any, PoolUsage, bool]]]:
    out: dict[str, list[tuple[Any, PoolUsage, bool]]] = {}
    for pool in tracked_pools():
        state = _state(pool)
        if state is None:
            continue
        try:
            fig = usage(pool)
        except Exception:  # a pool half torn down; it will be gone at the next collection
            _logger.debug("otel-reliability: could not read pool", exc_info=True)
            continue
        out.setdefault(state.attrs()[POOL_NAME], []).append((pool, fig, _is_newest(pool)))
    return out


def _sum(values: Iterable[int | float | None]) -> float | None:
    total = 0.0
    for v in values:
        if v is None:
            return None
        total += v
    return total
