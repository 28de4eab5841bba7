"""A prefork worker's side: publish this process's readings, answer health for the whole host.

The publisher collects this worker's Readings every ``PUBLISH_INTERVAL`` seconds on a background thread and
writes them to its file in the shared directory (one atomic rename): nothing on the request path. It also
publishes once more at exit, so a worker recycled by ``--max-requests`` or scaled down with TTOU hands over
its last requests. A worker killed with SIGKILL loses at most what it counted since its last publication,
except its HTTP requests: the HTTP layer counts those in place in its tally table (otel_reliability/tally.py),
and a dead worker's file is read completed by that table (``store.Directory.worker``).

``HostReadings`` is what the health views read in a worker: the same ``snapshot()`` / ``window()`` /
``is_fresh()`` calls as ``Readings``, answered for the host. This worker's own part is its fresh Snapshot (a
change here shows at once); every other worker's part is its last published file (at most
``PUBLISH_INTERVAL`` old); retired workers' counts come from retired.json. Windows subtract the host's
history that the master writes (history-*.json), so a worker started a minute ago still answers a 5-minute
window for the host.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any

from otel_reliability.host import merge, store
from otel_reliability.readings import Readings, Snapshot, Window
from otel_reliability.readings.model import window_between

_logger = logging.getLogger(__name__)

PUBLISH_INTERVAL = 0.5
# The other workers' combination is re-read in the background once older than OTHERS_TTL, and on the call
# itself once older than OTHERS_MAX_AGE: steady health traffic never waits for the parse, and an answer is never
# more than OTHERS_MAX_AGE + PUBLISH_INTERVAL (1.3 s) behind another worker.
OTHERS_TTL = 0.2
OTHERS_MAX_AGE = 0.8
WARM_FOR = 10.0  # seconds after a health call during which the publisher combines ahead
COUNT_REUSE = 0.5  # seconds an answer's worker count may come from the snapshot its views just read


class Publisher:
    """Writes this worker's cumulative readings to ``w-<pid>-<token>.json`` in the shared directory."""

    def __init__(self, directory: store.Directory, readings: Readings, interval: float = PUBLISH_INTERVAL) -> None:
        self.directory = directory
        self.readings = readings
        self.interval = interval
        self.pid = os.getpid()
        self.start = store.process_start(self.pid)
        self.file = f"{store.WORKER_PREFIX}{self.pid}-{uuid.uuid4().hex[:8]}.json"
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.after: Callable[[], None] | None = None  # run on the thread after each publication

    def publish(self) -> None:
        """Collect and write now (the thread calls this; so does exit)."""
        if os.getpid() != self.pid:  # a fork of this worker is not this worker
            return
        with self._lock:
            data = self.readings.export()
            if data is None:
                return
            resource = {k: v for k, v in self.readings.snapshot().resource.items() if isinstance(v, str | int | float)}
            payload: dict[str, Any] = {
                "pid": self.pid,
                "start": self.start,
                "instance": resource.get(merge.INSTANCE_ID),
                "resource": resource,
                "written": store.now(),
                "observed": time.time(),
                "metrics": merge.encode(data),
            }
            store.write_atomically(self.directory.path / self.file, payload)

    def start_thread(self) -> None:
        self._thread = threading.Thread(target=self._run, name="otel-reliability-publish", daemon=True)
        self._thread.start()
        atexit.register(self.final)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.publish()
                if self.after is not None:
                    self.after()
            except FileNotFoundError:  # the master removed the directory: the server is going down
                return
            except Exception:
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

    def __init__(self, directory: store.Directory, own: Readings, own_file: str) -> None:
        self.directory = directory
        self.own = own
        self.own_file = own_file
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
            self._combine(self.own.snapshot())

    def snapshot(self, max_age: float | None = None) -> merge.HostSnapshot:
        """This worker's fresh snapshot plus every other worker's last publication.

        The combination is reused while neither part changed: the views of one /api/health call (and the
        calls of a burst) share it. The other workers' files are re-read at most every ``OTHERS_TTL`` seconds,
        in the background while the last reading is younger than ``OTHERS_MAX_AGE``; they are up to
        ``PUBLISH_INTERVAL`` old anyway, and a change in this worker shows at once.
        """
        self._asked_at = time.monotonic()
        return self._combine(self.own.snapshot(max_age))

    def _combine(self, own: Snapshot) -> merge.HostSnapshot:
        now = time.monotonic()
        age = now - self._others_at
        if age >= OTHERS_MAX_AGE:
            self._other_workers()  # too old to serve (or never read): read now, on this call
        elif age >= OTHERS_TTL:
            self._refresh_in_background()  # serve what we have; the next call gets the new combination
        others, per_worker = self._others
        cached = self._merged
        if cached is not None and cached[0] is own and cached[1] is others:
            self._counted = (now, cached[2].workers)
            return cached[2]
        acc = others.copy()
        acc.add(own, live=True)
        me = (own.resource.get(merge.INSTANCE_ID), own)
        snap = acc.snapshot(own, (me, *per_worker))
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
                oldest = min(self._history, key=lambda n: store._history_time(n) or 0.0)
                base = self.directory.history([oldest], float("inf")) or (started, {})
        base_at, base_values = base
        return window_between(now, base_at, base_values, seconds, names)

    def workers(self) -> int:
        """Live workers (this one included): those of the snapshot just taken, else counted now (/live)."""
        counted_at, count = self._counted
        if time.monotonic() - counted_at < COUNT_REUSE:
            return count
        entries, _ = self.directory.listing()
        count = 1
        for entry in entries:
            if entry.name == self.own_file:
                continue
            published = self.directory.read(entry.name, entry)
            if published is not None and store.alive(published.pid, published.start):
                count += 1
        return count

    # --- the other workers ----------------------------------------------------------------------------------
    def _refresh_in_background(self) -> None:
        if self._refreshing:
            return
        self._refreshing = True

        def refresh() -> None:
            try:
                self._other_workers()
            except Exception:
                _logger.debug("otel-reliability: reading the other workers failed", exc_info=True)
            finally:
                self._refreshing = False

        threading.Thread(target=refresh, name="otel-reliability-host-read", daemon=True).start()

    def _other_workers(self) -> tuple[merge.Accumulator, tuple[tuple[str | None, Snapshot], ...]]:
        """Every other worker combined, re-combined only when a file changed or a worker died.

        Order matters against the master folding a dead worker into retired.json: list the files, read them,
        then read retired.json; a file named in its ``folded`` set is skipped (its counts are in the sum),
        and a file that vanished after the listing was folded before retired.json was read.
        """
        with self._lock:
            started = time.monotonic()
            entries, history = self.directory.listing()
            self._history = history
            parsed = []
            for entry in entries:
                if entry.name == self.own_file:
                    continue
                found = self.directory.worker(entry)
                if found is not None:
                    parsed.append(found)
            retired, folded = self.directory.retired()
            self.directory.forget({p.name for p, _ in parsed} | {store.RETIRED_FILE})
            key = (
                tuple((p.name, p.written, live) for p, live in parsed if p.name not in folded),
                None if retired is None else (retired.written, len(folded)),
            )
            if key != self._others_key:
                acc = merge.Accumulator()
                per_worker = []
                for published, live in parsed:
                    if published.name in folded:
                        continue
                    acc.add(published.snapshot, live, published.keyed)
                    if live:
                        per_worker.append((published.instance, published.snapshot))
                if retired is not None:
                    acc.add(retired.snapshot, False, retired.keyed)
                self._others = (acc, tuple(per_worker))
                self._others_key = key
            self._others_at = started  # what the files said at the start of this read
            return self._others


def wait_for_directory(path: str, timeout: float = 5.0) -> store.Directory | None:
    """The shared directory once the master has written host.json (it does so before forking any worker)."""
    directory = store.Directory(path)
    deadline = time.monotonic() + timeout
    while True:
        try:
            directory.host()
            return directory
        except (FileNotFoundError, ValueError):
            if time.monotonic() > deadline:
                return None
            time.sleep(0.05)
