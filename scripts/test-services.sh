#!/usr/bin/env bash
# Installs what the tests start (PostgreSQL, wrk, Chromium) from Debian's packages when missing. Prometheus 3 and
# promtool are built from their module by scripts/build-tools.sh (Debian's are 2.x).
# The tests start their own instances on free loopback ports; nothing here stays running.
set -euo pipefail
need=()
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
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
# Debian starts a default cluster on install; the tests start their own instances.
echo "test-services: postgresql $(ls /usr/lib/postgresql | tail -1), $(dpkg-query -W -f='chromium ${Version}' chromium 2>/dev/null)"
