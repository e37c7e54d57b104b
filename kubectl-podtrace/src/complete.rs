//! Completion of `kubectl podtrace <TAB>` by kubectl itself: kubectl (1.26 and newer) runs the
//! program `kubectl_complete-podtrace` from the PATH with the words typed after `podtrace`, the
//! last one being the word under completion, and reads back one candidate per line and a last
//! line `:<directive>` (cobra's protocol). That program is this binary under that name (a
//! symbolic link): [`candidates`] reads the words against the command line's own definition.
//!
//! (`kubectl-podtrace completion bash|zsh|fish` covers the binary called by its own name.)

use clap::{Arg, Command};

/// The name kubectl looks for.
pub const PROGRAM: &str = "kubectl_complete-podtrace";

/// Cobra's ShellCompDirectiveNoFileComp: no file names when nothing matches.
const NO_FILES: u8 = 4;

/// What to offer for `words` (the last one is being typed), then the directive line.
pub fn reply(mut command: Command, words: &[String]) -> String {
    command.build();
    let mut out: String = candidates(&command, words).into_iter().map(|c| c + "\n").collect();
    out += &format!(":{NO_FILES}\n");
    out
}

/// The words that may complete the last of `words`.
pub fn candidates(root: &Command, words: &[String]) -> Vec<String> {
    let (current, before) = match words.split_last() {
        Some((c, b)) => (c.as_str(), b),
        None => ("", &[][..]),
    };
    let sub = before.iter().find_map(|w| root.find_subcommand(w));
    let command = sub.unwrap_or(root);
    // The value of the flag just before: its possible values.
    if let Some(flag) = before.last().and_then(|w| find_flag(command, w))
        && flag.get_action().takes_values()
    {
        return matching(
            flag.get_possible_values().iter().map(|v| v.get_name().to_owned()),
            current,
        );
    }
    if current.starts_with('-') {
        let flags = command.get_arguments().filter(|a| !a.is_hide_set()).flat_map(|a| {
            let long = a.get_long().map(|l| format!("--{l}"));
            let short = a.get_short().map(|s| format!("-{s}"));
            long.into_iter().chain(short)
        });
        return matching(flags, current);
    }
    match sub {
        None => matching(
            root.get_subcommands().filter(|s| !s.is_hide_set()).map(|s| s.get_name().to_owned()),
            current,
        ),
        // Positional values with a fixed set (the shells of `completion`).
        Some(s) => matching(
            s.get_positionals()
                .flat_map(|p| p.get_possible_values())
                .map(|v| v.get_name().to_owned()),
            current,
        ),
    }
}

/// The argument `word` (`-o`, `--output`, `--output=x` is not a flag awaiting a value) names.
fn find_flag<'a>(command: &'a Command, word: &str) -> Option<&'a Arg> {
    if let Some(long) = word.strip_prefix("--") {
        command.get_arguments().find(|a| a.get_long() == Some(long))
    } else {
        let short = word.strip_prefix('-')?;
        let mut chars = short.chars();
        let (c, rest) = (chars.next()?, chars.as_str());
        if !rest.is_empty() {
            return None;
        }
        command.get_arguments().find(|a| a.get_short() == Some(c))
    }
}

fn matching(all: impl Iterator<Item = String>, prefix: &str) -> Vec<String> {
    let mut out: Vec<String> = all.filter(|c| c.starts_with(prefix)).collect();
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::Cli;
    use clap::CommandFactory;

    fn complete(words: &[&str]) -> Vec<String> {
        let mut command = Cli::command();
        command.build();
        candidates(&command, &words.iter().map(|w| w.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn subcommands_flags_and_values_complete_from_the_command_line_definition() {
        assert_eq!(complete(&[""]), ["completion", "health", "help", "status", "top"]);
        assert_eq!(complete(&["st"]), ["status"]);
        assert_eq!(complete(&["status", "-o", ""]), ["json", "table", "yaml"]);
        assert_eq!(complete(&["health", "--output", "y"]), ["yaml"]);
        assert_eq!(complete(&["completion", "z"]), ["zsh"]);
        let top = complete(&["top", "--"]);
        for flag in ["--once", "--every", "--selector", "--all-namespaces", "--kubeconfig"] {
            assert!(top.contains(&flag.to_owned()), "{flag} in {top:?}");
        }
        assert_eq!(complete(&["-n", "shop", "status", "--out"]), ["--output"]);
        assert!(complete(&["status", "web", ""]).is_empty(), "no PodTrace names offered (yet)");
        assert!(reply(Cli::command(), &["t".into()]).ends_with("top\n:4\n"));
    }
}
