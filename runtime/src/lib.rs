//! What both podtrace binaries share, so that their `main` only wires: logging (plain or JSON,
//! with a reload handle so the agent's admin channel can change levels at run time), the admin
//! HTTP server (`/metrics`, `/livez`, `/readyz`, optionally over TLS) and `grpc.health.v1`
//! started together ([`servers`]), the stop on SIGINT/SIGTERM ([`shutdown`]), who the process is
//! ([`identity`]) and the allocator.

pub mod admin;
pub mod alloc;
pub mod health;
pub mod identity;
pub mod logging;
pub mod servers;
pub mod shutdown;
pub mod tls;
