"""An app with four breakers made at import and routes that fail on demand; no otel_reliability code at all.

For the freshness tests: run under opentelemetry-instrument with the default health cache, nothing scraped.
"""

from __future__ import annotations

import pybreaker
from circuitbreaker import circuit
from fastapi import FastAPI, HTTPException

BREAKERS = {name: pybreaker.CircuitBreaker(fail_max=2, reset_timeout=60, name=name) for name in ("alpha", "beta")}
BREAKERS["gamma"] = pybreaker.CircuitBreaker(fail_max=2, reset_timeout=60, name="gamma")


class DependencyDown(Exception):
    pass


@circuit(failure_threshold=2, recovery_timeout=60, expected_exception=DependencyDown, name="delta")
def delta(fail: bool) -> str:
    if fail:
        raise DependencyDown("delta is down")
    return "ok"


def _dependency(fail: bool) -> str:
    if fail:
        raise DependencyDown("down")
    return "ok"


app = FastAPI()


@app.get("/call/{name}")
def call(name: str, fail: bool = False) -> dict[str, str]:
    try:
        if name == "delta":
            return {"result": delta(fail)}
        return {"result": BREAKERS[name].call(_dependency, fail)}
    except DependencyDown:
        raise HTTPException(status_code=502, detail="dependency failed") from None


@app.get("/boom")
def boom() -> None:
    raise HTTPException(status_code=500, detail="boom")
