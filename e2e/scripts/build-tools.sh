#!/usr/bin/env bash
# Builds Helm and the Prometheus Operator from the Go module proxy and caches them by version:
#   ~/.cache/podtrace/helm/<version>/helm
#   ~/.cache/podtrace/prometheus-operator/<version>/prometheus-operator
# Prints nothing else when both are cached. `build-tools.sh bin helm|prometheus-operator` prints a path.
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

if [[ "${1:-}" == bin ]]; then
  case "${2:-}" in helm) echo "$HELM" ;; prometheus-operator) echo "$PROMOP" ;; *) exit 2 ;; esac
  exit 0
fi

export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod
if [[ ! -x "$HELM" ]]; then
  echo "tools: building helm $HELM_VERSION"
  mkdir -p "$(dirname "$HELM")"
  GOBIN="$(dirname "$HELM").tmp" go install -trimpath -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
  mv "$(dirname "$HELM").tmp/helm" "$HELM"; rmdir "$(dirname "$HELM").tmp"
fi
if [[ ! -x "$PROMOP" ]]; then
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
  mv "$PROMOP.tmp" "$PROMOP"
fi
