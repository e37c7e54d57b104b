#!/usr/bin/env bash
# eBPF overhead benchmark (root): what the node agent costs a service, per preset, with the
# service traced and not traced, on a loopback HTTP server and one doing ~50 µs of work per
# request (bench/ebpf/src/main.rs says what is measured and how). Run it on a quiet machine:
# it prints the load average before and after.
# PT_BENCH_SECONDS (2), PT_BENCH_ROUNDS (5), PT_BENCH_STATS_ROUNDS (1), PT_BENCH_PRESETS (all),
# PT_BENCH_WORKLOADS (loopback,cpu50) and PT_BENCH_AGENTS (name=path[@VAR=value…],…; default
# the release agent built here) choose what runs.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
cargo build --release -p podtrace-agent -p podtrace-bench-ebpf
exec target/release/ebpf-bench
