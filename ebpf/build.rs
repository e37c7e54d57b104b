//! Compiles the kernel programs (src/bpf/*.bpf.c) with Debian's clang into OUT_DIR, and prints
//! the C layout of the shared map types so that src/abi.rs can be tested against it.
//!
//! Why a build script and not aya-ebpf: see design.md §9 (C with CO-RE, one compiler).

use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The probe families; each is one object file embedded by src/ladder.rs. `follow` is not a
/// family: the process filter's fork and exit programs (one object, always by tgid).
const FAMILIES: &[&str] = &["packet", "tcp_connect", "fs", "cpu_block", "follow"];

fn main() -> Result<()> {
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    let src = Path::new("src/bpf");
    println!("cargo:rerun-if-changed=src/bpf");
    let clang = std::env::var("CLANG").unwrap_or_else(|_| "clang".into());
    let strip = std::env::var("LLVM_STRIP").unwrap_or_else(|_| "llvm-strip".into());
    let multiarch = multiarch_include();

    // Each family twice: filtered by cgroup v2 id, and by process (`<family>.tgid.bpf.o`, with
    // PT_FILTER_TGID) for nodes without cgroup v2. follow exists for the process filter only.
    let variants = FAMILIES.iter().flat_map(|f| {
        let tgid = (*f != "follow").then(|| (*f, format!("{f}.tgid"), true));
        std::iter::once((*f, f.to_string(), false)).chain(tgid)
    });
    for (family, object, by_tgid) in variants {
        let input = src.join(format!("{family}.bpf.c"));
        let obj = out.join(format!("{object}.bpf.o"));
        let mut cmd = Command::new(&clang);
        cmd.args([
            "-target",
            "bpf",
            "-mcpu=v3",
            "-D__TARGET_ARCH_x86",
            "-O2",
            "-g",
            "-Wall",
            "-Werror",
        ])
        .arg("-I")
        .arg(src)
        .arg("-I")
        .arg(src.join("vmlinux"));
        if by_tgid {
            cmd.arg("-DPT_FILTER_TGID");
        }
        if let Some(dir) = &multiarch {
            cmd.arg("-I").arg(dir);
        }
        cmd.arg("-c").arg(&input).arg("-o").arg(&obj);
        run(&mut cmd).with_context(|| {
            format!("compiling {} (needs `apt-get install clang llvm libbpf-dev`)", input.display())
        })?;
        // Drop DWARF, keep .BTF/.BTF.ext (needed for CO-RE): smaller embedded objects.
        run(Command::new(&strip).arg("-g").arg(&obj)).context("llvm-strip -g")?;
    }

    // Layout of the shared types as the C compiler sees them, for the Rust layout test.
    let gen_c = out.join("layout.c");
    std::fs::write(&gen_c, LAYOUT_C)?;
    let gen_bin = out.join("layout");
    run(Command::new(&clang).arg("-I").arg(src).arg(&gen_c).arg("-o").arg(&gen_bin))
        .context("compiling the layout printer for the host")?;
    let output = Command::new(&gen_bin).output().context("running the layout printer")?;
    if !output.status.success() {
        bail!("layout printer failed");
    }
    std::fs::write(out.join("layout.rs"), output.stdout)?;
    Ok(())
}

/// Debian puts <asm/types.h> under a multiarch folder that `-target bpf` does not search.
fn multiarch_include() -> Option<PathBuf> {
    ["/usr/include/x86_64-linux-gnu", "/usr/include/aarch64-linux-gnu"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.join("asm/types.h").exists())
}

fn run(cmd: &mut Command) -> Result<()> {
    let output = cmd.output().with_context(|| format!("starting {cmd:?}"))?;
    if !output.status.success() {
        bail!("{cmd:?} failed:\n{}", String::from_utf8_lossy(&output.stderr));
    }
    Ok(())
}

const LAYOUT_C: &str = r#"
#include <stdio.h>
#include <stddef.h>
#include "podtrace_abi.h"
#define SZ(t) printf("pub const SIZEOF_%s: usize = %zu;\n", #t, sizeof(struct t))
#define OFF(t, f) printf("pub const OFFSETOF_%s_%s: usize = %zu;\n", #t, #f, offsetof(struct t, f))
#define K(c) printf("pub const %s: u64 = %llu;\n", #c, (unsigned long long)(c))
int main(void) {
    SZ(pt_target); OFF(pt_target, probes); OFF(pt_target, comms);
    SZ(pt_key); OFF(pt_key, cgroup_id); OFF(pt_key, comm); OFF(pt_key, probe); OFF(pt_key, op);
    SZ(pt_hist); OFF(pt_hist, buckets); OFF(pt_hist, count); OFF(pt_hist, sum_ns); OFF(pt_hist, latest_ns); OFF(pt_hist, latest_at);
    SZ(pt_counter); OFF(pt_counter, bytes); OFF(pt_counter, events);
    SZ(pt_pkt_target); OFF(pt_pkt_target, probes); OFF(pt_pkt_target, dir); K(PT_NET_SEND); K(PT_NET_RECV);
    SZ(pt_block_start); OFF(pt_block_start, cgroup_id);
    SZ(pt_comm_key); OFF(pt_comm_key, cgroup_id); OFF(pt_comm_key, comm);
    K(PT_BUCKETS); K(PT_FINITE_BUCKETS); K(PT_BUCKET_BASE_NS); K(PT_COMM_LEN); K(PT_ERR_COUNT);
    K(PT_PROBE_TCP_RTT); K(PT_PROBE_TCP_CONNECT); K(PT_PROBE_DNS); K(PT_PROBE_FS_LATENCY);
    K(PT_PROBE_FS_BYTES); K(PT_PROBE_CPU_BLOCK); K(PT_PROBE_NETWORK_BYTES);
    K(PT_OP_NONE); K(PT_OP_READ); K(PT_OP_WRITE); K(PT_OP_FSYNC); K(PT_OP_SEND); K(PT_OP_RECV);
    /* pt_bucket on every bound, its neighbours and a spread of values, for the Rust test. */
    printf("pub const PT_BUCKET_CASES: &[(u64, u32)] = &[");
    for (int k = 0; k <= 22; k++) {
        unsigned long long b = PT_BUCKET_BASE_NS << k;
        for (long long d = -1; d <= 1; d++)
            printf("(%llu, %u), ", b + d, pt_bucket(b + d));
    }
    for (unsigned long long v = 0; v < (1ULL << 40); v = v * 3 + 7)
        printf("(%llu, %u), ", v, pt_bucket(v));
    printf("(%llu, %u)];\n", ~0ULL, pt_bucket(~0ULL));
    K(PT_ERR_HIST_FULL); K(PT_ERR_COUNTER_FULL); K(PT_ERR_COMM_FULL); K(PT_ERR_INFLIGHT_FULL); K(PT_ERR_UNCLOSED); K(PT_ERR_PROCS_FULL);
    return 0;
}
"#;
