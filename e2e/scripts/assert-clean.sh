#!/usr/bin/env bash
# Fails if a test control plane is still running some seconds after the tests ended: the
# watchdog of control-plane.sh must have stopped every etcd and kube-apiserver it started.
set -euo pipefail
for _ in $(seq 1 40); do
  pgrep -f 'podtrace-e2e-[0-9]' >/dev/null || { echo "e2e: no control plane left running"; exit 0; }
  sleep 0.5
done
echo "error: test control planes still running after the tests:" >&2
pgrep -fa 'podtrace-e2e-[0-9]' >&2
exit 1
