//! The scheduling queue, as upstream's: pods wait in `active` (highest
//! priority first, then oldest), in back-off after a failed attempt
//! (1 s doubling to 10 s), or among the unschedulable until a change in
//! the cluster could make them fit (or 5 minutes pass). Pure: the caller
//! gives the time.

use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;

pub const INITIAL_BACKOFF: Duration = Duration::from_secs(1);
pub const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// An unschedulable pod is tried again after this long even if nothing
/// happened.
pub const MAX_UNSCHEDULABLE: Duration = Duration::from_secs(300);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Active,
    Backoff(Instant),
    Unschedulable(Instant),
    /// Popped; `moves` is how many cluster changes had been seen then.
    InFlight {
        moves: u64,
    },
}

struct Entry {
    pod: Arc<Pod>,
    priority: i32,
    attempts: u32,
    state: State,
    /// Identifies the entry's current place in a heap: older heap items
    /// with another ticket are stale and skipped.
    ticket: u64,
}

#[derive(PartialEq, Eq)]
struct Ready {
    priority: i32,
    ticket: u64,
    key: String,
}

impl Ord for Ready {
    fn cmp(&self, other: &Self) -> Ordering {
        self.priority
            .cmp(&other.priority)
            .then(other.ticket.cmp(&self.ticket))
    }
}

impl PartialOrd for Ready {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

#[derive(Default)]
pub struct Queue {
    entries: HashMap<String, Entry>,
    active: BinaryHeap<Ready>,
    backoff: BinaryHeap<Reverse<(Instant, u64, String)>>,
    tickets: u64,
    /// Cluster changes seen so far.
    moves: u64,
    /// How many entries wait among the unschedulable.
    unschedulable: usize,
}

fn backoff(attempts: u32) -> Duration {
    let doublings = attempts.saturating_sub(1).min(16);
    (INITIAL_BACKOFF * 2u32.pow(doublings)).min(MAX_BACKOFF)
}

/// Whether an update could change where a pod fits (its status, say,
/// cannot).
fn changed_for_scheduling(old: &Pod, new: &Pod) -> bool {
    old.spec != new.spec
        || old.metadata.labels != new.metadata.labels
        || old.metadata.annotations != new.metadata.annotations
}

impl Queue {
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn contains(&self, key: &str) -> bool {
        self.entries.contains_key(key)
    }

    fn place(&mut self, key: &str, state: State) {
        self.tickets += 1;
        let ticket = self.tickets;
        let Some(entry) = self.entries.get_mut(key) else {
            return;
        };
        if matches!(entry.state, State::Unschedulable(_)) {
            self.unschedulable -= 1;
        }
        if matches!(state, State::Unschedulable(_)) {
            self.unschedulable += 1;
        }
        entry.state = state;
        entry.ticket = ticket;
        match state {
            State::Active => self.active.push(Ready {
                priority: entry.priority,
                ticket,
                key: key.to_string(),
            }),
            State::Backoff(until) => self.backoff.push(Reverse((until, ticket, key.to_string()))),
            State::Unschedulable(_) | State::InFlight { .. } => {}
        }
    }

    /// Active, or in back-off if its last attempt was too recent.
    fn requeue(&mut self, key: &str, now: Instant, since: Instant) {
        let Some(entry) = self.entries.get(key) else {
            return;
        };
        let until = since + backoff(entry.attempts);
        let state = if entry.attempts > 0 && until > now {
            State::Backoff(until)
        } else {
            State::Active
        };
        self.place(key, state);
    }

    /// A pending pod appeared or changed.
    pub fn add_or_update(&mut self, key: &str, pod: Arc<Pod>, priority: i32, now: Instant) {
        match self.entries.get_mut(key) {
            None => {
                self.entries.insert(
                    key.to_string(),
                    Entry {
                        pod,
                        priority,
                        attempts: 0,
                        state: State::Active,
                        ticket: 0,
                    },
                );
                self.place(key, State::Active);
            }
            Some(entry) => {
                let changed = changed_for_scheduling(&entry.pod, &pod);
                entry.pod = pod;
                entry.priority = priority;
                if let State::Unschedulable(since) = entry.state
                    && changed
                {
                    self.requeue(key, now, since);
                }
            }
        }
    }

    pub fn delete(&mut self, key: &str) {
        self.remove(key);
    }

    fn remove(&mut self, key: &str) {
        if let Some(entry) = self.entries.remove(key)
            && matches!(entry.state, State::Unschedulable(_))
        {
            self.unschedulable -= 1;
        }
    }

    /// The next pod to try, once due back-offs have come back.
    pub fn pop(&mut self, now: Instant) -> Option<(String, Arc<Pod>)> {
        while let Some(Reverse((until, ticket, _))) = self.backoff.peek() {
            if *until > now {
                break;
            }
            let ticket = *ticket;
            let Some(Reverse((_, _, key))) = self.backoff.pop() else {
                break;
            };
            if self.entries.get(&key).is_some_and(|e| e.ticket == ticket) {
                self.place(&key, State::Active);
            }
        }
        while let Some(ready) = self.active.pop() {
            let moves = self.moves;
            if let Some(entry) = self.entries.get_mut(&ready.key)
                && entry.ticket == ready.ticket
            {
                entry.state = State::InFlight { moves };
                return Some((ready.key, entry.pod.clone()));
            }
        }
        None
    }

    /// When the earliest back-off ends, if any pod waits in one.
    pub fn next_backoff(&self) -> Option<Instant> {
        self.backoff.peek().map(|Reverse((until, _, _))| *until)
    }

    /// The pod was placed: it leaves the queue.
    pub fn done(&mut self, key: &str) {
        self.remove(key);
    }

    /// The pod did not fit (`unschedulable`), or its attempt failed
    /// otherwise. It waits among the unschedulable, unless the cluster
    /// changed while it was tried or it failed for another reason: then
    /// it backs off.
    pub fn failed(&mut self, key: &str, unschedulable: bool, now: Instant) {
        let moves = self.moves;
        let Some(entry) = self.entries.get_mut(key) else {
            return;
        };
        entry.attempts += 1;
        let changed_meanwhile = matches!(entry.state, State::InFlight { moves: m } if m < moves);
        if unschedulable && !changed_meanwhile {
            self.place(key, State::Unschedulable(now));
        } else {
            let until = now + backoff(entry.attempts);
            self.place(key, State::Backoff(until));
        }
    }

    /// A pod whose binding failed comes back, backing off.
    pub fn retry(&mut self, key: &str, pod: Arc<Pod>, priority: i32, attempts: u32, now: Instant) {
        self.remove(key);
        self.entries.insert(
            key.to_string(),
            Entry {
                pod,
                priority,
                attempts,
                state: State::Active,
                ticket: 0,
            },
        );
        self.place(key, State::Backoff(now + backoff(attempts)));
    }

    /// Something changed that could make unschedulable pods fit: they go
    /// back to active (or back-off).
    pub fn move_all(&mut self, now: Instant) {
        self.moves += 1;
        if self.unschedulable == 0 {
            return;
        }
        let waiting: Vec<(String, Instant)> = self
            .entries
            .iter()
            .filter_map(|(key, entry)| match entry.state {
                State::Unschedulable(since) => Some((key.clone(), since)),
                _ => None,
            })
            .collect();
        for (key, since) in waiting {
            self.requeue(&key, now, since);
        }
    }

    /// Unschedulable pods that waited too long are tried again.
    pub fn flush_unschedulable(&mut self, now: Instant) {
        let stale: Vec<(String, Instant)> = self
            .entries
            .iter()
            .filter_map(|(key, entry)| match entry.state {
                State::Unschedulable(since) if now.duration_since(since) >= MAX_UNSCHEDULABLE => {
                    Some((key.clone(), since))
                }
                _ => None,
            })
            .collect();
        for (key, since) in stale {
            self.requeue(&key, now, since);
        }
    }

    /// How many times the pod was tried, while it is queued.
    pub fn attempts(&self, key: &str) -> u32 {
        self.entries.get(key).map_or(0, |e| e.attempts)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn pod(name: &str, priority: i32) -> Arc<Pod> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": "default"},
                "spec": {"containers": [{"name": "c"}], "priority": priority},
            }))
            .unwrap(),
        )
    }

    #[test]
    fn higher_priority_first_then_oldest() {
        let now = Instant::now();
        let mut q = Queue::default();
        q.add_or_update("a", pod("a", 0), 0, now);
        q.add_or_update("b", pod("b", 10), 10, now);
        q.add_or_update("c", pod("c", 0), 0, now);
        let order: Vec<String> = std::iter::from_fn(|| q.pop(now).map(|(k, _)| k)).collect();
        assert_eq!(order, ["b", "a", "c"]);
    }

    #[test]
    fn unschedulable_pods_wait_for_a_change_then_back_off() {
        let start = Instant::now();
        let mut q = Queue::default();
        q.add_or_update("a", pod("a", 0), 0, start);
        assert!(q.pop(start).is_some());
        q.failed("a", true, start);
        assert!(q.pop(start + Duration::from_secs(60)).is_none());
        // A status-only update does not wake it; a spec change would.
        q.add_or_update("a", pod("a", 0), 0, start);
        assert!(q.pop(start + Duration::from_secs(60)).is_none());
        // A cluster change moves it; its back-off (1 s) has passed.
        q.move_all(start + Duration::from_secs(60));
        assert_eq!(q.pop(start + Duration::from_secs(60)).unwrap().0, "a");
        q.failed("a", true, start + Duration::from_secs(60));
        // Moved right away, it waits out its second back-off (2 s).
        let t = start + Duration::from_secs(60);
        q.move_all(t);
        assert!(q.pop(t + Duration::from_millis(1999)).is_none());
        assert_eq!(q.next_backoff(), Some(t + Duration::from_secs(2)));
        assert_eq!(q.pop(t + Duration::from_secs(2)).unwrap().0, "a");
        // Nothing changes for five minutes: tried again anyway.
        q.failed("a", true, t);
        q.flush_unschedulable(t + Duration::from_secs(299));
        assert!(q.pop(t + Duration::from_secs(299)).is_none());
        q.flush_unschedulable(t + MAX_UNSCHEDULABLE);
        assert!(q.pop(t + MAX_UNSCHEDULABLE).is_some());
    }

    #[test]
    fn a_change_during_an_attempt_sends_the_pod_to_back_off() {
        let now = Instant::now();
        let mut q = Queue::default();
        q.add_or_update("a", pod("a", 0), 0, now);
        q.pop(now);
        q.move_all(now);
        q.failed("a", true, now);
        assert!(q.pop(now).is_none());
        assert_eq!(q.pop(now + INITIAL_BACKOFF).unwrap().0, "a");
    }

    #[test]
    fn back_off_doubles_to_ten_seconds() {
        let waits: Vec<u64> = (1..=6).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 10, 10]);
    }

    #[test]
    fn deleted_and_placed_pods_leave() {
        let now = Instant::now();
        let mut q = Queue::default();
        q.add_or_update("a", pod("a", 0), 0, now);
        q.add_or_update("b", pod("b", 0), 0, now);
        q.delete("a");
        let (key, _) = q.pop(now).unwrap();
        assert_eq!(key, "b");
        q.done("b");
        assert!(q.is_empty() && q.pop(now).is_none());
    }

    #[test]
    fn a_change_moves_what_still_waits_after_others_left() {
        let now = Instant::now();
        let mut q = Queue::default();
        for key in ["a", "b", "c"] {
            q.add_or_update(key, pod(key, 0), 0, now);
            assert!(q.pop(now).is_some());
            q.failed(key, true, now);
        }
        // One deleted, one retried after a failed binding: the third
        // still waits, and a change moves it.
        q.delete("a");
        q.retry("b", pod("b", 0), 0, 1, now);
        let later = now + Duration::from_secs(60);
        let mut popped = Vec::new();
        q.move_all(later);
        while let Some((key, _)) = q.pop(later) {
            popped.push(key);
        }
        popped.sort();
        assert_eq!(popped, ["b", "c"]);
        // Nothing waits now; a change moves nothing.
        q.move_all(later);
        assert!(q.pop(later).is_none());
    }
}
