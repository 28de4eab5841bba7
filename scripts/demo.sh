#!/usr/bin/env bash
# `make demo`: the example app under opentelemetry-instrument, with fake external services, a short scenario
# so there is something to see, the morning checklist, and where to look. Serves until Ctrl-C, then stops
# everything it started.
#
# Environment (all optional): DEMO_APP_PORT (8000), DEMO_METRICS_PORT (9464), DEMO_FAKE_PORT (9100),
# DEMO_SCENARIO (tour), DEMO_DURATION (9 seconds), DEMO_DATA_DIR (.demo), DEMO_NO_WAIT=1 (exit after printing).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BIN=${DEMO_BIN:-$ROOT/.venv/bin}
APP_PORT=${DEMO_APP_PORT:-8000}
METRICS_PORT=${DEMO_METRICS_PORT:-9464}
FAKE_PORT=${DEMO_FAKE_PORT:-9100}
SCENARIO=${DEMO_SCENARIO:-tour}
DURATION=${DEMO_DURATION:-9}
DATA_DIR=${DEMO_DATA_DIR:-$ROOT/.demo}
APP=http://127.0.0.1:$APP_PORT
FAKE=http://127.0.0.1:$FAKE_PORT

for tool in python opentelemetry-instrument uvicorn otel-reliability; do
  [[ -x $BIN/$tool ]] || { echo "demo: $BIN/$tool is missing; run 'make demo' (it installs .venv first)" >&2; exit 1; }
done
port_busy() { "$BIN/python" -c "import socket,sys; s=socket.socket(); sys.exit(s.connect_ex(('127.0.0.1', $1)) != 0)"; }
for port in "$APP_PORT" "$METRICS_PORT" "$FAKE_PORT"; do
  if port_busy "$port"; then
    echo "demo: port $port on 127.0.0.1 is in use (another demo?); set DEMO_APP_PORT/DEMO_METRICS_PORT/DEMO_FAKE_PORT" >&2
    exit 1
  fi
done

# A fresh database each run; demo tokens kept in a file (not printed) so the checklist can open every view.
mkdir -p "$DATA_DIR"
rm -f "$DATA_DIR"/example.db "$DATA_DIR"/example.db-*
TOKENS=$DATA_DIR/tokens.env
if [[ ! -s $TOKENS ]]; then
  umask 077
  "$BIN/python" -c "import secrets; print(f'export OTEL_RELIABILITY_HEALTH_TOKEN={secrets.token_urlsafe(18)}'); \
print(f'export OTEL_RELIABILITY_ADMIN_TOKEN={secrets.token_urlsafe(18)}')" >"$TOKENS"
fi
# shellcheck disable=SC1090
source "$TOKENS"

PIDS=()
stop_all() {
  trap - EXIT INT TERM
  if ((${#PIDS[@]})); then
    echo "demo: stopping (pids ${PIDS[*]})"
    kill -TERM "${PIDS[@]}" 2>/dev/null || true
    wait "${PIDS[@]}" 2>/dev/null || true
  fi
}
trap stop_all EXIT
trap 'exit 130' INT TERM

"$BIN/python" examples/fake_services.py --port "$FAKE_PORT" >"$DATA_DIR/fake_services.log" 2>&1 &
PIDS+=($!)

(
  cd examples
  export DATABASE_URL="sqlite:///$DATA_DIR/example.db" FAKE_SERVICES_URL="$FAKE"
  export OTEL_SERVICE_NAME=${OTEL_SERVICE_NAME:-otel-reliability-example}
  export OTEL_EXPORTER_PROMETHEUS_HOST=127.0.0.1 OTEL_EXPORTER_PROMETHEUS_PORT="$METRICS_PORT"
  # Short enough to watch: an episode processing for over a minute is "stuck" in the demo (default 2 h).
  export OTEL_RELIABILITY_STUCK_THRESHOLD=${OTEL_RELIABILITY_STUCK_THRESHOLD:-60}
  export OTEL_RELIABILITY_STUCK_CHECK_INTERVAL=${OTEL_RELIABILITY_STUCK_CHECK_INTERVAL:-10}
  export EXAMPLE_BREAKER_RESET_TIMEOUT=${EXAMPLE_BREAKER_RESET_TIMEOUT:-30}
  exec "$BIN/opentelemetry-instrument" "$BIN/uvicorn" app.main:app --host 127.0.0.1 --port "$APP_PORT"
) >"$DATA_DIR/app.log" 2>&1 &
PIDS+=($!)

echo "demo: starting the fake services ($FAKE) and the example app ($APP) ..."
if ! "$BIN/python" - "$APP/api/health/live" "$FAKE/health" <<'EOF'
import sys, time, urllib.request
deadline = time.monotonic() + 60
for url in sys.argv[1:]:
    while True:
        try:
            urllib.request.urlopen(url, timeout=2).read()
            break
        except Exception:
            if time.monotonic() > deadline:
                sys.exit(f"demo: {url} did not answer within 60 s")
            time.sleep(0.2)
EOF
then
  echo "demo: the app did not start; its log ($DATA_DIR/app.log):" >&2
  tail -n 40 "$DATA_DIR/app.log" >&2
  exit 1
fi

echo "demo: running the '$SCENARIO' scenario for up to ${DURATION}s (steady traffic, an outage of gemini, an error burst)"
"$BIN/python" examples/load.py --scenario "$SCENARIO" --url "$APP" --fake-url "$FAKE" --duration "$DURATION"

echo
echo "demo: the morning checklist (otel-reliability check --url $APP):"
"$BIN/otel-reliability" check --url "$APP" || true

cat <<EOF

Where to look:
  health         $APP/api/health  (/live, /ready, /circuit-breakers, /error-rate, /resources, /operations, /db-timeout)
  protected      $APP/api/health/pool and $APP/api/admin/monitoring/stuck-operations need the demo tokens:
                 source $TOKENS   then   curl -H "Authorization: Bearer \$OTEL_RELIABILITY_HEALTH_TOKEN" $APP/api/health/pool
  metrics        http://127.0.0.1:$METRICS_PORT/metrics  (Prometheus text, the same numbers as the health views)
  checklist      source $TOKENS && .venv/bin/otel-reliability check --url $APP
  more scenarios .venv/bin/python examples/load.py --url $APP --fake-url $FAKE --scenario outage|error-burst|pool-saturation|stuck-job|contention
  stage outages  curl -X POST '$FAKE/control/gcs?failure_rate=1'   (and failure_rate=0 to recover)
  collector + Prometheus: make stack   (in another terminal, next to this demo)
  logs           $DATA_DIR/app.log, $DATA_DIR/fake_services.log
EOF

if [[ ${DEMO_NO_WAIT:-0} == 1 ]]; then
  exit 0
fi
echo
echo "demo: serving until Ctrl-C"
wait "${PIDS[1]}"
