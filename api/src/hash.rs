//! Content hashes: short, stable names of settings, so that equal settings share one entry
//! (`NodeTrace.spec.podSettings[].key`), a PodTrace's status shows when its effective profile
//! changed (`status.profileHash`), and the operator skips writing a NodeTrace whose spec did not
//! change (its `podtrace.dev/spec-hash` annotation).

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::profile::MonitoringProfileSpec;

/// The first 16 hex digits of the SHA-256 of `value`'s JSON. Field order is the struct's, so
/// equal values always hash equal.
pub fn content_hash(value: &impl Serialize) -> String {
    let json = serde_json::to_vec(value).expect("podtrace API types always serialize");
    Sha256::digest(&json).iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// The hash of a profile's settings (`PodTrace.status.profileHash`).
pub fn profile_hash(spec: &MonitoringProfileSpec) -> String {
    content_hash(spec)
}

/// The key of `settings` in `NodeTraceSpec.podSettings`: its content hash, so equal settings
/// share an entry whatever the order they were merged in.
pub fn settings_key(settings: &MonitoringProfileSpec) -> String {
    content_hash(settings)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_stable_and_changes_with_any_setting() {
        let a = MonitoringProfileSpec::default();
        let mut b = a.clone();
        assert_eq!(profile_hash(&a), profile_hash(&b));
        assert_eq!(profile_hash(&a).len(), 16);
        assert_eq!(settings_key(&a), profile_hash(&a));
        b.history.size += 1;
        assert_ne!(profile_hash(&a), profile_hash(&b));
    }
}
