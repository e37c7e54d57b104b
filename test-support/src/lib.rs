//! What the root tests and benchmarks of every podtrace crate share.
//!
//! Tests that load eBPF programs or create cgroups need root. Where they cannot run they say so
//! and return, so that `cargo test` works for a developer without sudo; under CI (the `CI`
//! environment variable set, as every CI service sets it) a test that cannot run fails instead,
//! so that a green CI run means the kernel tests really ran.
//!
//! It also holds what those tests do alike: starting a workload inside cgroups, and reading a
//! metric from `/metrics` text.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

/// The path of a tool built by `e2e/scripts/build-tools.sh` (`helm`, `prometheus`, `otelcol`,
/// …), building what is not cached first (`scripts/setup.sh` builds them all ahead).
pub fn tool(name: &str) -> Result<PathBuf, String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../e2e/scripts/build-tools.sh");
    let status = Command::new("bash").arg(&script).status().map_err(|e| e.to_string())?;
    if !status.success() {
        return Err(format!("e2e/scripts/build-tools.sh failed ({status})"));
    }
    let out = Command::new("bash").arg(&script).args(["bin", name]).output();
    let out = out.map_err(|e| e.to_string())?;
    let path = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if !out.status.success() || path.is_empty() {
        return Err(format!("e2e/scripts/build-tools.sh knows no tool {name:?}"));
    }
    Ok(PathBuf::from(path))
}

/// Whether this process runs with effective uid 0 (what the kernel checks for eBPF and
/// cgroups). Read from `/proc/self/status` (`Uid: real effective saved fs`): no `unsafe` call.
pub fn is_root() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    effective_uid(&status) == Some(0)
}

fn effective_uid(status: &str) -> Option<u32> {
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

/// Whether the test `test` may run: true as root. Otherwise it prints `SKIPPED <test>: needs root
/// (<why>)` and returns false, or, under CI, panics with that message.
pub fn require_root(test: &str, why: &str) -> bool {
    if is_root() {
        return true;
    }
    skip(test, &format!("needs root ({why})"))
}

/// Reports that `test` cannot run for `reason`: prints `SKIPPED <test>: <reason>` and returns
/// false, or panics under CI (a skipped test must not look like a passed one there).
pub fn skip(test: &str, reason: &str) -> bool {
    if std::env::var_os("CI").is_some_and(|v| !v.is_empty()) {
        panic!("{test}: {reason}; CI is set, so this is a failure, not a skip");
    }
    eprintln!("SKIPPED {test}: {reason}");
    false
}

/// A command that runs `program` inside the cgroup directories `dirs` (one per hierarchy) from
/// its first instruction: a shell writes its own pid into each `cgroup.procs`, then execs
/// `program` with the command's arguments, so the program never runs outside them.
pub fn command_in_cgroups(dirs: &[impl AsRef<Path>], program: &str) -> Command {
    let enter: String =
        dirs.iter().map(|d| format!("echo $$ > {}/cgroup.procs; ", d.as_ref().display())).collect();
    let mut command = Command::new("sh");
    command.arg("-c").arg(format!("{enter}exec \"$0\" \"$@\"")).arg(program);
    command
}

/// Cgroup directories a test created, removed (deepest first) when dropped, also when the test
/// panics. A cgroup stays busy for a moment after its last process was reaped, so each removal
/// is retried for up to two seconds; what still cannot be removed is named on stderr.
pub struct CgroupDirs(pub Vec<std::path::PathBuf>);

impl CgroupDirs {
    /// Creates `dirs` (with their parents) and returns the guard that removes them; list outer
    /// directories before inner ones.
    pub fn create(dirs: &[impl AsRef<Path>]) -> std::io::Result<Self> {
        let dirs: Vec<_> = dirs.iter().map(|d| d.as_ref().to_path_buf()).collect();
        for d in &dirs {
            std::fs::create_dir_all(d)?;
        }
        Ok(CgroupDirs(dirs))
    }
}

impl Drop for CgroupDirs {
    fn drop(&mut self) {
        for d in self.0.iter().rev() {
            for _ in 0..100 {
                if std::fs::remove_dir(d).is_ok() || !d.exists() {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            if d.exists() {
                eprintln!("warning: could not remove the test cgroup {}", d.display());
            }
        }
    }
}

/// The sum of the values of the series of `name` (every label set) in Prometheus text.
pub fn metric_sum(exposition: &str, name: &str) -> f64 {
    exposition
        .lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A fenced code block of a Markdown file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Block {
    /// The file, relative to the repository.
    pub file: String,
    /// The line of the opening fence (1-based).
    pub line: usize,
    /// The text between the fences.
    pub text: String,
}

/// The blocks of `markdown` (the text of `file`) whose info string is exactly `info` (e.g.
/// `sh`, `sh cluster`).
pub fn fenced_blocks(file: &str, markdown: &str, info: &str) -> Vec<Block> {
    let mut out = Vec::new();
    let mut open: Option<(usize, String, Vec<&str>)> = None;
    for (i, line) in markdown.lines().enumerate() {
        match open.as_mut() {
            None => {
                if let Some(rest) = line.strip_prefix("```") {
                    open = Some((i + 1, rest.trim().to_owned(), Vec::new()));
                }
            }
            Some((start, kind, lines)) => {
                if line.trim_end() == "```" {
                    if kind == info {
                        let text = lines.join("\n") + "\n";
                        out.push(Block { file: file.to_owned(), line: *start, text });
                    }
                    open = None;
                } else {
                    lines.push(line);
                }
            }
        }
    }
    out
}

/// Runs `block` as one `bash -euo pipefail` script in `dir` with `env` set; on failure, the
/// message names the file and line and shows the script, stdout and stderr.
pub fn run_block(
    block: &Block,
    dir: &Path,
    env: &[(&str, &std::ffi::OsStr)],
) -> Result<(), String> {
    let mut command = Command::new("bash");
    command.args(["-euo", "pipefail", "-c", &block.text]).current_dir(dir);
    for (k, v) in env {
        command.env(k, v);
    }
    let out = command.output().map_err(|e| format!("{}:{}: bash: {e}", block.file, block.line))?;
    if out.status.success() {
        return Ok(());
    }
    Err(format!(
        "{}:{} failed ({}):\n{}\n--- stdout\n{}\n--- stderr\n{}",
        block.file,
        block.line,
        out.status,
        block.text,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    ))
}

/// The Markdown files whose commands the tests run: README.md and docs/*.md, relative to the
/// repository at `root`, in a stable order.
pub fn documents(root: &Path) -> Vec<String> {
    let mut docs: Vec<String> = std::fs::read_dir(root.join("docs"))
        .map(|dir| {
            dir.filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|n| n.ends_with(".md"))
                .map(|n| format!("docs/{n}"))
                .collect()
        })
        .unwrap_or_default();
    docs.sort();
    docs.insert(0, "README.md".into());
    docs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_effective_uid_is_the_second_number() {
        assert_eq!(effective_uid("Name:\tx\nUid:\t1000\t0\t0\t0\n"), Some(0));
        assert_eq!(effective_uid("Uid:\t0\t1000\t1000\t1000\n"), Some(1000));
        assert_eq!(effective_uid("Name:\tx\n"), None);
    }

    #[test]
    fn blocks_are_found_by_their_exact_info_string() {
        let md = "a\n```sh\nmake demo\n```\n```sh cluster\nkubectl get pt\n```\n```\nx\n```\n";
        let sh = fenced_blocks("R.md", md, "sh");
        assert_eq!(sh, vec![Block { file: "R.md".into(), line: 2, text: "make demo\n".into() }]);
        assert_eq!(fenced_blocks("R.md", md, "sh cluster")[0].text, "kubectl get pt\n");
        assert!(fenced_blocks("R.md", md, "bash").is_empty());
    }

    #[test]
    fn a_metric_is_summed_over_its_label_sets_and_not_its_namesakes() {
        let text = "a_total{x=\"1\"} 2\na_total 3\na_total_more 7\n# HELP a_total x\n";
        assert_eq!(metric_sum(text, "a_total"), 5.0);
    }

    #[test]
    fn the_workload_runs_inside_the_cgroups() {
        let dir = std::env::temp_dir().join(format!("pt-ts-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let out = command_in_cgroups(&[&dir], "echo").arg("hi").output().unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "hi\n");
        let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap();
        assert!(procs.trim().parse::<u32>().is_ok(), "the shell wrote its pid: {procs:?}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
