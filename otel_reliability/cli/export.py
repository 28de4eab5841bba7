"""``otel-reliability export-config DIR``: the monitoring files shipped in the package, written out.

The collector configs, ``prometheus.yml`` / ``prometheus-otlp.yml``, the alert and SLO rules with their promtool
tests, and the Grafana dashboards with their provisioning files: what a ``pip install`` user needs to run the
rest of the stack. One source of truth: the wheel carries ``collector-config/`` itself as package data
(``otel_reliability/monitoring``, pyproject's ``force-include``), so what is exported is byte for byte what the
repository has; in a source checkout (an editable install) the repository's ``collector-config/`` is read.
"""

from __future__ import annotations

import importlib.resources
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

PACKAGED = "monitoring"
_SKIPPED = ("__pycache__",)


def source() -> Traversable:
    """Where the shipped files are: the package data of an installed wheel, else the checkout's collector-config/."""
    packaged = importlib.resources.files("otel_reliability") / PACKAGED
    if packaged.is_dir():
        return packaged
    checkout = Path(__file__).resolve().parents[2] / "collector-config"
    if checkout.is_dir():
        return checkout
    raise FileNotFoundError("otel-reliability: no monitoring files in this installation (a broken wheel?)")


def files(root: Traversable | None = None, prefix: str = "") -> dict[str, Traversable]:
    """Every shipped file by its path relative to the root ("grafana/dashboards/overview.json")."""
    root = source() if root is None else root
    found: dict[str, Traversable] = {}
    for entry in sorted(root.iterdir(), key=lambda e: e.name):
        if entry.name in _SKIPPED or entry.name.endswith(".pyc"):
            continue
        if entry.is_dir():
            found.update(files(entry, f"{prefix}{entry.name}/"))
        else:
            found[f"{prefix}{entry.name}"] = entry
    return found


def export(target: Path, *, force: bool = False) -> list[str]:
    """Write every shipped file under ``target``; an existing file that differs is only replaced with ``force``.

    Raises FileExistsError naming the first such file, before anything is written."""
    shipped = files()
    contents = {name: entry.read_bytes() for name, entry in shipped.items()}
    if not force:
        for name, data in contents.items():
            path = target / name
            if path.exists() and path.read_bytes() != data:
                raise FileExistsError(f"{path} exists and differs (use --force to overwrite)")
    for name, data in contents.items():
        path = target / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return sorted(contents)
