"""pytest plugin for ``make compat`` (``-p compat_probe``): each test's outcome, and whether our patches were in
place at the end of the run, written as JSON to ``$COMPAT_PROBE_OUT``.

The patches are checked at the end, not the start: a suite that removes them on the way (SQLAlchemy's
``Pool.dispatch._clear()`` did) must show as not instrumented, not pass as if it had been.
"""

from __future__ import annotations

import json
import os
from typing import Any

_outcomes: dict[str, str] = {}


def pytest_runtest_logreport(report: Any) -> None:
    nodeid = report.nodeid
    if report.when == "call" or (report.when == "setup" and not report.passed):
        _outcomes[nodeid] = "xfailed" if hasattr(report, "wasxfail") and report.skipped else report.outcome
        if hasattr(report, "wasxfail") and report.passed:
            _outcomes[nodeid] = "xpassed"
    elif report.when == "teardown" and report.failed:
        _outcomes[nodeid] = "error"


def _patches() -> dict[str, bool]:
    """Each patch of ours, present or not (a library that is not installed counts as absent)."""
    from otel_reliability.instrumentation._instrumented import is_wrapped

    found: dict[str, bool] = {}
    try:
        import pybreaker

        found["pybreaker"] = is_wrapped(pybreaker.CircuitBreaker, "_inc_counter")
    except ImportError:
        found["pybreaker"] = False
    try:
        import circuitbreaker

        found["circuitbreaker"] = is_wrapped(circuitbreaker.CircuitBreaker, "__exit__")
    except ImportError:
        found["circuitbreaker"] = False
    try:
        from sqlalchemy import event
        from sqlalchemy.engine.default import DefaultDialect
        from sqlalchemy.pool import Pool

        from otel_reliability.instrumentation.pool import _armed

        found["pool.connect"] = getattr(Pool.__dict__["connect"], "_otel_reliability_override", False)
        found["pool.listeners"] = bool(_armed._armed) and all(
            event.contains(Pool, name, fn) for name, fn in _armed._armed
        )
        found["statements"] = getattr(DefaultDialect.__dict__["do_execute"], "_otel_reliability_override", False)
    except ImportError:
        found.update({"pool.connect": False, "pool.listeners": False, "statements": False})
    return found


def pytest_sessionfinish(session: Any, exitstatus: int) -> None:
    out = os.environ.get("COMPAT_PROBE_OUT")
    if not out:
        return
    with open(out, "w", encoding="utf-8") as f:
        json.dump({"outcomes": _outcomes, "patches": _patches(), "exitstatus": int(exitstatus)}, f)
