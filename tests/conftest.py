"""Shared fixtures. Real processes are started here; see tests/support.py."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import ROOT, AppProcess, OtlpReceiver, Postgres, start_app, start_postgres


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    """A private PostgreSQL cluster on a free loopback port, for the whole session."""
    pg = start_postgres()
    try:
        yield pg
    finally:
        # Connections that tests left to the garbage collector are reset now, while the server still answers,
        # not at interpreter exit (where SQLAlchemy would log a lost-connection traceback after the summary).
        gc.collect()
        pg.stop("immediate")


@pytest.fixture
def app_factory(tmp_path: Path) -> Iterator[object]:
    """``app_factory(target, app_dir=..., env=..., server=..., workers=...)`` starts an app; all are stopped after."""
    started: list[AppProcess] = []

    def make(target: str, *, app_dir: Path = ROOT / "examples", **kw: object) -> AppProcess:
        app = start_app(target, app_dir=app_dir, log_dir=tmp_path, **kw)  # type: ignore[arg-type]
        started.append(app)
        return app

    yield make
    for app in started:
        app.stop()


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    """An in-test OTLP/HTTP receiver on loopback."""
    r = OtlpReceiver()
    yield r
    r.close()
