//! The watch channels the agent's stages talk through (configuration → engine → status writer
//! and health): each stage keeps the latest value and wakes when it changes.

use tokio::sync::watch;

/// Resolves when `rx` changed, or once when its sender is gone (`open` is then false); after
/// that it never resolves again: the last value stays, and the waiting stage keeps working on
/// it instead of spinning on a closed channel.
pub async fn changed<T>(rx: &mut watch::Receiver<T>, open: &mut bool) {
    if !*open {
        return std::future::pending().await;
    }
    if rx.changed().await.is_err() {
        *open = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_closed_channel_wakes_once_and_then_never() {
        let (tx, mut rx) = watch::channel(1);
        let mut open = true;
        tx.send_replace(2);
        changed(&mut rx, &mut open).await;
        assert!(open);
        drop(tx);
        changed(&mut rx, &mut open).await;
        assert!(!open);
        let again = tokio::time::timeout(Duration::from_millis(50), changed(&mut rx, &mut open));
        assert!(again.await.is_err(), "a closed channel does not wake again");
    }
}
