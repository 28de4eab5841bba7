"""The distro hands our instrumentors the Settings it parsed (``instrument(settings=...)``), and they use them.

Settings are an argument, not a global read deep inside an instrumentor: a test passes its own, and the
configuration is parsed once, at start-up, where a bad value stops the process with one line.
"""

from __future__ import annotations

from typing import Any

import pytest

from otel_reliability import config
from otel_reliability.distro import ReliabilityDistro


class _Recorder:
    seen: list[dict[str, Any]] = []

    def instrument(self, **kwargs: Any) -> None:
        _Recorder.seen.append(kwargs)


class _EntryPoint:
    def __init__(self, name: str) -> None:
        self.name = name

    def load(self) -> type[_Recorder]:
        return _Recorder


@pytest.fixture(autouse=True)
def _clear() -> None:
    _Recorder.seen.clear()


def test_our_instrumentors_get_the_loaded_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    loaded = config.load({"OTEL_RELIABILITY_STUCK_THRESHOLD": "42"})
    monkeypatch.setattr(config, "_current", loaded)  # what the distro's _configure stored at start-up
    ReliabilityDistro().load_instrumentor(_EntryPoint("reliability_fake"))
    assert _Recorder.seen == [{"settings": loaded}]


def test_upstream_instrumentors_get_no_settings_argument() -> None:
    ReliabilityDistro().load_instrumentor(_EntryPoint("requests"))
    assert _Recorder.seen == [{}]


def test_an_explicit_settings_argument_wins() -> None:
    mine = config.load({})
    ReliabilityDistro().load_instrumentor(_EntryPoint("reliability_fake"), settings=mine)
    assert _Recorder.seen[0]["settings"] is mine
