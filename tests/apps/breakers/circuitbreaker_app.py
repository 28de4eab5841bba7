"""A FastAPI app with a ``@circuit`` breaker defined at import time; no otel_reliability code at all."""

from __future__ import annotations

from circuitbreaker import circuit
from common import FAIL_MAX, RESET_TIMEOUT, Dependency, DependencyError, app_switching, failed

dependency = Dependency()


@circuit(failure_threshold=FAIL_MAX, recovery_timeout=RESET_TIMEOUT, expected_exception=DependencyError, name="search")
def search() -> str:
    return dependency()


app = app_switching(dependency)


@app.get("/call")
def call() -> object:
    try:
        return {"result": search()}
    except DependencyError:
        return failed()
