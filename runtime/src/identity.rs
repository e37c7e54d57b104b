//! Who this process is: the node an agent describes and the replica an operator runs as, both
//! falling back to the host name.

/// This machine's host name (`/proc/sys/kernel/hostname`), trimmed; empty when unreadable.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_default()
}

/// The node a process describes: `configured` (NODE_NAME, from the pod's `spec.nodeName`) when
/// set, else the host name, else `localhost`.
pub fn node_name(configured: &str) -> String {
    if !configured.is_empty() {
        return configured.to_owned();
    }
    Some(hostname()).filter(|h| !h.is_empty()).unwrap_or_else(|| "localhost".into())
}

/// A replica's identity (in a Lease and in Events): `configured`, else the pod name from
/// POD_NAME, else the host name and process id.
pub fn replica(configured: Option<String>) -> String {
    configured
        .or_else(|| std::env::var("POD_NAME").ok())
        .unwrap_or_else(|| format!("{}-{}", hostname(), std::process::id()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_configured_name_wins_and_the_host_name_stands_in() {
        assert_eq!(node_name("node-1"), "node-1");
        assert_eq!(
            node_name(""),
            Some(hostname()).filter(|h| !h.is_empty()).unwrap_or("localhost".into())
        );
        assert_eq!(replica(Some("me".into())), "me");
    }
}
