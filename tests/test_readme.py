"""The README's runnable shell snippets work as written, against the example app on the ports they name."""

from __future__ import annotations

import fcntl
import re
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support import BIN, ROOT, AppProcess, background, http, wait_until

README = (ROOT / "README.md").read_text()
BLOCKS = re.findall(r"^```sh runnable\n(.*?)^```", README, flags=re.S | re.M)


def test_there_are_runnable_snippets() -> None:
    assert BLOCKS


@pytest.fixture
def example_on_default_ports(app_factory: Callable[..., AppProcess], tmp_path) -> Iterator[AppProcess]:
    # The snippets name the README's ports (8000, 9100, 9464): one user of them per machine at a time, also across
    # checkouts whose suites run at once (two fake services on :9100 would answer each other's app).
    with open(Path(tempfile.gettempdir()) / "otel-reliability-readme-ports.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield from _example(app_factory, tmp_path)


def _example(app_factory: Callable[..., AppProcess], tmp_path: Path) -> Iterator[AppProcess]:
    fake = [str(BIN / "python"), str(ROOT / "examples" / "fake_services.py"), "--port", "9100"]
    with background(fake, log_path=tmp_path / "fake.log"):
        wait_until(lambda: http("GET", "http://127.0.0.1:9100/health")[0] == 200, what="fake services on :9100")
        app = app_factory(
            "app.main:app",
            port=8000,
            metrics_port=9464,
            env={
                "FAKE_SERVICES_URL": "http://127.0.0.1:9100",
                "EXAMPLE_DATA_DIR": str(tmp_path / "data"),
                "OTEL_RELIABILITY_STUCK_THRESHOLD": "2",
            },
        )
        try:
            yield app
        finally:
            app.stop()  # before the ports are handed on


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_runnable_snippet(index: int, example_on_default_ports: AppProcess) -> None:
    proc = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", BLOCKS[index]],
        cwd=ROOT, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
