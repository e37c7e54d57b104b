# Shared by control-plane.sh and node.sh (sourced, not run). Expects $DIR to be set.

VERSION="${PODTRACE_K8S_VERSION:-v1.36.3}"
BIN="${PODTRACE_CACHE:-$HOME/.cache/podtrace}/k8s/$VERSION/bin"

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# start NAME CMD...: CMD in its own session (so `down` can stop its whole process group),
# logging to $DIR/NAME.log, its pid in $DIR/NAME.pid.
start() {
  local name=$1; shift
  setsid "$@" >"$DIR/$name.log" 2>&1 < /dev/null &
  echo $! > "$DIR/$name.pid"
}

# ca: a CA in $DIR/pki.
ca() {
  local c="$DIR/pki"; mkdir -p "$c"
  openssl req -x509 -new -nodes -newkey rsa:2048 -days 3650 -subj "/CN=podtrace-e2e-ca" \
    -keyout "$c/ca.key" -out "$c/ca.crt" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
  openssl genrsa -out "$c/sa.key" 2048 2>/dev/null
  openssl rsa -in "$c/sa.key" -pubout -out "$c/sa.pub" 2>/dev/null
}

# leaf NAME SUBJECT EXTENSIONS: an X.509 v3 certificate signed by the CA (rustls rejects v1).
leaf() {
  local c="$DIR/pki"
  openssl req -new -nodes -newkey rsa:2048 -subj "$2" -keyout "$c/$1.key" -out "$c/$1.csr" 2>/dev/null
  printf '%s\n' "basicConstraints=CA:FALSE" "keyUsage=critical,digitalSignature,keyEncipherment" "$3" > "$c/$1.ext"
  openssl x509 -req -in "$c/$1.csr" -CA "$c/ca.crt" -CAkey "$c/ca.key" -CAcreateserial \
    -days 3650 -extfile "$c/$1.ext" -out "$c/$1.crt" 2>/dev/null
}

# kubeconfig FILE SERVER CERT_NAME: a kubeconfig for the client certificate $DIR/pki/CERT_NAME.
kubeconfig() {
  local c="$DIR/pki"
  cat > "$1" <<KC
apiVersion: v1
kind: Config
clusters:
- name: podtrace-e2e
  cluster:
    server: $2
    certificate-authority-data: $(base64 -w0 "$c/ca.crt")
users:
- name: $3
  user:
    client-certificate-data: $(base64 -w0 "$c/$3.crt")
    client-key-data: $(base64 -w0 "$c/$3.key")
contexts:
- name: podtrace-e2e
  context: {cluster: podtrace-e2e, user: $3}
current-context: podtrace-e2e
KC
}

# stop_pids PID...: SIGTERM each process group, SIGKILL what is left after 3 s. A test
# cluster holds nothing worth a graceful shutdown.
stop_pids() {
  (($#)) || return 0
  for pid in "$@"; do kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true; done
  for _ in $(seq 1 15); do
    local alive=0
    for pid in "$@"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [[ $alive == 0 ]] && return 0
    sleep 0.2
  done
  for pid in "$@"; do kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true; done
}

# watchdog OWNER_PID SCRIPT: runs `SCRIPT down $DIR` once OWNER_PID is gone (also after a
# SIGKILL of the owner), or once $DIR/up is removed by an explicit `down`.
watchdog() {
  setsid bash -c 'while kill -0 "$1" 2>/dev/null && [[ -e "$2/up" ]]; do sleep 1; done; "$3" down "$2"' \
    _ "$1" "$DIR" "$2" >/dev/null 2>&1 < /dev/null &
}
