//! The node lifecycle controller and the taint eviction controller.
//!
//! Every node is looked at each monitor period (5 s): a node whose
//! kubelet has renewed neither its Lease nor its Ready heartbeat for the
//! grace period (50 s by default) has its conditions set to Unknown
//! ("Kubelet stopped posting node status.") and its pods marked not
//! ready. Taints follow the conditions, as upstream's: NoSchedule ones at
//! once (not-ready, unreachable, the pressures, unschedulable), the
//! NoExecute ones (not-ready, unreachable) at a limited rate per zone,
//! none while a zone is wholly down. The taint eviction controller then
//! deletes the pods on a NoExecute-tainted node that do not tolerate the
//! taints, at once or after their tolerationSeconds.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, NodeCondition, Pod, Taint, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;

use tug_scheduler::plugins::tolerates;

use crate::events::{self, Recorder};
use crate::informer::{Informer, key_of};
use crate::workqueue::WorkQueue;

pub const COMPONENT: &str = "node-controller";
pub const EVICTION_COMPONENT: &str = "taint-eviction-controller";
/// How often every node is looked at.
pub const MONITOR_PERIOD: Duration = Duration::from_secs(5);
/// Grace for a node that never posted its status.
const STARTUP_GRACE: Duration = Duration::from_secs(60);
/// A zone is partly disrupted from this share of unhealthy nodes on.
const UNHEALTHY_ZONE_THRESHOLD: f64 = 0.55;
/// Partly disrupted zones this large still evict, slowly.
const LARGE_CLUSTER: usize = 50;
const SECONDARY_EVICTION_RATE: f64 = 0.01;

pub const NOT_READY: &str = "node.kubernetes.io/not-ready";
pub const UNREACHABLE: &str = "node.kubernetes.io/unreachable";
const UNSCHEDULABLE: &str = "node.kubernetes.io/unschedulable";
/// Condition (type, status) to the NoSchedule taint it brings.
const CONDITION_TAINTS: &[(&str, &str, &str)] = &[
    ("Ready", "False", NOT_READY),
    ("Ready", "Unknown", UNREACHABLE),
    (
        "MemoryPressure",
        "True",
        "node.kubernetes.io/memory-pressure",
    ),
    ("DiskPressure", "True", "node.kubernetes.io/disk-pressure"),
    ("PIDPressure", "True", "node.kubernetes.io/pid-pressure"),
    (
        "NetworkUnavailable",
        "True",
        "node.kubernetes.io/network-unavailable",
    ),
];
/// The conditions set to Unknown when a kubelet stops posting.
const KUBELET_CONDITIONS: &[&str] = &["Ready", "MemoryPressure", "DiskPressure", "PIDPressure"];

#[derive(Clone, Debug)]
pub struct Config {
    /// How long a node may go without a heartbeat before it is Unknown.
    pub grace_period: Duration,
    /// Nodes tainted NoExecute per second in a healthy zone.
    pub eviction_rate: f64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            grace_period: Duration::from_secs(50),
            eviction_rate: 0.1,
        }
    }
}

fn condition<'a>(node: &'a Node, type_: &str) -> Option<&'a NodeCondition> {
    node.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
}

fn ready_status(node: &Node) -> &str {
    condition(node, "Ready").map_or("Unknown", |c| c.status.as_str())
}

/// The conditions of a node whose kubelet stopped posting: each of the
/// kubelet's turned Unknown (added if missing); `None` if already so.
pub fn unknown_conditions(node: &Node, now: Timestamp) -> Option<Vec<NodeCondition>> {
    let mut conditions = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    let mut changed = false;
    for type_ in KUBELET_CONDITIONS {
        match conditions.iter_mut().find(|c| c.type_ == *type_) {
            Some(c) if c.status == "Unknown" => {}
            Some(c) => {
                c.status = "Unknown".into();
                c.reason = Some("NodeStatusUnknown".into());
                c.message = Some("Kubelet stopped posting node status.".into());
                c.last_transition_time = Some(Time(now));
                changed = true;
            }
            None => {
                conditions.push(NodeCondition {
                    type_: type_.to_string(),
                    status: "Unknown".into(),
                    reason: Some("NodeStatusNeverUpdated".into()),
                    message: Some("Kubelet never posted node status.".into()),
                    last_heartbeat_time: node.metadata.creation_timestamp.clone(),
                    last_transition_time: Some(Time(now)),
                });
                changed = true;
            }
        }
    }
    changed.then_some(conditions)
}

/// The taints a node should carry given its conditions: the whole list,
/// the ones not managed here kept; a NoExecute taint wanted but missing
/// is added only if `may_add_no_execute`. Answers the list and whether
/// a NoExecute taint is still to add.
pub fn wanted_taints(node: &Node, may_add_no_execute: bool, now: Timestamp) -> (Vec<Taint>, bool) {
    let spec = node.spec.clone().unwrap_or_default();
    let current = spec.taints.unwrap_or_default();
    let managed = |t: &Taint| {
        t.key == UNSCHEDULABLE && t.effect == "NoSchedule"
            || CONDITION_TAINTS.iter().any(|(_, _, key)| *key == t.key)
                && (t.effect == "NoSchedule"
                    || t.effect == "NoExecute" && (t.key == NOT_READY || t.key == UNREACHABLE))
    };
    let mut taints: Vec<Taint> = current.iter().filter(|t| !managed(t)).cloned().collect();
    let no_schedule = |key: &str| Taint {
        key: key.into(),
        effect: "NoSchedule".into(),
        value: None,
        time_added: None,
    };
    if spec.unschedulable == Some(true) {
        taints.push(no_schedule(UNSCHEDULABLE));
    }
    for (type_, status, key) in CONDITION_TAINTS {
        let matches = match condition(node, type_) {
            Some(c) => c.status == *status,
            // No Ready condition yet: Unknown.
            None => *type_ == "Ready" && *status == "Unknown" && node.status.is_some(),
        };
        if matches {
            taints.push(no_schedule(key));
        }
    }
    let no_execute = match ready_status(node) {
        "False" => Some(NOT_READY),
        "Unknown" if condition(node, "Ready").is_some() => Some(UNREACHABLE),
        _ => None,
    };
    let mut pending = false;
    if let Some(key) = no_execute {
        match current
            .iter()
            .find(|t| t.key == key && t.effect == "NoExecute")
        {
            Some(existing) => taints.push(existing.clone()),
            None if may_add_no_execute => taints.push(Taint {
                key: key.into(),
                effect: "NoExecute".into(),
                value: None,
                time_added: Some(Time(now)),
            }),
            None => pending = true,
        }
    }
    (taints, pending)
}

/// When a pod must go from a node with these NoExecute taints: `None`
/// never (no such taint, or tolerated for ever), `Some(0)` at once, else
/// after the shortest tolerationSeconds of the tolerations that match.
pub fn eviction_delay(tolerations: &[Toleration], taints: &[Taint]) -> Option<Duration> {
    let no_execute: Vec<&Taint> = taints.iter().filter(|t| t.effect == "NoExecute").collect();
    if no_execute.is_empty() {
        return None;
    }
    let mut shortest: Option<i64> = None;
    for taint in no_execute {
        let matching: Vec<&Toleration> =
            tolerations.iter().filter(|t| tolerates(t, taint)).collect();
        if matching.is_empty() {
            return Some(Duration::ZERO);
        }
        for toleration in matching {
            if let Some(seconds) = toleration.toleration_seconds {
                shortest = Some(shortest.map_or(seconds, |s| s.min(seconds)));
            }
        }
    }
    shortest.map(|s| Duration::from_secs(s.max(0) as u64))
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ZoneState {
    Normal,
    PartialDisruption,
    FullDisruption,
}

/// A zone's state from its ready and not-ready node counts.
pub fn zone_state(ready: usize, not_ready: usize) -> ZoneState {
    if ready == 0 && not_ready > 0 {
        ZoneState::FullDisruption
    } else if not_ready > 2
        && not_ready as f64 / (ready + not_ready) as f64 >= UNHEALTHY_ZONE_THRESHOLD
    {
        ZoneState::PartialDisruption
    } else {
        ZoneState::Normal
    }
}

/// A token bucket with a burst of one.
struct Bucket {
    tokens: f64,
    at: Instant,
}

struct Health {
    ready_heartbeat: Option<Timestamp>,
    lease_renew: Option<Timestamp>,
    probed: Instant,
}

struct Lifecycle {
    client: Client,
    config: Config,
    nodes: Informer<Node>,
    leases: Informer<Lease>,
    pods: Informer<Pod>,
    queue: WorkQueue,
    health: Mutex<HashMap<String, Health>>,
    zones: Mutex<HashMap<String, (ZoneState, usize, Bucket)>>,
    recorder: Recorder,
}

fn zone_of(node: &Node) -> String {
    node.labels()
        .get("topology.kubernetes.io/zone")
        .cloned()
        .unwrap_or_default()
}

impl Lifecycle {
    /// Recounts the zones; every monitor period.
    fn count_zones(&self) {
        let mut counts: HashMap<String, (usize, usize)> = HashMap::new();
        for key in self.nodes.keys() {
            if let Some(node) = self.nodes.get(&key) {
                let entry = counts.entry(zone_of(&node)).or_default();
                if ready_status(&node) == "True" {
                    entry.0 += 1;
                } else {
                    entry.1 += 1;
                }
            }
        }
        let mut zones = self.zones.lock().expect("zones");
        zones.retain(|zone, _| counts.contains_key(zone));
        for (zone, (ready, not_ready)) in counts {
            let state = zone_state(ready, not_ready);
            let entry = zones.entry(zone).or_insert((
                state,
                0,
                Bucket {
                    tokens: 1.0,
                    at: Instant::now(),
                },
            ));
            entry.0 = state;
            entry.1 = ready + not_ready;
        }
    }

    /// Takes a token to taint a node of `zone` NoExecute, if its rate allows.
    fn may_taint(&self, zone: &str) -> bool {
        let mut zones = self.zones.lock().expect("zones");
        let Some((state, size, bucket)) = zones.get_mut(zone) else {
            return true;
        };
        let rate = match state {
            ZoneState::Normal => self.config.eviction_rate,
            ZoneState::PartialDisruption if *size > LARGE_CLUSTER => SECONDARY_EVICTION_RATE,
            _ => 0.0,
        };
        let now = Instant::now();
        bucket.tokens =
            (bucket.tokens + now.duration_since(bucket.at).as_secs_f64() * rate).min(1.0);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// When the kubelet of `node` was last heard of, by our clock.
    fn probed(&self, node: &Node) -> Instant {
        let name = node.name_any();
        let ready_heartbeat = condition(node, "Ready")
            .and_then(|c| c.last_heartbeat_time.as_ref())
            .map(|t| t.0);
        let lease_renew = self
            .leases
            .get(&format!("kube-node-lease/{name}"))
            .and_then(|l| l.spec.as_ref()?.renew_time.as_ref().map(|t| t.0));
        let mut health = self.health.lock().expect("node health");
        let entry = health.entry(name).or_insert_with(|| Health {
            ready_heartbeat,
            lease_renew,
            probed: Instant::now(),
        });
        if entry.ready_heartbeat != ready_heartbeat || entry.lease_renew != lease_renew {
            entry.ready_heartbeat = ready_heartbeat;
            entry.lease_renew = lease_renew;
            entry.probed = Instant::now();
        }
        entry.probed
    }

    async fn sync(&self, name: &str) -> anyhow::Result<Option<Duration>> {
        let Some(cached) = self.nodes.get(name) else {
            self.health.lock().expect("node health").remove(name);
            return Ok(None);
        };
        let mut node = (*cached).clone();
        let api: Api<Node> = Api::all(self.client.clone());
        let grace = if condition(&node, "Ready").is_some() {
            self.config.grace_period
        } else {
            STARTUP_GRACE.max(self.config.grace_period)
        };
        if self.probed(&node).elapsed() > grace
            && let Some(conditions) = unknown_conditions(&node, Timestamp::now())
        {
            let was_ready = ready_status(&node) == "True";
            node.status.get_or_insert_with(Default::default).conditions = Some(conditions);
            node.metadata.managed_fields = None;
            node = api
                .replace_status(name, &PostParams::default(), &node)
                .await?;
            if was_ready {
                self.recorder.event(
                    events::reference(&node),
                    events::NORMAL,
                    "NodeNotReady",
                    format!("Node {name} status is now: NodeNotReady"),
                );
                self.mark_pods_not_ready(name).await;
            }
        }
        let may = self.may_taint_lazily(&node);
        let (taints, pending) = wanted_taints(&node, may, Timestamp::now());
        let current = node
            .spec
            .as_ref()
            .and_then(|s| s.taints.clone())
            .unwrap_or_default();
        if !same_taints(&current, &taints) {
            node.spec.get_or_insert_with(Default::default).taints =
                (!taints.is_empty()).then_some(taints);
            node.metadata.managed_fields = None;
            api.replace(name, &PostParams::default(), &node).await?;
        }
        Ok(Some(if pending {
            Duration::from_secs(1)
        } else {
            MONITOR_PERIOD
        }))
    }

    /// A rate token, taken only when the node wants a NoExecute taint it
    /// lacks.
    fn may_taint_lazily(&self, node: &Node) -> bool {
        let (_, pending) = wanted_taints(node, false, Timestamp::now());
        pending && self.may_taint(&zone_of(node))
    }

    /// Upstream's MarkPodsNotReady: the pods of an unreachable node are
    /// not ready.
    async fn mark_pods_not_ready(&self, node: &str) {
        for pod in self.pods.indexed(&format!("node:{node}")) {
            let mut conditions = pod
                .status
                .as_ref()
                .and_then(|s| s.conditions.clone())
                .unwrap_or_default();
            let Some(ready) = conditions.iter_mut().find(|c| c.type_ == "Ready") else {
                continue;
            };
            if ready.status == "False" {
                continue;
            }
            ready.status = "False".into();
            ready.last_transition_time = Some(Time(Timestamp::now()));
            let api: Api<Pod> =
                Api::namespaced(self.client.clone(), &pod.namespace().unwrap_or_default());
            let patch = json!({"status": {"conditions": conditions}});
            if let Err(err) = api
                .patch_status(
                    &pod.name_any(),
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await
            {
                tracing::debug!(error = %err, "node lifecycle: could not mark a pod not ready");
            }
            self.recorder.event(
                events::reference(pod.as_ref()),
                events::WARNING,
                "NodeNotReady",
                "Node is not ready".into(),
            );
        }
    }
}

fn same_taints(a: &[Taint], b: &[Taint]) -> bool {
    let key = |t: &Taint| (t.key.clone(), t.effect.clone(), t.value.clone());
    let mut a: Vec<_> = a.iter().map(key).collect();
    let mut b: Vec<_> = b.iter().map(key).collect();
    a.sort();
    b.sort();
    a == b
}

/// Starts the node lifecycle controller.
pub(crate) fn start(ctx: &crate::Context) -> crate::Running {
    let controller = Arc::new(Lifecycle {
        client: ctx.client.clone(),
        config: ctx.config.nodes.clone(),
        nodes: ctx.nodes.clone(),
        leases: ctx.leases.clone(),
        pods: ctx.pods.clone(),
        queue: WorkQueue::default(),
        health: Mutex::new(HashMap::new()),
        zones: Mutex::new(HashMap::new()),
        recorder: ctx.recorder.for_component(COMPONENT),
    });
    let c = controller.clone();
    ctx.nodes.subscribe(Box::new(move |old, new| {
        if let Some(node) = new.or(old) {
            c.queue.add(&node.name_any());
        }
    }));
    let c = controller.clone();
    let mut running =
        crate::Running::workers(COMPONENT, controller.queue.clone(), 1, move |name| {
            let c = c.clone();
            async move { c.sync(&name).await }
        });
    running.ticker = Some(Box::new(move || controller.count_zones()));
    running
}

// ---- Taint eviction ------------------------------------------------------

struct Eviction {
    client: Client,
    nodes: Informer<Node>,
    pods: Informer<Pod>,
    queue: WorkQueue,
    /// When each pod was first seen due to go, by our clock.
    first_seen: Mutex<HashMap<String, Instant>>,
    recorder: Recorder,
}

fn no_execute(node: Option<&Node>) -> Vec<Taint> {
    node.and_then(|n| n.spec.as_ref()?.taints.clone())
        .unwrap_or_default()
        .into_iter()
        .filter(|t| t.effect == "NoExecute")
        .collect()
}

impl Eviction {
    async fn sync(&self, key: &str) -> anyhow::Result<Option<Duration>> {
        let forget = || {
            self.first_seen.lock().expect("evictions").remove(key);
            Ok(None)
        };
        let Some(pod) = self.pods.get(key) else {
            return forget();
        };
        let node_name = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .unwrap_or_default();
        if pod.metadata.deletion_timestamp.is_some() || node_name.is_empty() {
            return forget();
        }
        let taints = no_execute(self.nodes.get(&node_name).as_deref());
        let tolerations = pod
            .spec
            .as_ref()
            .and_then(|s| s.tolerations.clone())
            .unwrap_or_default();
        let Some(delay) = eviction_delay(&tolerations, &taints) else {
            return forget();
        };
        let first = *self
            .first_seen
            .lock()
            .expect("evictions")
            .entry(key.to_string())
            .or_insert_with(Instant::now);
        let waited = first.elapsed();
        if waited < delay {
            return Ok(Some(delay - waited));
        }
        let namespace = pod.namespace().unwrap_or_default();
        self.recorder.event(
            events::reference(pod.as_ref()),
            events::NORMAL,
            "TaintManagerEviction",
            format!("Marking for deletion Pod {namespace}/{}", pod.name_any()),
        );
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &namespace);
        let condition = json!({"status": {"conditions": [{
            "type": "DisruptionTarget",
            "status": "True",
            "reason": "DeletionByTaintManager",
            "message": "Taint manager: deleting due to NoExecute taint",
            "lastTransitionTime": Time(Timestamp::now()),
        }]}});
        let _ = api
            .patch_status(
                &pod.name_any(),
                &PatchParams::default(),
                &Patch::Strategic(&condition),
            )
            .await;
        match api.delete(&pod.name_any(), &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(err) => return Err(err.into()),
        }
        forget()
    }
}

/// Starts the taint eviction controller.
pub(crate) fn start_eviction(ctx: &crate::Context) -> crate::Running {
    let controller = Arc::new(Eviction {
        client: ctx.client.clone(),
        nodes: ctx.nodes.clone(),
        pods: ctx.pods.clone(),
        queue: WorkQueue::default(),
        first_seen: Mutex::new(HashMap::new()),
        recorder: ctx.recorder.for_component(EVICTION_COMPONENT),
    });
    let c = controller.clone();
    ctx.pods.subscribe(Box::new(move |old, new| {
        let Some(pod) = new else {
            if let Some(old) = old {
                c.first_seen
                    .lock()
                    .expect("evictions")
                    .remove(&key_of(old.as_ref()));
            }
            return;
        };
        let node = |p: &Pod| p.spec.as_ref().and_then(|s| s.node_name.clone());
        let tolerations = |p: &Pod| p.spec.as_ref().and_then(|s| s.tolerations.clone());
        let changed =
            old.is_none_or(|o| node(o) != node(pod) || tolerations(o) != tolerations(pod));
        if changed && node(pod).is_some_and(|n| !no_execute(c.nodes.get(&n).as_deref()).is_empty())
        {
            c.queue.add(&key_of(pod.as_ref()));
        }
    }));
    let c = controller.clone();
    let pods = ctx.pods.clone();
    ctx.nodes.subscribe(Box::new(move |old, new| {
        let before = no_execute(old.map(|n| n.as_ref()));
        let after = no_execute(new.map(|n| n.as_ref()));
        if same_taints(&before, &after) {
            return;
        }
        let Some(node) = new.or(old) else { return };
        for pod in pods.indexed(&format!("node:{}", node.name_any())) {
            c.queue.add(&key_of(pod.as_ref()));
        }
    }));
    crate::Running::workers(
        EVICTION_COMPONENT,
        controller.queue.clone(),
        4,
        move |key| {
            let c = controller.clone();
            async move { c.sync(&key).await }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn node(conditions: Value, taints: Value) -> Node {
        serde_json::from_value(json!({
            "metadata": {"name": "n1", "creationTimestamp": "2026-11-30T10:00:00Z"},
            "spec": {"taints": taints},
            "status": {"conditions": conditions},
        }))
        .unwrap()
    }

    fn keys(taints: &[Taint]) -> Vec<String> {
        let mut keys: Vec<String> = taints
            .iter()
            .map(|t| format!("{}:{}", t.key, t.effect))
            .collect();
        keys.sort();
        keys
    }

    #[test]
    fn a_silent_kubelets_conditions_turn_unknown() {
        let now: Timestamp = "2026-11-30T12:00:00Z".parse().unwrap();
        let n = node(
            json!([{"type": "Ready", "status": "True", "lastHeartbeatTime": "2026-11-30T11:00:00Z"}]),
            json!([]),
        );
        let conditions = unknown_conditions(&n, now).unwrap();
        assert_eq!(conditions.len(), 4);
        let ready = &conditions[0];
        assert_eq!(
            (
                ready.status.as_str(),
                ready.reason.as_deref(),
                ready.message.as_deref()
            ),
            (
                "Unknown",
                Some("NodeStatusUnknown"),
                Some("Kubelet stopped posting node status.")
            )
        );
        assert_eq!(
            ready.last_heartbeat_time.as_ref().unwrap().0.to_string(),
            "2026-11-30T11:00:00Z"
        );
        assert_eq!(
            conditions[1].reason.as_deref(),
            Some("NodeStatusNeverUpdated")
        );
        let mut again = n.clone();
        again.status.as_mut().unwrap().conditions = Some(conditions);
        assert!(unknown_conditions(&again, now).is_none());
    }

    #[test]
    fn taints_follow_conditions() {
        let now: Timestamp = "2026-11-30T12:00:00Z".parse().unwrap();
        let user = json!({"key": "team", "value": "a", "effect": "NoSchedule"});
        let cases = [
            (
                json!([{"type": "Ready", "status": "True"}]),
                json!([user, {"key": NOT_READY, "effect": "NoSchedule"}]),
                true,
                vec!["team:NoSchedule"],
                false,
            ),
            (
                json!([{"type": "Ready", "status": "Unknown"}]),
                json!([]),
                true,
                vec![
                    "node.kubernetes.io/unreachable:NoExecute",
                    "node.kubernetes.io/unreachable:NoSchedule",
                ],
                false,
            ),
            (
                json!([{"type": "Ready", "status": "Unknown"}]),
                json!([]),
                false,
                vec!["node.kubernetes.io/unreachable:NoSchedule"],
                true,
            ),
            (
                json!([{"type": "Ready", "status": "False"}, {"type": "DiskPressure", "status": "True"}]),
                json!([{"key": UNREACHABLE, "effect": "NoExecute"}]),
                true,
                vec![
                    "node.kubernetes.io/disk-pressure:NoSchedule",
                    "node.kubernetes.io/not-ready:NoExecute",
                    "node.kubernetes.io/not-ready:NoSchedule",
                ],
                false,
            ),
        ];
        for (conditions, taints, may, want, want_pending) in cases {
            let n = node(conditions.clone(), taints);
            let (got, pending) = wanted_taints(&n, may, now);
            assert_eq!(
                (keys(&got), pending),
                (want.iter().map(|s| s.to_string()).collect(), want_pending),
                "{conditions}"
            );
        }
    }

    #[test]
    fn pods_go_at_once_or_after_their_toleration() {
        let taint = |key: &str| Taint {
            key: key.into(),
            effect: "NoExecute".into(),
            value: None,
            time_added: None,
        };
        let toleration = |v: Value| -> Toleration { serde_json::from_value(v).unwrap() };
        let unreachable = [taint(UNREACHABLE)];
        assert_eq!(eviction_delay(&[], &unreachable), Some(Duration::ZERO));
        assert_eq!(eviction_delay(&[], &[]), None);
        let for_300 = toleration(
            json!({"key": UNREACHABLE, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}),
        );
        let for_5 = toleration(json!({"operator": "Exists", "tolerationSeconds": 5}));
        let forever = toleration(json!({"key": UNREACHABLE, "operator": "Exists"}));
        assert_eq!(
            eviction_delay(std::slice::from_ref(&for_300), &unreachable),
            Some(Duration::from_secs(300))
        );
        assert_eq!(
            eviction_delay(&[for_300.clone(), for_5], &unreachable),
            Some(Duration::from_secs(5))
        );
        assert_eq!(eviction_delay(&[forever], &unreachable), None);
        // One taint not tolerated: at once.
        assert_eq!(
            eviction_delay(&[for_300], &[taint(UNREACHABLE), taint("other")]),
            Some(Duration::ZERO)
        );
        let equal = toleration(json!({"key": "k", "value": "v", "effect": "NoExecute"}));
        let mut valued = taint("k");
        valued.value = Some("v".into());
        assert_eq!(eviction_delay(&[equal], &[valued]), None);
    }

    #[test]
    fn zones_are_disrupted_by_the_share_of_unhealthy_nodes() {
        assert_eq!(zone_state(3, 1), ZoneState::Normal);
        assert_eq!(zone_state(0, 2), ZoneState::FullDisruption);
        assert_eq!(zone_state(2, 3), ZoneState::PartialDisruption);
        assert_eq!(zone_state(1, 2), ZoneState::Normal);
    }
}
