//! The PromQL users run against podtrace's series: the reference document's examples
//! (`e2e/promql/reference-examples.promql`) and the shipped Grafana dashboard's panel queries,
//! and what a plausible answer to them looks like.

use crate::{prometheus::Sample, repo_root};

/// The dashboard's panel queries with its variables replaced as Grafana would for "All".
pub fn dashboard_queries() -> Vec<(String, String)> {
    let text =
        std::fs::read_to_string(repo_root().join("charts/podtrace/files/dashboard.json")).unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut out = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"]
                .as_str()
                .unwrap()
                .replace("$namespace", ".*")
                .replace("$pod", ".*")
                .replace("$__rate_interval", "1m");
            out.push((panel["title"].as_str().unwrap().to_owned(), expr));
        }
    }
    assert!(out.len() >= 10, "{out:?}");
    out
}

/// The reference's examples (e2e/promql/reference-examples.promql).
pub fn reference_queries() -> Vec<String> {
    std::fs::read_to_string(repo_root().join("e2e/promql/reference-examples.promql"))
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect()
}

/// Whether a query's samples are plausible: present, finite, not negative, and (for latency
/// quantiles and averages) below a minute.
pub fn plausible(query: &str, samples: &[Sample]) -> Result<(), String> {
    if samples.is_empty() {
        return Err("no data".into());
    }
    for s in samples {
        if !s.value.is_finite() || s.value < 0.0 {
            return Err(format!("value {} for {:?}", s.value, s.labels));
        }
        let latency = query.contains("histogram_quantile") || query.contains("_sum[");
        if latency && s.value > 60.0 {
            return Err(format!("latency {}s for {:?}", s.value, s.labels));
        }
    }
    Ok(())
}
