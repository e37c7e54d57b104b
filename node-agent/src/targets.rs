//! What the agent measures: [`Target`]s, one per traced container (or, standalone, per matched
//! cgroup), each with its resolved cgroup and the effective profile that says what to collect and
//! how often.

use podtrace_api::MonitoringProfileSpec;
use std::time::Duration;

use crate::{
    cgroup::Cgroup,
    metrics::{Labels, TargetKey},
};

/// A container (or local cgroup) whose cgroup was found.
#[derive(Clone, Debug)]
pub struct Target {
    /// namespace / pod / container.
    pub key: TargetKey,
    /// Pod UID (empty in standalone mode).
    pub uid: String,
    /// The cgroup's directories.
    pub cgroup: Cgroup,
    /// Only these processes (standalone process selectors); `None` for every process of the cgroup.
    pub pids: Option<Vec<u32>>,
    /// The effective profile.
    pub profile: MonitoringProfileSpec,
    /// Pod labels of the profile's allow-list, as `label_<key>` labels.
    pub pod_labels: Labels,
}

impl Target {
    /// The collection interval of the target's profile (10s when it does not parse; the CRD
    /// schema rejects such profiles, so this only guards hand-written standalone files).
    pub fn interval(&self) -> Duration {
        self.profile.interval().unwrap_or(Duration::from_secs(10)).max(Duration::from_millis(100))
    }

    /// The series budget of the target's pod.
    pub fn budget(&self) -> usize {
        self.profile.max_series_per_pod.max(1) as usize
    }

    /// `namespace`, `pod`, `container` and the pod labels.
    pub fn labels(&self) -> Labels {
        let mut l = self.key.labels();
        l.extend(&self.pod_labels);
        l
    }
}

/// Pod labels as series labels: `label_` plus the key with every character that is not a letter,
/// digit or `_` replaced by `_` (as kube-state-metrics does), for the keys of `allow` only.
pub fn pod_labels<'a>(
    labels: impl IntoIterator<Item = (&'a String, &'a String)>,
    allow: &[String],
) -> Labels {
    let mut out = Labels::default();
    for (k, v) in labels {
        if allow.contains(k) {
            let name: String =
                k.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect();
            out.push(&format!("label_{name}"), v);
        }
    }
    out
}

/// Why a wanted target has no cgroup yet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pending {
    /// namespace / pod / container.
    pub key: TargetKey,
    /// Pod UID.
    pub uid: String,
    /// The typed reason.
    pub reason: podtrace_api::status::PodAttachReason,
    /// Details (paths tried).
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_labels_keep_only_allowed_keys_and_sanitize_names() {
        let labels: std::collections::BTreeMap<String, String> = [
            ("app.kubernetes.io/name".to_string(), "web".to_string()),
            ("secret".to_string(), "x".to_string()),
        ]
        .into();
        let l = pod_labels(&labels, &["app.kubernetes.io/name".to_string()]);
        assert_eq!(l.as_str(), "label_app_kubernetes_io_name=\"web\"");
    }
}
