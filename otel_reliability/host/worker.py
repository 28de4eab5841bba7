"""A prefork worker's side: publish this process's readings, answer health for the whole host.

The publisher collects this worker's Readings every ``PUBLISH_INTERVAL`` seconds on a background thread and
writes them to its file in the shared directory (one atomic rename): nothing on the request path. It also
publishes once more at exit, so a worker recycled by ``--max-requests`` or scaled down with TTOU hands over
its last requests. A worker killed with SIGKILL loses at most what it counted since its last publication,
except its HTTP requests: the HTTP layer counts those in place in its crash-safe table (otel_reliability/crash_safe.py),
and a dead worker's file is read completed by that table (``store.Directory.worker``).

``HostReadings`` is what the health views read in a worker: the same ``snapshot()`` / ``window()`` /
``is_fresh()`` calls as ``Readings``, answered for the host. This worker's own part is its fresh Snapshot (a
change here shows at once); every other worker's part (dead and retired workers' counts included) comes from
the master's combination, combined.marshal (one file, re-combined by the master within 0.25 s of a
publication), less this worker's own part in it: the worker keeps the Snapshot of each of its last
publications and takes out exactly the version the master combined. Windows subtract the host's history that
the master writes (history-*.marshal), so a worker started a minute ago still answers a 5-minute window for the
host.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType
from typing import Any

from otel_reliability import gil, threads
from otel_reliability.host import merge, store
from otel_reliability.host.timing import (
    COUNT_REUSE,
    OTHERS_MAX_AGE,
    OTHERS_TTL,
    OWN_MAX_AGE,
    PUBLISH_INTERVAL,
    VERSIONS,
    WARM_FOR,
)
from otel_reliability.readings import Point, Readings, Snapshot, Window
from otel_reliability.readings.model import window_between

_logger = logging.getLogger(__name__)


class Publisher:
    """Writes this worker's cumulative readings to ``w-<pid>-<token>.marshal`` in the shared directory."""

    def __init__(self, directory: store.Directory, readings: Readings, interval: float = PUBLISH_INTERVAL) -> None:
        self.directory = directory
        self.readings = readings
        self.interval = interval
        self.pid = os.getpid()
        self.start = store.process_start(self.pid)
        self.file = store.worker_file(self.pid, uuid.uuid4().hex[:8])
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self.after: Callable[[], None] | None = None  # run on the thread after each publication
        self.when_woken: Callable[[], None] | None = None  # run on the thread when ``wake()`` was called
        self.versions: dict[float, Snapshot] = {}  # the Snapshot of each recent publication, by its ``written``

    def publish(self) -> None:
        """Collect and write now (the thread calls this; so does exit)."""
        if os.getpid() != self.pid:  # a fork of this worker is not this worker
            return
        with self._lock:
            data, snap = self.readings.export_with_snapshot()
            if data is None:
                return
            resource = {k: v for k, v in snap.resource.items() if isinstance(v, str | int | float)}
            written = store.now()
            payload: dict[str, Any] = {
                "pid": self.pid,
                "start": self.start,
                "instance": resource.get(merge.INSTANCE_ID),
                "resource": resource,
                "written": written,
                "metrics": merge.encode(data),
            }
            self.versions[written] = snap  # before the file: the master may combine it at once
            for old in list(self.versions)[:-VERSIONS]:
                del self.versions[old]
            store.write_atomically(self.directory.path / self.file, payload)

    def start_thread(self) -> None:
        threads.start(self._run, "otel-reliability-publish")
        atexit.register(self.final)

    def wake(self) -> None:
        """Have the thread run ``when_woken`` now (a health call asks for the other workers' newer parts)."""
        self._wake.set()

    def _run(self) -> None:
        """Publish every ``interval``; in between, run ``when_woken`` whenever ``wake()`` is called."""
        next_at = time.monotonic() + self.interval
        while True:
            woken = self._wake.wait(max(0.0, next_at - time.monotonic()))
            self._wake.clear()
            try:
                with gil.yielding_to_requests():  # the event loop's requests go first (otel_reliability.gil)
                    if woken and self.when_woken is not None:
                        self.when_woken()
                    if time.monotonic() >= next_at:
                        self.publish()
                        next_at = time.monotonic() + self.interval
                        if self.after is not None:
                            self.after()
            except FileNotFoundError:  # the master removed the directory: the server is going down
                return
            except Exception:
                next_at = time.monotonic() + self.interval
                _logger.debug("otel-reliability: publishing this worker's readings failed", exc_info=True)

    def final(self) -> None:
        """The last publication (app shutdown, or exit): the last requests' counts must not leave with the
        worker. Later periodic publications are harmless (counts only grow), so the thread is not stopped
        here: a lifespan that restarts keeps publishing."""
        try:
            self.publish()
        except Exception:
            _logger.debug("otel-reliability: final publication failed", exc_info=True)


class HostReadings:
    """The Readings interface the health views use, answered for every worker of this host."""

    def __init__(
        self,
        directory: store.Directory,
        own: Readings,
        own_file: str,
        versions: Mapping[float, Snapshot] | None = None,
        refresh: Callable[[], None] | None = None,
    ) -> None:
        self.directory = directory
        self.own = own
        self.own_file = own_file
        self.versions = versions if versions is not None else {}  # the publisher's
        self._ask_refresh = refresh  # the publisher's ``wake``: its thread re-reads the other workers
        self._lock = threading.Lock()
        self._others_key: Any = None
        self._others: tuple[merge.Accumulator, tuple[tuple[str | None, Snapshot], ...]] = (merge.Accumulator(), ())
        self._history: list[str] = []
        self._counted = (float("-inf"), 1)
        self._others_at = float("-inf")
        self._refreshing = False
        self._asked_at = float("-inf")
        self._merged: tuple[Snapshot, merge.Accumulator, merge.HostSnapshot] | None = None

    # --- the Readings interface ------------------------------------------------------------------------
    def is_fresh(self) -> bool:
        return self.own.is_fresh()

    @property
    def latest(self) -> merge.HostSnapshot | None:
        """The newest host combination, whatever its age (what a response is stamped with)."""
        merged = self._merged
        return merged[2] if merged is not None else None

    def warm(self) -> None:
        """Combine ahead, on the publisher's thread, while health is being asked (within ``WARM_FOR``): the
        publication just refreshed this worker's snapshot, so the next health call would combine again."""
        now = time.monotonic()
        if now - self._asked_at < WARM_FOR:
            if now - self._others_at >= OTHERS_TTL:
                self._other_workers()  # already off the request path: no second thread
            self._combine(self.own.snapshot(self._own_age(None)))

    def snapshot(self, max_age: float | None = None) -> merge.HostSnapshot:
        """This worker's fresh snapshot plus every other worker's last publication (the master's combination).

        The combination is reused while neither part changed: the views of one /api/health call (and the
        calls of a burst) share it. The master's file is re-read at most every ``OTHERS_TTL`` seconds, in the
        background while the last reading is younger than ``OTHERS_MAX_AGE``; the other workers' parts are up
        to ``PUBLISH_INTERVAL`` plus a combination interval old anyway, and a change in this worker shows at once.
        While health is being asked (within ``WARM_FOR``) the publisher's thread re-reads it after each
        publication (``warm``), so a call starts no reading thread of its own to compete with it for the GIL.
        """
        now = time.monotonic()
        warm = now - self._asked_at < WARM_FOR
        self._asked_at = now
        return self._combine(self.own.snapshot(self._own_age(max_age)), background=not warm)

    def _own_age(self, max_age: float | None) -> float:
        limit = self.own.cache_seconds if max_age is None else max_age
        return max(limit, OWN_MAX_AGE) if limit > 0 else limit

    def _combine(self, own: Snapshot, background: bool = False) -> merge.HostSnapshot:
        now = time.monotonic()
        age = now - self._others_at
        if age >= OTHERS_MAX_AGE:
            self._other_workers()  # too old to serve (or never read): read now, on this call
        elif age >= OTHERS_TTL and background:
            self._refresh_in_background()  # serve what we have; the next call gets the new combination
        others, per_worker = self._others
        cached = self._merged
        if cached is not None and cached[0] is own and cached[1] is others:
            self._counted = (now, cached[2].workers)
            return cached[2]
        me = (own.resource.get(merge.INSTANCE_ID), own)
        snap = others.with_own(own, (me, *per_worker))
        self._merged = (own, others, snap)
        self._counted = (now, snap.workers)
        return snap

    def window(self, seconds: float, names: Iterable[str] | None = None) -> Window:
        """The change of every cumulative host series over the last ``seconds``.

        The base is the master's newest history entry taken at or before the window's start. When there is
        none: a host younger than the window saw everything inside it (base 0); an older host whose history
        does not reach back that far (just after a master restart) is covered from its oldest entry.
        """
        now = self.snapshot()
        start = now.taken_at - seconds
        base = self.directory.history(self._history, start)
        if base is None:
            started = float(self.directory.host().get("started", now.taken_at))
            if now.taken_at - started <= seconds or not self._history:
                base = (started, {})
            else:
                oldest = min(self._history, key=lambda n: store.history_time(n) or 0.0)
                base = self.directory.history([oldest], float("inf")) or (started, {})
        base_at, base_values = base
        return window_between(now, base_at, base_values, seconds, names)

    def workers(self) -> int:
        """Live workers (this one included): those of the snapshot just taken, else of the master's latest
        combination (/live)."""
        counted_at, count = self._counted
        if time.monotonic() - counted_at < COUNT_REUSE:
            return count
        combined = self.directory.combined()
        workers = combined["workers"] if combined is not None else ()
        return 1 + sum(1 for name, _, live in workers if live and name != self.own_file)

    # --- the other workers ----------------------------------------------------------------------------------
    def _refresh_in_background(self) -> None:
        """Have the publisher's thread re-read the other workers (``refresh_others``); without a publisher (a
        reader of a directory in a test or a benchmark) the call after ``OTHERS_MAX_AGE`` reads them itself."""
        if self._ask_refresh is not None and not self._refreshing:
            self._refreshing = True
            self._ask_refresh()

    def refresh_others(self) -> None:
        """The other workers re-read, on the publisher's thread when a call asked for it."""
        try:
            if self._refreshing:
                self._other_workers()
        except Exception:
            _logger.debug("otel-reliability: reading the other workers failed", exc_info=True)
        finally:
            self._refreshing = False

    def _other_workers(self) -> tuple[merge.Accumulator, tuple[tuple[str | None, Snapshot], ...]]:
        """Every other worker: the master's combination less this worker's part, re-done only when the master
        combined again. Before the master's first combination (its first 0.25 s): none."""
        with self._lock:
            started = time.monotonic()
            _, self._history = self.directory.listing()
            combined = self.directory.combined()
            if combined is None:
                self._others_at = started
                return self._others
            mine = next(((w, live) for name, w, live in combined["workers"] if name == self.own_file), None)
            key = (combined["at"], mine)
            if key != self._others_key:
                acc = merge.Accumulator.load(combined)
                if mine is not None:
                    own = self.versions.get(mine[0])
                    if own is None:  # not kept any more (the master stalled for seconds): serve what we have
                        _logger.debug("otel-reliability: publication %s not kept; host readings not updated", mine)
                        return self._others
                    acc = acc.without(self.own_file, own)
                per_worker = tuple(
                    (instance, _worker_snapshot(combined["at"], metrics))
                    for name, instance, metrics in combined["per_worker"]
                    if name != self.own_file
                )
                self._others = (acc, per_worker)
                self._others_key = key
            self._others_at = started  # what the files said at the start of this read
            return self._others


def _worker_snapshot(at: float, metrics: Mapping[str, list[tuple[dict[str, Any], float, float | None]]]) -> Snapshot:
    """One other worker's own figures (its process gauges), as the resources view reads them."""
    points = {name: tuple(Point(MappingProxyType(a), v, t) for a, v, t in rows) for name, rows in metrics.items()}
    return Snapshot(at, MappingProxyType({}), MappingProxyType(points))


def wait_for_directory(path: str, timeout: float = 5.0) -> store.Directory | None:
    """The shared directory once the master has written host.marshal (it does so before forking any worker)."""
    directory = store.Directory(path)
    deadline = time.monotonic() + timeout
    while True:
        try:
            directory.host()
            return directory
        except (FileNotFoundError, EOFError, ValueError):
            if time.monotonic() > deadline:
                return None
            time.sleep(0.05)
