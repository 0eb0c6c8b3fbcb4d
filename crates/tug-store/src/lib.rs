//! tug's store: a revisioned key-value store with etcd v3's semantics.
//!
//! Everything tug knows about the cluster lives here, as everything
//! Kubernetes knows lives in etcd. This crate knows nothing about Kubernetes
//! objects: keys are byte strings such as `/registry/pods/default/web`,
//! values are opaque bytes.
//!
//! Start reading at [`Store`], the one trait every backend implements:
//! - [`sqlite::SqliteStore`], the default: one SQLite file holding an
//!   append-only log of revisions (in the manner of k3s's kine), written by
//!   one writer thread that commits concurrent writes together (group commit)
//!   and feeds watchers after each durable commit;
//! - [`etcd::EtcdStore`], for clusters: a thin mapping onto a real etcd's own
//!   revisions, transactions, watches, leases and compaction.
//!
//! [`open`] picks the backend from a [`Config`]; [`compactor`] runs the
//! periodic compaction that kube-apiserver runs against etcd.
//!
//! Invariants, checked where they can break:
//! - the global revision only grows: every write gets a revision above every
//!   earlier one, checked by the writer and again when the log is read;
//! - a write is acknowledged only after it is durable;
//! - a watch delivers every change after its start revision, in order, none
//!   twice, or ends with an error that says from where to resume.

pub mod compactor;
pub mod etcd;
pub mod sqlite;
mod watch;

use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
pub use bytes::Bytes;

pub use watch::Watch;

/// A global revision of the store. Revisions start at 1; 0 means "none".
pub type Revision = i64;

/// The largest value the store accepts, as etcd's default request limit.
pub const VALUE_BYTES_MAX: usize = 1536 * 1024;

/// The largest key the store accepts.
pub const KEY_BYTES_MAX: usize = 8 * 1024;

/// One key as stored at one revision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: Bytes,
    /// The revision that created this incarnation of the key.
    pub create_revision: Revision,
    /// The revision of the write that produced this value.
    pub mod_revision: Revision,
    /// Writes to this incarnation of the key, starting at 1 on create.
    pub version: i64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// A create or an update; a create has `kv.create_revision == kv.mod_revision`.
    Put,
    Delete,
}

/// One change, as a watch delivers it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub kind: EventKind,
    /// For a put, the new value. For a delete, the key with an empty value,
    /// and `mod_revision` the revision of the delete.
    pub kv: KeyValue,
    /// The value before this change: on every update and delete, never on a create.
    pub prev: Option<KeyValue>,
}

impl Event {
    pub fn revision(&self) -> Revision {
        self.kv.mod_revision
    }
}

/// Changes delivered together, in revision order.
///
/// Cheap to clone and to fan out: the events of one commit are shared by
/// every watcher that sees all of them, not copied per watcher.
#[derive(Clone, Debug, Default)]
pub struct Events {
    chunks: Vec<Chunk>,
}

#[derive(Clone, Debug)]
enum Chunk {
    Shared(std::sync::Arc<[Event]>),
    Owned(Vec<Event>),
}

impl Chunk {
    fn as_slice(&self) -> &[Event] {
        match self {
            Chunk::Shared(events) => events,
            Chunk::Owned(events) => events,
        }
    }
}

impl Events {
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = &Event> {
        self.chunks.iter().flat_map(Chunk::as_slice)
    }

    pub fn len(&self) -> usize {
        self.chunks.iter().map(|c| c.as_slice().len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.chunks.iter().all(|c| c.as_slice().is_empty())
    }

    pub fn first(&self) -> Option<&Event> {
        self.iter().next()
    }

    pub fn last(&self) -> Option<&Event> {
        self.iter().next_back()
    }

    pub fn to_vec(&self) -> Vec<Event> {
        self.iter().cloned().collect()
    }

    /// Adds `more` after these events.
    pub(crate) fn append(&mut self, more: Events) {
        self.chunks.extend(more.chunks);
    }

    pub(crate) fn chunk_count(&self) -> usize {
        self.chunks.len()
    }

    pub(crate) fn push_shared(&mut self, events: std::sync::Arc<[Event]>) {
        if !events.is_empty() {
            self.chunks.push(Chunk::Shared(events));
        }
    }

    pub(crate) fn push_owned(&mut self, events: Vec<Event>) {
        if !events.is_empty() {
            self.chunks.push(Chunk::Owned(events));
        }
    }
}

impl From<Vec<Event>> for Events {
    fn from(events: Vec<Event>) -> Self {
        let mut list = Events::default();
        list.push_owned(events);
        list
    }
}

impl PartialEq for Events {
    fn eq(&self, other: &Self) -> bool {
        self.iter().eq(other.iter())
    }
}

impl Eq for Events {}

impl IntoIterator for Events {
    type Item = Event;
    type IntoIter = std::vec::IntoIter<Event>;

    fn into_iter(self) -> Self::IntoIter {
        self.to_vec().into_iter()
    }
}

/// What a watch yields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WatchMessage {
    /// Changes in revision order. A revision is never split across messages.
    Events(Events),
    /// Every change up to and including this revision has been delivered.
    Progress(Revision),
}

#[derive(Clone, Copy, Debug, Default)]
pub struct PutOptions {
    /// The key is deleted once this time has passed after the write (a lease).
    pub ttl: Option<Duration>,
}

#[derive(Clone, Copy, Debug, Default)]
pub struct WatchOptions {
    /// Send [`WatchMessage::Progress`] at about this interval while no
    /// change for this watch arrives.
    pub progress_interval: Option<Duration>,
}

/// A read of a key range: every key that starts with `prefix`, from
/// `start_key` on (inclusive), at most `limit` of them, at `revision`.
#[derive(Clone, Debug, Default)]
pub struct RangeRequest {
    pub prefix: String,
    /// Continue a paginated read: the key after the last one received
    /// (see [`RangeResponse::next_key`]).
    pub start_key: Option<String>,
    /// 0 means no limit.
    pub limit: usize,
    /// Read at this revision; `None` reads the latest. A paginated read passes
    /// the first page's [`RangeResponse::revision`] to every later page.
    pub revision: Option<Revision>,
}

#[derive(Clone, Debug)]
pub struct RangeResponse {
    pub kvs: Vec<KeyValue>,
    /// The revision the read was served at.
    pub revision: Revision,
    /// More keys follow: continue from [`RangeResponse::next_key`].
    pub more: bool,
}

impl RangeResponse {
    /// Where the next page starts, if there is one.
    pub fn next_key(&self) -> Option<String> {
        if !self.more {
            return None;
        }
        self.kvs.last().map(|kv| format!("{}\0", kv.key))
    }
}

#[derive(Clone, Debug)]
pub struct GetResponse {
    pub kv: Option<KeyValue>,
    /// The revision the read was served at.
    pub revision: Revision,
}

#[derive(Clone, Debug)]
pub struct DeleteResponse {
    /// The revision of the delete.
    pub revision: Revision,
    /// The value that was deleted.
    pub prev: KeyValue,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("key {:?} already exists", .current.key)]
    AlreadyExists { current: Box<KeyValue> },
    #[error("key {key:?} not found")]
    NotFound { key: String },
    /// A compare-and-swap lost: the key is no longer at the expected revision.
    #[error("key {key:?} was modified: expected mod revision {expected}, found {}", .current.as_ref().map_or(0, |kv| kv.mod_revision))]
    Conflict {
        key: String,
        expected: Revision,
        /// The key's current value, or `None` if it was deleted.
        current: Option<Box<KeyValue>>,
    },
    #[error("revision {requested} has been compacted")]
    Compacted { requested: Revision },
    #[error("revision {requested} is in the future (current revision is {current})")]
    FutureRevision {
        requested: Revision,
        current: Revision,
    },
    #[error("value for key {key:?} is {size} bytes, over the limit of {VALUE_BYTES_MAX} bytes")]
    ValueTooLarge { key: String, size: usize },
    #[error("invalid key {key:?}: {reason}")]
    InvalidKey { key: String, reason: &'static str },
    /// The watcher fell too far behind the writers and was closed; watch
    /// again from `last_revision` to resume without a gap.
    #[error("watch fell too far behind and was closed; resume from revision {last_revision}")]
    WatchTooSlow { last_revision: Revision },
    #[error("too many watches: the store serves at most {max} at once")]
    TooManyWatches { max: usize },
    #[error("database {}: {reason}", .path.display())]
    BadDatabase { path: PathBuf, reason: String },
    #[error("store is closed")]
    Closed,
    /// The store could not write; nothing of the request was applied.
    #[error("write failed and was not applied: {0}")]
    WriteFailed(String),
    #[error("invalid store configuration: {0}")]
    Config(String),
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("etcd: {0}")]
    Etcd(#[from] etcd_client::Error),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A revisioned key-value store with etcd v3 semantics.
///
/// Every write gets a new global revision and is acknowledged only once it
/// is durable. All methods are cancel safe in the sense that dropping a
/// future never corrupts the store, but a write whose future is dropped may
/// or may not have been applied.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Creates `key`; fails with [`Error::AlreadyExists`] if it exists.
    async fn create(&self, key: &str, value: Bytes, options: PutOptions) -> Result<KeyValue>;

    /// Replaces `key`'s value if its mod revision is still `expected`;
    /// otherwise fails with [`Error::Conflict`] carrying the current value,
    /// or [`Error::NotFound`].
    async fn update(
        &self,
        key: &str,
        value: Bytes,
        expected: Revision,
        options: PutOptions,
    ) -> Result<KeyValue>;

    /// Deletes `key`, if given only while its mod revision is still `expected`.
    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<DeleteResponse>;

    /// Reads one key, at the latest revision or at `revision`.
    async fn get(&self, key: &str, revision: Option<Revision>) -> Result<GetResponse>;

    /// Reads keys in order; see [`RangeRequest`].
    async fn range(&self, request: RangeRequest) -> Result<RangeResponse>;

    /// Counts the keys that start with `prefix`, at the latest revision.
    async fn count(&self, prefix: &str) -> Result<i64>;

    /// Watches every key that starts with `prefix`: every change with a
    /// revision above `after`, in order. Fails with [`Error::Compacted`] if
    /// that history is gone.
    async fn watch(&self, prefix: &str, after: Revision, options: WatchOptions) -> Result<Watch>;

    /// Forgets history before `revision`: reads and watches of older
    /// revisions fail with [`Error::Compacted`] from now on. Compacting at or
    /// below an earlier compaction does nothing.
    async fn compact(&self, revision: Revision) -> Result<()>;

    /// The latest revision.
    async fn current_revision(&self) -> Result<Revision>;

    /// The size of the database on disk, in bytes.
    async fn db_size(&self) -> Result<u64>;
}

/// Which backend to open, and where.
#[derive(Clone, Debug)]
pub enum Config {
    Sqlite(sqlite::Config),
    Etcd(etcd::Config),
}

/// Opens the configured backend.
pub async fn open(config: Config) -> Result<std::sync::Arc<dyn Store>> {
    Ok(match config {
        Config::Sqlite(config) => std::sync::Arc::new(sqlite::SqliteStore::open(config).await?),
        Config::Etcd(config) => std::sync::Arc::new(etcd::EtcdStore::connect(config).await?),
    })
}

pub(crate) fn check_key(key: &str) -> Result<()> {
    let reason = if key.is_empty() {
        "must not be empty"
    } else if key.len() > KEY_BYTES_MAX {
        "longer than 8192 bytes"
    } else {
        return Ok(());
    };
    Err(Error::InvalidKey {
        key: key.chars().take(100).collect(),
        reason,
    })
}

pub(crate) fn check_value(key: &str, value: &[u8]) -> Result<()> {
    if value.len() > VALUE_BYTES_MAX {
        return Err(Error::ValueTooLarge {
            key: key.to_string(),
            size: value.len(),
        });
    }
    Ok(())
}

/// The smallest key greater than every key that starts with `prefix`, or
/// `None` when there is none (an empty prefix, or one of all 0xff bytes).
pub(crate) fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_increments_the_last_byte_that_can_grow() {
        assert_eq!(prefix_end(b"/a/"), Some(b"/a0".to_vec()));
        assert_eq!(prefix_end(b"a\xff"), Some(b"b".to_vec()));
        assert_eq!(prefix_end(b"\xff\xff"), None);
        assert_eq!(prefix_end(b""), None);
    }

    #[test]
    fn next_key_continues_just_after_the_last_key() {
        let kv = KeyValue {
            key: "/a/x".into(),
            value: Bytes::new(),
            create_revision: 1,
            mod_revision: 1,
            version: 1,
        };
        let mut response = RangeResponse {
            kvs: vec![kv],
            revision: 1,
            more: true,
        };
        assert_eq!(response.next_key().as_deref(), Some("/a/x\0"));
        response.more = false;
        assert_eq!(response.next_key(), None);
    }
}
