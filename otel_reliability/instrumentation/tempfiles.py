"""The temp-file instruments (``temp_file.open``, ``temp_file.size``, ``temp_file.leaked``); entry point
``reliability_tempfiles``.

Usage: nothing; ``opentelemetry-instrument`` loads it, ``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=
reliability_tempfiles`` switches it off. ``otel_reliability.temp_file`` removes its files either way; without
this instrumentor they are not counted.

Its own entry point because it is its own concern: it used to be created by the operations instrumentor, so
disabling ``reliability_operations`` silently removed the temp-file metrics too.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from opentelemetry import metrics
from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]

from otel_reliability import semconv, tempfiles
from otel_reliability.version import __version__

_instruments: tuple[str, ...] = ()
"""Empty: ``temp_file`` is this package's own API, no library is patched."""

SCOPE = "otel_reliability.operations"
"""The instrumentation scope the temp-file series have always had (the ``otel_scope_name`` label on :9464);
kept when they got their own instrumentor, so no series changes its labels."""


class TempFilesInstrumentor(BaseInstrumentor):  # type: ignore[misc]
    """Entry point ``reliability_tempfiles``. Accepts ``meter_provider=``."""

    def instrumentation_dependencies(self) -> Collection[str]:
        return _instruments

    def _instrument(self, **kwargs: Any) -> None:
        tempfiles.bind_meter(metrics.get_meter(SCOPE, __version__, kwargs.get("meter_provider"), semconv.SCHEMA_URL))

    def _uninstrument(self, **kwargs: Any) -> None:
        tempfiles.bind_meter(None)
