#!/usr/bin/env bash
# A real single-node Kubernetes cluster on this machine, for the end-to-end tests and the demo:
# etcd, kube-apiserver, kube-controller-manager, kube-scheduler, a kubelet and kube-proxy
# (built from the Kubernetes Go modules by build-k8s.sh) on Debian's containerd, runc and CNI
# plugins, with images from scripts/images.sh (nothing is pulled).
#
#   node.sh up DIR [--owner-pid PID]   start; DIR gets certs, configs, logs, pids, `kubeconfig`
#                                      and `node.env` (NODE_NAME, NODE_IP, KUBELET_CGROUP_ROOT, …)
#   node.sh down DIR                   stop everything `up` started and remove what it created
#   node.sh exec DIR CMD...            run CMD in the node's network and mount namespaces
#                                      (pod IPs answer there, e.g. `curl http://<pod ip>:3000/metrics`)
#
# Isolation: everything runs inside a network namespace and a private mount namespace held by
# one process (`holder.pid`), so the node's addresses, iptables rules, bridge and mounts never
# touch the host, and two runs never collide:
#   - network: a veth pair carries the node address ($NODE_IP; the kernel here has no `dummy`
#     device and the kubelet refuses loopback), the CNI bridge `cni0` carries the pods;
#   - mounts: tmpfs over /run and /var (the kubelet hard-codes /var/lib/kubelet/device-plugins
#     and /var/log/containers; containerd's images and snapshots live there too), and files
#     bind-mounted over the six kernel sysctls the kubelet would otherwise set machine-wide;
#   - cgroups are machine-wide: the kubelet's `cgroupRoot` puts every pod of this run under
#     /<basename DIR>/kubepods/…, which `down` empties and removes.
# The host sees the API server through a socat proxy on 127.0.0.1 only.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
# shellcheck source=lib.sh
source "$HERE/lib.sh"

NODE_NAME="${PODTRACE_NODE_NAME:-podtrace-node}"
NODE_IP=10.200.0.1
POD_CIDR=10.88.0.0/16
SERVICE_CIDR=10.0.0.0/24
API_SERVICE_IP=10.0.0.1
API_PORT_IN_NS=6443
IMAGES="${PODTRACE_IMAGES_DIR:-$ROOT/target/images}"
COMPONENTS=(kube-apiserver etcd kubectl kubelet kube-controller-manager kube-scheduler kube-proxy)
# What the kubelet writes to these sysctls at start (pkg/kubelet/cm setupKernelTunables); the
# files bind-mounted over them already hold these values, so nothing machine-wide changes.
SYSCTLS=(vm/overcommit_memory=1 vm/panic_on_oom=0 kernel/panic=10 kernel/panic_on_oops=1
  kernel/keys/root_maxkeys=1000000 kernel/keys/root_maxbytes=25000000)

holder() { cat "$DIR/holder.pid"; }
# in_ns CMD...: CMD inside the node's network and mount namespaces.
in_ns() { nsenter -t "$(holder)" -n -m -- "$@"; }
kctl() { "$BIN/kubectl" --kubeconfig "$DIR/kubeconfig" --cache-dir "$DIR/kubectl-cache" "$@"; }

need() {
  local missing=()
  for c in "${COMPONENTS[@]}"; do [[ -x "$BIN/$c" ]] || missing+=("$c"); done
  ((${#missing[@]} == 0)) || bash "$HERE/build-k8s.sh"
  for cmd in containerd containerd-shim-runc-v2 runc ctr socat nsenter unshare iptables-restore conntrack /usr/sbin/dnsmasq /usr/lib/cni/bridge; do
    command -v "$cmd" >/dev/null || { echo "error: $cmd is missing: run \`make setup\`" >&2; exit 1; }
  done
  for image in pause workload; do
    [[ -e "$IMAGES/$image.tar" ]] || bash "$ROOT/scripts/images.sh" pause workload
  done
  case "$DIR" in /var/* | /run/*) echo "error: DIR must not be under /var or /run (hidden in the node)" >&2; exit 2 ;; esac
}

certs() {
  ca
  leaf apiserver "/CN=kube-apiserver" "extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1,IP:$NODE_IP,IP:$API_SERVICE_IP,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
  leaf admin "/O=system:masters/CN=podtrace-admin" "extendedKeyUsage=clientAuth"
  leaf kubelet "/O=system:nodes/CN=system:node:$NODE_NAME" "extendedKeyUsage=clientAuth"
  leaf apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" "extendedKeyUsage=clientAuth"
  leaf controller-manager "/CN=system:kube-controller-manager" "extendedKeyUsage=clientAuth"
  leaf scheduler "/CN=system:kube-scheduler" "extendedKeyUsage=clientAuth"
  leaf kube-proxy "/CN=system:kube-proxy" "extendedKeyUsage=clientAuth"
  local in_ns_url="https://127.0.0.1:$API_PORT_IN_NS"
  for c in kubelet controller-manager scheduler kube-proxy; do kubeconfig "$DIR/$c.kubeconfig" "$in_ns_url" "$c"; done
}

# The namespaces: a holder process (named after DIR, so that assert-clean.sh finds it) owns
# a new network namespace and a private mount namespace.
namespaces() {
  setsid unshare --net --mount --propagation private -- \
    bash -c 'exec -a "podtrace-node-holder $1" sleep infinity' _ "$DIR" </dev/null >/dev/null 2>&1 &
  echo $! > "$DIR/holder.pid"
  for _ in $(seq 1 50); do
    [[ "$(readlink "/proc/$(holder)/ns/net")" != "$(readlink /proc/self/ns/net)" ]] && break
    sleep 0.1
  done
  mkdir -p "$DIR/sysctl"
  local binds=""
  for s in "${SYSCTLS[@]}"; do
    local file="$DIR/sysctl/${s%%=*}"; mkdir -p "$(dirname "$file")"; echo "${s#*=}" > "$file"
    binds+="mount --bind $file /proc/sys/${s%%=*}; "
  done
  in_ns bash -euo pipefail -c "
    ip link set lo up
    ip link add pt-node type veth peer name pt-peer
    ip addr add $NODE_IP/24 dev pt-node
    ip link set pt-node up; ip link set pt-peer up
    ip route add default dev pt-node
    sysctl -qw net.ipv4.ip_forward=1 net.bridge.bridge-nf-call-iptables=1
    mount -t tmpfs -o mode=0755 podtrace-node-run /run
    mkdir -p /run/lock
    mount -t tmpfs -o mode=0755 podtrace-node-var /var
    ln -s /run /var/run; ln -s /run/lock /var/lock
    mkdir -p /var/lib /var/log /var/tmp
    $binds
  "
}

# The run's kubelet cgroupRoot in every hierarchy (the kubelet refuses a root that does not
# exist). cpuset needs its cpus and mems copied from the parent before a task can join.
cgroup_root() {
  local root=$1
  for h in $(awk '$3 == "cgroup" || $3 == "cgroup2" {print $2}' /proc/self/mounts); do
    mkdir -p "$h$root"
    if [[ -e "$h/cpuset.cpus" && -e "$h$root/cpuset.cpus" ]]; then
      cat "$h/cpuset.cpus" > "$h$root/cpuset.cpus"
      cat "$h/cpuset.mems" > "$h$root/cpuset.mems"
    fi
  done
}

configs() {
  mkdir -p "$DIR/cni"
  cat > "$DIR/cni/10-podtrace.conflist" <<JSON
{"cniVersion": "1.0.0", "name": "podtrace", "plugins": [
  {"type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": false, "hairpinMode": true,
   "ipam": {"type": "host-local", "ranges": [[{"subnet": "$POD_CIDR"}]], "routes": [{"dst": "0.0.0.0/0"}]}},
  {"type": "portmap", "capabilities": {"portMappings": true}}]}
JSON
  cat > "$DIR/containerd.toml" <<TOML
version = 2
root = "/var/lib/containerd"
state = "/run/containerd"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]
[grpc]
  address = "$DIR/containerd.sock"
[plugins."io.containerd.internal.v1.opt"]
  path = "/var/lib/containerd-opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "podtrace.test/pause:1"
  # runc cannot lower oom_score_adj here: no process holds CAP_SYS_RESOURCE (real-node.md).
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$DIR/cni"
TOML
  echo "nameserver $NODE_IP" > "$DIR/resolv.conf"
  cat > "$DIR/kubelet.yaml" <<YAML
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
cgroupDriver: cgroupfs
cgroupRoot: $CGROUP_ROOT
# This machine mounts cgroup v1 controllers (hybrid); kubelet 1.35+ refuses v1 unless told.
failCgroupV1: false
failSwapOn: false
containerRuntimeEndpoint: unix://$DIR/containerd.sock
address: $NODE_IP
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $DIR/pki/ca.crt}
authorization: {mode: Webhook}
clusterDomain: cluster.local
clusterDNS: [$NODE_IP]
resolvConf: $DIR/resolv.conf
volumePluginDir: /var/lib/kubelet/volume-plugins
# The node's disk is a tmpfs: do not evict or collect images over its size.
evictionHard: {memory.available: 100Mi, nodefs.available: 1%, imagefs.available: 1%, nodefs.inodesFree: 1%}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
serializeImagePulls: false
nodeStatusUpdateFrequency: 2s
syncFrequency: 10s
YAML
  cat > "$DIR/kube-proxy.yaml" <<YAML
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: iptables
clientConnection: {kubeconfig: $DIR/kube-proxy.kubeconfig}
hostnameOverride: $NODE_NAME
clusterCIDR: $POD_CIDR
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
# 0: leave the kernel's conntrack table size and timeouts alone (they are machine-wide).
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
iptables: {syncPeriod: 10s, minSyncPeriod: 0s}
YAML
}

control_plane() {
  local c="$DIR/pki"
  start etcd nsenter -t "$(holder)" -n -m -- "$BIN/etcd" --name node --data-dir "$DIR/etcd-data" \
    --listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
    --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
    --initial-cluster node=http://127.0.0.1:2380 --unsafe-no-fsync=true --log-level=warn
  start apiserver nsenter -t "$(holder)" -n -m -- "$BIN/kube-apiserver" --etcd-servers http://127.0.0.1:2379 \
    --bind-address 0.0.0.0 --advertise-address "$NODE_IP" --secure-port "$API_PORT_IN_NS" \
    --cert-dir "$DIR/apiserver-certs" --tls-cert-file "$c/apiserver.crt" --tls-private-key-file "$c/apiserver.key" \
    --client-ca-file "$c/ca.crt" --service-account-issuer https://kubernetes.default.svc \
    --service-account-key-file "$c/sa.pub" --service-account-signing-key-file "$c/sa.key" \
    --service-cluster-ip-range "$SERVICE_CIDR" --authorization-mode Node,RBAC \
    --enable-admission-plugins NodeRestriction --allow-privileged=true \
    --kubelet-client-certificate "$c/apiserver-kubelet-client.crt" --kubelet-client-key "$c/apiserver-kubelet-client.key" \
    --kubelet-preferred-address-types InternalIP --profiling=false
  # The host reaches the API server through 127.0.0.1:$API_PORT only: each connection is
  # carried into the node's network namespace by nsenter (colons escaped for socat's parser).
  API_PORT=$(free_port)
  start proxy socat "TCP-LISTEN:$API_PORT,bind=127.0.0.1,reuseaddr,fork" \
    "SYSTEM:exec nsenter --net=/proc/$(holder)/ns/net socat STDIO TCP\\:127.0.0.1\\:$API_PORT_IN_NS"
  kubeconfig "$DIR/kubeconfig" "https://127.0.0.1:$API_PORT" admin
  wait_for "kube-apiserver ready" 120 kctl get --raw /readyz
}

node_components() {
  local c="$DIR/pki"
  start controller-manager nsenter -t "$(holder)" -n -m -- "$BIN/kube-controller-manager" \
    --kubeconfig "$DIR/controller-manager.kubeconfig" --leader-elect=false \
    --bind-address 127.0.0.1 --secure-port 10257 --use-service-account-credentials \
    --service-account-private-key-file "$c/sa.key" --root-ca-file "$c/ca.crt" \
    --service-cluster-ip-range "$SERVICE_CIDR" --profiling=false
  start scheduler nsenter -t "$(holder)" -n -m -- "$BIN/kube-scheduler" \
    --kubeconfig "$DIR/scheduler.kubeconfig" --leader-elect=false \
    --bind-address 127.0.0.1 --secure-port 10259 --profiling=false
  start dnsmasq nsenter -t "$(holder)" -n -m -- /usr/sbin/dnsmasq --keep-in-foreground --log-facility=- \
    --user=root --pid-file="$DIR/dnsmasq.run.pid" --conf-file=/dev/null --no-resolv --no-hosts \
    --bind-interfaces --listen-address="$NODE_IP" \
    --local=/cluster.local/ --address="/podtrace.test/$NODE_IP"
  start containerd nsenter -t "$(holder)" -n -m -- containerd --config "$DIR/containerd.toml"
  wait_for "containerd" 60 in_ns ctr --address "$DIR/containerd.sock" version
  for image in "$IMAGES"/*.tar; do
    in_ns ctr --address "$DIR/containerd.sock" -n k8s.io images import "$image" >/dev/null
  done
  start kubelet nsenter -t "$(holder)" -n -m -- "$BIN/kubelet" --config "$DIR/kubelet.yaml" \
    --kubeconfig "$DIR/kubelet.kubeconfig" --node-ip "$NODE_IP" --hostname-override "$NODE_NAME" --v=1
  start kube-proxy nsenter -t "$(holder)" -n -m -- "$BIN/kube-proxy" --config "$DIR/kube-proxy.yaml"
  wait_for "node $NODE_NAME Ready" 120 node_ready
  wait_for "the default ServiceAccount" 60 kctl get serviceaccount default -n default
}

node_ready() {
  [[ "$(kctl get node "$NODE_NAME" -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" == True ]]
}

# wait_for WHAT SECONDS CMD...: retries CMD every 0.5 s; on timeout, prints the logs of every
# component that died.
wait_for() {
  local what=$1 seconds=$2; shift 2
  for _ in $(seq 1 $((seconds * 2))); do
    "$@" >/dev/null 2>&1 && return 0
    sleep 0.5
  done
  echo "error: $what not reached after ${seconds}s" >&2
  for f in "$DIR"/*.pid; do
    local name; name=$(basename "$f" .pid)
    [[ -e "$DIR/$name.log" ]] || continue
    kill -0 "$(cat "$f")" 2>/dev/null || { echo "--- $name exited; last lines of $DIR/$name.log:" >&2; tail -20 "$DIR/$name.log" >&2; }
  done
  return 1
}

# The run's kubelet cgroupRoot, named after DIR (and every process started here carries DIR
# in its arguments): /podtrace-e2e-<pid>-node for a test run, /podtrace-demo for the demo.
cgroup_root_name() {
  local base; base=$(basename "$DIR")
  [[ $base == podtrace-* ]] || base="podtrace-$base"
  CGROUP_ROOT="/$base"
}

up() {
  need
  mkdir -p "$DIR"; DIR="$(cd "$DIR" && pwd)"
  cgroup_root_name
  touch "$DIR/up"
  [[ -z "$OWNER" ]] || watchdog "$OWNER" "$HERE/node.sh"
  local t0=$SECONDS
  certs
  namespaces
  cgroup_root "$CGROUP_ROOT"
  configs
  control_plane || { down; return 1; }
  node_components || { down; return 1; }
  cat > "$DIR/node.env" <<ENV
NODE_NAME=$NODE_NAME
NODE_IP=$NODE_IP
POD_CIDR=$POD_CIDR
KUBELET_CGROUP_ROOT=$CGROUP_ROOT
API_PORT=$API_PORT
HOLDER_PID=$(holder)
ENV
  echo "node $NODE_NAME ready in $((SECONDS - t0))s: kubeconfig $DIR/kubeconfig, kubectl $BIN/kubectl"
}

# every_cgroup_dir: the run's cgroup directories in every hierarchy, deepest first.
every_cgroup_dir() {
  for h in $(awk '$3 == "cgroup" || $3 == "cgroup2" {print $2}' /proc/self/mounts); do
    [[ -d "$h$CGROUP_ROOT" ]] && find "$h$CGROUP_ROOT" -depth -type d
  done
}

down() {
  rm -f "$DIR/up"
  cgroup_root_name
  # The kubelet first, so that it restarts nothing; then every process of every pod (found by
  # the run's cgroups: container processes belong to no session started here), then the rest.
  local pids=()
  for p in kubelet kube-proxy controller-manager scheduler; do
    [[ -e "$DIR/$p.pid" ]] && pids+=("$(cat "$DIR/$p.pid")") && rm -f "$DIR/$p.pid"
  done
  stop_pids "${pids[@]}"
  for _ in $(seq 1 50); do
    local procs
    procs=$(every_cgroup_dir | while read -r d; do cat "$d/cgroup.procs" 2>/dev/null; done | sort -u)
    [[ -z "$procs" ]] && break
    # shellcheck disable=SC2086
    kill -KILL $procs 2>/dev/null || true
    sleep 0.1
  done
  # Killed is not gone: a zombie keeps its cgroup busy until its parent reaps it, and cgroup.procs
  # no longer lists it. The parents are containerd's shims, so they stay alive until the cgroup
  # v2 hierarchy says the run's cgroups are empty; a shim killed earlier would hand its zombies
  # to PID 1, which on some machines (a container's minimal init) reaps them minutes later.
  local events
  events=$(awk '$3 == "cgroup2" {print $2}' /proc/self/mounts | head -1)$CGROUP_ROOT/cgroup.events
  for _ in $(seq 1 300); do
    [[ -e "$events" ]] && grep -q '^populated 1' "$events" || break
    sleep 0.1
  done
  pids=()
  for p in containerd dnsmasq apiserver etcd proxy; do
    [[ -e "$DIR/$p.pid" ]] && pids+=("$(cat "$DIR/$p.pid")") && rm -f "$DIR/$p.pid"
  done
  # containerd's shims left its session on purpose (they outlive a containerd restart).
  while read -r pid; do pids+=("$pid"); done < <(pgrep -f -- "-address $DIR/containerd.sock" || true)
  stop_pids "${pids[@]}"
  # A cgroup whose last task just died can stay busy for a moment: retry the removal.
  for _ in $(seq 1 300); do
    every_cgroup_dir | while read -r d; do rmdir "$d" 2>/dev/null || true; done
    [[ -z "$(every_cgroup_dir)" ]] && break
    sleep 0.1
  done
  if [[ -n "$(every_cgroup_dir)" ]]; then
    echo "error: cgroups of this run still busy after 30s (a process not yet reaped?):" >&2
    every_cgroup_dir | head -5 >&2
  fi
  # The holder last: with it the network namespace, its veth, bridge and iptables rules, and the
  # mount namespace with its tmpfs and container mounts are gone.
  if [[ -e "$DIR/holder.pid" ]]; then stop_pids "$(holder)"; rm -f "$DIR/holder.pid"; fi
  rm -rf "$DIR/etcd-data"
}

cmd="${1:-}"; DIR="${2:-}"; OWNER=""
case "$cmd" in
  up)
    [[ -n "$DIR" ]] || { echo "usage: $0 up DIR [--owner-pid PID]" >&2; exit 2; }
    if [[ "${3:-}" == "--owner-pid" ]]; then OWNER="${4:?--owner-pid needs a pid}"; fi
    up ;;
  down) [[ -n "$DIR" ]] || { echo "usage: $0 down DIR" >&2; exit 2; }; DIR="$(cd "$DIR" && pwd)"; down ;;
  exec) [[ -n "$DIR" && $# -ge 3 ]] || { echo "usage: $0 exec DIR CMD..." >&2; exit 2; }; shift 2; in_ns "$@" ;;
  *) echo "usage: $0 up DIR [--owner-pid PID] | down DIR | exec DIR CMD..." >&2; exit 2 ;;
esac
