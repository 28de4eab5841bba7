"""A FastAPI app with an async purgatory factory made at import time; no otel_reliability code at all."""

from __future__ import annotations

from common import FAIL_MAX, RESET_TIMEOUT, Dependency, DependencyError
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from purgatory import AsyncCircuitBreakerFactory

dependency = Dependency()
breakers = AsyncCircuitBreakerFactory(default_threshold=FAIL_MAX, default_ttl=RESET_TIMEOUT)


@breakers("storage")
async def store() -> str:
    return dependency()


app = FastAPI()


@app.post("/dependency/{mode}")
def set_dependency(mode: str) -> dict[str, bool]:
    dependency.failing = mode == "fail"
    return {"failing": dependency.failing}


@app.get("/call")
async def call() -> object:
    try:
        return {"result": await store()}
    except DependencyError:
        return JSONResponse({"outcome": "failure"}, status_code=502)
