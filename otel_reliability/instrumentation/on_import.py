"""Patch a library when the program imports it, not before (a post-import hook).

Why: ``opentelemetry-instrument`` calls every instrumentor's ``instrument()`` at start-up. An instrumentor that
imported its library there would make every program pay for SQLAlchemy, FastAPI (and through it Starlette,
pydantic and anyio), pybreaker, ... whether it uses them or not: ~0.3 s and ~14 MiB here, and modules imported
before a test runner can rewrite them (pytest's ``PytestAssertRewriteWarning`` for anyio, a pytest plugin).

``when_imported(name, hook)`` runs ``hook(module)`` now when ``name`` is already imported, else right after the
program's own ``import name`` completes (wrapt's post-import hook: a finder first on ``sys.meta_path`` that
only acts for the names registered). The hook's own failure is logged, once, as a WARNING and never reaches the
program's ``import`` statement: a library version we do not understand must not stop the app. The returned
``Pending`` is cancelled by the instrumentor's ``_uninstrument``: a hook that has not run yet then does nothing.
"""

from __future__ import annotations

import importlib.util
import logging
import sys
import threading
from collections.abc import Callable
from types import ModuleType

_logger = logging.getLogger("otel_reliability")


class Pending:
    """One registered hook: runs at most once, and not at all after ``cancel()``."""

    __slots__ = ("_done", "_hook", "_lock", "name")

    def __init__(self, name: str, hook: Callable[[ModuleType], None]) -> None:
        self.name = name
        self._hook: Callable[[ModuleType], None] | None = hook
        self._lock = threading.Lock()
        self._done = False

    @property
    def waiting(self) -> bool:
        """Registered and not run yet: the program has not imported the library (so far)."""
        return self._hook is not None and not self._done

    def cancel(self) -> None:
        with self._lock:
            self._hook = None

    def __call__(self, module: ModuleType) -> None:
        with self._lock:
            hook, self._hook = self._hook, None
            self._done = True
        if hook is None:
            return
        try:
            hook(module)
        except Exception:
            _logger.warning("otel-reliability: could not instrument %s", self.name, exc_info=True)


def installed(name: str) -> bool:
    """Whether the top-level package ``name`` can be imported, without importing it."""
    if name in sys.modules:
        return True
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def has_submodule(package: str, submodule: str) -> bool:
    """Whether ``package.submodule`` exists, without importing ``package`` (``find_spec`` of a dotted name
    imports the parent: ``find_spec("fastapi.telemetry")`` costs all of FastAPI)."""
    if package in sys.modules:
        try:
            return importlib.util.find_spec(f"{package}.{submodule}") is not None
        except (ImportError, ValueError):
            return False
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return False
    if spec is None or not spec.submodule_search_locations:
        return False
    from importlib.machinery import PathFinder

    return PathFinder.find_spec(f"{package}.{submodule}", list(spec.submodule_search_locations)) is not None


_registered: list[Pending] = []


def waiting() -> list[str]:
    """The libraries some instrumentor still waits for (installed, not imported by the program so far)."""
    return sorted({p.name for p in _registered if p.waiting})


def import_waiting() -> None:
    """Import every library an instrumentor waits for, now (each one's hooks run).

    For a process that forks the workers which will import the app (a gunicorn master without ``--preload``):
    each worker, recycled ones too, then starts with its libraries imported and patched (copy-on-write), instead
    of importing FastAPI and SQLAlchemy itself while requests wait for it (seconds on a busy machine)."""
    import importlib

    for name in waiting():
        try:
            importlib.import_module(name)
        except Exception:
            _logger.warning("otel-reliability: could not import %s ahead of the workers", name, exc_info=True)


def when_imported(name: str, hook: Callable[[ModuleType], None]) -> Pending | None:
    """Run ``hook(module)`` once ``name`` (a top-level package) is imported: now if it already is. None (and no
    hook) when ``name`` is not installed at all."""
    if not installed(name):
        return None
    import wrapt

    pending = Pending(name, hook)
    _registered.append(pending)
    wrapt.register_post_import_hook(pending, name)
    return pending


def cancel(*pending: Pending | None) -> None:
    for p in pending:
        if p is not None:
            p.cancel()
