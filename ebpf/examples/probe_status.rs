//! Loads every probe on this machine and prints the attach method (or the reason) of each:
//! `cargo run -p podtrace-ebpf --example probe_status` (as root).

fn main() -> anyhow::Result<()> {
    let (probes, statuses) = podtrace_ebpf::Probes::load(&podtrace_ebpf::ProbeConfig::default())?;
    for s in statuses {
        let how = s.method.map(podtrace_ebpf::AttachMethod::name).unwrap_or("-");
        println!("{:<14} {:?} {how} {}", s.probe.name(), s.state, s.reason.unwrap_or_default());
    }
    drop(probes);
    Ok(())
}
