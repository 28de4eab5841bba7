#!/usr/bin/env bash
# Build the Go programs the tests run beside the collector, from the Go module proxy, and leave build/<binary>
# pointing at each: Prometheus 3 and promtool, VictoriaMetrics (single node), Helm.
#
#   bash scripts/build-tools.sh                 # all of them
#   bash scripts/build-tools.sh helm prometheus # some
#
# Cached OUTSIDE the clone (scripts/go-env.sh), one directory per tool and version:
#   tools/<tool>-<version>/<binary>
# so a second run only re-creates the symlinks, and changing a version below builds anew beside the old one.
# A first build on a new machine downloads the modules and compiles: several minutes per tool.
#
# Needs: Go (PATH, or /usr/local/go/bin/go, or $GO) and the Go module proxy. Environment:
#   OTEL_RELIABILITY_CACHE   cache root (default /var/cache/otel-reliability)
#   GO                       go executable to use
#   OTEL_RELIABILITY_FORCE_TOOLS_BUILD=1   rebuild even if cached binaries exist
set -euo pipefail

die() {
    echo "build-tools: error: $*" >&2
    exit 1
}
log() { echo "build-tools: $*" >&2; }

# tool -> "version package..." (each package's last path element is the binary's name)
declare -A TOOLS=(
    [prometheus]="v0.316.0 github.com/prometheus/prometheus/cmd/prometheus github.com/prometheus/prometheus/cmd/promtool"
    [victoria-metrics]="v1.151.0 github.com/VictoriaMetrics/VictoriaMetrics/app/victoria-metrics"
    [helm]="v3.22.0 helm.sh/helm/v3/cmd/helm"
)
ORDER=(prometheus victoria-metrics helm)

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=go-env.sh
source "$REPO_ROOT/scripts/go-env.sh"
# A module whose go.mod asks for a newer Go than the one installed gets that toolchain from the proxy.
export GOTOOLCHAIN="${GOTOOLCHAIN:-auto}"

cached() { # dir package... : every binary present
    local dir="$1" pkg
    shift
    for pkg in "$@"; do [[ -x "$dir/${pkg##*/}" ]] || return 1; done
}

link() { # dir package...
    local dir="$1" pkg
    shift
    mkdir -p "$REPO_ROOT/build"
    for pkg in "$@"; do
        ln -sfn "$dir/${pkg##*/}" "$REPO_ROOT/build/${pkg##*/}"
        log "build/${pkg##*/} -> $dir/${pkg##*/}"
    done
}

build_tool() {
    local tool="$1" spec version dir packages pkg work start
    spec="${TOOLS[$tool]:-}"
    [[ -n "$spec" ]] || die "unknown tool '$tool' (known: ${ORDER[*]})"
    read -r version packages <<<"$spec"
    read -r -a packages <<<"$packages"
    dir="$CACHE_ROOT/tools/$tool-$version"
    if [[ "${OTEL_RELIABILITY_FORCE_TOOLS_BUILD:-0}" != "1" ]] && cached "$dir" "${packages[@]}"; then
        link "$dir" "${packages[@]}"
        return
    fi
    mkdir -p "$CACHE_ROOT/tools"
    # One build per tool at a time (a test run and `make tools` may start together); the second waits and reuses.
    exec 9>"$CACHE_ROOT/tools/.$tool.lock"
    flock 9
    if [[ "${OTEL_RELIABILITY_FORCE_TOOLS_BUILD:-0}" != "1" ]] && cached "$dir" "${packages[@]}"; then
        log "$tool $version was built by a concurrent run"
    else
        go_toolchain
        work="$(mktemp -d "$CACHE_ROOT/tools/.$tool-$version.XXXXXX")"
        trap 'rm -rf "$work"' EXIT
        start=$SECONDS
        for pkg in "${packages[@]}"; do
            log "building ${pkg##*/} $version ($("$GO" version | cut -d' ' -f3); first build: several minutes)"
            GOBIN="$work" "$GO" install "$pkg@$version" >"$work/build.log" 2>&1 || {
                tail -n 30 "$work/build.log" >&2
                die "GOBIN=$work $GO install $pkg@$version failed; last lines above (is the Go module proxy reachable? GOPROXY=$("$GO" env GOPROXY))"
            }
        done
        mkdir -p "$dir"
        # Into place only once all were built: a binary present means it is complete.
        for pkg in "${packages[@]}"; do mv -f "$work/${pkg##*/}" "$dir/${pkg##*/}"; done
        rm -rf "$work"
        trap - EXIT
        log "$tool $version built in $((SECONDS - start)) s"
    fi
    flock -u 9
    link "$dir" "${packages[@]}"
}

if [[ $# -eq 0 ]]; then set -- "${ORDER[@]}"; fi
for tool in "$@"; do build_tool "$tool"; done
