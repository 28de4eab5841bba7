"""Figure 12: start-up cost, ours against upstream's distro, side by side (``--only startup``).

``opentelemetry-instrument python -c <count modules>`` with the same packages installed (this venv: the contrib
FastAPI instrumentation included) and the same signals (Prometheus metrics, no traces or logs exported), under:

- ``upstream``: ``opentelemetry-distro`` and its configurator chosen by name, every ``reliability_*`` entry
  point disabled (what a user of upstream's distro with these instrumentations installed runs);
- ``ours``: our distro, defaults;
- ``bare``: ``python -c`` alone, for scale.

Each round runs the three once, in a rotated order, so machine drift hits them alike; the figure is the median of
the rounds, and of the per-round differences ours - upstream (wall time, peak RSS: the process's ``VmHWM`` when
the program starts; modules: ``len(sys.modules)`` when the program starts).
Each run gets its own free metrics port. The bar (issue 23): ours <= upstream + 0.1 s and + 5 MiB.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support import BIN, free_port, upstream_distro_dir  # noqa: E402

# Modules and the peak RSS so far (VmHWM: this process image's high-water mark, which exec resets; ru_maxrss would
# carry the forking parent's) when the program's first line runs, i.e. after start-up.
PROGRAM = (
    "import sys; print(len(sys.modules)); "
    "print(next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmHWM:')))"
)
LIBRARIES = ("sqlalchemy", "fastapi", "anyio", "pybreaker")


def _ours() -> list[str]:
    points = metadata.entry_points(group="opentelemetry_instrumentor")
    return sorted({ep.name for ep in points if ep.name.startswith("reliability_")})


def variants() -> dict[str, tuple[list[str], dict[str, str]]]:
    signals = {"OTEL_METRICS_EXPORTER": "prometheus", "OTEL_TRACES_EXPORTER": "none", "OTEL_LOGS_EXPORTER": "none"}
    instrument = [str(BIN / "opentelemetry-instrument"), str(BIN / "python")]
    upstream = {
        **signals,
        "PYTHONPATH": str(upstream_distro_dir()),
        "OTEL_PYTHON_DISTRO": "distro",
        "OTEL_PYTHON_CONFIGURATOR": "configurator",
        "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": ",".join(_ours()),
    }
    return {
        "upstream": (instrument, upstream),
        "ours": (instrument, {"OTEL_RELIABILITY_STARTUP_LINE": "false"}),
        "bare": ([str(BIN / "python")], {}),
    }


def run_once(cmd: list[str], extra: dict[str, str]) -> tuple[float, float, int, list[str]]:
    """Wall seconds, peak RSS (MiB), modules at program start, and which of LIBRARIES were imported."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.update({"OTEL_EXPORTER_PROMETHEUS_HOST": "127.0.0.1", "OTEL_EXPORTER_PROMETHEUS_PORT": str(free_port())})
    env.update(extra)
    probe = PROGRAM + f"; print(','.join(m for m in {LIBRARIES!r} if m in sys.modules))"
    started = time.perf_counter()
    proc = subprocess.Popen([*cmd, "-c", probe], env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None
    out = proc.stdout.read()
    proc.wait()
    elapsed = time.perf_counter() - started
    proc.stdout.close()
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd} exited {proc.returncode}")
    modules, peak_kib, libs = [*out.strip().splitlines(), ""][:3]
    return elapsed, int(peak_kib) / 1024, int(modules), [m for m in libs.split(",") if m]


def measure(rounds: int) -> dict[str, dict[str, list[float]]]:
    chosen = variants()
    names = list(chosen)
    results: dict[str, dict[str, list[float]]] = {n: {"wall": [], "rss": [], "modules": []} for n in names}
    libraries: dict[str, list[str]] = {}
    for r in range(rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            cmd, extra = chosen[name]
            wall, rss, modules, libs = run_once(cmd, extra)
            results[name]["wall"].append(wall)
            results[name]["rss"].append(rss)
            results[name]["modules"].append(modules)
            libraries[name] = libs
    results["_libraries"] = {n: libs for n, libs in libraries.items()}  # type: ignore[dict-item]
    return results


def figure(rounds: int, quick: bool) -> list[str]:
    rounds = 1 if quick else max(rounds, 15)
    load_before = os.getloadavg()
    results = measure(rounds)
    load_after = os.getloadavg()
    libraries: dict[str, list[str]] = results.pop("_libraries")  # type: ignore[assignment]
    med = {n: {k: statistics.median(v) for k, v in m.items()} for n, m in results.items()}
    ours, upstream = results["ours"], results["upstream"]
    diff_wall = statistics.median(o - u for o, u in zip(ours["wall"], upstream["wall"], strict=True))
    diff_rss = statistics.median(o - u for o, u in zip(ours["rss"], upstream["rss"], strict=True))
    ok = diff_wall <= 0.1 and diff_rss <= 5
    lines = [
        "## 12. Start-up (`--only startup`)",
        "",
        f"`opentelemetry-instrument python -c ...`, median of {rounds} interleaved rounds; load average "
        f"{load_before[0]:.1f} before, {load_after[0]:.1f} after (2 cores shared: absolute times are the machine's, "
        "the per-round differences are the figure).",
        "",
        "| variant | wall s | peak RSS MiB | modules at program start | app libraries imported before the program |",
        "|---|---|---|---|---|",
    ]
    for name in ("upstream", "ours", "bare"):
        m = med[name]
        libs = ", ".join(libraries.get(name) or []) or "none"
        lines.append(f"| {name} | {m['wall']:.2f} | {m['rss']:.1f} | {m['modules']:.0f} | {libs} |")
    lines += [
        "",
        f"ours - upstream, median of per-round differences: {diff_wall:+.2f} s, {diff_rss:+.1f} MiB "
        f"(bar: <= +0.1 s and <= +5 MiB: {'met' if ok else 'MISSED'}).",
        "",
    ]
    return lines


if __name__ == "__main__":
    print("\n".join(figure(int(sys.argv[1]) if len(sys.argv) > 1 else 15, False)))
