//! Writes `docs/metrics.md` from the agent's metric catalog (`make generate` runs it).

fn main() -> std::io::Result<()> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/metrics.md");
    std::fs::write(path, podtrace_agent::metrics::doc::render())?;
    eprintln!("wrote docs/metrics.md");
    Ok(())
}
