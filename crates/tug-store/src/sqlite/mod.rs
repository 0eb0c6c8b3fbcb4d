//! The SQLite backend: an append-only log of revisions in one file.
//!
//! Table `tug_log` holds one row per revision (in the manner of k3s's kine):
//! the key, whether the write deleted it, its create revision, the revision
//! it replaced (`prev_revision`), its version, an optional expiry, the value
//! and the previous value (so a watch can replay an update or delete with
//! its previous value even after the replaced row is compacted away).
//! Table `tug_meta` holds the schema version, the latest revision and the
//! compaction revision. `sqlite3 state.db 'SELECT revision, key FROM tug_log'`
//! shows the history.
//!
//! Writes go through one writer thread ([`writer`]); reads use a small pool
//! of read-only connections, each read one SQLite snapshot, so a read at a
//! revision and the compaction revision it is checked against always agree.

mod fanout;
mod writer;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio_util::sync::{CancellationToken, DropGuard};

use self::fanout::{FanOut, FanOutHandle, Signal, WatcherId};
use self::writer::{WriteOp, WriteOutcome, WriteRequest, Writer, tombstone_kv};
use crate::watch::Mailbox;
use crate::{
    DeleteResponse, Error, Event, EventKind, GetResponse, KeyValue, PutOptions, RangeRequest,
    RangeResponse, Result, Revision, Store, Watch, WatchMessage, WatchOptions, check_key,
    check_value, prefix_end,
};

/// `PRAGMA application_id` of a tug store: "tug1".
const APPLICATION_ID: i64 = 0x7475_6731;
const SCHEMA_VERSION: i64 = 1;

/// Write requests waiting for the writer at most; more wait for room.
const WRITE_QUEUE_MAX: usize = 4096;
/// Watches served at once at most.
const WATCHES_MAX: usize = 10_000;
/// Read connections, and so reads running at once.
const READERS_MAX: usize = 4;
/// Rows read per page when a watch replays history.
const REPLAY_PAGE_ROWS: i64 = 512;
/// Revisions of history removed per writer transaction while compacting,
/// so that compaction never holds the writer for long.
const COMPACT_CHUNK_REVISIONS: Revision = 10_000;
/// How often expired keys are looked for.
const EXPIRY_INTERVAL: Duration = Duration::from_secs(1);
/// How long opening waits for the database lock.
const LOCK_WAIT: Duration = Duration::from_secs(5);
/// Expired keys deleted per expiry pass at most.
const EXPIRY_BATCH_MAX: i64 = 1000;

#[derive(Clone, Debug)]
pub struct Config {
    /// The database file; created if missing.
    pub path: PathBuf,
}

/// The default backend. Cheap to clone; the store stops when the last
/// clone is dropped.
#[derive(Clone)]
pub struct SqliteStore {
    shared: Arc<Shared>,
    _stop: Arc<DropGuard>,
}

/// One batch of committed changes, as the writer publishes it.
struct Batch {
    /// The last revision of the commit.
    revision: Revision,
    events: Arc<[Event]>,
}

struct Shared {
    path: PathBuf,
    writes: mpsc::Sender<WriteRequest>,
    fan_out: FanOutHandle,
    /// Watches the fan-out serves.
    watches: Arc<AtomicUsize>,
    next_watch: AtomicU64,
    /// The latest revision committed and published to watchers.
    revision: Arc<AtomicI64>,
    readers: Readers,
}

struct Readers {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
    permits: Arc<Semaphore>,
}

impl SqliteStore {
    /// Opens (or creates) the database at `config.path`. A file that is not
    /// a tug store, or that breaks the store's invariants, is refused with
    /// [`Error::BadDatabase`].
    pub async fn open(config: Config) -> Result<Self> {
        let path = config.path;
        let opened = {
            let path = path.clone();
            tokio::task::spawn_blocking(move || open_writer(&path))
        };
        let (conn, revision, lock) = opened
            .await
            .map_err(|e| Error::WriteFailed(e.to_string()))??;
        let (writes, requests) = mpsc::channel(WRITE_QUEUE_MAX);
        let stop = CancellationToken::new();
        let published = Arc::new(AtomicI64::new(revision));
        let watches = Arc::new(AtomicUsize::new(0));
        let (fan_out, fan_out_handle) = FanOut::new(revision, watches.clone());
        // The writer holds neither the store nor its request sender: it
        // stops, and releases the lock, once the last handle is gone.
        let writer = Writer::new(
            conn,
            fan_out_handle.clone(),
            published.clone(),
            revision,
            lock,
        );
        let shared = Arc::new(Shared {
            readers: Readers {
                path: path.clone(),
                idle: Mutex::new(Vec::new()),
                permits: Arc::new(Semaphore::new(READERS_MAX)),
            },
            path,
            writes,
            fan_out: fan_out_handle,
            watches,
            next_watch: AtomicU64::new(0),
            revision: published,
        });
        std::thread::Builder::new()
            .name("tug-store-writer".into())
            .spawn(move || writer.run(requests))?;
        std::thread::Builder::new()
            .name("tug-store-fan-out".into())
            .spawn(move || fan_out.run())?;
        tokio::spawn(expire_keys(Arc::downgrade(&shared), stop.clone()));
        tracing::info!(path = %shared.path.display(), revision, "opened SQLite store");
        Ok(Self {
            shared,
            _stop: Arc::new(stop.drop_guard()),
        })
    }

    /// The path of the database file.
    pub fn path(&self) -> &Path {
        &self.shared.path
    }
}

impl Shared {
    /// Queues a write; the receiver answers once it is durable.
    async fn submit(&self, op: WriteOp) -> Result<oneshot::Receiver<Result<WriteOutcome>>> {
        let (reply, outcome) = oneshot::channel();
        self.writes
            .send(WriteRequest { op, reply })
            .await
            .map_err(|_| Error::Closed)?;
        Ok(outcome)
    }

    async fn write(&self, op: WriteOp) -> Result<WriteOutcome> {
        self.submit(op).await?.await.map_err(|_| Error::Closed)?
    }

    /// Runs `read` on a read connection inside one snapshot.
    async fn read<T: Send + 'static>(
        self: &Arc<Self>,
        read: impl FnOnce(&Snapshot<'_>) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let permit = self
            .readers
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| Error::Closed)?;
        let shared = self.clone();
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let idle = shared
                .readers
                .idle
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .pop();
            let mut conn = match idle {
                Some(conn) => conn,
                None => open_reader(&shared.readers.path)?,
            };
            let result = (|| {
                let tx = conn.transaction()?;
                let value = read(&Snapshot::new(&tx)?)?;
                tx.finish()?;
                Ok(value)
            })();
            shared
                .readers
                .idle
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(conn);
            result
        })
        .await
        .map_err(|e| Error::WriteFailed(e.to_string()))?
    }
}

/// One consistent read of the database.
struct Snapshot<'a> {
    conn: &'a Connection,
    revision: Revision,
    compacted: Revision,
}

impl<'a> Snapshot<'a> {
    fn new(conn: &'a Connection) -> Result<Self> {
        let (revision, compacted) = read_meta(conn)?;
        Ok(Self {
            conn,
            revision,
            compacted,
        })
    }

    /// The revision to read at, checked against the history that exists.
    fn at(&self, requested: Option<Revision>) -> Result<Revision> {
        let at = requested.unwrap_or(self.revision);
        if at < self.compacted {
            return Err(Error::Compacted { requested: at });
        }
        if at > self.revision {
            return Err(Error::FutureRevision {
                requested: at,
                current: self.revision,
            });
        }
        Ok(at)
    }
}

fn read_meta(conn: &Connection) -> Result<(Revision, Revision)> {
    let mut statement = conn.prepare_cached(
        "SELECT (SELECT value FROM tug_meta WHERE name = 'revision'), \
                (SELECT value FROM tug_meta WHERE name = 'compact_revision')",
    )?;
    Ok(statement.query_row([], |row| Ok((row.get(0)?, row.get(1)?)))?)
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn expires_at_ms(options: PutOptions) -> Option<i64> {
    options
        .ttl
        .map(|ttl| now_ms().saturating_add(ttl.as_millis().min(i64::MAX as u128) as i64))
}

fn key_from(bytes: Vec<u8>) -> rusqlite::Result<String> {
    String::from_utf8(bytes).map_err(|e| rusqlite::Error::Utf8Error(e.utf8_error()))
}

#[async_trait]
impl Store for SqliteStore {
    async fn create(&self, key: &str, value: Bytes, options: PutOptions) -> Result<KeyValue> {
        check_key(key)?;
        check_value(key, &value)?;
        let op = WriteOp::Create {
            key: key.to_string(),
            value,
            expires_at_ms: expires_at_ms(options),
        };
        match self.shared.write(op).await? {
            WriteOutcome::Put(kv) => Ok(kv),
            _ => unreachable!("a create answers with the value written"),
        }
    }

    async fn update(
        &self,
        key: &str,
        value: Bytes,
        expected: Revision,
        options: PutOptions,
    ) -> Result<KeyValue> {
        check_key(key)?;
        check_value(key, &value)?;
        let op = WriteOp::Update {
            key: key.to_string(),
            value,
            expected,
            expires_at_ms: expires_at_ms(options),
        };
        match self.shared.write(op).await? {
            WriteOutcome::Put(kv) => Ok(kv),
            _ => unreachable!("an update answers with the value written"),
        }
    }

    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<DeleteResponse> {
        check_key(key)?;
        let op = WriteOp::Delete {
            key: key.to_string(),
            expected,
        };
        match self.shared.write(op).await? {
            WriteOutcome::Delete(response) => Ok(response),
            _ => unreachable!("a delete answers with the value deleted"),
        }
    }

    async fn get(&self, key: &str, revision: Option<Revision>) -> Result<GetResponse> {
        check_key(key)?;
        let key = key.to_string();
        self.shared
            .read(move |snapshot| {
                let at = snapshot.at(revision)?;
                let kv = snapshot
                    .conn
                    .prepare_cached(
                        "SELECT deleted, value, create_revision, revision, version FROM tug_log \
                         WHERE key = ?1 AND revision <= ?2 ORDER BY revision DESC LIMIT 1",
                    )?
                    .query_row(params![key.as_bytes(), at], |row| {
                        if row.get::<_, bool>(0)? {
                            return Ok(None);
                        }
                        Ok(Some(KeyValue {
                            key: key.clone(),
                            value: Bytes::from(row.get::<_, Vec<u8>>(1)?),
                            create_revision: row.get(2)?,
                            mod_revision: row.get(3)?,
                            version: row.get(4)?,
                        }))
                    })
                    .optional()?
                    .flatten();
                Ok(GetResponse { kv, revision: at })
            })
            .await
    }

    async fn range(&self, request: RangeRequest) -> Result<RangeResponse> {
        self.shared
            .read(move |snapshot| {
                let at = snapshot.at(request.revision)?;
                let prefix = request.prefix.as_bytes();
                let start = match &request.start_key {
                    Some(start) if start.as_bytes() > prefix => start.as_bytes(),
                    _ => prefix,
                };
                let limit = if request.limit == 0 {
                    -1
                } else {
                    request.limit as i64 + 1
                };
                let end = prefix_end(prefix);
                // The latest row of each key at `at`, if it is not a tombstone.
                let sql = format!(
                    "SELECT l.key, l.value, l.create_revision, l.revision, l.version \
                     FROM tug_log l WHERE l.key >= ?1 {} AND l.revision <= ?3 AND l.deleted = 0 \
                     AND NOT EXISTS (SELECT 1 FROM tug_log n WHERE n.key = l.key \
                       AND n.revision > l.revision AND n.revision <= ?3) \
                     ORDER BY l.key LIMIT ?4",
                    if end.is_some() {
                        "AND l.key < ?2"
                    } else {
                        "AND ?2 IS NULL"
                    }
                );
                let mut statement = snapshot.conn.prepare_cached(&sql)?;
                let mut kvs = statement
                    .query_map(params![start, end, at, limit], |row| {
                        Ok(KeyValue {
                            key: key_from(row.get(0)?)?,
                            value: Bytes::from(row.get::<_, Vec<u8>>(1)?),
                            create_revision: row.get(2)?,
                            mod_revision: row.get(3)?,
                            version: row.get(4)?,
                        })
                    })?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                let more = request.limit != 0 && kvs.len() > request.limit;
                kvs.truncate(if more { request.limit } else { kvs.len() });
                Ok(RangeResponse {
                    kvs,
                    revision: at,
                    more,
                })
            })
            .await
    }

    async fn count(&self, prefix: &str) -> Result<i64> {
        let prefix = prefix.as_bytes().to_vec();
        self.shared
            .read(move |snapshot| {
                let end = prefix_end(&prefix);
                let sql = format!(
                    "SELECT COUNT(*) FROM tug_log l WHERE l.key >= ?1 {} AND l.deleted = 0 \
                     AND NOT EXISTS (SELECT 1 FROM tug_log n WHERE n.key = l.key \
                       AND n.revision > l.revision)",
                    if end.is_some() {
                        "AND l.key < ?2"
                    } else {
                        "AND ?2 IS NULL"
                    }
                );
                Ok(snapshot
                    .conn
                    .prepare_cached(&sql)?
                    .query_row(params![prefix, end], |row| row.get(0))?)
            })
            .await
    }

    async fn watch(&self, prefix: &str, after: Revision, options: WatchOptions) -> Result<Watch> {
        if self.shared.watches.load(Ordering::Acquire) >= WATCHES_MAX {
            return Err(Error::TooManyWatches { max: WATCHES_MAX });
        }
        let id: WatcherId = self.shared.next_watch.fetch_add(1, Ordering::Relaxed);
        let mailbox = Arc::new(Mailbox::default());
        // Register before reading history: a commit is either in the
        // history read or reaches the watcher from the fan-out, possibly
        // both (the fan-out skips what the replay covered).
        self.shared.fan_out.signal(Signal::Register {
            id,
            prefix: prefix.to_string(),
            after,
            options,
            mailbox: mailbox.clone(),
        });
        let cancel = CancelOnDrop {
            id,
            fan_out: self.shared.fan_out.clone(),
        };
        let first = replay_page(&self.shared, prefix, after, None).await?;
        tokio::spawn(replay(
            self.shared.clone(),
            id,
            prefix.to_string(),
            first,
            mailbox.clone(),
        ));
        let fan_out = self.shared.fan_out.clone();
        Ok(Watch::new(
            mailbox,
            Box::new(move || fan_out.signal(Signal::Progress { id })),
            Some(Box::new(cancel)),
        ))
    }

    async fn compact(&self, revision: Revision) -> Result<()> {
        let previous = match self
            .shared
            .write(WriteOp::CompactStart { revision })
            .await?
        {
            WriteOutcome::CompactStarted { previous } => previous,
            _ => unreachable!("a compaction start answers with the previous compaction"),
        };
        let Some(mut low) = previous else {
            return Ok(());
        };
        while low < revision {
            let high = (low + COMPACT_CHUNK_REVISIONS).min(revision);
            self.shared
                .write(WriteOp::CompactChunk {
                    low,
                    high,
                    compact: revision,
                })
                .await?;
            low = high;
        }
        tracing::debug!(revision, "compacted SQLite store");
        Ok(())
    }

    async fn current_revision(&self) -> Result<Revision> {
        Ok(self.shared.revision.load(Ordering::Acquire))
    }

    async fn db_size(&self) -> Result<u64> {
        let mut size = std::fs::metadata(&self.shared.path)?.len();
        let mut wal = self.shared.path.clone().into_os_string();
        wal.push("-wal");
        if let Ok(meta) = std::fs::metadata(wal) {
            size += meta.len();
        }
        Ok(size)
    }
}

/// One page of history for a watch.
struct ReplayPage {
    events: Vec<Event>,
    /// The revision the replay runs up to; later changes come live.
    target: Revision,
    /// The revision of the last row read, from where the next page starts.
    last: Revision,
    done: bool,
}

/// Reads the changes to `prefix` after `after`, up to `target` (the current
/// revision when `None`).
async fn replay_page(
    shared: &Arc<Shared>,
    prefix: &str,
    after: Revision,
    target: Option<Revision>,
) -> Result<ReplayPage> {
    let prefix = prefix.as_bytes().to_vec();
    shared
        .read(move |snapshot| {
            // A watch needs every revision after `after`; the oldest one
            // left is the compaction revision.
            if after + 1 < snapshot.compacted {
                return Err(Error::Compacted {
                    requested: after + 1,
                });
            }
            let target = target.unwrap_or(snapshot.revision);
            let end = prefix_end(&prefix);
            let sql = format!(
                "SELECT revision, key, deleted, create_revision, prev_revision, version, value, \
                 prev_value FROM tug_log WHERE revision > ?1 AND revision <= ?2 \
                 AND key >= ?3 {} ORDER BY revision LIMIT ?5",
                if end.is_some() {
                    "AND key < ?4"
                } else {
                    "AND ?4 IS NULL"
                }
            );
            let mut statement = snapshot.conn.prepare_cached(&sql)?;
            let events = statement
                .query_map(
                    params![after, target, prefix, end, REPLAY_PAGE_ROWS],
                    event_from_row,
                )?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let mut last = after;
            for event in &events {
                if event.revision() <= last {
                    return Err(Error::BadDatabase {
                        path: PathBuf::new(),
                        reason: format!(
                            "history is out of order: revision {} after {last}",
                            event.revision()
                        ),
                    });
                }
                last = event.revision();
            }
            let done = (events.len() as i64) < REPLAY_PAGE_ROWS;
            Ok(ReplayPage {
                events,
                target,
                last: if done { target } else { last },
                done,
            })
        })
        .await
}

fn event_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Event> {
    let revision: Revision = row.get(0)?;
    let key = key_from(row.get(1)?)?;
    let deleted: bool = row.get(2)?;
    let create_revision: Revision = row.get(3)?;
    let prev_revision: Revision = row.get(4)?;
    let version: i64 = row.get(5)?;
    let value = Bytes::from(row.get::<_, Vec<u8>>(6)?);
    let prev_value = row.get::<_, Option<Vec<u8>>>(7)?.map(Bytes::from);
    let prev = |version| {
        prev_value.clone().map(|value| KeyValue {
            key: key.clone(),
            value,
            create_revision,
            mod_revision: prev_revision,
            version,
        })
    };
    Ok(if deleted {
        Event {
            kind: EventKind::Delete,
            prev: prev(version),
            kv: tombstone_kv(&key, revision),
        }
    } else {
        Event {
            kind: EventKind::Put,
            prev: if create_revision == revision {
                None
            } else {
                prev(version - 1)
            },
            kv: KeyValue {
                key,
                value,
                create_revision,
                mod_revision: revision,
                version,
            },
        }
    })
}

/// Ends a watch at the fan-out when its handle is dropped.
struct CancelOnDrop {
    id: WatcherId,
    fan_out: FanOutHandle,
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.fan_out.signal(Signal::Cancel { id: self.id });
    }
}

/// Replays a new watch's history, then tells the fan-out where it stopped
/// so that live batches take over from there.
async fn replay(
    shared: Arc<Shared>,
    id: WatcherId,
    prefix: String,
    first: ReplayPage,
    mailbox: Arc<Mailbox>,
) {
    let target = first.target;
    let mut page = first;
    let result = async {
        loop {
            if !page.events.is_empty() {
                let events = std::mem::take(&mut page.events).into();
                mailbox
                    .send(WatchMessage::Events(events))
                    .await
                    .map_err(|()| Error::Closed)?;
            }
            if page.done {
                return Ok(());
            }
            page = replay_page(&shared, &prefix, page.last, Some(target)).await?;
        }
    }
    .await;
    match result {
        Ok(()) => shared.fan_out.signal(Signal::Replayed { id, target }),
        Err(err) => {
            mailbox.end(err);
            shared.fan_out.signal(Signal::Cancel { id });
        }
    }
}

/// Deletes keys whose time to live has passed, once a second, until the
/// store is dropped.
async fn expire_keys(shared: std::sync::Weak<Shared>, stop: CancellationToken) {
    let mut ticker = tokio::time::interval(EXPIRY_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let Some(shared) = shared.upgrade() else {
            return;
        };
        if let Err(err) = expire_once(&shared).await {
            tracing::warn!(error = %err, "expiring keys failed; will retry");
        }
    }
}

async fn expire_once(shared: &Arc<Shared>) -> Result<()> {
    let now = now_ms();
    let expired: Vec<(String, Revision)> = shared
        .read(move |snapshot| {
            let mut statement = snapshot.conn.prepare_cached(
                "SELECT l.key, l.revision FROM tug_log l WHERE l.expires_at_ms IS NOT NULL \
                 AND l.expires_at_ms <= ?1 AND l.deleted = 0 AND NOT EXISTS \
                 (SELECT 1 FROM tug_log n WHERE n.key = l.key AND n.revision > l.revision) \
                 LIMIT ?2",
            )?;
            let rows = statement
                .query_map(params![now, EXPIRY_BATCH_MAX], |row| {
                    Ok((key_from(row.get(0)?)?, row.get(1)?))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
        .await?;
    // Queue every delete before waiting, so that they share one commit.
    let mut pending = Vec::with_capacity(expired.len());
    for (key, revision) in expired {
        let op = WriteOp::Delete {
            key,
            expected: Some(revision),
        };
        pending.push(shared.submit(op).await?);
    }
    for outcome in pending {
        match outcome.await.map_err(|_| Error::Closed)? {
            // Written again or deleted meanwhile: no longer ours to expire.
            Ok(_) | Err(Error::Conflict { .. } | Error::NotFound { .. }) => {}
            Err(err) => return Err(err),
        }
    }
    Ok(())
}

fn bad(path: &Path, reason: impl Into<String>) -> Error {
    Error::BadDatabase {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// Opens the write connection: takes the lock, checks or creates the
/// schema, and checks the revision invariants. Answers the latest revision.
fn open_writer(path: &Path) -> Result<(Connection, Revision, File)> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut lock_path = path.as_os_str().to_owned();
    lock_path.push(".lock");
    let lock = File::create(&lock_path)?;
    // A store dropped a moment ago releases the lock once its writer has
    // drained; wait that long, not for another process that holds it.
    let deadline = std::time::Instant::now() + LOCK_WAIT;
    while let Err(err) = lock.try_lock() {
        match err {
            std::fs::TryLockError::WouldBlock if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            std::fs::TryLockError::WouldBlock => {
                return Err(bad(path, "in use by another tug process"));
            }
            std::fs::TryLockError::Error(err) => return Err(err.into()),
        }
    }
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE,
    )
    .map_err(|e| bad(path, format!("cannot open: {e}")))?;
    conn.busy_timeout(Duration::from_secs(10))?;
    let application_id: i64 = conn
        .query_row("PRAGMA application_id", [], |row| row.get(0))
        .map_err(|e| bad(path, format!("not a tug store, or corrupt: {e}")))?;
    match application_id {
        0 => {
            let tables: i64 =
                conn.query_row("SELECT COUNT(*) FROM sqlite_schema", [], |row| row.get(0))?;
            if tables > 0 {
                return Err(bad(
                    path,
                    "an SQLite database of another program, not a tug store",
                ));
            }
            create_schema(&conn)?;
        }
        APPLICATION_ID => {}
        other => {
            return Err(bad(
                path,
                format!(
                    "an SQLite database of another program (application_id {other:#x}), not a tug store"
                ),
            ));
        }
    }
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(bad(path, format!("cannot use WAL mode (got {mode})")));
    }
    // FULL: in WAL mode, every commit is fsynced before it returns.
    conn.execute_batch(
        "PRAGMA synchronous = FULL; PRAGMA cache_size = -16384; \
         PRAGMA journal_size_limit = 67108864;",
    )?;
    let schema: Option<i64> = conn
        .query_row(
            "SELECT value FROM tug_meta WHERE name = 'schema_version'",
            [],
            |row| row.get(0),
        )
        .optional()
        .map_err(|e| bad(path, format!("unreadable tug store: {e}")))?;
    if schema != Some(SCHEMA_VERSION) {
        return Err(bad(
            path,
            format!(
                "schema version {schema:?} is not {SCHEMA_VERSION}; is this store from another tug version?"
            ),
        ));
    }
    let (revision, compacted) =
        read_meta(&conn).map_err(|e| bad(path, format!("unreadable tug store: {e}")))?;
    let highest: Option<Revision> =
        conn.query_row("SELECT MAX(revision) FROM tug_log", [], |row| row.get(0))?;
    if highest.unwrap_or(0) > revision || compacted > revision || revision < 0 {
        return Err(bad(
            path,
            format!(
                "revisions are inconsistent: log holds {}, store records {revision} \
                 (compacted at {compacted})",
                highest.unwrap_or(0)
            ),
        ));
    }
    Ok((conn, revision, lock))
}

fn create_schema(conn: &Connection) -> Result<()> {
    conn.execute_batch(&format!(
        "BEGIN;
         CREATE TABLE tug_meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
         INSERT INTO tug_meta VALUES ('schema_version', {SCHEMA_VERSION}), ('revision', 0),
           ('compact_revision', 0);
         CREATE TABLE tug_log (
           revision INTEGER PRIMARY KEY,
           key BLOB NOT NULL,
           deleted INTEGER NOT NULL,
           create_revision INTEGER NOT NULL,
           prev_revision INTEGER NOT NULL,
           version INTEGER NOT NULL,
           expires_at_ms INTEGER,
           value BLOB NOT NULL,
           prev_value BLOB
         );
         CREATE INDEX tug_log_key ON tug_log (key, revision);
         CREATE INDEX tug_log_expiry ON tug_log (expires_at_ms) WHERE expires_at_ms IS NOT NULL;
         PRAGMA application_id = {APPLICATION_ID};
         COMMIT;"
    ))?;
    Ok(())
}

fn open_reader(path: &Path) -> Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(Duration::from_secs(10))?;
    Ok(conn)
}
