"""One module per health view; each exposes ``register(registry)``. Listed in ``otel_reliability.health.builtin``."""
