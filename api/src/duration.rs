//! Go-style durations (`"10s"`, `"1m30s"`, `"500ms"`), the syntax Kubernetes uses and the one the
//! CRD's CEL rules check with `duration()`.
//!
//! Written by hand because the well-known crates parse a different syntax (`humantime` rejects
//! `"1.5s"` and accepts `"1 min"`), and the operator must compare intervals exactly as the API
//! server validated them.

use std::time::Duration;

/// A duration string that does not follow Go's `time.ParseDuration` syntax.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration {input:?}: {reason} (expected e.g. \"10s\", \"1m30s\", \"500ms\")")]
pub struct DurationError {
    /// The rejected text.
    pub input: String,
    /// What was wrong with it.
    pub reason: &'static str,
}

/// Parses a non-negative Go duration such as `"10s"`, `"1m30s"` or `"1.5h"`.
pub fn parse(input: &str) -> Result<Duration, DurationError> {
    let err = |reason| DurationError { input: input.to_owned(), reason };
    let mut rest = input.trim();
    if rest.starts_with('-') {
        return Err(err("negative durations are not allowed"));
    }
    rest = rest.strip_prefix('+').unwrap_or(rest);
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    if rest.is_empty() {
        return Err(err("empty"));
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let num_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        if num_len == 0 {
            return Err(err("expected a number"));
        }
        let value: f64 = rest[..num_len].parse().map_err(|_| err("malformed number"))?;
        rest = &rest[num_len..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "" => return Err(err("missing unit")),
            _ => return Err(err("unknown unit")),
        };
        rest = &rest[unit_len..];
        total += value * scale;
    }
    Ok(Duration::from_secs_f64(total))
}

/// Formats a duration the way Go prints it for whole seconds and minutes (`"90s"` → `"1m30s"`).
pub fn format(d: Duration) -> String {
    let ms = d.as_millis();
    if !ms.is_multiple_of(1000) {
        return format!("{ms}ms");
    }
    let secs = d.as_secs();
    let (h, m, s) = (secs / 3600, secs % 3600 / 60, secs % 60);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if s > 0 || out.is_empty() {
        out.push_str(&format!("{s}s"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_forms_kubernetes_users_write() {
        assert_eq!(parse("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse("1.5h").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse("2h").unwrap(), Duration::from_secs(7200));
        assert_eq!(parse("0").unwrap(), Duration::ZERO);
        assert_eq!(parse("100us").unwrap(), Duration::from_micros(100));
    }

    #[test]
    fn rejects_malformed_and_negative_durations_with_the_reason() {
        assert_eq!(parse("-5s").unwrap_err().reason, "negative durations are not allowed");
        assert_eq!(parse("10").unwrap_err().reason, "missing unit");
        assert_eq!(parse("10x").unwrap_err().reason, "unknown unit");
        assert_eq!(parse("").unwrap_err().reason, "empty");
        assert_eq!(parse("s").unwrap_err().reason, "expected a number");
        assert!(parse("1..2s").is_err());
    }

    #[test]
    fn formats_like_go() {
        assert_eq!(format(Duration::from_secs(90)), "1m30s");
        assert_eq!(format(Duration::from_secs(3600)), "1h");
        assert_eq!(format(Duration::from_secs(0)), "0s");
        assert_eq!(format(Duration::from_millis(1500)), "1500ms");
    }
}
