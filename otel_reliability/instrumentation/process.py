"""Process resources as OpenTelemetry gauges (``reliability_process``): CPU, memory, its limit, fds, threads.

Usage: nothing under ``opentelemetry-instrument`` (entry point ``reliability_process``; switch it off with
``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=reliability_process``). By hand::

    from otel_reliability.instrumentation.process import ProcessInstrumentor
    ProcessInstrumentor().instrument(meter_provider=provider)   # provider optional: the global one

Instruments (meter ``otel_reliability.process``; Prometheus names as the direct exporter shows them):

=================================== ==================== ===================================================
OTel name                           unit                 meaning
=================================== ==================== ===================================================
process.cpu.utilization             "" (no unit)         CPU time used since the previous reading, as a
                                                         fraction of the CPUs this process may use
process.memory.usage                By                   resident set size (RSS)
process.memory.limit                By                   cgroup memory limit (v2 ``memory.max``, v1
                                                         ``memory.limit_in_bytes``), else physical memory
process.unix.file_descriptor.count  {file_descriptor}    open file descriptors
process.thread.count                {thread}             threads
=================================== ==================== ===================================================

Why these choices:

- *CPUs the process may use* = min(CPUs in the scheduler affinity mask, cgroup quota / period). In a
  container limited to 0.5 CPU on a 16-core host, 0.5 CPU of work is 100%, not 3% (upstream divides by the
  host's core count).
- *Non-blocking*: the value is the delta of ``cpu_times()`` since an earlier reading, never
  ``cpu_percent(interval=1)``. Several readers collect (Prometheus scrape, OTLP, the Readings every few
  seconds); a delta over a few milliseconds would be pure clock-tick noise, so the reference reading is at
  least ``MIN_CPU_INTERVAL`` seconds old (before the first one, the process start is the reference).
- *Unit*: semantic conventions give "1", but the collector's Prometheus exporter turns a gauge with unit
  "1" into ``process_cpu_utilization_ratio`` while the Python exporter shows ``process_cpu_utilization``.
  With no unit both paths show ``process_cpu_utilization`` (shared/CONTRACT.md).
- *Fork-safe*: the ``psutil.Process`` and the CPU reference are resolved against ``os.getpid()`` at every
  reading, so a gunicorn worker or any forked child reports itself. (Upstream's system-metrics
  instrumentor keeps the ``psutil.Process`` of the process that instrumented, so every forked worker
  reports its parent's memory and CPU.)

Upstream's ``opentelemetry-instrumentation-system-metrics``: when it is installed too, both would emit
``process.cpu.utilization``, ``process.memory.usage`` and ``process.thread.count`` from two meters, which
is one Prometheus metric family twice (a scrape error) and on the collector path a duplicate series.
Decision: ours keeps these names (it is fork-safe and limit-aware) and upstream keeps everything else
(``system.*``, ``process.cpu.time``, ``process.memory.virtual``, ``process.context_switches``, gc).
Upstream reads ``OTEL_PYTHON_SYSTEM_METRICS_EXCLUDED_METRICS`` when it is constructed;
``exclude_from_upstream()`` appends our names (and its deprecated ``process.open_file_descriptor.count``,
the old name of our fd gauge) to that variable, keeping the user's own patterns. The distro calls it
before instrumentors load, and ``_instrument`` calls it again for programmatic set-ups. If upstream was
already instrumented with overlapping names (its own ``config=`` or instrumented first), ours skips the
overlapping gauges and logs one warning: no duplicate series either way.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Collection, MutableMapping
from dataclasses import dataclass
from typing import Any

import psutil
from opentelemetry import metrics
from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]
from opentelemetry.metrics import CallbackOptions, Observation

from otel_reliability import semconv, upstream
from otel_reliability.instrumentation import cgroup
from otel_reliability.instrumentation._instrumented import Instrumented
from otel_reliability.version import __version__

_logger = logging.getLogger(__name__)

_instruments = ("psutil >= 5.9",)
"""The library the process figures come from (a runtime dependency, declared in the contrib way)."""

CPU_UTILIZATION = semconv.METRIC_PROCESS_CPU_UTILIZATION
MEMORY_USAGE = semconv.METRIC_PROCESS_MEMORY_USAGE
MEMORY_LIMIT = semconv.METRIC_PROCESS_MEMORY_LIMIT
FD_COUNT = semconv.METRIC_PROCESS_UNIX_FILE_DESCRIPTOR_COUNT
THREAD_COUNT = semconv.METRIC_PROCESS_THREAD_COUNT

# Upstream names that duplicate ours (same name, or the deprecated name of the same measurement).
UPSTREAM_OVERLAP = (CPU_UTILIZATION, MEMORY_USAGE, THREAD_COUNT, semconv.METRIC_PROCESS_OPEN_FILE_DESCRIPTOR_COUNT)
UPSTREAM_EXCLUDED_VARIABLE = "OTEL_PYTHON_SYSTEM_METRICS_EXCLUDED_METRICS"

MIN_CPU_INTERVAL = 1.0
"""Seconds the CPU reference reading must be older than the current one (cpu_times ticks are 10 ms)."""

_LIMIT_REFRESH = 30.0  # seconds between re-reads of the cgroup limits (they change rarely; files are cheap)


def exclude_from_upstream(env: MutableMapping[str, str] | None = None) -> str:
    """Append our process.* names to upstream system-metrics' exclusion variable; return its new value."""
    env = os.environ if env is None else env
    current = [p.strip() for p in env.get(UPSTREAM_EXCLUDED_VARIABLE, "").split(",") if p.strip()]
    merged = current + [name for name in UPSTREAM_OVERLAP if name not in current]
    env[UPSTREAM_EXCLUDED_VARIABLE] = ",".join(merged)
    return env[UPSTREAM_EXCLUDED_VARIABLE]


def _upstream_active_names() -> set[str]:
    """Our names that an already-instrumented upstream SystemMetricsInstrumentor emits (empty if none)."""
    if importlib.util.find_spec("opentelemetry.instrumentation.system_metrics") is None:
        return set()
    try:
        from opentelemetry.instrumentation.system_metrics import SystemMetricsInstrumentor
    except Exception:  # a broken optional install must not stop ours
        return set()
    return upstream.contrib.system_metrics_names(
        SystemMetricsInstrumentor, (CPU_UTILIZATION, MEMORY_USAGE, THREAD_COUNT)
    )


@dataclass(frozen=True)
class _CpuSample:
    at: float  # time.monotonic()
    cpu_seconds: float  # user + system of this process


class ProcessSampler:
    """Reads this process's resources; every method is cheap and safe to call from any collection thread.

    ``cgroup_root`` and ``clock`` exist for tests (a fixture tree, a fake clock).
    """

    def __init__(self, *, cgroup_root: str = "/", clock: Callable[[], float] = time.monotonic) -> None:
        self._cgroup_root = cgroup_root
        self._clock = clock
        self._lock = threading.Lock()
        self._pid = -1
        self._process: psutil.Process | None = None
        self._cpu_samples: deque[_CpuSample] = deque(maxlen=3)
        self._start_sample: _CpuSample | None = None
        self._limits_at = -_LIMIT_REFRESH
        self._cgroup: cgroup.Cgroup | None = None
        self._memory_limit: int = 0
        self._cpus: float = 1.0

    def process(self) -> psutil.Process:
        """The psutil handle of the *current* pid (a forked child gets its own; CPU history restarts)."""
        pid = os.getpid()
        with self._lock:
            if self._process is None or self._pid != pid:
                self._pid = pid
                self._process = psutil.Process(pid)
                self._cpu_samples.clear()
                self._start_sample = None
                self._cgroup = None
                self._limits_at = -_LIMIT_REFRESH
            return self._process

    # --- limits ---------------------------------------------------------------------------------------
    def _refresh_limits(self) -> None:
        now = self._clock()
        if now - self._limits_at < _LIMIT_REFRESH and self._cgroup is not None:
            return
        if self._cgroup is None:
            self._cgroup = cgroup.find(self._cgroup_root)
        physical = int(psutil.virtual_memory().total)
        limit = cgroup.memory_limit(self._cgroup)
        self._memory_limit = min(limit, physical) if limit is not None else physical
        try:
            allowed = float(len(os.sched_getaffinity(0)))
        except (AttributeError, OSError):
            allowed = float(psutil.cpu_count() or 1)
        quota = cgroup.cpu_limit(self._cgroup)
        self._cpus = min(allowed, quota) if quota is not None else allowed
        self._limits_at = now

    def memory_limit(self) -> int:
        """Bytes this process may use: the cgroup limit, else physical memory (whichever is smaller)."""
        self.process()
        with self._lock:
            self._refresh_limits()
            return self._memory_limit

    def cpus(self) -> float:
        """CPUs this process may use: min(affinity mask size, cgroup quota)."""
        self.process()
        with self._lock:
            self._refresh_limits()
            return self._cpus

    # --- readings ---------------------------------------------------------------------------------------
    def cpu_utilization(self) -> float:
        """CPU used since a reading at least MIN_CPU_INTERVAL old, as a fraction of the allowed CPUs."""
        process = self.process()
        times = process.cpu_times()
        cpus = self.cpus()
        with self._lock:
            now = _CpuSample(self._clock(), times.user + times.system)
            if self._start_sample is None:
                # Before any reading, measure since the process started (its cpu_times started at 0 there).
                age = max(0.0, time.time() - process.create_time())
                self._start_sample = _CpuSample(now.at - age, 0.0)
            reference = next(
                (s for s in reversed(self._cpu_samples) if now.at - s.at >= MIN_CPU_INTERVAL), self._start_sample
            )
            if not self._cpu_samples or now.at - self._cpu_samples[-1].at >= MIN_CPU_INTERVAL:
                self._cpu_samples.append(now)
        elapsed = now.at - reference.at
        if elapsed <= 0 or cpus <= 0:
            return 0.0
        return max(0.0, (now.cpu_seconds - reference.cpu_seconds) / elapsed / cpus)

    def memory_usage(self) -> int:
        return int(self.process().memory_info().rss)

    def file_descriptors(self) -> int:
        return int(self.process().num_fds())

    def threads(self) -> int:
        return int(self.process().num_threads())


class ProcessInstrumentor(BaseInstrumentor):  # type: ignore[misc]
    """Entry point ``reliability_process``. Accepts ``meter_provider=`` and ``sampler=`` (tests)."""

    def instrumentation_dependencies(self) -> Collection[str]:
        return _instruments

    def _instrument(self, **kwargs: Any) -> None:
        if importlib.util.find_spec("opentelemetry.instrumentation.system_metrics") is not None:
            exclude_from_upstream()
        skipped = _upstream_active_names()
        if skipped:
            _logger.warning(
                "otel-reliability: opentelemetry-instrumentation-system-metrics already emits %s; "
                "reliability_process skips them (they are not fork-safe nor cgroup-aware there). Set %s to "
                "exclude them upstream instead.",
                ", ".join(sorted(skipped)),
                UPSTREAM_EXCLUDED_VARIABLE,
            )
        meter = metrics.get_meter(
            "otel_reliability.process", __version__, kwargs.get("meter_provider"), semconv.SCHEMA_URL
        )
        _instrumented.start(kwargs.get("sampler") or ProcessSampler(), meter)
        # Instrumented again on the same provider: the SDK returns the instruments made the first time, with their
        # callbacks, which read the current sampler through _instrumented.
        # Kinds as semconv (v1.44) has them: usage and counts are UpDownCounters (a level that is added up over
        # processes), utilization and our limit are gauges. Prometheus shows both as gauges, same names.
        # Unit "" on utilization, not semconv's "1": the Python exporter drops "1" while the collector and
        # Prometheus 3 append `_ratio` to a gauge with unit "1"; "" gives `process_cpu_utilization` everywhere.
        updown, gauge = meter.create_observable_up_down_counter, meter.create_observable_gauge
        instruments: tuple[tuple[Callable[..., Any], str, str, str, Callable[[ProcessSampler], float]], ...] = (
            (gauge, CPU_UTILIZATION, "", "CPU time used as a fraction of the CPUs this process may use (cgroup "
             "quota and affinity aware), since the previous reading.", ProcessSampler.cpu_utilization),
            (updown, MEMORY_USAGE, semconv.UNIT_BYTES, "Resident set size.", ProcessSampler.memory_usage),
            (gauge, MEMORY_LIMIT, semconv.UNIT_BYTES, "Memory this process may use: the cgroup limit, else physical "
             "memory.", ProcessSampler.memory_limit),
            (updown, FD_COUNT, "{file_descriptor}", "Open file descriptors.", ProcessSampler.file_descriptors),
            (updown, THREAD_COUNT, "{thread}", "Threads of this process.", ProcessSampler.threads),
        )  # fmt: skip
        for create, name, unit, description, read in instruments:
            if name in skipped:
                continue
            create(name, callbacks=[_instrumented.gate(meter, _observer(read))], unit=unit, description=description)

    def _uninstrument(self, **kwargs: Any) -> None:
        # The SDK cannot remove an instrument; its callbacks report nothing while uninstrumented.
        _instrumented.stop()


_instrumented: Instrumented[ProcessSampler] = Instrumented()
"""While instrumented: the sampler the gauges read."""


def _observer(
    read: Callable[[ProcessSampler], float],
) -> Callable[[ProcessSampler, CallbackOptions], list[Observation]]:
    def observe(sampler: ProcessSampler, options: CallbackOptions) -> list[Observation]:
        try:
            return [Observation(read(sampler))]
        except (psutil.Error, OSError):
            _logger.debug("otel-reliability: reading %s failed", read.__name__, exc_info=True)
            return []

    return observe
