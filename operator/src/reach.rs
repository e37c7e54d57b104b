//! Cross-namespace tracing with consent: which namespaces a PodTrace's pods may come from.
//!
//! ```text
//!  PodTrace without namespaceSelector ──► its own namespace
//!  PodTrace with namespaceSelector
//!     in the operator's namespace or one of --cluster-trace-namespaces
//!        ──► every namespace whose labels match it AND carry podtrace.dev/allow-tracing=true
//!     anywhere else ──► nothing (Ready=False, NamespaceSelectorNotAllowed)
//! ```
//!
//! Two keys, held by two parties: the platform team decides who may trace across namespaces
//! (the operator's flags), each namespace's owner decides whether it may be traced (the label).
//! Pure: the namespaces' labels come from the index (`index/namespaces.rs`).

use podtrace_api::PodTrace;
use std::collections::BTreeSet;

use crate::index::{Labels, NamespaceIndex};
use crate::selector;

/// The label by which a namespace consents to be traced by PodTraces of other namespaces, and
/// the one value that consents.
pub const CONSENT_LABEL: (&str, &str) = ("podtrace.dev/allow-tracing", "true");

/// The namespaces whose PodTraces may use `spec.namespaceSelector`: the operator's own and
/// those of `--cluster-trace-namespaces`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClusterTracing {
    namespaces: BTreeSet<String>,
}

impl ClusterTracing {
    /// No namespace may trace across namespaces.
    pub const fn none() -> Self {
        Self { namespaces: BTreeSet::new() }
    }

    /// The operator's own namespace (if known) and the namespaces of the flag.
    pub fn new(own: Option<String>, others: impl IntoIterator<Item = String>) -> Self {
        let namespaces =
            own.into_iter().chain(others).map(|n| n.trim().to_owned()).filter(|n| !n.is_empty());
        Self { namespaces: namespaces.collect() }
    }

    /// Whether PodTraces of `namespace` may use `spec.namespaceSelector`.
    pub fn allows(&self, namespace: &str) -> bool {
        self.namespaces.contains(namespace)
    }

    /// Whether no namespace may (then the operator needs no Namespace watch).
    pub fn is_empty(&self) -> bool {
        self.namespaces.is_empty()
    }

    /// Why `pt` may not use its namespaceSelector, or `None` when it has none or may.
    pub fn refusal(&self, pt: &PodTrace) -> Option<String> {
        pt.spec.namespace_selector.as_ref()?;
        let namespace = pt.metadata.namespace.as_deref().unwrap_or_default();
        if self.allows(namespace) {
            return None;
        }
        let allowed = if self.is_empty() {
            "none is configured".to_owned()
        } else {
            self.namespaces.iter().map(String::as_str).collect::<Vec<_>>().join(", ")
        };
        Some(format!(
            "spec.namespaceSelector may only be used by PodTraces in the operator's namespace or in \
             a namespace of its --cluster-trace-namespaces ({allowed}), not in {namespace}: nothing \
             is traced; remove namespaceSelector to trace the pods of {namespace}"
        ))
    }

    /// Whether `pt` may select pods of `namespace`: its own namespace without a
    /// namespaceSelector; with one, a namespace that matches it and consents, if `pt` may use
    /// it at all.
    pub fn reaches(&self, pt: &PodTrace, namespace: &str, namespaces: &NamespaceIndex) -> bool {
        let own = pt.metadata.namespace.as_deref().unwrap_or_default();
        match &pt.spec.namespace_selector {
            None => own == namespace,
            Some(sel) => {
                self.allows(own)
                    && namespaces
                        .labels(namespace)
                        .is_some_and(|l| consents(l) && selector::matches(sel, l))
            }
        }
    }
}

/// Whether a namespace with `labels` consents to cross-namespace tracing.
pub fn consents(labels: &Labels) -> bool {
    labels.get(CONSENT_LABEL.0) == Some(CONSENT_LABEL.1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

    fn traced_from(ns: &str, namespace_selector: Option<LabelSelector>) -> PodTrace {
        let mut pt = crate::fixtures::podtrace_of(ns, "t", "web", None);
        pt.spec.namespace_selector = namespace_selector;
        pt
    }

    fn tier(value: &str) -> LabelSelector {
        LabelSelector {
            match_labels: Some([("tier".to_string(), value.to_string())].into()),
            ..Default::default()
        }
    }

    fn namespaces() -> NamespaceIndex {
        let mut index = NamespaceIndex::default();
        for (name, labels) in [
            ("shop", vec![("tier", "frontend"), CONSENT_LABEL]),
            ("bank", vec![("tier", "frontend")]),
            ("blog", vec![("tier", "frontend"), (CONSENT_LABEL.0, "false")]),
            ("jobs", vec![("tier", "batch"), CONSENT_LABEL]),
        ] {
            index.applied(name, labels.into_iter().map(|(k, v)| (k.to_owned(), v.to_owned())));
        }
        index
    }

    #[test]
    fn a_podtrace_without_namespace_selector_reaches_its_own_namespace_only() {
        let rules = ClusterTracing::new(Some("podtrace-system".into()), []);
        let pt = traced_from("shop", None);
        assert!(rules.reaches(&pt, "shop", &namespaces()));
        assert!(!rules.reaches(&pt, "jobs", &namespaces()));
        assert_eq!(rules.refusal(&pt), None);
    }

    #[test]
    fn an_allowed_namespace_selector_reaches_matching_namespaces_that_consent() {
        let rules = ClusterTracing::new(Some("podtrace-system".into()), ["platform".into()]);
        let ns = namespaces();
        for from in ["podtrace-system", "platform"] {
            let pt = traced_from(from, Some(tier("frontend")));
            assert_eq!(rules.refusal(&pt), None);
            let reached: Vec<&str> = ["shop", "bank", "blog", "jobs", from, "absent"]
                .into_iter()
                .filter(|n| rules.reaches(&pt, n, &ns))
                .collect();
            assert_eq!(reached, ["shop"], "from {from}");
        }
        let every = traced_from("platform", Some(LabelSelector::default()));
        assert!(rules.reaches(&every, "jobs", &ns) && !rules.reaches(&every, "bank", &ns));
    }

    #[test]
    fn a_namespace_selector_elsewhere_is_refused_naming_the_rule_and_reaches_nothing() {
        let rules = ClusterTracing::new(Some("podtrace-system".into()), ["platform".into()]);
        let pt = traced_from("shop", Some(tier("frontend")));
        let refusal = rules.refusal(&pt).unwrap();
        assert!(refusal.contains("(platform, podtrace-system), not in shop"), "{refusal}");
        assert!(!rules.reaches(&pt, "shop", &namespaces()));
        let none = ClusterTracing::none().refusal(&traced_from("platform", Some(tier("x"))));
        assert!(none.unwrap().contains("(none is configured)"));
    }
}
