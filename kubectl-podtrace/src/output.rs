//! Printing: a report as `-o table|json|yaml` says, and text to a stdout that may be a pipe
//! closed early (`kubectl podtrace status | head`), which is not an error.

use crate::cli::Output;
use crate::error::{Error, Result};
use serde::Serialize;
use std::io::Write;

/// `report` as JSON or YAML, or `table` (already rendered) for [`Output::Table`].
pub fn print(
    format: Output,
    report: &impl Serialize,
    table: impl FnOnce() -> String,
) -> Result<()> {
    let text = match format {
        Output::Table => table(),
        Output::Json => {
            serde_json::to_string_pretty(report).map_err(|e| Error::Output(e.to_string()))? + "\n"
        }
        Output::Yaml => serde_yaml::to_string(report).map_err(|e| Error::Output(e.to_string()))?,
    };
    write(text.as_bytes())
}

/// Writes `bytes` to stdout; a reader that went away (EPIPE) ends the output quietly.
pub fn write(bytes: &[u8]) -> Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(Error::Output(e.to_string())),
        _ => Ok(()),
    }
}
