//! Exponential backoff with jitter between reconnection attempts.
//!
//! Delays double from `min` up to `max`; each one is drawn uniformly from its upper half
//! ("equal jitter", <https://aws.amazon.com/blogs/architecture/exponential-backoff-and-jitter/>)
//! so that the agents of a whole cluster do not reconnect to a restarted broker in lockstep,
//! while no delay is shorter than half its step.

use std::time::Duration;

/// The backoff state of one exporter.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    /// Starts at `min`, never waits longer than `max`.
    pub fn new(min: Duration, max: Duration) -> Self {
        Backoff { min, max: max.max(min), attempt: 0 }
    }

    /// The delay before the next attempt; each call doubles the following one.
    pub fn next_delay(&mut self) -> Duration {
        let d = delay(self.min, self.max, self.attempt);
        self.attempt = self.attempt.saturating_add(1);
        d
    }

    /// Back to `min` after a success.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// The jittered delay of attempt number `attempt` (0-based).
pub fn delay(min: Duration, max: Duration, attempt: u32) -> Duration {
    let step = min.saturating_mul(1u32 << attempt.min(20)).min(max);
    let half = step / 2;
    half + half.mul_f64(fastrand::f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_maximum_with_jitter_in_the_upper_half() {
        let (min, max) = (Duration::from_millis(100), Duration::from_secs(2));
        let mut b = Backoff::new(min, max);
        for step in [100, 200, 400, 800, 1600, 2000, 2000] {
            let d = b.next_delay().as_secs_f64() * 1000.0;
            assert!(
                (step as f64 / 2.0..=step as f64).contains(&d),
                "{d}ms not in {step}/2..{step}"
            );
        }
        b.reset();
        assert!(b.next_delay() <= min);
        assert!(delay(min, max, u32::MAX) <= max);
    }
}
