//! Lease-based leader election (`coordination.k8s.io/v1`), so that two replicas are safe: only
//! the holder of the Lease writes.
//!
//! Built on `kube-lease-manager` (maintained, kube 5, Rust ≥ 1.89): it renews the Lease `grace`
//! seconds before it expires, takes over an expired Lease, and releases it when the state
//! receiver is dropped, which is how a graceful shutdown hands over at once.

use kube::Client;
use kube_lease_manager::{LeaseManager, LeaseManagerBuilder, LeaseManagerError};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::{Error, Result};

/// Where the Lease lives and how long it lasts.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    /// Namespace of the Lease.
    pub namespace: String,
    /// Name of the Lease.
    pub name: String,
    /// This replica's identity (the pod name in a cluster).
    pub identity: String,
    /// Seconds a Lease stays valid without renewal: the longest a dead leader blocks a standby.
    pub duration_seconds: u64,
}

/// A running election.
pub struct Election {
    config: LeaseConfig,
    state: watch::Receiver<bool>,
    task: JoinHandle<Result<LeaseManager, LeaseManagerError>>,
}

impl Election {
    /// Joins the election (creating the Lease if needed).
    pub async fn start(client: Client, config: LeaseConfig) -> Result<Self> {
        let error = |source| Error::Lease {
            namespace: config.namespace.clone(),
            name: config.name.clone(),
            source,
        };
        // Renew a third of the duration before expiry (at least a second), so a slow API call
        // does not lose the Lease.
        let grace = (config.duration_seconds / 3).max(1);
        let manager = LeaseManagerBuilder::new(client, &config.name)
            .with_namespace(&config.namespace)
            .with_identity(&config.identity)
            .with_field_manager(format!("{}-lease", crate::FIELD_MANAGER))
            .with_duration(config.duration_seconds)
            .with_grace(grace)
            .build()
            .await
            .map_err(error)?;
        let (state, task) = manager.watch().await;
        Ok(Self { config, state, task })
    }

    /// Waits until this replica holds the Lease.
    pub async fn acquired(&mut self) -> Result<()> {
        let ended = self.state.wait_for(|leading| *leading).await.is_err();
        if ended { Err(self.ended()) } else { Ok(()) }
    }

    /// Waits until this replica no longer holds the Lease (or the election task ended).
    pub async fn lost(&mut self) {
        let _ = self.state.wait_for(|leading| !*leading).await;
    }

    fn ended(&self) -> Error {
        Error::Lease {
            namespace: self.config.namespace.clone(),
            name: self.config.name.clone(),
            source: LeaseManagerError::InconsistentState("the lease manager task ended".into()),
        }
    }

    /// Releases the Lease (if held) so that a standby takes over at once.
    pub async fn release(self) {
        let Self { config, state, task } = self;
        drop(state);
        match tokio::time::timeout(std::time::Duration::from_secs(5), task).await {
            Ok(Ok(Ok(_))) => tracing::info!(lease = %config.name, "leader Lease released"),
            Ok(Ok(Err(e))) => tracing::warn!(error = %e, "releasing the leader Lease failed"),
            Ok(Err(e)) => tracing::warn!(error = %e, "the lease task panicked"),
            Err(_) => tracing::warn!("releasing the leader Lease timed out"),
        }
    }
}
