"""Mounts the health routes on every FastAPI app created after instrumentation (``reliability_health``).

Usage: nothing; ``opentelemetry-instrument uvicorn app:app`` loads it. ``OTEL_RELIABILITY_AUTO_MOUNT=false``
or ``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=reliability_health`` switches it off; ``otel_reliability.configure(
app=app)`` mounts explicitly.

The routes are mounted after each app's ``__init__``, through the package's one FastAPI patch
(``instrumentation/fastapi_app.py``: on the base class, so it also runs for the subclass that upstream's FastAPI
instrumentor substitutes, whatever order the instrumentors load in).

It lives in health/, not instrumentation/, because what it installs is the health views: an instrumentor
package that imported the health floor would make the import graph point up (tests/test_architecture.py).
"""

from __future__ import annotations

import sys
from collections.abc import Collection
from typing import Any

from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]

from otel_reliability import config
from otel_reliability.instrumentation import fastapi_app, on_import

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
            fastapi_app.remove(_MOUNT)


def _patch(_fastapi: Any) -> None:
    fastapi_app.add(_MOUNT)


def _mount_after_init(app: Any, _: Any) -> None:
    from otel_reliability.health.fastapi import mount

    mount(app)


_MOUNT = fastapi_app.Hook(fastapi_app.INIT, after=_mount_after_init)
