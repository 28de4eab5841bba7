"""Whether spans can leave the process: the one answer for the whole package.

It is asked at two moments. Before the providers exist, from the environment (``exported``): the distro
chooses the HTTP layer and FastAPI's telemetry defaults with it. Once a tracer provider is set, from its
sampler (``drops_every_span``): a hook on a hot path (a statement, a breaker call, a request) then skips
starting a span that would record nothing, and the measurements it makes skip looking for exemplars (an exemplar
points at a sampled span). Both follow the same settings: the distro's default while traces are not exported is
``OTEL_TRACES_SAMPLER=always_off`` (``otel_reliability.distro``), which the SDK turns into the sampler seen here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from opentelemetry import trace

_ALWAYS_OFF = "always_off"  # OTEL_TRACES_SAMPLER's value; the SDK's sampler then describes itself as below
_ALWAYS_OFF_SAMPLER = "AlwaysOffSampler"


def exported(env: Mapping[str, str]) -> bool:
    """Whether any span can leave the process under ``env``: an exporter other than ``none``, a sampler that
    samples, and the SDK enabled."""
    raw = env.get("OTEL_TRACES_EXPORTER", "").strip() or "otlp"  # the SDK's own default
    exporters = [name.strip() for name in raw.split(",") if name.strip() and name.strip() != "none"]
    sampler = env.get("OTEL_TRACES_SAMPLER", "").strip().lower()
    return bool(exporters) and sampler != _ALWAYS_OFF and env.get("OTEL_SDK_DISABLED", "").lower() != "true"


def drops_every_span(tracer_provider: Any) -> bool:
    """Whether ``tracer_provider`` records no span at all (an SDK provider whose sampler is always_off): then no
    span needs starting, and no measurement can carry an exemplar. A provider that does not say (the API's proxy
    before the SDK's is set, another SDK) may record spans."""
    sampler = getattr(tracer_provider, "sampler", None)
    describe = getattr(sampler, "get_description", None)
    return callable(describe) and describe() == _ALWAYS_OFF_SAMPLER


_global_drops: bool | None = None


def global_provider_drops_every_span() -> bool:
    """``drops_every_span`` of the global tracer provider, final once an SDK provider is set (it can be set only
    once); while the global provider is still the API's proxy, spans are assumed possible and it is asked again."""
    global _global_drops
    if _global_drops is not None:
        return _global_drops
    provider = trace.get_tracer_provider()
    if getattr(provider, "sampler", None) is None:
        return False
    _global_drops = drops_every_span(provider)
    return _global_drops
