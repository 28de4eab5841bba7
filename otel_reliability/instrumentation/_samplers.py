"""What the SDK's own samplers would answer, read from their descriptions, so that the lean tracer
(``_lean_span.py``) decides without asking them: whether a sampler is made of the SDK's samplers only (they ignore
the span's attributes), whether it is ``ParentBased`` with its default delegates (a valid parent's sampled flag
decides), and the bound its root compares a trace id with. For the parent's flag to decide, the sampler's class
must also come from the SDK's module: a sampler of the user's that describes itself as ``ParentBased`` is asked."""

from __future__ import annotations

import re
from typing import Any

from opentelemetry.sdk.trace.sampling import TraceIdRatioBased

TRACE_ID_LIMIT = TraceIdRatioBased.TRACE_ID_LIMIT

_BLIND_SAMPLERS = re.compile(
    r"(ParentBased|TraceIdRatioBased|AlwaysOnSampler|AlwaysOffSampler|root|remoteParent"
    r"Sampled|remoteParentNotSampled|localParentSampled|localParentNotSampled|[{}:,.0-9e-])+"
)


_PARENT_DELEGATES = (
    ",remoteParentSampled:AlwaysOnSampler,remoteParentNotSampled:AlwaysOffSampler,"
    "localParentSampled:AlwaysOnSampler,localParentNotSampled:AlwaysOffSampler}"
)


def parent_decides(sampler: Any) -> bool:
    """Whether ``sampler`` is the SDK's ``ParentBased`` with its default delegates (whatever its root): then a valid
    parent's sampled flag decides, and the parent's trace state is the child's."""
    try:
        description = sampler.get_description()
    except Exception:
        return False
    return (
        type(sampler).__module__ == "opentelemetry.sdk.trace.sampling"
        and description.startswith("ParentBased{root:")
        and description.endswith(_PARENT_DELEGATES)
    )


def root_bound(sampler: Any) -> int | None:
    """For a ``ParentBased`` sampler whose root is ``AlwaysOnSampler``, ``AlwaysOffSampler`` or
    ``TraceIdRatioBased{rate}``: the bound the root compares a trace id's low 64 bits with (sampled below it), as
    ``TraceIdRatioBased`` computes it; else None (the sampler is asked)."""
    root = sampler.get_description()[len("ParentBased{root:") : -len(_PARENT_DELEGATES)]
    if root == "AlwaysOnSampler":
        return TRACE_ID_LIMIT + 1
    if root == "AlwaysOffSampler":
        return 0
    ratio = re.fullmatch(r"TraceIdRatioBased\{(.+)\}", root)
    if ratio is None:
        return None
    try:
        rate = float(ratio.group(1))
    except ValueError:
        return None
    return TraceIdRatioBased.get_bound_for_rate(rate) if 0.0 <= rate <= 1.0 else None


def attribute_blind(sampler: Any) -> bool:
    """Whether ``sampler`` is made of the SDK's samplers only (its description says), which ignore attributes."""
    try:
        return _BLIND_SAMPLERS.fullmatch(sampler.get_description()) is not None
    except Exception:
        return False
