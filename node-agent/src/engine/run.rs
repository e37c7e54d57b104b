//! The engine's loop: it wakes when the configuration changes, when a collection is due and
//! every [`RESCAN`] (pending cgroups appear, processes come and go), and stops when told.
//!
//! ```text
//!  config (watch) ──changed──┐
//!  RESCAN ───────────────────┼─► resolve(config) ─► Engine::set_targets
//!  next due ─────────────────┴─► Engine::tick
//!  stop ──────────────────────► return
//! ```

use std::{
    future::Future,
    time::{Duration, Instant},
};
use tokio::sync::watch;

use super::Engine;
use crate::{
    channel::changed,
    targets::{Pending, Target},
};

/// How often targets are resolved again (pending cgroups retried, new processes found).
pub const RESCAN: Duration = Duration::from_secs(2);

/// Runs `engine` until `stop` resolves: resolves the targets from `config` whenever it changes
/// (and every [`RESCAN`]) and collects whatever is due in between.
///
/// Blocks the calling thread, which it drives with a runtime of its own: the collectors do
/// blocking file I/O, so the engine gets a thread of its own rather than a task on the shared
/// runtime.
pub fn run<C: Clone>(
    mut engine: Engine,
    mut config: watch::Receiver<C>,
    mut resolve: impl FnMut(&C) -> (Vec<Target>, Vec<Pending>),
    stop: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build()?;
    runtime.block_on(async move {
        tokio::pin!(stop);
        let mut next_scan = Instant::now();
        // The configuration's source ended (shutdown): keep collecting with the last one.
        let mut config_open = true;
        loop {
            let now = Instant::now();
            if now >= next_scan || config.has_changed().unwrap_or(false) {
                let current = config.borrow_and_update().clone();
                let (targets, pending) = resolve(&current);
                engine.set_targets(targets, pending);
                next_scan = now + RESCAN;
            }
            let next = engine.tick(Instant::now()).min(next_scan);
            tokio::select! {
                () = &mut stop => return,
                () = changed(&mut config, &mut config_open) => {}
                () = tokio::time::sleep_until(next.into()) => {}
            }
        }
    });
    Ok(())
}
