"""The benchmark harness runs end to end (tiny durations). Not a timed test: it asserts nothing about speed."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from tests.support import BIN, ROOT, require


def test_benchmark_harness_writes_results(tmp_path: Path) -> None:
    require(shutil.which("wrk") is not None, "wrk (apt-get install wrk)")
    out = tmp_path / "RESULTS.md"
    proc = subprocess.run(
        [str(BIN / "python"), str(ROOT / "benchmarks" / "run.py"), "--quick", "--output", str(out)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    text = out.read_text()
    assert "Machine: " in text and "| ours / bare |" in text
    assert "## 1b." in text and "| a second bare app (the method's own bias) |" in text
    assert "## 1c." in text and "collector time per request against bare" in text
    assert "## 12." in text and "| upstream |" in text and "ours - upstream" in text
