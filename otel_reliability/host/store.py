"""The private per-server directory where prefork workers publish their readings, and how it is read.

Layout (created by the master or supervisor, mode 0700, removed when that process exits)::

    host.marshal              {"master": pid, "started": t}          written once by the master
    w-<pid>-<token>.marshal   one worker's cumulative readings         rewritten (every PUBLISH_INTERVAL)
    w-<pid>-<token>.<metric>.tally   the worker's request histogram, updated in place per request (crash_safe.py):
                              what a dead worker's file is completed with (``Directory.final``)
    retired.marshal           the summed monotonic series of workers that are gone (folded by the master)
    combined.marshal          every worker combined for health by the master (every COMBINE_INTERVAL):
                              what a worker answers from (one file, whatever the number of workers)
    history-<t_ms>.marshal    the host's merged cumulative values at t (the base of every window)

Every file but the crash-safe tables is ``marshal`` of plain values (dicts, lists, tuples, frozensets, numbers,
strings), written to a temporary name and renamed, so a reader sees a whole old file or a whole new one, never
half of one. Why marshal: the master and its workers run the same interpreter, the directory is private, and it
keeps tuples and frozensets (series keys load ready to use), several times faster than JSON both ways. The crash-safe
tables have their own layout (crash_safe.py): they are updated in place, by memory, without a write call.

``t`` is ``time.monotonic()``: on Linux one clock for every process of the host, so a worker compares its
"now" with the master's history without converting.

Why the token in a worker's file name: a recycled worker may get a pid a dead one had; its counts start at 0
and must not overwrite the dead worker's last file, whose counts still belong to the host.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import marshal
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from otel_reliability import crash_safe
from otel_reliability.readings.model import attrs_key

_logger = logging.getLogger(__name__)

SUFFIX = ".marshal"
HOST_FILE = f"host{SUFFIX}"
RETIRED_FILE = f"retired{SUFFIX}"
COMBINED_FILE = f"combined{SUFFIX}"
WORKER_PREFIX = "w-"
HISTORY_PREFIX = "history-"


def stem(worker_file: str) -> str:
    """``w-<pid>-<token>`` of a worker's file name: what its crash-safe tables are named after."""
    return worker_file.removesuffix(SUFFIX)


def worker_file(pid: int, token: str) -> str:
    return f"{WORKER_PREFIX}{pid}-{token}{SUFFIX}"


def load(path: Path) -> Any:
    """One file's payload (FileNotFoundError when it is gone)."""
    return marshal.loads(path.read_bytes())


def write_atomically(path: Path, payload: Any) -> None:
    """Write ``payload`` to ``path`` through a temporary file and a rename (atomic on POSIX)."""
    data = marshal.dumps(payload)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def process_start(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (field 22 of /proc/pid/stat), or None when no such live process.

    A pid alone can be reused by a new process; pid plus start time names one process for its whole life.
    A zombie (killed, not yet reaped by its parent) counts as gone.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            raw = stat.read().decode(errors="replace")
    except FileNotFoundError:
        return None
    except OSError:  # no /proc: fall back to "exists"
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        return "?"
    fields = raw[raw.rfind(")") + 2 :].split()
    if not fields or fields[0] in ("Z", "X"):
        return None
    return fields[19] if len(fields) > 19 else "?"


def alive(pid: int, start: str | None) -> bool:
    """Is the process that wrote a file (pid, start time) still running?"""
    now = process_start(pid)
    return now is not None and (start in (None, "?") or now in ("?", start))


@dataclass(frozen=True)
class Published:
    """One parsed worker (or retired) file: the raw metrics the :9464 endpoint renders and, computed on first
    use, its series keyed for the health combination (``rows``)."""

    name: str
    pid: int
    start: str | None
    instance: str | None
    resource: dict[str, Any]
    written: float
    metrics: list[dict[str, Any]]
    folded: frozenset[str] = frozenset()  # retired.marshal only: the worker files summed into it

    @functools.cached_property
    def rows(self) -> dict[str, list[Row]]:
        """Each metric's series as (key, attributes, value, total), computed once per file version: what the
        master combines (no Point objects: building them was a third of the master's cost per file)."""
        out: dict[str, list[Row]] = {}
        for metric in self.metrics:
            rows = out.setdefault(metric["n"], [])
            for p in metric["p"]:
                attrs = p["a"]  # sequence values are tuples (the SDK's, kept by marshal and by crash_safe.read)
                rows.append((frozenset(attrs.items()), attrs, float(p["v"]), p.get("t")))
        return out

    @functools.cached_property
    def monotonic(self) -> frozenset[str]:
        return frozenset(m["n"] for m in self.metrics if m["m"])


AttrsKey = frozenset[tuple[str, Any]]
Row = tuple[AttrsKey, dict[str, Any], float, float | None]  # one series: key, attributes, value, total


class Directory:
    """Reads the shared directory, re-parsing only files that changed since the last read."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._cache: dict[str, tuple[tuple[int, int], Published]] = {}
        self._history_cache: dict[str, tuple[float, dict[tuple[str, frozenset[tuple[str, Any]]], Any]]] = {}
        self._final: dict[str, tuple[float, Published]] = {}
        self._combined: tuple[tuple[int, int, int], dict[str, Any]] | None = None
        self._host: dict[str, Any] | None = None

    def host(self) -> dict[str, Any]:
        """host.marshal: the master's pid and start time (read once; the master writes it before any worker)."""
        if self._host is None:
            self._host = load(self.path / HOST_FILE)
        return self._host

    def listing(self) -> tuple[list[os.DirEntry[str]], list[str]]:
        """(worker file entries, history file names), each in one scan of the directory."""
        workers: list[os.DirEntry[str]] = []
        history: list[str] = []
        with os.scandir(self.path) as it:
            for entry in it:
                if entry.name.startswith(WORKER_PREFIX) and entry.name.endswith(SUFFIX):
                    workers.append(entry)
                elif entry.name.startswith(HISTORY_PREFIX):
                    history.append(entry.name)
        return workers, history

    def read(self, name: str, entry: os.DirEntry[str] | None = None) -> Published | None:
        """The parsed file ``name`` (None when it is gone): parsed again only when its mtime or size changed."""
        path = self.path / name
        try:
            st = entry.stat() if entry is not None else path.stat()
            key = (st.st_mtime_ns, st.st_size)
            cached = self._cache.get(name)
            if cached is not None and cached[0] == key:
                return cached[1]
            raw = load(path)
        except FileNotFoundError:
            self._cache.pop(name, None)
            return None
        published = Published(
            name=name,
            pid=int(raw.get("pid", 0)),
            start=raw.get("start"),
            instance=raw.get("instance"),
            resource=raw.get("resource", {}),
            written=float(raw.get("written", 0.0)),
            metrics=raw["metrics"],
            folded=frozenset(raw.get("folded", {})),
        )
        self._cache[name] = (key, published)
        return published

    def forget(self, keep: set[str]) -> None:
        """Drop cached parses of files that no longer exist (recycled workers must not grow memory)."""
        for name in [n for n in self._cache if n not in keep]:
            del self._cache[name]
        for name in [n for n in self._final if n not in keep]:
            del self._final[name]

    def worker(self, entry: os.DirEntry[str]) -> tuple[Published, bool] | None:
        """A worker's file and whether that worker is alive; a dead worker's file completed by its crash-safe
        tables (``final``). None when the file is gone."""
        published = self.read(entry.name, entry)
        if published is None:
            return None
        if alive(published.pid, published.start):
            return published, True
        return self.final(published), False

    def final(self, published: Published) -> Published:
        """A dead worker's last file with every series its crash-safe tables hold (crash_safe.py) replaced by the
        table's values: the requests it completed after its last publication count too. A table is at least
        its file (the HTTP layer counts there before the SDK records), so nothing goes backwards."""
        cached = self._final.get(published.name)
        if cached is not None and cached[0] == published.written:
            return cached[1]
        metrics = list(published.metrics)
        complete = True
        for path in crash_safe.files_of(self.path, stem(published.name)):
            try:
                header, series = crash_safe.read(path)
            except FileNotFoundError:  # folded and removed meanwhile: retired.marshal has it (see the callers)
                complete = False
                continue
            except ValueError:
                _logger.debug("otel-reliability: %s is not a crash-safe table; skipped", path)
                continue
            metrics = _with_table(metrics, header, series)
        final = dataclasses.replace(published, metrics=metrics)
        if complete:
            self._final[published.name] = (published.written, final)
        return final

    def combined(self) -> dict[str, Any] | None:
        """The master's combination of every worker (None before its first), parsed again only when it changed."""
        path = self.path / COMBINED_FILE
        try:
            st = path.stat()
            key = (st.st_ino, st.st_mtime_ns, st.st_size)
            if self._combined is not None and self._combined[0] == key:
                return self._combined[1]
            raw = load(path)
        except FileNotFoundError:
            return None
        self._combined = (key, raw)
        return raw

    def history(
        self, names: list[str], start: float
    ) -> tuple[float, dict[tuple[str, frozenset[tuple[str, Any]]], Any]] | None:
        """The newest history entry taken at or before ``start`` (files never change once written)."""
        best = None
        for name in names:
            at = history_time(name)
            if at is not None and at <= start and (best is None or at > best[0]):
                best = (at, name)
        if best is None:
            return None
        name = best[1]
        if name not in self._history_cache:
            try:
                raw = load(self.path / name)
            except FileNotFoundError:  # pruned between the scan and now: the next-older one will do next time
                return None
            values = {(n, frozenset(a.items())): (v, t) for n, a, v, t in raw["values"]}
            if len(self._history_cache) > 256:
                self._history_cache.clear()
            self._history_cache[name] = (float(raw["at"]), values)
        return self._history_cache[name]


def _with_table(
    metrics: list[dict[str, Any]], header: dict[str, Any], series: list[tuple[dict[str, Any], float, list[float]]]
) -> list[dict[str, Any]]:
    """``metrics`` (a published file's) with the histogram of one crash-safe table taken from the table."""
    name, scope, bounds = header["name"], header.get("scope") or ["", None, None], header["bounds"]
    # By name: one HTTP layer records it per process (a scope's schema URL may read "" in one and null in the other).
    index = next((i for i, m in enumerate(metrics) if m["n"] == name and m["k"] == "hist"), None)
    if index is None:
        entry: dict[str, Any] = {"n": name, "s": scope, "d": header.get("description", ""), "u": header.get("unit", ""),
                                 "k": "hist", "m": True, "p": []}  # fmt: skip
        metrics = [*metrics, entry]
        index = len(metrics) - 1
    entry = metrics[index]
    points = {attrs_key(p["a"]): p for p in entry["p"]}
    for attributes, total, buckets in series:
        key = attrs_key(attributes)
        old = points.get(key)
        count = int(sum(buckets))
        if old is not None and (old.get("e") != bounds or old["v"] > count):
            continue  # a view changed the buckets (cannot be replaced), or not a later state: keep the file's
        points[key] = {"a": attributes, "v": count, "t": total, "b": [int(b) for b in buckets], "e": bounds,
                       "mn": old.get("mn") if old else None, "mx": old.get("mx") if old else None}  # fmt: skip
    metrics = list(metrics)
    metrics[index] = {**entry, "p": list(points.values())}
    return metrics


def history_name(at: float) -> str:
    return f"{HISTORY_PREFIX}{int(at * 1000)}{SUFFIX}"


def history_time(name: str) -> float | None:
    """When the history entry ``name`` was taken (None: not a history file's name)."""
    try:
        return int(name[len(HISTORY_PREFIX) : -len(SUFFIX)]) / 1000.0
    except ValueError:
        return None


def now() -> float:
    return time.monotonic()
