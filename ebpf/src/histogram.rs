//! The reference's exponential latency buckets (0.0001 s × 2^k, k = 0..19, up to 52.4288 s)
//! and the decoding of the kernel's non-cumulative counts into Prometheus' cumulative form.
//!
//! `bucket_index` is the same computation as `pt_bucket()` in `podtrace_common.h`; the root
//! tests check the kernel's placement against it.

use crate::abi::{BUCKET_BASE_NS, BUCKETS, FINITE_BUCKETS};

/// Upper bounds (`le`) of the finite buckets, in seconds: 0.0001, 0.0002, … 52.4288.
pub const UPPER_BOUNDS_SECONDS: [f64; FINITE_BUCKETS] = {
    let mut b = [0.0; FINITE_BUCKETS];
    let mut k = 0;
    while k < FINITE_BUCKETS {
        b[k] = 0.0001 * (1u64 << k) as f64;
        k += 1;
    }
    b
};

/// The bucket a latency falls in: the smallest k with `ns <= 100 µs × 2^k`, or
/// `FINITE_BUCKETS` (+Inf) beyond 52.4288 s.
pub fn bucket_index(ns: u64) -> usize {
    if ns <= BUCKET_BASE_NS {
        return 0;
    }
    let q = (ns - 1) / BUCKET_BASE_NS;
    let k = (63 - q.leading_zeros()) as usize + 1;
    k.min(FINITE_BUCKETS)
}

/// A latency histogram read from the kernel.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Histogram {
    /// Non-cumulative counts: `buckets[k]` for k < 20 counts values in
    /// `(bound[k-1], bound[k]]`; `buckets[20]` counts values above 52.4288 s.
    pub buckets: [u64; BUCKETS],
    /// Number of samples (equals the sum of `buckets`, up to concurrent updates).
    pub count: u64,
    /// Sum of the samples, in nanoseconds.
    pub sum_ns: u64,
    /// The most recent sample, in nanoseconds (the reference's `*_latest_*`/`*_gauge` metrics).
    pub latest_ns: u64,
}

impl Histogram {
    /// `(le, cumulative count)` pairs for the finite buckets, as Prometheus exposes them; the
    /// +Inf bucket is `count`.
    pub fn cumulative(&self) -> [(f64, u64); FINITE_BUCKETS] {
        let mut out = [(0.0, 0); FINITE_BUCKETS];
        let mut acc = 0;
        for (k, slot) in out.iter_mut().enumerate() {
            acc += self.buckets[k];
            *slot = (UPPER_BOUNDS_SECONDS[k], acc);
        }
        out
    }

    /// Adds `other` (another series of the same metric, e.g. of another process): buckets,
    /// counts and sums add up. The kernel keeps no time with a latest value across series, so
    /// the merged latest value is the larger one.
    pub fn merge(&mut self, other: &Histogram) {
        for (o, b) in self.buckets.iter_mut().zip(other.buckets) {
            *o += b;
        }
        self.count += other.count;
        self.sum_ns += other.sum_ns;
        self.latest_ns = self.latest_ns.max(other.latest_ns);
    }

    /// Sum of the samples in seconds (`_sum`).
    pub fn sum_seconds(&self) -> f64 {
        self.sum_ns as f64 / 1e9
    }

    /// The latest sample in seconds (the gauge).
    pub fn latest_seconds(&self) -> f64 {
        self.latest_ns as f64 / 1e9
    }

    /// The bucket that holds quantile `q` (0..=1) of the samples, or None when empty.
    pub fn quantile_bucket(&self, q: f64) -> Option<usize> {
        let total: u64 = self.buckets.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = ((q * total as f64).ceil() as u64).max(1);
        let mut acc = 0;
        self.buckets.iter().position(|&n| {
            acc += n;
            acc >= rank
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_are_the_references_exponential_buckets() {
        assert_eq!(UPPER_BOUNDS_SECONDS[0], 0.0001);
        assert!((UPPER_BOUNDS_SECONDS[19] - 52.4288).abs() < 1e-9);
        for w in UPPER_BOUNDS_SECONDS.windows(2) {
            assert!((w[1] / w[0] - 2.0).abs() < 1e-12);
        }
    }

    #[test]
    fn a_value_on_a_bound_falls_in_that_bucket_and_one_above_in_the_next() {
        for k in 0..FINITE_BUCKETS {
            let bound = BUCKET_BASE_NS << k;
            assert_eq!(bucket_index(bound), k, "bound of {k}");
            assert_eq!(bucket_index(bound + 1), (k + 1).min(FINITE_BUCKETS), "above {k}");
        }
        assert_eq!(bucket_index(0), 0);
        assert_eq!(bucket_index(10_000_000), 7, "10 ms is in le=0.0128");
        assert_eq!(bucket_index(u64::MAX), FINITE_BUCKETS);
    }

    #[test]
    fn cumulative_counts_add_up_and_quantiles_find_their_bucket() {
        let mut h = Histogram::default();
        h.buckets[2] = 3;
        h.buckets[5] = 1;
        h.buckets[FINITE_BUCKETS] = 1;
        h.count = 5;
        let c = h.cumulative();
        assert_eq!(c[1].1, 0);
        assert_eq!(c[2].1, 3);
        assert_eq!(c[19].1, 4);
        assert_eq!(h.quantile_bucket(0.5), Some(2));
        assert_eq!(h.quantile_bucket(0.8), Some(5));
        assert_eq!(h.quantile_bucket(1.0), Some(FINITE_BUCKETS));
        assert_eq!(Histogram::default().quantile_bucket(0.5), None);
    }
}
