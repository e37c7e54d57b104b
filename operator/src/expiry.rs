//! Time-bounded traces: the countdown of `spec.duration`.
//!
//! The countdown starts when the operator first sees a duration value: it records the value and
//! that moment in `status.countdown` (so a restarted or newly elected operator keeps it) and the
//! end in `status.expiresAt`. From then on the PodTrace is out of effect exactly as when paused.
//! Another value starts a new countdown (a trace is extended by editing its duration); without
//! a duration there is none. Pure: the controller requeues at the expiry instant.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use podtrace_api::PodTrace;
use podtrace_api::duration;
use podtrace_api::podtrace::Countdown;

/// The countdown `pt` has at `now`: the one in its status while it counts the current
/// `spec.duration`, a new one starting at `now` (whole seconds, as the API server stores it)
/// when the value is new, none without a duration.
pub fn countdown(pt: &PodTrace, now: Timestamp) -> Option<Countdown> {
    let duration = pt.spec.duration.as_ref()?;
    match pt.status.as_ref().and_then(|s| s.countdown.as_ref()) {
        Some(c) if c.duration == *duration => Some(c.clone()),
        _ => Some(Countdown {
            duration: duration.clone(),
            started_at: Time(Timestamp::from_second(now.as_second()).unwrap_or(now)),
        }),
    }
}

/// When `countdown` ends, or the reason it cannot be read (a duration stored before the CRD
/// validated it).
pub fn expires_at(countdown: &Countdown) -> Result<Timestamp, String> {
    let length = duration::parse(&countdown.duration).map_err(|e| e.to_string())?;
    let length = SignedDuration::try_from(length).map_err(|e| e.to_string())?;
    countdown.started_at.0.checked_add(length).map_err(|e| e.to_string())
}

/// Whether `pt`'s trace has ended at `now`: its status counts its current duration and the end
/// has come. A value not counted yet has not ended (its countdown is about to start).
pub fn expired(pt: &PodTrace, now: Timestamp) -> bool {
    let Some(duration) = &pt.spec.duration else { return false };
    pt.status
        .as_ref()
        .and_then(|s| s.countdown.as_ref())
        .filter(|c| c.duration == *duration)
        .and_then(|c| expires_at(c).ok())
        .is_some_and(|end| end <= now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use podtrace_api::PodTraceStatus;

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    fn trace(duration: Option<&str>, counted: Option<(&str, &str)>) -> PodTrace {
        let mut pt = crate::fixtures::podtrace_of("ns", "t", "web", None);
        pt.spec.duration = duration.map(str::to_owned);
        pt.status = counted.map(|(d, start)| PodTraceStatus {
            countdown: Some(Countdown { duration: d.into(), started_at: Time(at(start)) }),
            ..Default::default()
        });
        pt
    }

    #[test]
    fn a_new_duration_starts_counting_at_the_whole_second_it_is_seen() {
        let now = at("2026-12-06T11:00:00.750Z");
        let c = countdown(&trace(Some("15m"), None), now).unwrap();
        assert_eq!((c.duration.as_str(), c.started_at.0), ("15m", at("2026-12-06T11:00:00Z")));
        assert_eq!(expires_at(&c), Ok(at("2026-12-06T11:15:00Z")));
        assert_eq!(countdown(&trace(None, None), now), None);
    }

    #[test]
    fn a_counted_duration_keeps_its_start_and_another_value_starts_again() {
        let now = at("2026-12-06T12:00:00Z");
        let counting = trace(Some("15m"), Some(("15m", "2026-12-06T11:00:00Z")));
        assert_eq!(countdown(&counting, now).unwrap().started_at.0, at("2026-12-06T11:00:00Z"));
        let edited = trace(Some("2h"), Some(("15m", "2026-12-06T11:00:00Z")));
        assert_eq!(countdown(&edited, now).unwrap().started_at.0, now);
    }

    #[test]
    fn a_trace_expires_at_the_end_of_its_counted_duration_only() {
        let counting = trace(Some("15m"), Some(("15m", "2026-12-06T11:00:00Z")));
        assert!(!expired(&counting, at("2026-12-06T11:14:59Z")));
        assert!(expired(&counting, at("2026-12-06T11:15:00Z")));
        let edited = trace(Some("30m"), Some(("15m", "2026-12-06T11:00:00Z")));
        assert!(!expired(&edited, at("2026-12-06T11:20:00Z")), "the new value is not counted yet");
        let removed = trace(None, Some(("15m", "2026-12-06T11:00:00Z")));
        assert!(!expired(&removed, at("2026-12-06T12:00:00Z")));
        assert!(!expired(&trace(Some("15m"), None), at("2030-01-01T00:00:00Z")));
    }

    #[test]
    fn an_unreadable_duration_is_an_error_naming_it() {
        let c = Countdown { duration: "soon".into(), started_at: Time(Timestamp::UNIX_EPOCH) };
        assert!(expires_at(&c).unwrap_err().contains("\"soon\""));
    }
}
