//! Latency quantiles from the cumulative buckets of a Prometheus histogram, computed the way
//! PromQL's `histogram_quantile` does, so that `top` shows the numbers a dashboard would.
//!
//! ```text
//!  _bucket{le="0.0001"} 2   _bucket{le="0.0002"} 6   …   _bucket{le="+Inf"} 10
//!        └───────── Histogram { (le, cumulative count) … } ─► quantile(0.5) = 0.000175 s
//! ```

/// A histogram's cumulative buckets: `(upper bound in seconds, observations ≤ bound)`, by
/// ascending bound, `+Inf` last. Series with the same bounds add up bucket by bucket (a
/// container's processes, or the read, write and fsync types of the fs latencies).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Histogram {
    buckets: Vec<(f64, f64)>,
}

impl Histogram {
    /// Adds `count` observations at or below `le` (one `_bucket` line).
    pub fn add(&mut self, le: f64, count: f64) {
        match self.buckets.binary_search_by(|(b, _)| b.total_cmp(&le)) {
            Ok(i) => self.buckets[i].1 += count,
            Err(i) => self.buckets.insert(i, (le, count)),
        }
    }

    /// Observations in all (the `+Inf` bucket; the largest bucket without one).
    pub fn count(&self) -> f64 {
        self.buckets.last().map_or(0.0, |(_, c)| *c)
    }

    /// The observations made since `earlier`, a previous reading of the same series (bucket by
    /// bucket; a bucket that went down, after an agent restart, counts from zero).
    pub fn since(&self, earlier: &Histogram) -> Histogram {
        let buckets = self
            .buckets
            .iter()
            .map(|&(le, c)| {
                let before = earlier.buckets.iter().find(|(b, _)| *b == le).map_or(0.0, |b| b.1);
                (le, if c >= before { c - before } else { c })
            })
            .collect();
        Histogram { buckets }
    }

    /// The `q` quantile (0 ≤ q ≤ 1) in seconds: the bucket holding the rank `q × count`,
    /// interpolated linearly within it (from 0 for the first bucket). A rank in the `+Inf`
    /// bucket gives the largest finite bound, as `histogram_quantile` does. `None` without
    /// observations.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.count();
        if total <= 0.0 || !(0.0..=1.0).contains(&q) {
            return None;
        }
        let rank = q * total;
        let (mut lower, mut below) = (0.0, 0.0);
        for &(le, cumulative) in &self.buckets {
            if cumulative >= rank && cumulative > below {
                if le.is_infinite() {
                    return Some(lower);
                }
                return Some(lower + (le - lower) * (rank - below) / (cumulative - below));
            }
            (lower, below) = (le, cumulative);
        }
        Some(lower)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The agent's buckets: 0.0001 s × 2^k, k in 0..20, then +Inf.
    fn agent_buckets(counts: &[(usize, f64)]) -> Histogram {
        let mut h = Histogram::default();
        let mut cumulative = 0.0;
        for k in 0..20 {
            cumulative += counts.iter().filter(|(i, _)| *i == k).map(|(_, c)| c).sum::<f64>();
            h.add(0.0001 * f64::from(1u32 << k), cumulative);
        }
        cumulative += counts.iter().filter(|(i, _)| *i == 20).map(|(_, c)| c).sum::<f64>();
        h.add(f64::INFINITY, cumulative);
        h
    }

    fn close(a: Option<f64>, b: f64) -> bool {
        a.is_some_and(|a| (a - b).abs() < 1e-12)
    }

    #[test]
    fn quantiles_interpolate_within_the_bucket_like_histogram_quantile() {
        // 10 observations ≤ 0.1 ms, 10 in (0.1, 0.2] ms, 80 in (0.8, 1.6] ms.
        let h = agent_buckets(&[(0, 10.0), (1, 10.0), (4, 80.0)]);
        assert_eq!(h.count(), 100.0);
        // rank 5 in the first bucket, [0, 0.0001]: halfway.
        assert!(close(h.quantile(0.05), 0.00005), "{:?}", h.quantile(0.05));
        // rank 15: halfway through (0.0001, 0.0002].
        assert!(close(h.quantile(0.15), 0.00015), "{:?}", h.quantile(0.15));
        // rank 50: 30 of the 80 in (0.0008, 0.0016]: 0.0008 + 0.0008 × 30/80.
        assert!(close(h.quantile(0.5), 0.0011), "{:?}", h.quantile(0.5));
        // rank 99: 79 of 80: 0.0008 + 0.0008 × 79/80.
        assert!(close(h.quantile(0.99), 0.00159), "{:?}", h.quantile(0.99));
        assert!(close(h.quantile(1.0), 0.0016));
    }

    #[test]
    fn a_rank_beyond_the_largest_bound_reads_that_bound_and_nothing_reads_none() {
        let h = agent_buckets(&[(19, 1.0), (20, 99.0)]);
        assert!(close(h.quantile(0.99), 52.4288));
        assert_eq!(agent_buckets(&[]).quantile(0.5), None);
        assert_eq!(Histogram::default().quantile(0.5), None);
        assert_eq!(agent_buckets(&[(3, 1.0)]).quantile(1.5), None);
    }

    #[test]
    fn series_add_up_by_bucket_and_a_window_subtracts_the_earlier_reading() {
        let mut h = agent_buckets(&[(0, 4.0)]);
        for (le, c) in agent_buckets(&[(2, 4.0)]).buckets {
            h.add(le, c);
        }
        assert_eq!(h.count(), 8.0);
        assert!(close(h.quantile(0.5), 0.0001));
        let later = agent_buckets(&[(0, 4.0), (2, 4.0), (5, 10.0)]);
        let window = later.since(&h);
        assert_eq!(window.count(), 10.0);
        // All ten in (1.6, 3.2] ms: the median halfway.
        assert!(close(window.quantile(0.5), 0.0024), "{:?}", window.quantile(0.5));
        // Counters reset (agent restarted): the new reading counts whole.
        assert_eq!(h.since(&later).count(), 8.0);
    }
}
