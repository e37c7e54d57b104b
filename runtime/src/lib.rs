//! What both podtrace binaries share: logging (plain or JSON, with a reload handle so the
//! agent's admin channel can change levels at run time), the admin HTTP server (`/metrics`,
//! `/livez`, `/readyz`, optionally over TLS), `grpc.health.v1`, the shutdown signal and the allocator.

pub mod admin;
pub mod alloc;
pub mod health;
pub mod logging;
pub mod shutdown;
pub mod tls;
