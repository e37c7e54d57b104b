#!/usr/bin/env bash
# Builds Helm, the Prometheus Operator (with its config reloader) and Prometheus from the Go
# module proxy and caches them by version:
#   ~/.cache/podtrace/helm/<version>/helm
#   ~/.cache/podtrace/prometheus-operator/<version>/prometheus-operator
#   ~/.cache/podtrace/prometheus-operator/<version>/prometheus-config-reloader
#   ~/.cache/podtrace/prometheus/<version>/prometheus
#   ~/.cache/podtrace/otelcol/<version>/otelcol
# Prometheus is built because Debian's lacks Kubernetes service discovery (it is built without
# it: "field kubernetes_sd_configs not found"), which the Prometheus Operator's configuration
# needs. Its Go module is tagged v0.<major*100+minor>.<patch> (v0.316.0 is Prometheus 3.16.0).
# otelcol is an OpenTelemetry Collector with only the OTLP receiver and the OTLP/HTTP exporter
# (e2e/tools/otelcol: what the official builder, ocb, generates, cut down to those two), the real
# OTLP/gRPC receiver of the agent's OTLP tests; <version> is its collector release.
# Prints nothing else when all are cached. `build-tools.sh bin NAME` prints a path.
#
# Helm has no replace directives, so `go install` works. The Prometheus Operator's module
# replaces its two nested modules with local paths, so it is built from a wrapper module that
# requires the same version of all three (the same trick as build-k8s.sh).
set -euo pipefail
HELM_VERSION="${PODTRACE_HELM_VERSION:-v3.21.4}"
PROMOP_VERSION="${PODTRACE_PROMETHEUS_OPERATOR_VERSION:-v0.93.0}"
CACHE="${PODTRACE_CACHE:-$HOME/.cache/podtrace}"
HELM="$CACHE/helm/$HELM_VERSION/helm"
PROMOP="$CACHE/prometheus-operator/$PROMOP_VERSION/prometheus-operator"
RELOADER="$CACHE/prometheus-operator/$PROMOP_VERSION/prometheus-config-reloader"
PROMETHEUS_VERSION="${PODTRACE_PROMETHEUS_VERSION:-3.16.0}"
# Only the Kubernetes service discovery is built in (Prometheus' build tags): the others pull in
# every cloud SDK and double the build time.
PROMETHEUS_TAGS=remove_all_sd,enable_kubernetes_sd
PROMETHEUS="$CACHE/prometheus/v$PROMETHEUS_VERSION-kubernetes-sd/prometheus"
OTELCOL_SRC="$(cd "$(dirname "${BASH_SOURCE[0]}")/../tools/otelcol" && pwd)"
OTELCOL_VERSION="$(awk '$1 == "go.opentelemetry.io/collector/otelcol" { print $2 }' "$OTELCOL_SRC/go.mod")"
OTELCOL="$CACHE/otelcol/$OTELCOL_VERSION/otelcol"

if [[ "${1:-}" == bin ]]; then
  case "${2:-}" in
    helm) echo "$HELM" ;;
    prometheus-operator) echo "$PROMOP" ;;
    prometheus-config-reloader) echo "$RELOADER" ;;
    version) echo "$PROMOP_VERSION" ;;
    prometheus) echo "$PROMETHEUS" ;;
    prometheus-version) echo "v$PROMETHEUS_VERSION" ;;
    otelcol) echo "$OTELCOL" ;;
    *) exit 2 ;;
  esac
  exit 0
fi

export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod
if [[ ! -x "$HELM" ]]; then
  echo "tools: building helm $HELM_VERSION"
  mkdir -p "$(dirname "$HELM")"
  GOBIN="$(dirname "$HELM").tmp" go install -trimpath -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
  mv "$(dirname "$HELM").tmp/helm" "$HELM"; rmdir "$(dirname "$HELM").tmp"
fi
if [[ ! -x "$PROMOP" || ! -x "$RELOADER" ]]; then
  echo "tools: building prometheus-operator $PROMOP_VERSION"
  src="$(dirname "$PROMOP")/src"; rm -rf "$src"; mkdir -p "$src"; cd "$src"
  m=github.com/prometheus-operator/prometheus-operator
  cat > go.mod <<MOD
module podtrace.dev/prometheus-operator-wrapper

go 1.25

require $m $PROMOP_VERSION

replace $m/pkg/apis/monitoring => $m/pkg/apis/monitoring $PROMOP_VERSION

replace $m/pkg/client => $m/pkg/client $PROMOP_VERSION
MOD
  printf '//go:build tools\n\npackage tools\n\nimport _ "%s/cmd/operator"\n' "$m" > tools.go
  # -e: tidy also walks the tests of dependencies, where an old cloud.google.com/go makes
  # compute/metadata ambiguous; the operator's own build graph is unaffected.
  go mod tidy -e >/dev/null 2>&1
  go build -trimpath -ldflags "-s -w" -o "$PROMOP.tmp" "$m/cmd/operator"
  go build -trimpath -ldflags "-s -w" -o "$RELOADER.tmp" "$m/cmd/prometheus-config-reloader"
  mv "$PROMOP.tmp" "$PROMOP"; mv "$RELOADER.tmp" "$RELOADER"
fi
if [[ ! -x "$PROMETHEUS" ]]; then
  echo "tools: building prometheus $PROMETHEUS_VERSION with Kubernetes discovery only"
  IFS=. read -r major minor patch <<<"$PROMETHEUS_VERSION"
  module_version="v0.$((major * 100 + minor)).$patch"
  mkdir -p "$(dirname "$PROMETHEUS")"
  GOBIN="$(dirname "$PROMETHEUS").tmp" go install -trimpath -tags "$PROMETHEUS_TAGS" \
    -ldflags "-s -w -X github.com/prometheus/common/version.Version=$PROMETHEUS_VERSION" \
    "github.com/prometheus/prometheus/cmd/prometheus@$module_version"
  mv "$(dirname "$PROMETHEUS").tmp/prometheus" "$PROMETHEUS"; rmdir "$(dirname "$PROMETHEUS").tmp"
fi
if [[ ! -x "$OTELCOL" ]]; then
  echo "tools: building otelcol $OTELCOL_VERSION (OTLP receiver, OTLP/HTTP exporter)"
  mkdir -p "$(dirname "$OTELCOL")"
  (cd "$OTELCOL_SRC" && GOFLAGS=-mod=readonly go build -trimpath -ldflags "-s -w" -o "$OTELCOL.tmp" .)
  mv "$OTELCOL.tmp" "$OTELCOL"
fi
