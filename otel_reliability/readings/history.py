"""The window history: cumulative values of monotonic series at past instants, for ``Readings.window``.

Its own module because it is its own idea: windows are count(now) - count(window start), taken from these
entries, so their memory is bounded by retention / interval x series, never by traffic.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

from otel_reliability import gil
from otel_reliability.readings.model import Snapshot, _SeriesKey, attrs_key

_Values = dict[_SeriesKey, tuple[Any, ...]]
"""(value, total) per series, and the bucket counts for the histograms of ``KEEP_BUCKETS``."""


COARSE_SPAN = 960.0
"""Seconds the coarse tier reaches back: the status page's 15-minute sparkline, and one bar's worth more."""
COARSE_STEP = 30.0
"""Seconds between two coarse entries: one sparkline bar."""


@dataclass
class _History:
    """Cumulative values of monotonic series at past instants, oldest first.

    Dense near now, sparse further back, coarse beyond the retention: every snapshot of the last ``dense``
    seconds is kept (so a short window, like the few seconds pool health looks at, starts within one snapshot
    interval), older ones only every ``sparse`` seconds up to ``retention`` (so the 5-minute error window costs
    ~``retention / sparse`` entries, not one per second), and beyond it one every ``coarse_step`` seconds up to
    ``coarse_span`` (the status page's 15-minute sparkline: 32 entries more). At most
    ``dense / interval + retention / sparse + coarse_span / coarse_step`` entries (30 + 72 + 32 with the
    defaults), each one value per monotonic series, whatever the traffic.
    """

    retention: float
    dense: float = 30.0
    sparse: float = 5.0
    coarse_span: float = COARSE_SPAN
    coarse_step: float = COARSE_STEP
    coarse: deque[tuple[float, _Values]] = field(default_factory=deque)
    older: deque[tuple[float, _Values]] = field(default_factory=deque)
    recent: deque[tuple[float, _Values]] = field(default_factory=deque)

    @property
    def entries(self) -> list[tuple[float, _Values]]:
        return [*self.coarse, *self.older, *self.recent]

    def add(self, at: float, values: _Values) -> None:
        self.recent.append((at, values))
        while self.recent and self.recent[0][0] < at - self.dense:
            entry = self.recent.popleft()
            if not self.older or entry[0] - self.older[-1][0] >= self.sparse:
                self.older.append(entry)
        # Keep the newest entry that is older than the retention horizon: it is the base of the widest window.
        while len(self.older) >= 2 and self.older[1][0] <= at - self.retention:
            entry = self.older.popleft()
            if not self.coarse or entry[0] - self.coarse[-1][0] >= self.coarse_step:
                self.coarse.append(entry)
        while len(self.coarse) >= 2 and self.coarse[1][0] <= at - self.coarse_span:
            self.coarse.popleft()

    def base(self, start: float) -> tuple[float, _Values] | None:
        """The newest entry taken at or before ``start``."""
        found = None
        for entry in (*self.coarse, *self.older, *self.recent):
            if entry[0] <= start:
                found = entry
            else:
                break
        return found


def _cumulative_values(snap: Snapshot) -> _Values:
    values: _Values = {}
    for name in snap.monotonic:
        for part in gil.in_slices(snap.metrics.get(name, ())):
            values.update(
                (
                    (name, attrs_key(p.attributes)),
                    (p.value, p.total) if p.buckets is None else (p.value, p.total, p.buckets),
                )
                for p in part
            )
    return values
