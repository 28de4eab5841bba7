"""reliability_process: gauges that match /proc, a forked child that reports itself, the resources view."""

from __future__ import annotations

import importlib.machinery
import json
import os
import sys
import time
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from opentelemetry.metrics import Observation
from opentelemetry.sdk.metrics import MeterProvider

from otel_reliability import config
from otel_reliability.health.model import CheckContext, Status
from otel_reliability.health.views import resources
from otel_reliability.instrumentation import process
from otel_reliability.instrumentation.process import ProcessInstrumentor, ProcessSampler
from otel_reliability.readings import Readings

NAMES = (
    process.CPU_UTILIZATION,
    process.MEMORY_USAGE,
    process.MEMORY_LIMIT,
    process.FD_COUNT,
    process.THREAD_COUNT,
)


def vm_rss(pid: int | str = "self") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


@pytest.fixture
def instrumented() -> Iterator[Readings]:
    reader = Readings(background=False, cache_seconds=0.0)
    provider = MeterProvider(metric_readers=[reader])
    ProcessInstrumentor().instrument(meter_provider=provider)
    yield reader
    ProcessInstrumentor().uninstrument()
    provider.shutdown()


def test_every_gauge_is_reported(instrumented: Readings) -> None:
    snap = instrumented.snapshot()
    for name in NAMES:
        assert snap.value(name) is not None, name
    assert snap.value(process.THREAD_COUNT) >= 1  # type: ignore[operator]
    assert snap.value(process.FD_COUNT) == pytest.approx(len(os.listdir("/proc/self/fd")), abs=2)
    assert snap.value(process.THREAD_COUNT) == pytest.approx(len(os.listdir("/proc/self/task")), abs=1)


def test_rss_is_within_10_percent_of_proc_vmrss(instrumented: Readings) -> None:
    ballast = bytearray(30 * 1024 * 1024)  # make RSS clearly non-trivial
    ballast[::4096] = b"x" * len(ballast[::4096])
    reported = instrumented.snapshot().value(process.MEMORY_USAGE)
    actual = vm_rss()
    assert reported == pytest.approx(actual, rel=0.10)
    del ballast


def test_forked_child_reports_its_own_memory(instrumented: Readings) -> None:
    parent_rss = instrumented.snapshot().value(process.MEMORY_USAGE)  # the sampler now holds the parent's pid
    assert parent_rss is not None
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: allocate 50 MB, then read the inherited instruments
        try:
            os.close(read_fd)
            before = instrumented.snapshot(max_age=0).value(process.MEMORY_USAGE)
            ballast = bytearray(50 * 1024 * 1024)
            ballast[::4096] = b"x" * len(ballast[::4096])
            reported = instrumented.snapshot(max_age=0).value(process.MEMORY_USAGE)
            report = {"before": before, "reported": reported, "vmrss": vm_rss(), "pid": os.getpid()}
            os.write(write_fd, json.dumps(report).encode())
        finally:
            os._exit(0)
    os.close(write_fd)
    with os.fdopen(read_fd) as pipe:
        child = json.loads(pipe.read())
    os.waitpid(pid, 0)
    assert child["pid"] == pid
    assert child["reported"] == pytest.approx(child["vmrss"], rel=0.10)  # the child's own pid, not the parent's
    # The reading follows the child's own allocation (a parent's frozen psutil.Process would not move; and the
    # child's RSS is not comparable with the parent's: file-backed pages are not mapped into a child at fork).
    assert child["reported"] - child["before"] > 40 * 1024 * 1024
    assert instrumented.snapshot().value(process.MEMORY_USAGE) == pytest.approx(vm_rss(), rel=0.10)


def test_cpu_utilization_is_the_delta_since_the_last_reading_and_does_not_block() -> None:
    sampler = ProcessSampler()
    sampler.cpu_utilization()  # reference reading
    cpu_start, wall_start = time.process_time(), time.monotonic()
    while time.monotonic() - wall_start < 1.2:  # burn CPU in this thread
        pass
    started = time.perf_counter()
    value = sampler.cpu_utilization()
    took = time.perf_counter() - started
    expected = (time.process_time() - cpu_start) / (time.monotonic() - wall_start) / sampler.cpus()
    assert took < 0.05  # never cpu_percent(interval=1)
    assert value == pytest.approx(expected, abs=0.05)
    # One thread spun: about one CPU's worth, whatever the CPU count (a bare "> 0.1" fails with 16 CPUs). A
    # quarter of a CPU at least, even on a machine shared with other runs.
    assert value * sampler.cpus() > 0.25
    # an immediate second reading (another reader collecting) measures against the same >= 1 s old reference
    assert sampler.cpu_utilization() == pytest.approx(value, abs=0.05)


def test_first_cpu_reading_measures_since_process_start() -> None:
    """Before any reference reading, the average since the process started: CPU seconds / age / CPUs."""
    wall_start = time.monotonic()
    while time.monotonic() - wall_start < 0.3:  # this process has certainly used CPU since it started
        pass
    me = psutil.Process()
    sampler = ProcessSampler()
    cpu = me.cpu_times()
    expected = (cpu.user + cpu.system) / (time.time() - me.create_time()) / sampler.cpus()
    value = sampler.cpu_utilization()
    assert value > 0.0
    assert value == pytest.approx(expected, rel=0.2, abs=0.01)


def test_uninstrument_stops_reporting_and_reinstrument_resumes() -> None:
    reader = Readings(background=False, cache_seconds=0.0)
    provider = MeterProvider(metric_readers=[reader])
    ProcessInstrumentor().instrument(meter_provider=provider)
    assert reader.snapshot().value(process.MEMORY_USAGE) is not None
    ProcessInstrumentor().uninstrument()
    assert reader.snapshot().value(process.MEMORY_USAGE) is None
    ProcessInstrumentor().instrument(meter_provider=provider)
    assert reader.snapshot().value(process.MEMORY_USAGE) is not None
    ProcessInstrumentor().uninstrument()
    provider.shutdown()


def test_exclusion_variable_for_upstream_keeps_the_users_patterns() -> None:
    env = {process.UPSTREAM_EXCLUDED_VARIABLE: "system.network.*"}
    value = process.exclude_from_upstream(env)
    assert value.split(",") == ["system.network.*", *process.UPSTREAM_OVERLAP]
    assert process.exclude_from_upstream(env) == value  # idempotent
    assert process.exclude_from_upstream({}).split(",") == list(process.UPSTREAM_OVERLAP)


@pytest.fixture
def fake_upstream(monkeypatch: pytest.MonkeyPatch) -> types.SimpleNamespace:
    """An already-instrumented upstream SystemMetricsInstrumentor emitting process.cpu.utilization."""
    name = "opentelemetry.instrumentation.system_metrics"
    module = types.ModuleType(name)
    module.__spec__ = importlib.machinery.ModuleSpec(name, None)

    class SystemMetricsInstrumentor:
        _instance: Any = None

    instance = types.SimpleNamespace(
        _is_instrumented_by_opentelemetry=True, _config={"process.cpu.utilization": None, "system.cpu.time": []}
    )
    SystemMetricsInstrumentor._instance = instance
    module.SystemMetricsInstrumentor = SystemMetricsInstrumentor  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.delenv(process.UPSTREAM_EXCLUDED_VARIABLE, raising=False)
    return instance


def test_names_upstream_already_emits_are_skipped(
    fake_upstream: types.SimpleNamespace, caplog: pytest.LogCaptureFixture
) -> None:
    reader = Readings(background=False, cache_seconds=0.0)
    provider = MeterProvider(metric_readers=[reader])
    ProcessInstrumentor().instrument(meter_provider=provider)
    try:
        snap = reader.snapshot()
        assert snap.value(process.CPU_UTILIZATION) is None
        assert snap.value(process.MEMORY_USAGE) is not None
        assert "skips them" in caplog.text
        assert os.environ[process.UPSTREAM_EXCLUDED_VARIABLE].split(",") == list(process.UPSTREAM_OVERLAP)
    finally:
        ProcessInstrumentor().uninstrument()
        provider.shutdown()


# --- the resources view ------------------------------------------------------------------------------
def fixed_readings(values: dict[str, float]) -> tuple[Readings, MeterProvider]:
    reader = Readings(background=False, cache_seconds=0.0)
    provider = MeterProvider(metric_readers=[reader])
    meter = provider.get_meter("fixture")
    for name, value in values.items():
        meter.create_observable_gauge(name, callbacks=[lambda _o, v=value: [Observation(v)]])
    return reader, provider


MB = 1024 * 1024


def test_resources_view_shape_and_healthy() -> None:
    reader, provider = fixed_readings(
        {
            process.MEMORY_USAGE: 256 * MB,
            process.MEMORY_LIMIT: 1024 * MB,
            process.CPU_UTILIZATION: 0.125,
            process.FD_COUNT: 12,
            process.THREAD_COUNT: 7,
        }
    )
    result = resources.compute(CheckContext(reader, config.load({})))
    body = dict(result.body)
    assert result.status is Status.HEALTHY
    assert body["memory_mb"] == 256.0 and body["memory_limit_mb"] == 1024.0 and body["memory_percent"] == 25.0
    assert body["cpu_percent"] == 12.5 and body["open_files"] == 12 and body["threads"] == 7
    assert body["warnings"] == []
    provider.shutdown()


def test_resources_view_warns_near_the_limits() -> None:
    import resource as rlimit

    soft, _ = rlimit.getrlimit(rlimit.RLIMIT_NOFILE)
    reader, provider = fixed_readings(
        {
            process.MEMORY_USAGE: 950 * MB,
            process.MEMORY_LIMIT: 1000 * MB,
            process.CPU_UTILIZATION: 0.5,
            process.FD_COUNT: int(soft * 0.85),
            process.THREAD_COUNT: 7,
        }
    )
    settings = config.load({"OTEL_RELIABILITY_CPU_WARN_PERCENT": "40"})
    result = resources.compute(CheckContext(reader, settings))
    warned = {w["resource"] for w in result.body["warnings"]}
    assert result.status is Status.DEGRADED
    assert warned == {"memory", "cpu", "open_files"}
    assert result.output and "memory (RSS) of the limit at 95%" in result.output
    provider.shutdown()


def test_resources_view_without_the_instrumentor_says_so() -> None:
    reader, provider = fixed_readings({})
    result = resources.compute(CheckContext(reader, config.load({})))
    assert result.status is Status.HEALTHY and result.body["available"] is False
    provider.shutdown()


def test_resources_view_answers_in_milliseconds(instrumented: Readings) -> None:
    ctx = CheckContext(instrumented, config.load({}))
    resources.compute(ctx)
    started = time.perf_counter()
    for _ in range(20):
        body = resources.compute(ctx).body
    per_call = (time.perf_counter() - started) / 20
    assert body["memory_mb"] > 0 and body["threads"] >= 1
    assert per_call < 0.02, f"{per_call * 1000:.1f} ms per call"
