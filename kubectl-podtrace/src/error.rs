//! What can go wrong, each variant saying where and what to do.

/// An error of `kubectl podtrace`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No kubeconfig or in-cluster configuration could be read.
    #[error(
        "cannot configure a Kubernetes client ({source}); pass --kubeconfig or --context, or set KUBECONFIG"
    )]
    Config {
        /// The cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The API server refused or failed a request.
    #[error("{what}: {}{}", describe(source), advice(source))]
    Api {
        /// What was asked (`list podtraces in shop`).
        what: String,
        /// The cause.
        #[source]
        source: kube::Error,
    },
    /// A pod without the container port a command reads.
    #[error(
        "{what}: the pod has no container port named {port:?} (is it a podtrace pod of the Helm chart?)"
    )]
    NoPort {
        /// What was asked.
        what: String,
        /// The port's name.
        port: String,
    },
    /// No agent pod was found.
    #[error(
        "no podtrace agent pods with labels {selector} in namespace {namespace}: pass --system-namespace (and --agent-selector) where podtrace is installed"
    )]
    NoAgents {
        /// The namespace looked in.
        namespace: String,
        /// The selector used.
        selector: String,
    },
    /// Writing the output failed.
    #[error("printing the output: {0}")]
    Output(String),
}

/// The API server's answer in words (`403 Forbidden: pods is forbidden: …`), not kube's debug
/// form.
pub fn describe(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => format!("{} {}: {}", s.code, s.reason, s.message.trim()),
        other => other.to_string(),
    }
}

/// Advice for the errors a user can fix: RBAC and missing CRDs.
fn advice(e: &kube::Error) -> &'static str {
    match e {
        kube::Error::Api(s) if s.code == 403 => {
            " (your user lacks this permission: see \"RBAC for kubectl podtrace\" in docs/guide.md)"
        }
        kube::Error::Api(s) if s.code == 404 && s.reason == "NotFound" => {
            " (is podtrace installed? its CRDs come with the Helm chart or manifests/podtrace.yaml)"
        }
        _ => "",
    }
}

/// The result of this crate's functions.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An [`Error::Api`] for `what`.
pub fn api(what: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
    let what = what.into();
    move |source| Error::Api { what, source }
}
