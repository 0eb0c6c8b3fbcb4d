//! What a controller is waiting to see after its own writes, so that it
//! does not act twice on a cache that has not caught up (upstream's
//! UID-tracking expectations): how many creations, and which pods'
//! deletions. A record older than five minutes no longer holds anything
//! back, in case an event was missed.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub const TIMEOUT: Duration = Duration::from_secs(300);

struct Record {
    creations: i64,
    deletions: HashSet<String>,
    at: Instant,
}

#[derive(Default)]
pub struct Expectations {
    records: Mutex<HashMap<String, Record>>,
}

impl Expectations {
    /// Whether `owner` may act: nothing awaited, or awaited for too long.
    pub fn satisfied(&self, owner: &str) -> bool {
        self.satisfied_at(owner, Instant::now())
    }

    fn satisfied_at(&self, owner: &str, now: Instant) -> bool {
        let records = self.records.lock().expect("expectations");
        records.get(owner).is_none_or(|r| {
            (r.creations <= 0 && r.deletions.is_empty()) || now.duration_since(r.at) > TIMEOUT
        })
    }

    /// `owner` is about to create `creations` objects and delete those
    /// named in `deletions`.
    pub fn expect(&self, owner: &str, creations: usize, deletions: Vec<String>) {
        self.records.lock().expect("expectations").insert(
            owner.to_string(),
            Record {
                creations: creations as i64,
                deletions: deletions.into_iter().collect(),
                at: Instant::now(),
            },
        );
    }

    /// One creation seen, or given up (it failed or was never tried).
    pub fn creation_observed(&self, owner: &str) {
        self.lower_creations(owner, 1);
    }

    pub fn lower_creations(&self, owner: &str, by: usize) {
        if let Some(record) = self.records.lock().expect("expectations").get_mut(owner) {
            record.creations -= by as i64;
        }
    }

    /// The deletion of `key` seen, or given up.
    pub fn deletion_observed(&self, owner: &str, key: &str) {
        if let Some(record) = self.records.lock().expect("expectations").get_mut(owner) {
            record.deletions.remove(key);
        }
    }

    pub fn forget(&self, owner: &str) {
        self.records.lock().expect("expectations").remove(owner);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_owner_waits_for_each_creation_and_the_named_deletions() {
        let e = Expectations::default();
        assert!(e.satisfied("ns/rs"));
        e.expect("ns/rs", 2, vec!["ns/a".into()]);
        assert!(!e.satisfied("ns/rs"));
        e.creation_observed("ns/rs");
        e.creation_observed("ns/rs");
        assert!(!e.satisfied("ns/rs"));
        // Another pod's deletion does not count.
        e.deletion_observed("ns/rs", "ns/b");
        assert!(!e.satisfied("ns/rs"));
        e.deletion_observed("ns/rs", "ns/a");
        assert!(e.satisfied("ns/rs"));
        // Seen twice still counts once.
        e.expect("ns/rs", 0, vec!["ns/a".into(), "ns/c".into()]);
        e.deletion_observed("ns/rs", "ns/a");
        e.deletion_observed("ns/rs", "ns/a");
        assert!(!e.satisfied("ns/rs"));
    }

    #[test]
    fn an_old_record_holds_nothing_back() {
        let e = Expectations::default();
        e.expect("ns/rs", 5, Vec::new());
        let later = Instant::now() + TIMEOUT + Duration::from_secs(1);
        assert!(e.satisfied_at("ns/rs", later));
        e.forget("ns/rs");
        assert!(e.satisfied("ns/rs"));
    }
}
