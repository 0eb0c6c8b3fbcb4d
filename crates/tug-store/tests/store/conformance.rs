//! The conformance suite: every case runs against SQLite and a real etcd.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tug_store::{
    Bytes, Error, Event, EventKind, PutOptions, RangeRequest, Revision, Store, VALUE_BYTES_MAX,
    WatchMessage, WatchOptions,
};

use crate::harness::{Backend, eventually};

macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name(crate::harness::Backend::sqlite()).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn etcd() {
                super::$name(crate::harness::Backend::etcd().await).await
            }
        }
    )*};
}

on_both_backends!(
    create_update_delete_follow_etcd_semantics,
    fifty_compare_and_swap_writers_one_wins_per_round,
    paginated_list_is_one_snapshot_during_writes,
    watch_sees_every_change_after_its_revision_once_in_order,
    watch_carries_previous_values,
    compacted_revisions_fail_with_compacted,
    keys_with_a_ttl_expire,
    values_over_the_limit_are_refused,
    progress_reports_the_revision_delivered,
    progress_never_runs_ahead_of_history_still_to_come,
    range_and_count_keep_to_the_prefix,
    an_unlimited_range_reads_more_than_one_reply_holds,
);

fn value(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

const NO_TTL: PutOptions = PutOptions { ttl: None };

async fn create_update_delete_follow_etcd_semantics(backend: Backend) {
    let store = backend.open().await;
    let start = store.current_revision().await.unwrap();

    let a1 = store.create("/t/a", value("1"), NO_TTL).await.unwrap();
    assert!(a1.mod_revision > start);
    assert_eq!((a1.create_revision, a1.version), (a1.mod_revision, 1));
    assert_eq!(store.current_revision().await.unwrap(), a1.mod_revision);

    match store.create("/t/a", value("again"), NO_TTL).await {
        Err(Error::AlreadyExists { current }) => assert_eq!(*current, a1),
        other => panic!("second create: {other:?}"),
    }

    let a2 = store
        .update("/t/a", value("2"), a1.mod_revision, NO_TTL)
        .await
        .unwrap();
    assert!(a2.mod_revision > a1.mod_revision);
    assert_eq!((a2.create_revision, a2.version), (a1.create_revision, 2));

    // The loser of a compare-and-swap learns the current value.
    match store
        .update("/t/a", value("3"), a1.mod_revision, NO_TTL)
        .await
    {
        Err(Error::Conflict {
            current, expected, ..
        }) => {
            assert_eq!(expected, a1.mod_revision);
            assert_eq!(*current.unwrap(), a2);
        }
        other => panic!("stale update: {other:?}"),
    }
    match store.delete("/t/a", Some(a1.mod_revision)).await {
        Err(Error::Conflict { current, .. }) => assert_eq!(*current.unwrap(), a2),
        other => panic!("stale delete: {other:?}"),
    }
    assert!(matches!(
        store.update("/t/missing", value("x"), 1, NO_TTL).await,
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        store.delete("/t/missing", None).await,
        Err(Error::NotFound { .. })
    ));

    // Reads at a past revision see the past.
    let at_a1 = store.get("/t/a", Some(a1.mod_revision)).await.unwrap();
    assert_eq!(at_a1.kv, Some(a1.clone()));
    assert_eq!(at_a1.revision, a1.mod_revision);
    assert_eq!(store.get("/t/a", None).await.unwrap().kv, Some(a2.clone()));

    let deleted = store.delete("/t/a", Some(a2.mod_revision)).await.unwrap();
    assert!(deleted.revision > a2.mod_revision);
    assert_eq!(deleted.prev, a2);
    assert_eq!(store.get("/t/a", None).await.unwrap().kv, None);
    assert_eq!(
        store.get("/t/a", Some(a2.mod_revision)).await.unwrap().kv,
        Some(a2.clone())
    );

    // A key created again starts a new incarnation.
    let again = store.create("/t/a", value("new"), NO_TTL).await.unwrap();
    assert_eq!(again.version, 1);
    assert_eq!(again.create_revision, again.mod_revision);
    assert!(again.mod_revision > deleted.revision);

    match store.get("/t/a", Some(again.mod_revision + 100)).await {
        Err(Error::FutureRevision { .. }) => {}
        other => panic!("read in the future: {other:?}"),
    }
    assert!(matches!(
        store.create("", value("x"), NO_TTL).await,
        Err(Error::InvalidKey { .. })
    ));
    assert!(store.db_size().await.unwrap() > 0);
}

async fn fifty_compare_and_swap_writers_one_wins_per_round(backend: Backend) {
    let store = backend.open().await;
    let mut kv = store.create("/cas/n", value("0"), NO_TTL).await.unwrap();
    let mut acknowledged = 0;
    for round in 0..10 {
        let mut attempts = Vec::new();
        for writer in 0..50 {
            let store = store.clone();
            let expected = kv.mod_revision;
            let next: u64 = std::str::from_utf8(&kv.value)
                .unwrap()
                .parse::<u64>()
                .unwrap()
                + 1;
            attempts.push(tokio::spawn(async move {
                let result = store
                    .update("/cas/n", value(&next.to_string()), expected, NO_TTL)
                    .await;
                (writer, result)
            }));
        }
        let mut winners = Vec::new();
        let mut losers_saw = Vec::new();
        for attempt in attempts {
            match attempt.await.unwrap() {
                (_, Ok(written)) => winners.push(written),
                (_, Err(Error::Conflict { current, .. })) => losers_saw.push(current.unwrap()),
                (writer, Err(other)) => panic!("round {round}, writer {writer}: {other}"),
            }
        }
        assert_eq!(winners.len(), 1, "round {round}: exactly one writer wins");
        acknowledged += 1;
        kv = winners.pop().unwrap();
        for current in losers_saw {
            assert_eq!(
                *current, kv,
                "round {round}: a loser sees the winner's value"
            );
        }
    }
    let last = store.get("/cas/n", None).await.unwrap().kv.unwrap();
    assert_eq!(last.value, value(&acknowledged.to_string()));
    assert_eq!(last.version, acknowledged + 1);

    // And free-running: every writer retries until it has 5 increments in.
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut mine = 0;
            let mut current = store.get("/cas/n", None).await.unwrap().kv.unwrap();
            while mine < 5 {
                let next = std::str::from_utf8(&current.value)
                    .unwrap()
                    .parse::<i64>()
                    .unwrap()
                    + 1;
                match store
                    .update(
                        "/cas/n",
                        value(&next.to_string()),
                        current.mod_revision,
                        NO_TTL,
                    )
                    .await
                {
                    Ok(written) => {
                        mine += 1;
                        current = written;
                    }
                    Err(Error::Conflict { current: seen, .. }) => current = *seen.unwrap(),
                    Err(other) => panic!("free-running writer: {other}"),
                }
            }
            mine
        }));
    }
    for task in tasks {
        acknowledged += task.await.unwrap();
    }
    let last = store.get("/cas/n", None).await.unwrap().kv.unwrap();
    assert_eq!(last.value, value(&acknowledged.to_string()));
    assert_eq!(acknowledged, 10 + 250);
}

async fn paginated_list_is_one_snapshot_during_writes(backend: Backend) {
    let store = backend.open().await;
    for i in 0..300 {
        store
            .create(&format!("/list/{i:04}"), value("0"), NO_TTL)
            .await
            .unwrap();
    }
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..4 {
        let store = store.clone();
        let stop = stop.clone();
        writers.push(tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                let key = format!("/list/{:04}", (n * 7 + w * 13) % 300);
                if let Some(kv) = store.get(&key, None).await.unwrap().kv {
                    let _ = store
                        .update(&key, value(&n.to_string()), kv.mod_revision, NO_TTL)
                        .await;
                }
                // New keys land among the old ones, and some go.
                let extra = format!("/list/{:04}x{w}", n % 300);
                match store.delete(&extra, None).await {
                    Ok(_) => {}
                    Err(Error::NotFound { .. }) => {
                        store.create(&extra, value("new"), NO_TTL).await.unwrap();
                    }
                    Err(err) => panic!("writer: {err}"),
                }
                n += 1;
            }
            n
        }));
    }
    // Let the writers get going before the first page.
    let begun = store.current_revision().await.unwrap();
    eventually("writers to write", Duration::from_secs(30), || {
        let store = store.clone();
        async move { (store.current_revision().await.unwrap() > begun + 50).then_some(()) }
    })
    .await;

    let mut pages = Vec::new();
    let mut request = RangeRequest {
        prefix: "/list/".into(),
        limit: 25,
        ..RangeRequest::default()
    };
    loop {
        let page = store.range(request.clone()).await.unwrap();
        request.revision = Some(page.revision);
        assert!(page.kvs.len() <= 25);
        let next = page.next_key();
        pages.push(page);
        match next {
            Some(key) => request.start_key = Some(key),
            None => break,
        }
    }
    stop.store(true, Ordering::Relaxed);
    let mut writes = 0;
    for writer in writers {
        writes += writer.await.unwrap();
    }
    assert!(writes > 0);

    let at = pages[0].revision;
    assert!(pages.iter().all(|p| p.revision == at));
    let paged: Vec<_> = pages.into_iter().flat_map(|p| p.kvs).collect();
    assert!(paged.iter().all(|kv| kv.mod_revision <= at));
    let whole = store
        .range(RangeRequest {
            prefix: "/list/".into(),
            revision: Some(at),
            ..RangeRequest::default()
        })
        .await
        .unwrap();
    assert_eq!(paged, whole.kvs, "the pages form the list at revision {at}");
    assert!(store.current_revision().await.unwrap() > at + 10);
}

/// Collects a watch's events up to `until`, resuming after a
/// [`Error::WatchTooSlow`] from the last revision received.
async fn collect_events(
    store: &Arc<dyn Store>,
    prefix: &str,
    after: Revision,
    until: Revision,
) -> Vec<Event> {
    let mut events: Vec<Event> = Vec::new();
    let mut resume_from = after;
    let mut watch = store
        .watch(prefix, after, WatchOptions::default())
        .await
        .unwrap();
    while events.last().map_or(after, Event::revision) < until {
        let message = tokio::time::timeout(Duration::from_secs(30), watch.next())
            .await
            .unwrap_or_else(|_| panic!("no event for 30 s, at {resume_from} of {until}"));
        match message {
            Some(Ok(WatchMessage::Events(batch))) => {
                resume_from = batch.last().unwrap().revision();
                events.extend(batch);
            }
            Some(Ok(WatchMessage::Progress(_))) => {}
            Some(Err(Error::WatchTooSlow { last_revision })) => {
                assert!(last_revision >= resume_from);
                watch = store
                    .watch(prefix, last_revision, WatchOptions::default())
                    .await
                    .unwrap();
            }
            other => panic!("watch ended: {other:?}"),
        }
    }
    events
}

async fn watch_sees_every_change_after_its_revision_once_in_order(backend: Backend) {
    let store = backend.open().await;
    store.create("/w/before", value("x"), NO_TTL).await.unwrap();
    let after = store.current_revision().await.unwrap();
    let from_start = store
        .watch("/w/", after, WatchOptions::default())
        .await
        .unwrap();
    drop(from_start);

    let mut writers = Vec::new();
    for w in 0..16 {
        let store = store.clone();
        writers.push(tokio::spawn(async move {
            let mut written: Vec<Revision> = Vec::new();
            for n in 0..40 {
                let key = format!("/w/{w}/{}", n % 5);
                let revision = match store.get(&key, None).await.unwrap().kv {
                    None => {
                        store
                            .create(&key, value(&n.to_string()), NO_TTL)
                            .await
                            .unwrap()
                            .mod_revision
                    }
                    Some(kv) if n % 3 == 0 => {
                        store
                            .delete(&key, Some(kv.mod_revision))
                            .await
                            .unwrap()
                            .revision
                    }
                    Some(kv) => {
                        store
                            .update(&key, value(&n.to_string()), kv.mod_revision, NO_TTL)
                            .await
                            .unwrap()
                            .mod_revision
                    }
                };
                written.push(revision);
            }
            written
        }));
    }
    // Unrelated keys that the watch must not see.
    store
        .create("/wx", value("not mine"), NO_TTL)
        .await
        .unwrap();
    let mut expected: Vec<Revision> = Vec::new();
    for writer in writers {
        expected.extend(writer.await.unwrap());
    }
    expected.sort_unstable();
    let last = *expected.last().unwrap();

    let events = collect_events(&store, "/w/", after, last).await;
    let seen: Vec<Revision> = events.iter().map(Event::revision).collect();
    assert_eq!(seen, expected, "every acknowledged write, in order, once");
    assert!(events.iter().all(|e| e.kv.key.starts_with("/w/")));

    // A watch resumed from any revision it saw misses nothing after it.
    let middle = seen[seen.len() / 2];
    let resumed = collect_events(&store, "/w/", middle, last).await;
    assert_eq!(resumed, events[seen.len() / 2 + 1..].to_vec());
}

async fn watch_carries_previous_values(backend: Backend) {
    let store = backend.open().await;
    let after = store.current_revision().await.unwrap();
    let created = store.create("/p/k", value("one"), NO_TTL).await.unwrap();
    let updated = store
        .update("/p/k", value("two"), created.mod_revision, NO_TTL)
        .await
        .unwrap();
    let deleted = store.delete("/p/k", None).await.unwrap();
    let recreated = store.create("/p/k", value("three"), NO_TTL).await.unwrap();

    let events = collect_events(&store, "/p/", after, recreated.mod_revision).await;
    assert_eq!(events.len(), 4);
    assert_eq!(
        (events[0].kind, &events[0].kv, &events[0].prev),
        (EventKind::Put, &created, &None)
    );
    assert_eq!(
        (events[1].kind, &events[1].kv, events[1].prev.as_ref()),
        (EventKind::Put, &updated, Some(&created))
    );
    assert_eq!(events[2].kind, EventKind::Delete);
    assert_eq!(events[2].kv.key, "/p/k");
    assert_eq!(events[2].revision(), deleted.revision);
    assert_eq!(events[2].prev.as_ref(), Some(&updated));
    assert_eq!(
        (events[3].kind, &events[3].kv, &events[3].prev),
        (EventKind::Put, &recreated, &None)
    );
}

async fn compacted_revisions_fail_with_compacted(backend: Backend) {
    let store = backend.open().await;
    let mut revisions = Vec::new();
    let mut kv = store.create("/c/k", value("0"), NO_TTL).await.unwrap();
    revisions.push(kv.mod_revision);
    for n in 1..10 {
        kv = store
            .update("/c/k", value(&n.to_string()), kv.mod_revision, NO_TTL)
            .await
            .unwrap();
        revisions.push(kv.mod_revision);
    }
    store.create("/c/gone", value("x"), NO_TTL).await.unwrap();
    let gone = store.delete("/c/gone", None).await.unwrap().revision;
    let compact_at = revisions[5];
    store.compact(compact_at).await.unwrap();
    // Compacting again, or lower, changes nothing.
    store.compact(revisions[2]).await.unwrap();

    assert!(matches!(
        store.get("/c/k", Some(revisions[3])).await,
        Err(Error::Compacted { .. })
    ));
    assert!(matches!(
        store
            .range(RangeRequest {
                prefix: "/c/".into(),
                revision: Some(revisions[4]),
                ..RangeRequest::default()
            })
            .await,
        Err(Error::Compacted { .. })
    ));
    assert!(matches!(
        store
            .watch("/c/", revisions[1], WatchOptions::default())
            .await,
        Err(Error::Compacted { .. })
    ));
    // The compaction revision itself, and everything after, is still there.
    let at = store
        .get("/c/k", Some(compact_at))
        .await
        .unwrap()
        .kv
        .unwrap();
    assert_eq!(at.value, value("5"));
    let events = collect_events(&store, "/c/k", compact_at - 1, revisions[9]).await;
    let seen: Vec<Revision> = events.iter().map(Event::revision).collect();
    assert_eq!(seen, revisions[5..].to_vec());
    assert_eq!(events[1].prev.as_ref().unwrap().value, value("5"));
    assert_eq!(store.get("/c/gone", None).await.unwrap().kv, None);
    assert_eq!(store.get("/c/gone", Some(gone)).await.unwrap().kv, None);
    assert_eq!(
        store.get("/c/k", None).await.unwrap().kv.unwrap().value,
        value("9")
    );
}

async fn keys_with_a_ttl_expire(backend: Backend) {
    let store = backend.open().await;
    let after = store.current_revision().await.unwrap();
    let ttl = PutOptions {
        ttl: Some(Duration::from_secs(1)),
    };
    let short = store.create("/ttl/short", value("x"), ttl).await.unwrap();
    store
        .create("/ttl/forever", value("y"), NO_TTL)
        .await
        .unwrap();
    let mut watch = store
        .watch("/ttl/short", after, WatchOptions::default())
        .await
        .unwrap();
    eventually("the key with a TTL to go", Duration::from_secs(20), || {
        let store = store.clone();
        async move {
            store
                .get("/ttl/short", None)
                .await
                .unwrap()
                .kv
                .is_none()
                .then_some(())
        }
    })
    .await;
    // Its expiry is an ordinary delete, seen by watchers.
    let mut kinds = Vec::new();
    while kinds.len() < 2 {
        match tokio::time::timeout(Duration::from_secs(10), watch.next()).await {
            Ok(Some(Ok(WatchMessage::Events(events)))) => {
                kinds.extend(
                    events
                        .into_iter()
                        .map(|e| (e.kind, e.prev.map(|p| p.mod_revision))),
                );
            }
            Ok(Some(Ok(WatchMessage::Progress(_)))) => {}
            other => panic!("watch of an expiring key: {other:?}"),
        }
    }
    assert_eq!(
        kinds,
        vec![
            (EventKind::Put, None),
            (EventKind::Delete, Some(short.mod_revision))
        ]
    );
    assert!(store.get("/ttl/forever", None).await.unwrap().kv.is_some());
}

async fn values_over_the_limit_are_refused(backend: Backend) {
    let store = backend.open().await;
    let big = Bytes::from(vec![b'x'; VALUE_BYTES_MAX + 1]);
    match store.create("/big", big.clone(), NO_TTL).await {
        Err(err @ Error::ValueTooLarge { .. }) => {
            assert!(err.to_string().contains("over the limit"), "{err}");
        }
        other => panic!("an oversized value: {other:?}"),
    }
    let small = store.create("/big", value("ok"), NO_TTL).await.unwrap();
    assert!(matches!(
        store.update("/big", big, small.mod_revision, NO_TTL).await,
        Err(Error::ValueTooLarge { .. })
    ));
    let mib = Bytes::from(vec![b'y'; 1024 * 1024]);
    let written = store
        .update("/big", mib.clone(), small.mod_revision, NO_TTL)
        .await
        .unwrap();
    assert_eq!(store.get("/big", None).await.unwrap().kv.unwrap(), written);
    assert_eq!(written.value, mib);
}

async fn progress_reports_the_revision_delivered(backend: Backend) {
    let store = backend.open().await;
    let after = store.current_revision().await.unwrap();
    let mut watch = store
        .watch("/prog/", after, WatchOptions::default())
        .await
        .unwrap();
    let mine = store.create("/prog/a", value("1"), NO_TTL).await.unwrap();
    // A write elsewhere moves the revision on; progress must cover it.
    let other = store
        .create("/elsewhere", value("1"), NO_TTL)
        .await
        .unwrap();
    let mut got_event = false;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let progress = loop {
        assert!(
            std::time::Instant::now() < deadline,
            "no progress notification past revision {} in 20 s",
            other.mod_revision
        );
        watch.request_progress();
        match tokio::time::timeout(Duration::from_millis(500), watch.next()).await {
            Ok(Some(Ok(WatchMessage::Events(events)))) => {
                assert_eq!(events.len(), 1);
                assert_eq!(events.first().unwrap().kv, mine);
                got_event = true;
            }
            Ok(Some(Ok(WatchMessage::Progress(revision)))) if revision >= other.mod_revision => {
                break revision;
            }
            Ok(Some(Ok(WatchMessage::Progress(_)))) | Err(_) => {}
            Ok(other) => panic!("watch ended: {other:?}"),
        }
    };
    assert!(
        got_event,
        "the event came before the progress that covers it"
    );
    assert!(progress >= other.mod_revision);

    // Without asking, at the interval asked for.
    let mut periodic = store
        .watch(
            "/prog/",
            other.mod_revision,
            WatchOptions {
                progress_interval: Some(Duration::from_millis(200)),
            },
        )
        .await
        .unwrap();
    match tokio::time::timeout(Duration::from_secs(20), periodic.next()).await {
        Ok(Some(Ok(WatchMessage::Progress(revision)))) => assert!(revision >= other.mod_revision),
        other => panic!("periodic progress: {other:?}"),
    }
}

/// A watch from an older revision has history to send first; progress
/// asked for meanwhile must not claim a revision whose events are still
/// to come (etcd before 3.4.25 and 3.5.8 may answer so; the backend checks).
async fn progress_never_runs_ahead_of_history_still_to_come(backend: Backend) {
    let store = backend.open().await;
    let before = store.current_revision().await.unwrap();
    let mut written = Vec::new();
    for i in 0..300 {
        let kv = store
            .create(&format!("/hist/{i:03}"), value("v"), NO_TTL)
            .await
            .unwrap();
        written.push(kv.mod_revision);
        if i % 3 == 0 {
            store.delete(&format!("/hist/{i:03}"), None).await.unwrap();
            written.push(store.current_revision().await.unwrap());
        }
    }
    let last = *written.last().unwrap();
    let mut watch = store
        .watch("/hist/", before, WatchOptions::default())
        .await
        .unwrap();
    let mut delivered = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while delivered < written.len() {
        assert!(
            std::time::Instant::now() < deadline,
            "only {delivered} of {} events in 20 s",
            written.len()
        );
        watch.request_progress();
        match tokio::time::timeout(Duration::from_millis(500), watch.next()).await {
            Ok(Some(Ok(WatchMessage::Events(events)))) => delivered += events.len(),
            Ok(Some(Ok(WatchMessage::Progress(revision)))) => {
                let due = written.iter().filter(|r| **r <= revision).count();
                assert!(
                    delivered >= due,
                    "progress {revision} with {delivered} of its {due} events delivered"
                );
            }
            Err(_) => {}
            Ok(other) => panic!("watch ended: {other:?}"),
        }
    }
    assert_eq!(delivered, written.len());
    assert!(last > before);
}

async fn range_and_count_keep_to_the_prefix(backend: Backend) {
    let store = backend.open().await;
    for key in ["/r/a/1", "/r/a/2", "/r/a/3", "/r/ab", "/r/b", "/r/a"] {
        store.create(key, value(key), NO_TTL).await.unwrap();
    }
    let keys =
        |kvs: &[tug_store::KeyValue]| kvs.iter().map(|kv| kv.key.clone()).collect::<Vec<_>>();
    let all = store
        .range(RangeRequest {
            prefix: "/r/a/".into(),
            ..RangeRequest::default()
        })
        .await
        .unwrap();
    assert_eq!(keys(&all.kvs), ["/r/a/1", "/r/a/2", "/r/a/3"]);
    assert!(!all.more);
    let first = store
        .range(RangeRequest {
            prefix: "/r/a/".into(),
            limit: 2,
            ..RangeRequest::default()
        })
        .await
        .unwrap();
    assert_eq!(keys(&first.kvs), ["/r/a/1", "/r/a/2"]);
    assert!(first.more);
    let rest = store
        .range(RangeRequest {
            prefix: "/r/a/".into(),
            limit: 2,
            start_key: first.next_key(),
            revision: Some(first.revision),
        })
        .await
        .unwrap();
    assert_eq!(keys(&rest.kvs), ["/r/a/3"]);
    assert!(!rest.more);
    assert_eq!(store.count("/r/a/").await.unwrap(), 3);
    assert_eq!(store.count("/r/").await.unwrap(), 6);
    assert_eq!(store.count("/nothing/").await.unwrap(), 0);

    let mut by_key = BTreeMap::new();
    for kv in store.range(RangeRequest::default()).await.unwrap().kvs {
        by_key.insert(kv.key.clone(), kv.value);
    }
    assert_eq!(
        by_key.len(),
        6,
        "an empty prefix reads every key: {by_key:?}"
    );
}

/// A range without a limit answers every key, even more than etcd puts in
/// one gRPC reply (4 MiB): 40 MiB of values here.
async fn an_unlimited_range_reads_more_than_one_reply_holds(backend: Backend) {
    let store = backend.open().await;
    let big = Bytes::from(vec![b'x'; 512 * 1024]);
    let mut writers = Vec::new();
    for w in 0..8 {
        let (store, big) = (store.clone(), big.clone());
        writers.push(tokio::spawn(async move {
            for n in 0..10 {
                store
                    .create(&format!("/big/{w}/{n}"), big.clone(), NO_TTL)
                    .await
                    .unwrap();
            }
        }));
    }
    for writer in writers {
        writer.await.unwrap();
    }
    let all = store
        .range(RangeRequest {
            prefix: "/big/".into(),
            ..RangeRequest::default()
        })
        .await
        .unwrap();
    assert_eq!(all.kvs.len(), 80);
    assert!(!all.more);
    assert!(all.kvs.iter().all(|kv| kv.value.len() == big.len()));
}
