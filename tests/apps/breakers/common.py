"""What the three breaker test apps share: a dependency that can be switched to fail, and its error."""

from __future__ import annotations

import os

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
