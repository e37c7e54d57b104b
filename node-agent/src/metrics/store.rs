//! The series the collectors produce, by family and target, encoded straight to OpenMetrics text.
//!
//! ```text
//!  collector ─ replace(source, target, samples, budget) ─► by_family[f][target] = [(labels, value)]
//!  /metrics  ─ encode(enabled sources) ───────────────────► # HELP / # TYPE / name{labels} value
//! ```
//!
//! Each collection replaces everything one source produced for one target, so series of processes
//! that exited disappear at the next collection and series of targets that went away disappear with
//! [`Store::remove_target`]. Labels are formatted once when a sample is stored, which keeps
//! encoding a copy of bytes (see bench/agent for the figures).

use parking_lot::RwLock;
use std::{
    collections::{BTreeMap, HashMap, HashSet},
    fmt::Write as _,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use super::budget::group_labels;
use super::catalog::{FAMILIES, FamilyId, Kind, of_source};
use super::sources::Source;

/// What a series belongs to: a container of a pod (or, for node metrics, the node: all empty).
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TargetKey {
    /// Pod namespace.
    pub namespace: String,
    /// Pod name.
    pub pod: String,
    /// Container name.
    pub container: String,
}

impl TargetKey {
    /// A target key.
    pub fn new(namespace: &str, pod: &str, container: &str) -> Self {
        Self { namespace: namespace.into(), pod: pod.into(), container: container.into() }
    }

    /// `namespace="…",pod="…",container="…"`, the labels every per-pod series starts with.
    pub fn labels(&self) -> Labels {
        let mut l = Labels::default();
        l.push("namespace", &self.namespace)
            .push("pod", &self.pod)
            .push("container", &self.container);
        l
    }
}

/// A label set, formatted as OpenMetrics `k="v",…` with values escaped.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Labels(String);

impl Labels {
    /// Appends a label; the value is escaped (`\`, `"`, newline).
    pub fn push(&mut self, name: &str, value: &str) -> &mut Self {
        if !self.0.is_empty() {
            self.0.push(',');
        }
        self.0.push_str(name);
        self.0.push_str("=\"");
        for c in value.chars() {
            match c {
                '\\' => self.0.push_str("\\\\"),
                '"' => self.0.push_str("\\\""),
                '\n' => self.0.push_str("\\n"),
                c => self.0.push(c),
            }
        }
        self.0.push('"');
        self
    }

    /// Appends already formatted labels (for the pod-label suffix shared by a pod's series).
    pub fn extend(&mut self, other: &Labels) -> &mut Self {
        if !other.0.is_empty() {
            if !self.0.is_empty() {
                self.0.push(',');
            }
            self.0.push_str(&other.0);
        }
        self
    }

    /// The formatted text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The labels as (name, unescaped value) pairs, in order: the inverse of [`Labels::push`],
    /// for the OTLP exporter, which sends them as attributes. Labels are kept formatted because
    /// `/metrics` encoding is the hot path; values without escapes (nearly all) are borrowed.
    pub fn pairs(&self) -> impl Iterator<Item = (&str, std::borrow::Cow<'_, str>)> {
        let mut rest = self.0.as_str();
        std::iter::from_fn(move || {
            let (name, after) = rest.split_once("=\"")?;
            // The closing quote is the first one not escaped by a backslash.
            let mut escaped = false;
            let mut end = None;
            for (i, c) in after.char_indices() {
                match c {
                    '\\' => escaped = !escaped,
                    '"' if !escaped => {
                        end = Some(i);
                        break;
                    }
                    _ => escaped = false,
                }
            }
            let end = end?;
            let raw = &after[..end];
            rest = after[end + 1..].strip_prefix(',').unwrap_or("");
            if !raw.contains('\\') {
                return Some((name, std::borrow::Cow::Borrowed(raw)));
            }
            let mut value = String::with_capacity(raw.len());
            let mut chars = raw.chars();
            while let Some(c) = chars.next() {
                if c != '\\' {
                    value.push(c);
                    continue;
                }
                match chars.next() {
                    Some('n') => value.push('\n'),
                    Some(escaped) => value.push(escaped),
                    None => {}
                }
            }
            Some((name, std::borrow::Cow::Owned(value)))
        })
    }
}

/// One value of one series.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// The family.
    pub family: FamilyId,
    /// Appended to the family name: `_bucket`, `_sum` or `_count` for histogram lines, empty
    /// otherwise.
    pub suffix: &'static str,
    /// Its labels.
    pub labels: Labels,
    /// The value.
    pub value: f64,
}

impl Sample {
    /// A sample.
    pub fn new(family: FamilyId, labels: Labels, value: f64) -> Self {
        Self { family, suffix: "", labels, value }
    }

    /// A histogram line (`suffix` is `_bucket`, `_sum` or `_count`).
    pub fn histogram(family: FamilyId, suffix: &'static str, labels: Labels, value: f64) -> Self {
        Self { family, suffix, labels, value }
    }
}

/// The series of one family and target, rendered as exposition lines when stored: encoding is
/// then a copy of one block per target (see bench/agent). The lines are kept in series groups,
/// the unit a budget drops: one line for a gauge or counter, every `_bucket`, `_sum` and
/// `_count` line of one label set for a histogram (dropping part of one would leave an invalid
/// histogram).
#[derive(Clone, Debug, Default)]
struct Series {
    lines: String,
    /// Where each group ends in `lines`, and its line count, in order.
    groups: Vec<(usize, usize)>,
    count: usize,
}

impl Series {
    /// Closes the group of the lines appended since the last one.
    fn end_group(&mut self, lines: usize) {
        if lines > 0 {
            self.groups.push((self.lines.len(), lines));
            self.count += lines;
        }
    }

    /// Removes the last group; returns its line count (0 when empty).
    fn pop_group(&mut self) -> usize {
        let Some((_, lines)) = self.groups.pop() else { return 0 };
        self.lines.truncate(self.groups.last().map_or(0, |g| g.0));
        self.count -= lines;
        lines
    }
}

/// The series of every family by target.
pub struct Store {
    inner: RwLock<Inner>,
    dropped: AtomicU64,
}

/// The series, and their counts kept up to date on every change, because the budget check of
/// every collection needs a pod's total and a pod-range walk over every family cost more than the
/// rest of the collection (string comparisons of keys in ~60 maps).
struct Inner {
    /// The series by family and target. The maps share one copy of each target's key (an
    /// `Arc` of 8 bytes in each entry instead of a 72-byte key and its three strings: a
    /// container's 18 series are in 19 maps).
    by_family: Vec<BTreeMap<Arc<TargetKey>, Series>>,
    /// That copy of the key of every target with series.
    keys: HashSet<Arc<TargetKey>>,
    /// Series per (target, source).
    by_source: HashMap<(TargetKey, Source), usize>,
    /// Series per (namespace, pod).
    by_pod: HashMap<(String, String), usize>,
}

impl Inner {
    /// The shared key of `target`, made when it has none yet.
    fn key(&mut self, target: &TargetKey) -> Arc<TargetKey> {
        if let Some(key) = self.keys.get(target) {
            return key.clone();
        }
        let key = Arc::new(target.clone());
        self.keys.insert(key.clone());
        key
    }

    /// Drops the shared key of `target` once no map holds it.
    fn forget_unused(&mut self, target: &TargetKey) {
        if self.keys.get(target).is_some_and(|k| Arc::strong_count(k) == 1) {
            self.keys.remove(target);
        }
    }

    fn pod_key(target: &TargetKey) -> (String, String) {
        (target.namespace.clone(), target.pod.clone())
    }

    /// Moves the count of (target, source) from `old` to `new`.
    fn recount(&mut self, target: &TargetKey, source: Source, old: usize, new: usize) {
        if old == new {
            return;
        }
        match new {
            0 => {
                self.by_source.remove(&(target.clone(), source));
            }
            n => {
                self.by_source.insert((target.clone(), source), n);
            }
        }
        let pod = self.by_pod.entry(Self::pod_key(target)).or_default();
        *pod = *pod + new - old;
        if *pod == 0 {
            self.by_pod.remove(&Self::pod_key(target));
        }
    }

    /// Drops whole series groups of the pod of `target` until it has at most `budget` series:
    /// the families of the lowest [`Family::keep`](super::catalog::Family::keep) rank first,
    /// from any source and container of the pod. Returns the lines dropped.
    fn enforce(&mut self, target: &TargetKey, budget: usize) -> usize {
        let pod = Self::pod_key(target);
        let total = self.by_pod.get(&pod).copied().unwrap_or(0);
        if total <= budget {
            return 0;
        }
        let mut excess = total - budget;
        let first = TargetKey::new(&target.namespace, &target.pod, "");
        let mut removed: Vec<(TargetKey, Source, usize)> = Vec::new();
        for &f in super::budget::drop_order() {
            if excess == 0 {
                break;
            }
            let same_pod = |t: &TargetKey| t.namespace == first.namespace && t.pod == first.pod;
            for (t, series) in self.by_family[f].range_mut(first.clone()..) {
                if excess == 0 || !same_pod(t) {
                    break;
                }
                let mut n = 0;
                while excess > 0 && !series.groups.is_empty() {
                    let lines = series.pop_group();
                    n += lines;
                    excess = excess.saturating_sub(lines);
                }
                if n > 0 {
                    removed.push(((**t).clone(), FAMILIES[f].source, n));
                }
            }
            self.by_family[f].retain(|_, s| s.count > 0);
        }
        let mut dropped = 0;
        for (t, source, n) in removed {
            let old = self.by_source.get(&(t.clone(), source)).copied().unwrap_or(0);
            self.recount(&t, source, old, old - n);
            self.forget_unused(&t);
            dropped += n;
        }
        dropped
    }
}

impl Default for Store {
    fn default() -> Self {
        Self {
            inner: RwLock::new(Inner {
                by_family: vec![BTreeMap::new(); FAMILIES.len()],
                keys: HashSet::new(),
                by_source: HashMap::new(),
                by_pod: HashMap::new(),
            }),
            dropped: AtomicU64::new(0),
        }
    }
}

impl Store {
    /// Replaces everything `source` produced for `target` with `samples`, keeping the pod within
    /// `budget` series (its `maxSeriesPerPod`, counted over every source and container of the
    /// pod). Over the budget, whole series groups are dropped (a histogram with all its lines),
    /// the least important families first (see [`Inner::enforce`]), whichever source holds
    /// them. Returns how many lines were dropped for the budget.
    pub fn replace(
        &self,
        source: Source,
        target: &TargetKey,
        samples: Vec<Sample>,
        budget: Option<usize>,
    ) -> usize {
        let mut inner = self.inner.write();
        let own: Vec<FamilyId> = of_source(source).collect();
        if own.is_empty() {
            debug_assert!(samples.is_empty(), "{source} has no families");
            return 0;
        }
        let mine = inner.by_source.get(&(target.clone(), source)).copied().unwrap_or(0);
        // Per family: its series and the open group (its labels and lines so far).
        let mut grouped: BTreeMap<FamilyId, (Series, String, usize)> = BTreeMap::new();
        let mut kept = 0;
        for s in samples {
            debug_assert!(own.contains(&s.family), "{} is not a family of {source}", s.family);
            let (series, open, lines) = grouped.entry(s.family).or_default();
            // Histogram lines of one label set are contiguous (buckets, +Inf, _sum, _count):
            // a group ends where the labels change. Every other line is a group of its own.
            if FAMILIES[s.family].kind == Kind::Histogram {
                let key = group_labels(s.suffix, &s.labels.0);
                if *lines == 0 || open.as_str() != key {
                    series.end_group(std::mem::take(lines));
                    open.clear();
                    open.push_str(key);
                }
            } else {
                series.end_group(std::mem::take(lines));
            }
            let out = &mut series.lines;
            out.push_str(FAMILIES[s.family].name);
            out.push_str(s.suffix);
            if !s.labels.0.is_empty() {
                out.push('{');
                out.push_str(&s.labels.0);
                out.push('}');
            }
            out.push(' ');
            write_value(out, s.value);
            out.push('\n');
            *lines += 1;
            kept += 1;
        }
        let key = inner.key(target);
        for f in own {
            let by_target = &mut inner.by_family[f];
            let series = grouped.remove(&f).map(|(mut series, _, lines)| {
                series.end_group(lines);
                // Built by appending, the text's capacity is up to twice its length (a 130-byte
                // line holds 232) and one group holds four: kept until the next collection,
                // that was a sixth of the agent's memory per container.
                series.lines.shrink_to_fit();
                series.groups.shrink_to_fit();
                series
            });
            match (series, by_target.get_mut(target)) {
                (Some(series), Some(slot)) => *slot = series,
                (Some(series), None) => {
                    by_target.insert(key.clone(), series);
                }
                (None, Some(_)) => {
                    by_target.remove(target);
                }
                (None, None) => {}
            }
        }
        drop(key);
        inner.forget_unused(target);
        inner.recount(target, source, mine, kept);
        let dropped = budget.map_or(0, |b| inner.enforce(target, b));
        self.dropped.fetch_add(dropped as u64, Ordering::Relaxed);
        dropped
    }

    /// Removes every series of `target`.
    pub fn remove_target(&self, target: &TargetKey) {
        let mut inner = self.inner.write();
        for by_target in inner.by_family.iter_mut() {
            by_target.remove(target);
        }
        inner.forget_unused(target);
        let sources: Vec<(Source, usize)> = inner
            .by_source
            .iter()
            .filter(|((t, _), _)| t == target)
            .map(|((_, s), n)| (*s, *n))
            .collect();
        for (source, n) in sources {
            inner.recount(target, source, n, 0);
        }
    }

    /// Removes every series of `source`.
    pub fn clear_source(&self, source: Source) {
        let mut inner = self.inner.write();
        for f in of_source(source) {
            inner.by_family[f].clear();
        }
        inner.keys.retain(|k| Arc::strong_count(k) > 1);
        let counted: Vec<(TargetKey, Source, usize)> = inner
            .by_source
            .iter()
            .filter(|((_, s), _)| *s == source)
            .map(|((t, s), n)| (t.clone(), *s, *n))
            .collect();
        for (target, source, n) in counted {
            inner.recount(&target, source, n, 0);
        }
    }

    /// The targets with at least one series.
    pub fn targets(&self) -> Vec<TargetKey> {
        let families = &self.inner.read().by_family;
        let mut out: Vec<TargetKey> =
            families.iter().flat_map(|m| m.keys().map(|k| (**k).clone())).collect();
        out.sort();
        out.dedup();
        out
    }

    /// Number of series stored.
    pub fn series(&self) -> usize {
        self.inner.read().by_pod.values().sum()
    }

    /// Number of series of one pod (all containers, all sources).
    pub fn series_of_pod(&self, namespace: &str, pod: &str) -> usize {
        let inner = self.inner.read();
        inner.by_pod.get(&(namespace.to_owned(), pod.to_owned())).copied().unwrap_or(0)
    }

    /// Samples dropped by budgets since start.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Writes the families of the enabled sources as OpenMetrics text (without `# EOF`).
    pub fn encode(&self, out: &mut String, enabled: impl Fn(Source) -> bool) -> std::fmt::Result {
        let families = &self.inner.read().by_family;
        for (f, by_target) in families.iter().enumerate() {
            let family = &FAMILIES[f];
            if by_target.is_empty() || !enabled(family.source) {
                continue;
            }
            let (type_name, kind) = match family.kind {
                Kind::Gauge => (family.name, "gauge"),
                Kind::Counter => (family.name.trim_end_matches("_total"), "counter"),
                Kind::Histogram => (family.name, "histogram"),
                Kind::Untyped => (family.name, ""),
            };
            // Untyped families get no metadata: OpenMetrics reads them as `unknown` and the
            // text format as `untyped`, which have no common TYPE keyword.
            if !kind.is_empty() {
                writeln!(out, "# HELP {type_name} {}", family.help)?;
                writeln!(out, "# TYPE {type_name} {kind}")?;
            }
            for series in by_target.values() {
                out.push_str(&series.lines);
            }
        }
        Ok(())
    }
}

/// Integers without a fraction (most values are byte counts), others in the shortest form that
/// round-trips; NaN and infinities as OpenMetrics spells them. `itoa`/`ryu` instead of `write!`
/// because formatting is most of the encoding time.
fn write_value(out: &mut String, v: f64) {
    if v.is_nan() {
        out.push_str("NaN");
    } else if v.is_infinite() {
        out.push_str(if v > 0.0 { "+Inf" } else { "-Inf" });
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        out.push_str(itoa::Buffer::new().format(v as i64));
    } else {
        out.push_str(ryu::Buffer::new().format_finite(v));
    }
}

#[cfg(test)]
mod tests {
    use super::super::catalog::*;
    use super::*;

    fn mem(t: &TargetKey, v: f64) -> Sample {
        let mut l = Labels::default();
        l.push("resource_type", "memory").extend(&t.labels());
        Sample::new(RESOURCE_USAGE, l, v)
    }

    #[test]
    fn labels_are_escaped() {
        let mut l = Labels::default();
        l.push("a", "x\"y\\z\nw").push("b", "");
        assert_eq!(l.as_str(), r#"a="x\"y\\z\nw",b="""#);
    }

    proptest::proptest! {
        /// `pairs` gives back exactly what was pushed, whatever the values hold.
        #[test]
        fn pairs_unescape_what_push_escaped(values in proptest::collection::vec(".*", 0..5)) {
            let mut l = Labels::default();
            let names: Vec<String> = (0..values.len()).map(|i| format!("l{i}")).collect();
            for (n, v) in names.iter().zip(&values) {
                l.push(n, v);
            }
            let back: Vec<(String, String)> =
                l.pairs().map(|(n, v)| (n.to_owned(), v.into_owned())).collect();
            let want: Vec<(String, String)> = names.into_iter().zip(values).collect();
            proptest::prop_assert_eq!(back, want);
        }
    }

    #[test]
    fn replace_then_encode_gives_openmetrics_and_counters_drop_total_in_type() {
        let store = Store::default();
        let t = TargetKey::new("ns", "p", "c");
        store.replace(Source::Resource, &t, vec![mem(&t, 1024.0)], None);
        store.replace(
            Source::Kernel,
            &TargetKey::default(),
            vec![Sample::new(NODE_CONTEXT_SWITCHES, Labels::default(), 12.0)],
            None,
        );
        let mut out = String::new();
        store.encode(&mut out, |_| true).unwrap();
        assert!(out.contains("# TYPE podtrace_resource_usage_bytes gauge\n"));
        assert!(out.contains(
            "podtrace_resource_usage_bytes{resource_type=\"memory\",namespace=\"ns\",pod=\"p\",container=\"c\"} 1024\n"
        ));
        assert!(
            out.contains("# TYPE node_context_switches counter\nnode_context_switches_total 12\n")
        );
        let mut only_resource = String::new();
        store.encode(&mut only_resource, |s| s == Source::Resource).unwrap();
        assert!(!only_resource.contains("node_context"));
    }

    #[test]
    fn replacing_removes_series_no_longer_produced_and_remove_target_removes_all() {
        let store = Store::default();
        let t = TargetKey::new("ns", "p", "c");
        store.replace(Source::Resource, &t, vec![mem(&t, 1.0)], None);
        assert_eq!(store.series(), 1);
        store.replace(Source::Resource, &t, vec![], None);
        assert_eq!(store.series(), 0);
        store.replace(Source::Resource, &t, vec![mem(&t, 1.0)], None);
        store.remove_target(&t);
        assert_eq!(store.series(), 0);
        assert!(store.targets().is_empty());
    }

    #[test]
    fn budget_counts_every_container_and_source_of_the_pod() {
        let store = Store::default();
        let a = TargetKey::new("ns", "p", "a");
        let b = TargetKey::new("ns", "p", "b");
        let other = TargetKey::new("ns", "q", "a");
        let five = |t: &TargetKey| (0..5).map(|i| mem(t, i as f64)).collect::<Vec<_>>();
        assert_eq!(store.replace(Source::Resource, &other, five(&other), Some(10)), 0);
        assert_eq!(store.replace(Source::Resource, &a, five(&a), Some(8)), 0);
        // The pod holds 8: two series of one family go, the first container's.
        assert_eq!(store.replace(Source::Resource, &b, five(&b), Some(8)), 2);
        assert_eq!(store.series_of_pod("ns", "p"), 8);
        assert_eq!(store.series_of_pod("ns", "q"), 5, "another pod is not touched");
        // Every collection over the budget drops (and counts) again.
        assert_eq!(store.replace(Source::Resource, &a, five(&a), Some(8)), 2);
        assert_eq!(store.series_of_pod("ns", "p"), 8);
        assert_eq!(store.dropped(), 4);
    }

    /// The lines of one histogram series (20 finite buckets, +Inf, _sum, _count) of `family`.
    fn histogram(family: FamilyId, labels: &Labels) -> Vec<Sample> {
        let mut out = Vec::new();
        for le in
            (0..20).map(|k| format!("{}", 0.0001 * f64::from(1u32 << k))).chain(["+Inf".into()])
        {
            let mut l = labels.clone();
            l.push("le", &le);
            out.push(Sample::histogram(family, "_bucket", l, 1.0));
        }
        out.push(Sample::histogram(family, "_sum", labels.clone(), 0.5));
        out.push(Sample::histogram(family, "_count", labels.clone(), 1.0));
        out
    }

    /// Every histogram label set of `text` has all its buckets, `+Inf`, `_sum` and `_count`.
    fn histograms_are_whole(text: &str) -> Result<(), String> {
        let mut sets: BTreeMap<String, (usize, bool, bool)> = BTreeMap::new();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (series, _) = line.rsplit_once(' ').unwrap();
            let (name, labels) = series.split_once('{').unwrap_or((series, ""));
            for (suffix, slot) in [("_bucket", 0), ("_sum", 1), ("_count", 2)] {
                let Some(base) = name.strip_suffix(suffix) else { continue };
                if !FAMILIES.iter().any(|f| f.name == base && f.kind == Kind::Histogram) {
                    continue;
                }
                let labels = group_labels(suffix, labels.trim_end_matches('}'));
                let entry = sets.entry(format!("{base}{{{labels}}}")).or_default();
                match slot {
                    0 => entry.0 += 1,
                    1 => entry.1 = true,
                    _ => entry.2 = true,
                }
            }
        }
        match sets.into_iter().find(|(_, v)| *v != (21, true, true)) {
            Some((set, v)) => Err(format!("{set}: {v:?} (buckets, _sum, _count)\n{text}")),
            None => Ok(()),
        }
    }

    #[test]
    fn a_budget_drops_whole_histograms_and_least_important_families_first() {
        let store = Store::default();
        let t = TargetKey::new("ns", "p", "c");
        let mut samples = Vec::new();
        for process in ["a", "b"] {
            let mut l = t.labels();
            l.push("type", "NET").push("process_name", process);
            samples.extend(histogram(RTT, &l));
            samples.push(Sample::new(RTT_LATEST, l, 0.1));
        }
        // 48 lines: two histograms of 23 and their latest values. Within 30, the latest values
        // (least important) and then the second histogram go, whole.
        assert_eq!(store.replace(Source::Net, &t, samples, Some(30)), 25);
        assert_eq!(store.series_of_pod("ns", "p"), 23);
        let mut text = String::new();
        store.encode(&mut text, |_| true).unwrap();
        histograms_are_whole(&text).unwrap();
        assert!(text.contains("process_name=\"a\",le=\"+Inf\"} 1"), "{text}");
        assert!(!text.contains("process_name=\"b\""), "{text}");
        assert!(!text.contains("podtrace_rtt_latest_seconds{"), "{text}");
    }

    /// What the push exporters get over the budget ([`super::super::budget::trim`]) is what
    /// `/metrics` keeps: for every budget, the same lines of a target whose source mixes
    /// histograms, gauges and counters of several ranks.
    #[test]
    fn trimmed_push_series_are_the_lines_the_store_keeps_at_every_budget() {
        let t = TargetKey::new("ns", "p", "c");
        let mut samples = Vec::new();
        for (kind, process) in [("read", "a"), ("write", "a"), ("write", "b")] {
            let mut l = t.labels();
            l.push("type", kind).push("process_name", process);
            samples.extend(histogram(FS, &l));
            samples.push(Sample::new(FS_LATEST, l.clone(), 0.1));
            samples.push(Sample::new(FS_COUNT, l, 2.0));
        }
        for operation in ["read", "write"] {
            let mut l = t.labels();
            l.push("type", "FS").push("process_name", "a").push("operation", operation);
            samples.push(Sample::new(FILESYSTEM_BYTES, l, 512.0));
        }
        let line =
            |s: &Sample| format!("{}{}{{{}}}", FAMILIES[s.family].name, s.suffix, s.labels.0);
        let total = samples.len();
        for budget in 1..=total + 1 {
            let store = Store::default();
            let dropped = store.replace(Source::Fs, &t, samples.clone(), Some(budget));
            let mut text = String::new();
            store.encode(&mut text, |_| true).unwrap();
            let mut kept: Vec<String> = text
                .lines()
                .filter(|l| !l.starts_with('#'))
                .map(|l| l.rsplit_once(' ').unwrap().0.to_owned())
                .collect();
            let mut pushed = samples.clone();
            assert_eq!(super::super::budget::trim(&mut [&mut pushed], budget), dropped, "{budget}");
            let mut pushed: Vec<String> = pushed.iter().map(line).collect();
            kept.sort();
            pushed.sort();
            assert_eq!(pushed, kept, "budget {budget} of {total}");
            assert!(pushed.len() <= budget, "{budget}");
        }
    }

    #[test]
    fn a_more_important_source_takes_the_budget_from_a_less_important_one() {
        let store = Store::default();
        let t = TargetKey::new("ns", "p", "c");
        let uptimes: Vec<Sample> = (0..10)
            .map(|pid| {
                let mut l = t.labels();
                l.push("pid", &pid.to_string());
                Sample::new(PROCESS_UPTIME, l, 1.0)
            })
            .collect();
        assert_eq!(store.replace(Source::Process, &t, uptimes, Some(10)), 0);
        // The resource series (alert levels) come later and still all fit: four process
        // uptimes make room.
        let resource: Vec<Sample> =
            [RESOURCE_USAGE, RESOURCE_LIMIT, RESOURCE_UTILIZATION, RESOURCE_ALERT]
                .into_iter()
                .map(|f| {
                    let mut l = Labels::default();
                    l.push("resource_type", "memory").extend(&t.labels());
                    Sample::new(f, l, 1.0)
                })
                .collect();
        assert_eq!(store.replace(Source::Resource, &t, resource, Some(10)), 4);
        let mut text = String::new();
        store.encode(&mut text, |_| true).unwrap();
        assert!(text.contains("podtrace_resource_alert_level{"), "{text}");
        assert_eq!(text.matches("podtrace_process_uptime_seconds{").count(), 6, "{text}");
        assert_eq!(store.series_of_pod("ns", "p"), 10);
    }

    proptest::proptest! {
        /// The counts kept for budgets always equal a count of what `/metrics` would show, a
        /// budgeted pod never exceeds its budget, and no histogram is ever cut, whatever
        /// sequence of replaces, removals and source clears came before.
        #[test]
        fn kept_counts_equal_the_encoded_series(ops in proptest::collection::vec((0u8..4, 0usize..3, 0usize..3, 0usize..6, 10usize..60), 1..60)) {
            let store = Store::default();
            let targets = [
                TargetKey::new("ns", "p", "a"),
                TargetKey::new("ns", "p", "b"),
                TargetKey::new("ns", "q", "a"),
            ];
            for (op, t, source, n, budget) in ops {
                let t = &targets[t];
                let (source, family) = [(Source::Resource, RESOURCE_USAGE), (Source::Process, PROCESS_THREADS), (Source::Net, RTT)][source];
                let samples = (0..n)
                    .flat_map(|i| {
                        let mut l = t.labels();
                        l.push("i", &i.to_string());
                        if family == RTT { histogram(family, &l) } else { vec![Sample::new(family, l, i as f64)] }
                    })
                    .collect();
                match op {
                    0 => { store.replace(source, t, samples, None); }
                    1 => {
                        store.replace(source, t, samples, Some(budget));
                        proptest::prop_assert!(store.series_of_pod("ns", &t.pod) <= budget);
                    }
                    2 => store.remove_target(t),
                    _ => store.clear_source(source),
                }
                let mut text = String::new();
                store.encode(&mut text, |_| true).unwrap();
                proptest::prop_assert!(histograms_are_whole(&text).is_ok(), "{:?}", histograms_are_whole(&text));
                let lines: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
                proptest::prop_assert_eq!(store.series(), lines.len());
                for pod in ["p", "q"] {
                    let needle = format!("pod=\"{pod}\"");
                    let n = lines.iter().filter(|l| l.contains(&needle)).count();
                    proptest::prop_assert_eq!(store.series_of_pod("ns", pod), n);
                }
                // One shared key per target with series, none for a target without.
                let keys = store.inner.read().keys.len();
                proptest::prop_assert_eq!(keys, store.targets().len());
            }
        }
    }

    #[test]
    fn values_are_written_as_integers_when_whole() {
        let mut s = String::new();
        write_value(&mut s, 3.0);
        s.push(' ');
        write_value(&mut s, 0.25);
        s.push(' ');
        write_value(&mut s, f64::NAN);
        assert_eq!(s, "3 0.25 NaN");
    }
}
