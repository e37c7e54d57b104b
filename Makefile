# The front door. `make demo` runs podtrace on this machine; `make test` runs every check CI runs.
SHELL := bash
.SHELLFLAGS := -euo pipefail -c
CARGO ?= cargo
DEMO_DIR ?= $(HOME)/.cache/podtrace/demo

.PHONY: help setup build generate check-generated lint unit e2e test demo demo-cluster demo-down

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

e2e: ## End-to-end tests against a real kube-apiserver + etcd
	$(CARGO) build -p podtrace-operator -p podtrace-agent
	$(CARGO) test -p podtrace-e2e
	bash e2e/scripts/assert-clean.sh

.PHONY: ebpf bench-ebpf
ebpf: ## eBPF probe tests against the running kernel (root; they print SKIPPED otherwise; also part of `unit`)
	$(CARGO) test -p podtrace-ebpf

bench-ebpf: ## eBPF overhead: workload slowdown with/without probes and ns per event (root)
	bash bench/ebpf/run.sh

test: setup lint check-generated unit e2e ## Everything CI runs

demo: ## Run the agent standalone on a demo workload in its own cgroups and show `top` (Ctrl-C stops all)
	bash scripts/setup.sh --packages-only
	bash node-agent/demo/demo.sh

demo-cluster: setup generate ## Start a local control plane with the CRDs and samples installed
	bash e2e/scripts/control-plane.sh down $(DEMO_DIR)
	bash e2e/scripts/control-plane.sh up $(DEMO_DIR)
	@K="$$(bash e2e/scripts/control-plane.sh bin)/kubectl --kubeconfig $(DEMO_DIR)/kubeconfig"; \
	$$K apply --server-side -f crds/ >/dev/null; \
	$$K wait --for=condition=Established crd --all --timeout=60s >/dev/null; \
	$$K create namespace demo >/dev/null; \
	$$K apply --server-side -n demo -f manifests/samples/; \
	echo; $$K get monitoringprofiles; echo; $$K get podtraces -n demo; echo; \
	echo "The API server runs in the background. Use it with:"; \
	echo "  export KUBECONFIG=$(DEMO_DIR)/kubeconfig PATH=$$(bash e2e/scripts/control-plane.sh bin):\$$PATH"; \
	echo "  kubectl explain podtrace.spec"; \
	echo "Stop it with: make demo-down"

demo-down: ## Stop the demo control plane
	bash e2e/scripts/control-plane.sh down $(DEMO_DIR)

.PHONY: bench bench-operator bench-agent bench-exporters
bench-operator: setup ## Operator: 10k pods/100 nodes/100 PodTraces against a real API server (RSS, sync, change latency)
	$(CARGO) build --release -p podtrace-operator -p podtrace-bench-operator
	target/release/operator-bench

bench-agent: ## Agent: RSS with 100/1000 cgroups, collector µs per cgroup, /metrics ns per series vs the prometheus crate (root)
	$(CARGO) build --release -p podtrace-agent -p podtrace-bench-agent
	target/release/agent-bench

bench-exporters: ## Push exporters: CPU and bytes per 10k series as a ratio to /metrics encoding
	$(CARGO) run --release -p podtrace-bench-exporters

bench: bench-exporters bench-agent bench-ebpf bench-operator ## Every benchmark (prints ratios; not part of `make test`)
