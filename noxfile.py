"""The version matrix: the oldest and the newest of every range pyproject.toml declares, on the oldest and the
newest Python it claims that this machine has (pyenv), each running the fast tests and one zero-code smoke test.

- ``lowest``: ``uv pip install --resolution lowest-direct``: every direct dependency at the bottom of its range
  (opentelemetry-api/sdk/exporters 1.43, instrumentation 0.64b0, FastAPI 0.110 with its Starlette, SQLAlchemy
  2.0.0, pybreaker, circuitbreaker, purgatory, uvicorn, gunicorn, prometheus_client, psutil, wrapt at theirs).
- ``highest``: the newest release of each inside its range (pyproject.toml caps the OpenTelemetry packages at
  the minor releases tested here, as distributions do).
- ``sqlalchemy-1.4``: ``highest`` with SQLAlchemy 1.4's newest release (the statement and pool instrumentation
  still support it).

``make test`` runs two cells (lowest on the oldest Python, highest on the newest: ``nox -s ci``); ``make matrix``
runs all six (``nox -s matrix``).
The venvs live outside the clone (``OTEL_RELIABILITY_CACHE``, default /var/cache/otel-reliability/matrix), keyed
by this file and pyproject.toml; the package itself is installed editable from the clone at each run.
"""

from __future__ import annotations

import glob
import os
import re
import sys

import nox

CLAIMED = (3, 10)  # requires-python in pyproject.toml
nox.options.default_venv_backend = "uv"
nox.options.error_on_missing_interpreters = True
nox.options.reuse_existing_virtualenvs = True
nox.options.sessions = ["matrix"]


def _pythons() -> list[str]:
    """The Pythons this machine has (pyenv's, and the one running nox) that the package claims, as "3.X"; their
    directories go first on PATH so that nox finds ``python3.X`` without pyenv's shims."""
    found = {f"{sys.version_info[0]}.{sys.version_info[1]}"}
    for bin_dir in sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.*/bin")), reverse=True):
        match = re.search(r"/3\.(\d+)\.\d+/bin$", bin_dir)
        if match and (3, int(match.group(1))) >= CLAIMED:
            found.add(f"3.{match.group(1)}")
            os.environ["PATH"] = f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"
    return sorted(found, key=lambda v: tuple(map(int, v.split("."))))


PYTHONS = _pythons()
OLDEST, NEWEST = PYTHONS[0], PYTHONS[-1]

TEST_TOOLS = ["pytest>=8", "pytest-timeout>=2.3", "hypothesis>=6.100", "aiosqlite>=0.20", "purgatory>=3.0"]
FAST_TESTS = [
    "tests/test_buffered_histogram.py",
    "tests/test_breakers.py",
    "tests/test_pool.py",
    "tests/test_statements.py",
    "tests/test_readings.py",
    "tests/test_crash_safe.py",
    "tests/test_config.py",
    "tests/test_semconv.py",  # the names we re-export exist, with our text, in the oldest and newest package
    "tests/test_fastapi_app.py",
    "tests/test_upstream.py::test_every_check_passes_on_the_installed_versions",
    # the zero-code smoke test: opentelemetry-instrument uvicorn, Prometheus scrape, health, a quiet log
    "tests/test_zero_code.py::test_defaults_prometheus_route_templates_health_and_a_quiet_log",
]
# The few of those that need PostgreSQL or its drivers run in the main venv only; of the start-up checks of every
# variable (a process each, ~4 s) one runs here.
SELECT = (
    "not postgres and not asyncpg and not connection_found_lost"
    " and (not test_bad_value_stops_start_up_under_opentelemetry_instrument or OTEL_RELIABILITY_HEALTH_PATH)"
)
# (resolution, override, what the cell leaves out)
CELLS: dict[str, tuple[list[str], str | None, str]] = {
    "lowest": (["--resolution", "lowest-direct"], None, ""),
    "highest": (["--resolution", "highest"], None, ""),
    # The examples extra asks for SQLAlchemy 2: overridden, the statement and pool instrumentation support 1.4.
    # run_in_transaction_async needs 2.0's async_sessionmaker.
    "sqlalchemy-1.4": (["--resolution", "highest"], "sqlalchemy[asyncio]>=1.4,<2", " and not run_in_transaction_async"),
}


@nox.session(python=sorted({OLDEST, NEWEST}))
@nox.parametrize("deps", list(CELLS))
def matrix(session: nox.Session, deps: str) -> None:
    resolution, override, left_out = CELLS[deps]
    if override is not None:
        overrides = os.path.join(session.create_tmp(), "overrides.txt")
        with open(overrides, "w") as file:
            file.write(override + "\n")
        resolution = [*resolution, "--override", overrides]
    session.install(*resolution, "--reinstall-package", "otel-reliability", "-e", ".[examples]", *TEST_TOOLS)
    session.run("uv", "pip", "list", "--python", "python", external=True, silent=False)
    select = ["-k", SELECT + left_out]
    session.run("python", "-m", "pytest", "-q", "-p", "no:cacheprovider", *select, *FAST_TESTS, *session.posargs)


@nox.session(python=False)
def ci(session: nox.Session) -> None:
    """The two cells ``make test`` runs: everything oldest on the oldest Python, everything newest on the newest."""
    session.notify(f"matrix-{OLDEST}(deps='lowest')")
    session.notify(f"matrix-{NEWEST}(deps='highest')")
