//! A pod's `maxSeriesPerPod`, for the series a push exporter sends (OTLP) as for `/metrics`:
//! over the budget, whole groups go (a histogram's lines of one label set together, any other
//! line alone), the families of the lowest [`keep`](super::catalog::Family::keep) rank first,
//! from any container of the pod, each family's last groups first.
//!
//! The store applies this to what it holds ([`Store::replace`](super::Store::replace)); here it
//! applies to one collection's samples of a pod, which the store never sees when the profile
//! keeps the pod off `/metrics` (`export.prometheus: false`).

use super::{
    Sample,
    catalog::{FAMILIES, FamilyId, Kind, Scope},
};
use std::{ops::Range, sync::LazyLock};

/// The pod families in the order the budget drops them (computed once: the catalog is static).
pub fn drop_order() -> &'static [FamilyId] {
    static ORDER: LazyLock<Vec<FamilyId>> = LazyLock::new(|| {
        let mut order: Vec<FamilyId> =
            (0..FAMILIES.len()).filter(|f| FAMILIES[*f].scope != Scope::Node).collect();
        order.sort_by_key(|f| (FAMILIES[*f].keep, std::cmp::Reverse(*f)));
        order
    });
    &ORDER
}

/// The labels that tell one histogram series from another: a `_bucket` line's labels without
/// its `le` (always the last label), the others' as they are.
pub fn group_labels<'a>(suffix: &str, labels: &'a str) -> &'a str {
    match (suffix, labels.rfind("le=\"")) {
        ("_bucket", Some(0)) => "",
        ("_bucket", Some(i)) if labels[..i].ends_with(',') => &labels[..i - 1],
        _ => labels,
    }
}

/// Keeps the series of a pod's containers (`pod`, one list each) within `budget` lines; returns
/// the lines dropped.
pub fn trim(pod: &mut [&mut Vec<Sample>], budget: usize) -> usize {
    let total: usize = pod.iter().map(|s| s.len()).sum();
    let mut excess = total.saturating_sub(budget);
    if excess == 0 {
        return 0;
    }
    let mut dropped = 0;
    for &family in drop_order() {
        for series in pod.iter_mut() {
            if excess == 0 {
                return dropped;
            }
            // Last groups first; drained from the end, so the ranges before stay valid.
            for group in groups_of(series, family).into_iter().rev() {
                if excess == 0 {
                    break;
                }
                excess = excess.saturating_sub(group.len());
                dropped += group.len();
                series.drain(group);
            }
        }
    }
    dropped
}

/// Where the groups of `family` are in `series`, in order: the contiguous lines of one
/// histogram label set, or one line.
fn groups_of(series: &[Sample], family: FamilyId) -> Vec<Range<usize>> {
    let histogram = FAMILIES[family].kind == Kind::Histogram;
    fn key(s: &Sample) -> &str {
        group_labels(s.suffix, s.labels.as_str())
    }
    let mut groups = Vec::new();
    let mut i = 0;
    while i < series.len() {
        if series[i].family != family {
            i += 1;
            continue;
        }
        let mut end = i + 1;
        if histogram {
            let first = key(&series[i]);
            while end < series.len() && series[end].family == family && key(&series[end]) == first {
                end += 1;
            }
        }
        groups.push(i..end);
        i = end;
    }
    groups
}
