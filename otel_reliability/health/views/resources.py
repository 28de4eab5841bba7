"""``GET /api/health/resources``: this process's memory, CPU, file descriptors and threads, near their limits?

Its fields (memory_mb, memory_percent, cpu_percent, open_files, threads) are read from the gauges of
``reliability_process`` in the Readings, so it answers in milliseconds (no ``cpu_percent(interval=1)``)
and equals what Prometheus scraped. Each is measured against the limit that really applies:

- memory_percent is RSS over the memory this process may use (the cgroup limit in a container, else
  physical memory), not over the host's memory: a container at 95% of its limit is about to be OOM-killed
  even when the host is 10% full. memory_limit_mb says which limit.
- cpu_percent is the percent of the CPUs this process may use (cgroup quota and affinity), measured since
  an earlier reading; 100 means the quota is used up.
- open_files counts every file descriptor (sockets and pipes too: they exhaust the same limit), compared
  with the soft RLIMIT_NOFILE of this process (open_files_limit).

Under a prefork server (otel_reliability/host/) the figures are host totals: RSS, CPU, open files and threads
summed over the live workers, memory_percent against the limit they share (the container's), and
``per_worker`` lists each worker's figures; open_files_percent is the worst worker's (the limit is per process).

Warnings (status *degraded*, listed in ``warnings``) when memory_percent >= OTEL_RELIABILITY_MEMORY_WARN_PERCENT
(default 90), cpu_percent >= OTEL_RELIABILITY_CPU_WARN_PERCENT (default 90) or open_files is at least
OTEL_RELIABILITY_FD_WARN_PERCENT (default 80) percent of the soft limit. With ``reliability_process``
disabled there is nothing to judge: the view says so and stays healthy.
"""

from __future__ import annotations

import resource
from typing import Any

from otel_reliability import semconv
from otel_reliability.health.model import CheckContext, HealthRegistry, HealthView, Status, ViewResult
from otel_reliability.readings import Snapshot

CPU_UTILIZATION = semconv.METRIC_PROCESS_CPU_UTILIZATION
MEMORY_USAGE = semconv.METRIC_PROCESS_MEMORY_USAGE
MEMORY_LIMIT = semconv.METRIC_PROCESS_MEMORY_LIMIT
FD_COUNT = semconv.METRIC_PROCESS_UNIX_FILE_DESCRIPTOR_COUNT
THREAD_COUNT = semconv.METRIC_PROCESS_THREAD_COUNT
_MB = 1024 * 1024


def _fd_soft_limit() -> int | None:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return None if soft == resource.RLIM_INFINITY else int(soft)


def compute(ctx: CheckContext) -> ViewResult:
    snap = ctx.readings.snapshot()
    rss = snap.value(MEMORY_USAGE)
    limit = snap.value(MEMORY_LIMIT)
    utilization = snap.value(CPU_UTILIZATION)
    fds = snap.value(FD_COUNT)
    threads = snap.value(THREAD_COUNT)
    if rss is None and utilization is None and fds is None:
        note = "no process metrics: the reliability_process instrumentor is not active in this process"
        return ViewResult(Status.HEALTHY, body={"available": False, "note": note}, summary={"available": False},
                          output=note)  # fmt: skip

    settings = ctx.settings
    memory_percent = round(100.0 * rss / limit, 2) if rss is not None and limit else None
    cpu_percent = round(100.0 * utilization, 2) if utilization is not None else None
    fd_limit = _fd_soft_limit()
    fd_percent = round(100.0 * fds / fd_limit, 2) if fds is not None and fd_limit else None

    warnings: list[dict[str, Any]] = []

    def check(resource_name: str, percent: float | None, threshold: float, what: str) -> None:
        if percent is not None and percent >= threshold:
            warnings.append(
                {
                    "resource": resource_name,
                    "percent": percent,
                    "threshold_percent": threshold,
                    "message": f"{what} at {percent:g}% (warn at {threshold:g}%)",
                }
            )

    check("memory", memory_percent, settings.memory_warn_percent, "memory (RSS) of the limit")
    check("cpu", cpu_percent, settings.cpu_warn_percent, "CPU of the CPUs this process may use")
    check("open_files", fd_percent, settings.fd_warn_percent, "file descriptors of the soft limit")

    per_worker = getattr(snap, "per_worker", ())
    if len(per_worker) > 1:
        # A prefork host: the figures above are host totals (RSS and CPU of every worker against the limit
        # they share); file descriptors are limited per process, so the worst worker is the one judged.
        workers = [_worker(instance, worker, fd_limit) for instance, worker in per_worker]
        fd_percent = max((w["open_files_percent"] for w in workers if w["open_files_percent"] is not None),
                         default=None)  # fmt: skip
        warnings = [w for w in warnings if w["resource"] != "open_files"]
        check("open_files", fd_percent, settings.fd_warn_percent, "file descriptors of the soft limit (worst worker)")
    body: dict[str, Any] = {
        "memory_mb": round(rss / _MB, 2) if rss is not None else None,
        "memory_percent": memory_percent,
        "memory_limit_mb": round(limit / _MB, 2) if limit is not None else None,
        "cpu_percent": cpu_percent,
        "open_files": int(fds) if fds is not None else None,
        "open_files_limit": fd_limit,
        "open_files_percent": fd_percent,
        "threads": int(threads) if threads is not None else None,
        "warnings": warnings,
    }
    if len(per_worker) > 1:
        body["scope"] = "host"
        body["per_worker"] = workers
    summary = {"memory_percent": memory_percent, "cpu_percent": cpu_percent, "warnings": len(warnings)}
    return ViewResult(
        status=Status.DEGRADED if warnings else Status.HEALTHY,
        body=body,
        summary=summary,
        observed=(memory_percent, "percent") if memory_percent is not None else None,
        output="; ".join(w["message"] for w in warnings) or None,
    )


def _worker(instance: str | None, snap: Snapshot, fd_limit: int | None) -> dict[str, Any]:
    rss, utilization, fds, threads = (snap.value(n) for n in (MEMORY_USAGE, CPU_UTILIZATION, FD_COUNT, THREAD_COUNT))
    return {
        "instance_id": instance,
        "memory_mb": round(rss / _MB, 2) if rss is not None else None,
        "cpu_percent": round(100.0 * utilization, 2) if utilization is not None else None,
        "open_files": int(fds) if fds is not None else None,
        "open_files_percent": round(100.0 * fds / fd_limit, 2) if fds is not None and fd_limit else None,
        "threads": int(threads) if threads is not None else None,
    }


def register(registry: HealthRegistry) -> None:
    """Add the resources view."""
    registry.add_view(HealthView(name="resources", compute=compute, component_type="system"))
