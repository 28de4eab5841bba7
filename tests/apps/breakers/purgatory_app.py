"""A FastAPI app with an async purgatory factory made at import time; no otel_reliability code at all."""

from __future__ import annotations

from common import FAIL_MAX, RESET_TIMEOUT, Dependency, DependencyError, app_switching, failed
from purgatory import AsyncCircuitBreakerFactory

dependency = Dependency()
breakers = AsyncCircuitBreakerFactory(default_threshold=FAIL_MAX, default_ttl=RESET_TIMEOUT)


@breakers("storage")
async def store() -> str:
    return dependency()


app = app_switching(dependency)


@app.get("/call")
async def call() -> object:
    try:
        return {"result": await store()}
    except DependencyError:
        return failed()
