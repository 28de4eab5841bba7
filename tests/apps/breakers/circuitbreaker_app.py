"""A FastAPI app with a ``@circuit`` breaker defined at import time; no otel_reliability code at all."""

from __future__ import annotations

from circuitbreaker import circuit
from common import FAIL_MAX, RESET_TIMEOUT, Dependency, DependencyError
from fastapi import FastAPI
from fastapi.responses import JSONResponse

dependency = Dependency()


@circuit(failure_threshold=FAIL_MAX, recovery_timeout=RESET_TIMEOUT, expected_exception=DependencyError, name="search")
def search() -> str:
    return dependency()


app = FastAPI()


@app.post("/dependency/{mode}")
def set_dependency(mode: str) -> dict[str, bool]:
    dependency.failing = mode == "fail"
    return {"failing": dependency.failing}


@app.get("/call")
def call() -> object:
    try:
        return {"result": search()}
    except DependencyError:
        return JSONResponse({"outcome": "failure"}, status_code=502)
