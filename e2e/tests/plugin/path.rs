use std::process::Command;

/// kubectl itself with `dir` first on the PATH: (exit code, stdout, stderr).
fn kubectl(
    cp: &podtrace_e2e::ControlPlane,
    dir: &std::path::Path,
    args: &[&str],
) -> (i32, String, String) {
    let path = format!("{}:{}", dir.display(), std::env::var("PATH").unwrap());
    let out = Command::new(cp.bin.join("kubectl"))
        .args(args)
        .env("PATH", path)
        .env("KUBECONFIG", &cp.kubeconfig)
        .output()
        .unwrap();
    let text = |b: Vec<u8>| String::from_utf8(b).unwrap();
    (out.status.code().unwrap(), text(out.stdout), text(out.stderr))
}

#[test]
fn copied_onto_the_path_kubectl_runs_and_completes_the_plugin() {
    let cp = podtrace_e2e::control_plane();
    let dir = cp.dir.join("plugin-path");
    std::fs::create_dir_all(&dir).unwrap();
    let copy = dir.join("kubectl-podtrace");
    std::fs::copy(podtrace_e2e::binary("kubectl-podtrace"), &copy).unwrap();
    let link = dir.join("kubectl_complete-podtrace");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(&copy, &link).unwrap();

    let (code, out, err) = kubectl(cp, &dir, &["plugin", "list"]);
    assert!(out.contains(copy.to_str().unwrap()), "{code} {out} {err}");
    let (code, out, err) = kubectl(cp, &dir, &["podtrace", "--help"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("Usage: kubectl podtrace"), "{out}");
    // kubectl's own completion asks kubectl_complete-podtrace (kubectl __complete is what its
    // shell scripts call on <TAB>).
    let (_, out, err) = kubectl(cp, &dir, &["__complete", "podtrace", "st"]);
    assert_eq!(out, "status\n:4\n", "{err}");
    let (_, out, err) = kubectl(cp, &dir, &["__complete", "podtrace", "top", "-n", "x", "--on"]);
    assert_eq!(out, "--once\n:4\n", "{err}");
    let (_, out, err) = kubectl(cp, &dir, &["__complete", "podtrace", "health", "-o", ""]);
    assert_eq!(out, "json\ntable\nyaml\n:4\n", "{err}");
}
