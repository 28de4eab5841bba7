"""A FastAPI app with a pybreaker breaker created at import time; no otel_reliability code except the two
hand-written breakers that only ``register_breaker`` can know."""

from __future__ import annotations

import pybreaker
from common import FAIL_MAX, RESET_TIMEOUT, Dependency, DependencyError, app_switching, failed

import otel_reliability

dependency = Dependency()
payments = pybreaker.CircuitBreaker(fail_max=FAIL_MAX, reset_timeout=RESET_TIMEOUT, name="payments")


class LedgerBreaker:
    """Hand-written, as apps write them: ``get_state()`` returns a dict with a ``state`` key."""

    def get_state(self) -> dict[str, object]:
        return {"state": "closed", "failure_count": 0, "fail_max": 7, "reset_timeout": 45}


ledger = LedgerBreaker()
otel_reliability.register_breaker("ledger", ledger)


def _broken_getter() -> str:
    raise RuntimeError("state backend unreachable")


otel_reliability.register_breaker("flaky", _broken_getter)

app = app_switching(dependency)


@app.get("/call")
def call() -> object:
    try:
        return {"result": payments.call(dependency)}
    except DependencyError:
        return failed()
