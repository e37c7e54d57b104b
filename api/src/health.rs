//! The four health levels of the health-check reference, shared by `podtrace-agent health live`
//! (from the agent's gRPC health services) and `kubectl podtrace health` (from what the API
//! server shows of every agent and of the operator), so that both speak of one scale.

use serde::Serialize;

/// A health level, best first (so the worst of several is their `max`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Level {
    /// Everything works.
    Optimal,
    /// Works, some data is missing.
    Healthy,
    /// Works on a stale configuration, or cannot report.
    Degraded,
    /// Not working.
    Unhealthy,
}

impl Level {
    /// The process exit code of a health command: 0 for Optimal and Healthy, 1 for Degraded,
    /// 3 for Unhealthy (2 is left to usage errors, which clap reports with 2).
    pub fn exit_code(self) -> i32 {
        match self {
            Level::Optimal | Level::Healthy => 0,
            Level::Degraded => 1,
            Level::Unhealthy => 3,
        }
    }
}

/// Its name, padded as the format asks (tables align on it).
impl std::fmt::Display for Level {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(match self {
            Level::Optimal => "Optimal",
            Level::Healthy => "Healthy",
            Level::Degraded => "Degraded",
            Level::Unhealthy => "Unhealthy",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_worst_level_is_the_largest_and_exit_codes_follow_the_reference() {
        assert_eq!(
            [Level::Healthy, Level::Unhealthy, Level::Optimal].into_iter().max(),
            Some(Level::Unhealthy)
        );
        let codes: Vec<i32> = [Level::Optimal, Level::Healthy, Level::Degraded, Level::Unhealthy]
            .map(Level::exit_code)
            .into();
        assert_eq!(codes, [0, 0, 1, 3]);
        assert_eq!(format!("{:<10}|", Level::Degraded), "Degraded  |");
    }
}
