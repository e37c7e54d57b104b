//! Printing a report as `-o table|json|yaml` says.

use crate::cli::Output;
use crate::error::{Error, Result};
use serde::Serialize;

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
    print!("{text}");
    Ok(())
}
