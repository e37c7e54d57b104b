//! The cluster commands of the documentation (```` ```sh cluster ```` blocks of README.md and
//! docs/*.md) run here, in order per file, on a fresh API server, with the matching kubectl and
//! Helm first on `PATH` and `KUBECONFIG` set; every block must exit 0. (The other fences and
//! who runs them: `node-agent/tests/doc_commands.rs`.)

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
