//! The work queue of one controller, as client-go's: a key is queued at
//! most once, is never handed to two workers at once (added while being
//! worked on, it is queued again when the worker is done), can be added
//! after a delay, and failures are retried with a growing delay (5 ms
//! doubling to 1000 s, upstream's per-item default).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

const RETRY_BASE: Duration = Duration::from_millis(5);
const RETRY_MAX: Duration = Duration::from_secs(1000);

#[derive(Default)]
struct Inner {
    queue: VecDeque<String>,
    /// Keys waiting to be worked on (queued, or re-added while in work).
    dirty: HashSet<String>,
    processing: HashSet<String>,
    failures: HashMap<String, u32>,
    /// Keys added with a delay, and when they are due.
    delayed: HashMap<String, Instant>,
    closed: bool,
}

#[derive(Clone, Default)]
pub struct WorkQueue {
    inner: Arc<Mutex<Inner>>,
    ready: Arc<Notify>,
}

impl WorkQueue {
    pub fn add(&self, key: &str) {
        let mut inner = self.inner.lock().expect("work queue");
        if inner.closed || !inner.dirty.insert(key.to_string()) {
            return;
        }
        if !inner.processing.contains(key) {
            inner.queue.push_back(key.to_string());
            drop(inner);
            self.ready.notify_one();
        }
    }

    /// Adds `key` once `delay` has passed (at the earliest time asked for
    /// if asked several times).
    pub fn add_after(&self, key: &str, delay: Duration) {
        if delay.is_zero() {
            return self.add(key);
        }
        let due = Instant::now() + delay;
        {
            let mut inner = self.inner.lock().expect("work queue");
            if inner.closed {
                return;
            }
            match inner.delayed.get(key) {
                Some(at) if *at <= due => return,
                _ => {
                    inner.delayed.insert(key.to_string(), due);
                }
            }
        }
        let queue = self.clone();
        let key = key.to_string();
        tokio::spawn(async move {
            tokio::time::sleep_until(due.into()).await;
            let still_due = {
                let mut inner = queue.inner.lock().expect("work queue");
                if inner.delayed.get(&key) == Some(&due) {
                    inner.delayed.remove(&key);
                    true
                } else {
                    false
                }
            };
            if still_due {
                queue.add(&key);
            }
        });
    }

    /// Adds `key` again after its next retry delay.
    pub fn add_rate_limited(&self, key: &str) {
        let failures = {
            let mut inner = self.inner.lock().expect("work queue");
            let failures = inner.failures.entry(key.to_string()).or_insert(0);
            *failures += 1;
            *failures
        };
        self.add_after(key, retry_delay(failures));
    }

    /// Clears `key`'s failures: its next retry waits the least.
    pub fn forget(&self, key: &str) {
        self.inner.lock().expect("work queue").failures.remove(key);
    }

    pub fn failures(&self, key: &str) -> u32 {
        let inner = self.inner.lock().expect("work queue");
        inner.failures.get(key).copied().unwrap_or(0)
    }

    /// The next key to work on; `None` once closed. The caller must call
    /// [`WorkQueue::done`] with it.
    pub async fn next(&self) -> Option<String> {
        loop {
            let notified = self.ready.notified();
            {
                let mut inner = self.inner.lock().expect("work queue");
                if inner.closed {
                    return None;
                }
                if let Some(key) = inner.queue.pop_front() {
                    inner.dirty.remove(&key);
                    inner.processing.insert(key.clone());
                    if !inner.queue.is_empty() {
                        self.ready.notify_one();
                    }
                    return Some(key);
                }
            }
            notified.await;
        }
    }

    pub fn done(&self, key: &str) {
        let mut inner = self.inner.lock().expect("work queue");
        inner.processing.remove(key);
        if inner.dirty.contains(key) {
            inner.queue.push_back(key.to_string());
            drop(inner);
            self.ready.notify_one();
        }
    }

    pub fn close(&self) {
        self.inner.lock().expect("work queue").closed = true;
        self.ready.notify_waiters();
    }

    pub fn len(&self) -> usize {
        self.inner.lock().expect("work queue").queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn retry_delay(failures: u32) -> Duration {
    let exponent = failures.saturating_sub(1).min(30);
    RETRY_BASE.saturating_mul(1u32 << exponent).min(RETRY_MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_key_is_queued_once_and_never_worked_on_twice_at_once() {
        let queue = WorkQueue::default();
        queue.add("a");
        queue.add("b");
        queue.add("a");
        assert_eq!(queue.len(), 2);
        let first = queue.next().await.unwrap();
        assert_eq!(first, "a");
        // Added again while in work: not handed out until done.
        queue.add("a");
        assert_eq!(queue.next().await.unwrap(), "b");
        assert!(queue.is_empty());
        queue.done("b");
        queue.done("a");
        assert_eq!(queue.next().await.unwrap(), "a");
    }

    #[tokio::test]
    async fn delayed_keys_arrive_at_the_earliest_time_asked_for() {
        let queue = WorkQueue::default();
        queue.add_after("a", Duration::from_secs(3600));
        queue.add_after("a", Duration::from_millis(20));
        let key = tokio::time::timeout(Duration::from_secs(10), queue.next())
            .await
            .expect("the shorter delay wins");
        assert_eq!(key.as_deref(), Some("a"));
    }

    #[test]
    fn retries_wait_longer_each_time_up_to_a_limit() {
        assert_eq!(retry_delay(1), Duration::from_millis(5));
        assert_eq!(retry_delay(2), Duration::from_millis(10));
        assert_eq!(retry_delay(11), Duration::from_millis(5120));
        assert_eq!(retry_delay(40), RETRY_MAX);
    }

    #[tokio::test]
    async fn a_closed_queue_ends_its_workers() {
        let queue = WorkQueue::default();
        let worker = tokio::spawn({
            let queue = queue.clone();
            async move { queue.next().await }
        });
        tokio::task::yield_now().await;
        queue.close();
        assert_eq!(worker.await.unwrap(), None);
    }
}
