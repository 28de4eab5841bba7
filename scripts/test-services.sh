#!/usr/bin/env bash
# Installs what the tests start (PostgreSQL, Prometheus + promtool, wrk, Chromium) from Debian's packages when missing.
# The tests start their own instances on free loopback ports; nothing here stays running.
set -euo pipefail
need=()
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
command -v wrk >/dev/null 2>&1 || need+=(wrk)   # the benchmark smoke test
[ -x /usr/bin/chromium ] || need+=(chromium)    # the status page in a real browser (Playwright drives it)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "test-services: missing ${need[*]}; run as root or: sudo apt-get install -y ${need[*]}" >&2
    exit 1
  fi
  echo "test-services: installing ${need[*]} from Debian's packages"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
# Debian starts a default cluster and a prometheus service on install; the tests use their own instances.
if command -v systemctl >/dev/null 2>&1; then systemctl stop prometheus >/dev/null 2>&1 || true; fi
pkill -x prometheus >/dev/null 2>&1 || true
echo "test-services: postgresql $(ls /usr/lib/postgresql | tail -1), $(promtool --version 2>&1 | head -1), $(dpkg-query -W -f='chromium ${Version}' chromium 2>/dev/null)"
