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
VERSION="${PODTRACE_K8S_VERSION:-v1.36.3}"
BIN="${PODTRACE_CACHE:-$HOME/.cache/podtrace}/k8s/$VERSION/bin"

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# Starts "$@" in its own session (so `down` can stop its whole process group), logging to $log.
start() {
  local name=$1; shift
  setsid "$@" >"$DIR/$name.log" 2>&1 < /dev/null &
  echo $! > "$DIR/$name.pid"
}

certs() {
  local c="$DIR/pki"; mkdir -p "$c"
  openssl req -x509 -new -nodes -newkey rsa:2048 -days 3650 -subj "/CN=podtrace-e2e-ca" \
    -keyout "$c/ca.key" -out "$c/ca.crt" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
  # leaf NAME SUBJECT EXTENSIONS: an X.509 v3 certificate signed by the CA (rustls rejects v1).
  leaf() {
    openssl req -new -nodes -newkey rsa:2048 -subj "$2" -keyout "$c/$1.key" -out "$c/$1.csr" 2>/dev/null
    printf '%s\n' "basicConstraints=CA:FALSE" "keyUsage=critical,digitalSignature,keyEncipherment" "$3" > "$c/$1.ext"
    openssl x509 -req -in "$c/$1.csr" -CA "$c/ca.crt" -CAkey "$c/ca.key" -CAcreateserial \
      -days 3650 -extfile "$c/$1.ext" -out "$c/$1.crt" 2>/dev/null
  }
  leaf apiserver "/CN=kube-apiserver" $'extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes.default.svc'
  leaf admin "/O=system:masters/CN=podtrace-admin" "extendedKeyUsage=clientAuth"
  openssl genrsa -out "$c/sa.key" 2048 2>/dev/null
  openssl rsa -in "$c/sa.key" -pubout -out "$c/sa.pub" 2>/dev/null
}

kubeconfig() {
  local c="$DIR/pki"
  cat > "$DIR/kubeconfig" <<KC
apiVersion: v1
kind: Config
clusters:
- name: podtrace-e2e
  cluster:
    server: https://127.0.0.1:$API_PORT
    certificate-authority-data: $(base64 -w0 "$c/ca.crt")
users:
- name: admin
  user:
    client-certificate-data: $(base64 -w0 "$c/admin.crt")
    client-key-data: $(base64 -w0 "$c/admin.key")
contexts:
- name: podtrace-e2e
  context: {cluster: podtrace-e2e, user: admin}
current-context: podtrace-e2e
KC
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
  kubeconfig
  if [[ -n "$OWNER" ]]; then
    # Watchdog: stop everything once the owner is gone (also after SIGKILL of the owner).
    setsid bash -c 'while kill -0 "$1" 2>/dev/null && [[ -e "$2/apiserver.pid" ]]; do sleep 1; done; "$3" down "$2"' \
      _ "$OWNER" "$DIR" "$HERE/control-plane.sh" >/dev/null 2>&1 < /dev/null &
  fi
  wait_ready || { down; return 1; }
  echo "control plane ready: https://127.0.0.1:$API_PORT (kubeconfig $DIR/kubeconfig, kubectl $BIN/kubectl)"
}

down() {
  local pids=()
  for p in apiserver etcd; do
    [[ -e "$DIR/$p.pid" ]] && pids+=("$(cat "$DIR/$p.pid")") && rm -f "$DIR/$p.pid"
  done
  [[ ${#pids[@]} -gt 0 ]] || return 0
  for pid in "${pids[@]}"; do kill -TERM -- "-$pid" 2>/dev/null || true; done
  # A test control plane holds nothing worth a graceful shutdown: give it 3s, then SIGKILL.
  for _ in $(seq 1 15); do
    local alive=0
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [[ $alive == 0 ]] && return 0
    sleep 0.2
  done
  for pid in "${pids[@]}"; do kill -KILL -- "-$pid" 2>/dev/null || true; done
}

cmd="${1:-}"; DIR="${2:-}"; OWNER=""
if [[ "${3:-}" == "--owner-pid" ]]; then OWNER="${4:?--owner-pid needs a pid}"; fi
case "$cmd" in
  up) [[ -n "$DIR" ]] || { echo "usage: $0 up DIR [--owner-pid PID]" >&2; exit 2; }; up ;;
  down) [[ -n "$DIR" ]] || { echo "usage: $0 down DIR" >&2; exit 2; }; down ;;
  bin) echo "$BIN" ;;
  *) echo "usage: $0 up DIR [--owner-pid PID] | down DIR | bin" >&2; exit 2 ;;
esac
