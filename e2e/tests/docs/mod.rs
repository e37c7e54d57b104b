//! The cluster commands of the documentation (```` ```sh cluster ```` blocks of README.md and
//! docs/*.md) run here, in order per file, on a fresh API server, with the matching kubectl and
//! Helm first on `PATH` and `KUBECONFIG` set; every block must exit 0. So do the
//! ```` ```sh node ```` blocks, as root, which start a real node of their own
//! (`make demo-cluster`). (The other fences and who runs them:
//! `node-agent/tests/doc_commands.rs`.)

use podtrace_e2e::{FreshControlPlane, repo_root, tool};
use podtrace_test_support::{documents, fenced_blocks, run_block};

#[test]
fn the_documented_cluster_commands_run_on_a_fresh_cluster() {
    let root = repo_root();
    let helm = tool("helm").unwrap();
    for doc in documents(&root) {
        let text = std::fs::read_to_string(root.join(&doc)).unwrap();
        let blocks = fenced_blocks(&doc, &text, "sh cluster");
        if blocks.is_empty() {
            continue;
        }
        let cp = FreshControlPlane::start("docs").unwrap();
        let path = format!(
            "{}:{}:{}",
            cp.bin.display(),
            helm.parent().unwrap().display(),
            std::env::var("PATH").unwrap()
        );
        let env = [("PATH", path.as_ref()), ("KUBECONFIG", cp.kubeconfig.as_os_str())];
        for block in blocks {
            if let Err(failure) = run_block(&block, &root, &env) {
                panic!("{failure}");
            }
        }
    }
}

#[test]
fn the_documented_node_commands_run_as_root() {
    let test = "the_documented_node_commands_run_as_root";
    // The turn of the shared node: one cluster's pods and probes at a time on this machine.
    let Some((_turn, _node)) = podtrace_e2e::node::node(test) else { return };
    let root = repo_root();
    // Named like every test run's folder, so that its watchdog-less leftovers would be found by
    // e2e/scripts/assert-clean.sh.
    let demo = std::env::temp_dir().join(format!("podtrace-e2e-{}-demo", std::process::id()));
    let env = [("DEMO_DIR", demo.as_os_str())];
    let mut ran = 0;
    for doc in documents(&root) {
        let text = std::fs::read_to_string(root.join(&doc)).unwrap();
        for block in fenced_blocks(&doc, &text, "sh node") {
            let result = run_block(&block, &root, &env);
            // Whatever happened, nothing of the demo stays up.
            let _ = std::process::Command::new("bash")
                .arg(root.join("scripts/demo-cluster.sh"))
                .arg("down")
                .arg(&demo)
                .status();
            if let Err(failure) = result {
                panic!("{failure}");
            }
            ran += 1;
        }
    }
    assert!(ran > 0, "no ```sh node block in the documentation");
}
