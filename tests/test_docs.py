"""The README documents what the code defines: every variable, with its real default."""

from __future__ import annotations

import re

from otel_reliability import config
from tests.support import ROOT

README = (ROOT / "README.md").read_text()


def test_readme_starts_with_the_two_commands() -> None:
    head = README.split("\n## ", 1)[0]
    assert "make demo" in head and "make test" in head


def test_every_variable_is_documented_with_its_default() -> None:
    rows = dict(re.findall(r"^\| `(OTEL_RELIABILITY_[A-Z_]+)` \| ([^|]+) \|", README, flags=re.M))
    assert set(rows) == {v.name for v in config.VARIABLES}
    for var in config.VARIABLES:
        shown = rows[var.name].strip().strip("`")
        assert shown == (var.default or shown), f"{var.name}: README says {shown}, code says {var.default}"
