#!/usr/bin/env bash
# Builds the Kubernetes binaries the tests run (kube-apiserver, kubectl, and for the real node
# kubelet, kube-controller-manager, kube-scheduler, kube-proxy) and etcd from the Go module
# proxy, and caches them under ~/.cache/podtrace/k8s/<version>/bin. A second run with the
# binaries present does nothing; a run with some missing builds only those.
#
# Why a wrapper module: `go install k8s.io/kubernetes/cmd/kube-apiserver@vX` fails because
# k8s.io/kubernetes requires its staging modules at v0.0.0 with `replace => ./staging/...`.
# The wrapper requires k8s.io/kubernetes and replaces every staging module with its published
# v0.Y.Z tag (read from the downloaded go.mod, so the list is always the right one).
# etcd is built in the same wrapper from go.etcd.io/etcd/server/v3/etcdmain, so its version is
# exactly the one this Kubernetes release pins.
set -euo pipefail

VERSION="${PODTRACE_K8S_VERSION:-v1.36.3}"
CACHE="${PODTRACE_CACHE:-$HOME/.cache/podtrace}/k8s/$VERSION"
BIN="$CACHE/bin"

COMMANDS=(kube-apiserver kubectl kubelet kube-controller-manager kube-scheduler kube-proxy)
missing=()
for cmd in "${COMMANDS[@]}" etcd; do [[ -x "$BIN/$cmd" ]] || missing+=("$cmd"); done
if ((${#missing[@]} == 0)); then
  echo "k8s $VERSION: cached in $BIN"
  exit 0
fi

command -v go >/dev/null || { echo "error: Go is required to build kube-apiserver (install Go ≥ 1.26)" >&2; exit 1; }
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod
SRC="$CACHE/src"
mkdir -p "$SRC/etcd" "$BIN"
cd "$SRC"

echo "k8s $VERSION: resolving staging modules"
gomod=$(cd /tmp && go mod download -json "k8s.io/kubernetes@$VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
minor=${VERSION#v1.}
staging_version="v0.$minor"

{
  echo "module podtrace.dev/k8s-wrapper"
  echo
  grep -E '^go [0-9]' "$gomod"
  grep -E '^godebug ' "$gomod" || true
  echo
  echo "require k8s.io/kubernetes $VERSION"
  echo
  grep -E '=> \./staging/src/' "$gomod" | awk -v v="$staging_version" '{print "replace " $1 " => " $1 " " v}'
} > go.mod

cat > tools.go <<'GO'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-proxy"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
	_ "k8s.io/kubernetes/cmd/kubelet"
)
GO
cat > etcd/main.go <<'GO'
// Command etcd is etcd's own main, built against the version Kubernetes pins.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
GO

echo "k8s $VERSION: go mod tidy"
go mod tidy >/dev/null 2>&1 || go mod tidy
ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$VERSION -X k8s.io/client-go/pkg/version.gitVersion=$VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=${minor%%.*}"
for cmd in "${missing[@]}"; do
  if [[ $cmd == etcd ]]; then
    echo "k8s $VERSION: building etcd"
    go build -trimpath -ldflags "-s -w" -o "$BIN/etcd.tmp" ./etcd
  else
    echo "k8s $VERSION: building $cmd (the first one takes 5-20 minutes on 2 cores, the next ones less)"
    go build -trimpath -ldflags "$ldflags" -o "$BIN/$cmd.tmp" "k8s.io/kubernetes/cmd/$cmd"
  fi
  mv "$BIN/$cmd.tmp" "$BIN/$cmd"
done
echo "k8s $VERSION: built into $BIN"
