#!/usr/bin/env bash
# eBPF overhead benchmark (root): interleaved runs of a loopback HTTP keep-alive workload in its
# own cgroup with no probes, with every probe tracking it, with every probe tracking another
# cgroup, and with cgroup_skb attached at the workload's cgroup instead of the v2 root.
# Prints requests/s ratios and per-program ns per run from bpf_stats, gross and net of the floor
# (an empty program on the same hook, measured in the same run).
# PT_BENCH_SECONDS (2) and PT_BENCH_ROUNDS (5) set the length of each run and the rounds;
# PT_BENCH_CONFIGS (e.g. none,stats,stats-other) runs a subset of the configurations; it also
# adds stats-process and stats-process-other (the process filter, workload listed or not).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
exec cargo bench -p podtrace-ebpf --bench overhead
