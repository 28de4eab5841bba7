"""Mounts the health routes on every FastAPI app created after instrumentation (``reliability_health``).

Usage: nothing; ``opentelemetry-instrument uvicorn app:app`` loads it. ``OTEL_RELIABILITY_AUTO_MOUNT=false``
or ``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=reliability_health`` switches it off; ``otel_reliability.configure(
app=app)`` mounts explicitly.

The wrapper sits on ``fastapi.applications.FastAPI.__init__`` (the base class), so it also runs for the
subclass that upstream's FastAPI instrumentor substitutes, whatever order the instrumentors load in.

It lives in health/, not instrumentation/, because what it installs is the health views: an instrumentor
package that imported the health floor would make the import graph point up (tests/test_architecture.py).
"""

from __future__ import annotations

import sys
from collections.abc import Collection
from typing import Any

from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]
from opentelemetry.instrumentation.utils import unwrap

from otel_reliability import config
from otel_reliability.instrumentation import on_import

_instruments = ("fastapi >= 0.110",)
"""The framework whose apps get the health routes (the contrib convention: instrument() skips it when absent)."""


class HealthMountInstrumentor(BaseInstrumentor):
    def instrumentation_dependencies(self) -> Collection[str]:
        return _instruments

    def _instrument(self, **kwargs: Any) -> None:
        settings = kwargs.get("settings") or config.settings()
        if settings.auto_mount:
            # FastAPI is patched when the program imports it: a program that never does pays nothing for it.
            self._pending = on_import.when_imported("fastapi", _patch)

    def _uninstrument(self, **kwargs: Any) -> None:
        on_import.cancel(getattr(self, "_pending", None))
        if "fastapi" in sys.modules:
            from fastapi import applications

            unwrap(applications.FastAPI, "__init__")


def _patch(_fastapi: Any) -> None:
    from fastapi import applications
    from wrapt import wrap_function_wrapper

    wrap_function_wrapper(applications, "FastAPI.__init__", _mount_after_init)


def _mount_after_init(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> None:
    wrapped(*args, **kwargs)
    from otel_reliability.health.fastapi import mount

    mount(instance)
