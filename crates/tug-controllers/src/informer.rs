//! Shared informers: one watch per kind keeps a cache of its objects and
//! tells every controller that subscribed what changed, with the object
//! as it was and as it is (client-go's shared informer, in small).

use std::collections::{HashMap, HashSet};
use std::fmt::Debug;
use std::sync::{Arc, RwLock};

use futures::StreamExt;
use kube::Resource;
use kube::api::Api;
use kube::runtime::{WatchStreamExt, watcher};
use serde::de::DeserializeOwned;
use tokio::sync::watch;

/// `namespace/name`, or `name` for a cluster-scoped object.
pub fn key_of<K: Resource>(object: &K) -> String {
    let meta = object.meta();
    match &meta.namespace {
        Some(ns) if !ns.is_empty() => format!("{ns}/{}", meta.name.as_deref().unwrap_or("")),
        _ => meta.name.clone().unwrap_or_default(),
    }
}

/// A change seen: `old` is `None` for an addition, `new` for a deletion.
pub type Handler<K> = Box<dyn Fn(Option<&Arc<K>>, Option<&Arc<K>>) + Send + Sync>;

/// Names an object under a secondary key (its owner's UID, say); keys of
/// different indexes of one informer must not collide (use prefixes).
pub type IndexFn<K> = fn(&K) -> Option<String>;

struct Cache<K> {
    objects: HashMap<String, Arc<K>>,
    /// Secondary key to the keys of the objects under it.
    index: HashMap<String, HashSet<String>>,
}

/// The cache of one kind; cheap to clone.
pub struct Informer<K: 'static> {
    cache: Arc<RwLock<Cache<K>>>,
    indexes: &'static [IndexFn<K>],
    handlers: Arc<RwLock<Vec<Handler<K>>>>,
    synced: watch::Receiver<bool>,
    synced_tx: Arc<watch::Sender<bool>>,
}

impl<K: 'static> Clone for Informer<K> {
    fn clone(&self) -> Self {
        Informer {
            cache: self.cache.clone(),
            indexes: self.indexes,
            handlers: self.handlers.clone(),
            synced: self.synced.clone(),
            synced_tx: self.synced_tx.clone(),
        }
    }
}

impl<K> Informer<K>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Default,
{
    pub fn new(indexes: &'static [IndexFn<K>]) -> Self {
        let (synced_tx, synced) = watch::channel(false);
        Informer {
            cache: Arc::new(RwLock::new(Cache {
                objects: HashMap::new(),
                index: HashMap::new(),
            })),
            indexes,
            handlers: Arc::new(RwLock::new(Vec::new())),
            synced,
            synced_tx: Arc::new(synced_tx),
        }
    }

    /// Calls `handler` on every change from now on (and for every object
    /// of the first list).
    pub fn subscribe(&self, handler: Handler<K>) {
        self.handlers
            .write()
            .expect("informer handlers")
            .push(handler);
    }

    pub fn get(&self, key: &str) -> Option<Arc<K>> {
        self.cache
            .read()
            .expect("informer cache")
            .objects
            .get(key)
            .cloned()
    }

    /// The objects filed under a secondary key.
    pub fn indexed(&self, value: &str) -> Vec<Arc<K>> {
        let cache = self.cache.read().expect("informer cache");
        cache.index.get(value).map_or_else(Vec::new, |keys| {
            keys.iter()
                .filter_map(|key| cache.objects.get(key).cloned())
                .collect()
        })
    }

    /// The object of this kind that controls the object with `meta`, if
    /// it is in the cache (same name, same UID).
    pub fn controller_of(&self, meta: &kube::api::ObjectMeta) -> Option<Arc<K>>
    where
        K: Resource<DynamicType = ()>,
    {
        let reference = meta
            .owner_references
            .as_ref()?
            .iter()
            .find(|r| r.controller == Some(true))?;
        let group = reference
            .api_version
            .rsplit_once('/')
            .map_or("", |(g, _)| g);
        if reference.kind != K::kind(&()) || group != K::group(&()) {
            return None;
        }
        let owner = self.get(&format!(
            "{}/{}",
            meta.namespace.as_deref().unwrap_or_default(),
            reference.name
        ))?;
        (owner.meta().uid.as_deref() == Some(reference.uid.as_str())).then_some(owner)
    }

    /// Every object in a namespace.
    pub fn in_namespace(&self, namespace: &str) -> Vec<Arc<K>> {
        self.cache
            .read()
            .expect("informer cache")
            .objects
            .values()
            .filter(|o| o.meta().namespace.as_deref() == Some(namespace))
            .cloned()
            .collect()
    }

    /// The keys of every cached object.
    pub fn keys(&self) -> Vec<String> {
        let cache = self.cache.read().expect("informer cache");
        cache.objects.keys().cloned().collect()
    }

    pub fn len(&self) -> usize {
        self.cache.read().expect("informer cache").objects.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Waits until the first list is in the cache.
    pub async fn synced(&self) {
        let mut synced = self.synced.clone();
        let _ = synced.wait_for(|s| *s).await;
    }

    /// Files `new` under `key` (or removes it) and tells the subscribers.
    fn apply(&self, key: String, new: Option<Arc<K>>) {
        let old = {
            let mut cache = self.cache.write().expect("informer cache");
            let old = match &new {
                Some(object) => cache.objects.insert(key.clone(), object.clone()),
                None => cache.objects.remove(&key),
            };
            for index_fn in self.indexes {
                let before = old.as_deref().and_then(index_fn);
                let after = new.as_deref().and_then(index_fn);
                if before != after {
                    if let Some(value) = before
                        && let Some(keys) = cache.index.get_mut(&value)
                    {
                        keys.remove(&key);
                        if keys.is_empty() {
                            cache.index.remove(&value);
                        }
                    }
                    if let Some(value) = after {
                        cache.index.entry(value).or_default().insert(key.clone());
                    }
                }
            }
            old
        };
        if old.is_none() && new.is_none() {
            return;
        }
        for handler in self.handlers.read().expect("informer handlers").iter() {
            handler(old.as_ref(), new.as_ref());
        }
    }

    /// Lists and watches through `api` until dropped, re-listing (and
    /// telling of what went meanwhile) whenever the watch breaks.
    pub async fn run(self, api: Api<K>) {
        let mut stream = watcher(api, watcher::Config::default())
            .default_backoff()
            .boxed();
        let mut listed: Option<HashSet<String>> = None;
        while let Some(event) = stream.next().await {
            let event = match event {
                Ok(event) => event,
                Err(err) => {
                    tracing::debug!(error = %err, kind = %K::kind(&Default::default()), "watch failed");
                    continue;
                }
            };
            match event {
                watcher::Event::Init => listed = Some(HashSet::new()),
                watcher::Event::InitApply(object) => {
                    let key = key_of(&object);
                    if let Some(listed) = &mut listed {
                        listed.insert(key.clone());
                    }
                    self.apply(key, Some(Arc::new(object)));
                }
                watcher::Event::InitDone => {
                    if let Some(listed) = listed.take() {
                        let gone: Vec<String> = {
                            let cache = self.cache.read().expect("informer cache");
                            cache
                                .objects
                                .keys()
                                .filter(|k| !listed.contains(*k))
                                .cloned()
                                .collect()
                        };
                        for key in gone {
                            self.apply(key, None);
                        }
                    }
                    self.synced_tx.send_replace(true);
                }
                watcher::Event::Apply(object) => {
                    self.apply(key_of(&object), Some(Arc::new(object)));
                }
                watcher::Event::Delete(object) => self.apply(key_of(&object), None),
            }
        }
    }
}

/// An informer as the controller-manager runs it: started once, then
/// waited for until its first list is in.
pub trait Source: Send + Sync {
    fn spawn(&self, client: &kube::Client, tasks: &mut tokio::task::JoinSet<()>);
    fn wait_synced(&self) -> futures::future::BoxFuture<'_, ()>;
}

impl<K> Source for Informer<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    fn spawn(&self, client: &kube::Client, tasks: &mut tokio::task::JoinSet<()>) {
        tasks.spawn(self.clone().run(Api::all(client.clone())));
    }

    fn wait_synced(&self) -> futures::future::BoxFuture<'_, ()> {
        Box::pin(self.synced())
    }
}

/// The UID of an object's controller, if it has one.
pub fn controller_uid(meta: &kube::api::ObjectMeta) -> Option<&str> {
    meta.owner_references
        .as_ref()?
        .iter()
        .find(|r| r.controller == Some(true))
        .map(|r| r.uid.as_str())
}

/// The index most controllers want: `owner:<uid>` for an object with a
/// controller, `orphan:<namespace>` for one without.
pub fn by_controller<K: Resource>(object: &K) -> Option<String> {
    let meta = object.meta();
    Some(match controller_uid(meta) {
        Some(uid) => format!("owner:{uid}"),
        None => format!("orphan:{}", meta.namespace.as_deref().unwrap_or("")),
    })
}

/// The index of pods by node: `node:<name>`.
pub fn pod_node(pod: &k8s_openapi::api::core::v1::Pod) -> Option<String> {
    let node = pod.spec.as_ref()?.node_name.as_deref()?;
    (!node.is_empty()).then(|| format!("node:{node}"))
}
