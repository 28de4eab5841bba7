"""What CI runs: `.ci/run` is `make test`, so everything CI must check has to be a step of `make test`."""

from __future__ import annotations

import re
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


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_test_runs_the_two_matrix_cells_before_the_tests() -> None:
    plan = _plan("test")
    nox = next((i for i, line in enumerate(plan) if "bin/nox" in line and line.endswith("-s ci")), -1)
    pytest_at = next(i for i, line in enumerate(plan) if "pytest" in line)
    assert -1 < nox < pytest_at, plan
    assert "/var/cache/otel-reliability" in plan[nox] or "OTEL_RELIABILITY_CACHE" in plan[nox]  # outside the clone


PYPROJECT = (ROOT / "pyproject.toml").read_text()


def _dependencies() -> dict[str, str]:
    """``[project] dependencies`` by name (read as text: tomllib is 3.11+, the package claims 3.10)."""
    block = PYPROJECT.split("\ndependencies = [", 1)[1].split("\n]", 1)[0]
    found = {}
    for requirement in re.findall(r'"([^"]+)"', block):
        name, _, spec = requirement.partition(">=")
        found[name.strip()] = ">=" + spec
    return found


def test_the_opentelemetry_packages_are_capped_at_the_tested_minor_releases() -> None:
    """The matrix's ``highest`` cell installs the newest release inside each range: without a cap that is
    whatever was published last, which nothing tested; with it, the newest tested minor release."""
    otel = {name: spec for name, spec in _dependencies().items() if name.startswith("opentelemetry-")}
    assert otel, "no opentelemetry dependency found"
    stable = {spec for name, spec in otel.items() if "b0" not in spec}
    contrib = {spec for name, spec in otel.items() if "b0" in spec}
    assert stable == {">=1.43,<1.46"} and contrib == {">=0.64b0,<0.67"}, otel  # one release train, both bounds


def test_the_matrix_claims_the_python_the_package_claims() -> None:
    claimed = re.search(r'^requires-python = "([^"]+)"', PYPROJECT, flags=re.M).group(1)  # type: ignore[union-attr]
    noxfile = (ROOT / "noxfile.py").read_text()
    assert claimed == ">=3.10" and "CLAIMED = (3, 10)" in noxfile
