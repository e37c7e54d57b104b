#!/usr/bin/env bash
# The standalone demo (`make demo`): builds the agent, starts a small workload in cgroups of its
# own (/podtrace-demo/web and /podtrace-demo/batch, with memory and CPU limits), runs
# `podtrace-agent standalone` on it and shows `podtrace-agent top`. Ctrl-C stops and removes
# everything it started. Without a terminal (CI), it prints the table a few times and stops.
#
#   DEMO_SECONDS=N   stop after N seconds instead of waiting for Ctrl-C
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
STATE="${DEMO_DIR:-$HOME/.cache/podtrace/demo-standalone}"
METRICS_ADDR="${PODTRACE_METRICS_ADDR:-127.0.0.1:3000}"
# The agent's own variables choose the other two ports too (a test gives free ones).
HEALTH_ADDR="${PODTRACE_HEALTH_ADDR:-127.0.0.1:50100}"
ADMIN_ADDR="${PODTRACE_ADMIN_ADDR:-127.0.0.1:2323}"
CGROUP=/podtrace-demo

if [[ $(id -u) != 0 ]]; then
  echo "demo: cgroups need root; re-running with sudo"
  exec sudo -E env "PATH=$PATH" bash "$0" "$@"
fi

# What the demo needs: python3 for the workload, cargo to build.
command -v cargo >/dev/null || { echo "demo: Rust is required (https://rustup.rs)" >&2; exit 1; }
if ! command -v python3 >/dev/null; then
  echo "demo: installing python3"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3 >/dev/null
fi

echo "demo: building podtrace-agent"
(cd "$ROOT" && cargo build -q -p podtrace-agent --bin podtrace-agent)
AGENT="${CARGO_TARGET_DIR:-$ROOT/target}/debug/podtrace-agent"
mkdir -p "$STATE"

# Every hierarchy the machine mounts: cgroup v2 and the v1 memory/cpu/cpuacct/blkio controllers.
mapfile -t HIER < <(awk '$0 ~ / - cgroup2 / {print $5} $0 ~ / - cgroup / && $NF ~ /(memory|cpu|cpuacct|blkio)/ {print $5}' /proc/self/mountinfo | sort -u)
V1_MEMORY=$(awk '$0 ~ / - cgroup / && $NF ~ /memory/ {print $5}' /proc/self/mountinfo | head -1)
V1_CPU=$(awk '$0 ~ / - cgroup / && $NF ~ /(^|,)cpu(,|$)/ {print $5}' /proc/self/mountinfo | head -1)
V2=$(awk '$0 ~ / - cgroup2 / {print $5}' /proc/self/mountinfo | head -1)

PIDS=()
AGENT_PID=""
cleanup() {
  trap - EXIT INT TERM
  echo; echo "demo: stopping"
  [[ -n $AGENT_PID ]] && kill "$AGENT_PID" 2>/dev/null && wait "$AGENT_PID" 2>/dev/null || true
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  for h in "${HIER[@]}"; do
    for c in web batch; do rmdir "$h$CGROUP/$c" 2>/dev/null || true; done
    rmdir "$h$CGROUP" 2>/dev/null || true
  done
  echo "demo: everything it started is stopped and its cgroups are removed"
}
trap cleanup EXIT INT TERM

# The cgroups, with limits: web 64 MiB and half a CPU, batch 96 MiB and a quarter CPU.
[[ -z $V1_MEMORY && -n $V2 ]] && echo "+memory +cpu +io" > "$V2/cgroup.subtree_control" 2>/dev/null || true
for h in "${HIER[@]}"; do
  mkdir -p "$h$CGROUP/web" "$h$CGROUP/batch"
  [[ -z $V1_MEMORY && $h == "$V2" ]] && echo "+memory +cpu +io" > "$h$CGROUP/cgroup.subtree_control" 2>/dev/null || true
done
limit() { # group memory_bytes quota_us
  if [[ -n $V1_MEMORY ]]; then
    echo "$2" > "$V1_MEMORY$CGROUP/$1/memory.limit_in_bytes"
  else
    echo "$2" > "$V2$CGROUP/$1/memory.max"
  fi
  if [[ -n $V1_CPU ]]; then
    echo 100000 > "$V1_CPU$CGROUP/$1/cpu.cfs_period_us"; echo "$3" > "$V1_CPU$CGROUP/$1/cpu.cfs_quota_us"
  else
    echo "$3 100000" > "$V2$CGROUP/$1/cpu.max"
  fi
}
limit web $((64 << 20)) 50000
limit batch $((96 << 20)) 25000

start_in() { # group, then the command
  local group=$1; shift
  local enter=""
  for h in "${HIER[@]}"; do enter+="echo \$\$ > $h$CGROUP/$group/cgroup.procs; "; done
  sh -c "$enter exec \"\$@\"" sh "$@" >/dev/null 2>&1 &
  PIDS+=($!)
}
# web: an HTTP server and a client hitting it (CPU, threads, sockets).
start_in web python3 -c '
import http.server, threading, urllib.request, time
srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
threading.Thread(target=srv.serve_forever, daemon=True).start()
url = "http://127.0.0.1:%d/" % srv.server_address[1]
while True:
    try: urllib.request.urlopen(url).read()
    except Exception: pass
    time.sleep(0.01)
'
# batch: grows its memory towards the limit (the alert level climbs), then starts over; burns CPU.
start_in batch python3 -c '
import time
chunks = []
while True:
    for _ in range(80):
        chunk = bytearray(1 << 20)
        for i in range(0, len(chunk), 4096): chunk[i] = 1
        chunks.append(chunk)
        t = time.time()
        while time.time() - t < 0.25: sum(range(1000))
    chunks.clear()
'

cat > "$STATE/agent.yaml" <<YAML
# The demo's standalone config: MonitoringProfile and PodTrace documents in the CRD format.
apiVersion: podtrace.dev/v1alpha1
kind: MonitoringProfile
metadata: {name: demo}
spec:
  interval: 2s
  history: {size: 30}
  probes: {include: [tcpRtt, tcpConnect, networkBytes, fsLatency, fsBytes, cpuBlock]}
  resourceLimits: {warningPercent: 60, criticalPercent: 75, emergencyPercent: 90}
---
apiVersion: podtrace.dev/v1alpha1
kind: PodTrace
metadata: {name: demo-app, namespace: demo}
spec:
  selector:
    matchLabels: {podtrace.dev/cgroup: "$CGROUP/*"}
  profileRef: {name: demo}
YAML

"$AGENT" standalone --config "$STATE/agent.yaml" --metrics-addr "$METRICS_ADDR" \
  --health-addr "$HEALTH_ADDR" --admin-addr "$ADMIN_ADDR" >"$STATE/agent.log" 2>&1 &
AGENT_PID=$!
for _ in $(seq 100); do
  "$AGENT" health live --endpoint "$HEALTH_ADDR" >/dev/null 2>&1 && break
  kill -0 "$AGENT_PID" 2>/dev/null || { echo "demo: the agent stopped; its log:"; cat "$STATE/agent.log"; exit 1; }
  sleep 0.2
done
cat <<INFO
demo: podtrace-agent runs in standalone mode on $CGROUP/{web,batch}
  metrics:        curl -s http://$METRICS_ADDR/metrics | grep -E 'podtrace_(resource|rtt|latency|network|fs|cpu_block)'
  health:         $AGENT health live --endpoint $HEALTH_ADDR
  admin channel:  echo 'Mprocess:disable' | python3 -c 'import socket,sys; s=socket.create_connection(("${ADMIN_ADDR%:*}",${ADMIN_ADDR##*:})); s.sendall(sys.stdin.read().encode()); print(s.recv(100).decode())'
  config:         $STATE/agent.yaml (edit it: the agent reloads it)   log: $STATE/agent.log
INFO
sleep 5
if [[ -t 1 && -z ${DEMO_SECONDS:-} ]]; then
  "$AGENT" top --endpoint "http://$METRICS_ADDR" || true
else
  end=$((SECONDS + ${DEMO_SECONDS:-10}))
  while ((SECONDS < end)); do "$AGENT" top --endpoint "http://$METRICS_ADDR" --once; echo; sleep 3; done
fi
