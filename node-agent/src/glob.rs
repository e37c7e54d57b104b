//! Shell-style globs for standalone selectors: `*` matches within one path segment, `**` across
//! segments, `?` one character (not `/`). Pure, no allocation.

/// Whether `text` matches `pattern`.
pub fn matches(pattern: &str, text: &str) -> bool {
    matches_bytes(pattern.as_bytes(), text.as_bytes())
}

fn matches_bytes(p: &[u8], t: &[u8]) -> bool {
    match p.first() {
        None => t.is_empty(),
        Some(b'*') if p.get(1) == Some(&b'*') => {
            let rest = &p[2..];
            (0..=t.len()).any(|i| matches_bytes(rest, &t[i..]))
        }
        Some(b'*') => {
            let rest = &p[1..];
            let segment = t.iter().position(|&c| c == b'/').unwrap_or(t.len());
            (0..=segment).any(|i| matches_bytes(rest, &t[i..]))
        }
        Some(b'?') => t.first().is_some_and(|&c| c != b'/') && matches_bytes(&p[1..], &t[1..]),
        Some(&c) => t.first() == Some(&c) && matches_bytes(&p[1..], &t[1..]),
    }
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn star_stays_in_a_segment_and_double_star_crosses() {
        assert!(matches("/podtrace-demo/*", "/podtrace-demo/web"));
        assert!(!matches("/podtrace-demo/*", "/podtrace-demo/web/child"));
        assert!(matches("/podtrace-demo/**", "/podtrace-demo/web/child"));
        assert!(matches(
            "/kubepods.slice/**/cri-containerd-*.scope",
            "/kubepods.slice/a/b/cri-containerd-12ab.scope"
        ));
        assert!(matches("stress-ng*", "stress-ng-vm"));
        assert!(matches("p?thon3", "python3"));
        assert!(!matches("p?thon3", "pthon3"));
        assert!(matches("exact", "exact"));
        assert!(!matches("exact", "exactly"));
        assert!(matches("*", ""));
    }
}
