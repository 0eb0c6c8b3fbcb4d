//! What only the SQLite backend has: its file, its lock, its disk use.

use std::time::Duration;

use tug_store::sqlite::{Config, SqliteStore};
use tug_store::{Bytes, Error, PutOptions, RangeRequest, Store, WatchMessage, WatchOptions};

fn open_error(path: &std::path::Path) -> String {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    match runtime.block_on(SqliteStore::open(Config {
        path: path.to_path_buf(),
    })) {
        Ok(_) => panic!("{} was opened as a tug store", path.display()),
        Err(err @ Error::BadDatabase { .. }) => err.to_string(),
        Err(other) => panic!("{}: expected BadDatabase, got {other:?}", path.display()),
    }
}

#[test]
fn corrupt_and_foreign_files_are_refused_at_open() {
    let dir = tempfile::tempdir().unwrap();

    let garbage = dir.path().join("garbage.db");
    let bytes: Vec<u8> = (0..64 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(&garbage, bytes).unwrap();
    let message = open_error(&garbage);
    assert!(message.contains("not a tug store, or corrupt"), "{message}");

    let text = dir.path().join("notes.txt");
    std::fs::write(&text, "these are my notes, not a database\n".repeat(100)).unwrap();
    assert!(open_error(&text).contains("not a tug store"));

    let foreign = dir.path().join("foreign.db");
    let conn = rusqlite_free_foreign_db(&foreign);
    assert!(conn, "made a foreign database");
    let message = open_error(&foreign);
    assert!(message.contains("another program"), "{message}");

    // A tug store with its header torn off is refused too.
    let torn = dir.path().join("torn.db");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let store = SqliteStore::open(Config { path: torn.clone() })
            .await
            .unwrap();
        store
            .create("/k", Bytes::from_static(b"v"), PutOptions::default())
            .await
            .unwrap();
    });
    drop(runtime);
    let mut bytes = std::fs::read(&torn).unwrap();
    bytes[..100].fill(0xAB);
    std::fs::write(&torn, bytes).unwrap();
    for suffix in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", torn.display()));
    }
    assert!(open_error(&torn).contains("not a tug store, or corrupt"));
}

/// Writes an SQLite database of some other program, through the sqlite3
/// command line tool (the tests do not link SQLite twice).
fn rusqlite_free_foreign_db(path: &std::path::Path) -> bool {
    std::process::Command::new("sqlite3")
        .arg(path)
        .arg("CREATE TABLE users (name TEXT); INSERT INTO users VALUES ('ann');")
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_process_cannot_open_a_store_in_use() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let store = SqliteStore::open(Config { path: path.clone() })
        .await
        .unwrap();
    let status = std::process::Command::new(crate::crash::crash_writer_path())
        .args(["--sqlite", path.to_str().unwrap()])
        .args(["--log", dir.path().join("log").to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap();
    assert!(!status.status.success());
    let stderr = String::from_utf8_lossy(&status.stderr);
    assert!(stderr.contains("in use by another tug process"), "{stderr}");
    drop(store);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steady_churn_does_not_grow_the_file_forever() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let store = SqliteStore::open(Config { path: path.clone() })
        .await
        .unwrap();
    let value = Bytes::from(vec![b'v'; 4096]);
    let mut revisions = [0; 16];
    let mut churn = async |rounds: usize| {
        for _ in 0..rounds {
            let mut writes = Vec::new();
            for (i, revision) in revisions.iter().enumerate() {
                let key = format!("/churn/{i}");
                let store = store.clone();
                let value = value.clone();
                let revision = *revision;
                writes.push(tokio::spawn(async move {
                    if revision == 0 {
                        store.create(&key, value, PutOptions::default()).await
                    } else {
                        store
                            .update(&key, value, revision, PutOptions::default())
                            .await
                    }
                }));
            }
            for (i, write) in writes.into_iter().enumerate() {
                revisions[i] = write.await.unwrap().unwrap().mod_revision;
            }
        }
        let current = store.current_revision().await.unwrap();
        store.compact(current).await.unwrap();
        store.db_size().await.unwrap()
    };
    // 16 keys of 4 KiB, each rewritten 200 times a round: without
    // compaction every round would add some 25 MiB.
    let first = churn(200).await;
    let mut sizes = Vec::new();
    for _ in 0..4 {
        sizes.push(churn(200).await);
    }
    let last = *sizes.last().unwrap();
    assert!(
        last <= first * 3 / 2 + 1024 * 1024,
        "the file grew from {first} to {last} bytes over rounds {sizes:?}"
    );
    let kvs = store
        .range(RangeRequest {
            prefix: "/churn/".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .kvs;
    assert_eq!(kvs.len(), 16);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn everything_survives_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        path: dir.path().join("state.db"),
    };
    let store = SqliteStore::open(config.clone()).await.unwrap();
    let kv = store
        .create("/keep", Bytes::from_static(b"1"), PutOptions::default())
        .await
        .unwrap();
    store.compact(kv.mod_revision).await.unwrap();
    let kv = store
        .update(
            "/keep",
            Bytes::from_static(b"2"),
            kv.mod_revision,
            PutOptions::default(),
        )
        .await
        .unwrap();
    drop(store);

    let store = SqliteStore::open(config).await.unwrap();
    assert_eq!(store.current_revision().await.unwrap(), kv.mod_revision);
    assert_eq!(store.get("/keep", None).await.unwrap().kv, Some(kv.clone()));
    // The compaction is remembered; history after it is still there.
    assert!(matches!(
        store.get("/keep", Some(kv.mod_revision - 2)).await,
        Err(Error::Compacted { .. })
    ));
    let mut watch = store
        .watch("/keep", kv.mod_revision - 1, WatchOptions::default())
        .await
        .unwrap();
    match tokio::time::timeout(Duration::from_secs(10), watch.next()).await {
        Ok(Some(Ok(WatchMessage::Events(events)))) => assert_eq!(events.first().unwrap().kv, kv),
        other => panic!("replay after reopen: {other:?}"),
    }
    let next = store
        .create("/new", Bytes::from_static(b"n"), PutOptions::default())
        .await
        .unwrap();
    assert_eq!(next.mod_revision, kv.mod_revision + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_that_stops_reading_is_closed_and_resumes_without_a_gap() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(Config {
        path: dir.path().join("state.db"),
    })
    .await
    .unwrap();
    let start = store.current_revision().await.unwrap();
    let mut idle = store
        .watch("/slow/", start, WatchOptions::default())
        .await
        .unwrap();
    // Each write is its own commit, and so its own batch for the watcher;
    // more than the watcher may hold unread.
    let mut written = Vec::new();
    for n in 0..5000 {
        let kv = store
            .create(
                &format!("/slow/{n}"),
                Bytes::from_static(b"x"),
                PutOptions::default(),
            )
            .await
            .unwrap();
        written.push(kv.mod_revision);
    }
    let mut seen = Vec::new();
    let last_revision = loop {
        match tokio::time::timeout(Duration::from_secs(10), idle.next()).await {
            Ok(Some(Ok(WatchMessage::Events(events)))) => {
                seen.extend(events.iter().map(|e| e.revision()));
            }
            Ok(Some(Ok(WatchMessage::Progress(_)))) => {}
            Ok(Some(Err(Error::WatchTooSlow { last_revision }))) => break last_revision,
            other => panic!("expected the idle watcher to be closed, got {other:?}"),
        }
    };
    assert!(
        seen.len() < written.len(),
        "the watcher was closed before the end"
    );
    assert_eq!(seen.last().copied().unwrap_or(start), last_revision);
    assert!(idle.next().await.is_none());

    let mut resumed = store
        .watch("/slow/", last_revision, WatchOptions::default())
        .await
        .unwrap();
    while seen.len() < written.len() {
        match tokio::time::timeout(Duration::from_secs(10), resumed.next()).await {
            Ok(Some(Ok(WatchMessage::Events(events)))) => {
                seen.extend(events.iter().map(|e| e.revision()));
            }
            Ok(Some(Ok(WatchMessage::Progress(_)))) => {}
            other => panic!("resumed watch: {other:?}"),
        }
    }
    assert_eq!(
        seen, written,
        "every write once, in order, across the resume"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_compactor_forgets_history_one_interval_behind() {
    let dir = tempfile::tempdir().unwrap();
    let store: std::sync::Arc<dyn Store> = std::sync::Arc::new(
        SqliteStore::open(Config {
            path: dir.path().join("state.db"),
        })
        .await
        .unwrap(),
    );
    let first = store
        .create("/k", Bytes::from_static(b"1"), PutOptions::default())
        .await
        .unwrap();
    let second = store
        .update(
            "/k",
            Bytes::from_static(b"2"),
            first.mod_revision,
            PutOptions::default(),
        )
        .await
        .unwrap();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let compactor = tokio::spawn(tug_store::compactor::run(
        store.clone(),
        Duration::from_millis(100),
        shutdown.clone(),
    ));
    crate::harness::eventually(
        "the compactor to compact the first revision",
        Duration::from_secs(20),
        || {
            let store = store.clone();
            async move {
                matches!(
                    store.get("/k", Some(first.mod_revision)).await,
                    Err(Error::Compacted { .. })
                )
                .then_some(())
            }
        },
    )
    .await;
    shutdown.cancel();
    compactor.await.unwrap();
    assert_eq!(store.get("/k", None).await.unwrap().kv, Some(second));
}
