"""otel-reliability: reliability signals (breakers, error rate, pools, resources, stuck jobs) as OpenTelemetry
metrics, and health endpoints computed from the same readings.

Zero-code: ``opentelemetry-instrument uvicorn app:app``. The public API below is for what cannot be
discovered automatically. Names resolve lazily, so importing the package imports no optional library.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from otel_reliability.version import __version__

_PUBLIC = {
    "configure": "otel_reliability.configurator",
    "ConfigError": "otel_reliability.config",
    "register_breaker": "otel_reliability.instrumentation.breakers",
    "track_operation": "otel_reliability.instrumentation.operations",
    "register_stuck_detector": "otel_reliability.instrumentation.stuck",
    "run_in_transaction": "otel_reliability.db.transactions",
    "run_in_transaction_async": "otel_reliability.db.transactions",
    "temp_file": "otel_reliability.instrumentation.tempfiles",
}

__all__ = [*_PUBLIC, "__version__"]

if TYPE_CHECKING:
    from otel_reliability.config import ConfigError as ConfigError
    from otel_reliability.configurator import configure as configure


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'otel_reliability' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
