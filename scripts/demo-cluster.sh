#!/usr/bin/env bash
# `make demo-cluster`: a real single-node cluster on this machine (e2e/scripts/node.sh), podtrace
# installed into it with Helm from the images of `make images`, and a demo workload traced.
# It stays up until `make demo-down`.
#
#   scripts/demo-cluster.sh up DIR | down DIR
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cmd=${1:?usage: $0 up DIR | down DIR}; DIR=${2:?usage: $0 up DIR | down DIR}
NODE="$ROOT/e2e/scripts/node.sh"

if [[ $cmd == down ]]; then
  [[ -d "$DIR" ]] && bash "$NODE" down "$DIR"
  exit 0
fi

start=$SECONDS
[[ -d "$DIR" ]] && bash "$NODE" down "$DIR" && rm -rf "$DIR"
bash "$NODE" up "$DIR"
# shellcheck disable=SC1091
source "$DIR/node.env"
BIN="$(bash "$ROOT/e2e/scripts/control-plane.sh" bin)"
HELM="$(bash "$ROOT/e2e/scripts/build-tools.sh" bin helm)"
export KUBECONFIG="$DIR/kubeconfig"
kubectl() { "$BIN/kubectl" --cache-dir "$DIR/kubectl-cache" "$@"; }

"$HELM" install podtrace "$ROOT/charts/podtrace" -n podtrace-system --create-namespace \
  --set image.pullPolicy=Never --set "agent.kubeletCgroupRoot=$KUBELET_CGROUP_ROOT" >/dev/null
kubectl create namespace demo >/dev/null
until kubectl get serviceaccount default -n demo >/dev/null 2>&1; do sleep 0.5; done
kubectl apply -f - >/dev/null <<'YAML'
# A web server that serves itself, resolves a name and writes a file twice a second.
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: demo}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
        - name: app
          image: podtrace.test/workload:1
          imagePullPolicy: Never
          command:
            - sh
            - -c
            - |
              mkdir -p /www && echo hello > /www/index.html && httpd -p 8080 -h /www
              while true; do
                printf 'GET / HTTP/1.0\r\n\r\n' | nc "$(hostname -i)" 8080 > /dev/null
                nslookup web.podtrace.test > /dev/null 2>&1
                dd if=/dev/zero of=/tmp/f bs=4k count=16 conv=fsync 2> /dev/null
                sleep 0.5
              done
          resources:
            requests: {cpu: 20m, memory: 16Mi}
            limits: {cpu: 200m, memory: 64Mi}
---
apiVersion: podtrace.dev/v1alpha1
kind: PodTrace
metadata: {name: web, namespace: demo}
spec:
  selector: {matchLabels: {app: web}}
  profileRef: {name: intensive}
YAML
kubectl rollout status -n podtrace-system deployment/podtrace-operator --timeout=180s >/dev/null
kubectl rollout status -n podtrace-system daemonset/podtrace-agent --timeout=180s >/dev/null
kubectl rollout status -n demo deployment/web --timeout=120s >/dev/null
until [[ "$(kubectl get podtrace web -n demo -o 'jsonpath={.status.readyNodes}' 2>/dev/null)" == 1/1 ]]; do sleep 1; done
agent=$(kubectl get pods -n podtrace-system -l app.kubernetes.io/component=agent -o 'jsonpath={.items[0].metadata.name}')
agent_ip=$(kubectl get pods -n podtrace-system "$agent" -o 'jsonpath={.status.podIP}')

cat <<EOF

podtrace runs on a one-node cluster (kubelet, containerd) and traces demo/web; ready in $((SECONDS - start))s.

  export KUBECONFIG=$DIR/kubeconfig PATH=$BIN:\$PATH
  kubectl get podtraces -A
  kubectl get nodetraces -o wide
  kubectl exec -it -n podtrace-system $agent -- /podtrace-agent top --endpoint http://$agent_ip:3000
  kubectl get --raw /api/v1/namespaces/podtrace-system/pods/$agent:3000/proxy/metrics | grep 'pod="web'

Stop it with: make demo-down
EOF
kubectl get podtraces -A
