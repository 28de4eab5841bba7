"""The name a database pool goes by in ``db.client.connection.pool.name``, derived from its engine's URL.

In db/ because two floors need it: the pool instrumentor names the pools it measures, and
``run_in_transaction`` labels its retries with the same name without depending on the instrumentor.
"""

from __future__ import annotations

from typing import Any


def name_from_url(url: Any) -> str:
    """``host:port/database`` (``sqlite:<database>``); the user and the password are never part of it."""
    backend = url.get_backend_name()
    if backend == "sqlite":
        return f"sqlite:{url.database or ':memory:'}"
    host = url.host or "localhost"
    where = f"{host}:{url.port}" if url.port else host
    return f"{where}/{url.database or ''}"
