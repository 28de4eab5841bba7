"""The Readings: the same meter readings the exporters see, and exact windows from periodic snapshots."""

from __future__ import annotations

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from otel_reliability.readings import Readings


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make(clock: FakeClock) -> tuple[Readings, MeterProvider]:
    readings = Readings(background=False, clock=clock, cache_seconds=0.0, retention=400)
    provider = MeterProvider(metric_readers=[readings])
    return readings, provider


def test_snapshot_equals_what_another_reader_sees() -> None:
    clock = FakeClock()
    readings = Readings(background=False, clock=clock, cache_seconds=0.0)
    other = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[readings, other])
    counter = provider.get_meter("t").create_counter("jobs.done")
    counter.add(3, {"kind": "a"})
    counter.add(4, {"kind": "b"})
    data = other.get_metrics_data()
    assert data is not None
    seen = {
        tuple(p.attributes.items()): p.value
        for rm in data.resource_metrics
        for sm in rm.scope_metrics
        for m in sm.metrics
        for p in m.data.data_points
    }
    snap = readings.snapshot()
    assert {tuple(p.attributes.items()): p.value for p in snap.points("jobs.done")} == seen
    assert snap.total("jobs.done") == 7 and snap.value("jobs.done", {"kind": "b"}) == 4


def test_window_is_exact_beyond_a_thousand_events() -> None:
    clock = FakeClock()
    readings, provider = make(clock)
    hist = provider.get_meter("t").create_histogram("http.server.request.duration", unit="s")
    readings.tick()
    for _ in range(2500):
        hist.record(0.01, {"http.response.status_code": 500})
    for _ in range(7000):
        hist.record(0.01, {"http.response.status_code": 200})
    clock.now += 5
    window = readings.window(300)
    assert window.value("http.server.request.duration", {"http.response.status_code": 500}) == 2500
    assert window.value("http.server.request.duration", {"http.response.status_code": 200}) == 7000


def test_old_events_leave_the_window() -> None:
    clock = FakeClock()
    readings, provider = make(clock)
    counter = provider.get_meter("t").create_counter("errors")
    counter.add(10)
    for _ in range(70):  # 350 s of snapshots every 5 s
        readings.tick()
        clock.now += 5
    counter.add(2)
    window = readings.window(300)
    assert window.total("errors") == 2
    assert 300 <= window.covered <= 305
    for _ in range(80):  # the sampler keeps ticking while nothing happens
        clock.now += 5
        readings.tick()
    assert readings.window(300).total("errors") == 0


def test_young_process_window_counts_everything_since_start() -> None:
    clock = FakeClock()
    readings, provider = make(clock)
    counter = provider.get_meter("t").create_counter("errors")
    counter.add(5)
    clock.now += 30
    window = readings.window(300)
    assert window.total("errors") == 5 and window.covered == 30


def test_history_memory_is_bounded_by_time_not_traffic() -> None:
    clock = FakeClock()
    readings, provider = make(clock)
    counter = provider.get_meter("t").create_counter("requests")
    for _ in range(500):
        counter.add(1000)
        readings.tick()
        clock.now += 5
    # retention 400 s / 5 s per snapshot (+ the base entry), and the coarse tier beyond it (the status page's
    # sparkline): one entry per 30 s up to 960 s
    assert len(readings._history.entries) <= 400 / 5 + 2 + 960 / 30 + 1
    assert readings._history.entries[0][0] >= clock.now - 5 - 960 - 30


def test_the_history_reaches_15_minutes_back_for_the_sparkline() -> None:
    """Windows up to 15 minutes start within one coarse step (30 s) of their start, beyond the retention."""
    clock = FakeClock()
    readings, provider = make(clock)
    counter = provider.get_meter("t").create_counter("requests")
    for _ in range(1000):  # 1000 s, one request per second
        counter.add(1)
        readings.tick()
        clock.now += 1
    for seconds in (60.0, 300.0, 600.0, 900.0):
        window = readings.window(seconds)
        assert seconds <= window.covered + 30 and window.covered <= seconds
        assert abs(window.total("requests") - window.covered) <= 30 + 1


def test_snapshot_is_cached_for_a_burst() -> None:
    clock = FakeClock()
    readings = Readings(background=False, clock=clock, cache_seconds=0.5)
    provider = MeterProvider(metric_readers=[readings])
    calls = []
    provider.get_meter("t").create_observable_gauge("g", callbacks=[lambda _o: calls.append(1) or []])
    first = readings.snapshot()
    assert readings.snapshot() is first and len(calls) == 1
    clock.now += 1
    assert readings.snapshot() is not first and len(calls) == 2


def test_gauges_are_not_windowed() -> None:
    clock = FakeClock()
    readings, provider = make(clock)
    up_down = provider.get_meter("t").create_up_down_counter("in.flight")
    up_down.add(3)
    readings.tick()
    clock.now += 10
    assert readings.window(5).points("in.flight") == ()
    assert readings.snapshot().total("in.flight") == 3


def test_refresh_ahead_serves_a_young_snapshot_and_refreshes_in_the_background() -> None:
    import threading
    import time

    clock = FakeClock()
    readings = Readings(background=True, clock=clock, cache_seconds=1.0)
    provider = MeterProvider(metric_readers=[readings])
    collected = threading.Event()
    calls: list[int] = []

    def observe(_options: object) -> list[object]:
        calls.append(1)
        collected.set()
        return []

    provider.get_meter("t").create_observable_gauge("g", callbacks=[observe])
    first = readings.snapshot()
    collected.clear()
    clock.now += 0.8  # past 3/4 of the age limit, still within it
    assert readings.snapshot() is first  # served at once, not collected on this call...
    assert collected.wait(5)  # ...but refreshed in the background
    deadline = time.monotonic() + 5
    while readings._latest is first and time.monotonic() < deadline:
        time.sleep(0.01)
    assert readings.snapshot() is not first
    clock.now += 5  # too old: the caller collects itself
    before = len(calls)
    readings.snapshot()
    assert len(calls) == before + 1
    readings.shutdown()


def test_steady_health_traffic_replaces_the_periodic_snapshots_instead_of_adding_to_them() -> None:
    """Background collections are what a health request may wait behind: a refresh asked for by health traffic
    also serves as the history entry, so polling adds no collection to the periodic ones."""
    import time

    from opentelemetry.metrics import CallbackOptions, Observation

    collections = 0

    def count(options: CallbackOptions) -> list[Observation]:
        nonlocal collections
        collections += 1
        return []

    readings = Readings(snapshot_interval=1.0, cache_seconds=1.0, retention=60)
    provider = MeterProvider(metric_readers=[readings])
    provider.get_meter("t").create_observable_gauge("collections", [count])
    try:
        readings.snapshot()
        started = time.monotonic()
        while time.monotonic() - started < 4.2:  # health calls every 20 ms
            readings.snapshot()
            time.sleep(0.02)
        # a refresh every ~0.75-0.8 s (3/4 of the cache time) and nothing else: about 6 collections in 4.2 s, where
        # refreshes plus separate periodic snapshots were 9-10
        assert collections <= 7, collections
        assert len(readings._history.entries) >= 3  # the history still has an entry per interval
    finally:
        readings.shutdown()
        provider.shutdown()


def test_a_background_collection_lets_a_waiting_thread_run_between_data_points() -> None:
    """With a switch interval of 1 s, a thread waiting for the interpreter would wait for the whole collection;
    inside yielding_to_requests() it runs at the next pause point."""
    import sys
    import threading
    import time

    from otel_reliability import gil

    # A collection of 0.5 s, shorter than the switch interval: without pause points the waiting thread could only
    # run after it; with them it has ~1000 slices to be scheduled in, however the OS orders the two threads.
    progress = 0
    total = 0
    started = threading.Event()
    seen_at: list[int] = []

    def collect() -> None:
        nonlocal progress, total
        with gil.yielding_to_requests():
            started.set()
            deadline = time.perf_counter() + 0.5
            while time.perf_counter() < deadline:
                progress += 1
                gil.pause_point()
            total = progress

    def waiting() -> None:
        started.wait()
        seen_at.append(progress)

    previous = sys.getswitchinterval()
    sys.setswitchinterval(1.0)
    try:
        threads = [threading.Thread(target=waiting), threading.Thread(target=collect)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(previous)
    assert seen_at and seen_at[0] < total, "the waiting thread ran only after the whole collection"


def test_a_sporadic_caller_finds_a_usable_collection_without_collecting_itself() -> None:
    """A load balancer or a probe asks now and then: the background thread collects again before the last
    collection is older than the cache time, so such a caller never pays a collection on its own thread."""
    import threading
    import time

    from opentelemetry.metrics import CallbackOptions, Observation

    on_caller: list[str] = []
    caller = threading.current_thread()

    def count(options: CallbackOptions) -> list[Observation]:
        if threading.current_thread() is caller:
            on_caller.append("collected")
        return []

    readings = Readings(snapshot_interval=1.0, cache_seconds=0.5, retention=60)  # cache shorter than the interval
    provider = MeterProvider(metric_readers=[readings])
    provider.get_meter("t").create_observable_gauge("collections", [count])
    try:
        readings.snapshot()  # the first collection (nothing to reuse yet)
        on_caller.clear()
        for pause in (1.3, 0.7, 2.1, 0.9, 0.6):  # silences shorter and longer than the cache time
            time.sleep(pause)
            readings.snapshot()
        assert on_caller == []
    finally:
        readings.shutdown()
        provider.shutdown()
