"""Cost of the breaker instrumentation: one successful pybreaker call, and one metric collection.

Run once: ``.venv/bin/python benchmarks/breakers_bench.py``. Stdlib ``timeit``; best of 5 repeats.

- call: ``breaker.call(ok)`` through an uninstrumented pybreaker breaker, then through an instrumented one
  (no tracer provider: spans are not recording, the usual metrics-only set-up), in the same process.
- collection: ``InMemoryMetricReader.get_metrics_data()`` (every instrument of the provider, i.e. what one
  Prometheus scrape or one Readings snapshot costs) with 10, 100 and 1000 live breakers, and the Readings
  snapshot the health view takes.
"""

from __future__ import annotations

import timeit

import pybreaker
from opentelemetry.metrics import Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from otel_reliability.instrumentation.breakers import BreakersInstrumentor
from otel_reliability.instrumentation.breakers._registry import REGISTRY
from otel_reliability.readings import Readings


def ok() -> int:
    return 1


def per_call(breaker: pybreaker.CircuitBreaker, number: int = 100_000) -> float:
    return min(timeit.repeat(lambda: breaker.call(ok), number=number, repeat=7)) / number


def main() -> None:
    plain = pybreaker.CircuitBreaker(name="plain")
    per_call(plain, 20_000)  # warm-up
    before = per_call(plain)

    memory = InMemoryMetricReader()
    readings = Readings(background=False, cache_seconds=0.0)
    provider = MeterProvider(metric_readers=[memory, readings])
    BreakersInstrumentor().instrument(meter_provider=provider)
    instrumented = pybreaker.CircuitBreaker(name="instrumented")
    after = per_call(instrumented)
    plain_again = per_call(plain)  # same process, same moment: the uninstrumented breaker is untouched
    print(f"pybreaker call, uninstrumented: {before * 1e6:.2f} us (again after instrumenting: {plain_again * 1e6:.2f})")
    print(f"pybreaker call, instrumented:   {after * 1e6:.2f} us  ratio {after / min(before, plain_again):.2f}x")

    baseline = InMemoryMetricReader()
    bare = MeterProvider(metric_readers=[baseline]).get_meter("bare")
    points = [Observation(1, {"n": str(i)}) for i in range(1000)]
    bare.create_observable_gauge("bare", [lambda options: points])
    sdk = min(timeit.repeat(baseline.get_metrics_data, number=20, repeat=5)) / 20
    print(f"SDK floor: one observable gauge with 1000 constant points: {sdk * 1e3:.2f} ms ({sdk * 1e3:.1f} us/point)")

    keep = [instrumented]
    for total in (10, 100, 1000):
        while len(keep) < total:
            keep.append(pybreaker.CircuitBreaker(name=f"b{len(keep)}"))
        collect = min(timeit.repeat(memory.get_metrics_data, number=20, repeat=5)) / 20
        snap = min(timeit.repeat(lambda: readings.snapshot(max_age=0), number=20, repeat=5)) / 20
        ours = min(timeit.repeat(lambda: REGISTRY.collect(max_age=0), number=20, repeat=5)) / 20
        print(
            f"{total:5d} breakers: collection {collect * 1e3:.2f} ms, Readings snapshot {snap * 1e3:.2f} ms, "
            f"of which reading the breakers {ours * 1e3:.2f} ms ({10 * total} data points)"
        )
    BreakersInstrumentor().uninstrument()
    REGISTRY.clear()


if __name__ == "__main__":
    main()
