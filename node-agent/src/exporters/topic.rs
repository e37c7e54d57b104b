//! The MQTT topic template (`--mqtt-topic`), parsed once at start.
//!
//! The default is the reference's Rust proplet topic, `m/{domain}/c/{channel}/metrics/proplet`;
//! `m/{domain}/c/{channel}/metrics/{namespace}/{pod}/{container}` gives every container its own
//! topic. Placeholder values come from Kubernetes names, which cannot hold MQTT's level separator
//! or wildcards, but standalone targets can: `/`, `+`, `#` and NUL in a value become `_`, so a
//! value is always exactly one topic level.

use super::error::ExportError;
use crate::sample::TargetSample;

/// A parsed template.
#[derive(Clone, Debug, PartialEq)]
pub struct Template {
    parts: Vec<Part>,
}

#[derive(Clone, Debug, PartialEq)]
enum Part {
    Text(String),
    Var(Var),
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Var {
    Domain,
    Channel,
    Node,
    Namespace,
    Pod,
    PodUid,
    Container,
}

/// The values of `{domain}` and `{channel}`, fixed per agent.
#[derive(Clone, Debug, PartialEq)]
pub struct Fixed {
    /// `--mqtt-domain`.
    pub domain: String,
    /// `--mqtt-channel`.
    pub channel: String,
}

impl Template {
    /// Parses `template`, rejecting unknown placeholders, unbalanced braces and wildcards.
    pub fn parse(template: &str) -> Result<Self, ExportError> {
        let err = |reason: String| ExportError::InvalidTopic { template: template.into(), reason };
        if template.is_empty() {
            return Err(err("it is empty".into()));
        }
        if template.contains(['+', '#']) {
            return Err(err("wildcards cannot be published to".into()));
        }
        let mut parts = Vec::new();
        let mut rest = template;
        while let Some(open) = rest.find(['{', '}']) {
            if rest.as_bytes()[open] == b'}' {
                return Err(err("'}' without '{'".into()));
            }
            let close = rest[open..].find('}').ok_or_else(|| err("'{' without '}'".into()))?;
            let name = &rest[open + 1..open + close];
            let var = match name {
                "domain" => Var::Domain,
                "channel" => Var::Channel,
                "node" => Var::Node,
                "namespace" => Var::Namespace,
                "pod" => Var::Pod,
                "pod_uid" => Var::PodUid,
                "container" => Var::Container,
                other => return Err(err(format!("unknown placeholder {{{other}}}"))),
            };
            if open > 0 {
                parts.push(Part::Text(rest[..open].into()));
            }
            parts.push(Part::Var(var));
            rest = &rest[open + close + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.into()));
        }
        Ok(Template { parts })
    }

    /// The topic of `t`.
    pub fn render(&self, fixed: &Fixed, t: &TargetSample) -> String {
        let mut out = String::with_capacity(64);
        for part in &self.parts {
            let value = match part {
                Part::Text(s) => {
                    out.push_str(s);
                    continue;
                }
                Part::Var(Var::Domain) => &fixed.domain,
                Part::Var(Var::Channel) => &fixed.channel,
                Part::Var(Var::Node) => &t.node,
                Part::Var(Var::Namespace) => &t.namespace,
                Part::Var(Var::Pod) => &t.pod,
                Part::Var(Var::PodUid) => &t.pod_uid,
                Part::Var(Var::Container) => &t.container,
            };
            out.extend(
                value.chars().map(|c| if matches!(c, '/' | '+' | '#' | '\0') { '_' } else { c }),
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> TargetSample {
        let mut t = crate::exporters::message::test_target();
        t.namespace = "shop".into();
        t.pod = "a/b+c#d".into();
        t
    }

    #[test]
    fn placeholders_are_filled_and_values_stay_one_level() {
        let fixed = Fixed { domain: "d1".into(), channel: "c1".into() };
        let t = Template::parse("m/{domain}/c/{channel}/metrics/{namespace}/{pod}").unwrap();
        assert_eq!(t.render(&fixed, &target()), "m/d1/c/c1/metrics/shop/a_b_c_d");
        let plain = Template::parse("m/{domain}/c/{channel}/metrics/proplet").unwrap();
        assert_eq!(plain.render(&fixed, &target()), "m/d1/c/c1/metrics/proplet");
    }

    #[test]
    fn bad_templates_are_refused_with_the_reason() {
        for (template, reason) in [
            ("m/{tenant}/x", "unknown placeholder {tenant}"),
            ("m/{pod", "'{' without '}'"),
            ("m/pod}", "'}' without '{'"),
            ("m/+/x", "wildcards"),
            ("", "empty"),
        ] {
            let e = Template::parse(template).unwrap_err().to_string();
            assert!(e.contains(reason), "{template}: {e}");
        }
    }
}
