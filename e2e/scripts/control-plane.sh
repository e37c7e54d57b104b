#!/usr/bin/env bash
# A real Kubernetes control plane (etcd + kube-apiserver) on 127.0.0.1, for tests and demos.
#
#   control-plane.sh up DIR [--owner-pid PID]   start; DIR gets certs, logs, pids and `kubeconfig`
#   control-plane.sh down DIR                   stop everything `up` started in DIR
#   control-plane.sh bin                        print the folder of kube-apiserver, etcd, kubectl
#
# With --owner-pid, a watchdog stops the control plane as soon as that process is gone, so a
# test run that panics, is interrupted or killed leaves nothing running and no port bound.
# The binaries come from build-k8s.sh (built once, cached under ~/.cache/podtrace/k8s/<version>).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=lib.sh
source "$HERE/lib.sh"

certs() {
  ca
  leaf apiserver "/CN=kube-apiserver" $'extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes.default.svc'
  leaf admin "/O=system:masters/CN=podtrace-admin" "extendedKeyUsage=clientAuth"
}

wait_ready() {
  for _ in $(seq 1 120); do
    if "$BIN/kubectl" --kubeconfig "$DIR/kubeconfig" get --raw /readyz >/dev/null 2>&1; then return 0; fi
    for p in etcd apiserver; do
      kill -0 "$(cat "$DIR/$p.pid")" 2>/dev/null || { echo "error: $p exited; last lines of $DIR/$p.log:" >&2; tail -20 "$DIR/$p.log" >&2; return 1; }
    done
    sleep 0.5
  done
  echo "error: kube-apiserver not ready after 60s; see $DIR/apiserver.log" >&2; return 1
}

up() {
  [[ -x "$BIN/kube-apiserver" ]] || bash "$HERE/build-k8s.sh"
  mkdir -p "$DIR"; DIR="$(cd "$DIR" && pwd)"
  certs
  local etcd_port peer_port; etcd_port=$(free_port); peer_port=$(free_port); API_PORT=$(free_port)
  start etcd "$BIN/etcd" --name e2e --data-dir "$DIR/etcd-data" \
    --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
    --listen-peer-urls "http://127.0.0.1:$peer_port" --initial-advertise-peer-urls "http://127.0.0.1:$peer_port" \
    --initial-cluster "e2e=http://127.0.0.1:$peer_port" --unsafe-no-fsync=true --log-level=warn
  local c="$DIR/pki"
  start apiserver "$BIN/kube-apiserver" --etcd-servers "http://127.0.0.1:$etcd_port" \
    --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$API_PORT" \
    --cert-dir "$DIR/apiserver-certs" --tls-cert-file "$c/apiserver.crt" --tls-private-key-file "$c/apiserver.key" \
    --client-ca-file "$c/ca.crt" --service-account-issuer https://kubernetes.default.svc \
    --service-account-key-file "$c/sa.pub" --service-account-signing-key-file "$c/sa.key" \
    --service-cluster-ip-range 10.0.0.0/24 --authorization-mode RBAC --allow-privileged=true \
    --disable-admission-plugins ServiceAccount --profiling=false
  kubeconfig "$DIR/kubeconfig" "https://127.0.0.1:$API_PORT" admin
  touch "$DIR/up"
  # Watchdog: stop everything once the owner is gone (also after SIGKILL of the owner).
  [[ -z "$OWNER" ]] || watchdog "$OWNER" "$HERE/control-plane.sh"
  wait_ready || { down; return 1; }
  echo "control plane ready: https://127.0.0.1:$API_PORT (kubeconfig $DIR/kubeconfig, kubectl $BIN/kubectl)"
}

down() {
  rm -f "$DIR/up"
  local pids=()
  for p in apiserver etcd; do
    [[ -e "$DIR/$p.pid" ]] && pids+=("$(cat "$DIR/$p.pid")") && rm -f "$DIR/$p.pid"
  done
  stop_pids "${pids[@]}"
  # The logs and certificates stay for a look after a failure; etcd's data (~120 MiB) goes.
  rm -rf "$DIR/etcd-data"
}

cmd="${1:-}"; DIR="${2:-}"; OWNER=""
if [[ "${3:-}" == "--owner-pid" ]]; then OWNER="${4:?--owner-pid needs a pid}"; fi
case "$cmd" in
  up) [[ -n "$DIR" ]] || { echo "usage: $0 up DIR [--owner-pid PID]" >&2; exit 2; }; up ;;
  down) [[ -n "$DIR" ]] || { echo "usage: $0 down DIR" >&2; exit 2; }; down ;;
  bin) echo "$BIN" ;;
  *) echo "usage: $0 up DIR [--owner-pid PID] | down DIR | bin" >&2; exit 2 ;;
esac
