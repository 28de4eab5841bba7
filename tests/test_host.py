"""The host machinery without a server: workers' readings combined, a dead worker folded, windows from the
master's history. Real SDK readers, a real directory, a real dead process (prefork servers: test_prefork.py)."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.resources import Resource

from otel_reliability import crash_safe
from otel_reliability.host import merge, store, timing
from otel_reliability.host.master import HostAggregator
from otel_reliability.host.worker import HostReadings, Publisher
from otel_reliability.readings import Readings, Snapshot

DURATION = "http.server.request.duration"
IN_FLIGHT = "operation.in_flight"
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10)


class Worker:
    """One worker's SDK: a Readings on its own MeterProvider, a request histogram and an in-flight gauge."""

    def __init__(self, instance: str) -> None:
        self.readings = Readings(background=False, cache_seconds=0.0)
        provider = MeterProvider(
            metric_readers=[self.readings], resource=Resource({"service.name": "svc", merge.INSTANCE_ID: instance})
        )
        self.readings.bind(provider)
        meter = self.meter = provider.get_meter("t")
        self.requests = meter.create_histogram(DURATION, unit="s", explicit_bucket_boundaries_advisory=BUCKETS)
        self.in_flight = meter.create_up_down_counter(IN_FLIGHT)

    def fail(self, n: int) -> None:
        for _ in range(n):
            self.requests.record(0.01, {"http.response.status_code": 500})


def dead_pid() -> int:
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(proc.stdout)


def publish_as_dead(directory: store.Directory, worker: Worker) -> str:
    """Publish ``worker`` as a process that has exited since (its last file, left behind)."""
    publisher = Publisher(directory, worker.readings)
    publisher.publish()
    path = directory.path / publisher.file
    raw = store.load(path)
    pid = dead_pid()
    raw.update(pid=pid, start="1")
    name = store.worker_file(pid, "dead")
    store.write_atomically(directory.path / name, raw)
    path.unlink()
    return name


def errors(snap: Snapshot) -> float:
    return snap.total(DURATION, {"http.response.status_code": 500})


def scraped(aggregator: HostAggregator, name: str) -> dict[tuple[tuple[str, Any], ...], float]:
    data = aggregator.export()
    assert data is not None
    return {
        tuple(sorted(p.attributes.items())): getattr(p, "count", getattr(p, "value", None))
        for rm in data.resource_metrics
        for sm in rm.scope_metrics
        for m in sm.metrics
        if m.name == name
        for p in m.data.data_points
    }


@pytest.fixture
def host(tmp_path: Path) -> Iterator[HostAggregator]:
    aggregator = HostAggregator(history_interval=0.2, retention=60, base=str(tmp_path))
    yield aggregator
    aggregator.close()
    assert not aggregator.path.exists()


def test_a_dead_workers_counts_stay_and_its_gauges_go(host: HostAggregator) -> None:
    directory = store.Directory(host.path)
    alive, gone, me = Worker("alive"), Worker("gone"), Worker("me")
    alive.fail(3)
    alive.in_flight.add(2)
    gone.fail(5)
    gone.in_flight.add(4)
    me.fail(1)
    Publisher(directory, alive.readings).publish()
    publish_as_dead(directory, gone)
    reader = HostReadings(directory, me.readings, own_file=store.worker_file(0, "me"))

    host.combine()  # what every worker reads: the master's combination (the dead worker not folded yet)
    snap = reader.snapshot()
    assert errors(snap) == 3 + 5 + 1  # the dead worker's counts are the host's
    assert snap.total(IN_FLIGHT) == 2  # its gauge is not
    assert snap.workers == 2 and {i for i, _ in snap.per_worker} == {"me", "alive"}
    before = scraped(host, DURATION)
    assert sum(before.values()) == 3 + 5  # :9464 sums the published workers; "me" has not published
    assert {dict(k).get(merge.INSTANCE_ID) for k in scraped(host, IN_FLIGHT)} == {"alive"}  # gauges per worker

    host.tick()  # folds the dead worker into retired.marshal and removes its file
    workers, _ = directory.listing()
    assert not any("dead" in e.name for e in workers)
    assert (host.path / store.RETIRED_FILE).exists()
    assert scraped(host, DURATION) == before  # counters never go backwards
    reader._others_at = float("-inf")
    assert errors(reader.snapshot()) == 9


def test_a_dead_workers_requests_after_its_last_publication_come_from_its_crash_safe_table(
    host: HostAggregator,
) -> None:
    """A worker killed 0.5 s after publishing: the requests it completed since are in its crash-safe table (the HTTP
    layer's shared-memory copy of the histogram), which health and :9464 read for it, before and after folding."""
    directory = store.Directory(host.path)
    gone, me = Worker("gone"), Worker("me")
    gone.fail(2)  # the HTTP layer counts each request in its table and in the SDK
    name = publish_as_dead(directory, gone)
    table = crash_safe.Table(
        host.path / f"{store.stem(name)}.{DURATION}{crash_safe.SUFFIX}", name=DURATION, bounds=BUCKETS, meta={}
    )
    slot = table.slot({"http.response.status_code": 500})
    assert slot is not None
    for _ in range(7):  # 2 published, 5 completed after the last publication: only the table has those
        table.add(slot, 0.01)
    alive = Worker("alive")
    alive.in_flight.add(1)
    Publisher(directory, alive.readings).publish()  # :9464 takes the resource from a live worker
    reader = HostReadings(directory, me.readings, own_file=store.worker_file(0, "me"))
    host.combine()
    assert errors(reader.snapshot()) == 7
    assert sum(scraped(host, DURATION).values()) == 7

    host.tick()  # folded: retired.marshal holds the table's counts; the worker's file and its table are removed
    assert not list(host.path.glob(f"*{crash_safe.SUFFIX}"))
    assert sum(scraped(host, DURATION).values()) == 7
    reader._others_at = float("-inf")
    assert errors(reader.snapshot()) == 7


def test_a_window_starts_at_the_masters_history_whoever_answers(host: HostAggregator) -> None:
    directory = store.Directory(host.path)
    alive, me = Worker("alive"), Worker("me")
    publisher = Publisher(directory, alive.readings)
    alive.fail(4)
    publisher.publish()
    host.tick()  # history entry: 4 errors
    time.sleep(0.3)
    alive.fail(6)
    publisher.publish()
    host.combine()
    reader = HostReadings(directory, me.readings, own_file=store.worker_file(0, "me"))
    assert errors(reader.window(0.2, [DURATION])) == 6  # base: the history entry, taken before the window
    assert errors(reader.window(300, [DURATION])) == 10  # the host is younger than 300 s: everything


def test_workers_combine_by_kind() -> None:
    """Counters and workers-in-state add up; settings and ages take the largest; the statement timeout the
    smallest (the least protected connection is the one to report)."""

    def snap(values: dict[str, float], monotonic: frozenset[str] = frozenset()) -> Snapshot:
        from types import MappingProxyType

        from otel_reliability.readings import Point

        metrics = {name: (Point(MappingProxyType({"k": "v"}), value),) for name, value in values.items()}
        return Snapshot(0.0, MappingProxyType({}), MappingProxyType(metrics), monotonic)

    acc = merge.Accumulator()
    names = ("circuit_breaker.state", "circuit_breaker.failure_threshold", "db.client.statement_timeout", "calls")
    for values, live in (((1, 5, 300, 7), True), ((1, 5, 0, 2), True), ((1, 9, 10, 1), False)):
        acc.add(merge.rows_of(snap(dict(zip(names, values, strict=True)))), {"calls"}, live)
    host = acc.snapshot(snap({}), ())
    assert [host.value(n) for n in names] == [2, 5, 0, 10]


def test_a_worker_answers_from_the_masters_combination_less_its_own_published_part(host: HostAggregator) -> None:
    """The master combines every worker once; a worker takes out exactly the version of its own readings the
    combination holds and puts its fresh readings in: no double count, and a gauge combined by max does not
    keep this worker's old value."""
    from otel_reliability import semconv

    directory = store.Directory(host.path)
    me, other = Worker("me"), Worker("other")
    failures = {
        w: w.meter.create_up_down_counter(semconv.METRIC_CIRCUIT_BREAKER_CONSECUTIVE_FAILURES) for w in (me, other)
    }
    me.fail(3)
    failures[me].add(5, {"circuit_breaker.name": "b"})
    other.fail(2)
    failures[other].add(1, {"circuit_breaker.name": "b"})
    mine = Publisher(directory, me.readings)
    mine.publish()
    Publisher(directory, other.readings).publish()
    host.combine()
    me.fail(4)  # after the publication the master combined: only this worker's fresh readings have these
    failures[me].add(-3, {"circuit_breaker.name": "b"})
    reader = HostReadings(directory, me.readings, own_file=mine.file, versions=mine.versions)
    snap = reader.snapshot()
    assert errors(snap) == 3 + 4 + 2
    assert snap.value(semconv.METRIC_CIRCUIT_BREAKER_CONSECUTIVE_FAILURES) == 2  # max(2 fresh, 1), not the old 5
    assert snap.workers == 2
    assert reader.workers() == 2


def test_every_host_interval_follows_from_the_publish_interval() -> None:
    """The relations the worker and the master rely on (otel_reliability.host's design note)."""
    p = timing.PUBLISH_INTERVAL
    assert p > timing.COMBINE_INTERVAL  # a publication is combined before the next one
    assert timing.OTHERS_TTL < timing.COMBINE_INTERVAL  # a steady poller sees every combination
    assert timing.OTHERS_MAX_AGE > timing.OTHERS_TTL  # a window where the call serves its copy
    assert p < timing.OWN_MAX_AGE  # the publisher refreshes this worker's collection before a call needs to
    assert timing.VERSIONS * p > 4 * timing.COMBINE_INTERVAL  # the combined publication is still kept
    assert p + timing.COMBINE_INTERVAL + timing.OTHERS_MAX_AGE == pytest.approx(1.45)  # the README's bound


def test_a_background_re_read_of_the_other_workers_runs_on_the_publishers_thread(
    host: HostAggregator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An event wakes the publisher's thread; no thread is started per read."""
    directory = store.Directory(host.path)
    me = Worker("me")
    publisher = Publisher(directory, me.readings, interval=3600.0)  # publishes only when told to
    publisher.publish()
    reader = HostReadings(directory, me.readings, publisher.file, publisher.versions, refresh=publisher.wake)
    publisher.when_woken = reader.refresh_others
    publisher.start_thread()
    host.combine()
    reader.snapshot()
    readers: list[str] = []
    real = directory.combined
    monkeypatch.setattr(directory, "combined", lambda: (readers.append(threading.current_thread().name), real())[1])
    reader._asked_at = float("-inf")  # health not asked lately: the publisher is not combining ahead
    reader._others_at = time.monotonic() - (timing.OTHERS_TTL + timing.OTHERS_MAX_AGE) / 2  # old, still servable
    threads = threading.active_count()
    reader.snapshot()
    deadline = time.monotonic() + 5
    while not readers and time.monotonic() < deadline:
        time.sleep(0.01)
    assert readers == ["otel-reliability-publish"]
    assert threading.active_count() == threads
