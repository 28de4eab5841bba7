"""The registry of guarded private accesses (``otel_reliability.upstream`` says what and why)."""

from __future__ import annotations

import contextlib
import importlib
import logging
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

_logger = logging.getLogger("otel_reliability.upstream")


@dataclass(eq=False)
class Private:
    """One private access: ``module`` (imported when the check runs), the ``attributes`` read or written, the
    ``expect``ed shape, the public ``fallback`` and the ``check`` (raises or returns False on a mismatch)."""

    key: str
    module: str
    attributes: tuple[str, ...]
    expect: str
    fallback: str
    check: Callable[[], bool | None]
    _ok: bool | None = field(default=None, repr=False)
    _running: bool = field(default=False, repr=False)
    _lock: threading.RLock = field(default_factory=threading.RLock, repr=False)

    def usable(self) -> bool:
        """Whether the private path may be used (its check passed, or the package is not installed)."""
        ok = self._ok
        if ok is None:
            # The module is imported before the lock is taken: its import runs our post-import hooks
            # (instrumentation/on_import.py), which patch it and ask ``usable()`` of this very access.
            with contextlib.suppress(ImportError):
                importlib.import_module(self.module)
            with self._lock:
                if self._ok is None:
                    if self._running:  # asked again from inside its own check (a scratch object instrumented)
                        return False
                    self._running = True
                    try:
                        self._ok = self._run()
                    finally:
                        self._running = False
                ok = self._ok
        return ok

    def _run(self) -> bool:
        try:
            passed = self.check() is not False
            problem = "it does not behave as expected"
        except ImportError as exc:
            if self.module not in sys.modules:
                return True  # the package is not installed: nothing uses this access
            passed, problem = False, f"ImportError: {exc}"  # installed, but without the name
        except Exception as exc:
            passed, problem = False, f"{type(exc).__name__}: {exc}"
        if not passed:
            _logger.warning(
                "otel-reliability: %s %s changed (%s; expected: %s); using %s instead",
                self.module,
                ", ".join(self.attributes),
                problem,
                self.expect,
                self.fallback,
            )
        return passed


GUARDED: dict[str, Private] = {}


def guard(key: str, module: str, attributes: tuple[str, ...], expect: str, fallback: str) -> Callable[..., Any]:
    """Register the decorated function as the check of one private access."""

    def register(check: Callable[[], bool | None]) -> Callable[[], bool | None]:
        GUARDED[key] = Private(key, module, attributes, expect, fallback, check)
        return check

    return register


def usable(key: str) -> bool:
    return GUARDED[key].usable()


def check_before_patching(module: str) -> dict[str, bool]:
    """Run the checks of ``module``'s accesses now: an instrumentor calls this before it patches ``module``, so
    that a check's scratch objects are never counted as the user's."""
    return {key: p.usable() for key, p in GUARDED.items() if p.module == module}


def check_all() -> dict[str, bool]:
    """Run the check of every guarded access whose module is already imported (at start-up: this never imports
    a module the app does not use; the others are checked when their instrumentor first touches them)."""
    return {key: p.usable() for key, p in GUARDED.items() if p.module in sys.modules}
