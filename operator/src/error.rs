//! The operator's one error type.

use podtrace_api::effective::ProfileError;

/// Everything a reconcile or the operator's start-up can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Kubernetes API call failed.
    #[error("{action} failed: {source}")]
    Kube {
        /// What was being done, e.g. "applying NodeTrace/node-1".
        action: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// Adding or removing the PodTrace finalizer failed.
    #[error("finalizer of PodTrace {name}: {source}")]
    Finalizer {
        /// namespace/name of the PodTrace.
        name: String,
        /// What went wrong.
        #[source]
        source: Box<kube::runtime::finalizer::Error<Error>>,
    },
    /// A PodTrace refers to a MonitoringProfile that does not exist.
    #[error(transparent)]
    Profile(#[from] ProfileError),
    /// The lease used for leader election could not be managed.
    #[error("leader election (Lease {namespace}/{name}): {source}")]
    Lease {
        /// Namespace of the Lease.
        namespace: String,
        /// Name of the Lease.
        name: String,
        /// What went wrong.
        #[source]
        source: kube_lease_manager::LeaseManagerError,
    },
    /// A flag has a value the operator cannot use.
    #[error("invalid --{flag} {value:?}: {reason}")]
    InvalidFlag {
        /// The flag's name.
        flag: &'static str,
        /// The rejected value.
        value: String,
        /// What to write instead.
        reason: &'static str,
    },
}

/// The operator's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The `reason` label of `podtrace_operator_reconcile_errors_total`: bounded, one per variant
    /// (and per HTTP status class for API errors, so that conflicts and 5xx can be told apart).
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube { source: kube::Error::Api(status), .. } if status.code == 409 => {
                "conflict"
            }
            Error::Kube { source: kube::Error::Api(status), .. } if status.code == 404 => {
                "not_found"
            }
            Error::Kube { source: kube::Error::Api(_), .. } => "api",
            Error::Kube { .. } => "kube_client",
            Error::Finalizer { .. } => "finalizer",
            Error::Profile(e) => match e {
                ProfileError::NotFound { .. } => "profile_not_found",
            },
            Error::Lease { .. } => "lease",
            Error::InvalidFlag { .. } => "invalid_flag",
        }
    }

    /// Wraps a kube error with what was being done.
    pub fn kube(action: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
        let action = action.into();
        move |source| Error::Kube { action, source }
    }
}
