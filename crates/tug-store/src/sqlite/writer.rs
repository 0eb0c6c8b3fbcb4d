//! The one writer: a thread that owns the SQLite write connection.
//!
//! It takes every request waiting in its queue (up to [`BATCH_OPS_MAX`]),
//! applies them in one transaction, commits once (one fsync for all of
//! them), then publishes the batch's events to the watchers and only then
//! acknowledges each request. A request is never acknowledged before the
//! commit that holds it is durable.

use std::fs::File;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use bytes::Bytes;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use tokio::sync::{mpsc, oneshot};

use super::Batch;
use super::fanout::FanOutHandle;
use crate::{DeleteResponse, Error, Event, EventKind, KeyValue, Result, Revision};

/// Requests committed together at most. Bounds a commit's latency and the
/// size of one batch of watch events.
pub(super) const BATCH_OPS_MAX: usize = 512;

pub(super) enum WriteOp {
    Create {
        key: String,
        value: Bytes,
        expires_at_ms: Option<i64>,
    },
    Update {
        key: String,
        value: Bytes,
        expected: Revision,
        expires_at_ms: Option<i64>,
    },
    Delete {
        key: String,
        expected: Option<Revision>,
    },
    /// Records that history before `revision` is gone; answers the revision
    /// of the previous compaction, from where [`WriteOp::CompactChunk`]s start.
    CompactStart { revision: Revision },
    /// Deletes the rows that compaction at `compact` no longer needs, among
    /// those superseded by, or deleted at, revisions in `[low, high]`.
    CompactChunk {
        low: Revision,
        high: Revision,
        compact: Revision,
    },
}

pub(super) enum WriteOutcome {
    Put(KeyValue),
    Delete(DeleteResponse),
    CompactStarted { previous: Option<Revision> },
    Done,
}

pub(super) struct WriteRequest {
    pub(super) op: WriteOp,
    pub(super) reply: oneshot::Sender<Result<WriteOutcome>>,
}

/// The latest row of a key.
struct Latest {
    revision: Revision,
    deleted: bool,
    create_revision: Revision,
    version: i64,
    value: Bytes,
}

impl Latest {
    fn to_kv(&self, key: &str) -> KeyValue {
        KeyValue {
            key: key.to_string(),
            value: self.value.clone(),
            create_revision: self.create_revision,
            mod_revision: self.revision,
            version: self.version,
        }
    }
}

pub(super) struct Writer {
    conn: Connection,
    fan_out: FanOutHandle,
    /// Where readers learn the latest revision, stored after publishing.
    published: Arc<AtomicI64>,
    /// The last committed revision.
    revision: Revision,
    /// The database lock, held until the writer stops.
    _lock: File,
}

impl Writer {
    pub(super) fn new(
        conn: Connection,
        fan_out: FanOutHandle,
        published: Arc<AtomicI64>,
        revision: Revision,
        lock: File,
    ) -> Self {
        Self {
            conn,
            fan_out,
            published,
            revision,
            _lock: lock,
        }
    }

    /// Serves requests until every sender is gone.
    pub(super) fn run(mut self, mut requests: mpsc::Receiver<WriteRequest>) {
        let mut batch = Vec::with_capacity(BATCH_OPS_MAX);
        while let Some(first) = requests.blocking_recv() {
            batch.push(first);
            while batch.len() < BATCH_OPS_MAX {
                match requests.try_recv() {
                    Ok(request) => batch.push(request),
                    Err(_) => break,
                }
            }
            self.commit(&mut batch);
        }
        tracing::debug!(revision = self.revision, "store writer stopped");
    }

    fn commit(&mut self, batch: &mut Vec<WriteRequest>) {
        let mut events = Vec::new();
        let outcomes = match self.apply_all(batch, &mut events) {
            Ok((outcomes, revision)) => {
                assert!(
                    revision >= self.revision,
                    "store revision went backwards: {revision} after {}",
                    self.revision
                );
                self.revision = revision;
                // Before any acknowledgement: whoever learns of a write must
                // find the store's revision at or past it.
                self.published.store(revision, Ordering::Release);
                outcomes
            }
            Err(err) => {
                tracing::error!(error = %err, ops = batch.len(), "store commit failed");
                let message = err.to_string();
                events.clear();
                batch
                    .iter()
                    .map(|_| Err(Error::WriteFailed(message.clone())))
                    .collect()
            }
        };
        // Acknowledge first, then wake the watchers: the writers' next
        // requests then queue ahead of the fan-out. A watch started in
        // between replays the commit from the file and skips it live.
        for (request, outcome) in batch.drain(..).zip(outcomes) {
            // The requester may have given up; the write stands regardless.
            let _ = request.reply.send(outcome);
        }
        if !events.is_empty() {
            self.fan_out.publish(Arc::new(Batch {
                revision: self.revision,
                events: events.into(),
            }));
        }
    }

    /// Applies every request in one transaction. The outer error fails the
    /// whole batch (nothing was written); inner errors fail one request.
    #[allow(clippy::type_complexity)]
    fn apply_all(
        &mut self,
        batch: &[WriteRequest],
        events: &mut Vec<Event>,
    ) -> rusqlite::Result<(Vec<Result<WriteOutcome>>, Revision)> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut revision = self.revision;
        let mut outcomes = Vec::with_capacity(batch.len());
        for request in batch {
            outcomes.push(apply(&tx, &request.op, &mut revision, events)?);
        }
        if revision != self.revision {
            tx.prepare_cached("UPDATE tug_meta SET value = ?1 WHERE name = 'revision'")?
                .execute([revision])?;
        }
        tx.commit()?;
        Ok((outcomes, revision))
    }
}

fn latest(conn: &Connection, key: &str) -> rusqlite::Result<Option<Latest>> {
    conn.prepare_cached(
        "SELECT revision, deleted, create_revision, version, value FROM tug_log \
         WHERE key = ?1 ORDER BY revision DESC LIMIT 1",
    )?
    .query_row([key.as_bytes()], |row| {
        Ok(Latest {
            revision: row.get(0)?,
            deleted: row.get(1)?,
            create_revision: row.get(2)?,
            version: row.get(3)?,
            value: Bytes::from(row.get::<_, Vec<u8>>(4)?),
        })
    })
    .optional()
}

struct Row<'a> {
    revision: Revision,
    key: &'a str,
    deleted: bool,
    create_revision: Revision,
    prev_revision: Revision,
    version: i64,
    expires_at_ms: Option<i64>,
    value: &'a [u8],
    prev_value: Option<&'a [u8]>,
}

fn insert(conn: &Connection, row: Row<'_>) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO tug_log (revision, key, deleted, create_revision, prev_revision, version, \
         expires_at_ms, value, prev_value) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?
    .execute(params![
        row.revision,
        row.key.as_bytes(),
        row.deleted,
        row.create_revision,
        row.prev_revision,
        row.version,
        row.expires_at_ms,
        row.value,
        row.prev_value,
    ])?;
    Ok(())
}

fn apply(
    tx: &Connection,
    op: &WriteOp,
    revision: &mut Revision,
    events: &mut Vec<Event>,
) -> rusqlite::Result<Result<WriteOutcome>> {
    match op {
        WriteOp::Create {
            key,
            value,
            expires_at_ms,
        } => {
            let current = latest(tx, key)?;
            if let Some(current) = current.as_ref().filter(|c| !c.deleted) {
                return Ok(Err(Error::AlreadyExists {
                    current: Box::new(current.to_kv(key)),
                }));
            }
            *revision += 1;
            insert(
                tx,
                Row {
                    revision: *revision,
                    key,
                    deleted: false,
                    create_revision: *revision,
                    prev_revision: current.map_or(0, |c| c.revision),
                    version: 1,
                    expires_at_ms: *expires_at_ms,
                    value,
                    prev_value: None,
                },
            )?;
            let kv = KeyValue {
                key: key.clone(),
                value: value.clone(),
                create_revision: *revision,
                mod_revision: *revision,
                version: 1,
            };
            events.push(Event {
                kind: EventKind::Put,
                kv: kv.clone(),
                prev: None,
            });
            Ok(Ok(WriteOutcome::Put(kv)))
        }
        WriteOp::Update {
            key,
            value,
            expected,
            expires_at_ms,
        } => {
            let current = match latest(tx, key)? {
                Some(current) if !current.deleted => current,
                _ => return Ok(Err(Error::NotFound { key: key.clone() })),
            };
            if current.revision != *expected {
                return Ok(Err(conflict(key, *expected, &current)));
            }
            *revision += 1;
            insert(
                tx,
                Row {
                    revision: *revision,
                    key,
                    deleted: false,
                    create_revision: current.create_revision,
                    prev_revision: current.revision,
                    version: current.version + 1,
                    expires_at_ms: *expires_at_ms,
                    value,
                    prev_value: Some(&current.value),
                },
            )?;
            let kv = KeyValue {
                key: key.clone(),
                value: value.clone(),
                create_revision: current.create_revision,
                mod_revision: *revision,
                version: current.version + 1,
            };
            events.push(Event {
                kind: EventKind::Put,
                kv: kv.clone(),
                prev: Some(current.to_kv(key)),
            });
            Ok(Ok(WriteOutcome::Put(kv)))
        }
        WriteOp::Delete { key, expected } => {
            let current = match latest(tx, key)? {
                Some(current) if !current.deleted => current,
                _ => return Ok(Err(Error::NotFound { key: key.clone() })),
            };
            if let Some(expected) = expected.filter(|&e| e != current.revision) {
                return Ok(Err(conflict(key, expected, &current)));
            }
            *revision += 1;
            // A tombstone keeps the deleted value's create revision and
            // version, so that the delete event can carry the previous value.
            insert(
                tx,
                Row {
                    revision: *revision,
                    key,
                    deleted: true,
                    create_revision: current.create_revision,
                    prev_revision: current.revision,
                    version: current.version,
                    expires_at_ms: None,
                    value: &[],
                    prev_value: Some(&current.value),
                },
            )?;
            let prev = current.to_kv(key);
            events.push(Event {
                kind: EventKind::Delete,
                kv: tombstone_kv(key, *revision),
                prev: Some(prev.clone()),
            });
            Ok(Ok(WriteOutcome::Delete(DeleteResponse {
                revision: *revision,
                prev,
            })))
        }
        WriteOp::CompactStart { revision: compact } => {
            let previous: Revision = tx
                .prepare_cached("SELECT value FROM tug_meta WHERE name = 'compact_revision'")?
                .query_row([], |row| row.get(0))?;
            if *compact <= previous {
                return Ok(Ok(WriteOutcome::CompactStarted { previous: None }));
            }
            if *compact > *revision {
                return Ok(Err(Error::FutureRevision {
                    requested: *compact,
                    current: *revision,
                }));
            }
            tx.prepare_cached("UPDATE tug_meta SET value = ?1 WHERE name = 'compact_revision'")?
                .execute([compact])?;
            Ok(Ok(WriteOutcome::CompactStarted {
                previous: Some(previous),
            }))
        }
        WriteOp::CompactChunk { low, high, compact } => {
            // Rows superseded by a later row at or below the compaction
            // revision: nobody can read them any more.
            tx.prepare_cached(
                "DELETE FROM tug_log WHERE revision < ?3 AND revision IN \
                 (SELECT prev_revision FROM tug_log WHERE revision > ?1 AND revision <= ?2 \
                 AND prev_revision > 0)",
            )?
            .execute(params![low, high, compact])?;
            // Tombstones below the compaction revision: the key is gone at
            // every revision that can still be read.
            tx.prepare_cached(
                "DELETE FROM tug_log WHERE revision >= ?1 AND revision <= ?2 AND revision < ?3 \
                 AND deleted = 1",
            )?
            .execute(params![low, high, compact])?;
            Ok(Ok(WriteOutcome::Done))
        }
    }
}

fn conflict(key: &str, expected: Revision, current: &Latest) -> Error {
    Error::Conflict {
        key: key.to_string(),
        expected,
        current: Some(Box::new(current.to_kv(key))),
    }
}

/// The key-value a delete event carries, as etcd's: the key and the
/// revision of the delete.
pub(super) fn tombstone_kv(key: &str, revision: Revision) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Bytes::new(),
        create_revision: 0,
        mod_revision: revision,
        version: 0,
    }
}
