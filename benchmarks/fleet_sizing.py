"""Sizing past one machine: series per app instance, and data points per second one gateway collector takes.

    python benchmarks/fleet_sizing.py [--instances 1000] [--per-request 10] [--duration 20] [--inflight 4]

1. Series per instance: the example app (PostgreSQL if installed, else SQLite) exports by OTLP to an in-process
   receiver while examples/load.py drives it through its tour (reads, writes, provider calls, an outage, an
   error burst), so the labels a real instance carries are all there. The last export is counted: OTLP data
   points, and the Prometheus series they become (a histogram point is one series per bucket, plus _sum and
   _count; plus target_info).
2. One gateway: that export, cloned for N simulated instances (each its own service.instance.id, 20 services),
   is sent by OTLP/gRPC to build/otelcol-reliability running collector-config/gateway.yaml, as fast as it
   accepts with a few requests in flight; the gateway remote-writes to a sink that answers 204 (a separate
   process), so the figure is the gateway's, not a store's. The gateway's own telemetry says how many points
   it exported and failed; /proc says how much CPU it used and its peak memory.

The sender pre-serialises every request (a message concatenated with another is their merge, so k instances
per request are k serialised messages back to back), so it costs little next to the gateway. Everything on
127.0.0.1; writes benchmarks/FLEET.md. (telemetrygen v0.165.1 is not served by the Go module proxy here.)
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support import (  # noqa: E402
    BIN,
    OtlpReceiver,
    background,
    free_port,
    http,
    start_app,
    start_postgres,
    wait_until,
)

OUT = ROOT / "benchmarks" / "FLEET.md"
EXPORT = "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export"

SINK = textwrap.dedent(
    """
    import http.server, json, sys, threading
    stats = {"requests": 0, "bytes": 0}
    lock = threading.Lock()
    class H(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            n = int(self.headers.get("Content-Length", 0)); self.rfile.read(n)
            with lock:
                stats["requests"] += 1; stats["bytes"] += n
            self.send_response(204); self.end_headers()
        def do_GET(self):
            body = json.dumps(stats).encode()
            self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers()
            self.wfile.write(body)
        def log_message(self, *a): pass
    http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
    """
)


# --- 1. one real instance ------------------------------------------------------------------------------------


def capture_instance(tmp: Path) -> tuple[Any, str]:
    """The last OTLP metrics export of the example app after a tour; and the database it used."""
    receiver = OtlpReceiver()
    fake_port = free_port()
    pg = None
    try:
        try:
            pg = start_postgres()
            database = "PostgreSQL"
            url = pg.url("psycopg")
        except Exception:  # SQLite is the fallback where PostgreSQL is not installed
            database, url = "SQLite", f"sqlite:///{tmp / 'sizing.db'}"
        fake = [str(BIN / "python"), str(ROOT / "examples" / "fake_services.py"), "--port", str(fake_port)]
        with background(fake, log_path=tmp / "fake.log"):
            fake_url = f"http://127.0.0.1:{fake_port}"
            wait_until(lambda: http("GET", fake_url + "/health")[0] == 200, what="fake services")
            app = start_app("app.main:app", app_dir=ROOT / "examples", log_dir=tmp, env={
                "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
                "OTEL_METRIC_EXPORT_INTERVAL": "1000", "OTEL_SERVICE_NAME": "example", "FAKE_SERVICES_URL": fake_url,
                "DATABASE_URL": url, "EXAMPLE_DATA_DIR": str(tmp / "data"),
            })  # fmt: skip
            try:
                tour = [str(BIN / "python"), str(ROOT / "examples" / "load.py"), "--scenario", "tour",
                        "--url", app.url, "--fake-url", fake_url, "--quiet"]  # fmt: skip
                subprocess.run(tour, check=True, timeout=300)
                time.sleep(2.5)  # two more exports after the last request
            finally:
                app.stop()
        requests = [r for r in receiver.metrics if r.resource_metrics]
        return requests[-1], database
    finally:
        receiver.close()
        if pg is not None:
            pg.stop("immediate")


def count(request: Any) -> dict[str, int]:
    points = series = histogram_points = 0
    for rm in request.resource_metrics:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                kind = metric.WhichOneof("data")
                for dp in getattr(metric, kind).data_points:
                    points += 1
                    if kind == "histogram":
                        histogram_points += 1
                        series += len(dp.bucket_counts) + 2  # le buckets (with +Inf), _sum, _count
                    else:
                        series += 1
    return {"otlp_points": points, "histogram_points": histogram_points, "prometheus_series": series + 1}


# --- 2. one gateway ------------------------------------------------------------------------------------------


def payloads(template: Any, instances: int, per_request: int) -> list[bytes]:
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

    single = []
    for i in range(instances):
        request = ExportMetricsServiceRequest()
        request.CopyFrom(template)
        for rm in request.resource_metrics:
            for kv in rm.resource.attributes:
                if kv.key == "service.instance.id":
                    kv.value.string_value = f"sim-{i:05d}"
                elif kv.key == "service.name":
                    kv.value.string_value = f"service-{i % 20:02d}"
        single.append(request.SerializeToString())
    return [b"".join(single[i : i + per_request]) for i in range(0, instances, per_request)]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def internal_metric(port: int, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))


def drive_gateway(
    tmp: Path, bodies: list[bytes], points_per_body: int, duration: float, inflight: int, rate: float
) -> dict[str, Any]:
    """Send ``bodies`` round robin for ``duration`` s: at ``rate`` points/s, or as fast as accepted (rate 0)."""
    import grpc

    collector = ROOT / "build" / "otelcol-reliability"
    tmp.mkdir(parents=True, exist_ok=True)
    ports = {name: free_port() for name in ("grpc", "health", "sink", "telemetry")}
    overlay = tmp / "telemetry.yaml"
    overlay.write_text(
        "service:\n  telemetry:\n    metrics:\n      level: detailed\n      readers:\n        - pull:\n"
        f"            exporter:\n              prometheus:\n                host: 127.0.0.1\n"
        f"                port: {ports['telemetry']}\n"
    )
    env = {
        "OTEL_RELIABILITY_COLLECTOR_GRPC_ENDPOINT": f"127.0.0.1:{ports['grpc']}",
        "OTEL_RELIABILITY_COLLECTOR_HEALTH_ENDPOINT": f"127.0.0.1:{ports['health']}",
        "OTEL_RELIABILITY_REMOTE_WRITE_URL": f"http://127.0.0.1:{ports['sink']}/api/v1/write",
    }
    gateway_cmd = [str(collector), f"--config={ROOT / 'collector-config' / 'gateway.yaml'}", f"--config={overlay}"]
    with (
        background([str(BIN / "python"), "-c", SINK, str(ports["sink"])], log_path=tmp / "sink.log"),
        background(gateway_cmd, log_path=tmp / "gateway.log", env=env) as gateway,
    ):
        wait_until(lambda: http("GET", f"http://127.0.0.1:{ports['health']}/")[0] == 200, what="gateway")
        channel = grpc.insecure_channel(f"127.0.0.1:{ports['grpc']}")
        export = channel.unary_unary(EXPORT, request_serializer=lambda b: b, response_deserializer=lambda b: b)
        ok = failed = 0
        lock = threading.Lock()
        stop = time.monotonic() + duration

        gap = points_per_body * inflight / rate if rate > 0 else 0.0  # seconds between one sender's requests

        def sender(offset: int) -> None:
            nonlocal ok, failed
            i = offset
            due = time.monotonic() + gap * offset / inflight
            while time.monotonic() < stop:
                if gap:
                    time.sleep(max(0.0, due - time.monotonic()))
                    due += gap
                try:
                    export(bodies[i % len(bodies)], timeout=30)
                    with lock:
                        ok += 1
                except grpc.RpcError:
                    with lock:
                        failed += 1
                i += inflight

        cpu0, t0 = cpu_seconds(gateway.pid), time.monotonic()
        threads = [threading.Thread(target=sender, args=(k,)) for k in range(inflight)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        accepted = ok * points_per_body
        sending = time.monotonic() - t0
        # Let the gateway finish exporting what it accepted, then read its own counts.
        wait_until(lambda: internal_metric(ports["telemetry"], "otelcol_exporter_sent_metric_points")
                   + internal_metric(ports["telemetry"], "otelcol_exporter_send_failed_metric_points") >= accepted,
                   timeout=120, interval=0.5, what="gateway export drained")  # fmt: skip
        wall, cpu = time.monotonic() - t0, cpu_seconds(gateway.pid) - cpu0
        sent = internal_metric(ports["telemetry"], "otelcol_exporter_sent_metric_points")
        send_failed = internal_metric(ports["telemetry"], "otelcol_exporter_send_failed_metric_points")
        rss = peak_rss_mb(gateway.pid)
        with urllib.request.urlopen(f"http://127.0.0.1:{ports['sink']}/", timeout=5) as resp:
            sink = json.loads(resp.read())
        channel.close()
    return {
        "requests_ok": ok, "requests_refused": failed, "points_accepted": accepted, "points_exported": sent,
        "points_export_failed": send_failed, "offered_points_per_second": rate or None,
        "sending_seconds": round(sending, 1),
        "drain_seconds": round(wall - sending, 1), "wall_seconds": round(wall, 1), "gateway_cpu_seconds": round(cpu, 1),
        "points_per_second": round(sent / wall), "points_per_cpu_second": round(sent / cpu) if cpu else None,
        "gateway_peak_rss_mb": round(rss), "remote_write_requests": sink["requests"],
        "remote_write_mb": round(sink["bytes"] / 1e6, 1),
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--instances", type=int, default=1000, help="simulated app instances (default %(default)s)")
    parser.add_argument(
        "--interval",
        type=float,
        default=10.0,
        help="seconds between two exports of one instance, for the paced run (default %(default)s)",
    )
    parser.add_argument("--per-request", type=int, default=10, help="instances per OTLP request, as an agent batches")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of the paced run (default %(default)s)")
    parser.add_argument("--burst", type=float, default=5.0, help="seconds of the as-fast-as-accepted run")
    parser.add_argument("--inflight", type=int, default=4, help="OTLP requests in flight (default %(default)s)")
    parser.add_argument("--no-write", action="store_true", help="print the figures, leave FLEET.md alone")
    args = parser.parse_args(argv)  # fmt: skip
    tmp = Path(tempfile.mkdtemp(prefix="otel-rel-fleet-"))
    template, database = capture_instance(tmp)
    per = count(template)
    print(json.dumps({"per_instance": per, "database": database}), flush=True)
    bodies = payloads(template, args.instances, args.per_request)
    points_per_body = per["otlp_points"] * args.per_request
    rate = args.instances * per["otlp_points"] / args.interval
    paced = drive_gateway(tmp / "paced", bodies, points_per_body, args.duration, args.inflight, rate)
    print(json.dumps(paced), flush=True)
    burst = drive_gateway(tmp / "burst", bodies, points_per_body, args.burst, args.inflight, 0.0)
    print(json.dumps(burst), flush=True)
    if not args.no_write:
        write(args, per, database, {"paced": paced, "burst": burst})
    return 0


def write(args: argparse.Namespace, per: dict[str, int], database: str, runs: dict[str, dict[str, Any]]) -> None:
    samples_per_point = per["prometheus_series"] / per["otlp_points"]
    paced, burst = runs["paced"], runs["burst"]
    rows = [
        ("offered data points/s", f"{paced['offered_points_per_second']:.0f}", "as fast as accepted"),
        ("sending / draining afterwards", f"{paced['sending_seconds']} s / {paced['drain_seconds']} s",
         f"{burst['sending_seconds']} s / {burst['drain_seconds']} s"),
        ("OTLP requests accepted / refused", f"{paced['requests_ok']} / {paced['requests_refused']}",
         f"{burst['requests_ok']} / {burst['requests_refused']}"),
        ("data points exported / failed", f"{paced['points_exported']:.0f} / {paced['points_export_failed']:.0f}",
         f"{burst['points_exported']:.0f} / {burst['points_export_failed']:.0f}"),
        ("**data points/s exported** (sending + draining)", f"**{paced['points_per_second']}**",
         f"**{burst['points_per_second']}**"),
        ("the same in Prometheus samples/s", f"{paced['points_per_second'] * samples_per_point:.0f}",
         f"{burst['points_per_second'] * samples_per_point:.0f}"),
        ("gateway CPU (cores on average)", f"{paced['gateway_cpu_seconds']} s "
         f"({paced['gateway_cpu_seconds'] / paced['wall_seconds']:.2f})",
         f"{burst['gateway_cpu_seconds']} s ({burst['gateway_cpu_seconds'] / burst['wall_seconds']:.2f})"),
        ("data points per gateway CPU-second", str(paced["points_per_cpu_second"]),
         str(burst["points_per_cpu_second"])),
        ("gateway peak RSS", f"{paced['gateway_peak_rss_mb']} MB", f"{burst['gateway_peak_rss_mb']} MB"),
        ("remote write requests / MB", f"{paced['remote_write_requests']} / {paced['remote_write_mb']}",
         f"{burst['remote_write_requests']} / {burst['remote_write_mb']}"),
    ]  # fmt: skip
    table = "\n".join(f"| {a} | {b} | {c} |" for a, b, c in rows)
    OUT.write_text(
        f"# Fleet sizing (benchmarks/fleet_sizing.py)\n\n"
        f"Taken {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC on {platform.machine()}, {os.cpu_count()} cores "
        f"**shared with several other engineers' builds and test runs (a busy machine: load average ~3 on 2 cores)**; "
        f"the sender, the gateway and the sink share those cores too. Read the throughput as a floor.\n\n"
        f"## Series per app instance\n\n"
        f"The example app on {database}, after examples/load.py's tour (its last OTLP export):\n\n"
        f"| OTLP data points | of which histograms | Prometheus series (incl. target_info) |\n|---|---|---|\n"
        f"| {per['otlp_points']} | {per['histogram_points']} | {per['prometheus_series']} |\n\n"
        f"## One gateway\n\n"
        f"collector-config/gateway.yaml; {args.instances} simulated instances, {args.per_request} per OTLP request "
        f"(as an agent batches), {args.inflight} requests in flight; remote write to a sink answering 204. Paced: "
        f"every instance exporting every {args.interval:g} s for {args.duration:g} s. Burst: as fast as the gateway "
        f"accepts for {args.burst:g} s, then until it has exported everything.\n\n"
        f"| measure | paced | burst |\n|---|---|---|\n{table}\n"
    )  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
