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

import importlib.util
from collections.abc import Collection
from typing import Any

from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]

from otel_reliability import config

_ORIGINAL = "_otel_reliability_original_init"


class HealthMountInstrumentor(BaseInstrumentor):
    def instrumentation_dependencies(self) -> Collection[str]:
        return ()

    def _instrument(self, **kwargs: Any) -> None:
        if not config.settings().auto_mount or importlib.util.find_spec("fastapi") is None:
            return
        from fastapi import applications

        cls = applications.FastAPI
        if hasattr(cls, _ORIGINAL):
            return
        original = cls.__init__

        def __init__(self: Any, *args: Any, **kw: Any) -> None:
            original(self, *args, **kw)
            from otel_reliability.health.fastapi import mount

            mount(self)

        setattr(cls, _ORIGINAL, original)
        cls.__init__ = __init__  # type: ignore[method-assign]

    def _uninstrument(self, **kwargs: Any) -> None:
        if importlib.util.find_spec("fastapi") is None:
            return
        from fastapi import applications

        cls = applications.FastAPI
        original = cls.__dict__.get(_ORIGINAL)
        if original is not None:
            cls.__init__ = original  # type: ignore[method-assign]
            delattr(cls, _ORIGINAL)
