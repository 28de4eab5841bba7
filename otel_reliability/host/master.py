"""The master's side (gunicorn arbiter, ``uvicorn --workers`` supervisor): the process that outlives workers.

It owns the shared directory (created private, 0700; removed when it exits) and runs one background thread
that, every ``COMBINE_INTERVAL`` (0.25 s):

- folds the files of dead workers into retired.marshal (their monotonic series summed; their gauges dropped)
  and removes them, so the directory holds one file per live worker plus one, however often workers are
  recycled;
- when a worker published (or died) since, combines every worker for health once and writes combined.marshal:
  each worker answers health from that one file (less its own part, plus its fresh readings) instead of
  reading every other worker's file;
- every ``history_interval`` seconds writes the host's merged cumulative values to history-<t>.marshal and
  removes entries older than the retention: the base of every worker's window, whatever its age; beyond the
  retention it keeps the first entry of every ``COARSE_STEP`` seconds up to ``COARSE_SPAN`` (the status page's
  15-minute sparkline), as the in-process history does.

It also serves :9464 (when the Prometheus exporter is chosen): the host's metrics merged on each scrape.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from opentelemetry.sdk.metrics.export import MetricsData

from otel_reliability import crash_safe, gil, threads
from otel_reliability.host import merge, store
from otel_reliability.host.timing import COMBINE_INTERVAL, FOLDED_MEMORY
from otel_reliability.readings.history import COARSE_SPAN, COARSE_STEP

_logger = logging.getLogger(__name__)

PER_WORKER_PREFIX = "process."  # the gauges each worker's figures show (resources view); the rest is combined


class HostAggregator:
    """The shared directory's owner: folding, history, and the merged view for :9464."""

    def __init__(self, *, history_interval: float, retention: float, base: str | None = None) -> None:
        self.path = Path(tempfile.mkdtemp(prefix="otel-reliability-host-", dir=base))  # mode 0700
        self.directory = store.Directory(self.path)
        self.pid = os.getpid()
        self.started = store.now()
        self.history_interval = history_interval
        self.retention = retention
        self._lock = threading.Lock()
        self._retired = merge.RawAccumulator()
        self._folded: dict[str, float] = {}
        self._stop = threading.Event()
        self._last_history = 0.0
        self._resource: dict[str, Any] = {}
        self._closed = False
        self._combined_key: Any = None
        store.write_atomically(self.path / store.HOST_FILE, {"master": self.pid, "started": self.started})

    def start(self) -> None:
        threads.start(self._run, "otel-reliability-host")
        atexit.register(self.close)

    def close(self) -> None:
        """Remove the directory; only in the process that created it (forked workers inherit atexit hooks)."""
        if os.getpid() != self.pid:
            return
        self._stop.set()
        with self._lock:  # no tick is writing; none starts after this (``_closed``)
            self._closed = True
        for _attempt in range(3):  # a worker still exiting may drop a file in while the tree is removed
            shutil.rmtree(self.path, ignore_errors=True)
            if not self.path.exists():
                return
            time.sleep(0.05)

    def _run(self) -> None:
        while not self._stop.wait(COMBINE_INTERVAL):
            try:
                with gil.yielding_to_requests():  # scrapes of :9464 go first (otel_reliability.gil)
                    self.tick()
            except FileNotFoundError:
                return  # the directory is gone: shutting down
            except Exception:
                _logger.debug("otel-reliability: host aggregation failed", exc_info=True)

    def tick(self, at: float | None = None) -> None:
        at = store.now() if at is None else at
        with self._lock:
            if self._closed:
                return
            self._fold_dead(at)
            self._combine(at)
            if at - self._last_history >= self.history_interval:
                self._write_history(at)
                self._last_history = at

    def _fold_dead(self, at: float) -> None:
        entries, _ = self.directory.listing()
        dead = []
        for entry in entries:
            found = self.directory.worker(entry)
            if found is not None and not found[1]:
                dead.append(found[0])
        expired = [n for n, t in self._folded.items() if at - t > FOLDED_MEMORY]
        for name in expired:
            del self._folded[name]
        if not dead and not expired:
            return
        for published in dead:
            self._retired.add(published.metrics, live=False)
            self._folded[published.name] = at
        # retired.marshal first, with the folded names; only then the files go (see HostReadings._other_workers).
        store.write_atomically(
            self.path / store.RETIRED_FILE,
            {"pid": 0, "written": at, "metrics": self._retired.published(), "folded": self._folded},
        )
        for published in dead:
            for path in [self.path / published.name, *crash_safe.files_of(self.path, store.stem(published.name))]:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
        self.directory.forget({e.name for e in entries} - {p.name for p in dead} | {store.RETIRED_FILE})

    def combine(self) -> None:
        """Combine now (the thread does it every tick; tests and benchmarks call it)."""
        with self._lock:
            if not self._closed:
                self._combine(store.now())

    def _combine(self, at: float) -> None:
        """Every worker (dead ones' monotonic series and the retired sums included) combined for health, in
        combined.marshal, when any of them changed. Each live worker's part is named (``workers``) with the
        version it came from, so that worker can take exactly that part out again."""
        entries, _ = self.directory.listing()
        parts = []
        for entry in entries:
            found = self.directory.worker(entry)
            if found is not None and found[0].name not in self._folded:
                parts.append(found)
        retired = self.directory.read(store.RETIRED_FILE)
        key = (tuple((p.name, p.written, live) for p, live in parts), retired.written if retired else None)
        if key == self._combined_key:
            return
        acc = merge.Accumulator()
        workers, per_worker = [], []
        for published, live in parts:
            acc.add(published.rows, published.monotonic, live, source=published.name)
            workers.append((published.name, published.written, live))
            if live:
                mine = {n: [(a, v, t) for _, a, v, t in rows]
                        for n, rows in published.rows.items() if n.startswith(PER_WORKER_PREFIX)}  # fmt: skip
                per_worker.append((published.name, published.instance, mine))
        if retired is not None:
            acc.add(retired.rows, retired.monotonic, False)
        payload = {"at": at, "workers": workers, "per_worker": per_worker, **acc.dump()}
        store.write_atomically(self.path / store.COMBINED_FILE, payload)
        self._combined_key = key

    def _write_history(self, at: float) -> None:
        raw, _ = self._merged(live_gauges=False)
        store.write_atomically(self.path / store.history_name(at), {"at": at, "values": raw.cumulative()})
        _, names = self.directory.listing()
        timed = sorted((t, n) for n in names if (t := store.history_time(n)) is not None)
        slot = None
        for taken, name in timed:
            # Keep the newest entry older than the retention: the base of the widest window; beyond it, the first
            # of each coarse step, for the sparkline.
            if taken >= at - self.retention - self.history_interval:
                break
            first_of_slot = int(taken // COARSE_STEP) != slot
            slot = int(taken // COARSE_STEP)
            if first_of_slot and taken >= at - COARSE_SPAN - COARSE_STEP:
                continue
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path / name)

    def _merged(self, live_gauges: bool = True) -> tuple[merge.RawAccumulator, dict[str, Any]]:
        """Every worker file plus the retired sums, as one RawAccumulator, and a worker's resource."""
        raw = merge.RawAccumulator()
        resource: dict[str, Any] = {}
        entries, _ = self.directory.listing()
        for entry in entries:
            found = self.directory.worker(entry)
            if found is None or found[0].name in self._folded:
                continue
            published, live = found
            raw.add(published.metrics, live=live and live_gauges, instance=published.instance)
            if live and not resource:
                resource = {k: v for k, v in published.resource.items() if k != merge.INSTANCE_ID}
        raw.add(self._retired.published(), live=False)
        return raw, resource

    def export(self) -> MetricsData | None:
        """The host's metrics for one scrape: counters and histograms summed over every worker that ever
        ran, gauges per live worker (labelled ``service_instance_id``)."""
        with self._lock:
            raw, resource = self._merged()
            if resource:
                self._resource = resource
            elif not self._resource:
                return None  # no worker has published yet; the exporter keeps the first resource it sees
        return raw.metrics_data(self._resource, time.time_ns())
