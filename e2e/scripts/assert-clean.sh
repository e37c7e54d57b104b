#!/usr/bin/env bash
# Fails if a finished test run left anything behind some seconds after the tests ended: the
# watchdogs of control-plane.sh and node.sh must have stopped every process they started
# (etcd, kube-apiserver, the node's kubelet, containerd and its shims, the namespace holder:
# all carry their run's folder /tmp/podtrace-e2e-<pid>… in their arguments), and node.sh must
# have removed its pods' cgroups. Its mounts and network namespace live and die with the
# holder process, so no holder left means none of them left.
#
# Only runs whose test process (<pid>) has exited count: another test run on the same machine
# at the same time keeps its cluster.
set -euo pipefail
finished() { # finished LINE...: the lines whose podtrace-e2e-<pid> names a dead process
  while read -r line; do
    [[ -n "$line" ]] || continue
    local pid; pid=$(grep -o 'podtrace-e2e-[0-9]*' <<<"$line" | head -1 | grep -o '[0-9]*$')
    kill -0 "$pid" 2>/dev/null || echo "$line"
  done
}
leftovers() {
  {
    pgrep -fa 'podtrace-e2e-[0-9]' || true
    ls -d /sys/fs/cgroup/*/podtrace-e2e-[0-9]* 2>/dev/null || true
    grep 'podtrace-e2e-[0-9]' /proc/self/mounts || true
  } | finished
}
for _ in $(seq 1 60); do
  [[ -z "$(leftovers)" ]] && { echo "e2e: no test cluster, cgroup or mount left behind"; exit 0; }
  sleep 0.5
done
echo "error: left behind after the tests:" >&2
leftovers >&2
exit 1
