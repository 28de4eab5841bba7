#!/usr/bin/env bash
# `make stack`: the OpenTelemetry Collector and Prometheus on loopback, with collector-config/ as it is.
#   collector: OTLP in on 127.0.0.1:4317 (gRPC) / 4318 (HTTP), Prometheus exporter on 127.0.0.1:8889
#   Prometheus: http://127.0.0.1:9090, scraping the collector (:8889) and an app's direct endpoint (:9464),
#               with the alert rules of collector-config/alerts.yml
# Runs until Ctrl-C, then stops both. Data lives in .stack/ (git-ignored).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build-collector.sh >/dev/null
command -v prometheus >/dev/null || { echo "stack: prometheus is missing: apt-get install prometheus" >&2; exit 1; }
mkdir -p .stack
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM

build/otelcol-reliability --config=collector-config/otelcol.yaml >.stack/collector.log 2>&1 &
pids+=($!)
prometheus --config.file=collector-config/prometheus.yml --storage.tsdb.path=.stack/prometheus \
  --web.listen-address=127.0.0.1:9090 >.stack/prometheus.log 2>&1 &
pids+=($!)

for _ in $(seq 1 60); do
  curl -fsS http://127.0.0.1:13133/ >/dev/null 2>&1 && curl -fsS http://127.0.0.1:9090/-/ready >/dev/null 2>&1 && break
  sleep 0.5
done
cat <<MSG
stack: collector  OTLP 127.0.0.1:4317 (gRPC) / 127.0.0.1:4318 (HTTP), metrics http://127.0.0.1:8889/metrics
stack: Prometheus http://127.0.0.1:9090 (alerts: http://127.0.0.1:9090/alerts); logs in .stack/
stack: send an app's metrics through the collector:
         OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4317 opentelemetry-instrument uvicorn app:app
       or let Prometheus scrape its direct endpoint on :9464 (make demo does that).
stack: Grafana (not installable here): copy collector-config/grafana/provisioning/ into Grafana's provisioning
       folder, set the dashboards path in dashboards/otel-reliability.yml to collector-config/grafana/dashboards,
       and point the datasource at http://127.0.0.1:9090.
stack: Ctrl-C stops both.
MSG
wait -n "${pids[@]}"
