"""What CI runs: `.ci/run` is `make test`, so everything CI must check has to be a step of `make test`."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from tests.support import ROOT


def _plan(target: str) -> list[str]:
    """The commands `make <target>` would run, in order (``make -n`` prints them without running any)."""
    run = subprocess.run(
        ["make", "-n", target], cwd=str(ROOT), capture_output=True, text=True, timeout=60, check=True
    )  # fmt: skip
    return [line.strip() for line in run.stdout.splitlines() if line.strip()]


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_test_lints_before_it_runs_the_tests() -> None:
    plan = _plan("test")
    steps = ["ruff check", "ruff format --check", "mypy", "pytest"]
    at = [next((i for i, line in enumerate(plan) if step in line), -1) for step in steps]
    assert -1 not in at, f"make test does not run all of {steps}: {plan}"
    assert at == sorted(at), f"make test must lint before the tests: {plan}"


def test_ci_runs_make_test() -> None:
    assert "make test" in (ROOT / ".ci" / "run").read_text()
