//! The commands of the documentation are run, so that README.md and docs/*.md cannot drift from
//! what the project does. How a command is marked in Markdown decides who runs it:
//!
//! | fence | run by |
//! |---|---|
//! | ```` ```sh ```` | this test: each block as one `bash -euo pipefail` script from the repository's root, with the freshly built `podtrace-agent` first on `PATH`; it must exit 0 |
//! | ```` ```sh ci ```` | CI: each command must be one `.ci/run` runs (`make test`) |
//! | ```` ```sh cluster ```` | the e2e test `docs::the_documented_cluster_commands_run_on_a_fresh_cluster`, in order per file, against a fresh kube-apiserver |
//! | ```` ```sh node ```` | the e2e test `docs::the_documented_node_commands_run_as_root` (they start clusters of their own: `make demo-cluster`) |
//! | ```` ```sh bench ```` | by hand (minutes each, on an idle machine): this test checks that each is a `make` target whose recipe `make -n` expands |
//!
//! Anything else (`console`, `text`, `yaml`, …) is an example or an output, not a command. The
//! demo runs for a few seconds here (`DEMO_SECONDS`), on ports of its own.

use podtrace_test_support::{Block, documents, fenced_blocks, run_block};
use std::{
    path::{Path, PathBuf},
    process::Command,
};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn blocks(info: &str) -> Vec<Block> {
    let root = root();
    let mut out = Vec::new();
    for doc in documents(&root) {
        let text = std::fs::read_to_string(root.join(&doc)).unwrap();
        out.extend(fenced_blocks(&doc, &text, info));
    }
    out
}

/// The commands of a block: its lines without comments and blank lines.
fn commands(block: &Block) -> Vec<String> {
    block
        .text
        .lines()
        .map(|l| l.split(" #").next().unwrap_or_default().trim().to_owned())
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect()
}

#[test]
fn every_sh_block_of_the_documentation_runs() {
    let agent = PathBuf::from(env!("CARGO_BIN_EXE_podtrace-agent"));
    let path = format!("{}:{}", agent.parent().unwrap().display(), std::env::var("PATH").unwrap());
    let found = blocks("sh");
    assert!(found.iter().any(|b| b.file == "README.md"), "the README has commands to run");
    for block in found {
        // The demo puts its workload in cgroups of its own: that block needs root (a SKIPPED
        // line without it, a failure under CI), the others run as anyone.
        let demo = commands(&block).iter().any(|c| c.starts_with("make demo"));
        if demo
            && !podtrace_test_support::require_root(
                &format!("{}:{} (make demo)", block.file, block.line),
                "the demo creates cgroups",
            )
        {
            continue;
        }
        // Ports of its own for the demo's /metrics, health and admin channel.
        let free = || {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().to_string()
        };
        let (metrics, health, admin) = (free(), free(), free());
        let env = [
            ("PATH", path.as_ref()),
            ("DEMO_SECONDS", "2".as_ref()),
            ("PODTRACE_METRICS_ADDR", metrics.as_ref()),
            ("PODTRACE_HEALTH_ADDR", health.as_ref()),
            ("PODTRACE_ADMIN_ADDR", admin.as_ref()),
        ];
        if let Err(failure) = run_block(&block, &root(), &env) {
            panic!("{failure}");
        }
    }
}

#[test]
fn every_sh_ci_command_is_one_ci_runs() {
    let ci = std::fs::read_to_string(root().join(".ci/run")).unwrap();
    let found = blocks("sh ci");
    assert!(!found.is_empty());
    for block in found {
        for command in commands(&block) {
            assert!(ci.lines().any(|l| l.trim() == command), "{}: {command}", block.file);
        }
    }
}

#[test]
fn every_sh_bench_command_is_a_make_target() {
    for block in blocks("sh bench") {
        for command in commands(&block) {
            // Settings (`PT_BENCH_ROUNDS=6 make bench-ebpf`) come first.
            let words: Vec<&str> =
                command.split_whitespace().skip_while(|w| w.contains('=')).collect();
            assert_eq!(words.first(), Some(&"make"), "{}:{}: {command}", block.file, block.line);
            let dry = Command::new("make").arg("-n").args(&words[1..]).current_dir(root()).output();
            assert!(dry.unwrap().status.success(), "{}: make -n {command}", block.file);
        }
    }
}
