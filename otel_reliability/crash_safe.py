"""Crash-safe request counts: one histogram kept in a memory-mapped file, updated in place per measurement.

Why: a prefork worker publishes its readings every 0.5 s (otel_reliability/host/); a worker killed with SIGKILL
or by the OOM killer would take every request it completed since its last publication with it. The HTTP
layer therefore also adds each completed request to this table: two float additions into a shared file
mapping, no system call, no lock. The kernel keeps a shared mapping's pages when the process dies, so the
master reads a dead worker's table and nothing it counted is lost.

Nothing here is active in a single process: ``histogram()`` returns None until ``open_in(directory, stem)``
named where this process's tables live (the prefork worker set-up does that), and the HTTP layer then pays
one ``is None`` test per request.

File layout (native byte order; one writer, any number of readers)::

    header   HEADER bytes   b"OTRTALY1", u32 capacity, u32 used, u32 n, n bytes of JSON
                            {"name", "scope", "unit", "description", "bounds"}
    slots    capacity x SLOT_TEXT bytes: u16 n + n bytes of JSON, the attributes of slot i
    values   capacity x (1 + len(bounds) + 1) float64: [sum, bucket 0, ..., bucket len(bounds)]

A slot's count is the sum of its buckets, so a measurement is exactly two writes (its bucket, then the sum) and
a table read at any moment, even after a kill between the two, has counts that equal their buckets. ``used``
is raised only after slot i's attributes are written: a reader never sees a slot without its attributes.

One writer thread per table is assumed (the ASGI event loop, where the HTTP layer records); ``+=`` on a
memoryview is not atomic across threads, so two threads recording the same series at once could lose one
(the SDK's own record stays exact either way).
"""

from __future__ import annotations

import bisect
import json
import mmap
import os
import struct
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

MAGIC = b"OTRTALY1"
HEADER = 4096
SLOT_TEXT = 512
CAPACITY = 1024
SUFFIX = ".tally"
_FIXED = struct.Struct("=8sIII")  # magic, capacity, used, header JSON length
_USED_AT = 12
_TEXT_LEN = struct.Struct("=H")


class Table:
    """One histogram's slots in a shared file mapping (the writing side)."""

    def __init__(
        self, path: Path, *, name: str, bounds: Sequence[float], meta: Mapping[str, Any], capacity: int = CAPACITY
    ) -> None:
        self.path = path
        self.bounds = tuple(bounds)
        self.width = len(self.bounds) + 2  # sum + buckets
        self.capacity = capacity
        header = json.dumps({**meta, "name": name, "bounds": list(self.bounds)}, separators=(",", ":")).encode()
        if _FIXED.size + len(header) > HEADER:
            raise ValueError(f"tally header of {name} longer than {HEADER} bytes")
        size = HEADER + capacity * SLOT_TEXT + capacity * self.width * 8
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.ftruncate(fd, size)  # sparse: pages are allocated as slots are used
            self._map = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        finally:
            os.close(fd)
        self._map[_FIXED.size : _FIXED.size + len(header)] = header
        _FIXED.pack_into(self._map, 0, MAGIC, capacity, 0, len(header))
        self._values = memoryview(self._map)[HEADER + capacity * SLOT_TEXT :].cast("d")
        self._slots: dict[frozenset[tuple[str, Any]], int | None] = {}
        self.used = 0

    def slot(self, attributes: Mapping[str, Any]) -> int | None:
        """The slot of one series (allocated on first use), or None when the table is full or the attributes
        do not fit: that series is then only in the published readings (lost on a kill, as before)."""
        key = frozenset(attributes.items())
        if key in self._slots:
            return self._slots[key]
        text = json.dumps(dict(attributes), separators=(",", ":")).encode()
        found: int | None = None
        if self.used < self.capacity and _TEXT_LEN.size + len(text) <= SLOT_TEXT:
            at = HEADER + self.used * SLOT_TEXT
            _TEXT_LEN.pack_into(self._map, at, len(text))
            self._map[at + _TEXT_LEN.size : at + _TEXT_LEN.size + len(text)] = text
            found = self.used * self.width
            self.used += 1
            struct.pack_into("=I", self._map, _USED_AT, self.used)  # after the attributes: readers see whole slots
        self._slots[key] = found
        return found

    def add(self, slot: int, value: float) -> None:
        """One measurement: its bucket (the count), then the sum."""
        values = self._values
        values[slot + 1 + bisect.bisect_left(self.bounds, value)] += 1.0
        values[slot] += value

    def _detach(self) -> None:
        """In a forked child: keep writing, but to private memory (the child is not the process that owns the
        file, and its middleware may still hold slots)."""
        self._values = memoryview(bytearray(len(self._values) * 8)).cast("d")


_directory: Path | None = None
_stem = ""
_tables: dict[str, Table | None] = {}


def open_in(directory: str | os.PathLike[str] | None, stem: str = "") -> None:
    """This process's tables live in ``directory``, named ``<stem>.<metric name>.tally`` (None: no new
    tables from now on; those handed out keep counting)."""
    global _directory, _stem
    _directory, _stem = (Path(directory) if directory is not None else None), stem
    _tables.clear()


def histogram(name: str, bounds: Sequence[float], meta: Mapping[str, Any]) -> Table | None:
    """This process's table for the histogram ``name`` (created on first use), or None: not a prefork worker,
    or the table could not be created (then the series are only in the published readings)."""
    if _directory is None:
        return None
    if name not in _tables:
        try:
            _tables[name] = Table(_directory / f"{_stem}.{name}{SUFFIX}", name=name, bounds=bounds, meta=meta)
        except (OSError, ValueError):
            _tables[name] = None
    return _tables[name]


def _forked() -> None:
    global _directory
    _directory = None
    for table in _tables.values():
        if table is not None:
            table._detach()
    _tables.clear()


os.register_at_fork(after_in_child=_forked)


# --- the reading side ------------------------------------------------------------------------------------------


def files_of(directory: str | os.PathLike[str], stem: str) -> list[Path]:
    return sorted(Path(directory).glob(f"{stem}.*{SUFFIX}"))


def read(path: str | os.PathLike[str]) -> tuple[dict[str, Any], list[tuple[dict[str, Any], float, list[float]]]]:
    """A table's header and its series: (attributes, sum, bucket counts); the count is the buckets' sum.
    Sequence attributes come back as tuples, as the SDK keeps them.

    Raises FileNotFoundError when the file is gone, ValueError when it is not a table.
    """
    raw = Path(path).read_bytes()
    if len(raw) < HEADER:
        raise ValueError(f"{path}: not a tally file")
    magic, capacity, used, length = _FIXED.unpack_from(raw, 0)
    if magic != MAGIC or used > capacity:
        raise ValueError(f"{path}: not a tally file")
    header = json.loads(raw[_FIXED.size : _FIXED.size + length])
    width = len(header["bounds"]) + 2
    values = memoryview(raw)[HEADER + capacity * SLOT_TEXT :].cast("d")
    series = []
    for i in range(used):
        at = HEADER + i * SLOT_TEXT
        (n,) = _TEXT_LEN.unpack_from(raw, at)
        text = json.loads(raw[at + _TEXT_LEN.size : at + _TEXT_LEN.size + n])
        attributes = {k: tuple(v) if isinstance(v, list) else v for k, v in text.items()}  # as the SDK's
        row = [float(v) for v in values[i * width : (i + 1) * width]]
        series.append((attributes, row[0], row[1:]))
    return header, series
