"""What the three breaker test apps share: a dependency that can be switched to fail, its error, and the app
around it (``POST /dependency/fail`` or ``/dependency/ok`` switches it; each app adds its own ``/call``)."""

from __future__ import annotations

import os

from fastapi import FastAPI
from fastapi.responses import JSONResponse

RESET_TIMEOUT = float(os.environ.get("TEST_BREAKER_RESET_TIMEOUT", "1.5"))
FAIL_MAX = 3


class DependencyError(Exception):
    """The (fake) external service failed."""


class Dependency:
    """A dependency whose health the test switches over HTTP."""

    def __init__(self) -> None:
        self.failing = False

    def __call__(self) -> str:
        if self.failing:
            raise DependencyError("dependency down")
        return "ok"


def app_switching(dependency: Dependency) -> FastAPI:
    """A FastAPI app whose ``POST /dependency/{mode}`` makes ``dependency`` fail (``fail``) or work (anything else)."""
    app = FastAPI()

    @app.post("/dependency/{mode}")
    def set_dependency(mode: str) -> dict[str, bool]:
        dependency.failing = mode == "fail"
        return {"failing": dependency.failing}

    return app


def failed() -> JSONResponse:
    """What ``/call`` answers when the breaker let the call through and the dependency failed."""
    return JSONResponse({"outcome": "failure"}, status_code=502)
