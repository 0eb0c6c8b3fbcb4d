//! The garbage collector: deletes objects whose owners are gone, and
//! carries out Foreground and Orphan deletions, as upstream's does.
//!
//! It watches the metadata of every kind (but events) and keeps a graph
//! of owners and dependents by UID. A dependent whose owners are all
//! gone (checked past the cache before acting) is deleted with the
//! propagation its own finalizers ask for; owners still present but
//! dangling references are patched away. An owner deleted in the
//! foreground (finalizer `foregroundDeletion`) has its dependents deleted
//! and loses the finalizer once no dependent that blocks it remains; one
//! deleted with `orphan` has its dependents' references to it removed,
//! then the finalizer.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::Client;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, PartialObjectMeta, Patch, PatchParams,
    Preconditions, PropagationPolicy,
};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;
use tokio::task::JoinSet;

use crate::workqueue::WorkQueue;

pub const COMPONENT: &str = "garbage-collector-controller";
/// Upstream's --concurrent-gc-syncs.
const WORKERS: usize = 20;
const FOREGROUND: &str = "foregroundDeletion";
const ORPHAN: &str = "orphan";
/// Owners known to be gone, remembered to spare reads.
const ABSENT_MAX: usize = 10_000;

/// A kind the collector watches.
#[derive(Clone)]
pub struct Kind {
    pub api: ApiResource,
    pub namespaced: bool,
}

/// Every stored kind once (the first version listed), but events.
pub fn kinds() -> Vec<Kind> {
    let mut seen = HashSet::new();
    let mut kinds = Vec::new();
    for r in tug_api::registry::RESOURCES {
        if !r.stored || r.plural == "events" || !seen.insert((r.group, r.plural)) {
            continue;
        }
        let api_version = if r.group.is_empty() {
            r.version.to_string()
        } else {
            format!("{}/{}", r.group, r.version)
        };
        kinds.push(Kind {
            api: ApiResource {
                group: r.group.into(),
                version: r.version.into(),
                api_version,
                kind: r.kind.into(),
                plural: r.plural.into(),
            },
            namespaced: r.namespaced,
        });
    }
    kinds
}

/// One object as the collector knows it.
#[derive(Clone, Debug)]
pub struct Node {
    pub kind: usize,
    pub namespace: Option<String>,
    pub name: String,
    pub owners: Vec<OwnerReference>,
    pub deleting: bool,
    pub foreground: bool,
    pub orphan: bool,
}

#[derive(Default)]
pub struct Graph {
    pub nodes: HashMap<String, Node>,
    /// Owner UID to the UIDs of its dependents.
    pub dependents: HashMap<String, HashSet<String>>,
}

/// What the graph asks to look at after a change: these UIDs.
impl Graph {
    /// Records `node` under `uid`; answers the UIDs to process.
    pub fn upsert(&mut self, uid: &str, node: Node) -> Vec<String> {
        let old = self.nodes.insert(uid.to_string(), node.clone());
        let mut work = Vec::new();
        let old_owners: Vec<&OwnerReference> = old
            .as_ref()
            .map_or(Vec::new(), |o| o.owners.iter().collect());
        for owner in &old_owners {
            if !node.owners.iter().any(|o| o.uid == owner.uid) && self.unlink(&owner.uid, uid) {
                // An owner waiting for its dependents may be free now.
                work.push(owner.uid.clone());
            }
        }
        for owner in &node.owners {
            self.dependents
                .entry(owner.uid.clone())
                .or_default()
                .insert(uid.to_string());
        }
        let owner_missing_or_waiting = node.owners.iter().any(|o| {
            self.nodes
                .get(&o.uid)
                .is_none_or(|owner| owner.deleting && owner.foreground)
        });
        if owner_missing_or_waiting || (node.deleting && (node.foreground || node.orphan)) {
            work.push(uid.to_string());
        }
        let began_foreground = node.deleting
            && node.foreground
            && !old.as_ref().is_some_and(|o| o.deleting && o.foreground);
        if began_foreground {
            work.extend(self.dependents.get(uid).into_iter().flatten().cloned());
        }
        work
    }

    /// Forgets `uid`; answers the UIDs to process: its dependents, and its
    /// owners that wait for their dependents.
    pub fn remove(&mut self, uid: &str) -> Vec<String> {
        let Some(node) = self.nodes.remove(uid) else {
            return Vec::new();
        };
        let mut work: Vec<String> = self
            .dependents
            .get(uid)
            .into_iter()
            .flatten()
            .cloned()
            .collect();
        for owner in &node.owners {
            if self.unlink(&owner.uid, uid) {
                work.push(owner.uid.clone());
            }
        }
        work
    }

    /// Forgets that `dependent` depends on `owner`; answers whether the
    /// owner waits for its dependents (deleted in the foreground).
    fn unlink(&mut self, owner: &str, dependent: &str) -> bool {
        if let Some(deps) = self.dependents.get_mut(owner) {
            deps.remove(dependent);
            if deps.is_empty() {
                self.dependents.remove(owner);
            }
        }
        self.nodes
            .get(owner)
            .is_some_and(|o| o.deleting && o.foreground)
    }

    /// Dependents of `uid` that block its deletion.
    pub fn blocking(&self, uid: &str) -> Vec<String> {
        self.dependents
            .get(uid)
            .into_iter()
            .flatten()
            .filter(|dep| {
                self.nodes.get(*dep).is_some_and(|d| {
                    d.owners
                        .iter()
                        .any(|o| o.uid == uid && o.block_owner_deletion == Some(true))
                })
            })
            .cloned()
            .collect()
    }
}

/// What to do about a dependent, from the state of its owners.
#[derive(Debug, PartialEq)]
pub enum Verdict {
    /// An owner still holds it; drop references to the owners listed.
    Keep { drop: Vec<String> },
    /// Delete it with this propagation.
    Delete(PropagationPolicy),
}

/// Owners of a dependent sorted into present, gone, and deleting in the
/// foreground; `has_dependents` says whether it has dependents of its own.
pub fn verdict(
    node: &Node,
    solid: &[String],
    dangling: &[String],
    waiting: &[String],
    has_dependents: bool,
) -> Verdict {
    if !solid.is_empty() {
        let mut drop: Vec<String> = dangling.to_vec();
        drop.extend(waiting.iter().cloned());
        return Verdict::Keep { drop };
    }
    if !waiting.is_empty() && has_dependents {
        return Verdict::Delete(PropagationPolicy::Foreground);
    }
    Verdict::Delete(if node.orphan {
        PropagationPolicy::Orphan
    } else if node.foreground {
        PropagationPolicy::Foreground
    } else {
        PropagationPolicy::Background
    })
}

struct Collector {
    client: Client,
    kinds: Vec<Kind>,
    graph: Mutex<Graph>,
    absent: Mutex<HashSet<String>>,
    queue: WorkQueue,
}

fn node_of(kind: usize, meta: &kube::api::ObjectMeta) -> Node {
    let finalizers = meta.finalizers.as_deref().unwrap_or_default();
    Node {
        kind,
        namespace: meta.namespace.clone(),
        name: meta.name.clone().unwrap_or_default(),
        owners: meta.owner_references.clone().unwrap_or_default(),
        deleting: meta.deletion_timestamp.is_some(),
        foreground: finalizers.iter().any(|f| f == FOREGROUND),
        orphan: finalizers.iter().any(|f| f == ORPHAN),
    }
}

impl Collector {
    fn api(&self, kind: usize, namespace: Option<&str>) -> Api<DynamicObject> {
        let k = &self.kinds[kind];
        match namespace {
            Some(ns) if k.namespaced => Api::namespaced_with(self.client.clone(), ns, &k.api),
            _ => Api::all_with(self.client.clone(), &k.api),
        }
    }

    fn kind_of(&self, reference: &OwnerReference) -> Option<usize> {
        let group = reference
            .api_version
            .rsplit_once('/')
            .map_or("", |(g, _)| g);
        self.kinds
            .iter()
            .position(|k| k.api.group == group && k.api.kind == reference.kind)
    }

    fn enqueue(&self, uids: Vec<String>) {
        for uid in uids {
            self.queue.add(&uid);
        }
    }

    /// Watches one kind into the graph; marks `synced` after its first list.
    async fn watch(self: Arc<Self>, kind: usize, synced: tokio::sync::mpsc::Sender<()>) {
        let api: Api<PartialObjectMeta<DynamicObject>> =
            Api::all_with(self.client.clone(), &self.kinds[kind].api);
        let mut stream = watcher(api, watcher::Config::default())
            .default_backoff()
            .boxed();
        let mut listed: Option<HashSet<String>> = None;
        let mut mine: HashSet<String> = HashSet::new();
        let mut synced = Some(synced);
        while let Some(event) = stream.next().await {
            let Ok(event) = event else { continue };
            let mut work = Vec::new();
            match event {
                watcher::Event::Init => listed = Some(HashSet::new()),
                watcher::Event::InitApply(object) | watcher::Event::Apply(object) => {
                    let uid = object.metadata.uid.clone().unwrap_or_default();
                    if let Some(listed) = &mut listed {
                        listed.insert(uid.clone());
                    }
                    mine.insert(uid.clone());
                    let node = node_of(kind, &object.metadata);
                    work = self.graph.lock().expect("gc graph").upsert(&uid, node);
                }
                watcher::Event::Delete(object) => {
                    let uid = object.metadata.uid.clone().unwrap_or_default();
                    mine.remove(&uid);
                    work = self.graph.lock().expect("gc graph").remove(&uid);
                }
                watcher::Event::InitDone => {
                    if let Some(listed) = listed.take() {
                        let gone: Vec<String> = mine.difference(&listed).cloned().collect();
                        let mut graph = self.graph.lock().expect("gc graph");
                        for uid in gone {
                            mine.remove(&uid);
                            work.extend(graph.remove(&uid));
                        }
                    }
                    if let Some(synced) = synced.take() {
                        let _ = synced.send(()).await;
                    }
                }
            }
            self.enqueue(work);
        }
    }

    /// Whether the owner `reference` (of a dependent in `namespace`) is
    /// gone, read past the cache.
    async fn owner_gone(
        &self,
        reference: &OwnerReference,
        namespace: Option<&str>,
    ) -> anyhow::Result<bool> {
        if self
            .absent
            .lock()
            .expect("gc absent")
            .contains(&reference.uid)
        {
            return Ok(true);
        }
        let Some(kind) = self.kind_of(reference) else {
            // A kind this server does not serve: leave it be.
            return Ok(false);
        };
        let gone = match self
            .api(kind, namespace)
            .get_metadata_opt(&reference.name)
            .await?
        {
            None => true,
            Some(owner) => owner.metadata.uid.as_deref() != Some(reference.uid.as_str()),
        };
        if gone {
            let mut absent = self.absent.lock().expect("gc absent");
            if absent.len() >= ABSENT_MAX {
                absent.clear();
            }
            absent.insert(reference.uid.clone());
        }
        Ok(gone)
    }

    async fn process(&self, uid: &str) -> anyhow::Result<()> {
        let (node, blocking, dependents) = {
            let graph = self.graph.lock().expect("gc graph");
            let Some(node) = graph.nodes.get(uid).cloned() else {
                return Ok(());
            };
            let dependents: Vec<String> = graph
                .dependents
                .get(uid)
                .into_iter()
                .flatten()
                .cloned()
                .collect();
            (node, graph.blocking(uid), dependents)
        };
        if node.deleting {
            if node.orphan {
                return self.orphan_dependents(uid, &node, &dependents).await;
            }
            if node.foreground {
                if blocking.is_empty() {
                    return self.remove_finalizer(&node, FOREGROUND).await;
                }
                self.enqueue(blocking);
            }
            return Ok(());
        }
        if node.owners.is_empty() {
            return Ok(());
        }
        let (mut solid, mut dangling, mut waiting) = (Vec::new(), Vec::new(), Vec::new());
        for owner in &node.owners {
            let known = self
                .graph
                .lock()
                .expect("gc graph")
                .nodes
                .get(&owner.uid)
                .cloned();
            match known {
                Some(o) if o.deleting && o.foreground => waiting.push(owner.uid.clone()),
                Some(_) => solid.push(owner.uid.clone()),
                None => {
                    if self.owner_gone(owner, node.namespace.as_deref()).await? {
                        dangling.push(owner.uid.clone());
                    } else {
                        solid.push(owner.uid.clone());
                    }
                }
            }
        }
        match verdict(&node, &solid, &dangling, &waiting, !dependents.is_empty()) {
            Verdict::Keep { drop } if drop.is_empty() => Ok(()),
            Verdict::Keep { drop } => {
                let owners: Vec<&OwnerReference> = node
                    .owners
                    .iter()
                    .filter(|o| !drop.contains(&o.uid))
                    .collect();
                let patch = json!({"metadata": {"ownerReferences": or_null(owners), "uid": uid}});
                self.patch(&node, &patch).await
            }
            Verdict::Delete(policy) => {
                let params = DeleteParams {
                    propagation_policy: Some(policy),
                    preconditions: Some(Preconditions {
                        uid: Some(uid.to_string()),
                        resource_version: None,
                    }),
                    ..DeleteParams::default()
                };
                match self
                    .api(node.kind, node.namespace.as_deref())
                    .delete(&node.name, &params)
                    .await
                {
                    Ok(_) => Ok(()),
                    Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(()),
                    Err(err) => Err(err.into()),
                }
            }
        }
    }

    async fn patch(&self, node: &Node, patch: &serde_json::Value) -> anyhow::Result<()> {
        match self
            .api(node.kind, node.namespace.as_deref())
            .patch(&node.name, &PatchParams::default(), &Patch::Merge(patch))
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 422 => Ok(()),
            Err(err) => Err(err.into()),
        }
    }

    async fn orphan_dependents(
        &self,
        uid: &str,
        node: &Node,
        dependents: &[String],
    ) -> anyhow::Result<()> {
        for dep in dependents {
            let known = self.graph.lock().expect("gc graph").nodes.get(dep).cloned();
            let Some(dependent) = known else { continue };
            let owners: Vec<&OwnerReference> =
                dependent.owners.iter().filter(|o| o.uid != uid).collect();
            let patch = json!({"metadata": {"ownerReferences": or_null(owners), "uid": dep}});
            self.patch(&dependent, &patch).await?;
        }
        self.remove_finalizer(node, ORPHAN).await
    }

    /// Removes `finalizer` from the object, over its current version.
    async fn remove_finalizer(&self, node: &Node, finalizer: &str) -> anyhow::Result<()> {
        let api = self.api(node.kind, node.namespace.as_deref());
        let Some(current) = api.get_metadata_opt(&node.name).await? else {
            return Ok(());
        };
        let finalizers: Vec<String> = current
            .metadata
            .finalizers
            .unwrap_or_default()
            .into_iter()
            .filter(|f| f != finalizer)
            .collect();
        let patch = json!({"metadata": {
            "finalizers": or_null(finalizers),
            "resourceVersion": current.metadata.resource_version,
        }});
        self.patch(node, &patch).await
    }
}

/// A list for a merge patch; none at all (the field removed) if empty.
fn or_null<T: serde::Serialize>(items: Vec<T>) -> serde_json::Value {
    if items.is_empty() {
        serde_json::Value::Null
    } else {
        json!(items)
    }
}

/// Runs the collector until its task is aborted.
pub(crate) fn start(ctx: &crate::Context) -> crate::Running {
    let collector = Arc::new(Collector {
        client: ctx.client.clone(),
        kinds: kinds(),
        graph: Mutex::new(Graph::default()),
        absent: Mutex::new(HashSet::new()),
        queue: WorkQueue::default(),
    });
    let queue = collector.queue.clone();
    let watches = collector.clone();
    let mut running = crate::Running::workers(COMPONENT, queue, WORKERS, move |uid| {
        let collector = collector.clone();
        async move {
            collector.process(&uid).await?;
            Ok(None::<Duration>)
        }
    });
    running.watch = Some(Box::new(move |tasks: &mut JoinSet<()>| {
        let (synced, mut all) = tokio::sync::mpsc::channel(watches.kinds.len().max(1));
        let count = watches.kinds.len();
        for kind in 0..count {
            tasks.spawn(watches.clone().watch(kind, synced.clone()));
        }
        Box::pin(async move {
            for _ in 0..count {
                if all.recv().await.is_none() {
                    break;
                }
            }
        })
    }));
    running
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(uid: &str, block: bool) -> OwnerReference {
        OwnerReference {
            api_version: "apps/v1".into(),
            kind: "ReplicaSet".into(),
            name: format!("rs-{uid}"),
            uid: uid.into(),
            controller: Some(true),
            block_owner_deletion: Some(block),
        }
    }

    fn node(owners: Vec<OwnerReference>) -> Node {
        Node {
            kind: 0,
            namespace: Some("default".into()),
            name: "x".into(),
            owners,
            deleting: false,
            foreground: false,
            orphan: false,
        }
    }

    #[test]
    fn kinds_are_each_stored_kind_once_without_events() {
        let kinds = kinds();
        assert!(
            kinds
                .iter()
                .any(|k| k.api.kind == "ReplicaSet" && k.namespaced)
        );
        assert!(kinds.iter().any(|k| k.api.kind == "Node" && !k.namespaced));
        assert!(!kinds.iter().any(|k| k.api.plural == "events"));
        let mut plurals: Vec<_> = kinds
            .iter()
            .map(|k| (&k.api.group, &k.api.plural))
            .collect();
        let all = plurals.len();
        plurals.sort();
        plurals.dedup();
        assert_eq!(plurals.len(), all);
    }

    #[test]
    fn the_graph_asks_to_look_at_dependents_of_what_goes_and_owners_that_wait() {
        let mut graph = Graph::default();
        assert!(graph.upsert("rs", node(vec![])).is_empty());
        assert!(
            graph
                .upsert("pod", node(vec![owner("rs", true)]))
                .is_empty()
        );
        // An owner not (yet) known: the dependent is looked at.
        assert_eq!(
            graph.upsert("orphan", node(vec![owner("nowhere", true)])),
            ["orphan"]
        );
        // Deleted in the foreground: it and its dependents are looked at.
        let mut deleting = node(vec![]);
        deleting.deleting = true;
        deleting.foreground = true;
        let mut work = graph.upsert("rs", deleting);
        work.sort();
        assert_eq!(work, ["pod", "rs"]);
        assert_eq!(graph.blocking("rs"), ["pod"]);
        // The pod goes: the waiting owner is looked at again.
        assert_eq!(graph.remove("pod"), ["rs"]);
        assert!(graph.blocking("rs").is_empty());
        // The owner goes: its remaining dependents are looked at.
        graph.upsert("pod2", node(vec![owner("rs", false)]));
        assert_eq!(graph.remove("rs"), ["pod2"]);
    }

    #[test]
    fn verdicts_follow_the_owners() {
        let n = node(vec![owner("a", true), owner("b", true)]);
        let ids = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            verdict(&n, &ids(&["a"]), &ids(&["b"]), &[], false),
            Verdict::Keep { drop: ids(&["b"]) }
        );
        assert_eq!(
            verdict(&n, &[], &ids(&["a", "b"]), &[], false),
            Verdict::Delete(PropagationPolicy::Background)
        );
        assert_eq!(
            verdict(&n, &[], &ids(&["a"]), &ids(&["b"]), true),
            Verdict::Delete(PropagationPolicy::Foreground)
        );
        assert_eq!(
            verdict(&n, &[], &[], &ids(&["a"]), false),
            Verdict::Delete(PropagationPolicy::Background)
        );
        let mut orphaning = n.clone();
        orphaning.orphan = true;
        assert_eq!(
            verdict(&orphaning, &[], &ids(&["a"]), &[], false),
            Verdict::Delete(PropagationPolicy::Orphan)
        );
    }
}
