//! Simulated nodes, "KWOK in the box": a client of the API only, which
//! registers Nodes (Ready, with capacity), renews their Leases, and plays
//! kubelet for every pod bound to them, so that the control plane can be
//! tested and measured with thousands of nodes on one machine.
//!
//! Frugal by design: one watch of pods and one of nodes for all the
//! simulated nodes, a few fields kept per pod, one timer queue, and every
//! write through one bounded queue served by a fixed number of writers.
//!
//! Faults are staged through annotations, so kubectl can stage them too:
//! [`LEASE`] on a Node, [`CRASH`], [`READY`], [`SUCCEED_AFTER`] and
//! [`FAIL_AFTER`] on a Pod. [`SimNodes`]' fault methods set them.

mod objects;

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod, Taint};
use kube::Client;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::time::DelayQueue;

pub use objects::process_usage;
use objects::{Phase, SimPod};

/// On a Node: `stopped` makes it stop renewing its Lease.
pub const LEASE: &str = "sim.tug.dev/lease";
/// On a Pod: `true` makes its containers crash (and crash-loop).
pub const CRASH: &str = "sim.tug.dev/crash";
/// On a Pod: `false` makes it not ready.
pub const READY: &str = "sim.tug.dev/ready";
/// On a Pod: seconds after it starts running, it succeeds.
pub const SUCCEED_AFTER: &str = "sim.tug.dev/succeed-after";
/// On a Pod: seconds after it starts running, it fails.
pub const FAIL_AFTER: &str = "sim.tug.dev/fail-after";

/// kubelet's nodeStatusReportFrequency: a node's heartbeat in its status
/// is renewed this often (its Lease much more often).
const NODE_STATUS_INTERVAL: Duration = Duration::from_secs(300);
/// A Lease's duration, as kubelet's.
const LEASE_SECONDS: i64 = 40;
/// Writes waiting for a writer at most; beyond, producers wait.
const QUEUE_MAX: usize = 10_000;
/// How often a silent node's pending deletions look whether it is back.
const SILENT_RETRY: Duration = Duration::from_secs(1);
/// A graceful deletion is finished after its grace period, at most this.
const GRACE_MAX: i64 = 600;

/// What to simulate.
#[derive(Clone, Debug)]
pub struct Config {
    /// How many nodes (at most 16,384: each has a /24 of 10.64.0.0/10).
    pub count: usize,
    /// Nodes are named `{name_prefix}{index}`.
    pub name_prefix: String,
    pub cpu: String,
    pub memory: String,
    pub pods: u32,
    /// Labels every node gets, besides `type=sim` and the usual ones.
    pub labels: BTreeMap<String, String>,
    /// If not 0, node i is in zone `zone-(i mod zones)` (the
    /// `topology.kubernetes.io/zone` label).
    pub zones: usize,
    pub taints: Vec<Taint>,
    /// From a pod's binding to its running.
    pub start_delay: Duration,
    /// From a pod's running to its readiness.
    pub ready_delay: Duration,
    /// How often each node renews its Lease.
    pub lease_interval: Duration,
    /// API writes in flight at once.
    pub writers: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            count: 1,
            name_prefix: "sim-".into(),
            cpu: "32".into(),
            memory: "256Gi".into(),
            pods: 110,
            labels: BTreeMap::new(),
            zones: 0,
            taints: Vec::new(),
            start_delay: Duration::ZERO,
            ready_delay: Duration::ZERO,
            lease_interval: Duration::from_secs(10),
            writers: 32,
        }
    }
}

/// What the simulator has done so far, and what it costs.
#[derive(Clone, Copy, Debug, Default)]
pub struct Stats {
    pub nodes: usize,
    /// Pods bound to the simulated nodes.
    pub pods: usize,
    pub running: usize,
    pub writes: u64,
    pub write_errors: u64,
    /// This process's CPU time and resident memory.
    pub cpu_seconds: f64,
    pub rss_bytes: u64,
}

/// Running simulated nodes; [`SimNodes::shutdown`] stops them (the
/// objects stay in the API).
pub struct SimNodes {
    client: Client,
    names: Vec<String>,
    shared: Arc<Shared>,
    stop: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

struct NodeState {
    name: String,
    base: Ipv4Addr,
    ip: Ipv4Addr,
    used: [bool; objects::SLOTS],
    lease_stopped: bool,
    gone: bool,
}

struct State {
    nodes: Vec<NodeState>,
    by_name: HashMap<String, usize>,
    /// Pods bound to our nodes, by `namespace/name`.
    pods: HashMap<String, SimPod>,
    /// Pods listed since the pod watch last restarted.
    seen: Option<std::collections::HashSet<String>>,
}

struct Shared {
    config: Config,
    state: Mutex<State>,
    writes: AtomicU64,
    errors: AtomicU64,
    /// Pods whose status is being written; true when it changed since.
    writing: Mutex<HashMap<String, bool>>,
}

/// A write to the API, queued for the writers.
enum Write {
    /// The pod's status as the simulator sees it when the write is made.
    PodStatus {
        key: String,
    },
    DeletePod {
        key: String,
        uid: String,
    },
    Lease {
        node: String,
    },
    Heartbeat {
        node: String,
    },
}

/// Something due later, in the timer queue.
#[derive(Debug)]
enum Due {
    Start(String),
    Ready(String),
    Finish(String, bool),
    Delete(String),
    Lease(usize),
    Heartbeat(usize),
}

fn split_key(key: &str) -> (&str, &str) {
    key.split_once('/').unwrap_or(("", key))
}

impl SimNodes {
    /// Registers the nodes and their Leases, returning once all exist;
    /// then plays kubelet for them in background tasks.
    pub async fn start(client: Client, config: Config) -> anyhow::Result<SimNodes> {
        if config.count == 0 || config.count > objects::NODES_MAX {
            bail!("simulated nodes must number 1 to {}", objects::NODES_MAX);
        }
        let names: Vec<String> = (0..config.count)
            .map(|i| format!("{}{i}", config.name_prefix))
            .collect();
        let writers = config.writers.max(1);
        register(&client, &config, &names, writers).await?;

        let nodes = names
            .iter()
            .enumerate()
            .map(|(i, name)| NodeState {
                name: name.clone(),
                base: objects::pod_cidr(i).0,
                ip: objects::node_ip(i),
                used: [false; objects::SLOTS],
                lease_stopped: false,
                gone: false,
            })
            .collect();
        let by_name = names
            .iter()
            .cloned()
            .enumerate()
            .map(|(i, n)| (n, i))
            .collect();
        let shared = Arc::new(Shared {
            config,
            state: Mutex::new(State {
                nodes,
                by_name,
                pods: HashMap::new(),
                seen: None,
            }),
            writes: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            writing: Mutex::new(HashMap::new()),
        });
        let stop = CancellationToken::new();
        let (write_tx, write_rx) = mpsc::channel(QUEUE_MAX);
        let (due_tx, due_rx) = mpsc::unbounded_channel();
        let tasks = vec![
            tokio::spawn(write_loop(
                client.clone(),
                shared.clone(),
                write_rx,
                writers,
                stop.clone(),
            )),
            tokio::spawn(timer_loop(
                shared.clone(),
                due_rx,
                write_tx.clone(),
                stop.clone(),
            )),
            tokio::spawn(pod_loop(
                client.clone(),
                shared.clone(),
                due_tx.clone(),
                write_tx.clone(),
                stop.clone(),
            )),
            tokio::spawn(node_loop(
                client.clone(),
                shared.clone(),
                write_tx,
                stop.clone(),
            )),
        ];
        // Leases and heartbeats spread evenly over their intervals.
        let count = names.len() as u32;
        for i in 0..names.len() {
            let lease = shared.config.lease_interval * i as u32 / count;
            let _ = due_tx.send((lease, Due::Lease(i)));
            let heartbeat = NODE_STATUS_INTERVAL * i as u32 / count;
            let _ = due_tx.send((heartbeat, Due::Heartbeat(i)));
        }
        Ok(SimNodes {
            client,
            names,
            shared,
            stop,
            tasks,
        })
    }

    pub fn node_names(&self) -> Vec<String> {
        self.names.clone()
    }

    pub fn stats(&self) -> Stats {
        let (cpu_seconds, rss_bytes) = process_usage();
        let state = self.shared.state.lock().expect("sim state lock");
        Stats {
            nodes: state.nodes.iter().filter(|n| !n.gone).count(),
            pods: state.pods.len(),
            running: state
                .pods
                .values()
                .filter(|p| p.phase == Phase::Running)
                .count(),
            writes: self.shared.writes.load(Ordering::Relaxed),
            write_errors: self.shared.errors.load(Ordering::Relaxed),
            cpu_seconds,
            rss_bytes,
        }
    }

    async fn annotate_node(&self, node: &str, value: Value) -> anyhow::Result<()> {
        let nodes: Api<Node> = Api::all(self.client.clone());
        let patch = json!({"metadata": {"annotations": {LEASE: value}}});
        nodes
            .patch(node, &PatchParams::default(), &Patch::Merge(patch))
            .await
            .with_context(|| format!("annotating node {node}"))?;
        Ok(())
    }

    async fn annotate_pod(
        &self,
        namespace: &str,
        pod: &str,
        key: &str,
        value: &str,
    ) -> anyhow::Result<()> {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        let patch = json!({"metadata": {"annotations": {key: value}}});
        pods.patch(pod, &PatchParams::default(), &Patch::Merge(patch))
            .await
            .with_context(|| format!("annotating pod {namespace}/{pod}"))?;
        Ok(())
    }

    /// The node stops renewing its Lease, as if its kubelet were gone:
    /// its pods' deletions wait until it is back.
    pub async fn stop_lease(&self, node: &str) -> anyhow::Result<()> {
        self.annotate_node(node, json!("stopped")).await
    }

    pub async fn resume_lease(&self, node: &str) -> anyhow::Result<()> {
        self.annotate_node(node, Value::Null).await
    }

    /// The pod's containers crash, and keep crashing.
    pub async fn crash(&self, namespace: &str, pod: &str) -> anyhow::Result<()> {
        self.annotate_pod(namespace, pod, CRASH, "true").await
    }

    pub async fn set_ready(&self, namespace: &str, pod: &str, ready: bool) -> anyhow::Result<()> {
        self.annotate_pod(namespace, pod, READY, if ready { "true" } else { "false" })
            .await
    }

    /// Stops every task; nodes and pods stay in the API.
    pub async fn shutdown(self) {
        self.stop.cancel();
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// Creates the Nodes (or refreshes their status) and their Leases.
async fn register(
    client: &Client,
    config: &Config,
    names: &[String],
    writers: usize,
) -> anyhow::Result<()> {
    let nodes: Api<Node> = Api::all(client.clone());
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let results: Vec<anyhow::Result<()>> = futures::stream::iter(names.iter().enumerate())
        .map(|(i, name)| {
            let (nodes, leases) = (nodes.clone(), leases.clone());
            async move {
                let object: Node = serde_json::from_value(objects::node(config, i, name))?;
                let node = match nodes.create(&PostParams::default(), &object).await {
                    Ok(node) => node,
                    Err(kube::Error::Api(status)) if status.code == 409 => {
                        let status = json!({"status": serde_json::to_value(&object.status)?});
                        nodes
                            .patch_status(name, &PatchParams::default(), &Patch::Merge(status))
                            .await?
                    }
                    Err(err) => {
                        return Err(err).with_context(|| format!("registering node {name}"));
                    }
                };
                let uid = node.metadata.uid.unwrap_or_default();
                let lease: Lease =
                    serde_json::from_value(objects::lease(name, &uid, LEASE_SECONDS))?;
                match leases.create(&PostParams::default(), &lease).await {
                    Ok(_) => Ok(()),
                    Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
                    Err(err) => Err(err).with_context(|| format!("creating the lease of {name}")),
                }
            }
        })
        .buffer_unordered(writers)
        .collect()
        .await;
    results.into_iter().collect()
}

/// Serves the write queue with `writers` requests in flight.
async fn write_loop(
    client: Client,
    shared: Arc<Shared>,
    rx: mpsc::Receiver<Write>,
    writers: usize,
    stop: CancellationToken,
) {
    let writes =
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|w| (w, rx)) })
            .for_each_concurrent(writers, |write| {
                let (client, shared) = (client.clone(), shared.clone());
                async move {
                    let result = execute(&client, &shared, write).await;
                    shared.writes.fetch_add(1, Ordering::Relaxed);
                    if let Err(err) = result {
                        let errors = shared.errors.fetch_add(1, Ordering::Relaxed);
                        if errors % 1000 == 0 {
                            tracing::warn!(
                                "simulated kubelet: a write failed ({} so far): {err:#}",
                                errors + 1
                            );
                        }
                    }
                }
            });
    tokio::select! {
        _ = writes => {}
        _ = stop.cancelled() => {}
    }
}

async fn execute(client: &Client, shared: &Shared, write: Write) -> anyhow::Result<()> {
    let params = PatchParams::default();
    match write {
        Write::PodStatus { key } => {
            // One status write per pod at a time, so that an older status
            // never lands after a newer one; changes meanwhile are sent
            // next, as they are then.
            {
                let mut writing = shared.writing.lock().expect("sim writing lock");
                if let Some(again) = writing.get_mut(&key) {
                    *again = true;
                    return Ok(());
                }
                writing.insert(key.clone(), false);
            }
            let (namespace, name) = split_key(&key);
            let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
            let mut result = Ok(());
            while let Some(status) = current_status(shared, &key) {
                result = match pods
                    .patch_status(name, &params, &Patch::Merge(status))
                    .await
                {
                    Ok(_) => Ok(()),
                    // Gone meanwhile: nothing to report.
                    Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
                    Err(err) => Err(err.into()),
                };
                let mut writing = shared.writing.lock().expect("sim writing lock");
                match writing.get_mut(&key) {
                    Some(again) if *again => *again = false,
                    _ => break,
                }
            }
            shared
                .writing
                .lock()
                .expect("sim writing lock")
                .remove(&key);
            result
        }
        Write::DeletePod { key, uid } => {
            let (namespace, name) = split_key(&key);
            let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
            let params = DeleteParams {
                grace_period_seconds: Some(0),
                preconditions: Some(Preconditions {
                    uid: Some(uid),
                    resource_version: None,
                }),
                ..DeleteParams::default()
            };
            match pods.delete(name, &params).await {
                Ok(_) => Ok(()),
                Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => Ok(()),
                Err(err) => Err(err.into()),
            }
        }
        Write::Lease { node } => {
            let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
            let patch =
                json!({"spec": {"holderIdentity": node, "renewTime": objects::micro_now()}});
            leases.patch(&node, &params, &Patch::Merge(patch)).await?;
            Ok(())
        }
        Write::Heartbeat { node } => {
            let nodes: Api<Node> = Api::all(client.clone());
            nodes
                .patch_status(&node, &params, &Patch::Merge(objects::heartbeat()))
                .await?;
            Ok(())
        }
    }
}

/// The status write for the pod under `key`, if it is still ours.
fn status_write(state: &State, key: &str) -> Option<Write> {
    state.pods.contains_key(key).then(|| Write::PodStatus {
        key: key.to_string(),
    })
}

/// The status to write for the pod under `key` now.
fn current_status(shared: &Shared, key: &str) -> Option<Value> {
    let state = shared.state.lock().expect("sim state lock");
    let pod = state.pods.get(key)?;
    let node = &state.nodes[pod.node];
    Some(objects::pod_status(pod, node.base, node.ip))
}

/// Runs what is due: pods' starts, readiness, ends and deletions; leases
/// and heartbeats, each rescheduled after its interval.
async fn timer_loop(
    shared: Arc<Shared>,
    mut due_rx: mpsc::UnboundedReceiver<(Duration, Due)>,
    writes: mpsc::Sender<Write>,
    stop: CancellationToken,
) {
    let mut queue: DelayQueue<Due> = DelayQueue::new();
    loop {
        let due = tokio::select! {
            _ = stop.cancelled() => return,
            incoming = due_rx.recv() => match incoming {
                Some((delay, due)) => { queue.insert(due, delay); continue; }
                None => return,
            },
            Some(expired) = queue.next(), if !queue.is_empty() => expired.into_inner(),
        };
        let write = {
            let config = &shared.config;
            let mut state = shared.state.lock().expect("sim state lock");
            match due {
                Due::Lease(i) => {
                    queue.insert(Due::Lease(i), config.lease_interval);
                    let node = &state.nodes[i];
                    (!node.lease_stopped && !node.gone).then(|| Write::Lease {
                        node: node.name.clone(),
                    })
                }
                Due::Heartbeat(i) => {
                    queue.insert(Due::Heartbeat(i), NODE_STATUS_INTERVAL);
                    let node = &state.nodes[i];
                    (!node.lease_stopped && !node.gone).then(|| Write::Heartbeat {
                        node: node.name.clone(),
                    })
                }
                Due::Start(key) => {
                    let ready_delay = config.ready_delay;
                    let mut finish = None;
                    if let Some(pod) = state.pods.get(&key)
                        && pod.phase == Phase::Pending
                        && !pod.deleting
                    {
                        let node = pod.node;
                        let slot = state.nodes[node].used.iter().position(|used| !used);
                        if let Some(slot) = slot {
                            state.nodes[node].used[slot] = true;
                        }
                        let pod = state.pods.get_mut(&key).expect("present above");
                        pod.slot = slot.map(|s| s as u8);
                        pod.phase = Phase::Running;
                        pod.started = Some(objects::now());
                        pod.ready_delay_passed = ready_delay.is_zero();
                        if !ready_delay.is_zero() {
                            queue.insert(Due::Ready(key.clone()), ready_delay);
                        }
                        finish = pod.finish;
                    }
                    if let Some((seconds, success)) = finish {
                        queue.insert(
                            Due::Finish(key.clone(), success),
                            Duration::from_secs(seconds),
                        );
                    }
                    status_write(&state, &key)
                }
                Due::Ready(key) => {
                    let changed = state.pods.get_mut(&key).is_some_and(|pod| {
                        let was = pod.ready();
                        pod.ready_delay_passed = true;
                        pod.ready() != was
                    });
                    changed.then(|| status_write(&state, &key)).flatten()
                }
                Due::Finish(key, success) => {
                    let finished = state.pods.get_mut(&key).is_some_and(|pod| {
                        let running = pod.phase == Phase::Running && !pod.deleting;
                        if running {
                            pod.phase = if success {
                                Phase::Succeeded
                            } else {
                                Phase::Failed
                            };
                            pod.finished = Some(objects::now());
                        }
                        running
                    });
                    finished.then(|| status_write(&state, &key)).flatten()
                }
                // A silent node's kubelet is gone: its pods stay
                // terminating until it is back.
                Due::Delete(key) => match state.pods.get(&key) {
                    Some(pod) if state.nodes[pod.node].lease_stopped => {
                        queue.insert(Due::Delete(key), SILENT_RETRY);
                        None
                    }
                    Some(pod) => Some(Write::DeletePod {
                        key: key.clone(),
                        uid: pod.uid.clone(),
                    }),
                    None => None,
                },
            }
        };
        if let Some(write) = write
            && writes.send(write).await.is_err()
        {
            return;
        }
    }
}

/// Follows every pod bound to a node, and acts for the simulated ones.
async fn pod_loop(
    client: Client,
    shared: Arc<Shared>,
    due: mpsc::UnboundedSender<(Duration, Due)>,
    writes: mpsc::Sender<Write>,
    stop: CancellationToken,
) {
    let pods: Api<Pod> = Api::all(client);
    let config = watcher::Config::default().fields("spec.nodeName!=");
    let mut events = watcher(pods, config).default_backoff().boxed();
    loop {
        let event = tokio::select! {
            _ = stop.cancelled() => return,
            event = events.try_next() => event,
        };
        let event = match event {
            Ok(Some(event)) => event,
            Ok(None) => return,
            Err(err) => {
                tracing::warn!("simulated kubelet: pod watch: {err}");
                continue;
            }
        };
        let actions = {
            let mut state = shared.state.lock().expect("sim state lock");
            match event {
                watcher::Event::Init => {
                    state.seen = Some(Default::default());
                    Vec::new()
                }
                watcher::Event::InitApply(pod) => {
                    let key = pod_key(&pod);
                    if let Some(seen) = &mut state.seen {
                        seen.insert(key);
                    }
                    observe(&shared.config, &mut state, &pod)
                }
                watcher::Event::InitDone => {
                    if let Some(seen) = state.seen.take() {
                        let gone: Vec<String> = state
                            .pods
                            .keys()
                            .filter(|k| !seen.contains(*k))
                            .cloned()
                            .collect();
                        for key in gone {
                            forget(&mut state, &key);
                        }
                    }
                    Vec::new()
                }
                watcher::Event::Apply(pod) => observe(&shared.config, &mut state, &pod),
                watcher::Event::Delete(pod) => {
                    forget(&mut state, &pod_key(&pod));
                    Vec::new()
                }
            }
        };
        for action in actions {
            match action {
                Action::Later(delay, what) => {
                    if due.send((delay, what)).is_err() {
                        return;
                    }
                }
                Action::Now(write) => {
                    if writes.send(write).await.is_err() {
                        return;
                    }
                }
            }
        }
    }
}

enum Action {
    Later(Duration, Due),
    Now(Write),
}

fn pod_key(pod: &Pod) -> String {
    format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or(""),
        pod.metadata.name.as_deref().unwrap_or("")
    )
}

fn forget(state: &mut State, key: &str) {
    if let Some(pod) = state.pods.remove(key)
        && let Some(slot) = pod.slot
        && let Some(node) = state.nodes.get_mut(pod.node)
    {
        node.used[slot as usize] = false;
    }
}

fn annotation<'p>(pod: &'p Pod, key: &str) -> Option<&'p str> {
    pod.metadata
        .annotations
        .as_ref()?
        .get(key)
        .map(String::as_str)
}

/// What a pod event means for the simulated kubelet.
fn observe(config: &Config, state: &mut State, pod: &Pod) -> Vec<Action> {
    let Some(&node) = pod
        .spec
        .as_ref()
        .and_then(|s| s.node_name.as_ref())
        .and_then(|n| state.by_name.get(n))
    else {
        return Vec::new();
    };
    let key = pod_key(pod);
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    if state.pods.get(&key).is_some_and(|p| p.uid != uid) {
        // The same name again: a new pod.
        forget(state, &key);
    }
    let mut actions = Vec::new();
    if !state.pods.contains_key(&key) {
        let tracked = adopt(pod, node, &uid, state);
        let pending = tracked.phase == Phase::Pending;
        state.pods.insert(key.clone(), tracked);
        if pending {
            actions.push(Action::Later(config.start_delay, Due::Start(key.clone())));
        }
    }
    let Some(tracked) = state.pods.get_mut(&key) else {
        return actions;
    };
    if pod.metadata.deletion_timestamp.is_some() {
        if !tracked.deleting {
            tracked.deleting = true;
            let grace = pod
                .metadata
                .deletion_grace_period_seconds
                .unwrap_or(30)
                .clamp(0, GRACE_MAX);
            actions.push(Action::Later(
                Duration::from_secs(grace as u64),
                Due::Delete(key),
            ));
        }
        return actions;
    }
    // Staged faults, as the annotations say now.
    let crash = annotation(pod, CRASH) == Some("true");
    let ready_wanted = annotation(pod, READY) != Some("false");
    let mut changed = false;
    if tracked.phase == Phase::Running && crash != tracked.crashed {
        tracked.crashed = crash;
        if crash {
            tracked.restarts += 1;
            if tracked.restart_policy == "Never" {
                tracked.phase = Phase::Failed;
                tracked.finished = Some(objects::now());
            }
        }
        changed = true;
    }
    if ready_wanted != tracked.ready_wanted {
        tracked.ready_wanted = ready_wanted;
        changed |= tracked.phase == Phase::Running;
    }
    if changed && let Some(write) = status_write(state, &key) {
        actions.push(Action::Now(write));
    }
    actions
}

/// A pod newly seen on one of our nodes; one already running (say, from
/// before the simulator restarted) keeps its address.
fn adopt(pod: &Pod, node: usize, uid: &str, state: &mut State) -> SimPod {
    let spec = pod.spec.as_ref();
    let list = |containers: Option<&Vec<k8s_openapi::api::core::v1::Container>>| {
        containers
            .into_iter()
            .flatten()
            .map(|c| (c.name.clone(), c.image.clone().unwrap_or_default()))
            .collect::<Vec<_>>()
    };
    let status = pod.status.as_ref();
    let phase = match status.and_then(|s| s.phase.as_deref()) {
        Some("Running") => Phase::Running,
        Some("Succeeded") => Phase::Succeeded,
        Some("Failed") => Phase::Failed,
        _ => Phase::Pending,
    };
    let mut slot = None;
    if phase == Phase::Running
        && let Some(ip) = status
            .and_then(|s| s.pod_ip.as_deref())
            .and_then(|ip| ip.parse::<Ipv4Addr>().ok())
    {
        let node_state = &mut state.nodes[node];
        let [a, b, c, d] = ip.octets();
        let [x, y, z, _] = node_state.base.octets();
        if (a, b, c) == (x, y, z) && (2..=254).contains(&d) {
            node_state.used[(d - 2) as usize] = true;
            slot = Some(d - 2);
        }
    }
    let seconds = |key: &str| annotation(pod, key).and_then(|v| v.trim().parse::<u64>().ok());
    let finish = seconds(SUCCEED_AFTER)
        .map(|s| (s, true))
        .or_else(|| seconds(FAIL_AFTER).map(|s| (s, false)));
    let qos = match status.and_then(|s| s.qos_class.as_deref()) {
        Some("Guaranteed") => "Guaranteed",
        Some("Burstable") => "Burstable",
        _ => "BestEffort",
    };
    SimPod {
        uid: uid.to_string(),
        node,
        slot,
        phase,
        qos,
        started: status
            .and_then(|s| s.start_time.as_ref())
            .map(|t| tug_api::format::timestamp(t.0.as_second())),
        finished: None,
        containers: list(spec.map(|s| &s.containers)),
        init_containers: list(spec.and_then(|s| s.init_containers.as_ref())),
        restart_policy: spec
            .and_then(|s| s.restart_policy.clone())
            .unwrap_or_else(|| "Always".into()),
        crashed: false,
        restarts: 0,
        ready_wanted: annotation(pod, READY) != Some("false"),
        ready_delay_passed: phase == Phase::Running,
        deleting: false,
        finish,
    }
}

/// Follows the simulated nodes for the lease annotation, and for their
/// removal by a user. A live kubelet posts its status again when the
/// API says otherwise (the node controller marked it Unknown while it
/// was silent).
async fn node_loop(
    client: Client,
    shared: Arc<Shared>,
    writes: mpsc::Sender<Write>,
    stop: CancellationToken,
) {
    let nodes: Api<Node> = Api::all(client);
    let config = watcher::Config::default().labels("type=sim");
    let mut events = watcher(nodes, config).default_backoff().boxed();
    loop {
        let event = tokio::select! {
            _ = stop.cancelled() => return,
            event = events.try_next() => event,
        };
        let mut state = shared.state.lock().expect("sim state lock");
        match event {
            Ok(Some(watcher::Event::Apply(node) | watcher::Event::InitApply(node))) => {
                let stopped = node
                    .metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(LEASE))
                    .is_some_and(|v| v == "stopped");
                let ready = node
                    .status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
                let name = node.metadata.name.unwrap_or_default();
                if let Some(&i) = state.by_name.get(&name) {
                    state.nodes[i].lease_stopped = stopped;
                    state.nodes[i].gone = false;
                    if !stopped && !ready {
                        let _ = writes.try_send(Write::Heartbeat { node: name });
                    }
                }
            }
            Ok(Some(watcher::Event::Delete(node))) => {
                let name = node.metadata.name.unwrap_or_default();
                if let Some(&i) = state.by_name.get(&name) {
                    state.nodes[i].gone = true;
                }
            }
            Ok(Some(_)) => {}
            Ok(None) => return,
            Err(err) => tracing::warn!("simulated kubelet: node watch: {err}"),
        }
    }
}
