"""The built-in health views and admin actions, registered once when the routes are first mounted."""

from __future__ import annotations

import importlib
import threading

from otel_reliability.health.model import HEALTH_ENDPOINTS, HealthRegistry

# Each module has ``register(registry: HealthRegistry) -> None``; order is the order in /api/health.
VIEW_MODULES: tuple[str, ...] = (
    "otel_reliability.health.views.breakers",
    "otel_reliability.health.views.error_rate",
    "otel_reliability.health.views.pool",
    "otel_reliability.health.views.db_timeout",
    "otel_reliability.health.views.resources",
    "otel_reliability.health.views.operations",
)

_done = False
_lock = threading.Lock()


def register_all(registry: HealthRegistry = HEALTH_ENDPOINTS) -> None:
    global _done
    with _lock:
        if _done:
            return
        for name in VIEW_MODULES:
            importlib.import_module(name).register(registry)
        _done = True
