//! The scheduler: watches pods and nodes through the API, places each
//! pending pod of its `schedulerName` on a node, and binds it through
//! `pods/binding`, as kube-scheduler does.
//!
//! One task runs the cycles over a cache of nodes (what they offer, what
//! their pods take); the watches keep the cache and the [`queue`]
//! current. A pod is "assumed" on its node as soon as it is chosen, so
//! the next cycle counts it while the binding is in flight; the watch
//! confirms it, or a failed binding takes it back and requeues the pod.
//! A pod that fits nowhere gets PodScheduled=False with upstream's
//! message and a FailedScheduling event, and waits for a change in the
//! cluster.

pub mod framework;
pub mod info;
pub mod labels;
pub mod plugins;
pub mod preemption;
pub mod queue;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use serde_json::json;
use tokio::sync::{Notify, Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

use framework::{Cursor, FitError};
use info::{Namespaces, NodeInfo, PodInfo, PodUsage};
use plugins::{Profile, Snapshot};
use queue::Queue;

/// Upstream's default scheduler name.
pub const DEFAULT_SCHEDULER: &str = "default-scheduler";
/// Bindings in flight at once.
const BINDERS: usize = 64;
/// Events and status updates waiting to be written; beyond, they are
/// dropped (as upstream's event broadcaster drops).
const RECORDS_MAX: usize = 10_000;
/// Writers of events and status updates.
const RECORDERS: usize = 8;

#[derive(Clone, Debug)]
pub struct Config {
    pub scheduler_name: String,
    /// Upstream's percentageOfNodesToScore; `None` adapts to the
    /// cluster's size.
    pub percentage_of_nodes_to_score: Option<u32>,
    /// Told apart in events: `default-scheduler-<host>`.
    pub instance: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            scheduler_name: DEFAULT_SCHEDULER.into(),
            percentage_of_nodes_to_score: None,
            instance: DEFAULT_SCHEDULER.into(),
        }
    }
}

/// The nodes and what their pods take, and the queue.
#[derive(Default)]
struct State {
    queue: Queue,
    nodes: Vec<NodeInfo>,
    index: HashMap<String, usize>,
    /// What pods placed on nodes not (or no longer) known take.
    orphans: HashMap<String, NodeInfo>,
    /// Pods placed on nodes, bound or assumed (binding in flight).
    placed: HashMap<String, (PodUsage, bool)>,
    /// Each namespace's labels (affinity terms' namespaceSelector).
    namespaces: Namespaces,
    /// Pods that preempted others, and the node each made room on (known
    /// here at once; their status says so a moment later).
    nominated: HashMap<String, (String, PodUsage)>,
    /// Topology domains, numbered once for as long as the nodes stay.
    topology: info::Topology,
    /// How many nodes have each image.
    images: plugins::ImageCounts,
    cursor: Cursor,
}

impl State {
    fn node_mut(&mut self, name: &str) -> &mut NodeInfo {
        match self.index.get(name) {
            Some(&i) => &mut self.nodes[i],
            None => self
                .orphans
                .entry(name.to_string())
                .or_insert_with(|| NodeInfo::named(name)),
        }
    }

    /// Tells the topology that a node's pods changed (each change goes
    /// through here, so it may keep totals).
    fn touched(&mut self, node: &str) {
        if let Some(&i) = self.index.get(node) {
            self.topology.touched(i);
        }
    }

    /// Records that a pod takes its share of a node.
    fn place(&mut self, key: &str, usage: PodUsage, assumed: bool) {
        if let Some((old, _)) = self.placed.get(key) {
            if *old == usage {
                self.placed.insert(key.to_string(), (usage, assumed));
                return;
            }
            let old = old.clone();
            self.node_mut(&old.node).remove_pod(&old);
            self.touched(&old.node);
        }
        self.node_mut(&usage.node).add_pod(&usage);
        self.touched(&usage.node);
        self.placed.insert(key.to_string(), (usage, assumed));
    }

    /// The pod no longer takes anything; answers whether it did.
    fn forget(&mut self, key: &str) -> bool {
        let Some((usage, _)) = self.placed.remove(key) else {
            return false;
        };
        self.node_mut(&usage.node).remove_pod(&usage);
        self.touched(&usage.node);
        if let Some(orphan) = self.orphans.get(&usage.node)
            && orphan.pod_count == 0
        {
            self.orphans.remove(&usage.node);
        }
        true
    }

    fn assumed(&self, key: &str) -> bool {
        self.placed.get(key).is_some_and(|(_, assumed)| *assumed)
    }

    fn upsert_node(&mut self, node: &Node) -> bool {
        let name = node.name_any();
        if let Some(&i) = self.index.get(&name) {
            let before = std::mem::take(&mut self.nodes[i].images);
            let changed = self.nodes[i].set_node(node);
            self.images.update(&before, &self.nodes[i].images);
            if changed {
                self.topology.clear();
            }
            return changed;
        }
        self.topology.clear();
        let info = match self.orphans.remove(&name) {
            Some(mut orphan) => {
                orphan.set_node(node);
                orphan
            }
            None => NodeInfo::new(node),
        };
        self.images.update(&HashMap::new(), &info.images);
        self.index.insert(name, self.nodes.len());
        self.nodes.push(info);
        true
    }

    fn remove_node(&mut self, name: &str) {
        let Some(i) = self.index.remove(name) else {
            return;
        };
        self.topology.clear();
        let info = self.nodes.swap_remove(i);
        self.images.update(&info.images, &HashMap::new());
        if let Some(moved) = self.nodes.get(i) {
            self.index.insert(moved.name.clone(), i);
        }
        if info.pod_count > 0 {
            self.orphans.insert(info.name.clone(), info);
        }
    }

    fn on_pod(&mut self, pod: Pod, scheduler: &str, now: Instant) {
        let key = format!("{}/{}", pod.namespace().unwrap_or_default(), pod.name_any());
        let spec = pod.spec.as_ref();
        let node = spec
            .and_then(|s| s.node_name.clone())
            .filter(|n| !n.is_empty());
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
        let terminal = matches!(phase, Some("Succeeded" | "Failed"));
        match node {
            Some(node) => {
                self.queue.delete(&key);
                if terminal {
                    if self.forget(&key) {
                        self.queue.move_all(now);
                    }
                } else if let Some((usage, assumed)) = self.placed.get_mut(&key)
                    && usage.node == node
                    && usage.resident.describes(&pod)
                {
                    // Known here (a status update, or our binding seen):
                    // what it takes does not change. A binding seen may
                    // be what a waiting pod's affinity needs.
                    if std::mem::take(assumed) {
                        self.queue.move_all(now);
                    }
                } else {
                    let info = PodInfo::new(Arc::new(pod));
                    self.place(&key, PodUsage::of(&info, &node), false);
                    // A pod placed (or relabelled) by others may be what
                    // a waiting pod's affinity needs.
                    self.queue.move_all(now);
                }
            }
            None => {
                if self.assumed(&key) {
                    // Its binding is in flight.
                    return;
                }
                let ours = spec
                    .and_then(|s| s.scheduler_name.as_deref())
                    .unwrap_or(DEFAULT_SCHEDULER)
                    == scheduler;
                if terminal || pod.metadata.deletion_timestamp.is_some() || !ours {
                    self.queue.delete(&key);
                    return;
                }
                let priority = spec.and_then(|s| s.priority).unwrap_or(0);
                self.queue.add_or_update(&key, Arc::new(pod), priority, now);
            }
        }
    }

    fn on_pod_deleted(&mut self, key: &str, now: Instant) {
        self.queue.delete(key);
        self.nominated.remove(key);
        if self.forget(key) {
            self.queue.move_all(now);
        }
    }
}

/// What the recorders write: an event, and for a pod that did not fit,
/// its PodScheduled condition.
struct Record {
    pod: Arc<Pod>,
    /// `Some(message)`: failed to schedule; `None`: scheduled on `node`.
    failure: Option<String>,
    node: String,
}

struct Scheduler {
    client: Client,
    config: Config,
    profile: Profile,
    state: Mutex<State>,
    wake: Notify,
    records: mpsc::Sender<Record>,
}

/// Runs the scheduler until `shutdown`.
pub async fn run(
    client: Client,
    config: Config,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let (records, receiver) = mpsc::channel(RECORDS_MAX);
    let scheduler = Arc::new(Scheduler {
        client: client.clone(),
        config,
        profile: Profile::default(),
        state: Mutex::new(State {
            topology: info::Topology::tracked(),
            ..State::default()
        }),
        wake: Notify::new(),
        records,
    });
    let receiver = Arc::new(tokio::sync::Mutex::new(receiver));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..RECORDERS {
        tasks.spawn(record(scheduler.clone(), receiver.clone()));
    }
    let (nodes_synced, mut nodes_ready) = tokio::sync::watch::channel(false);
    let (pods_synced, mut pods_ready) = tokio::sync::watch::channel(false);
    let (namespaces_synced, mut namespaces_ready) = tokio::sync::watch::channel(false);
    tasks.spawn(watch_nodes(scheduler.clone(), nodes_synced));
    tasks.spawn(watch_pods(scheduler.clone(), pods_synced));
    tasks.spawn(watch_namespaces(scheduler.clone(), namespaces_synced));
    let synced = async {
        nodes_ready.wait_for(|ready| *ready).await.ok();
        pods_ready.wait_for(|ready| *ready).await.ok();
        namespaces_ready.wait_for(|ready| *ready).await.ok();
    };
    tokio::select! {
        _ = shutdown.cancelled() => return Ok(()),
        _ = synced => {}
    }
    tracing::info!("scheduler: caches synced, scheduling");
    let binders = Arc::new(Semaphore::new(BINDERS));
    let mut last_flush = Instant::now();
    loop {
        let now = Instant::now();
        let next = {
            let mut state = scheduler.state.lock().expect("scheduler state");
            if now.duration_since(last_flush) >= Duration::from_secs(30) {
                state.queue.flush_unschedulable(now);
                last_flush = now;
            }
            state.queue.pop(now)
        };
        let Some((key, pod)) = next else {
            let wait = {
                let state = scheduler.state.lock().expect("scheduler state");
                state
                    .queue
                    .next_backoff()
                    .map_or(Duration::from_secs(30), |at| {
                        at.saturating_duration_since(now)
                    })
            };
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = scheduler.wake.notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
            continue;
        };
        let permit = tokio::select! {
            _ = shutdown.cancelled() => break,
            permit = binders.clone().acquire_owned() => permit?,
        };
        if let Some(node) = scheduler.schedule_one(&key, pod.clone(), now) {
            let scheduler = scheduler.clone();
            tokio::spawn(async move {
                scheduler.bind(&key, pod, &node).await;
                drop(permit);
            });
        }
    }
    tasks.abort_all();
    Ok(())
}

impl Scheduler {
    /// One cycle: the node chosen (and the pod assumed there), or `None`
    /// with the pod back in the queue and its failure recorded.
    fn schedule_one(&self, key: &str, pod: Arc<Pod>, now: Instant) -> Option<String> {
        let mut info = PodInfo::new(pod.clone());
        let mut state = self.state.lock().expect("scheduler state");
        let state = &mut *state;
        if let Some((node, _)) = state.nominated.get(key) {
            info.nominated_node = Some(node.clone());
        }
        let mut by_node: HashMap<String, Vec<PodUsage>> = HashMap::new();
        for (node, usage) in state.nominated.values() {
            by_node.entry(node.clone()).or_default().push(usage.clone());
        }
        let mut cluster = Snapshot::new(&state.nodes, &state.namespaces);
        if !by_node.is_empty() {
            cluster.nominated = Some(&by_node);
        }
        cluster.topology = Some(&state.topology);
        cluster.image_nodes = Some(&state.images.0);
        let result = framework::schedule(
            &self.profile,
            &info,
            cluster,
            self.config.percentage_of_nodes_to_score,
            &mut state.cursor,
        );
        match result {
            Ok(index) => {
                let node = state.nodes[index].name.clone();
                state.place(key, PodUsage::of(&info, &node), true);
                state.queue.done(key);
                state.nominated.remove(key);
                Some(node)
            }
            Err(mut error) => {
                state.queue.failed(key, true, now);
                let nominated = match preemption::plan(&self.profile, &info, cluster) {
                    Ok(plan) => {
                        error.preemption = Some(String::new());
                        let node = state.nodes[plan.node].name.clone();
                        let usage = PodUsage::of(&info, &node);
                        state
                            .nominated
                            .insert(key.to_string(), (node.clone(), usage));
                        self.preempt(&pod, &node, plan.victims);
                        Some(node)
                    }
                    Err(why) => {
                        error.preemption = Some(why);
                        None
                    }
                };
                self.failed(pod, &error, nominated);
                None
            }
        }
    }

    fn failed(&self, pod: Arc<Pod>, error: &FitError, nominated: Option<String>) {
        let record = Record {
            pod,
            failure: Some(error.to_string()),
            node: nominated.unwrap_or_default(),
        };
        if self.records.try_send(record).is_err() {
            tracing::debug!("scheduler: too many records waiting; one dropped");
        }
    }

    /// Evicts `victims` from `node` for `preemptor`, as upstream does:
    /// each gets a DisruptionTarget condition, a Preempted event and a
    /// graceful delete.
    fn preempt(&self, preemptor: &Pod, node: &str, victims: Vec<info::PodUsage>) {
        let client = self.client.clone();
        let scheduler = self.config.scheduler_name.clone();
        let instance = self.config.instance.clone();
        let preemptor_uid = preemptor.metadata.uid.clone().unwrap_or_default();
        let node = node.to_string();
        tokio::spawn(async move {
            for victim in victims {
                let resident = &victim.resident;
                let name = resident.key.split_once('/').map_or("", |(_, n)| n);
                let pods: Api<Pod> = Api::namespaced(client.clone(), &resident.namespace);
                let condition = json!({"status": {"conditions": [{
                    "type": "DisruptionTarget",
                    "status": "True",
                    "reason": "PreemptionByScheduler",
                    "message": format!("{scheduler}: preempting to accommodate a higher priority pod"),
                    "lastTransitionTime": Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
                }]}});
                if let Err(err) = pods
                    .patch_status(name, &PatchParams::default(), &Patch::Strategic(&condition))
                    .await
                {
                    tracing::debug!(pod = %resident.key, error = %err, "scheduler: marking a victim failed");
                }
                let event = event(
                    &scheduler,
                    &instance,
                    EventOf {
                        namespace: &resident.namespace,
                        name,
                        uid: Some(resident.uid.clone()),
                        resource_version: None,
                    },
                    ("Normal", "Preempted", "Preempting"),
                    format!("Preempted by pod {preemptor_uid} on node {node}"),
                );
                let events: Api<Event> = Api::namespaced(client.clone(), &resident.namespace);
                if let Err(err) = events.create(&PostParams::default(), &event).await {
                    tracing::debug!(pod = %resident.key, error = %err, "scheduler: event not recorded");
                }
                match pods.delete(name, &Default::default()).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(status)) if status.code == 404 => {}
                    Err(err) => {
                        tracing::warn!(pod = %resident.key, error = %err, "scheduler: evicting a victim failed")
                    }
                }
            }
        });
    }

    async fn bind(&self, key: &str, pod: Arc<Pod>, node: &str) {
        let namespace = pod.namespace().unwrap_or_default();
        let name = pod.name_any();
        let binding = json!({
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": {"name": name, "namespace": namespace, "uid": pod.metadata.uid},
            "target": {"apiVersion": "v1", "kind": "Node", "name": node},
        });
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &namespace);
        let result = pods
            .create_subresource::<_, serde_json::Value>(
                "binding",
                &name,
                &PostParams::default(),
                &binding,
            )
            .await;
        match result {
            Ok(_) => {
                let record = Record {
                    pod,
                    failure: None,
                    node: node.to_string(),
                };
                let _ = self.records.try_send(record);
            }
            Err(err) => {
                let gone = matches!(&err, kube::Error::Api(status) if status.code == 404);
                tracing::debug!(pod = key, node, error = %err, "scheduler: binding failed");
                let mut state = self.state.lock().expect("scheduler state");
                if state.assumed(key) {
                    state.forget(key);
                    if !gone {
                        let priority = pod.spec.as_ref().and_then(|s| s.priority).unwrap_or(0);
                        let attempts = state.queue.attempts(key) + 1;
                        state
                            .queue
                            .retry(key, pod, priority, attempts, Instant::now());
                    }
                }
                drop(state);
                self.wake.notify_one();
            }
        }
    }
}

/// Applies one watch event of a kind to the state, through `apply`
/// and `delete`; a relist removes what it no longer holds.
async fn watch<K>(
    scheduler: Arc<Scheduler>,
    api: Api<K>,
    synced: tokio::sync::watch::Sender<bool>,
    key: fn(&K) -> String,
    apply: fn(&mut State, K, &str, Instant),
    delete: fn(&mut State, &str, Instant),
    known: fn(&State) -> Vec<String>,
) where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
{
    let mut stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    let mut seen: Option<HashSet<String>> = None;
    while let Some(event) = stream.next().await {
        let event = match event {
            Ok(event) => event,
            Err(err) => {
                tracing::debug!(error = %err, "scheduler: watch failed; retrying");
                continue;
            }
        };
        let now = Instant::now();
        let name = scheduler.config.scheduler_name.clone();
        let mut state = scheduler.state.lock().expect("scheduler state");
        match event {
            watcher::Event::Init => seen = Some(HashSet::new()),
            watcher::Event::InitApply(object) => {
                if let Some(seen) = seen.as_mut() {
                    seen.insert(key(&object));
                }
                apply(&mut state, object, &name, now);
            }
            watcher::Event::InitDone => {
                if let Some(seen) = seen.take() {
                    for gone in known(&state).into_iter().filter(|k| !seen.contains(k)) {
                        delete(&mut state, &gone, now);
                    }
                }
                drop(state);
                synced.send_replace(true);
            }
            watcher::Event::Apply(object) => apply(&mut state, object, &name, now),
            watcher::Event::Delete(object) => delete(&mut state, &key(&object), now),
        }
        scheduler.wake.notify_one();
    }
}

async fn watch_nodes(scheduler: Arc<Scheduler>, synced: tokio::sync::watch::Sender<bool>) {
    let api: Api<Node> = Api::all(scheduler.client.clone());
    watch(
        scheduler,
        api,
        synced,
        |node| node.name_any(),
        |state, node, _, now| {
            if state.upsert_node(&node) {
                state.queue.move_all(now);
            }
        },
        |state, name, _| state.remove_node(name),
        |state| state.index.keys().cloned().collect(),
    )
    .await;
}

async fn watch_pods(scheduler: Arc<Scheduler>, synced: tokio::sync::watch::Sender<bool>) {
    let api: Api<Pod> = Api::all(scheduler.client.clone());
    watch(
        scheduler,
        api,
        synced,
        |pod| format!("{}/{}", pod.namespace().unwrap_or_default(), pod.name_any()),
        |state, pod, name, now| state.on_pod(pod, name, now),
        |state, key, now| state.on_pod_deleted(key, now),
        |state| state.placed.keys().cloned().collect(),
    )
    .await;
}

async fn watch_namespaces(scheduler: Arc<Scheduler>, synced: tokio::sync::watch::Sender<bool>) {
    let api: Api<Namespace> = Api::all(scheduler.client.clone());
    watch(
        scheduler,
        api,
        synced,
        |namespace| namespace.name_any(),
        |state, namespace, _, now| {
            let labels = namespace.metadata.labels.clone().unwrap_or_default();
            let name = namespace.name_any();
            if state.namespaces.get(&name) != Some(&labels) {
                state.namespaces.insert(name, labels);
                state.queue.move_all(now);
            }
        },
        |state, name, _| {
            state.namespaces.remove(name);
        },
        |state| state.namespaces.keys().cloned().collect(),
    )
    .await;
}

/// The pod an event is about.
struct EventOf<'a> {
    namespace: &'a str,
    name: &'a str,
    uid: Option<String>,
    resource_version: Option<String>,
}

/// An events.k8s.io Event about a pod: (type, reason, action) and note.
fn event(
    controller: &str,
    instance: &str,
    about: EventOf<'_>,
    (kind, reason, action): (&str, &str, &str),
    note: String,
) -> Event {
    let now = Timestamp::now();
    Event {
        metadata: ObjectMeta {
            name: Some(format!("{}.{:x}", about.name, now.as_nanosecond())),
            namespace: Some(about.namespace.to_string()),
            ..ObjectMeta::default()
        },
        event_time: Some(MicroTime(now)),
        type_: Some(kind.into()),
        reason: Some(reason.into()),
        action: Some(action.into()),
        note: Some(note),
        reporting_controller: Some(controller.to_string()),
        reporting_instance: Some(instance.to_string()),
        regarding: Some(k8s_openapi::api::core::v1::ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            name: Some(about.name.to_string()),
            namespace: Some(about.namespace.to_string()),
            uid: about.uid,
            resource_version: about.resource_version,
            ..Default::default()
        }),
        ..Event::default()
    }
}

/// Writes events (Scheduled, FailedScheduling) and the PodScheduled
/// condition of pods that did not fit.
async fn record(
    scheduler: Arc<Scheduler>,
    receiver: Arc<tokio::sync::Mutex<mpsc::Receiver<Record>>>,
) {
    loop {
        let Some(record) = receiver.lock().await.recv().await else {
            return;
        };
        let pod = &record.pod;
        let namespace = pod.namespace().unwrap_or_default();
        let name = pod.name_any();
        let (kind, reason, action, note) = match &record.failure {
            Some(message) => ("Warning", "FailedScheduling", "Scheduling", message.clone()),
            None => (
                "Normal",
                "Scheduled",
                "Binding",
                format!(
                    "Successfully assigned {namespace}/{name} to {}",
                    record.node
                ),
            ),
        };
        if let Some(message) = &record.failure {
            let current = pod.status.as_ref();
            let condition = current
                .and_then(|s| s.conditions.as_ref())
                .and_then(|c| c.iter().find(|c| c.type_ == "PodScheduled"));
            let unchanged = condition.is_some_and(|c| {
                c.status == "False"
                    && c.reason.as_deref() == Some("Unschedulable")
                    && c.message.as_deref() == Some(message)
            });
            // A failed pod's node is the one nominated for it, if any.
            let nominated = Some(record.node.as_str()).filter(|n| !n.is_empty());
            let renominated = nominated.is_some()
                && current.and_then(|s| s.nominated_node_name.as_deref()) != nominated;
            if !unchanged || renominated {
                let mut patch = json!({"status": {"conditions": [{
                    "type": "PodScheduled",
                    "status": "False",
                    "reason": "Unschedulable",
                    "message": message,
                    "lastProbeTime": null,
                    "lastTransitionTime": Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
                }]}});
                if let Some(node) = nominated {
                    patch["status"]["nominatedNodeName"] = json!(node);
                }
                let pods: Api<Pod> = Api::namespaced(scheduler.client.clone(), &namespace);
                if let Err(err) = pods
                    .patch_status(&name, &PatchParams::default(), &Patch::Strategic(&patch))
                    .await
                {
                    tracing::debug!(pod = %name, error = %err, "scheduler: status update failed");
                }
            }
        }
        let event = event(
            &scheduler.config.scheduler_name,
            &scheduler.config.instance,
            EventOf {
                namespace: &namespace,
                name: &name,
                uid: pod.metadata.uid.clone(),
                resource_version: pod.metadata.resource_version.clone(),
            },
            (kind, reason, action),
            note,
        );
        let events: Api<Event> = Api::namespaced(scheduler.client.clone(), &namespace);
        if let Err(err) = events.create(&PostParams::default(), &event).await {
            tracing::debug!(pod = %name, error = %err, "scheduler: event not recorded");
        }
    }
}
