"""The health model: views computed from the Readings, their statuses, and how they aggregate.

A *view* is one health endpoint (``/api/health/<name>``) and one component of the aggregate ``/api/health``.
It is a function of the current Readings and the settings; it never reads an instrumentor's private state.
Running a view is guarded: a view that raises or exceeds its timeout becomes a failed component with a
short reason, never a 500 and never a traceback in a response.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any

from otel_reliability import threads
from otel_reliability.config import Settings
from otel_reliability.readings import Readings

if TYPE_CHECKING:
    from otel_reliability.host.worker import HostReadings

_logger = logging.getLogger(__name__)


class Status(str, Enum):
    """Component and service status, ordered from best to worst."""

    HEALTHY = "healthy"
    DEGRADED = "degraded"
    UNHEALTHY = "unhealthy"

    @property
    def severity(self) -> int:
        return _SEVERITY[self]

    @property
    def health_json(self) -> str:
        """The draft-inadarei-api-health-check status word."""
        return {"healthy": "pass", "degraded": "warn", "unhealthy": "fail"}[self.value]

    @staticmethod
    def worst(statuses: list[Status]) -> Status:
        return max(statuses, key=lambda s: s.severity, default=Status.HEALTHY)


_SEVERITY = {Status.HEALTHY: 0, Status.DEGRADED: 1, Status.UNHEALTHY: 2}


@dataclass(frozen=True)
class CheckContext:
    """What a view reads: this process's Readings, or in a prefork worker the host's (same interface)."""

    readings: Readings | HostReadings
    settings: Settings


@dataclass(frozen=True)
class ViewResult:
    """What a view computed.

    ``body`` is the detail endpoint's JSON (``status`` is added); ``summary`` is what the aggregate shows for
    this component; ``observed`` is (value, unit) for the health+json format; ``output`` a short reason.
    """

    status: Status
    body: Mapping[str, Any] = field(default_factory=dict)
    summary: Mapping[str, Any] = field(default_factory=dict)
    observed: tuple[float, str] | None = None
    output: str | None = None


@dataclass(frozen=True)
class HealthView:
    """One health endpoint and aggregate component.

    protected: details need the health token (the aggregate then shows only the status without it).
    readiness: an unhealthy status makes ``/ready`` answer 503.
    """

    name: str
    compute: Callable[[CheckContext], ViewResult]
    protected: bool = False
    readiness: bool = False
    component_type: str = "component"


@dataclass(frozen=True)
class AdminAction:
    """An admin endpoint under OTEL_RELIABILITY_ADMIN_PATH, always behind the admin token."""

    path: str
    method: str
    handle: Callable[[CheckContext, Mapping[str, str]], Mapping[str, Any]]


class HealthRegistry:
    """The views and admin actions known to this process, in registration order."""

    def __init__(self) -> None:
        self._views: dict[str, HealthView] = {}
        self._actions: dict[tuple[str, str], AdminAction] = {}
        self._lock = threading.Lock()

    def add_view(self, view: HealthView) -> None:
        with self._lock:
            self._views[view.name] = view

    def add_action(self, action: AdminAction) -> None:
        with self._lock:
            self._actions[(action.method.upper(), action.path)] = action

    def views(self) -> list[HealthView]:
        with self._lock:
            return list(self._views.values())

    def view(self, name: str) -> HealthView | None:
        return self._views.get(name)

    def actions(self) -> list[AdminAction]:
        with self._lock:
            return list(self._actions.values())


HEALTH_ENDPOINTS = HealthRegistry()

# Views run here, not on the event loop: a slow view never blocks other requests, and a hung one only costs
# a thread of this small pool.
_EXECUTOR = concurrent.futures.ThreadPoolExecutor(
    max_workers=4, thread_name_prefix="otel-reliability-health", initializer=threads.block_in_this_thread
)


def failed(reason: str) -> ViewResult:
    return ViewResult(Status.UNHEALTHY, body={"error": reason}, summary={"error": reason}, output=reason)


def run_view(view: HealthView, ctx: CheckContext) -> ViewResult:
    """Run one view synchronously, turning any exception into a failed component."""
    try:
        return view.compute(ctx)
    except Exception as exc:  # a broken check is a failed component, never a 500
        _logger.warning("otel-reliability: health check %r failed: %s", view.name, type(exc).__name__, exc_info=True)
        return failed(f"check raised {type(exc).__name__}")


async def run_views(views: list[HealthView], ctx: CheckContext) -> dict[str, ViewResult]:
    """Run views concurrently in the health pool, each bounded by the check timeout.

    Views only read the Readings. When its snapshot is fresh they are pure computation over memory (tens of
    microseconds) and run right here: two thread hand-offs per view would cost more than the view, and on a
    busy process each hand-off waits for the GIL. Only when a collection is due do they go to the pool, where
    the timeout applies.
    """
    if ctx.readings.is_fresh():
        return {v.name: run_view(v, ctx) for v in views}
    loop = asyncio.get_running_loop()
    timeout = ctx.settings.check_timeout

    async def one(view: HealthView) -> ViewResult:
        future = loop.run_in_executor(_EXECUTOR, run_view, view, ctx)
        try:
            return await asyncio.wait_for(future, timeout)
        except asyncio.TimeoutError:
            _logger.warning("otel-reliability: health check %r timed out after %ss", view.name, timeout)
            return failed(f"check timed out after {timeout:g}s")

    results = await asyncio.gather(*(one(v) for v in views))
    return {v.name: r for v, r in zip(views, results, strict=True)}
