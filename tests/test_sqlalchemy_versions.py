"""SQLAlchemy 2.0 as well as 2.1 (the main venv): the pool and statement checks run in a cached venv with
SQLAlchemy 2.0.x (the statement check also in one with 1.4.x).

The venv is built once under /var/cache/otel-reliability (override: OTEL_RELIABILITY_CACHE), keyed by a hash of
pyproject.toml and the requirement, with ``pip install -e <repo> 'sqlalchemy>=2.0,<2.1'``. Building needs the
package index (a skip locally without it, a failure where CI=true); with the cache it takes a few seconds.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import ROOT, require

REQUIREMENT = "sqlalchemy>=2.0,<2.1"
CHECK = ROOT / "tests" / "apps" / "db" / "sa_version_check.py"
STATEMENTS_CHECK = ROOT / "tests" / "apps" / "db" / "sa_statements_check.py"


def cached_venv(requirement: str) -> Path | None:
    """A venv with the package's dependencies and ``requirement``, shared by every clone on this machine. The
    package itself is run from this clone (``run_check`` puts it first on the path): an editable install would
    point at whichever clone built the venv, and break once that clone is gone."""
    key = hashlib.sha256(b"deps-v2" + (ROOT / "pyproject.toml").read_bytes() + requirement.encode()).hexdigest()[:12]
    base = Path(os.environ.get("OTEL_RELIABILITY_CACHE", "/var/cache/otel-reliability"))
    venv = base / f"venv-sa20-{key}"
    python = venv / "bin" / "python"
    if (venv / ".complete").exists():
        return venv
    base.mkdir(parents=True, exist_ok=True)
    try:
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True, timeout=120)
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", str(ROOT), requirement],
            check=True, timeout=600, capture_output=True,
        )  # fmt: skip
    except (subprocess.SubprocessError, OSError):
        return None
    (venv / ".complete").write_text(requirement)
    return venv


def run_check(venv: Path, script: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}  # this clone's code, before the venv's installed copy
    return subprocess.run(
        [str(venv / "bin" / "python"), str(script)], capture_output=True, text=True, timeout=60, cwd=str(ROOT), env=env
    )


def test_pool_metrics_with_sqlalchemy_2_0() -> None:
    venv = cached_venv(REQUIREMENT)
    require(venv is not None, f"a venv with {REQUIREMENT} (pip could not build it)")
    assert venv is not None
    run = run_check(venv, CHECK)
    assert run.returncode == 0, run.stdout + run.stderr
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["sqlalchemy"].startswith("2.0.")
    assert (result["used"], result["max"], result["pending"], result["timeouts"]) == (3, 3, 1, 1)


@pytest.mark.parametrize(("requirement", "version"), [(REQUIREMENT, "2.0."), ("sqlalchemy>=1.4,<2.0", "1.4.")])
def test_statement_spans_with_older_sqlalchemy(requirement: str, version: str) -> None:
    venv = cached_venv(requirement)
    require(venv is not None, f"a venv with {requirement} (pip could not build it)")
    assert venv is not None
    run = run_check(venv, STATEMENTS_CHECK)
    assert run.returncode == 0, run.stdout + run.stderr
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["sqlalchemy"].startswith(version)
    assert {"CREATE items", "SELECT", "SELECT items", "SELECT missing"} <= set(result["spans"]), result
    assert result["all_children"] is True
    assert "SELECT ?" in result["texts"] and not any("4242" in t for t in result["texts"])
    assert result["errors"] == ["sqlite3.OperationalError"]
