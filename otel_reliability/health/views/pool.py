"""Placeholder: the pool view is registered here once its feature lands."""

from __future__ import annotations

from otel_reliability.health.model import HealthRegistry


def register(registry: HealthRegistry) -> None:
    """Add this module's views and admin actions to ``registry``."""
