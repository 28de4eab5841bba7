"""Health views computed from the Readings, and the routes that serve them (``health.fastapi``)."""

from otel_reliability.health.model import (
    HEALTH_ENDPOINTS,
    AdminAction,
    CheckContext,
    HealthRegistry,
    HealthView,
    Status,
    ViewResult,
)

__all__ = ["HEALTH_ENDPOINTS", "AdminAction", "CheckContext", "HealthRegistry", "HealthView", "Status", "ViewResult"]
