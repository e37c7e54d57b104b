//! Kubernetes label-selector matching (`matchLabels` and `matchExpressions`), as the API server
//! defines it, over the interned labels of the pod index.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use crate::index::Labels;

/// Whether `selector` selects an object with `labels`.
///
/// An empty selector selects everything (the PodTrace documents `{}` as "every pod of the
/// namespace"). An unknown operator selects nothing: the CRD's CEL rule rejects it, so this is
/// only reachable for objects stored before the rule existed, and selecting nothing is the safe
/// reading.
pub fn matches(selector: &LabelSelector, labels: &Labels) -> bool {
    let exact = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(key, value)| labels.get(key) == Some(value.as_str()));
    exact
        && selector.match_expressions.iter().flatten().all(|e| {
            let values = e.values.as_deref().unwrap_or_default();
            let value = labels.get(&e.key);
            match e.operator.as_str() {
                "In" => value.is_some_and(|v| values.iter().any(|x| x == v)),
                "NotIn" => value.is_none_or(|v| values.iter().all(|x| x != v)),
                "Exists" => value.is_some(),
                "DoesNotExist" => value.is_none(),
                _ => false,
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        Labels::from_pairs(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())))
    }

    fn expr(key: &str, op: &str, values: &[&str]) -> LabelSelectorRequirement {
        LabelSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: (!values.is_empty()).then(|| values.iter().map(|v| v.to_string()).collect()),
        }
    }

    #[test]
    fn empty_selector_selects_everything() {
        assert!(matches(&LabelSelector::default(), &labels(&[])));
        assert!(matches(&LabelSelector::default(), &labels(&[("app", "x")])));
    }

    #[test]
    fn match_labels_need_every_pair() {
        let sel = LabelSelector {
            match_labels: Some([("app".into(), "web".into()), ("tier".into(), "fe".into())].into()),
            ..Default::default()
        };
        assert!(matches(&sel, &labels(&[("app", "web"), ("tier", "fe"), ("x", "y")])));
        assert!(!matches(&sel, &labels(&[("app", "web")])));
        assert!(!matches(&sel, &labels(&[("app", "web"), ("tier", "be")])));
    }

    #[test]
    fn match_expressions_follow_the_four_operators() {
        let sel = |e| LabelSelector { match_expressions: Some(vec![e]), ..Default::default() };
        let web = labels(&[("app", "web")]);
        let none = labels(&[]);
        assert!(matches(&sel(expr("app", "In", &["web", "api"])), &web));
        assert!(!matches(&sel(expr("app", "In", &["api"])), &web));
        assert!(!matches(&sel(expr("app", "In", &["web"])), &none));
        assert!(matches(&sel(expr("app", "NotIn", &["api"])), &web));
        assert!(matches(&sel(expr("app", "NotIn", &["api"])), &none));
        assert!(!matches(&sel(expr("app", "NotIn", &["web"])), &web));
        assert!(matches(&sel(expr("app", "Exists", &[])), &web));
        assert!(!matches(&sel(expr("app", "Exists", &[])), &none));
        assert!(matches(&sel(expr("app", "DoesNotExist", &[])), &none));
        assert!(!matches(&sel(expr("app", "DoesNotExist", &[])), &web));
        assert!(!matches(&sel(expr("app", "Like", &["web"])), &web));
    }
}
