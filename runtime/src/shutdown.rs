//! The process-wide stop: SIGINT or SIGTERM (Kubernetes sends SIGTERM before killing a pod)
//! sets it once, and every server and loop of the process waits on it.
//!
//! ```text
//!  SIGINT / SIGTERM ──► Stop::stop ──► watch channel ──► stopped() of every server and loop
//! ```

use std::future::Future;
use tokio::sync::watch;

/// Resolves on SIGINT or SIGTERM.
pub async fn signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("installing a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received, shutting down"),
        _ = term.recv() => tracing::info!("SIGTERM received, shutting down"),
    }
}

/// The stop of a process: set once, seen by every clone.
#[derive(Clone, Debug)]
pub struct Stop {
    set: watch::Sender<bool>,
}

impl Default for Stop {
    fn default() -> Self {
        Self { set: watch::Sender::new(false) }
    }
}

impl Stop {
    /// A stop that SIGINT or SIGTERM sets (must be called inside a tokio runtime).
    pub fn on_signal() -> Self {
        let stop = Stop::default();
        let set = stop.clone();
        tokio::spawn(async move {
            signal().await;
            set.stop();
        });
        stop
    }

    /// Stops the process.
    pub fn stop(&self) {
        self.set.send_replace(true);
    }

    /// Whether the process was told to stop.
    pub fn is_stopped(&self) -> bool {
        *self.set.borrow()
    }

    /// Resolves once the process is told to stop (at once when it already was).
    pub fn stopped(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut told = self.set.subscribe();
        async move {
            // The sender lives as long as any clone of the Stop; if all are gone, stop too.
            let _ = told.wait_for(|stopped| *stopped).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_waiter_sees_the_stop_even_one_that_came_late() {
        let stop = Stop::default();
        let early = tokio::spawn(stop.stopped());
        assert!(!stop.is_stopped());
        stop.clone().stop();
        early.await.unwrap();
        assert!(stop.is_stopped());
        tokio::time::timeout(std::time::Duration::from_secs(1), stop.stopped()).await.unwrap();
    }
}
