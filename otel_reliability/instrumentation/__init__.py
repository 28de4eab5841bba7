"""The custom instrumentors, one module (or package) each, registered as ``reliability_*`` entry points."""

from __future__ import annotations

from typing import Any


def install_quiet_views(provider: Any) -> bool:
    """Add the package's views (``_published.quiet_views``) to an SDK MeterProvider built without them; for the
    configurator, which must not reach into this package's private modules. Imported on call: importing
    ``otel_reliability.instrumentation`` stays free of the SDK."""
    from otel_reliability.instrumentation._published import install_quiet_views as install

    return install(provider)
