#!/usr/bin/env bash
# Build otelcol-reliability (the OpenTelemetry Collector described by collector-config/builder-config.yaml)
# with the OpenTelemetry Collector Builder (ocb), and leave build/otelcol-reliability pointing at it.
#
# Everything is cached OUTSIDE the clone (scripts/go-env.sh: Go modules, compiled packages), and:
#   tools/builder-<ver>/    the ocb binary
#   collector-<hash>/       one finished build per manifest; <hash> = first 12 hex digits of the
#                           manifest's sha256, so editing the manifest builds anew and reverting it is free.
# A second run with the same manifest only re-creates the symlink (well under a second).
#
# Needs: Go (PATH, or /usr/local/go/bin/go, or $GO) and the Go module proxy. Environment:
#   OTEL_RELIABILITY_CACHE   cache root (default /var/cache/otel-reliability)
#   GO                       go executable to use
#   OTEL_RELIABILITY_FORCE_COLLECTOR_BUILD=1   rebuild even if a cached binary exists
set -euo pipefail

OCB_VERSION="v0.165.0" # keep at the core release of the manifest
BINARY_NAME="otelcol-reliability"

die() {
    echo "build-collector: error: $*" >&2
    exit 1
}
log() { echo "build-collector: $*" >&2; }

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MANIFEST="$REPO_ROOT/collector-config/builder-config.yaml"
[[ -f "$MANIFEST" ]] || die "manifest not found: $MANIFEST"

# shellcheck source=go-env.sh
source "$REPO_ROOT/scripts/go-env.sh"

HASH="$(sha256sum "$MANIFEST" | cut -c1-12)"
BUILD_DIR="$CACHE_ROOT/collector-$HASH"
BINARY="$BUILD_DIR/$BINARY_NAME"
LINK="$REPO_ROOT/build/$BINARY_NAME"

link_binary() {
    mkdir -p "$REPO_ROOT/build"
    ln -sfn "$BINARY" "$LINK"
    log "build/$BINARY_NAME -> $BINARY"
}

if [[ -x "$BINARY" && "${OTEL_RELIABILITY_FORCE_COLLECTOR_BUILD:-0}" != "1" ]]; then
    log "cached collector for manifest $HASH found"
    link_binary
    exit 0
fi

# One build at a time per cache (a test run and `make collector` may start together).
if command -v flock >/dev/null 2>&1; then
    exec 9>"$CACHE_ROOT/.build.lock"
    flock 9
    if [[ -x "$BINARY" && "${OTEL_RELIABILITY_FORCE_COLLECTOR_BUILD:-0}" != "1" ]]; then
        log "collector for manifest $HASH was built by a concurrent run"
        link_binary
        exit 0
    fi
fi

go_toolchain

# --- ocb ----------------------------------------------------------------------------------------------------
OCB_DIR="$CACHE_ROOT/tools/builder-$OCB_VERSION"
OCB="$OCB_DIR/builder"
if [[ ! -x "$OCB" ]]; then
    log "installing ocb $OCB_VERSION into $OCB_DIR ($("$GO" version))"
    mkdir -p "$OCB_DIR"
    GOBIN="$OCB_DIR" "$GO" install "go.opentelemetry.io/collector/cmd/builder@$OCB_VERSION" ||
        die "could not install ocb: GOBIN=$OCB_DIR $GO install go.opentelemetry.io/collector/cmd/builder@$OCB_VERSION failed (is the Go module proxy reachable? GOPROXY=$("$GO" env GOPROXY))"
fi

# --- build into a temporary directory, then move it into place ----------------------------------------------
WORK_DIR="$(mktemp -d "$CACHE_ROOT/.collector-$HASH.XXXXXX")"
trap 'rm -rf "$WORK_DIR"' EXIT
chmod 755 "$WORK_DIR" # mktemp makes it 0700; other users may run the binary
cp "$MANIFEST" "$WORK_DIR/builder-config.yaml"
LOG_FILE="$WORK_DIR/build.log"
log "building $BINARY_NAME from manifest $HASH (first build downloads modules and compiles: several minutes)"
start=$SECONDS
if ! (cd "$WORK_DIR" && "$OCB" --config=builder-config.yaml) >"$LOG_FILE" 2>&1; then
    tail -n 40 "$LOG_FILE" >&2
    die "ocb failed: (cd $WORK_DIR && $OCB --config=builder-config.yaml); last lines of its log above"
fi
[[ -x "$WORK_DIR/src/$BINARY_NAME" ]] || die "ocb succeeded but $WORK_DIR/src/$BINARY_NAME is missing"
"$WORK_DIR/src/$BINARY_NAME" --version >/dev/null || die "the built binary does not run: $WORK_DIR/src/$BINARY_NAME --version"
mv "$WORK_DIR/src/$BINARY_NAME" "$WORK_DIR/$BINARY_NAME"
rm -rf "$BUILD_DIR"
mv "$WORK_DIR" "$BUILD_DIR"
trap - EXIT
log "built in $((SECONDS - start)) s: $BINARY ($(du -h "$BINARY" | cut -f1))"
link_binary
