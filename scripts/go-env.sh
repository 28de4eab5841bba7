# Sourced by the scripts that build Go binaries (build-collector.sh, build-tools.sh): one Go toolchain and one
# cache OUTSIDE the clone, under ${OTEL_RELIABILITY_CACHE:-/var/cache/otel-reliability}:
#   go/        GOPATH and GOMODCACHE (downloaded modules)
#   gocache/   GOCACHE (compiled packages, shared by every build, so a second tool reuses the first's packages)
#   tools/     finished binaries, one directory per tool and version
# Sets CACHE_ROOT and GO, exports the Go variables. The caller defines die() and log().

CACHE_ROOT="${OTEL_RELIABILITY_CACHE:-/var/cache/otel-reliability}"
mkdir -p "$CACHE_ROOT" 2>/dev/null || die "cannot create cache directory $CACHE_ROOT (set OTEL_RELIABILITY_CACHE to a writable directory)"
[[ -w "$CACHE_ROOT" ]] || die "cache directory $CACHE_ROOT is not writable (set OTEL_RELIABILITY_CACHE)"
CACHE_ROOT="$(cd "$CACHE_ROOT" && pwd)"

# go_toolchain: find Go and export the cache variables (only when something has to be built).
go_toolchain() {
    if [[ -n "${GO:-}" ]]; then
        :
    elif command -v go >/dev/null 2>&1; then
        GO="$(command -v go)"
    elif [[ -x /usr/local/go/bin/go ]]; then
        GO=/usr/local/go/bin/go
    else
        die "Go is not installed (looked for \$GO, 'go' on PATH and /usr/local/go/bin/go); install Go >= 1.24"
    fi
    "$GO" version >/dev/null 2>&1 || die "'$GO version' failed"
    # ocb runs `go` from PATH itself: make sure it finds the same one.
    export PATH="$(dirname "$GO"):$PATH"
    export GOPATH="$CACHE_ROOT/go"
    export GOMODCACHE="$CACHE_ROOT/go/pkg/mod"
    export GOCACHE="$CACHE_ROOT/gocache"
    export GOFLAGS="${GOFLAGS:-} -modcacherw"
    export CGO_ENABLED=0
    mkdir -p "$GOPATH" "$GOMODCACHE" "$GOCACHE"
}
