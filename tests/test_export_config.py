"""``otel-reliability export-config DIR`` writes the monitoring files identical to collector-config/: from a
source checkout, and from a wheel built from this tree and installed in a fresh venv (the wheel carries
collector-config/ as package data)."""

from __future__ import annotations

import subprocess
import sys
import venv
from pathlib import Path

import pytest

from tests.support import BIN, ROOT

CONFIG = ROOT / "collector-config"


def committed() -> dict[str, bytes]:
    """collector-config/ as git has it (no local byproducts such as __pycache__)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--", "collector-config"], cwd=ROOT, capture_output=True, check=True
    ).stdout.decode()
    names = [n for n in listed.split("\0") if n]
    assert len(names) >= 15, names
    return {n.removeprefix("collector-config/"): (ROOT / n).read_bytes() for n in names}


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_export_from_the_checkout_equals_collector_config(tmp_path: Path) -> None:
    out = tmp_path / "monitoring"
    done = subprocess.run([str(BIN / "otel-reliability"), "export-config", str(out)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert tree(out) == committed()


def test_export_never_overwrites_a_changed_file_without_force(tmp_path: Path) -> None:
    cmd = [str(BIN / "otel-reliability"), "export-config", str(tmp_path)]
    assert subprocess.run(cmd, capture_output=True).returncode == 0
    edited = tmp_path / "alerts.yml"
    edited.write_text("# mine\n")
    refused = subprocess.run(cmd, capture_output=True, text=True)
    assert refused.returncode == 2 and "alerts.yml exists and differs" in refused.stderr
    assert edited.read_text() == "# mine\n"
    assert subprocess.run([*cmd, "--force"], capture_output=True).returncode == 0
    assert edited.read_bytes() == (CONFIG / "alerts.yml").read_bytes()


@pytest.mark.integration
def test_a_wheel_installed_in_a_fresh_venv_exports_the_same_files(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert built.returncode == 0, built.stderr
    (wheel,) = wheels.glob("otel_reliability-*.whl")
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    # --no-deps: export-config needs only the standard library; the wheel's data, not its dependencies, is tested.
    installed = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--no-deps", str(wheel)], capture_output=True, text=True
    )
    assert installed.returncode == 0, installed.stderr
    out = tmp_path / "exported"
    done = subprocess.run(
        [str(env_dir / "bin" / "otel-reliability"), "export-config", str(out)],
        capture_output=True,
        text=True,
        cwd=tmp_path,  # not the checkout: the files must come from the installed package
    )
    assert done.returncode == 0, done.stderr
    where = subprocess.run(
        [str(python), "-c", "from otel_reliability.cli import export; print(export.source())"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    ).stdout
    assert str(env_dir) in where and "monitoring" in where
    assert tree(out) == committed()
