//! The bounded queue between `Exporters::push` and one exporter's task.
//!
//! `push` must never wait for a broker, so the queue never blocks: when it is full the *oldest*
//! items make room for the new ones (fresh samples matter more than stale ones) and each one
//! pushed out counts in `podtrace_agent_export_dropped_total{exporter}`. An exporter takes a
//! chunk, sends it, and gives back what it could not send; given-back items are older than
//! anything queued meanwhile, so they are the first to go when the bound is exceeded.
//!
//! Invariant: items pushed = items sent + items dropped + items queued (+ a chunk in flight).

use parking_lot::{Mutex, MutexGuard};
use prometheus_client::metrics::{counter::Counter, gauge::Gauge};
use std::{
    collections::VecDeque,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
};
use tokio::sync::{Notify, watch};

/// A bounded, drop-oldest, single-consumer queue.
#[derive(Debug)]
pub struct Queue<T> {
    items: Mutex<VecDeque<T>>,
    /// Taken but neither given back nor settled: in the exporter's hands.
    in_hand: AtomicUsize,
    bound: usize,
    ready: Notify,
    dropped: Counter,
    queued: Gauge,
    /// Marked when items are dropped (the NodeTrace status reports the drops).
    changed: Option<Arc<watch::Sender<()>>>,
}

impl<T> Queue<T> {
    /// A queue keeping at most `bound` items, counting drops in `dropped` and its length in
    /// `queued`.
    pub fn new(bound: usize, dropped: Counter, queued: Gauge) -> Self {
        Queue {
            items: Mutex::new(VecDeque::new()),
            in_hand: AtomicUsize::new(0),
            bound,
            ready: Notify::new(),
            dropped,
            queued,
            changed: None,
        }
    }

    /// Marks `changed` whenever items are dropped.
    pub fn notifying(mut self, changed: Arc<watch::Sender<()>>) -> Self {
        self.changed = Some(changed);
        self
    }

    /// Appends `items`, dropping the oldest ones above the bound; returns how many were dropped.
    pub fn push(&self, items: impl IntoIterator<Item = T>) -> u64 {
        let dropped = {
            let mut q = self.lock();
            q.extend(items);
            self.trim(&mut q)
        };
        self.ready.notify_one();
        dropped
    }

    /// Takes up to `max` of the oldest items.
    pub fn take(&self, max: usize) -> Vec<T> {
        let mut q = self.lock();
        let n = max.min(q.len());
        let chunk = q.drain(..n).collect();
        self.queued.set(q.len() as i64);
        self.in_hand.fetch_add(n, Ordering::Relaxed);
        chunk
    }

    /// Puts back items that could not be sent, in front of newer ones, within the bound.
    pub fn give_back(&self, items: Vec<T>) {
        if items.is_empty() {
            return;
        }
        self.settle(items.len());
        let mut q = self.lock();
        for item in items.into_iter().rev() {
            q.push_front(item);
        }
        self.trim(&mut q);
    }

    /// Marks `n` taken items as done (sent, or dropped and counted by the exporter).
    pub fn settle(&self, n: usize) {
        let _ = self
            .in_hand
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |h| Some(h.saturating_sub(n)));
    }

    /// Items waiting plus items taken and not yet settled.
    pub fn pending(&self) -> usize {
        self.len() + self.in_hand.load(Ordering::Relaxed)
    }

    /// Waits until the queue holds at least one item.
    pub async fn ready(&self) {
        loop {
            if !self.lock().is_empty() {
                return;
            }
            // `notify_one` stores a permit when nobody waits, so a push between the check
            // above and this await is not missed.
            self.ready.notified().await;
        }
    }

    /// Items waiting.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// True when nothing waits.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    fn trim(&self, q: &mut VecDeque<T>) -> u64 {
        let excess = q.len().saturating_sub(self.bound);
        q.drain(..excess);
        self.dropped.inc_by(excess as u64);
        self.queued.set(q.len() as i64);
        if let Some(changed) = self.changed.as_ref().filter(|_| excess > 0) {
            changed.send_replace(());
        }
        excess as u64
    }

    fn lock(&self) -> MutexGuard<'_, VecDeque<T>> {
        self.items.lock()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue(bound: usize) -> (Queue<u32>, Counter) {
        let dropped = Counter::default();
        (Queue::new(bound, dropped.clone(), Gauge::default()), dropped)
    }

    #[test]
    fn a_full_queue_keeps_the_newest_items_and_counts_the_rest() {
        let (q, dropped) = queue(3);
        assert_eq!(q.push(1..=2), 0);
        assert_eq!(q.push(3..=5), 2);
        assert_eq!(dropped.get(), 2);
        assert_eq!(q.take(10), vec![3, 4, 5]);
        assert_eq!(q.len(), 0);
    }

    #[test]
    fn given_back_items_go_first_and_are_dropped_first() {
        let (q, dropped) = queue(4);
        q.push(1..=4);
        let chunk = q.take(2);
        q.push(5..=6);
        q.give_back(chunk);
        assert_eq!(dropped.get(), 2, "1 and 2 are the oldest");
        assert_eq!(q.take(10), vec![3, 4, 5, 6]);
        q.settle(3); // 3, 4 and 5 were sent
        q.push([7]);
        q.give_back(vec![6]);
        assert_eq!(q.take(10), vec![6, 7]);
        assert_eq!(q.pending(), 2, "taken, not settled");
        q.settle(2);
        assert_eq!(q.pending(), 0);
    }

    #[tokio::test]
    async fn ready_wakes_up_on_push() {
        let (q, _) = queue(2);
        let q = std::sync::Arc::new(q);
        let waiter = tokio::spawn({
            let q = q.clone();
            async move { q.ready().await }
        });
        tokio::task::yield_now().await;
        q.push([1]);
        tokio::time::timeout(std::time::Duration::from_secs(1), waiter).await.unwrap().unwrap();
    }
}
