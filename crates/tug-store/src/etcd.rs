//! The etcd backend: tug's [`Store`] mapped onto a real etcd cluster.
//!
//! Revisions, compare-and-swap, watches and compaction are etcd's own;
//! this module only translates. Creates compare the key's create revision
//! with 0, updates and deletes compare its mod revision, and the losing
//! branch of each transaction reads the key so that the caller learns the
//! current value in the same round trip, as kube-apiserver does. Keys with
//! a time to live share etcd leases granted for a short reuse window, so a
//! burst of Events does not grant one lease each.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, GetOptions, Identity, TlsOptions, Txn,
    TxnOp, TxnOpResponse, WatchResponseStream,
};

use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::watch::Mailbox;
use crate::{
    DeleteResponse, Error, Event, EventKind, GetResponse, KeyValue, PutOptions, RangeRequest,
    RangeResponse, Result, Revision, Store, Watch, WatchMessage, WatchOptions, check_key,
    check_value, prefix_end,
};

/// Every unary call to etcd gives up after this long.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest etcd reply read, as kube-apiserver's (gRPC's default of
/// 4 MiB is less than a page of large objects).
const REPLY_BYTES_MAX: usize = i32::MAX as usize;
/// Keys per etcd reply when a range asks for everything.
const UNLIMITED_RANGE_PAGE: usize = 1000;

#[derive(Clone, Debug, Default)]
pub struct Config {
    /// `http://host:2379` or `https://host:2379`, one per member.
    pub endpoints: Vec<String>,
    /// The CA that signed etcd's serving certificate (PEM).
    pub ca_file: Option<PathBuf>,
    /// A client certificate and its key (PEM), for etcd's client authentication.
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
}

impl Config {
    /// Parses `--datastore-endpoint`'s comma-separated list.
    pub fn from_endpoints(list: &str) -> Result<Self> {
        let endpoints: Vec<String> = list
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .map(str::to_string)
            .collect();
        if endpoints.is_empty() {
            return Err(Error::Config("no etcd endpoint given".into()));
        }
        for endpoint in &endpoints {
            if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
                return Err(Error::Config(format!(
                    "etcd endpoint {endpoint:?} must start with http:// or https://"
                )));
            }
        }
        Ok(Self {
            endpoints,
            ..Self::default()
        })
    }
}

pub struct EtcdStore {
    client: Client,
    leases: Mutex<Option<CachedLease>>,
}

struct CachedLease {
    id: i64,
    expires: Instant,
}

async fn timed<T>(call: impl Future<Output = Result<T, etcd_client::Error>>) -> Result<T> {
    match tokio::time::timeout(REQUEST_TIMEOUT, call).await {
        Ok(result) => result.map_err(from_etcd),
        Err(_) => Err(Error::Io(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("etcd did not answer within {REQUEST_TIMEOUT:?}"),
        ))),
    }
}

/// Turns etcd's own errors into the store's, so callers see one vocabulary.
fn from_etcd(err: etcd_client::Error) -> Error {
    if let etcd_client::Error::GRpcStatus(status) = &err {
        let message = status.message();
        if message.contains("required revision has been compacted") {
            return Error::Compacted { requested: 0 };
        }
        if message.contains("required revision is a future revision") {
            return Error::FutureRevision {
                requested: 0,
                current: 0,
            };
        }
    }
    Error::Etcd(err)
}

fn with_revision(err: Error, requested: Revision) -> Error {
    match err {
        Error::Compacted { .. } => Error::Compacted { requested },
        Error::FutureRevision { current, .. } => Error::FutureRevision { requested, current },
        other => other,
    }
}

fn to_kv(kv: &etcd_client::KeyValue) -> Result<KeyValue> {
    Ok(KeyValue {
        key: kv.key_str().map_err(from_etcd)?.to_string(),
        value: Bytes::copy_from_slice(kv.value()),
        create_revision: kv.create_revision(),
        mod_revision: kv.mod_revision(),
        version: kv.version(),
    })
}

fn header_revision(header: Option<&etcd_client::ResponseHeader>) -> Revision {
    header.map_or(0, |h| h.revision())
}

/// The value a failed transaction read in its `or_else` branch.
fn read_back(response: &etcd_client::TxnResponse) -> Result<Option<KeyValue>> {
    for op in response.op_responses() {
        if let TxnOpResponse::Get(get) = op {
            return get.kvs().first().map(to_kv).transpose();
        }
    }
    Ok(None)
}

impl EtcdStore {
    /// Connects to the cluster and checks that it answers.
    pub async fn connect(config: Config) -> Result<Self> {
        if config.endpoints.is_empty() {
            return Err(Error::Config("no etcd endpoint given".into()));
        }
        let mut options = ConnectOptions::new()
            .with_connect_timeout(CONNECT_TIMEOUT)
            .with_keep_alive(Duration::from_secs(30), Duration::from_secs(10));
        if config.ca_file.is_some() || config.cert_file.is_some() {
            let mut tls = TlsOptions::new();
            if let Some(ca) = &config.ca_file {
                tls = tls.ca_certificate(Certificate::from_pem(read(ca)?));
            }
            match (&config.cert_file, &config.key_file) {
                (Some(cert), Some(key)) => {
                    tls = tls.identity(Identity::from_pem(read(cert)?, read(key)?));
                }
                (None, None) => {}
                _ => {
                    return Err(Error::Config(
                        "an etcd client certificate needs both a cert file and a key file".into(),
                    ));
                }
            }
            options = options.with_tls(tls);
        }
        let client = timed(Client::connect(&config.endpoints, Some(options))).await?;
        let store = Self {
            client,
            leases: Mutex::new(None),
        };
        let revision = store.current_revision().await.map_err(|e| {
            Error::Config(format!(
                "cannot reach etcd at {}: {e}",
                config.endpoints.join(",")
            ))
        })?;
        tracing::info!(endpoints = %config.endpoints.join(","), revision, "connected to etcd");
        Ok(store)
    }

    /// A lease that outlives `ttl` by at most a little, reused while it fits.
    async fn lease_for(&self, ttl: Duration) -> Result<i64> {
        let ttl_secs = ttl.as_secs().max(1) + u64::from(ttl.subsec_nanos() > 0);
        let slack = Duration::from_secs((ttl_secs / 20).max(1));
        let wanted = Instant::now() + Duration::from_secs(ttl_secs);
        if let Some(lease) = self
            .leases
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .filter(|l| l.expires >= wanted && l.expires <= wanted + slack)
        {
            return Ok(lease.id);
        }
        let granted_secs = ttl_secs + slack.as_secs();
        let response = timed(self.client.lease_client().grant(granted_secs as i64, None)).await?;
        let lease = CachedLease {
            id: response.id(),
            expires: Instant::now() + Duration::from_secs(granted_secs),
        };
        let id = lease.id;
        *self.leases.lock().unwrap_or_else(|e| e.into_inner()) = Some(lease);
        Ok(id)
    }

    async fn put_options(&self, options: PutOptions) -> Result<etcd_client::PutOptions> {
        let put = etcd_client::PutOptions::new().with_prev_key();
        Ok(match options.ttl {
            Some(ttl) => put.with_lease(self.lease_for(ttl).await?),
            None => put,
        })
    }
}

fn read(path: &PathBuf) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| Error::Config(format!("cannot read {}: {e}", path.display())))
}

impl EtcdStore {
    /// A KV client that takes replies as large as etcd sends them.
    fn kv(&self) -> etcd_client::KvClient {
        self.client
            .kv_client()
            .max_decoding_message_size(REPLY_BYTES_MAX)
    }

    /// One range request as etcd answers it.
    async fn range_page(&self, request: &RangeRequest) -> Result<RangeResponse> {
        let prefix = request.prefix.as_bytes();
        let start = match &request.start_key {
            Some(start) if start.as_bytes() > prefix => start.as_bytes().to_vec(),
            _ if prefix.is_empty() => vec![0],
            _ => prefix.to_vec(),
        };
        // A range end of "\0" means every key from the start on.
        let end = prefix_end(prefix).unwrap_or_else(|| vec![0]);
        let options = GetOptions::new()
            .with_range(end)
            .with_limit(request.limit as i64)
            .with_revision(request.revision.unwrap_or(0));
        let response = timed(self.kv().get(start, Some(options)))
            .await
            .map_err(|e| with_revision(e, request.revision.unwrap_or(0)))?;
        Ok(RangeResponse {
            kvs: response.kvs().iter().map(to_kv).collect::<Result<_>>()?,
            revision: request
                .revision
                .unwrap_or_else(|| header_revision(response.header())),
            more: response.more(),
        })
    }
}

#[async_trait]
impl Store for EtcdStore {
    async fn create(&self, key: &str, value: Bytes, options: PutOptions) -> Result<KeyValue> {
        check_key(key)?;
        check_value(key, &value)?;
        let txn = Txn::new()
            .when([Compare::create_revision(key, CompareOp::Equal, 0)])
            .and_then([TxnOp::put(
                key,
                value.to_vec(),
                Some(self.put_options(options).await?),
            )])
            .or_else([TxnOp::get(key, None)]);
        let response = timed(self.kv().txn(txn)).await?;
        if !response.succeeded() {
            return match read_back(&response)? {
                Some(current) => Err(Error::AlreadyExists {
                    current: Box::new(current),
                }),
                // Deleted again between the compare and the read.
                None => Err(Error::Conflict {
                    key: key.to_string(),
                    expected: 0,
                    current: None,
                }),
            };
        }
        let revision = header_revision(response.header());
        Ok(KeyValue {
            key: key.to_string(),
            value,
            create_revision: revision,
            mod_revision: revision,
            version: 1,
        })
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
        let txn = Txn::new()
            .when([
                Compare::version(key, CompareOp::Greater, 0),
                Compare::mod_revision(key, CompareOp::Equal, expected),
            ])
            .and_then([TxnOp::put(
                key,
                value.to_vec(),
                Some(self.put_options(options).await?),
            )])
            .or_else([TxnOp::get(key, None)]);
        let response = timed(self.kv().txn(txn)).await?;
        if !response.succeeded() {
            return Err(match read_back(&response)? {
                Some(current) => Error::Conflict {
                    key: key.to_string(),
                    expected,
                    current: Some(Box::new(current)),
                },
                None => Error::NotFound {
                    key: key.to_string(),
                },
            });
        }
        let revision = header_revision(response.header());
        let prev = response.op_responses().into_iter().find_map(|op| match op {
            TxnOpResponse::Put(put) => put.prev_key().cloned(),
            _ => None,
        });
        let (create_revision, version) =
            prev.map_or((revision, 1), |p| (p.create_revision(), p.version() + 1));
        Ok(KeyValue {
            key: key.to_string(),
            value,
            create_revision,
            mod_revision: revision,
            version,
        })
    }

    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<DeleteResponse> {
        check_key(key)?;
        let mut compares = vec![Compare::version(key, CompareOp::Greater, 0)];
        if let Some(expected) = expected {
            compares.push(Compare::mod_revision(key, CompareOp::Equal, expected));
        }
        let txn = Txn::new()
            .when(compares)
            .and_then([TxnOp::delete(
                key,
                Some(etcd_client::DeleteOptions::new().with_prev_key()),
            )])
            .or_else([TxnOp::get(key, None)]);
        let response = timed(self.kv().txn(txn)).await?;
        if !response.succeeded() {
            return Err(match read_back(&response)? {
                Some(current) => Error::Conflict {
                    key: key.to_string(),
                    expected: expected.unwrap_or(0),
                    current: Some(Box::new(current)),
                },
                None => Error::NotFound {
                    key: key.to_string(),
                },
            });
        }
        let prev = response
            .op_responses()
            .into_iter()
            .find_map(|op| match op {
                TxnOpResponse::Delete(delete) => delete.prev_kvs().first().cloned(),
                _ => None,
            })
            .ok_or_else(|| Error::NotFound {
                key: key.to_string(),
            })?;
        Ok(DeleteResponse {
            revision: header_revision(response.header()),
            prev: to_kv(&prev)?,
        })
    }

    async fn get(&self, key: &str, revision: Option<Revision>) -> Result<GetResponse> {
        check_key(key)?;
        let options = GetOptions::new().with_revision(revision.unwrap_or(0));
        let response = timed(self.kv().get(key, Some(options)))
            .await
            .map_err(|e| with_revision(e, revision.unwrap_or(0)))?;
        Ok(GetResponse {
            kv: response.kvs().first().map(to_kv).transpose()?,
            revision: revision.unwrap_or_else(|| header_revision(response.header())),
        })
    }

    async fn range(&self, mut request: RangeRequest) -> Result<RangeResponse> {
        if request.limit != 0 {
            return self.range_page(&request).await;
        }
        // Everything, read in pages at one revision: one reply may not
        // exceed gRPC's message limit.
        request.limit = UNLIMITED_RANGE_PAGE;
        let mut all = self.range_page(&request).await?;
        request.revision = Some(all.revision);
        while all.more {
            request.start_key = all.next_key();
            let page = self.range_page(&request).await?;
            all.kvs.extend(page.kvs);
            all.more = page.more;
        }
        Ok(all)
    }

    async fn count(&self, prefix: &str) -> Result<i64> {
        let start = if prefix.is_empty() {
            vec![0]
        } else {
            prefix.as_bytes().to_vec()
        };
        let end = prefix_end(prefix.as_bytes()).unwrap_or_else(|| vec![0]);
        let options = GetOptions::new().with_range(end).with_count_only();
        let response = timed(self.kv().get(start, Some(options))).await?;
        Ok(response.count())
    }

    async fn watch(&self, prefix: &str, after: Revision, options: WatchOptions) -> Result<Watch> {
        let key = if prefix.is_empty() {
            vec![0]
        } else {
            prefix.as_bytes().to_vec()
        };
        let end = prefix_end(prefix.as_bytes()).unwrap_or_else(|| vec![0]);
        let mut etcd_options = etcd_client::WatchOptions::new()
            .with_range(end.clone())
            .with_start_revision(after + 1)
            .with_prev_key();
        if options.progress_interval.is_some() {
            etcd_options = etcd_options.with_progress_notify();
        }
        // etcd reports a watch from a compacted revision only after it has
        // created it; a read at that revision tells straight away.
        let probe = GetOptions::new().with_revision(after + 1).with_count_only();
        match timed(self.kv().get("/", Some(probe))).await {
            Err(Error::Compacted { .. }) => {
                return Err(Error::Compacted {
                    requested: after + 1,
                });
            }
            Ok(_) | Err(Error::FutureRevision { .. }) => {}
            Err(err) => return Err(err),
        }
        let stream = timed(
            self.client
                .watch_client()
                .max_decoding_message_size(REPLY_BYTES_MAX)
                .watch(key.clone(), Some(etcd_options)),
        )
        .await?;
        let (requests, mut responses) = stream.split();
        // Wait for etcd's first answer: created, or cancelled if history
        // was compacted meanwhile.
        let first = timed(responses.message()).await?.ok_or(Error::Closed)?;
        if first.canceled() {
            return Err(cancelled(&first, after));
        }
        let mailbox = Arc::new(Mailbox::default());
        let (progress, progress_requests) = mpsc::channel(1);
        let stop = CancellationToken::new();
        let feed = Feed {
            mailbox: mailbox.clone(),
            progress_requests,
            stop: stop.clone(),
        };
        let mut range = Range {
            key,
            end,
            kv: self.kv(),
            keys: None,
        };
        // Revision 0 would mean "now" to etcd: nothing existed before 1.
        range.keys = if after <= 0 {
            Some(0)
        } else {
            range.count(after).await.ok()
        };
        tokio::spawn(run_watch(requests, responses, feed, options, after, range));
        Ok(Watch::new(
            mailbox,
            Box::new(move || {
                let _ = progress.try_send(());
            }),
            Some(Box::new(stop.drop_guard())),
        ))
    }

    async fn compact(&self, revision: Revision) -> Result<()> {
        match timed(self.kv().compact(revision, None)).await {
            Ok(_) | Err(Error::Compacted { .. }) => Ok(()),
            Err(err) => Err(with_revision(err, revision)),
        }
    }

    async fn current_revision(&self) -> Result<Revision> {
        let options = GetOptions::new().with_count_only();
        let response = timed(self.kv().get("/", Some(options))).await?;
        Ok(header_revision(response.header()))
    }

    async fn db_size(&self) -> Result<u64> {
        let status = timed(self.client.maintenance_client().status()).await?;
        Ok(status.db_size().max(0) as u64)
    }
}

fn cancelled(response: &etcd_client::WatchResponse, last: Revision) -> Error {
    if response.compact_revision() > 0 {
        Error::Compacted {
            requested: last + 1,
        }
    } else {
        Error::Etcd(etcd_client::Error::WatchError(format!(
            "watch cancelled by etcd: {}",
            response.cancel_reason()
        )))
    }
}

fn to_event(event: &etcd_client::Event) -> Result<Event> {
    let kv = event
        .kv()
        .ok_or_else(|| Error::Etcd(etcd_client::Error::WatchError("event without a key".into())))?;
    let kind = match event.event_type() {
        etcd_client::EventType::Put => EventKind::Put,
        etcd_client::EventType::Delete => EventKind::Delete,
    };
    let prev = match (kind, event.prev_kv()) {
        // etcd attaches the previous value to a create after a delete too.
        (EventKind::Put, _) if kv.create_revision() == kv.mod_revision() => None,
        (_, prev) => prev.map(to_kv).transpose()?,
    };
    Ok(Event {
        kind,
        kv: to_kv(kv)?,
        prev,
    })
}

/// What a watch needs to check a progress revision: its range, a client,
/// and how many keys the range holds as of the last event seen (`None`
/// when that could not be read).
struct Range {
    key: Vec<u8>,
    end: Vec<u8>,
    kv: etcd_client::KvClient,
    keys: Option<i64>,
}

impl Range {
    /// How many keys the range holds at `revision`.
    async fn count(&self, revision: Revision) -> Result<i64> {
        let mut kv = self.kv.clone();
        let options = GetOptions::new()
            .with_range(self.end.clone())
            .with_count_only()
            .with_revision(revision);
        timed(kv.get(self.key.clone(), Some(options)))
            .await
            .map(|r| r.count())
    }

    /// The highest mod revision among the range's keys at `revision` (0
    /// when it is empty). etcd applies no revision filter to a count, so
    /// this asks for the one key last written, sorted by etcd.
    async fn last_written(&self, revision: Revision) -> Result<Revision> {
        let mut kv = self.kv.clone();
        let options = GetOptions::new()
            .with_range(self.end.clone())
            .with_keys_only()
            .with_sort(
                etcd_client::SortTarget::Mod,
                etcd_client::SortOrder::Descend,
            )
            .with_limit(1)
            .with_revision(revision);
        timed(kv.get(self.key.clone(), Some(options)))
            .await
            .map(|r| r.kvs().first().map_or(0, |kv| kv.mod_revision()))
    }

    /// Follows the number of keys through the events seen.
    fn apply(&mut self, events: &[Event]) {
        if let Some(keys) = self.keys.as_mut() {
            for event in events {
                match event.kind {
                    EventKind::Put if event.kv.create_revision == event.kv.mod_revision => {
                        *keys += 1
                    }
                    EventKind::Delete => *keys -= 1,
                    EventKind::Put => {}
                }
            }
        }
    }

    /// Whether nothing in the range changed after `last` up to
    /// `revision`: no key written after `last`, and as many keys as after
    /// `last` (a deletion lowers the count; a deletion and a creation show
    /// as a write). `false` when it cannot tell.
    async fn quiet_between(&self, last: Revision, revision: Revision) -> bool {
        let Some(keys) = self.keys else {
            return false;
        };
        matches!(
            (self.last_written(revision).await, self.count(revision).await),
            (Ok(written), Ok(now)) if written <= last && now == keys
        )
    }
}

async fn run_watch(
    mut requests: etcd_client::WatchRequestSender,
    mut responses: WatchResponseStream,
    mut feed: Feed,
    options: WatchOptions,
    mut last: Revision,
    mut range: Range,
) {
    let interval = options.progress_interval.unwrap_or(Duration::MAX);
    let mut quiet_since = tokio::time::Instant::now();
    let result: Result<()> = async {
        loop {
            let due = quiet_since
                .checked_add(interval)
                .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(86400 * 365));
            tokio::select! {
                _ = feed.stop.cancelled() => return Ok(()),
                Some(()) = feed.progress_requests.recv() => {
                    requests.request_progress().await.map_err(from_etcd)?;
                }
                _ = tokio::time::sleep_until(due) => {
                    requests.request_progress().await.map_err(from_etcd)?;
                    quiet_since = tokio::time::Instant::now();
                }
                response = responses.message() => {
                    let response = response.map_err(from_etcd)?.ok_or(Error::Closed)?;
                    if response.canceled() {
                        return Err(cancelled(&response, last));
                    }
                    let message = if response.events().is_empty() {
                        // etcd before 3.4.25 and 3.5.8 (Debian 12 ships
                        // 3.4.23) may answer a progress request while
                        // this watch still has history to send, with a
                        // revision past it (etcd-io/etcd#15220): trusted,
                        // that revision would skip those events. So a
                        // revision past the last event counts only once
                        // a read shows nothing changed in between.
                        let revision = header_revision(response.header());
                        if revision > last && !range.quiet_between(last, revision).await {
                            continue;
                        }
                        WatchMessage::Progress(revision.max(last))
                    } else {
                        let events = response
                            .events()
                            .iter()
                            .map(to_event)
                            .collect::<Result<Vec<_>>>()?;
                        last = events.last().map_or(last, Event::revision);
                        range.apply(&events);
                        WatchMessage::Events(events.into())
                    };
                    feed.mailbox.send(message).await.map_err(|()| Error::Closed)?;
                    quiet_since = tokio::time::Instant::now();
                }
            }
        }
    }
    .await;
    if let Err(err) = result {
        feed.mailbox.end(err);
    }
}

/// The task's side of a [`Watch`].
struct Feed {
    mailbox: Arc<Mailbox>,
    progress_requests: mpsc::Receiver<()>,
    stop: CancellationToken,
}
