//! Reading the Prometheus text exposition that the agent serves on `/metrics`: one sample line
//! at a time, as `top` (the agent's and the kubectl plugin's) needs it.

use std::collections::BTreeMap;

/// A sample line: the metric name, its labels and its value.
pub type Sample<'a> = (&'a str, BTreeMap<&'a str, String>, f64);

/// Parses a `name{labels} value` line into the name, a label map (escapes `\"`, `\\` and `\n`
/// undone) and the value (`+Inf`, `-Inf` and `NaN` included); `None` for comments, blank lines
/// and lines that do not parse.
pub fn parse_line(line: &str) -> Option<Sample<'_>> {
    if line.starts_with('#') || line.is_empty() {
        return None;
    }
    let (head, value) = line.rsplit_once(' ')?;
    let value: f64 = value.parse().ok()?;
    let (name, labels) = match head.split_once('{') {
        Some((n, rest)) => (n, rest.strip_suffix('}')?),
        None => (head, ""),
    };
    let mut map = BTreeMap::new();
    let mut rest = labels;
    while !rest.is_empty() {
        let (k, after) = rest.split_once("=\"")?;
        let mut v = String::new();
        let mut chars = after.char_indices();
        let mut end = None;
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => match chars.next()?.1 {
                    'n' => v.push('\n'),
                    c => v.push(c),
                },
                '"' => {
                    end = Some(i);
                    break;
                }
                c => v.push(c),
            }
        }
        map.insert(k.trim_start_matches(','), v);
        rest = after.get(end? + 1..)?.trim_start_matches(',');
    }
    Some((name, map, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_parse_with_escaped_label_values() {
        let (name, labels, v) = parse_line("m{a=\"x\\\"y\",b=\"\"} 1.5").unwrap();
        assert_eq!((name, labels["a"].as_str(), labels["b"].as_str(), v), ("m", "x\"y", "", 1.5));
        assert_eq!(parse_line("up 1").unwrap().0, "up");
        assert!(parse_line("# HELP x").is_none());
        assert!(parse_line("broken{a=\"1} 2").is_none());
    }

    #[test]
    fn bucket_bounds_and_special_values_parse() {
        let (_, labels, v) = parse_line("h_bucket{le=\"+Inf\"} 7").unwrap();
        assert_eq!((labels["le"].parse::<f64>().unwrap(), v), (f64::INFINITY, 7.0));
        assert_eq!(parse_line("g -Inf").unwrap().2, f64::NEG_INFINITY);
        assert!(parse_line("g NaN").unwrap().2.is_nan());
    }
}
