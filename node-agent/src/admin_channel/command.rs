//! The admin channel's text protocol (reference/runtime-admin-channel.md), parsed without I/O.
//!
//! | command | meaning |
//! |---|---|
//! | `L*:debug` | every log target at debug |
//! | `L*:info,podtrace_agent::collectors:debug` | default info, one target at debug |
//! | `l` / `l*` / `lA,B` | report the default and the targets that differ / all / A and B |
//! | `M*:disable,resource:enable` | all sources off, then `resource` on |
//! | `Mtag:pod:enable` | every source tagged `pod` on |
//! | `m` / `m*` / `mA,B` | report the default and differing sources / all with enabled tags / A and B |
//!
//! Within an `M` command the `*` item applies first, then tags, then sources, whatever their
//! order in the line.

/// The switches of an `M` command, by name as the line spells them (the channel checks the
/// names against the agent's sources).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Switches {
    /// `*:enable` / `*:disable`.
    pub all: Option<bool>,
    /// `tag:NAME:enable|disable`.
    pub tags: Vec<(String, bool)>,
    /// `NAME:enable|disable`.
    pub sources: Vec<(String, bool)>,
}

/// A log level of the protocol (the reference's names plus tracing's `trace` and `off`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    /// Nothing.
    Off,
    /// Errors.
    Error,
    /// Warnings (`warn` or `warning`).
    Warn,
    /// Info.
    Info,
    /// Debug.
    Debug,
    /// Trace.
    Trace,
}

impl Level {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "off" | "quiet" => Level::Off,
            "error" => Level::Error,
            "warn" | "warning" => Level::Warn,
            "info" | "app" => Level::Info,
            "debug" => Level::Debug,
            "trace" => Level::Trace,
            _ => return None,
        })
    }

    /// The `tracing` EnvFilter spelling.
    pub fn name(self) -> &'static str {
        match self {
            Level::Off => "off",
            Level::Error => "error",
            Level::Warn => "warn",
            Level::Info => "info",
            Level::Debug => "debug",
            Level::Trace => "trace",
        }
    }
}

/// Which entries a report (`l`, `m`) covers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Query {
    /// The default and the entries that differ from it.
    Changed,
    /// Everything.
    All,
    /// These names.
    Named(Vec<String>),
}

/// One command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// `L…`: the default level (for `*`) and per-target levels.
    SetLog {
        /// The level of `*`.
        default: Option<Level>,
        /// Per log target.
        targets: Vec<(String, Level)>,
    },
    /// `l…`.
    GetLog(Query),
    /// `M…`.
    SetMetrics(Switches),
    /// `m…`.
    GetMetrics(Query),
}

/// Why a line is not a command.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Empty line.
    #[error("empty command; expected L, l, M or m followed by arguments")]
    Empty,
    /// Unknown first character.
    #[error("unknown command {0:?}; expected L, l, M or m")]
    UnknownCommand(char),
    /// An `L` item that is not `target:level`.
    #[error("{0:?} is not TARGET:LEVEL (levels: off, error, warning, info, debug, trace)")]
    BadLogItem(String),
    /// An `M` item that is not `name:enable|disable` or `tag:NAME:enable|disable`.
    #[error("{0:?} is not NAME:enable|disable or tag:TAG:enable|disable")]
    BadMetricsItem(String),
    /// A name with characters outside `[A-Za-z0-9_.:-]`.
    #[error("{0:?} is not a valid name (letters, digits, '_', '-', '.', '::')")]
    BadName(String),
    /// A command without items.
    #[error("{0} needs at least one item, e.g. {1}")]
    NoItems(char, &'static str),
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':'))
}

fn items(rest: &str) -> impl Iterator<Item = &str> {
    rest.split(',').map(str::trim)
}

fn query(rest: &str) -> Result<Query, ParseError> {
    match rest.trim() {
        "" => Ok(Query::Changed),
        "*" => Ok(Query::All),
        names => {
            items(names)
                .map(|n| {
                    if valid_name(n) {
                        Ok(n.to_owned())
                    } else {
                        Err(ParseError::BadName(n.into()))
                    }
                })
                .collect::<Result<_, _>>()
                .map(Query::Named)
        }
    }
}

fn on_off(s: &str) -> Option<bool> {
    match s {
        "enable" | "enabled" | "on" => Some(true),
        "disable" | "disabled" | "off" => Some(false),
        _ => None,
    }
}

/// Parses one line (without its newline).
pub fn parse(line: &str) -> Result<Command, ParseError> {
    let line = line.trim_end_matches(['\r', '\n']).trim();
    let mut chars = line.chars();
    let cmd = chars.next().ok_or(ParseError::Empty)?;
    let rest = chars.as_str().trim();
    match cmd {
        'l' => Ok(Command::GetLog(query(rest)?)),
        'm' => Ok(Command::GetMetrics(query(rest)?)),
        'L' => {
            if rest.is_empty() {
                return Err(ParseError::NoItems('L', "L*:info"));
            }
            let mut default = None;
            let mut targets = Vec::new();
            for item in items(rest) {
                let bad = || ParseError::BadLogItem(item.to_owned());
                let (target, level) = item.rsplit_once(':').ok_or_else(bad)?;
                let level = Level::parse(level).ok_or_else(bad)?;
                match target {
                    "*" => default = Some(level),
                    t if valid_name(t) && !t.ends_with(':') => targets.push((t.to_owned(), level)),
                    t => return Err(ParseError::BadName(t.to_owned())),
                }
            }
            Ok(Command::SetLog { default, targets })
        }
        'M' => {
            if rest.is_empty() {
                return Err(ParseError::NoItems('M', "M*:enable"));
            }
            let mut update = Switches::default();
            for item in items(rest) {
                let bad = || ParseError::BadMetricsItem(item.to_owned());
                let (name, state) = item.rsplit_once(':').ok_or_else(bad)?;
                let on = on_off(state).ok_or_else(bad)?;
                if name == "*" {
                    update.all = Some(on);
                } else if let Some(tag) = name.strip_prefix("tag:") {
                    if !valid_name(tag) || tag.contains(':') {
                        return Err(ParseError::BadName(tag.to_owned()));
                    }
                    update.tags.push((tag.to_owned(), on));
                } else if valid_name(name) && !name.contains(':') {
                    update.sources.push((name.to_owned(), on));
                } else {
                    return Err(ParseError::BadName(name.to_owned()));
                }
            }
            Ok(Command::SetMetrics(update))
        }
        other => Err(ParseError::UnknownCommand(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_reference_examples_parse() {
        assert_eq!(
            parse("L*:debug"),
            Ok(Command::SetLog { default: Some(Level::Debug), targets: vec![] })
        );
        assert_eq!(
            parse("L*:info,monitoring-experiments:debug\n"),
            Ok(Command::SetLog {
                default: Some(Level::Info),
                targets: vec![("monitoring-experiments".into(), Level::Debug)]
            })
        );
        assert_eq!(
            parse("Lpodtrace_agent::collectors:error"),
            Ok(Command::SetLog {
                default: None,
                targets: vec![("podtrace_agent::collectors".into(), Level::Error)]
            })
        );
        assert_eq!(
            parse("M*:disable,memory:enable,net-solo5:enable"),
            Ok(Command::SetMetrics(Switches {
                all: Some(false),
                tags: vec![],
                sources: vec![("memory".into(), true), ("net-solo5".into(), true)]
            }))
        );
        assert_eq!(
            parse("Mtag:http:enable"),
            Ok(Command::SetMetrics(Switches {
                tags: vec![("http".into(), true)],
                ..Default::default()
            }))
        );
        assert_eq!(parse("l"), Ok(Command::GetLog(Query::Changed)));
        assert_eq!(parse("l*"), Ok(Command::GetLog(Query::All)));
        assert_eq!(
            parse("lmonitoring-experiments,dns"),
            Ok(Command::GetLog(Query::Named(vec!["monitoring-experiments".into(), "dns".into()])))
        );
        assert_eq!(parse("m"), Ok(Command::GetMetrics(Query::Changed)));
        assert_eq!(parse("m*"), Ok(Command::GetMetrics(Query::All)));
        assert_eq!(
            parse("mmemory,net-solo5"),
            Ok(Command::GetMetrics(Query::Named(vec!["memory".into(), "net-solo5".into()])))
        );
    }

    #[test]
    fn malformed_commands_are_errors_with_advice() {
        assert_eq!(parse(""), Err(ParseError::Empty));
        assert_eq!(parse("X"), Err(ParseError::UnknownCommand('X')));
        assert_eq!(parse("L"), Err(ParseError::NoItems('L', "L*:info")));
        assert_eq!(parse("L*:loud"), Err(ParseError::BadLogItem("*:loud".into())));
        assert_eq!(parse("Mresource"), Err(ParseError::BadMetricsItem("resource".into())));
        assert_eq!(parse("Mres urce:enable"), Err(ParseError::BadName("res urce".into())));
        assert_eq!(parse("Mtag:a:b:enable"), Err(ParseError::BadName("a:b".into())));
        assert!(parse("l a b").is_err());
        assert!(parse("M*:disable").is_ok());
    }

    proptest! {
        /// Any input, including binary junk and huge lines, gives a command or an error, never a panic.
        #[test]
        fn never_panics(line in "\\PC{0,200}") {
            let _ = parse(&line);
        }

        #[test]
        fn never_panics_on_protocol_like_input(line in "[LlMm][a-z*:,._-]{0,60}") {
            let _ = parse(&line);
        }

        /// Well-formed M commands round-trip their sources.
        #[test]
        fn well_formed_metrics_items_parse(names in proptest::collection::vec("[a-z][a-z0-9_-]{0,10}", 1..5), on in any::<bool>()) {
            let state = if on { "enable" } else { "disable" };
            let line = format!("M{}", names.iter().map(|n| format!("{n}:{state}")).collect::<Vec<_>>().join(","));
            let Command::SetMetrics(u) = parse(&line).unwrap() else { panic!("not M") };
            prop_assert_eq!(u.sources, names.into_iter().map(|n| (n, on)).collect::<Vec<_>>());
        }
    }
}
