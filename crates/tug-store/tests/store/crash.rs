//! Crash safety: a child process writes concurrently and logs every write
//! the store acknowledged; it (and for etcd, etcd itself) is killed with
//! SIGKILL at random moments. After every restart, everything acknowledged
//! is there, revisions never went backwards, and the history is whole.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use rand::{Rng, SeedableRng};
use tug_store::{Event, EventKind, Revision, Store, WatchMessage, WatchOptions};

use crate::harness::Backend;

const CYCLES: usize = 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_loses_no_acknowledged_write_when_killed() {
    survive_kills(Backend::sqlite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_loses_no_acknowledged_write_when_killed() {
    survive_kills(Backend::etcd().await).await;
}

pub(crate) fn crash_writer_path() -> PathBuf {
    // Examples are built beside the test binaries: target/<profile>/examples.
    let exe = std::env::current_exe().unwrap();
    let path = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|profile| profile.join("examples/crash_writer"))
        .unwrap();
    assert!(
        path.exists(),
        "{} is missing: build it with `cargo build -p tug-store --example crash_writer` \
         (cargo test builds it)",
        path.display()
    );
    path
}

/// The last acknowledged write of each key, from the child's log.
fn last_writes(log: &str) -> HashMap<String, (String, Revision)> {
    let mut last = HashMap::new();
    for line in log.lines() {
        let mut fields = line.split(' ');
        let (Some(key), Some(value), Some(revision), None) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            panic!("malformed log line {line:?}");
        };
        last.insert(
            key.to_string(),
            (value.to_string(), revision.parse().unwrap()),
        );
    }
    last
}

async fn survive_kills(mut backend: Backend) {
    let seed: u64 = rand::rng().random();
    println!("crash test seed {seed} (backend {})", backend.name);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let log_path = backend.dir.path().join("acknowledged.log");
    let target = match &backend.etcd {
        Some(etcd) => ["--etcd".to_string(), etcd.url()],
        None => [
            "--sqlite".to_string(),
            backend.sqlite_path().display().to_string(),
        ],
    };
    let mut highest_seen: Revision = 0;
    let mut acknowledged_lines = 0;
    for cycle in 0..CYCLES {
        let mut child = Command::new(crash_writer_path())
            .args(&target)
            .args(["--log", log_path.to_str().unwrap(), "--writers", "8"])
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        // Not a wait for anything: the random moment of the crash.
        tokio::time::sleep(Duration::from_millis(rng.random_range(50..600))).await;
        if let Some(etcd) = backend.etcd.as_mut() {
            etcd.kill();
        }
        child.kill().unwrap();
        child.wait().unwrap();
        if let Some(etcd) = backend.etcd.as_mut() {
            etcd.restart().await;
        }

        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        acknowledged_lines = log.lines().count();
        let store = backend.open().await;
        let current = store.current_revision().await.unwrap();
        let context = format!("seed {seed}, cycle {cycle}");
        assert!(
            current >= highest_seen,
            "{context}: revision went back from {highest_seen} to {current}"
        );
        for (key, (value, revision)) in last_writes(&log) {
            assert!(
                revision <= current,
                "{context}: {key} acknowledged at {revision} > {current}"
            );
            let at = store.get(&key, Some(revision)).await.unwrap().kv;
            match value.as_str() {
                "-" => assert_eq!(at, None, "{context}: {key} deleted at {revision}"),
                "+" => assert!(at.is_some(), "{context}: {key} created at {revision}"),
                counter => {
                    let at = at.unwrap_or_else(|| panic!("{context}: {key} lost at {revision}"));
                    assert_eq!(
                        at.value,
                        counter.as_bytes(),
                        "{context}: {key} at {revision}"
                    );
                    assert_eq!(at.mod_revision, revision, "{context}: {key}");
                    let now = store.get(&key, None).await.unwrap().kv.unwrap();
                    let now: u64 = std::str::from_utf8(&now.value).unwrap().parse().unwrap();
                    assert!(
                        now >= counter.parse().unwrap(),
                        "{context}: {key} went back"
                    );
                }
            }
        }
        check_history(&store, current, &context).await;
        highest_seen = current;
        drop(store);
    }
    assert!(
        acknowledged_lines > 100,
        "the writer should have been acknowledged many writes, got {acknowledged_lines}"
    );
}

/// Replays the whole history: revisions strictly grow, and each change's
/// previous value is the key's value from its previous change.
async fn check_history(store: &Arc<dyn Store>, until: Revision, context: &str) {
    let mut watch = store
        .watch("/crash/", 0, WatchOptions::default())
        .await
        .unwrap();
    let mut last: Revision = 0;
    let mut keys: HashMap<String, Event> = HashMap::new();
    while last < until {
        let message = tokio::time::timeout(Duration::from_secs(30), watch.next())
            .await
            .unwrap_or_else(|_| panic!("{context}: history stalled at {last} of {until}"));
        let events = match message {
            Some(Ok(WatchMessage::Events(events))) => events,
            Some(Ok(WatchMessage::Progress(_))) => continue,
            other => panic!("{context}: history replay: {other:?}"),
        };
        for event in events {
            assert!(
                event.revision() > last,
                "{context}: {} after {last}",
                event.revision()
            );
            last = event.revision();
            let before = keys.get(&event.kv.key);
            match (before, &event.prev) {
                (Some(before), Some(prev)) if before.kind == EventKind::Put => {
                    assert_eq!(
                        prev, &before.kv,
                        "{context}: previous value of {}",
                        event.kv.key
                    );
                }
                (Some(before), None) => assert!(
                    before.kind == EventKind::Delete && event.kind == EventKind::Put,
                    "{context}: {} changed at {last} without a previous value",
                    event.kv.key
                ),
                (None, _) => assert!(event.kind == EventKind::Put),
                (Some(_), Some(_)) => {
                    panic!("{context}: {} has a value after a delete", event.kv.key)
                }
            }
            keys.insert(event.kv.key.clone(), event);
        }
    }
}
