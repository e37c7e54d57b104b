# The front door. `make demo` runs podtrace on this machine; `make test` runs every check CI runs.
SHELL := bash
.SHELLFLAGS := -euo pipefail -c
CARGO ?= cargo
DEMO_DIR ?= $(HOME)/.cache/podtrace/demo

PREFIX ?= /usr/local

.PHONY: help setup build images generate check-generated lint unit e2e test demo demo-cluster demo-down kubectl-plugin install-kubectl-plugin

help: ## List the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-16s %s\n", $$1, $$2}'

setup: ## Install packages and build the Kubernetes test binaries (cached)
	bash scripts/setup.sh

build: ## Build every crate
	$(CARGO) build --workspace --all-targets

generate: ## Regenerate crds/, the chart's CRD copy, the preset samples, manifests/podtrace.yaml and docs/metrics.md
	$(CARGO) run -q -p podtrace-api --bin crdgen
	$(CARGO) run -q -p podtrace-agent --bin metrics-doc
	rm -f charts/podtrace/files/crds/*.yaml && cp crds/*.yaml charts/podtrace/files/crds/
	bash scripts/render-manifests.sh > manifests/podtrace.yaml

check-generated: generate ## Fail when generated files differ from the types
	@if ! git diff --quiet -- crds manifests charts docs/metrics.md || [ -n "$$(git ls-files --others --exclude-standard crds manifests charts docs/metrics.md)" ]; then \
	  git status --short -- crds manifests charts docs/metrics.md; \
	  echo "error: generated files are out of date: run \`make generate\` and commit"; exit 1; \
	fi

lint: ## rustfmt and clippy with -D warnings
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

unit: ## Unit tests (no cluster, no root)
	$(CARGO) test --workspace --exclude podtrace-e2e

images: ## Build the operator and agent images (OCI archives in target/images, no daemon needed)
	bash scripts/images.sh

e2e: images ## End-to-end tests: a real kube-apiserver + etcd, and a real node (kubelet, containerd) running the images
	$(CARGO) build -p podtrace-operator -p podtrace-agent -p kubectl-podtrace
	$(CARGO) build -p podtrace-ebpf --example probe_status
	bash scripts/images.sh pause workload prometheus prometheus-operator prometheus-config-reloader
	$(CARGO) test -p podtrace-e2e
	bash e2e/scripts/assert-clean.sh

.PHONY: ebpf bench-ebpf
ebpf: ## eBPF probe tests against the running kernel (root; they print SKIPPED otherwise; also part of `unit`)
	$(CARGO) test -p podtrace-ebpf

bench-ebpf: ## Agent overhead per preset: requests/s, CPU and eBPF runs per request, traced or not; agent CPU and RSS (root)
	bash bench/ebpf/run.sh

test: setup lint check-generated unit e2e ## Everything CI runs

kubectl-plugin: ## Build the kubectl plugin (target/release/kubectl-podtrace: copy it onto the PATH, then `kubectl podtrace`)
	$(CARGO) build --release -p kubectl-podtrace

install-kubectl-plugin: kubectl-plugin ## Copy kubectl-podtrace to $(PREFIX)/bin (and the link kubectl's completion runs)
	install -m 0755 target/release/kubectl-podtrace $(PREFIX)/bin/kubectl-podtrace
	ln -sf kubectl-podtrace $(PREFIX)/bin/kubectl_complete-podtrace

demo: ## Run the agent standalone on a demo workload in its own cgroups and show `top` (Ctrl-C stops all)
	bash scripts/setup.sh --packages-only
	bash node-agent/demo/demo.sh

demo-cluster: setup images ## A one-node cluster (kubelet, containerd) with podtrace installed by Helm and a demo workload traced
	bash scripts/images.sh pause workload
	bash scripts/demo-cluster.sh up $(DEMO_DIR)

demo-down: ## Stop the demo cluster
	bash scripts/demo-cluster.sh down $(DEMO_DIR)

.PHONY: bench bench-operator bench-operator-quick bench-agent bench-exporters bench-peers
bench-operator: setup ## Operator: 100k pods/1,000 nodes/1,000 PodTraces against a real API server (writes and CPU per edit, agent latency, RSS, sync, churn)
	$(CARGO) build --release -p podtrace-operator -p podtrace-bench-operator
	target/release/operator-bench

bench-operator-quick: setup ## The operator benchmark at 10k pods/100 nodes/100 PodTraces (a few minutes)
	$(CARGO) build --release -p podtrace-operator -p podtrace-bench-operator
	target/release/operator-bench --quick

bench-agent: ## Agent: RSS with 100/1000 cgroups, collector µs per cgroup, /metrics ns per series vs the prometheus crate (root)
	$(CARGO) build --release -p podtrace-agent -p podtrace-bench-agent
	target/release/agent-bench

bench-peers: ## The agent against cAdvisor and node_exporter on 100/1,000/10,000 cgroups: RSS, CPU per cgroup, scrape ratios (root)
	bash bench/peers/build-peers.sh
	$(CARGO) build --release -p podtrace-agent -p podtrace-bench-peers
	PT_PEERS_CADVISOR="$$(bash bench/peers/build-peers.sh bin cadvisor)" \
	PT_PEERS_CADVISOR_VERSION="$$(bash bench/peers/build-peers.sh bin cadvisor-version)" \
	PT_PEERS_NODE_EXPORTER="$$(bash bench/peers/build-peers.sh bin node-exporter)" \
	PT_PEERS_NODE_EXPORTER_VERSION="$$(bash bench/peers/build-peers.sh bin node-exporter-version)" \
	  target/release/peers-bench

bench-exporters: ## Push exporters: CPU and bytes per 10k series as a ratio to /metrics encoding
	$(CARGO) run --release -p podtrace-bench-exporters

bench: bench-exporters bench-agent bench-peers bench-ebpf bench-operator ## Every benchmark (prints ratios; not part of `make test`)
