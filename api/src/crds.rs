//! The four CustomResourceDefinitions as installed: generated from the types, with doc
//! comments reflowed into paragraphs.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;
use serde_json::Value;

use crate::{MonitoringProfile, NodeTrace, PodTrace, PodTraceProfile};

/// The CRDs of MonitoringProfile, PodTrace, NodeTrace and PodTraceProfile, in that order.
pub fn all() -> Vec<CustomResourceDefinition> {
    [MonitoringProfile::crd(), PodTrace::crd(), NodeTrace::crd(), PodTraceProfile::crd()]
        .into_iter()
        .map(reflow)
        .collect()
}

/// Doc comments are wrapped at 100 columns in the source; `kubectl explain` wraps again, which
/// leaves ragged half-lines. Join the lines of each paragraph so kubectl wraps them once.
fn reflow(crd: CustomResourceDefinition) -> CustomResourceDefinition {
    fn walk(v: &mut Value) {
        match v {
            Value::Object(map) => {
                for (key, value) in map.iter_mut() {
                    match value {
                        Value::String(s) if key == "description" => {
                            *s = s
                                .split("\n\n")
                                .map(|para| {
                                    para.split('\n').map(str::trim).collect::<Vec<_>>().join(" ")
                                })
                                .collect::<Vec<_>>()
                                .join("\n\n");
                        }
                        _ => walk(value),
                    }
                }
            }
            Value::Array(items) => items.iter_mut().for_each(walk),
            _ => {}
        }
    }
    let mut value = serde_json::to_value(crd).expect("a CRD serializes");
    walk(&mut value);
    serde_json::from_value(value).expect("reflowed descriptions keep the CRD valid")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptions_are_single_paragraph_lines() {
        let json = serde_json::to_string(&all()).unwrap();
        assert!(
            json.contains("Pods that match, are bound to a node and have not finished are traced.")
        );
    }

    #[test]
    fn node_trace_schema_has_no_cel_rules_and_embedded_profiles_lose_theirs() {
        let crds: Vec<String> = all().iter().map(|c| serde_json::to_string(c).unwrap()).collect();
        assert!(crds[0].contains("x-kubernetes-validations"));
        assert!(crds[1].contains("x-kubernetes-validations"));
        assert!(!crds[2].contains("x-kubernetes-validations"));
        // A PodTraceProfile keeps its own rule (profileRef xor profile), not the inline
        // profile's: the operator writes profiles the API server validated already.
        assert_eq!(crds[3].matches("x-kubernetes-validations").count(), 1, "{}", crds[3]);
    }

    /// kubectl resolves a category before a resource name: a category spelled like a CRD's
    /// singular made `kubectl get podtrace web` fail with "you must specify only one resource".
    #[test]
    fn no_category_shadows_a_resource_name() {
        let crds = all();
        let names: Vec<String> = crds
            .iter()
            .flat_map(|c| {
                let n = &c.spec.names;
                let mut v = vec![n.plural.clone(), n.kind.to_lowercase()];
                v.extend(n.singular.clone());
                v.extend(n.short_names.clone().unwrap_or_default());
                v
            })
            .collect();
        for c in &crds {
            for category in c.spec.names.categories.clone().unwrap_or_default() {
                assert!(!names.contains(&category), "category {category} shadows a resource name");
            }
        }
    }
}
