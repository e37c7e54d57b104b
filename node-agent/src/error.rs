//! The agent's error type.

use std::path::PathBuf;

/// Everything that can go wrong in the agent, with the context a user needs to act on it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file under /sys/fs/cgroup or /proc could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// The agent's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
