//! What the root tests and benchmarks of every podtrace crate share.
//!
//! Tests that load eBPF programs or create cgroups need root. Where they cannot run they say so
//! and return, so that `cargo test` works for a developer without sudo; under CI (the `CI`
//! environment variable set, as every CI service sets it) a test that cannot run fails instead,
//! so that a green CI run means the kernel tests really ran.

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_effective_uid_is_the_second_number() {
        assert_eq!(effective_uid("Name:\tx\nUid:\t1000\t0\t0\t0\n"), Some(0));
        assert_eq!(effective_uid("Uid:\t0\t1000\t1000\t1000\n"), Some(1000));
        assert_eq!(effective_uid("Name:\tx\n"), None);
    }
}
