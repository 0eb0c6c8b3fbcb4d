//! Pod workers, as kubelet's: one task per pod, woken by the pod's changes
//! in the API (a watch of the pods bound to this node), by the runtime's
//! (a relist every second that compares containers' states, kubelet's
//! PLEG), and by its own timers (back-offs). Each sync observes the
//! runtime, plans ([`crate::pod::plan`]), acts through CRI, and reports
//! the status when it changed. A pod gone from the API has its containers
//! stopped and removed, once every source of pods has been read (until
//! then, as kubelet's sourcesReady, what the runtime runs is not an
//! orphan: an agent restarting adopts its pods' containers).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures::StreamExt;
use k8s_cri::v1 as cri;
use k8s_openapi::api::core::v1::{Container, ObjectReference, Pod, Secret};
use kube::Client;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::watcher;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tug_controllers::events::{self, Recorder};

use crate::Config;
use crate::cri::{CONTAINER_NAME, POD_NAME, POD_NAMESPACE, POD_UID, Runtime};
use crate::pod::{self, Action, Memory, Nanos, Observed, RuntimeContainer, Sandbox, State};
use crate::pressure::{self, NodePressure};
use crate::{oom, probes, registries, static_pods, volumes};

/// How often the runtime is relisted.
const RELIST: Duration = Duration::from_secs(1);
/// How long after a runtime event the relist waits for the events that
/// come with it.
const EVENT_BATCH: Duration = Duration::from_millis(20);
/// How often a pod is synced when nothing wakes it.
const RESYNC: Duration = Duration::from_secs(10);
/// Grace given to the containers of a pod removed from the API.
const ORPHAN_GRACE: i64 = 2;
/// The sources of pods, as bits of [`Shared::sources`]: the API's list of
/// the node's pods, and the static pods' manifest directory.
const FROM_API: u8 = 1;
const FROM_FILES: u8 = 2;
const ALL_SOURCES: u8 = FROM_API | FROM_FILES;
/// How long after a container was killed its status is asked again, for
/// an OOM kill the runtime or the kernel log reader learns of late.
const OOM_RECHECK: Nanos = 15 * 1_000_000_000;
/// Pods of this priority or more are critical (system-cluster-critical).
const CRITICAL_PRIORITY: i32 = 2_000_000_000;
/// Syncs that act, one after another, before a worker pauses.
const BURST: usize = 20;

struct Shared {
    client: Client,
    config: Config,
    runtime: Runtime,
    recorder: Recorder,
    /// The pods bound to this node, by UID, as last seen.
    pods: Mutex<HashMap<String, Arc<Pod>>>,
    /// Each pod worker's wake-up channel.
    workers: Mutex<HashMap<String, mpsc::Sender<()>>>,
    probes: Arc<probes::Results>,
    /// The node's memory, in bytes, for the containers' oom_score_adj.
    memory_capacity: u64,
    /// The lowest oom_score_adj the kernel lets this process give.
    oom_floor: i64,
    /// The containers the kernel logged OOM kills in.
    oom_kills: Arc<oom::Kills>,
    /// The node's pressure, for admission and evictions.
    pressure: Arc<NodePressure>,
    /// Pods to evict (by UID), with the message why.
    evictions: Mutex<HashMap<String, String>>,
    /// The static pods' UIDs, and their mirror pods' UIDs once they exist.
    statics: Mutex<HashMap<String, Option<String>>>,
    /// Wakes the static pods' manager when a mirror pod changes.
    mirror_changed: Arc<tokio::sync::Notify>,
    /// The sources of pods read at least once (bits `FROM_*`).
    sources: tokio::sync::watch::Sender<u8>,
}

/// The static pods' manager's view of the workers.
struct StaticHost(Arc<Shared>);

impl static_pods::Host for StaticHost {
    fn set_static(&self, pods: std::collections::BTreeMap<String, Pod>) {
        let shared = &self.0;
        shared.read(FROM_FILES);
        let mut changed: Vec<String> = Vec::new();
        {
            let mut statics = lock(&shared.statics);
            let mut all = lock(&shared.pods);
            statics.retain(|uid, _| {
                let keep = pods.contains_key(uid);
                if !keep {
                    all.remove(uid);
                    changed.push(uid.clone());
                }
                keep
            });
            for (uid, pod) in pods {
                statics.entry(uid.clone()).or_insert(None);
                if !all.contains_key(&uid) {
                    all.insert(uid.clone(), Arc::new(pod));
                    changed.push(uid);
                }
            }
        }
        for uid in changed {
            shared.wake(&uid);
        }
    }

    fn set_mirror(&self, uid: &str, mirror: Option<String>) {
        let shared = &self.0;
        let changed = match lock(&shared.statics).get_mut(uid) {
            Some(current) if *current != mirror => {
                *current = mirror;
                true
            }
            _ => false,
        };
        if changed {
            shared.wake(uid);
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Shared {
    /// Records that `source` has been read.
    fn read(&self, source: u8) {
        self.sources.send_if_modified(|read| {
            let before = *read;
            *read |= source;
            *read != before
        });
    }

    /// Whether every source of pods has been read: a pod none of them
    /// names is then gone, not yet to be heard of.
    fn sources_ready(&self) -> bool {
        *self.sources.borrow() == ALL_SOURCES
    }

    /// Wakes the worker of `uid`, starting one if there is none.
    fn wake(self: &Arc<Self>, uid: &str) {
        let mut workers = lock(&self.workers);
        if let Some(worker) = workers.get(uid) {
            let _ = worker.try_send(());
            return;
        }
        let (sender, receiver) = mpsc::channel(1);
        workers.insert(uid.to_string(), sender);
        tokio::spawn(work(self.clone(), uid.to_string(), receiver));
    }
}

/// Runs the pod workers until `shutdown`.
pub async fn run(
    client: Client,
    config: Config,
    runtime: Runtime,
    pressure: Arc<NodePressure>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let recorder =
        Recorder::start(client.clone(), config.node_name.clone()).for_component("kubelet");
    let shared = Arc::new(Shared {
        client: client.clone(),
        config: config.clone(),
        runtime,
        recorder,
        pods: Mutex::new(HashMap::new()),
        workers: Mutex::new(HashMap::new()),
        probes: Arc::new(probes::Results::default()),
        memory_capacity: crate::node::Machine::memory_bytes(),
        oom_floor: oom_score_floor(),
        oom_kills: oom::kills(),
        pressure,
        evictions: Mutex::new(HashMap::new()),
        statics: Mutex::new(HashMap::new()),
        mirror_changed: Arc::new(tokio::sync::Notify::new()),
        sources: tokio::sync::watch::Sender::new(0),
    });
    tokio::spawn(static_pods::run(
        client.clone(),
        config.agent_dir().join("pod-manifests"),
        config.node_name.clone(),
        Arc::new(StaticHost(shared.clone())),
        shared.mirror_changed.clone(),
        shutdown.clone(),
    ));
    tokio::spawn(relist(shared.clone(), shutdown.clone()));
    tokio::spawn(evict(shared.clone(), shutdown.clone()));
    tokio::spawn(local_storage(shared.clone(), shutdown.clone()));
    let api: Api<Pod> = Api::all(client);
    let selector = format!("spec.nodeName={}", config.node_name);
    let mut stream = watcher(api, watcher::Config::default().fields(&selector)).boxed();
    let mut listed: Vec<String> = Vec::new();
    loop {
        let event = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            event = stream.next() => event,
        };
        match event {
            None => return Ok(()),
            Some(Err(err)) => {
                tracing::warn!(error = %err, "watching this node's pods");
            }
            Some(Ok(watcher::Event::Init)) => listed.clear(),
            // Mirror pods stand for static pods, which run from their files.
            Some(Ok(
                watcher::Event::InitApply(pod)
                | watcher::Event::Apply(pod)
                | watcher::Event::Delete(pod),
            )) if static_pods::is_mirror(&pod) => shared.mirror_changed.notify_one(),
            Some(Ok(watcher::Event::InitApply(pod))) => {
                let uid = pod.metadata.uid.clone().unwrap_or_default();
                listed.push(uid.clone());
                lock(&shared.pods).insert(uid, kept(pod));
            }
            Some(Ok(watcher::Event::InitDone)) => {
                shared.read(FROM_API);
                let gone: Vec<String> = {
                    let statics = lock(&shared.statics);
                    let mut pods = lock(&shared.pods);
                    let kept = |uid: &String| listed.contains(uid) || statics.contains_key(uid);
                    let gone = pods.keys().filter(|uid| !kept(uid)).cloned().collect();
                    pods.retain(|uid, _| kept(uid));
                    gone
                };
                for uid in listed.iter().chain(&gone) {
                    shared.wake(uid);
                }
            }
            Some(Ok(watcher::Event::Apply(pod))) => {
                let uid = pod.metadata.uid.clone().unwrap_or_default();
                lock(&shared.pods).insert(uid.clone(), kept(pod));
                shared.wake(&uid);
            }
            Some(Ok(watcher::Event::Delete(pod))) => {
                let uid = pod.metadata.uid.clone().unwrap_or_default();
                lock(&shared.pods).remove(&uid);
                shared.wake(&uid);
            }
        }
    }
}

/// Evicts one pod each time the pressure loop finds the node short of a
/// resource after node-level reclaim (every 10 s while it lasts), as
/// kubelet's eviction manager: critical pods never; first those using
/// more than they request, then the lowest priority, then the largest
/// use above the request (memory: the containers' working sets; disk:
/// the pod's volumes, its containers' writable layers and logs; PIDs are
/// not measured per pod, so BestEffort pods count as over). The message
/// names each container using more than it requests, as kubelet's.
async fn evict(shared: Arc<Shared>, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = shared.pressure.evict.notified() => {}
        }
        let Some(starved) = shared.pressure.starved() else {
            continue;
        };
        let pods: Vec<Arc<Pod>> = lock(&shared.pods).values().cloned().collect();
        let pending = lock(&shared.evictions).len();
        if pending > 0 {
            continue;
        }
        let resource = starved.signal.resource();
        let measured = matches!(resource, "memory" | "ephemeral-storage");
        let (uses, containers) = if measured {
            tokio::try_join!(
                shared.runtime.container_use(),
                shared.runtime.containers(None)
            )
            .unwrap_or_default()
        } else {
            Default::default()
        };
        let mut ranked = Vec::new();
        for pod in pods {
            let status = pod.status.as_ref();
            let running = status.and_then(|s| s.phase.as_deref()) == Some("Running");
            let priority = pod.spec.as_ref().and_then(|s| s.priority).unwrap_or(0);
            if !running
                || pod.metadata.deletion_timestamp.is_some()
                || priority >= CRITICAL_PRIORITY
            {
                continue;
            }
            let uid = pod.metadata.uid.clone().unwrap_or_default();
            let requested: u64 = pod
                .spec
                .iter()
                .flat_map(|s| &s.containers)
                .filter_map(|c| c.resources.as_ref()?.requests.as_ref()?.get(resource))
                .filter_map(|q| tug_api::quantity::value(&q.0))
                .map(|v| v.max(0) as u64)
                .sum();
            // Each running container's use of the resource, by name.
            let memory = resource == "memory";
            let mut by_container = running_use(&containers, &uses, &uid, |u| {
                if memory {
                    u.working_set
                } else {
                    u.writable_layer
                }
            });
            let mut used: u64 = by_container.values().sum();
            if resource == "ephemeral-storage" {
                let volumes = volumes::pod_dir(&shared.config, &uid);
                let logs = pod_log_dir(&shared.config, &pod);
                let names: Vec<String> = by_container.keys().cloned().collect();
                let (on_disk, logged) = tokio::task::spawn_blocking(move || {
                    (disk_use(&volumes), disk_uses(&logs, names))
                })
                .await
                .unwrap_or_default();
                for (name, bytes) in logged {
                    *by_container.entry(name).or_default() += bytes;
                    used += bytes;
                }
                used += on_disk;
            }
            let best_effort = status.and_then(|s| s.qos_class.as_deref()) == Some("BestEffort");
            let over = if measured {
                used > requested
            } else {
                best_effort
            };
            let above = used.saturating_sub(requested);
            ranked.push((
                (!over, priority, std::cmp::Reverse(above)),
                uid,
                pod,
                by_container,
            ));
        }
        ranked.sort_by_key(|a| a.0);
        if let Some((_, uid, pod, by_container)) = ranked.into_iter().next() {
            tracing::info!(pod = %uid, signal = ?starved.signal, "evicting a pod under node pressure");
            let message =
                starved.message() + &pressure::container_sentences(&pod, resource, &by_container);
            lock(&shared.evictions).insert(uid.clone(), message);
            shared.wake(&uid);
        }
    }
}

/// How often pods' use of the node's disk is measured against their
/// limits (kubelet's eviction manager's period).
const LOCAL_STORAGE_PERIOD: Duration = Duration::from_secs(10);

/// kubelet's local storage eviction: every period, the running pods with
/// a disk emptyDir's sizeLimit or a container's ephemeral-storage limit
/// are measured (emptyDirs, containers' writable layers and logs), and
/// each one over a limit is evicted, whatever the node's pressure.
async fn local_storage(shared: Arc<Shared>, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(LOCAL_STORAGE_PERIOD) => {}
        }
        let pods: Vec<Arc<Pod>> = lock(&shared.pods)
            .values()
            .filter(|pod| {
                let running =
                    pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running");
                running && pod.metadata.deletion_timestamp.is_none() && has_local_limits(pod)
            })
            .cloned()
            .collect();
        if pods.is_empty() {
            continue;
        }
        let (layers, containers) = match tokio::try_join!(
            shared.runtime.container_use(),
            shared.runtime.containers(None)
        ) {
            Ok(found) => found,
            Err(err) => {
                tracing::debug!(error = %format!("{err:#}"), "measuring containers' disk use");
                continue;
            }
        };
        for pod in pods {
            let uid = pod.metadata.uid.clone().unwrap_or_default();
            if lock(&shared.evictions).contains_key(&uid) {
                continue;
            }
            let mut usage = pressure::LocalUsage {
                containers: running_use(&containers, &layers, &uid, |u| u.writable_layer),
                ..Default::default()
            };
            let volumes = volumes::pod_dir(&shared.config, &uid)
                .join("volumes")
                .join("kubernetes.io~empty-dir");
            let logs = pod_log_dir(&shared.config, &pod);
            let names: Vec<String> = pod
                .spec
                .iter()
                .flat_map(|s| &s.containers)
                .map(|c| c.name.clone())
                .collect();
            let dirs: Vec<String> = pod
                .spec
                .iter()
                .flat_map(|s| s.volumes.iter().flatten())
                .filter(|v| v.empty_dir.is_some())
                .map(|v| v.name.clone())
                .collect();
            let measured = tokio::task::spawn_blocking(move || {
                (disk_uses(&logs, names), disk_uses(&volumes, dirs))
            })
            .await;
            let Ok((logs, dirs)) = measured else { continue };
            for (name, used) in logs {
                *usage.containers.entry(name).or_default() += used;
            }
            usage.empty_dirs.extend(dirs);
            if let Some(message) = pressure::over_local_limits(&pod, &usage) {
                tracing::info!(pod = %uid, %message, "evicting a pod over its local storage limits");
                lock(&shared.evictions).insert(uid.clone(), message);
                shared.wake(&uid);
            }
        }
    }
}

/// What the pod `uid`'s running containers use, by container name, as
/// `pick` reads it from the runtime's measures.
fn running_use(
    containers: &[cri::Container],
    uses: &HashMap<String, crate::cri::ContainerUse>,
    uid: &str,
    pick: impl Fn(&crate::cri::ContainerUse) -> u64,
) -> HashMap<String, u64> {
    let running = cri::ContainerState::ContainerRunning as i32;
    let mut by_name: HashMap<String, u64> = HashMap::new();
    for container in containers {
        if container.labels.get(POD_UID).map(String::as_str) != Some(uid)
            || container.state != running
        {
            continue;
        }
        if let (Some(name), Some(using)) = (
            container.labels.get(CONTAINER_NAME),
            uses.get(&container.id),
        ) {
            *by_name.entry(name.clone()).or_default() += pick(using);
        }
    }
    by_name
}

/// The directory of a pod's container logs.
fn pod_log_dir(config: &Config, pod: &Pod) -> std::path::PathBuf {
    config.log_dir().join(format!(
        "{}_{}_{}",
        pod.metadata.namespace.as_deref().unwrap_or_default(),
        pod.metadata.name.as_deref().unwrap_or_default(),
        pod.metadata.uid.as_deref().unwrap_or_default()
    ))
}

/// [`disk_use`] of each of `names` under `dir`.
fn disk_uses(dir: &std::path::Path, names: Vec<String>) -> Vec<(String, u64)> {
    names
        .into_iter()
        .map(|name| {
            let used = disk_use(&dir.join(&name));
            (name, used)
        })
        .collect()
}

/// Whether a pod has a disk emptyDir with a sizeLimit or a container
/// with an ephemeral-storage limit.
fn has_local_limits(pod: &Pod) -> bool {
    let Some(spec) = &pod.spec else {
        return false;
    };
    let sized = spec.volumes.iter().flatten().any(|v| {
        v.empty_dir
            .as_ref()
            .is_some_and(|e| e.size_limit.is_some() && e.medium.as_deref() != Some("Memory"))
    });
    sized
        || spec.containers.iter().any(|c| {
            c.resources
                .as_ref()
                .and_then(|r| r.limits.as_ref())
                .is_some_and(|l| l.contains_key("ephemeral-storage"))
        })
}

/// The bytes of the files under `dir`, on its own filesystem (tmpfs
/// volumes mounted in it are memory, not disk).
fn disk_use(dir: &std::path::Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(root) = std::fs::symlink_metadata(dir) else {
        return 0;
    };
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&path) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(meta) = entry.metadata() else { continue };
            if meta.dev() != root.dev() {
                continue;
            }
            if meta.is_dir() {
                stack.push(entry.path());
            } else {
                total += meta.blocks() * 512;
            }
        }
    }
    total
}

/// A pod as the agent keeps it: without managedFields, which it never
/// reads and which are often the larger part of the object.
fn kept(mut pod: Pod) -> Arc<Pod> {
    pod.metadata.managed_fields = None;
    Arc::new(pod)
}

/// Follows containerd's task events, reconnecting after a second when the
/// stream fails (containerd restarted), until `shutdown`.
async fn follow_events(
    runtime: Runtime,
    event: Arc<tokio::sync::Notify>,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            result = runtime.task_events(|| event.notify_one()) => {
                if let Err(err) = result {
                    tracing::debug!(error = %format!("{err:#}"), "following the runtime's events");
                }
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// Relists sandboxes and containers every second and wakes the workers of
/// pods whose runtime state changed (or that the API no longer has).
async fn relist(shared: Arc<Shared>, shutdown: CancellationToken) {
    // containerd's task events relist at once (a container started or
    // exited); the timer is the safety net.
    let event = Arc::new(tokio::sync::Notify::new());
    tokio::spawn(follow_events(
        shared.runtime.clone(),
        event.clone(),
        shutdown.clone(),
    ));
    // The first relist wakes the worker of every pod the runtime runs:
    // not before the sources say which pods are still wanted.
    let mut sources = shared.sources.subscribe();
    tokio::select! {
        _ = shutdown.cancelled() => return,
        _ = sources.wait_for(|read| *read == ALL_SOURCES) => {}
    }
    let mut previous: HashMap<String, (String, i32)> = HashMap::new();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(RELIST) => {}
            _ = event.notified() => {
                // Events come in bursts (create, start; exit, delete).
                tokio::time::sleep(EVENT_BATCH).await;
            }
        }
        let (sandboxes, containers) = match tokio::try_join!(
            shared.runtime.sandboxes(None),
            shared.runtime.containers(None)
        ) {
            Ok(listed) => listed,
            Err(err) => {
                tracing::debug!(error = %format!("{err:#}"), "relisting the runtime");
                continue;
            }
        };
        let mut current: HashMap<String, (String, i32)> = HashMap::new();
        for sandbox in &sandboxes {
            if let Some(uid) = sandbox.labels.get(POD_UID) {
                current.insert(sandbox.id.clone(), (uid.clone(), sandbox.state));
            }
        }
        for container in &containers {
            if let Some(uid) = container.labels.get(POD_UID) {
                current.insert(container.id.clone(), (uid.clone(), container.state));
            }
        }
        let mut changed: Vec<&String> = Vec::new();
        for (id, (uid, state)) in &current {
            if previous.get(id).is_none_or(|(_, before)| before != state) {
                changed.push(uid);
            }
        }
        for (id, (uid, _)) in &previous {
            if !current.contains_key(id) {
                changed.push(uid);
            }
        }
        changed.sort();
        changed.dedup();
        for uid in changed {
            shared.wake(uid);
        }
        previous = current;
    }
}

/// What a worker keeps between syncs.
#[derive(Default)]
struct Worker {
    memory: Memory,
    /// The status last written, and to which pod (a static pod's mirror
    /// may be replaced).
    reported: Option<Value>,
    reported_to: Option<String>,
    /// Sandbox addresses, by sandbox ID.
    ips: HashMap<String, String>,
    /// The probes running, by container ID.
    probers: HashMap<String, CancellationToken>,
    /// Containers' statuses as last asked, with the state they were
    /// listed in, by container ID.
    containers: HashMap<String, (i32, RuntimeContainer)>,
}

enum Next {
    /// Acted: sync again at once.
    Again,
    /// Nothing to do until woken, or until then.
    Wait(Option<Nanos>),
    /// The pod and everything it ran are gone.
    Done,
}

fn now_nanos() -> Nanos {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as Nanos)
}

async fn work(shared: Arc<Shared>, uid: String, mut wake: mpsc::Receiver<()>) {
    let mut worker = Worker::default();
    let mut burst = 0;
    loop {
        let pod = lock(&shared.pods).get(&uid).cloned();
        let wait = match sync(&shared, &uid, pod.as_deref(), &mut worker).await {
            Ok(Next::Again) if burst < BURST => {
                burst += 1;
                continue;
            }
            Ok(Next::Again) => Duration::from_secs(1),
            Ok(Next::Wait(at)) => at.map_or(RESYNC, |at| {
                Duration::from_nanos((at - now_nanos()).max(0) as u64).min(RESYNC)
            }),
            Ok(Next::Done) => {
                let mut workers = lock(&shared.workers);
                if !lock(&shared.pods).contains_key(&uid) {
                    workers.remove(&uid);
                    return;
                }
                Duration::ZERO
            }
            Err(err) => {
                tracing::warn!(pod = %uid, error = %format!("{err:#}"), "syncing a pod");
                Duration::from_secs(2)
            }
        };
        burst = 0;
        if wait > Duration::ZERO {
            let _ = tokio::time::timeout(wait, wake.recv()).await;
        }
    }
}

/// What the runtime holds for the pod `uid`.
async fn observe(
    shared: &Shared,
    uid: &str,
    pod: Option<&Pod>,
    worker: &mut Worker,
) -> anyhow::Result<Observed> {
    let runtime = &shared.runtime;
    let mut observed = Observed::default();
    for sandbox in runtime.sandboxes(Some(uid)).await? {
        let ready = sandbox.state == cri::PodSandboxState::SandboxReady as i32;
        let mut ip = worker.ips.get(&sandbox.id).cloned();
        if ready && ip.is_none() {
            ip = runtime
                .sandbox_status(&sandbox.id)
                .await?
                .and_then(|s| s.network)
                .map(|n| n.ip)
                .filter(|ip| !ip.is_empty());
            if let Some(ip) = &ip {
                worker.ips.insert(sandbox.id.clone(), ip.clone());
            }
        }
        observed.sandboxes.push(Sandbox {
            id: sandbox.id,
            attempt: sandbox.metadata.map_or(0, |m| m.attempt),
            ready,
            created_at: sandbox.created_at,
            ip,
        });
    }
    let listed = runtime.containers(Some(uid)).await?;
    worker
        .containers
        .retain(|id, _| listed.iter().any(|c| c.id == *id));
    for container in listed {
        // A container's status is asked again only when its state changed.
        if let Some((state, known)) = worker.containers.get(&container.id)
            && *state == container.state
        {
            observed.containers.push(known.clone());
            continue;
        }
        let Some(status) = runtime.container_status(&container.id).await? else {
            continue;
        };
        let listed_state = status.state;
        let state = match cri::ContainerState::try_from(status.state) {
            Ok(cri::ContainerState::ContainerCreated) => State::Created,
            Ok(cri::ContainerState::ContainerRunning) => State::Running,
            Ok(cri::ContainerState::ContainerExited) => State::Exited,
            _ => State::Unknown,
        };
        let metadata = status.metadata.unwrap_or_default();
        let mut message = status.message;
        if state == State::Exited && message.is_empty() {
            message = termination_message(
                &shared.config,
                pod,
                uid,
                &metadata.name,
                metadata.attempt,
                status.exit_code,
                &status.log_path,
            );
        }
        let mut reason = status.reason;
        if state == State::Exited
            && status.exit_code == 137
            && reason != "OOMKilled"
            && shared.oom_kills.killed(&status.id)
        {
            tracing::debug!(container = %status.id, "an OOM kill the runtime did not report");
            reason = "OOMKilled".to_string();
        }
        let known = RuntimeContainer {
            id: status.id,
            sandbox_id: container.pod_sandbox_id,
            name: metadata.name,
            attempt: metadata.attempt,
            state,
            created_at: status.created_at,
            started_at: status.started_at,
            finished_at: status.finished_at,
            exit_code: status.exit_code,
            reason,
            message,
            image_ref: status.image_ref,
            started: None,
            ready: None,
            probe_failed: false,
        };
        // containerd may learn of an OOM kill after the exit: a killed
        // container's status is asked again for a while.
        let killed = known.state == State::Exited
            && known.exit_code == 137
            && known.reason != "OOMKilled"
            && now_nanos() - known.finished_at < OOM_RECHECK;
        if !killed {
            worker
                .containers
                .insert(known.id.clone(), (listed_state, known.clone()));
        }
        observed.containers.push(known);
    }
    observed.sort();
    Ok(observed)
}

async fn sync(
    shared: &Arc<Shared>,
    uid: &str,
    pod: Option<&Pod>,
    worker: &mut Worker,
) -> anyhow::Result<Next> {
    let begun = Instant::now();
    let mut observed = observe(shared, uid, pod, worker).await?;
    tracing::trace!(pod = %uid, took_ms = begun.elapsed().as_millis() as u64, "observed");
    probe(shared, uid, pod, &mut observed, worker);
    let Some(pod) = pod else {
        if observed.sandboxes.is_empty() && observed.containers.is_empty() {
            return Ok(Next::Done);
        }
        if !shared.sources_ready() {
            return Ok(Next::Wait(None));
        }
        stop_all(shared, None, &observed, ORPHAN_GRACE).await;
        remove_all(&shared.runtime, &observed).await?;
        volumes::remove_dir(&volumes::pod_dir(&shared.config, uid))
            .context("removing the pod's volumes")?;
        return Ok(Next::Done);
    };
    let now = now_nanos();
    let api_status = serde_json::to_value(&pod.status).unwrap_or(Value::Null);
    let previous = worker.reported.clone().unwrap_or(api_status);
    let reported_phase = previous["phase"].as_str().unwrap_or("Pending").to_string();
    worker.memory.start_time = previous["startTime"]
        .as_str()
        .and_then(tug_api::format::parse_timestamp)
        .map(|seconds| seconds * 1_000_000_000);
    admit(shared, pod, &observed, worker, &reported_phase);
    let plan = pod::plan(pod, &observed, &worker.memory, &reported_phase, now);
    report(shared, pod, &observed, worker, &previous, now).await?;
    // A pod that is over gives its volumes back (an emptyDir's disk
    // with them), as kubelet tears down a terminated pod's volumes.
    if matches!(reported_phase.as_str(), "Succeeded" | "Failed")
        && !observed.any_running()
        && !observed.sandboxes.iter().any(|s| s.ready)
    {
        // (its containers' termination messages stay, read again after
        // a restart of the agent)
        let dir = volumes::pod_dir(&shared.config, uid).join("volumes");
        if dir.exists() {
            volumes::remove_dir(&dir).context("removing a finished pod's volumes")?;
        }
    }
    if plan.actions.is_empty() {
        // ConfigMaps, Secrets and the downward API change: their volumes
        // follow on every sync of a running pod.
        if reported_phase == "Running"
            && pod.metadata.deletion_timestamp.is_none()
            && let Err(err) = volumes::prepare(&shared.client, &shared.config, pod).await
        {
            tracing::debug!(pod = %uid, error = %err, "refreshing volumes");
        }
        return Ok(Next::Wait(plan.wake_at));
    }
    for action in plan.actions {
        let begun = Instant::now();
        let what = format!("{action:?}");
        execute(shared, pod, &observed, worker, action).await?;
        tracing::debug!(pod = %uid, action = %what, took_ms = begun.elapsed().as_millis() as u64, "acted");
    }
    Ok(Next::Again)
}

/// kubelet's admission under node pressure (once per pod, before it
/// runs), and the evictions the evictor chose: either ends the pod
/// Failed with reason Evicted, and a Warning event says why.
fn admit(shared: &Shared, pod: &Pod, observed: &Observed, worker: &mut Worker, reported: &str) {
    let evicted = lock(&shared.evictions).remove(&pod.metadata.uid.clone().unwrap_or_default());
    if let Some(message) = evicted
        && worker.memory.ending.is_none()
    {
        // kubelet's grace for evictions past a hard threshold: 1 s.
        end_evicted(shared, pod, worker, message.clone(), message, true, 1);
    }
    if worker.memory.admitted {
        return;
    }
    worker.memory.admitted = true;
    let fresh = reported == "Pending"
        && observed.sandboxes.is_empty()
        && observed.containers.is_empty()
        && pod.metadata.deletion_timestamp.is_none();
    if !fresh {
        return;
    }
    let critical = pod
        .spec
        .as_ref()
        .and_then(|s| s.priority)
        .is_some_and(|p| p >= CRITICAL_PRIORITY);
    let conditions = shared.pressure.conditions();
    if let Some(message) = pod::refused_under_pressure(pod, &conditions, critical) {
        let status = format!("Pod was rejected: {message}");
        end_evicted(shared, pod, worker, message, status, false, 0);
    }
}

/// Ends the pod Failed with reason Evicted: a Warning event says
/// `event`, the status `message`.
fn end_evicted(
    shared: &Shared,
    pod: &Pod,
    worker: &mut Worker,
    event: String,
    message: String,
    disruption: bool,
    grace: i64,
) {
    shared
        .recorder
        .event(events::reference(pod), events::WARNING, "Evicted", event);
    worker.memory.ending = Some(pod::Ending {
        reason: "Evicted",
        message,
        disruption,
        grace,
    });
}

/// Starts the probes of running containers that have some, stops those
/// of containers that stopped, and puts their results in `observed`.
fn probe(
    shared: &Arc<Shared>,
    uid: &str,
    pod: Option<&Pod>,
    observed: &mut Observed,
    worker: &mut Worker,
) {
    let running: Vec<&str> = observed
        .containers
        .iter()
        .filter(|c| {
            c.state == State::Running
                && pod.is_some_and(|p| p.metadata.deletion_timestamp.is_none())
        })
        .map(|c| c.id.as_str())
        .collect();
    worker.probers.retain(|id, stop| {
        let keep = running.contains(&id.as_str());
        if !keep {
            stop.cancel();
            shared.probes.forget(id);
        }
        keep
    });
    let Some(pod) = pod else {
        return;
    };
    let specs: Vec<&Container> = pod.spec.iter().flat_map(|s| s.containers.iter()).collect();
    for c in &mut observed.containers {
        let Some(spec) = specs.iter().find(|s| s.name == c.name) else {
            continue;
        };
        let kinds = [
            probes::Kind::Startup,
            probes::Kind::Liveness,
            probes::Kind::Readiness,
        ];
        if c.state == State::Running
            && !worker.probers.contains_key(&c.id)
            && kinds.iter().any(|k| k.of(spec).is_some())
        {
            let stop = CancellationToken::new();
            let target = probes::Target {
                container_id: c.id.clone(),
                pod_ip: observed_ip(&observed.sandboxes),
            };
            for kind in kinds {
                let Some(probe) = kind.of(spec) else {
                    continue;
                };
                let (shared_for_events, uid_owned) = (shared.clone(), uid.to_string());
                let reference = container_ref(pod, &spec.name, false);
                let changed = move |failure: Option<String>| {
                    if let Some(message) = failure {
                        shared_for_events.recorder.event(
                            reference.clone(),
                            events::WARNING,
                            "Unhealthy",
                            format!("{} probe failed: {message}", kind.name()),
                        );
                    }
                    shared_for_events.wake(&uid_owned);
                };
                tokio::spawn(probes::run(
                    shared.runtime.clone(),
                    shared.probes.clone(),
                    kind,
                    probe.clone(),
                    (*spec).clone(),
                    target.clone(),
                    stop.clone(),
                    changed,
                ));
            }
            worker.probers.insert(c.id.clone(), stop);
        }
        let state = shared.probes.get(&c.id);
        if spec.startup_probe.is_some() {
            c.started = Some(state.started.unwrap_or(false));
        }
        if spec.readiness_probe.is_some() {
            c.ready = Some(state.ready.unwrap_or(false));
        }
        c.probe_failed = state.failed;
    }
}

fn observed_ip(sandboxes: &[Sandbox]) -> Option<std::net::IpAddr> {
    sandboxes
        .iter()
        .find(|s| s.ready)
        .and_then(|s| s.ip.as_deref())
        .and_then(|ip| ip.parse().ok())
}

/// Writes the pod's status if it changed.
async fn report(
    shared: &Arc<Shared>,
    pod: &Pod,
    observed: &Observed,
    worker: &mut Worker,
    previous: &Value,
    now: Nanos,
) -> anyhow::Result<()> {
    let node_ip = shared.config.node_ip.to_string();
    let context = pod::Context {
        node_ip: &node_ip,
        now,
    };
    let status = pod::status(pod, observed, &worker.memory, previous, &context);
    for error in worker.memory.pull_errors.values_mut() {
        error.fresh = false;
    }
    // A static pod's status goes to its mirror pod, once there is one.
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let target = match lock(&shared.statics).get(&uid) {
        Some(Some(mirror)) => mirror.clone(),
        Some(None) => return Ok(()),
        None => uid,
    };
    if worker.reported.as_ref() == Some(&status) && worker.reported_to.as_ref() == Some(&target) {
        return Ok(());
    }
    crash_loop_events(shared, pod, previous, &status);
    let api: Api<Pod> = Api::namespaced(
        shared.client.clone(),
        pod.metadata.namespace.as_deref().unwrap_or("default"),
    );
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    match api
        .patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": status})),
        )
        .await
    {
        Ok(_) => {
            worker.reported = Some(status);
            worker.reported_to = Some(target);
            Ok(())
        }
        Err(kube::Error::Api(response)) if response.code == 404 => Ok(()),
        Err(err) => Err(err).context("writing the pod's status"),
    }
}

/// A BackOff event for each container that has just entered
/// CrashLoopBackOff or ImagePullBackOff.
fn crash_loop_events(shared: &Shared, pod: &Pod, previous: &Value, status: &Value) {
    let waiting_reason = |status: &Value, field: &str, name: &str| {
        status[field]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["name"] == name)
            .and_then(|c| c["state"]["waiting"]["reason"].as_str())
            .map(str::to_string)
    };
    let init = pod
        .spec
        .iter()
        .flat_map(|s| s.init_containers.iter().flatten())
        .map(|c| (c, true));
    let regular = pod
        .spec
        .iter()
        .flat_map(|s| &s.containers)
        .map(|c| (c, false));
    for (container, init) in init.chain(regular) {
        let field = if init {
            "initContainerStatuses"
        } else {
            "containerStatuses"
        };
        let now = waiting_reason(status, field, &container.name);
        if waiting_reason(previous, field, &container.name) == now {
            continue;
        }
        let reference = container_ref(pod, &container.name, init);
        match now.as_deref() {
            Some("CrashLoopBackOff") => shared.recorder.event(
                reference,
                events::WARNING,
                "BackOff",
                format!(
                    "Back-off restarting failed container {} in pod {}",
                    container.name,
                    pod_description(pod)
                ),
            ),
            Some("ImagePullBackOff") => shared.recorder.event(
                reference,
                events::NORMAL,
                "BackOff",
                format!(
                    "Back-off pulling image {:?}",
                    container.image.as_deref().unwrap_or_default()
                ),
            ),
            _ => {}
        }
    }
}

fn pod_description(pod: &Pod) -> String {
    format!(
        "{}_{}({})",
        pod.metadata.name.as_deref().unwrap_or_default(),
        pod.metadata.namespace.as_deref().unwrap_or_default(),
        pod.metadata.uid.as_deref().unwrap_or_default()
    )
}

/// The pod as events name it, at one of its containers.
fn container_ref(pod: &Pod, container: &str, init: bool) -> ObjectReference {
    let mut reference = pod_ref(pod);
    reference.field_path = Some(format!(
        "spec.{}{{{container}}}",
        if init { "initContainers" } else { "containers" }
    ));
    reference
}

fn pod_ref(pod: &Pod) -> ObjectReference {
    events::reference(pod)
}

async fn execute(
    shared: &Arc<Shared>,
    pod: &Pod,
    observed: &Observed,
    worker: &mut Worker,
    action: Action,
) -> anyhow::Result<()> {
    let runtime = &shared.runtime;
    match action {
        Action::KillPod { grace } => {
            stop_all(shared, Some(pod), observed, grace).await;
        }
        Action::RemovePod => {
            remove_all(runtime, observed).await?;
            let uid = pod.metadata.uid.as_deref().unwrap_or_default();
            volumes::remove_dir(&volumes::pod_dir(&shared.config, uid))
                .context("removing the pod's volumes")?;
            if pod.metadata.deletion_timestamp.is_some() {
                let api: Api<Pod> = Api::namespaced(
                    shared.client.clone(),
                    pod.metadata.namespace.as_deref().unwrap_or("default"),
                );
                let params = DeleteParams {
                    grace_period_seconds: Some(0),
                    preconditions: Some(Preconditions {
                        uid: pod.metadata.uid.clone(),
                        resource_version: None,
                    }),
                    ..Default::default()
                };
                let name = pod.metadata.name.as_deref().unwrap_or_default();
                match api.delete(name, &params).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(response)) if matches!(response.code, 404 | 409) => {}
                    Err(err) => return Err(err).context("deleting the pod"),
                }
            }
        }
        Action::CreateSandbox { attempt } => {
            if attempt > 0 {
                shared.recorder.event(
                    pod_ref(pod),
                    events::NORMAL,
                    "SandboxChanged",
                    "Pod sandbox changed, it will be killed and re-created.".into(),
                );
            }
            let config = sandbox_config(&shared.config, pod, attempt)?;
            if let Err(err) = runtime.run_sandbox(config).await {
                shared.recorder.event(
                    pod_ref(pod),
                    events::WARNING,
                    "FailedCreatePodSandBox",
                    format!("Failed to create pod sandbox: {err:#}"),
                );
                return Err(err).context("creating the pod sandbox");
            }
        }
        Action::StartInit { index, attempt } => {
            let spec = pod.spec.as_ref().context("the pod has no spec")?;
            let container = &spec.init_containers.as_deref().unwrap_or_default()[index];
            start(shared, pod, observed, worker, container, attempt, true).await?;
        }
        Action::Start { index, attempt } => {
            let spec = pod.spec.as_ref().context("the pod has no spec")?;
            start(
                shared,
                pod,
                observed,
                worker,
                &spec.containers[index],
                attempt,
                false,
            )
            .await?;
        }
        Action::KillContainer { id, grace } => {
            if let Some(c) = observed.containers.iter().find(|c| c.id == id) {
                let kind = if shared.probes.get(&id).started == Some(false) {
                    "startup"
                } else {
                    "liveness"
                };
                let why = format!(
                    "Container {} failed {kind} probe, will be restarted",
                    c.name
                );
                let ip = observed_ip(&observed.sandboxes);
                stop_container(shared, Some(pod), c, grace, ip, Some(why)).await;
            }
        }
        Action::RemoveContainer { id } => runtime.remove_container(&id).await?,
    }
    Ok(())
}

/// Stops every container of the pod at once (SIGTERM, SIGKILL after
/// `grace` seconds), then its sandboxes.
async fn stop_all(shared: &Shared, pod: Option<&Pod>, observed: &Observed, grace: i64) {
    let ip = observed_ip(&observed.sandboxes);
    let stops = observed
        .containers
        .iter()
        .filter(|c| c.state != State::Exited)
        .map(|c| stop_container(shared, pod, c, grace, ip, None));
    futures::future::join_all(stops).await;
    for sandbox in observed.sandboxes.iter().filter(|s| s.ready) {
        if let Err(err) = shared.runtime.stop_sandbox(&sandbox.id).await {
            tracing::warn!(error = %format!("{err:#}"), "stopping a pod sandbox");
        }
    }
}

/// The least a container gets to stop after its preStop hook used up its
/// grace period, as kubelet's minimumGracePeriodInSeconds.
const MINIMUM_GRACE: i64 = 2;

/// Stops one container as kubelet does: a Killing event (saying `why`,
/// or "Stopping container"), its preStop hook (within the grace period),
/// then SIGTERM and SIGKILL after what is left.
async fn stop_container(
    shared: &Shared,
    pod: Option<&Pod>,
    c: &RuntimeContainer,
    grace: i64,
    ip: Option<std::net::IpAddr>,
    why: Option<String>,
) {
    let mut grace = grace;
    if let Some(pod) = pod {
        let init = is_init(pod, &c.name);
        let reference = container_ref(pod, &c.name, init);
        shared.recorder.event(
            reference.clone(),
            events::NORMAL,
            "Killing",
            why.unwrap_or_else(|| format!("Stopping container {}", c.name)),
        );
        let spec = pod
            .spec
            .iter()
            .flat_map(|s| s.containers.iter())
            .find(|s| s.name == c.name);
        let pre_stop = spec.and_then(|s| s.lifecycle.as_ref()?.pre_stop.as_ref());
        if let (Some(spec), Some(pre_stop)) = (spec, pre_stop)
            && c.state == State::Running
            && grace > 0
        {
            let started = Instant::now();
            let target = probes::Target {
                container_id: c.id.clone(),
                pod_ip: ip,
            };
            let limit = Duration::from_secs(grace as u64);
            if let Err(message) =
                probes::hook(&shared.runtime, pre_stop, spec, &target, limit).await
            {
                shared.recorder.event(
                    reference,
                    events::WARNING,
                    "FailedPreStopHook",
                    format!(
                        "PreStopHook failed for container {:?} in pod {}: {message}",
                        c.name,
                        pod_description(pod)
                    ),
                );
            }
            grace = (grace - started.elapsed().as_secs() as i64).max(MINIMUM_GRACE);
        }
    }
    if let Err(err) = shared.runtime.stop_container(&c.id, grace).await {
        tracing::warn!(error = %format!("{err:#}"), "stopping a container");
    }
}

fn is_init(pod: &Pod, name: &str) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.init_containers.as_ref())
        .is_some_and(|init| init.iter().any(|c| c.name == name))
}

async fn remove_all(runtime: &Runtime, observed: &Observed) -> anyhow::Result<()> {
    for container in &observed.containers {
        runtime.remove_container(&container.id).await?;
    }
    for sandbox in &observed.sandboxes {
        runtime.stop_sandbox(&sandbox.id).await?;
        runtime.remove_sandbox(&sandbox.id).await?;
    }
    if !observed.sandboxes.is_empty() {
        crate::network::request_sweep();
    }
    Ok(())
}

/// Pulls the container's image as its policy says; `Ok(false)` when the
/// image is not there (the failure recorded for the back-off).
/// The logins of the pod's imagePullSecrets; a Warning event names the
/// secrets that could not be read, and the pull goes on without them.
async fn pull_secret_logins(shared: &Shared, pod: &Pod) -> Vec<(String, registries::Credential)> {
    let names: Vec<String> = pod
        .spec
        .as_ref()
        .and_then(|s| s.image_pull_secrets.as_ref())
        .into_iter()
        .flatten()
        .map(|r| r.name.clone())
        .filter(|n| !n.is_empty())
        .collect();
    if names.is_empty() {
        return Vec::new();
    }
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let api: Api<Secret> = Api::namespaced(shared.client.clone(), &namespace);
    let mut logins = Vec::new();
    let mut missing = Vec::new();
    for name in names {
        match api.get_opt(&name).await {
            Ok(Some(secret)) => {
                let data: BTreeMap<String, Vec<u8>> = secret
                    .data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(key, value)| (key, value.0))
                    .collect();
                logins.extend(registries::secret_logins(&data));
            }
            Ok(None) | Err(_) => missing.push(name),
        }
    }
    if !missing.is_empty() {
        shared.recorder.event(
            pod_ref(pod),
            events::WARNING,
            "FailedToRetrieveImagePullSecret",
            format!(
                "Unable to retrieve some image pull secrets ({}); attempting to pull the image may not succeed.",
                missing.join(", ")
            ),
        );
    }
    logins
}

/// Pulls `image` with each login of the pod's pull secrets that matches
/// it, the most specific first, until one works; anonymously when none
/// matches.
async fn pull(shared: &Shared, pod: &Pod, image: &str) -> anyhow::Result<String> {
    let logins = pull_secret_logins(shared, pod).await;
    let matching = registries::matching(image, &logins);
    if matching.is_empty() {
        return shared.runtime.pull(image, None).await;
    }
    let mut failure = None;
    for login in &matching {
        match shared.runtime.pull(image, Some(login)).await {
            Ok(reference) => return Ok(reference),
            Err(err) => failure = Some(err),
        }
    }
    Err(failure.expect("at least one login was tried"))
}

async fn ensure_image(
    shared: &Shared,
    pod: &Pod,
    worker: &mut Worker,
    container: &Container,
    init: bool,
) -> anyhow::Result<Option<String>> {
    let image = container.image.clone().unwrap_or_default();
    let policy = container
        .image_pull_policy
        .as_deref()
        .unwrap_or("IfNotPresent");
    let reference = container_ref(pod, &container.name, init);
    let present = shared.runtime.image_id(&image).await?;
    let event = |type_, reason, message: String| {
        shared
            .recorder
            .event(reference.clone(), type_, reason, message);
    };
    if let Some(id) = present.clone().filter(|_| policy != "Always") {
        event(
            events::NORMAL,
            "Pulled",
            format!("Container image \"{image}\" already present on machine"),
        );
        worker.memory.pull_errors.remove(&container.name);
        return Ok(Some(id));
    }
    let (reason, failure) = if policy == "Never" {
        let message =
            format!("Container image \"{image}\" is not present with pull policy of Never");
        event(events::WARNING, "ErrImageNeverPull", message.clone());
        ("ErrImageNeverPull", message)
    } else {
        event(
            events::NORMAL,
            "Pulling",
            format!("Pulling image \"{image}\""),
        );
        let started = Instant::now();
        match pull(shared, pod, &image).await {
            Ok(reference) => {
                let took = pod::go_duration(started.elapsed());
                let size = shared.runtime.image_size(&reference).await.ok().flatten();
                event(
                    events::NORMAL,
                    "Pulled",
                    format!(
                        "Successfully pulled image \"{image}\" in {took} ({took} including waiting). Image size: {} bytes.",
                        size.unwrap_or(0)
                    ),
                );
                worker.memory.pull_errors.remove(&container.name);
                return Ok(Some(reference));
            }
            Err(err) => {
                let message = format!("Failed to pull image \"{image}\": {err:#}");
                event(events::WARNING, "Failed", message.clone());
                event(events::WARNING, "Failed", "Error: ErrImagePull".into());
                ("ErrImagePull", message)
            }
        }
    };
    let error = worker
        .memory
        .pull_errors
        .entry(container.name.clone())
        .or_default();
    error.reason = reason;
    error.message = failure;
    error.backoff.failed(now_nanos());
    error.fresh = true;
    Ok(None)
}

async fn start(
    shared: &Arc<Shared>,
    pod: &Pod,
    observed: &Observed,
    worker: &mut Worker,
    container: &Container,
    attempt: u32,
    init: bool,
) -> anyhow::Result<()> {
    let Some(image_id) = ensure_image(shared, pod, worker, container, init).await? else {
        return Ok(());
    };
    let sandbox = observed
        .sandbox()
        .filter(|s| s.ready)
        .context("the pod's sandbox is not ready")?;
    // The sandbox may have been stopped since it was observed (its
    // containers' exits come first): a container is not started in it
    // then, the next sync makes a new one.
    let ready = cri::PodSandboxState::SandboxReady as i32;
    let still = shared.runtime.sandbox_status(&sandbox.id).await?;
    if still.is_none_or(|s| s.state != ready) {
        anyhow::bail!("the pod's sandbox stopped");
    }
    let sandbox_config = sandbox_config(&shared.config, pod, sandbox.attempt)?;
    let reference = container_ref(pod, &container.name, init);
    let volumes = match volumes::prepare(&shared.client, &shared.config, pod).await {
        Ok(volumes) => volumes,
        Err(err) => {
            shared.recorder.event(
                pod_ref(pod),
                events::WARNING,
                "FailedMount",
                err.to_string(),
            );
            return Err(anyhow::anyhow!("{err}"));
        }
    };
    let ip = sandbox.ip.as_deref();
    let prepared = async {
        if pod::run_as_non_root(pod, container) {
            let image_user = shared
                .runtime
                .image_user(&image_id)
                .await
                .map_err(|e| format!("{e:#}"))?;
            pod::verify_non_root(pod, container, &image_user)?;
        }
        let env = environment(&shared.client, &shared.config, pod, container, ip).await?;
        let mounts = mounts(&shared.config, pod, container, attempt, &volumes, ip)?;
        Ok::<_, String>((env, mounts))
    };
    let (env, mounts) = match prepared.await {
        Ok(prepared) => {
            worker.memory.pull_errors.remove(&container.name);
            prepared
        }
        Err(message) => {
            shared.recorder.event(
                reference,
                events::WARNING,
                "Failed",
                "Error: CreateContainerConfigError".into(),
            );
            let error = worker
                .memory
                .pull_errors
                .entry(container.name.clone())
                .or_default();
            error.reason = "CreateContainerConfigError";
            error.message = message;
            error.backoff.failed(now_nanos());
            error.fresh = true;
            return Ok(());
        }
    };
    let mut config = container_config(pod, container, attempt, &image_id, env, mounts);
    if let Some(resources) = config.linux.as_mut().and_then(|l| l.resources.as_mut()) {
        let qos = pod
            .status
            .as_ref()
            .and_then(|s| s.qos_class.as_deref())
            .unwrap_or("BestEffort");
        let critical = pod
            .spec
            .as_ref()
            .and_then(|s| s.priority)
            .is_some_and(|p| p >= CRITICAL_PRIORITY);
        let request = container
            .resources
            .as_ref()
            .and_then(|r| r.requests.as_ref())
            .and_then(|r| r.get("memory"))
            .and_then(|q| tug_api::quantity::value(&q.0))
            .map_or(0, |b| b.max(0) as u64);
        resources.oom_score_adj = pod::oom_score_adj(
            qos,
            critical,
            request,
            shared.memory_capacity,
            shared.oom_floor,
        );
    }
    // A restart counts toward the container's back-off.
    if let Some(failed) = observed
        .containers
        .iter()
        .find(|c| c.name == container.name && c.state == State::Exited)
    {
        worker
            .memory
            .backoff
            .entry(container.name.clone())
            .or_default()
            .restarted(failed.finished_at, failed.finished_at - failed.started_at);
    }
    let id = match shared
        .runtime
        .create_container(&sandbox.id, config, sandbox_config)
        .await
    {
        Ok(id) => id,
        Err(err) => {
            shared.recorder.event(
                reference,
                events::WARNING,
                "Failed",
                format!("Error: {err:#}"),
            );
            return Err(err).context("creating a container");
        }
    };
    shared.recorder.event(
        reference.clone(),
        events::NORMAL,
        "Created",
        format!("Created container: {}", container.name),
    );
    if let Err(err) = shared.runtime.start_container(&id).await {
        shared.recorder.event(
            reference,
            events::WARNING,
            "Failed",
            format!("Error: {err:#}"),
        );
        return Err(err).context("starting a container");
    }
    shared.recorder.event(
        reference.clone(),
        events::NORMAL,
        "Started",
        format!("Started container {}", container.name),
    );
    // A postStart hook that fails has the container killed (and
    // restarted as its policy says).
    if let Some(post_start) = container
        .lifecycle
        .as_ref()
        .and_then(|l| l.post_start.as_ref())
    {
        let target = probes::Target {
            container_id: id.clone(),
            pod_ip: sandbox.ip.as_deref().and_then(|ip| ip.parse().ok()),
        };
        let limit = Duration::from_secs(pod::grace_period(pod).max(MINIMUM_GRACE) as u64 * 4);
        if let Err(message) =
            probes::hook(&shared.runtime, post_start, container, &target, limit).await
        {
            shared.recorder.event(
                reference,
                events::WARNING,
                "FailedPostStartHook",
                format!(
                    "PostStartHook failed for container {:?} in pod {}: {message}",
                    container.name,
                    pod_description(pod)
                ),
            );
            shared
                .runtime
                .stop_container(&id, pod::grace_period(pod))
                .await?;
        }
    }
    Ok(())
}

fn pod_labels(pod: &Pod) -> HashMap<String, String> {
    HashMap::from([
        (
            POD_NAME.to_string(),
            pod.metadata.name.clone().unwrap_or_default(),
        ),
        (
            POD_NAMESPACE.to_string(),
            pod.metadata.namespace.clone().unwrap_or_default(),
        ),
        (
            POD_UID.to_string(),
            pod.metadata.uid.clone().unwrap_or_default(),
        ),
    ])
}

/// The host's resolver configuration, as pods with dnsPolicy Default get
/// it (and ClusterFirst ones while the cluster has no DNS).
fn host_dns() -> cri::DnsConfig {
    let text = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let mut dns = cri::DnsConfig::default();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        match words.next() {
            Some("nameserver") => dns.servers.extend(words.map(str::to_string)),
            Some("search") => dns.searches = words.map(str::to_string).collect(),
            Some("options") => dns.options.extend(words.map(str::to_string)),
            _ => {}
        }
    }
    dns
}

fn sandbox_config(
    config: &Config,
    pod: &Pod,
    attempt: u32,
) -> anyhow::Result<cri::PodSandboxConfig> {
    let spec = pod.spec.as_ref().context("the pod has no spec")?;
    let name = pod.metadata.name.clone().unwrap_or_default();
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let host_network = spec.host_network.unwrap_or(false);
    let log_directory = pod_log_dir(config, pod);
    std::fs::create_dir_all(&log_directory)
        .with_context(|| format!("creating {}", log_directory.display()))?;
    let mut port_mappings = Vec::new();
    for container in &spec.containers {
        for port in container.ports.iter().flatten() {
            let Some(host_port) = port.host_port.filter(|p| *p > 0) else {
                continue;
            };
            port_mappings.push(cri::PortMapping {
                protocol: match port.protocol.as_deref() {
                    Some("UDP") => cri::Protocol::Udp as i32,
                    Some("SCTP") => cri::Protocol::Sctp as i32,
                    _ => cri::Protocol::Tcp as i32,
                },
                container_port: port.container_port,
                host_port,
                host_ip: port.host_ip.clone().unwrap_or_default(),
            });
        }
    }
    let mode = |host: Option<bool>| {
        if host.unwrap_or(false) {
            cri::NamespaceMode::Node as i32
        } else {
            cri::NamespaceMode::Pod as i32
        }
    };
    let security = spec.security_context.as_ref();
    Ok(cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: name.clone(),
            uid,
            namespace,
            attempt,
        }),
        hostname: if host_network {
            String::new()
        } else {
            spec.hostname.clone().unwrap_or(name)
        },
        log_directory: log_directory.display().to_string(),
        dns_config: (!host_network).then(host_dns),
        port_mappings,
        labels: pod_labels(pod),
        annotations: pod
            .metadata
            .annotations
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect(),
        linux: Some(cri::LinuxPodSandboxConfig {
            security_context: Some(cri::LinuxSandboxSecurityContext {
                namespace_options: Some(cri::NamespaceOption {
                    network: mode(spec.host_network),
                    pid: if spec.host_pid.unwrap_or(false) {
                        cri::NamespaceMode::Node as i32
                    } else if spec.share_process_namespace.unwrap_or(false) {
                        cri::NamespaceMode::Pod as i32
                    } else {
                        cri::NamespaceMode::Container as i32
                    },
                    ipc: mode(spec.host_ipc),
                    ..Default::default()
                }),
                run_as_user: security
                    .and_then(|s| s.run_as_user)
                    .map(|value| cri::Int64Value { value }),
                run_as_group: security
                    .and_then(|s| s.run_as_group)
                    .map(|value| cri::Int64Value { value }),
                supplemental_groups: security
                    .and_then(|s| s.supplemental_groups.clone())
                    .unwrap_or_default(),
                // containerd runs a privileged container only in a
                // privileged sandbox (kubelet's HasPrivilegedContainer).
                privileged: spec
                    .init_containers
                    .iter()
                    .flatten()
                    .chain(&spec.containers)
                    .any(|c| {
                        c.security_context
                            .as_ref()
                            .and_then(|s| s.privileged)
                            .unwrap_or(false)
                    }),
                ..Default::default()
            }),
            sysctls: security
                .and_then(|s| s.sysctls.as_ref())
                .into_iter()
                .flatten()
                .map(|s| (s.name.clone(), s.value.clone()))
                .collect(),
            ..Default::default()
        }),
        windows: None,
    })
}

/// Expands `$(NAME)` from `vars`; `$$(NAME)` stays `$(NAME)`; unknown
/// references stay as written (kubelet's expansion).
pub fn expand(text: &str, vars: &BTreeMap<String, String>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body) = after.strip_prefix('(') {
            match body.find(')') {
                Some(end) if vars.contains_key(&body[..end]) => {
                    out.push_str(&vars[&body[..end]]);
                    rest = &body[end + 1..];
                }
                Some(end) => {
                    out.push_str(&rest[at..at + 2 + end + 1]);
                    rest = &body[end + 1..];
                }
                None => {
                    out.push_str(&rest[at..]);
                    rest = "";
                }
            }
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// A fieldRef's value, for the fields kubelet resolves.
pub(crate) fn field_value(
    pod: &Pod,
    config: &Config,
    pod_ip: Option<&str>,
    path: &str,
) -> Option<String> {
    let meta = &pod.metadata;
    let spec = pod.spec.as_ref();
    let keyed = |prefix: &str, map: Option<&BTreeMap<String, String>>| {
        let key = path.strip_prefix(prefix)?.strip_suffix("']")?;
        Some(map.and_then(|m| m.get(key)).cloned().unwrap_or_default())
    };
    match path {
        "metadata.name" => meta.name.clone(),
        "metadata.namespace" => meta.namespace.clone(),
        "metadata.uid" => meta.uid.clone(),
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()),
        "spec.serviceAccountName" => spec.and_then(|s| s.service_account_name.clone()),
        "status.hostIP" | "status.hostIPs" => Some(config.node_ip.to_string()),
        "status.podIP" | "status.podIPs" => {
            Some(if spec.and_then(|s| s.host_network).unwrap_or(false) {
                config.node_ip.to_string()
            } else {
                pod_ip.unwrap_or_default().to_string()
            })
        }
        _ => keyed("metadata.labels['", meta.labels.as_ref())
            .or_else(|| keyed("metadata.annotations['", meta.annotations.as_ref())),
    }
}

/// The container's environment, in order: envFrom's sources, then env,
/// each value expanded against the ones before it. A missing ConfigMap,
/// Secret or key that is not optional is the CreateContainerConfigError's
/// message.
async fn environment(
    client: &Client,
    config: &Config,
    pod: &Pod,
    container: &Container,
    pod_ip: Option<&str>,
) -> Result<Vec<(String, String)>, String> {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let mut vars: BTreeMap<String, String> = BTreeMap::new();
    let mut ordered: Vec<(String, String)> = Vec::new();
    let mut set = |name: String, value: String, vars: &mut BTreeMap<String, String>| {
        vars.insert(name.clone(), value.clone());
        ordered.retain(|(n, _)| *n != name);
        ordered.push((name, value));
    };
    for source in container.env_from.iter().flatten() {
        let prefix = source.prefix.clone().unwrap_or_default();
        let data = if let Some(cm) = &source.config_map_ref {
            let optional = cm.optional.unwrap_or(false);
            env_data(
                client,
                volumes::Source::ConfigMap,
                namespace,
                &cm.name,
                optional,
            )
            .await?
        } else if let Some(secret) = &source.secret_ref {
            let optional = secret.optional.unwrap_or(false);
            env_data(
                client,
                volumes::Source::Secret,
                namespace,
                &secret.name,
                optional,
            )
            .await?
        } else {
            BTreeMap::new()
        };
        for (key, value) in data {
            set(format!("{prefix}{key}"), value, &mut vars);
        }
    }
    for env in container.env.iter().flatten() {
        let from = env.value_from.as_ref();
        let value = if let Some(value) = &env.value {
            expand(value, &vars)
        } else if let Some(field) = from.and_then(|v| v.field_ref.as_ref()) {
            field_value(pod, config, pod_ip, &field.field_path).unwrap_or_default()
        } else if let Some(resource) = from.and_then(|v| v.resource_field_ref.as_ref()) {
            resource_value(pod, resource)?
        } else if let Some((source, kind, name, key, optional)) = from.and_then(|v| {
            v.config_map_key_ref
                .as_ref()
                .map(|k| {
                    (
                        volumes::Source::ConfigMap,
                        "ConfigMap",
                        &k.name,
                        &k.key,
                        k.optional,
                    )
                })
                .or_else(|| {
                    v.secret_key_ref.as_ref().map(|k| {
                        (
                            volumes::Source::Secret,
                            "Secret",
                            &k.name,
                            &k.key,
                            k.optional,
                        )
                    })
                })
        }) {
            let optional = optional.unwrap_or(false);
            let data = env_data(client, source, namespace, name, optional).await?;
            match data.get(key) {
                Some(value) => value.clone(),
                None if optional => continue,
                None => {
                    return Err(format!(
                        "couldn't find key {key} in {kind} {namespace}/{name}"
                    ));
                }
            }
        } else {
            String::new()
        };
        set(env.name.clone(), value, &mut vars);
    }
    Ok(ordered)
}

/// A ConfigMap's or Secret's data as environment values.
async fn env_data(
    client: &Client,
    source: volumes::Source,
    namespace: &str,
    name: &str,
    optional: bool,
) -> Result<BTreeMap<String, String>, String> {
    let data = volumes::source_data(client, source, namespace, name, optional).await?;
    Ok(data
        .into_iter()
        .map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned()))
        .collect())
}

/// A resourceFieldRef's value: the container's request or limit (the
/// node's allocatable for an unset limit), in units of its divisor.
pub(crate) fn resource_value(
    pod: &Pod,
    selector: &k8s_openapi::api::core::v1::ResourceFieldSelector,
) -> Result<String, String> {
    let spec = pod.spec.as_ref().ok_or("the pod has no spec")?;
    let container = match selector.container_name.as_deref() {
        Some(name) if !name.is_empty() => spec
            .containers
            .iter()
            .chain(spec.init_containers.iter().flatten())
            .find(|c| c.name == name)
            .ok_or_else(|| format!("container {name:?} not found"))?,
        _ => spec.containers.first().ok_or("the pod has no containers")?,
    };
    let (which, resource) = selector
        .resource
        .split_once('.')
        .ok_or_else(|| format!("unsupported resource {:?}", selector.resource))?;
    let resources = container.resources.as_ref();
    let map = match which {
        "limits" => resources.and_then(|r| r.limits.as_ref()),
        "requests" => resources.and_then(|r| r.requests.as_ref()),
        _ => return Err(format!("unsupported resource {:?}", selector.resource)),
    };
    let quantity = map.and_then(|m| m.get(resource)).map(|q| q.0.clone());
    let cpu = resource == "cpu";
    let value = match quantity {
        Some(q) if cpu => tug_api::quantity::milli(&q),
        Some(q) => tug_api::quantity::value(&q),
        None if which == "limits" && cpu => {
            Some(std::thread::available_parallelism().map_or(1, |n| n.get()) as i128 * 1000)
        }
        None if which == "limits" => Some(crate::node::Machine::memory_bytes() as i128),
        None => Some(0),
    }
    .ok_or_else(|| format!("{} is not a quantity", selector.resource))?;
    let divisor = selector
        .divisor
        .as_ref()
        .map(|d| d.0.clone())
        .unwrap_or_else(|| "1".into());
    let divisor = if cpu {
        tug_api::quantity::milli(&divisor)
    } else {
        tug_api::quantity::value(&divisor)
    }
    .filter(|d| *d > 0)
    .ok_or_else(|| format!("invalid divisor {divisor:?}"))?;
    // Rounded up, as kubelet's ExtractResourceValueByContainer.
    Ok(((value + divisor - 1) / divisor).to_string())
}

/// The container's mounts: its volumeMounts, the pod's /etc/hosts and
/// its termination-message file.
fn mounts(
    config: &Config,
    pod: &Pod,
    container: &Container,
    attempt: u32,
    volumes: &BTreeMap<String, volumes::Ready>,
    pod_ip: Option<&str>,
) -> Result<Vec<cri::Mount>, String> {
    let uid = pod.metadata.uid.as_deref().unwrap_or_default();
    let dir = volumes::pod_dir(config, uid);
    let mut mounts = Vec::new();
    let mut targets: Vec<&str> = Vec::new();
    for mount in container.volume_mounts.iter().flatten() {
        let volume = volumes
            .get(&mount.name)
            .ok_or_else(|| format!("volume {:?} not found in the pod", mount.name))?;
        let mut host = volume.path.clone();
        if let Some(sub) = mount.sub_path.as_deref().filter(|s| !s.is_empty()) {
            if !volumes::safe_relative(sub) {
                return Err(format!(
                    "subPath {sub:?} must be a relative path without '..'"
                ));
            }
            host = host.join(sub);
            if !host.exists() {
                std::fs::create_dir_all(&host)
                    .map_err(|e| format!("creating {}: {e}", host.display()))?;
            }
        }
        targets.push(&mount.mount_path);
        mounts.push(cri::Mount {
            container_path: mount.mount_path.clone(),
            host_path: host.display().to_string(),
            readonly: mount.read_only.unwrap_or(false) || volume.read_only,
            propagation: match mount.mount_propagation.as_deref() {
                Some("HostToContainer") => cri::MountPropagation::PropagationHostToContainer as i32,
                Some("Bidirectional") => cri::MountPropagation::PropagationBidirectional as i32,
                _ => cri::MountPropagation::PropagationPrivate as i32,
            },
            ..Default::default()
        });
    }
    let host_network = pod
        .spec
        .as_ref()
        .and_then(|s| s.host_network)
        .unwrap_or(false);
    if !host_network && !targets.contains(&"/etc/hosts") {
        let hosts = dir.join("etc-hosts");
        std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        std::fs::write(&hosts, volumes::etc_hosts(pod, pod_ip))
            .map_err(|e| format!("writing {}: {e}", hosts.display()))?;
        mounts.push(cri::Mount {
            container_path: "/etc/hosts".into(),
            host_path: hosts.display().to_string(),
            ..Default::default()
        });
    }
    let message_path = container
        .termination_message_path
        .clone()
        .unwrap_or_else(|| "/dev/termination-log".into());
    if !message_path.is_empty() && !targets.contains(&message_path.as_str()) {
        let file = termination_file(config, uid, &container.name, attempt);
        if let Some(parent) = file.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| format!("creating {}: {e}", parent.display()))?;
        }
        std::fs::write(&file, b"").map_err(|e| format!("writing {}: {e}", file.display()))?;
        mounts.push(cri::Mount {
            container_path: message_path,
            host_path: file.display().to_string(),
            ..Default::default()
        });
    }
    Ok(mounts)
}

/// What a container left in its termination-message file (4 KiB at
/// most), or with FallbackToLogsOnError and a failure, its log's last
/// lines (80 lines, 2 KiB at most), as kubelet reads them.
fn termination_message(
    config: &Config,
    pod: Option<&Pod>,
    uid: &str,
    name: &str,
    attempt: u32,
    exit_code: i32,
    log_path: &str,
) -> String {
    const MESSAGE_MAX: usize = 4096;
    let file = termination_file(config, uid, name, attempt);
    let mut message = std::fs::read(&file).unwrap_or_default();
    message.truncate(MESSAGE_MAX);
    if !message.is_empty() {
        return String::from_utf8_lossy(&message).into_owned();
    }
    let fallback = pod
        .and_then(|p| p.spec.as_ref())
        .into_iter()
        .flat_map(|s| {
            s.containers
                .iter()
                .chain(s.init_containers.iter().flatten())
        })
        .find(|c| c.name == name)
        .and_then(|c| c.termination_message_policy.as_deref())
        == Some("FallbackToLogsOnError");
    if !fallback || exit_code == 0 || log_path.is_empty() {
        return String::new();
    }
    let data = std::fs::read(log_path).unwrap_or_default();
    let options = crate::logs::Options {
        tail_lines: Some(80),
        ..Default::default()
    };
    let (mut tail, _) = crate::logs::render(&data, &options);
    if tail.len() > 2048 {
        tail.drain(..tail.len() - 2048);
    }
    String::from_utf8_lossy(&tail).into_owned()
}

/// Where a container's termination message is written.
pub(crate) fn termination_file(
    config: &Config,
    uid: &str,
    container: &str,
    attempt: u32,
) -> std::path::PathBuf {
    volumes::pod_dir(config, uid)
        .join("containers")
        .join(container)
        .join(attempt.to_string())
}

/// -1000 if the kernel lets this process lower its own oom_score_adj
/// (and so give negative values), else 0: tried once and put back.
fn oom_score_floor() -> i64 {
    const PATH: &str = "/proc/self/oom_score_adj";
    let Ok(current) = std::fs::read_to_string(PATH) else {
        return 0;
    };
    let Ok(current) = current.trim().parse::<i64>() else {
        return 0;
    };
    let lowered = (current - 1).max(-1000);
    if lowered == current || std::fs::write(PATH, lowered.to_string()).is_err() {
        return 0;
    }
    let _ = std::fs::write(PATH, current.to_string());
    -1000
}

fn container_config(
    pod: &Pod,
    container: &Container,
    attempt: u32,
    image_id: &str,
    env: Vec<(String, String)>,
    mounts: Vec<cri::Mount>,
) -> cri::ContainerConfig {
    let vars: BTreeMap<String, String> = env.iter().cloned().collect();
    let expand_all = |list: &Option<Vec<String>>| -> Vec<String> {
        list.iter().flatten().map(|s| expand(s, &vars)).collect()
    };
    let mut labels = pod_labels(pod);
    labels.insert(CONTAINER_NAME.to_string(), container.name.clone());
    let spec = pod.spec.as_ref();
    let security = container.security_context.as_ref();
    let pod_security = spec.and_then(|s| s.security_context.as_ref());
    let image = container.image.clone().unwrap_or_default();
    cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata {
            name: container.name.clone(),
            attempt,
        }),
        image: Some(cri::ImageSpec {
            image: image_id.to_string(),
            user_specified_image: image,
            ..Default::default()
        }),
        command: expand_all(&container.command),
        args: expand_all(&container.args),
        working_dir: container.working_dir.clone().unwrap_or_default(),
        envs: env
            .into_iter()
            .map(|(key, value)| cri::KeyValue { key, value })
            .collect(),
        mounts,
        labels,
        annotations: HashMap::from([
            (
                "io.kubernetes.container.restartCount".to_string(),
                attempt.to_string(),
            ),
            (
                "io.kubernetes.pod.terminationGracePeriod".to_string(),
                pod::grace_period(pod).to_string(),
            ),
        ]),
        log_path: format!("{}/{attempt}.log", container.name),
        stdin: container.stdin.unwrap_or(false),
        stdin_once: container.stdin_once.unwrap_or(false),
        tty: container.tty.unwrap_or(false),
        linux: Some(cri::LinuxContainerConfig {
            resources: Some(resources(container)),
            security_context: Some(cri::LinuxContainerSecurityContext {
                namespace_options: Some(cri::NamespaceOption {
                    network: if spec.and_then(|s| s.host_network).unwrap_or(false) {
                        cri::NamespaceMode::Node as i32
                    } else {
                        cri::NamespaceMode::Pod as i32
                    },
                    pid: if spec.and_then(|s| s.host_pid).unwrap_or(false) {
                        cri::NamespaceMode::Node as i32
                    } else if spec
                        .and_then(|s| s.share_process_namespace)
                        .unwrap_or(false)
                    {
                        cri::NamespaceMode::Pod as i32
                    } else {
                        cri::NamespaceMode::Container as i32
                    },
                    ipc: if spec.and_then(|s| s.host_ipc).unwrap_or(false) {
                        cri::NamespaceMode::Node as i32
                    } else {
                        cri::NamespaceMode::Pod as i32
                    },
                    ..Default::default()
                }),
                privileged: security.and_then(|s| s.privileged).unwrap_or(false),
                run_as_user: security
                    .and_then(|s| s.run_as_user)
                    .or_else(|| pod_security.and_then(|s| s.run_as_user))
                    .map(|value| cri::Int64Value { value }),
                run_as_group: security
                    .and_then(|s| s.run_as_group)
                    .or_else(|| pod_security.and_then(|s| s.run_as_group))
                    .map(|value| cri::Int64Value { value }),
                readonly_rootfs: security
                    .and_then(|s| s.read_only_root_filesystem)
                    .unwrap_or(false),
                no_new_privs: security
                    .and_then(|s| s.allow_privilege_escalation)
                    .is_some_and(|allowed| !allowed),
                capabilities: security.and_then(|s| s.capabilities.as_ref()).map(|c| {
                    cri::Capability {
                        add_capabilities: c.add.clone().unwrap_or_default(),
                        drop_capabilities: c.drop.clone().unwrap_or_default(),
                        ..Default::default()
                    }
                }),
                supplemental_groups: pod_security
                    .and_then(|s| s.supplemental_groups.clone())
                    .unwrap_or_default(),
                ..Default::default()
            }),
        }),
        ..Default::default()
    }
}

/// Requests and limits as cgroup settings, as kubelet computes them: CPU
/// shares from the request (or the limit), a quota from the CPU limit over
/// 100 ms periods, the memory limit.
fn resources(container: &Container) -> cri::LinuxContainerResources {
    let requirements = container.resources.as_ref();
    let get = |which: Option<
        &BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>,
    >,
               name: &str| { which.and_then(|m| m.get(name)).map(|q| q.0.clone()) };
    let limits = requirements.and_then(|r| r.limits.as_ref());
    let requests = requirements.and_then(|r| r.requests.as_ref());
    let cpu_limit = get(limits, "cpu").and_then(|q| tug_api::quantity::milli(&q));
    let cpu_request = get(requests, "cpu")
        .and_then(|q| tug_api::quantity::milli(&q))
        .or(cpu_limit);
    let memory_limit = get(limits, "memory").and_then(|q| tug_api::quantity::value(&q));
    const PERIOD: i64 = 100_000;
    cri::LinuxContainerResources {
        cpu_shares: cpu_request.map_or(2, |m| ((m * 1024) / 1000).max(2) as i64),
        cpu_period: if cpu_limit.is_some() { PERIOD } else { 0 },
        cpu_quota: cpu_limit.map_or(0, |m| ((m * PERIOD as i128) / 1000).max(1000) as i64),
        memory_limit_in_bytes: memory_limit.map_or(0, |b| b as i64),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variable_references_expand_as_kubelet_expands_them() {
        let vars = BTreeMap::from([("A".to_string(), "x".to_string())]);
        for (text, want) in [
            ("$(A)-$(A)", "x-x"),
            ("$$(A)", "$(A)"),
            ("$(B)", "$(B)"),
            ("$(A", "$(A"),
            ("a$b", "a$b"),
            ("", ""),
        ] {
            assert_eq!(expand(text, &vars), want, "{text}");
        }
    }

    #[test]
    fn resources_become_cgroup_settings() {
        let container: Container = serde_json::from_value(json!({
            "name": "a",
            "resources": {"requests": {"cpu": "250m"}, "limits": {"cpu": "500m", "memory": "64Mi"}},
        }))
        .unwrap();
        let r = resources(&container);
        assert_eq!(
            (r.cpu_shares, r.cpu_quota, r.cpu_period),
            (256, 50_000, 100_000)
        );
        assert_eq!(r.memory_limit_in_bytes, 64 << 20);
        let none = resources(&serde_json::from_value(json!({"name": "b"})).unwrap());
        assert_eq!(
            (none.cpu_shares, none.cpu_quota, none.memory_limit_in_bytes),
            (2, 0, 0)
        );
    }
}
