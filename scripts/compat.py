"""``make compat``: the instrumented libraries' own test suites, plain and under ``opentelemetry-instrument``,
compared test by test. Any test whose outcome differs fails the run.

The suites are the ones a registry serves with their tests: SQLAlchemy's and circuitbreaker's sdists, of the
versions installed in .venv, downloaded once with pip into ``$OTEL_RELIABILITY_CACHE/compat`` (default
/var/cache/otel-reliability/compat, outside the clone) and unpacked into a temporary directory per run. The
instrumented run must prove it was instrumented: ``compat_probe`` (a pytest plugin) checks our patches at the end
of the run. Plain and instrumented runs of one suite run side by side. A test that differs is run again, both
ways, once: a timing test that failed on a loaded machine is not a difference; one that differs twice is.

    .venv/bin/python scripts/compat.py [--only NAME ...] [--keep]
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
CACHE = Path(os.environ.get("OTEL_RELIABILITY_CACHE", "/var/cache/otel-reliability")) / "compat"
sys.path.insert(0, str(ROOT))


@dataclass
class Suite:
    name: str
    dist: str  # the distribution whose sdist holds the tests
    paths: list[str]  # test files or directories, relative to the unpacked sdist
    patches: tuple[str, ...]  # compat_probe keys that must be True in the instrumented run
    options: tuple[str, ...] = ()  # more pytest options
    needs_postgres: bool = False
    dburi: Callable[[Path, str], str] | None = None  # (workdir, postgres url) -> --dburi
    tests_only: bool = False  # run a copy of tests/ only: the sdist's own module would shadow the installed one


SQLALCHEMY_PATCHES = ("pool.connect", "pool.listeners", "statements")
SUITES = [
    Suite(
        "sqlalchemy-engine",
        "sqlalchemy",
        [
            "test/engine/test_pool.py",
            "test/engine/test_reconnect.py",
            "test/engine/test_execute.py",
            "test/engine/test_transaction.py",
            "test/base/test_events.py",
        ],
        SQLALCHEMY_PATCHES,
    ),
    Suite(
        "sqlalchemy-asyncio-aiosqlite",
        "sqlalchemy",
        ["test/ext/asyncio/test_engine.py"],
        SQLALCHEMY_PATCHES,
        # In memory, SQLAlchemy's default for aiosqlite: with a file, its own suite failed at random on both sides
        # ("attempt to write a readonly database", "disk I/O error"; 2 runs in ~5), so the pair differed by chance.
        dburi=lambda _work, _pg: "sqlite+aiosqlite:///:memory:",
    ),
    Suite(
        "sqlalchemy-postgresql-psycopg",
        "sqlalchemy",
        ["test/engine/test_reconnect.py", "test/engine/test_transaction.py", "test/ext/asyncio/test_engine.py"],
        SQLALCHEMY_PATCHES,
        needs_postgres=True,
        dburi=lambda _work, pg: pg,
    ),
    # Its async tests are unmarked: the project runs them with pytest-asyncio in auto mode.
    Suite(
        "circuitbreaker",
        "circuitbreaker",
        ["tests"],
        ("circuitbreaker",),
        options=("-o", "asyncio_mode=auto"),
        tests_only=True,
    ),
]


@dataclass
class Run:
    outcomes: dict[str, str] = field(default_factory=dict)
    patches: dict[str, bool] = field(default_factory=dict)
    exitstatus: int = -1
    log: Path | None = None


def sdist(dist: str) -> Path:
    """The cached sdist of the installed version of ``dist``, downloaded with pip when missing."""
    version = importlib.metadata.version(dist)
    CACHE.mkdir(parents=True, exist_ok=True)
    wanted = f"{dist.lower()}-{version}.tar.gz"
    for path in CACHE.iterdir():
        if path.name.lower() == wanted:
            return path
    pip = [str(BIN / "python"), "-m", "pip", "download", "-q", "--no-deps", "--no-binary", dist]
    subprocess.run([*pip, f"{dist}=={version}", "-d", str(CACHE)], check=True)
    for path in CACHE.iterdir():
        if path.name.lower() == wanted:
            return path
    raise SystemExit(f"compat: pip downloaded no {wanted} into {CACHE}")


def unpack(dist: str, work: Path, tests_only: bool) -> Path:
    """The sdist's tree under ``work`` (only its tests/ when ``tests_only``); returns the directory to run in."""
    target = work / dist
    if target.exists():
        return target
    with tarfile.open(sdist(dist)) as tar:
        top = tar.getnames()[0].split("/")[0]
        members = [m for m in tar.getmembers() if "/doc/" not in m.name and "/examples/" not in m.name]
        tar.extractall(work / "unpacked", members=members, filter="data")
    source = work / "unpacked" / top
    if tests_only:
        target.mkdir()
        shutil.copytree(source / "tests", target / "tests")
    else:
        source.rename(target)
    return target


def command(suite: Suite, cwd: Path, args: list[str], instrumented: bool, pg_urls: dict[bool, str]) -> list[str]:
    # -s: SQLAlchemy's conftest puts the sdist's lib/ first on sys.path unless user site is off; the installed
    # SQLAlchemy is the one under test (and the one we instrument).
    cmd = [str(BIN / "python"), "-s", "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "compat_probe"]
    cmd += ["-o", "console_output_style=classic", "--timeout", "300"]
    if suite.dburi is not None:
        cmd += ["--dburi", suite.dburi(cwd, pg_urls.get(instrumented, ""))]
    cmd += [*suite.options, *args]
    if instrumented:
        cmd = [str(BIN / "opentelemetry-instrument"), *cmd]
    return cmd


def environment(probe_out: Path, metrics_port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "PYTEST_"))}
    env.update(
        {
            # compat_probe; a PYTHONPATH given to compat.py comes after it (e.g. another checkout's package, to
            # see what an older version of our code did to the suites).
            "PYTHONPATH": os.pathsep.join([str(ROOT / "scripts"), *filter(None, [os.environ.get("PYTHONPATH")])]),
            "COMPAT_PROBE_OUT": str(probe_out),
            # What a user gets with no OTEL_* variable, except :9464 on a free port of its own.
            "OTEL_EXPORTER_PROMETHEUS_HOST": "127.0.0.1",
            "OTEL_EXPORTER_PROMETHEUS_PORT": str(metrics_port),
        }
    )
    return env


def run_pair(
    suite: Suite, cwd: Path, work: Path, args: list[str], pg_urls: dict[bool, str], tag: str
) -> tuple[Run, Run]:
    """The plain and the instrumented run of ``args``, side by side."""
    from tests.support import free_port

    procs = []
    for instrumented in (False, True):
        kind = "instrumented" if instrumented else "plain"
        out = work / f"{suite.name}-{tag}-{kind}.json"
        log = work / f"{suite.name}-{tag}-{kind}.log"
        run = Run(log=log)
        # The suite's own files (SQLite databases, ...) in a directory per run: the two runs must not share them.
        run_dir = work / f"{suite.name}-{tag}-{kind}"
        shutil.copytree(cwd, run_dir, symlinks=True)
        with open(log, "wb") as log_file:
            proc = subprocess.Popen(
                command(suite, run_dir, args, instrumented, pg_urls),
                cwd=run_dir,
                env=environment(out, free_port()),
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )
        procs.append((proc, out, run))
    runs = []
    for proc, out, run in procs:
        proc.wait()
        if out.exists():
            data = json.loads(out.read_text())
            run.outcomes, run.patches, run.exitstatus = data["outcomes"], data["patches"], data["exitstatus"]
        runs.append(run)
    return runs[0], runs[1]


def again(suite: Suite, names: list[str]) -> list[str]:
    """The test paths that run ``names`` again: their files (SQLAlchemy names its test classes per backend at
    collection, so a node id cannot be selected), with the suite's options."""
    return sorted({n.split("::")[0] for n in names})


def differing(plain: Run, instrumented: Run) -> list[str]:
    names = sorted(set(plain.outcomes) | set(instrumented.outcomes))
    return [n for n in names if plain.outcomes.get(n) != instrumented.outcomes.get(n)]


def postgres_urls(stack: list[object]) -> dict[bool, str]:
    """A database for the plain and one for the instrumented run (they run at once and create the same tables),
    each with the two schemas SQLAlchemy's suites expect (README.unittests.rst)."""
    import psycopg

    from tests.support import start_postgres

    pg = start_postgres()
    stack.append(pg)
    urls = {}
    for instrumented, database in ((False, "compat_plain"), (True, "compat_instrumented")):
        pg.psql(f"CREATE DATABASE {database} OWNER {pg.user}")
        dsn = f"postgresql://{pg.user}:{pg.password}@127.0.0.1:{pg.port}/{database}"
        with psycopg.connect(dsn, autocommit=True) as conn:
            for schema in ("test_schema", "test_schema_2"):
                conn.execute(f"CREATE SCHEMA {schema}")
        urls[instrumented] = f"postgresql+psycopg://{pg.user}:{pg.password}@127.0.0.1:{pg.port}/{database}"
    return urls


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="*", help="suite names (default: all)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs, per-test outcomes)")
    opts = parser.parse_args()
    suites = [s for s in SUITES if not opts.only or s.name in opts.only]
    work = Path(tempfile.mkdtemp(prefix="otel-rel-compat-"))
    started: list[object] = []
    failed = False
    try:
        pg_urls = postgres_urls(started) if any(s.needs_postgres for s in suites) else {}
        print(f"{'suite':32} {'tests':>6} {'passed':>7} {'differ':>7} {'seconds':>8}  instrumented (patches at end)")
        for suite in suites:
            begin = time.monotonic()
            cwd = unpack(suite.dist, work, suite.tests_only)
            plain, inst = run_pair(suite, cwd, work, suite.paths, pg_urls, "all")
            problems = []
            if not plain.outcomes or not inst.outcomes:
                problems.append(f"a run reported no test (logs: {plain.log}, {inst.log})")
            missing = [k for k in suite.patches if not inst.patches.get(k)]
            if missing:
                problems.append(f"not instrumented at the end of the run: {missing}")
            if any(plain.patches.get(k) for k in suite.patches):
                problems.append("the plain run was instrumented")
            diff = differing(plain, inst)
            if diff:  # once more, both ways: a difference must repeat to count
                plain2, inst2 = run_pair(suite, cwd, work, again(suite, diff), pg_urls, "again")
                diff = [n for n in diff if n in differing(plain2, inst2) or n not in plain2.outcomes]
                for n in diff:
                    problems.append(
                        f"differs: {n}: plain {plain2.outcomes.get(n)}, instrumented {inst2.outcomes.get(n)}"
                    )
            passed = sum(1 for o in plain.outcomes.values() if o == "passed")
            state = "yes" if not missing else "NO"
            seconds = time.monotonic() - begin
            print(f"{suite.name:32} {len(plain.outcomes):>6} {passed:>7} {len(diff):>7} {seconds:>8.1f}  {state}")
            for problem in problems:
                print(f"  {problem}")
            failed = failed or bool(problems)
    finally:
        for pg in started:
            pg.stop()  # type: ignore[attr-defined]
        if opts.keep or failed:
            print(f"compat: work directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
