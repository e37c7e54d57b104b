#!/usr/bin/env bash
# Builds and caches the peers `make bench-peers` measures the agent against:
#   ~/.cache/podtrace/cadvisor/<version>/cadvisor
#     cAdvisor from its Go module. Its main package is in the nested module
#     github.com/google/cadvisor/cmd, which the Go module proxy does not serve; the library it
#     wires (github.com/google/cadvisor/lib: the manager, the raw cgroup factory, the Prometheus
#     collectors) is served at the same version, so bench/peers/cadvisor/main.go wires it the same
#     way, in a wrapper module here (as build-tools.sh does for the Prometheus Operator).
#   ~/.cache/podtrace/node-exporter/<version>/prometheus-node-exporter
#     Debian's package, unpacked (not installed: its postinst would start a daemon on :9100).
# Prints nothing else when both are cached. `build-peers.sh bin NAME` prints a path or version.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CADVISOR_VERSION="${PODTRACE_CADVISOR_VERSION:-v0.61.0}"
CACHE="${PODTRACE_CACHE:-$HOME/.cache/podtrace}"
CADVISOR="$CACHE/cadvisor/$CADVISOR_VERSION/cadvisor"
NODE_EXPORTER_PACKAGE=prometheus-node-exporter
node_exporter_version() { apt-cache policy "$NODE_EXPORTER_PACKAGE" | awk '/Candidate:/ {print $2}'; }

if [[ "${1:-}" == bin ]]; then
  case "${2:-}" in
    cadvisor) echo "$CADVISOR" ;;
    cadvisor-version) echo "$CADVISOR_VERSION" ;;
    node-exporter) echo "$CACHE/node-exporter/$(node_exporter_version)/prometheus-node-exporter" ;;
    node-exporter-version) node_exporter_version ;;
    *) exit 2 ;;
  esac
  exit 0
fi

export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod
if [[ ! -x "$CADVISOR" ]]; then
  echo "peers: building cadvisor $CADVISOR_VERSION (github.com/google/cadvisor/lib)"
  src="$(dirname "$CADVISOR")/src"; rm -rf "$src"; mkdir -p "$src"; cd "$src"
  cat > go.mod <<MOD
module podtrace.dev/cadvisor-bench

go 1.25

require github.com/google/cadvisor/lib $CADVISOR_VERSION
MOD
  cp "$here/cadvisor/main.go" .
  go mod tidy >/dev/null
  go build -trimpath -ldflags "-s -w -X github.com/google/cadvisor/lib/version.Version=$CADVISOR_VERSION" -o "$CADVISOR.tmp" .
  mv "$CADVISOR.tmp" "$CADVISOR"
  cd "$here"
fi

version="$(node_exporter_version)"
if [[ -z "$version" || "$version" == "(none)" ]]; then
  apt-get update -qq
  version="$(node_exporter_version)"
fi
NODE_EXPORTER="$CACHE/node-exporter/$version/prometheus-node-exporter"
if [[ ! -x "$NODE_EXPORTER" ]]; then
  echo "peers: unpacking $NODE_EXPORTER_PACKAGE $version (Debian)"
  tmp="$(mktemp -d)"; chmod 755 "$tmp"; trap 'rm -rf "$tmp"' EXIT
  (cd "$tmp" && apt-get download -qq "$NODE_EXPORTER_PACKAGE=$version" >/dev/null)
  dpkg-deb -x "$tmp"/*.deb "$tmp/root"
  mkdir -p "$(dirname "$NODE_EXPORTER")"
  mv "$tmp/root/usr/bin/prometheus-node-exporter" "$NODE_EXPORTER"
fi
