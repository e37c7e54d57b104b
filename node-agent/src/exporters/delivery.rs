//! What an exporter does with a chunk once it tried to send it, for the exporters whose endpoint
//! can refuse the data itself (Influx over HTTP, OTLP) as well as be away.

use super::{backoff::Backoff, queue::Queue, stats::Stats};

/// Why a send failed.
pub enum Failure {
    /// Worth retrying: the endpoint is away or refuses us for now.
    Retry(String),
    /// The endpoint says the data is bad: retrying would fail again.
    Rejected(String),
}

/// Settles `chunk` after a send: sent (counted, the endpoint connected), rejected (dropped and
/// counted as rejected) or to retry (given back to the queue, the endpoint disconnected, after
/// the next backoff delay).
pub async fn settle<T>(
    outcome: Result<(), Failure>,
    exporter: &'static str,
    chunk: Vec<T>,
    queue: &Queue<T>,
    stats: &Stats,
    backoff: &mut Backoff,
) {
    match outcome {
        Ok(()) => {
            stats.sent.inc_by(chunk.len() as u64);
            queue.settle(chunk.len());
            stats.set_connected();
            backoff.reset();
        }
        Err(Failure::Rejected(reason)) => {
            tracing::error!(exporter, %reason, items = chunk.len(), "dropping a rejected chunk");
            stats.rejected(chunk.len() as u64);
            queue.settle(chunk.len());
        }
        Err(Failure::Retry(reason)) => {
            queue.give_back(chunk);
            stats.set_disconnected(reason);
            tokio::time::sleep(backoff.next_delay()).await;
        }
    }
}
