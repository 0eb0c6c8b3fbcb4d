//! The watch cache: per resource, the current objects and recent changes,
//! kept by one store watch, from which lists and watches are served.
//!
//! Each change is decoded once, when the cache applies it: the object is
//! encoded as clients see it (kind, apiVersion, resourceVersion) into
//! shared bytes, with its labels and selectable fields beside it. A list
//! concatenates those bytes; a watcher filters on the labels and fields and
//! writes the bytes out, so a thousand watchers cost a thousand filters,
//! not a thousand decodes.
//!
//! A cache starts when its resource is first listed or watched. Watchers
//! get changes through a broadcast channel of batches; one that falls too
//! far behind is ended, and its client re-watches from its last revision
//! (from the recent history here, or from the store beyond it).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bytes::Bytes;
use serde_json::{Map, Value, json};
use tokio::sync::{Notify, broadcast, watch};
use tug_api::registry::Resource;
use tug_api::selector::{FieldSelector, LabelSelector};
use tug_store::{EventKind, KeyValue, RangeRequest, Revision, Store, WatchMessage, WatchOptions};

use crate::rest::{selectable_fields, selected_field};

/// Changes kept per resource for watches that resume from a revision.
const HISTORY_MAX: usize = 4096;
/// Batches a watcher may fall behind before it is ended.
const BROADCAST_CAPACITY: usize = 1024;
/// How long a read waits for the cache to reach a revision.
pub const WAIT_MAX: Duration = Duration::from_secs(3);
/// How often the cache learns the store's revision when nothing changes.
const PROGRESS_INTERVAL: Duration = Duration::from_secs(5);

/// One object as clients see it, encoded once.
#[derive(Debug)]
pub struct Cached {
    pub key: String,
    pub revision: Revision,
    /// `{"kind":..,"apiVersion":..,` then the rest of the object.
    pub json: Bytes,
    /// Where the object's own fields start in `json` (after kind and
    /// apiVersion), so that list items can leave those two out.
    body_start: usize,
    labels: Option<Map<String, Value>>,
    fields: Vec<(&'static str, String)>,
}

impl Cached {
    fn new(
        resource: &'static Resource,
        key: String,
        revision: Revision,
        mut object: Value,
    ) -> Self {
        object["metadata"]["resourceVersion"] = json!(revision.to_string());
        let labels = object["metadata"]["labels"].as_object().cloned();
        let fields = ["metadata.name", "metadata.namespace"]
            .iter()
            .chain(selectable_fields(resource))
            .filter_map(|&field| selected_field(&object, field).map(|v| (field, v)))
            .collect();
        if let Some(map) = object.as_object_mut() {
            map.remove("kind");
            map.remove("apiVersion");
        }
        let rest = serde_json::to_vec(&object).unwrap_or_else(|_| b"{}".to_vec());
        let head = format!(
            "{{\"kind\":{},\"apiVersion\":{}",
            json!(resource.kind),
            json!(resource.api_version())
        );
        let mut encoded = Vec::with_capacity(head.len() + rest.len() + 1);
        encoded.extend_from_slice(head.as_bytes());
        let body_start = encoded.len();
        if rest.len() > 2 {
            encoded.push(b',');
        }
        encoded.extend_from_slice(&rest[1..]);
        Self {
            key,
            revision,
            json: Bytes::from(encoded),
            body_start,
            labels,
            fields,
        }
    }

    fn decode(resource: &'static Resource, kv: &KeyValue, revision: Revision) -> Option<Self> {
        match serde_json::from_slice(&kv.value) {
            Ok(mut object) => {
                tug_api::convert::from_stored(resource, &mut object);
                Some(Self::new(resource, kv.key.clone(), revision, object))
            }
            Err(err) => {
                tracing::error!(key = %kv.key, error = %err, "a stored object is not JSON; left out");
                None
            }
        }
    }

    /// The object without kind and apiVersion, as a list item.
    pub fn item(&self) -> impl Iterator<Item = &[u8]> {
        let rest = &self.json[self.body_start..];
        let rest = rest.strip_prefix(b",").unwrap_or(rest);
        [b"{".as_slice(), rest].into_iter()
    }

    pub fn value(&self) -> Value {
        serde_json::from_slice(&self.json).unwrap_or_default()
    }

    /// The object as a PartialObjectMetadata, encoded: its metadata is
    /// copied from the encoding, the rest skipped undecoded.
    pub fn partial_metadata(&self) -> Vec<u8> {
        #[derive(serde::Deserialize)]
        struct Metadata<'a> {
            #[serde(borrow)]
            metadata: Option<&'a serde_json::value::RawValue>,
        }
        let metadata = serde_json::from_slice::<Metadata>(&self.json)
            .ok()
            .and_then(|m| m.metadata)
            .map_or("null", |raw| raw.get());
        let head = br#"{"kind":"PartialObjectMetadata","apiVersion":"meta.k8s.io/v1","metadata":"#;
        let mut out = Vec::with_capacity(head.len() + metadata.len() + 1);
        out.extend_from_slice(head);
        out.extend_from_slice(metadata.as_bytes());
        out.push(b'}');
        out
    }

    pub fn matches(&self, labels: &LabelSelector, fields: &FieldSelector) -> bool {
        labels.matches(self.labels.as_ref())
            && fields.matches(|field| {
                self.fields
                    .iter()
                    .find(|(name, _)| *name == field)
                    .map(|(_, value)| value.clone())
            })
    }
}

/// One change: the object after it (for a deletion, its last state at the
/// deletion's revision) and before it.
#[derive(Debug)]
pub struct Change {
    pub revision: Revision,
    pub deleted: bool,
    pub object: Arc<Cached>,
    pub prev: Option<Arc<Cached>>,
}

/// What watchers receive: changes, or that the cache has reached a revision.
#[derive(Debug)]
pub enum Batch {
    Changes(Vec<Arc<Change>>),
    Progress(Revision),
}

struct State {
    revision: Revision,
    objects: BTreeMap<String, Arc<Cached>>,
    history: VecDeque<Arc<Change>>,
    /// Every change after this revision is in `history`.
    history_from: Revision,
}

pub struct Cache {
    resource: &'static Resource,
    state: RwLock<State>,
    batches: broadcast::Sender<Arc<Batch>>,
    reached: watch::Sender<Revision>,
    want_progress: Notify,
}

/// A consistent view for a list: matching objects at `revision`.
pub struct Snapshot {
    pub revision: Revision,
    pub items: Vec<Arc<Cached>>,
    /// The key after which a next page starts, when `limit` cut the list.
    pub next: Option<String>,
}

/// A watch started on the cache: changes after `revision` already in
/// `backlog`, then everything from `batches`.
pub struct Subscription {
    /// Only keys under it are the watch's.
    pub prefix: String,
    pub revision: Revision,
    pub initial: Vec<Arc<Cached>>,
    pub backlog: Vec<Arc<Change>>,
    pub batches: broadcast::Receiver<Arc<Batch>>,
}

impl Cache {
    pub fn resource(&self) -> &'static Resource {
        self.resource
    }

    /// Waits until the cache has seen `revision`; `false` after [`WAIT_MAX`].
    pub async fn wait_for(&self, revision: Revision) -> bool {
        let mut reached = self.reached.subscribe();
        let wait = async {
            loop {
                if *reached.borrow_and_update() >= revision {
                    return;
                }
                self.want_progress.notify_one();
                if reached.changed().await.is_err() {
                    // The cache stopped; never reached.
                    std::future::pending::<()>().await;
                }
            }
        };
        tokio::time::timeout(WAIT_MAX, wait).await.is_ok()
    }

    pub fn revision(&self) -> Revision {
        self.state.read().expect("cache lock").revision
    }

    /// The object under `key` as the cache last saw it, which may be
    /// behind the store.
    pub fn object(&self, key: &str) -> Option<Arc<Cached>> {
        self.state
            .read()
            .expect("cache lock")
            .objects
            .get(key)
            .cloned()
    }

    /// Objects under `prefix` matching the selectors, from after `start`
    /// (a key), at most `limit` (0: all).
    pub fn list(
        &self,
        prefix: &str,
        labels: &LabelSelector,
        fields: &FieldSelector,
        limit: usize,
    ) -> Snapshot {
        let state = self.state.read().expect("cache lock");
        let mut items = Vec::new();
        let mut next = None;
        let range = state
            .objects
            .range::<str, _>((
                std::ops::Bound::Included(prefix),
                std::ops::Bound::Unbounded,
            ))
            .take_while(|(key, _)| key.starts_with(prefix));
        for (_, object) in range {
            if !object.matches(labels, fields) {
                continue;
            }
            if limit != 0 && items.len() == limit {
                next = items
                    .last()
                    .map(|last: &Arc<Cached>| format!("{}\0", last.key));
                break;
            }
            items.push(object.clone());
        }
        Snapshot {
            revision: state.revision,
            items,
            next,
        }
    }

    /// Starts a watch: with the current objects under `prefix` as initial
    /// events (`from` = `None`), or from a revision. `None` when that
    /// revision is older than the history kept.
    pub fn subscribe(&self, prefix: &str, from: Option<Revision>) -> Option<Subscription> {
        let state = self.state.read().expect("cache lock");
        let batches = self.batches.subscribe();
        match from {
            None => Some(Subscription {
                prefix: prefix.to_string(),
                revision: state.revision,
                initial: state
                    .objects
                    .range::<str, _>((
                        std::ops::Bound::Included(prefix),
                        std::ops::Bound::Unbounded,
                    ))
                    .take_while(|(key, _)| key.starts_with(prefix))
                    .map(|(_, object)| object.clone())
                    .collect(),
                backlog: Vec::new(),
                batches,
            }),
            Some(from) if from >= state.history_from => Some(Subscription {
                prefix: prefix.to_string(),
                revision: from,
                initial: Vec::new(),
                backlog: state
                    .history
                    .iter()
                    .filter(|change| {
                        change.revision > from && change.object.key.starts_with(prefix)
                    })
                    .cloned()
                    .collect(),
                batches,
            }),
            Some(_) => None,
        }
    }

    /// Applies what the store reports. Called by the one updater task.
    fn apply(&self, events: &tug_store::Events) {
        let mut changes = Vec::with_capacity(events.len());
        // Decoded before the lock is taken: readers wait for none of it.
        let mut decoded: Vec<Option<Cached>> = events
            .iter()
            .map(|event| match event.kind {
                EventKind::Put => Cached::decode(self.resource, &event.kv, event.revision()),
                EventKind::Delete => None,
            })
            .collect();
        let mut state = self.state.write().expect("cache lock");
        for (event, decoded) in events.iter().zip(decoded.iter_mut()) {
            let revision = event.revision();
            let key = event.kv.key.clone();
            let prev = state.objects.get(&key).cloned();
            let change = match event.kind {
                EventKind::Put => {
                    let Some(object) = decoded.take() else {
                        continue;
                    };
                    let object = Arc::new(object);
                    state.objects.insert(key, object.clone());
                    Change {
                        revision,
                        deleted: false,
                        object,
                        prev,
                    }
                }
                EventKind::Delete => {
                    state.objects.remove(&key);
                    // The last state, at the revision of the deletion.
                    let last = match (&prev, &event.prev) {
                        (Some(prev), _) => {
                            Some(Cached::new(self.resource, key, revision, prev.value()))
                        }
                        (None, Some(kv)) => Cached::decode(self.resource, kv, revision),
                        (None, None) => None,
                    };
                    let Some(last) = last else { continue };
                    Change {
                        revision,
                        deleted: true,
                        object: Arc::new(last),
                        prev,
                    }
                }
            };
            let change = Arc::new(change);
            state.history.push_back(change.clone());
            if state.history.len() > HISTORY_MAX
                && let Some(dropped) = state.history.pop_front()
            {
                state.history_from = dropped.revision;
            }
            changes.push(change);
        }
        if let Some(last) = events.last() {
            state.revision = state.revision.max(last.revision());
        }
        let revision = state.revision;
        drop(state);
        if !changes.is_empty() {
            let _ = self.batches.send(Arc::new(Batch::Changes(changes)));
        }
        self.reached.send_replace(revision);
    }

    fn progress(&self, revision: Revision) {
        let mut state = self.state.write().expect("cache lock");
        if revision <= state.revision {
            return;
        }
        state.revision = revision;
        drop(state);
        let _ = self.batches.send(Arc::new(Batch::Progress(revision)));
        self.reached.send_replace(revision);
    }
}

/// Every resource's cache, started on first use.
pub struct Caches {
    store: Arc<dyn Store>,
    caches: Mutex<HashMap<String, Arc<Cache>>>,
}

impl Caches {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self {
            store,
            caches: Mutex::new(HashMap::new()),
        }
    }

    /// The cache of `resource` if a list or watch has started it.
    pub fn running(&self, resource: &'static Resource) -> Option<Arc<Cache>> {
        self.caches
            .lock()
            .expect("caches lock")
            .get(&cache_id(resource))
            .cloned()
    }

    /// The cache of `resource`, listing it first if it is new.
    pub async fn get(&self, resource: &'static Resource) -> Result<Arc<Cache>, tug_store::Error> {
        let id = cache_id(resource);
        let prefix = tug_api::convert::storage_prefix(resource);
        if let Some(cache) = self.caches.lock().expect("caches lock").get(&id) {
            return Ok(cache.clone());
        }
        let listed = self
            .store
            .range(RangeRequest {
                prefix: prefix.clone(),
                ..RangeRequest::default()
            })
            .await?;
        let objects = listed
            .kvs
            .iter()
            .filter_map(|kv| Cached::decode(resource, kv, kv.mod_revision))
            .map(|object| (object.key.clone(), Arc::new(object)))
            .collect();
        let cache = Arc::new(Cache {
            resource,
            state: RwLock::new(State {
                revision: listed.revision,
                objects,
                history: VecDeque::new(),
                history_from: listed.revision,
            }),
            batches: broadcast::channel(BROADCAST_CAPACITY).0,
            reached: watch::channel(listed.revision).0,
            want_progress: Notify::new(),
        });
        let mut caches = self.caches.lock().expect("caches lock");
        // Two first requests may race; the first cache in wins.
        if let Some(existing) = caches.get(&id) {
            return Ok(existing.clone());
        }
        caches.insert(id, cache.clone());
        drop(caches);
        tokio::spawn(keep_current(
            self.store.clone(),
            cache.clone(),
            prefix,
            listed.revision,
        ));
        Ok(cache)
    }
}

/// Caches are keyed by group, version and resource: versions may share
/// storage, and each cache holds its version's form.
fn cache_id(resource: &Resource) -> String {
    format!(
        "{}/{}/{}",
        resource.group, resource.version, resource.plural
    )
}

/// The updater: one store watch per resource, resumed where it stopped.
async fn keep_current(
    store: Arc<dyn Store>,
    cache: Arc<Cache>,
    prefix: String,
    mut after: Revision,
) {
    let options = WatchOptions {
        progress_interval: Some(PROGRESS_INTERVAL),
    };
    loop {
        let mut watch = match store.watch(&prefix, after, options).await {
            Ok(watch) => watch,
            Err(err) => {
                tracing::error!(%prefix, error = %err, "the watch cache cannot watch the store; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        loop {
            let message = tokio::select! {
                message = watch.next() => message,
                _ = cache.want_progress.notified() => {
                    watch.request_progress();
                    continue;
                }
            };
            match message {
                Some(Ok(WatchMessage::Events(events))) => {
                    cache.apply(&events);
                    after = cache.revision();
                }
                Some(Ok(WatchMessage::Progress(revision))) => {
                    cache.progress(revision);
                    after = cache.revision();
                }
                Some(Err(tug_store::Error::WatchTooSlow { last_revision })) => {
                    after = last_revision.max(after);
                    break;
                }
                Some(Err(err)) => {
                    // Compacted past what the cache has: nothing can fill
                    // the gap. Keep serving what is known; a restart of
                    // the server relists.
                    tracing::error!(%prefix, error = %err, "the watch cache lost its store watch");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    break;
                }
                None => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cached_object_is_encoded_once_with_and_without_its_type() {
        let resource = tug_api::registry::find("", "v1", "configmaps").unwrap();
        let cached = Cached::new(
            resource,
            "/registry/configmaps/default/a".into(),
            7,
            json!({"metadata": {"name": "a", "labels": {"x": "1"}}, "data": {"k": "v"}}),
        );
        let full: Value = serde_json::from_slice(&cached.json).unwrap();
        assert_eq!(full["kind"], "ConfigMap");
        assert_eq!(full["apiVersion"], "v1");
        assert_eq!(full["metadata"]["resourceVersion"], "7");
        let item: Vec<u8> = cached.item().flatten().copied().collect();
        let item: Value = serde_json::from_slice(&item).unwrap();
        assert_eq!(item.get("kind"), None);
        assert_eq!(item["data"]["k"], "v");
        let selector = LabelSelector::parse("x=1").unwrap();
        let fields = FieldSelector::parse("metadata.name=a").unwrap();
        assert!(cached.matches(&selector, &fields));
        let fields = FieldSelector::parse("metadata.name=b").unwrap();
        assert!(!cached.matches(&selector, &fields));
        let partial: Value = serde_json::from_slice(&cached.partial_metadata()).unwrap();
        assert_eq!(
            partial,
            crate::table::partial_metadata(&serde_json::from_slice(&cached.json).unwrap())
        );
        assert_eq!(partial["metadata"]["labels"]["x"], "1");
        assert_eq!(partial.get("data"), None);
    }
}
