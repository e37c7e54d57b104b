#!/usr/bin/env bash
# Installs what building and testing podtrace needs on a Debian/Ubuntu machine, and builds the
# Kubernetes binaries the tests run against (cached under ~/.cache/podtrace, so a second run is
# quick). Safe to run again.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
SUDO=""; [[ $(id -u) == 0 ]] || SUDO="sudo"

# Debian packages: clang/llvm/libbpf for the eBPF programs, openssl for test certificates,
# bpftool to inspect loaded programs, python3 for small test helpers, the brokers and
# Prometheus the exporter tests talk to; umoci to build the images (scripts/images.sh) and
# busybox-static for the test workload image; containerd, runc, the CNI plugins, iptables,
# conntrack, dnsmasq and socat for the test node (e2e/scripts/node.sh).
PACKAGES=(clang llvm libbpf-dev openssl bpftool python3 ca-certificates nats-server mosquitto mosquitto-clients influxdb prometheus
  umoci busybox-static containerd runc containernetworking-plugins iptables conntrack dnsmasq-base socat)
missing=()
for p in "${PACKAGES[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

command -v cargo >/dev/null || { echo "setup: Rust is required (https://rustup.rs), then run this again" >&2; exit 1; }
# `setup.sh --packages-only`: what building and running the agent needs (make demo), without the
# Kubernetes binaries of the tests.
[[ "${1:-}" == --packages-only ]] && exit 0
command -v go >/dev/null || { echo "setup: Go ≥ 1.26 is required to build kube-apiserver and etcd" >&2; exit 1; }

bash "$HERE/../e2e/scripts/build-k8s.sh"
bash "$HERE/../e2e/scripts/build-tools.sh"
# The Debian packages start services where systemd runs; the tests run their own on free ports.
for service in prometheus nats-server mosquitto influxdb; do
  $SUDO systemctl disable --now "$service" >/dev/null 2>&1 || true
done
