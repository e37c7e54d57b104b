//! What both podtrace binaries share: logging (plain or JSON, with a reload handle so the
//! agent's admin channel can change levels at run time) and the shutdown signal.

pub mod logging;
pub mod shutdown;
