//! What scheduling needs of a pod and of a node, read once from the API
//! objects: requests as numbers, tolerations, selectors, ports.

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::{
    Container, Node, NodeSelector, Pod, PodAffinityTerm, PodSpec, PreferredSchedulingTerm, Taint,
    Toleration, TopologySpreadConstraint, WeightedPodAffinityTerm,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use tug_api::quantity;

use crate::labels::Selector;

/// Each namespace's labels, for affinity terms with a namespaceSelector.
pub type Namespaces = HashMap<String, BTreeMap<String, String>>;

/// The topology domains of one key (the values nodes have for it), as
/// small numbers, so that a cycle counts pods per domain in a vector
/// rather than looking up labels and hashing values per node.
#[derive(Debug, Default)]
pub struct Domains {
    /// Per node, in the cluster's order: its domain, if it has the key.
    pub of_node: Vec<Option<u32>>,
    /// Each value's domain.
    pub ids: HashMap<String, u32>,
}

impl Domains {
    pub fn build(key: &str, nodes: &[NodeInfo]) -> Self {
        let mut domains = Domains::default();
        for node in nodes {
            let id = node.labels.get(key).map(|value| {
                let next = domains.ids.len() as u32;
                *domains.ids.entry(value.clone()).or_insert(next)
            });
            domains.of_node.push(id);
        }
        domains
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// The domain of a node, found by its labels.
    pub fn of(&self, key: &str, node: &NodeInfo) -> Option<usize> {
        let value = node.labels.get(key)?;
        self.ids.get(value).map(|id| *id as usize)
    }
}

/// Per node (in the cluster's order), what one counting of pods found
/// there and the node's [`NodeInfo::generation`] then.
pub type NodeCounts = Vec<(u64, i64)>;

/// How many countings [`Topology`] keeps (each a number per node).
const COUNTINGS_MAX: usize = 16;

/// How many changes of nodes' pods [`Topology`] remembers; totals kept
/// from before the oldest are counted again.
const CHANGES_MAX: usize = 8192;

/// What one counting found per domain, kept with what each node added to
/// it: [`Topology::take_totals`] gives it back with the nodes changed
/// since, so that a cycle looks at those alone.
#[derive(Debug, Clone, Default)]
pub struct Totals {
    /// Per node (in the cluster's order): what it added.
    pub per_node: Vec<i64>,
    /// Per domain: the total, `None` for a domain no counted node is in.
    pub per_domain: Vec<Option<i64>>,
    /// The changes already in it (see [`Topology::touched`]).
    seen: u64,
}

impl Totals {
    /// Nothing counted yet, over `nodes` nodes and `domains` domains.
    pub fn new(nodes: usize, domains: usize) -> Self {
        Totals {
            per_node: vec![0; nodes],
            per_domain: vec![None; domains],
            seen: 0,
        }
    }
}

/// The nodes whose pods changed, by index, in order: numbers `base` on.
#[derive(Debug, Default)]
struct Changes {
    base: u64,
    nodes: Vec<u32>,
}

impl Changes {
    fn end(&self) -> u64 {
        self.base + self.nodes.len() as u64
    }
}

/// The domains of each topology key asked for, and what countings of
/// pods found per node (and per domain, for an owner that tells each
/// change of a node's pods), kept until the nodes change.
#[derive(Debug, Default)]
pub struct Topology {
    keys: Mutex<HashMap<String, Arc<Domains>>>,
    counts: Mutex<HashMap<String, NodeCounts>>,
    /// Whether every change of a node's pods is told ([`Topology::tracked`]).
    tracked: bool,
    changes: Mutex<Changes>,
    totals: Mutex<HashMap<String, Totals>>,
}

impl Topology {
    /// A topology whose owner tells it each change of a node's pods
    /// ([`Topology::touched`]): only then are totals kept.
    pub fn tracked() -> Self {
        Topology {
            tracked: true,
            ..Topology::default()
        }
    }

    pub fn domains(&self, key: &str, nodes: &[NodeInfo]) -> Arc<Domains> {
        let mut keys = self.keys.lock().expect("topology lock");
        if let Some(domains) = keys.get(key) {
            return domains.clone();
        }
        let domains = Arc::new(Domains::build(key, nodes));
        keys.insert(key.to_string(), domains.clone());
        domains
    }

    /// The counts kept for the counting `signature` over `nodes` nodes
    /// (none yet: generation 0, never a node's).
    pub fn take_counts(&self, signature: &str, nodes: usize) -> NodeCounts {
        let kept = self
            .counts
            .lock()
            .expect("topology lock")
            .remove(signature)
            .filter(|counts| counts.len() == nodes);
        kept.unwrap_or_else(|| vec![(0, 0); nodes])
    }

    /// Keeps `counts` for the next cycles (forgetting the others when
    /// there are too many).
    pub fn keep_counts(&self, signature: String, counts: NodeCounts) {
        let mut kept = self.counts.lock().expect("topology lock");
        if kept.len() >= COUNTINGS_MAX {
            kept.clear();
        }
        kept.insert(signature, counts);
    }

    /// The pods of node `index` changed.
    pub fn touched(&mut self, index: usize) {
        let changes = self.changes.get_mut().expect("topology lock");
        if changes.nodes.len() >= CHANGES_MAX {
            changes.base = changes.end();
            changes.nodes.clear();
        }
        changes.nodes.push(index as u32);
    }

    /// Whether totals are kept: the owner tells every change.
    pub fn keeps_totals(&self) -> bool {
        self.tracked
    }

    /// The totals kept under `name` over `nodes` nodes, with the nodes
    /// whose pods changed since (maybe more than once); `None` when there
    /// are none, or the changes since are forgotten.
    pub fn take_totals(&self, name: &str, nodes: usize) -> Option<(Totals, Vec<u32>)> {
        let totals = self
            .totals
            .lock()
            .expect("topology lock")
            .remove(name)
            .filter(|t| t.per_node.len() == nodes)?;
        let changes = self.changes.lock().expect("topology lock");
        let since = totals.seen.checked_sub(changes.base)? as usize;
        let changed = changes.nodes.get(since..)?.to_vec();
        Some((totals, changed))
    }

    /// Keeps `totals`, which hold every change told so far.
    pub fn keep_totals(&self, name: String, mut totals: Totals) {
        totals.seen = self.changes.lock().expect("topology lock").end();
        let mut kept = self.totals.lock().expect("topology lock");
        if kept.len() >= COUNTINGS_MAX {
            kept.clear();
        }
        kept.insert(name, totals);
    }

    /// The nodes (or their labels, or their order) changed.
    pub fn clear(&mut self) {
        self.keys.get_mut().expect("topology lock").clear();
        self.counts.get_mut().expect("topology lock").clear();
        self.totals.get_mut().expect("topology lock").clear();
    }
}

/// A container without requests still counts this much when nodes are
/// scored (upstream's non-zero defaults), so that such pods spread.
pub const DEFAULT_MILLI_CPU: i64 = 100;
pub const DEFAULT_MEMORY: i64 = 200 * 1024 * 1024;

/// Amounts of resources: CPU in thousandths of a core, the rest in units.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Resources {
    pub milli_cpu: i64,
    pub memory: i64,
    pub ephemeral_storage: i64,
    /// Extended resources (`example.com/gpu`), hugepages and the like.
    pub scalar: BTreeMap<String, i64>,
}

impl Resources {
    pub fn from_map(map: Option<&BTreeMap<String, Quantity>>) -> Self {
        let mut resources = Resources::default();
        for (name, amount) in map.into_iter().flatten() {
            let clamp = |v: i128| v.clamp(i64::MIN.into(), i64::MAX.into()) as i64;
            match name.as_str() {
                "cpu" => resources.milli_cpu = quantity::milli(&amount.0).map_or(0, clamp),
                "memory" => resources.memory = quantity::value(&amount.0).map_or(0, clamp),
                "ephemeral-storage" => {
                    resources.ephemeral_storage = quantity::value(&amount.0).map_or(0, clamp)
                }
                "pods" => {}
                other => {
                    resources.scalar.insert(
                        other.to_string(),
                        quantity::value(&amount.0).map_or(0, clamp),
                    );
                }
            }
        }
        resources
    }

    pub fn add(&mut self, other: &Resources) {
        self.milli_cpu += other.milli_cpu;
        self.memory += other.memory;
        self.ephemeral_storage += other.ephemeral_storage;
        for (name, amount) in &other.scalar {
            *self.scalar.entry(name.clone()).or_default() += amount;
        }
    }

    pub fn sub(&mut self, other: &Resources) {
        self.milli_cpu -= other.milli_cpu;
        self.memory -= other.memory;
        self.ephemeral_storage -= other.ephemeral_storage;
        for (name, amount) in &other.scalar {
            *self.scalar.entry(name.clone()).or_default() -= amount;
        }
    }

    /// Each resource the larger of the two.
    fn max(&mut self, other: &Resources) {
        self.milli_cpu = self.milli_cpu.max(other.milli_cpu);
        self.memory = self.memory.max(other.memory);
        self.ephemeral_storage = self.ephemeral_storage.max(other.ephemeral_storage);
        for (name, amount) in &other.scalar {
            let mine = self.scalar.entry(name.clone()).or_default();
            *mine = (*mine).max(*amount);
        }
    }
}

/// A host port a pod asks for: protocol, host IP (`0.0.0.0` for any), port.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct HostPort {
    pub protocol: String,
    pub ip: String,
    pub port: i32,
}

impl HostPort {
    /// Whether two pods asking for these could not share a node.
    pub fn conflicts(&self, other: &HostPort) -> bool {
        self.protocol == other.protocol
            && self.port == other.port
            && (self.ip == other.ip || self.ip == "0.0.0.0" || other.ip == "0.0.0.0")
    }
}

/// A pod affinity or anti-affinity term, compiled: which pods it
/// selects, and over which topology.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AffinityTerm {
    /// The namespaces named (the pod's own if the term names none and
    /// has no namespaceSelector).
    namespaces: Vec<String>,
    namespace_selector: Selector,
    selector: Selector,
    pub topology_key: String,
    /// The term's weight; required terms weigh 1 (upstream's
    /// hardPodAffinityWeight when another pod's required term counts in
    /// scoring).
    pub weight: i64,
    /// A hash of what decides which pods the term selects (its
    /// namespaces and selectors): equal terms of many pods are tested
    /// once a cycle ([`Memo`]).
    pub fingerprint: u64,
}

impl AffinityTerm {
    fn new(term: &PodAffinityTerm, namespace: &str, weight: i64) -> Self {
        let mut namespaces = term.namespaces.clone().unwrap_or_default();
        if namespaces.is_empty() && term.namespace_selector.is_none() {
            namespaces.push(namespace.to_string());
        }
        let mut hasher = std::hash::DefaultHasher::new();
        namespaces.hash(&mut hasher);
        serde_json::to_string(&term.namespace_selector)
            .unwrap_or_default()
            .hash(&mut hasher);
        serde_json::to_string(&term.label_selector)
            .unwrap_or_default()
            .hash(&mut hasher);
        AffinityTerm {
            namespaces,
            namespace_selector: Selector::new(term.namespace_selector.as_ref()),
            selector: Selector::new(term.label_selector.as_ref()),
            topology_key: term.topology_key.clone(),
            weight,
            fingerprint: hasher.finish(),
        }
    }

    /// Whether a pod in `namespace` with `labels` is one this term selects.
    pub fn selects(
        &self,
        namespace: &str,
        labels: &BTreeMap<String, String>,
        namespaces: &Namespaces,
    ) -> bool {
        if !self.selector.matches(labels) {
            return false;
        }
        if self.namespaces.iter().any(|n| n == namespace) {
            return true;
        }
        if self.namespace_selector.selects_nothing() {
            return false;
        }
        let empty = BTreeMap::new();
        let namespace_labels = namespaces.get(namespace).unwrap_or(&empty);
        self.namespace_selector.matches(namespace_labels)
    }

    pub fn selects_pod(&self, pod: &Resident, namespaces: &Namespaces) -> bool {
        self.selects(&pod.namespace, &pod.labels, namespaces)
    }
}

/// A pod's inter-pod affinity and anti-affinity terms.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodAffinity {
    pub required: Vec<AffinityTerm>,
    pub required_anti: Vec<AffinityTerm>,
    pub preferred: Vec<AffinityTerm>,
    pub preferred_anti: Vec<AffinityTerm>,
}

impl PodAffinity {
    fn of(spec: &PodSpec, namespace: &str) -> Self {
        let Some(affinity) = spec.affinity.as_ref() else {
            return PodAffinity::default();
        };
        let required = |terms: Option<&Vec<PodAffinityTerm>>| -> Vec<AffinityTerm> {
            terms
                .into_iter()
                .flatten()
                .map(|t| AffinityTerm::new(t, namespace, 1))
                .collect()
        };
        let preferred = |terms: Option<&Vec<WeightedPodAffinityTerm>>| -> Vec<AffinityTerm> {
            terms
                .into_iter()
                .flatten()
                .filter(|t| t.weight != 0)
                .map(|t| AffinityTerm::new(&t.pod_affinity_term, namespace, t.weight.into()))
                .collect()
        };
        let affinity_terms = affinity.pod_affinity.as_ref();
        let anti_terms = affinity.pod_anti_affinity.as_ref();
        PodAffinity {
            required: required(affinity_terms.and_then(|a| {
                a.required_during_scheduling_ignored_during_execution
                    .as_ref()
            })),
            required_anti: required(anti_terms.and_then(|a| {
                a.required_during_scheduling_ignored_during_execution
                    .as_ref()
            })),
            preferred: preferred(affinity_terms.and_then(|a| {
                a.preferred_during_scheduling_ignored_during_execution
                    .as_ref()
            })),
            preferred_anti: preferred(anti_terms.and_then(|a| {
                a.preferred_during_scheduling_ignored_during_execution
                    .as_ref()
            })),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.required.is_empty()
            && self.required_anti.is_empty()
            && self.preferred.is_empty()
            && self.preferred_anti.is_empty()
    }
}

/// What other pods' affinity and spreading see of a pod placed on a
/// node.
#[derive(Debug, PartialEq, Eq)]
pub struct Resident {
    /// `namespace/name`.
    pub key: String,
    pub uid: String,
    pub namespace: String,
    pub priority: i32,
    pub labels: BTreeMap<String, String>,
    /// The UID of its first owner, if any.
    pub owner: Option<String>,
    /// Being deleted: spreading no longer counts it.
    pub terminating: bool,
    pub affinity: PodAffinity,
    /// A hash of its namespace and labels, all that selectors test:
    /// pods of one workload share it ([`Memo`]).
    pub identity: u64,
}

/// A key that is already a hash, used as is.
#[derive(Debug, Default)]
pub struct Prehashed(u64);

impl Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// Answers of selector tests already given in a cycle, keyed by the
/// fingerprints of what was tested: the incoming pod is tested against
/// each distinct term once, each distinct pod identity against a term
/// once, however many pods share them.
#[derive(Debug, Default)]
pub struct Memo(HashMap<u64, bool, BuildHasherDefault<Prehashed>>);

impl Memo {
    pub fn get_or(&mut self, key: u64, test: impl FnOnce() -> bool) -> bool {
        *self.0.entry(key).or_insert_with(test)
    }

    /// The key of testing pods of `identity` against the term of
    /// `fingerprint`.
    pub fn pair(fingerprint: u64, identity: u64) -> u64 {
        fingerprint
            .rotate_left(17)
            .wrapping_mul(0x9e37_79b9_7f4a_7c15)
            ^ identity
    }
}

impl Resident {
    /// Whether this still describes `pod` (labels and deletion are all
    /// that change on a placed pod).
    pub fn describes(&self, pod: &Pod) -> bool {
        self.terminating == pod.metadata.deletion_timestamp.is_some()
            && match &pod.metadata.labels {
                Some(labels) => *labels == self.labels,
                None => self.labels.is_empty(),
            }
    }
}

/// A pod as the scheduler sees it.
#[derive(Debug)]
pub struct PodInfo {
    pub pod: Arc<Pod>,
    pub namespace: String,
    pub name: String,
    /// Its labels, owner and affinity, as placed pods carry them.
    pub resident: Arc<Resident>,
    pub spread: Vec<TopologySpreadConstraint>,
    /// preemptionPolicy Never: it waits rather than evict others.
    pub never_preempts: bool,
    /// Where an earlier preemption made room for it.
    pub nominated_node: Option<String>,
    pub priority: i32,
    pub requests: Resources,
    /// Requests with the non-zero defaults, for scoring.
    pub non_zero: (i64, i64),
    pub node_name: Option<String>,
    pub node_selector: BTreeMap<String, String>,
    pub required_affinity: Option<NodeSelector>,
    pub preferred_affinity: Vec<PreferredSchedulingTerm>,
    pub tolerations: Vec<Toleration>,
    pub host_ports: Vec<HostPort>,
}

fn container_requests(container: &Container) -> Resources {
    let resources = container.resources.as_ref();
    // Limits stand for requests left out (the API defaults them so too).
    let mut requests = Resources::from_map(resources.and_then(|r| r.limits.as_ref()));
    let explicit = Resources::from_map(resources.and_then(|r| r.requests.as_ref()));
    let stated = resources.and_then(|r| r.requests.as_ref());
    let has = |name: &str| stated.is_some_and(|m| m.contains_key(name));
    if has("cpu") {
        requests.milli_cpu = explicit.milli_cpu;
    }
    if has("memory") {
        requests.memory = explicit.memory;
    }
    if has("ephemeral-storage") {
        requests.ephemeral_storage = explicit.ephemeral_storage;
    }
    requests.scalar.extend(explicit.scalar);
    requests
}

/// What a pod asks of a node, as upstream sums it: its containers
/// together, or its largest init container (with the sidecars started
/// before it) if that is more, plus the pod's overhead. With
/// `non_zero`, containers that ask for no CPU or memory count the
/// defaults.
fn pod_requests(pod: &Pod, non_zero: bool) -> Resources {
    let Some(spec) = pod.spec.as_ref() else {
        return Resources::default();
    };
    let with_defaults = |container: &Container| {
        let mut requests = container_requests(container);
        if non_zero {
            if requests.milli_cpu == 0 {
                requests.milli_cpu = DEFAULT_MILLI_CPU;
            }
            if requests.memory == 0 {
                requests.memory = DEFAULT_MEMORY;
            }
        }
        requests
    };
    let mut total = Resources::default();
    for container in &spec.containers {
        total.add(&with_defaults(container));
    }
    let mut sidecars = Resources::default();
    let mut init_peak = Resources::default();
    for container in spec.init_containers.iter().flatten() {
        let requests = with_defaults(container);
        let running_with = if container.restart_policy.as_deref() == Some("Always") {
            sidecars.add(&requests);
            total.add(&requests);
            sidecars.clone()
        } else {
            let mut together = requests;
            together.add(&sidecars);
            together
        };
        init_peak.max(&running_with);
    }
    total.max(&init_peak);
    total.add(&Resources::from_map(spec.overhead.as_ref()));
    total
}

impl PodInfo {
    pub fn new(pod: Arc<Pod>) -> Self {
        let default = PodSpec::default();
        let spec = pod.spec.as_ref().unwrap_or(&default);
        let requests = pod_requests(&pod, false);
        let defaults = pod_requests(&pod, true);
        let node_affinity = spec.affinity.as_ref().and_then(|a| a.node_affinity.clone());
        let mut host_ports = Vec::new();
        for container in spec
            .containers
            .iter()
            .chain(spec.init_containers.iter().flatten())
        {
            for port in container.ports.iter().flatten() {
                if let Some(host_port) = port.host_port.filter(|p| *p > 0) {
                    host_ports.push(HostPort {
                        protocol: port.protocol.clone().unwrap_or_else(|| "TCP".into()),
                        ip: port
                            .host_ip
                            .clone()
                            .filter(|ip| !ip.is_empty())
                            .unwrap_or_else(|| "0.0.0.0".into()),
                        port: host_port,
                    });
                }
            }
        }
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        let resident = Resident {
            key: format!("{namespace}/{name}"),
            uid: pod.metadata.uid.clone().unwrap_or_default(),
            namespace: namespace.clone(),
            priority: spec.priority.unwrap_or(0),
            labels: pod.metadata.labels.clone().unwrap_or_default(),
            owner: pod
                .metadata
                .owner_references
                .as_ref()
                .and_then(|o| o.first())
                .map(|o| o.uid.clone()),
            terminating: pod.metadata.deletion_timestamp.is_some(),
            affinity: PodAffinity::of(spec, &namespace),
            identity: 0,
        };
        let mut hasher = std::hash::DefaultHasher::new();
        resident.namespace.hash(&mut hasher);
        resident.labels.hash(&mut hasher);
        let resident = Resident {
            identity: hasher.finish(),
            ..resident
        };
        PodInfo {
            namespace,
            name,
            resident: Arc::new(resident),
            spread: spec.topology_spread_constraints.clone().unwrap_or_default(),
            never_preempts: spec.preemption_policy.as_deref() == Some("Never"),
            nominated_node: pod
                .status
                .as_ref()
                .and_then(|s| s.nominated_node_name.clone())
                .filter(|n| !n.is_empty()),
            priority: spec.priority.unwrap_or(0),
            requests,
            non_zero: (defaults.milli_cpu, defaults.memory),
            node_name: spec.node_name.clone().filter(|n| !n.is_empty()),
            node_selector: spec.node_selector.clone().unwrap_or_default(),
            required_affinity: node_affinity.as_ref().and_then(|a| {
                a.required_during_scheduling_ignored_during_execution
                    .clone()
            }),
            preferred_affinity: node_affinity
                .and_then(|a| a.preferred_during_scheduling_ignored_during_execution)
                .unwrap_or_default(),
            tolerations: spec.tolerations.clone().unwrap_or_default(),
            host_ports,
            pod,
        }
    }

    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    pub fn labels(&self) -> &BTreeMap<String, String> {
        &self.resident.labels
    }

    pub fn affinity(&self) -> &PodAffinity {
        &self.resident.affinity
    }

    /// Whether `term` selects this pod.
    pub fn selected_by(&self, term: &AffinityTerm, namespaces: &Namespaces) -> bool {
        term.selects_pod(&self.resident, namespaces)
    }
}

/// A node as the scheduler sees it: what it offers, and what the pods
/// placed on it (bound or assumed) take.
#[derive(Clone, Debug)]
pub struct NodeInfo {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub taints: Vec<Taint>,
    pub unschedulable: bool,
    pub allocatable: Resources,
    pub allowed_pods: i64,
    pub requested: Resources,
    pub non_zero_requested: (i64, i64),
    pub pod_count: i64,
    pub used_ports: Vec<HostPort>,
    /// The pods placed here.
    pub placed: Vec<PodUsage>,
    /// How many of them have affinity or anti-affinity terms.
    pub with_affinity: usize,
    /// The images the node has (each name, tags normalized), and sizes.
    pub images: HashMap<String, i64>,
    /// Changes whenever a pod is placed here or leaves: what was counted
    /// of this node's pods at one generation holds for it.
    pub generation: u64,
}

/// A generation no node had before.
fn next_generation() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

impl NodeInfo {
    pub fn new(node: &Node) -> Self {
        let mut info = NodeInfo::named("");
        info.set_node(node);
        info
    }

    /// A node known only by name, offering nothing until its object is
    /// seen.
    pub fn named(name: &str) -> Self {
        NodeInfo {
            name: name.to_string(),
            labels: BTreeMap::new(),
            taints: Vec::new(),
            unschedulable: false,
            allocatable: Resources::default(),
            allowed_pods: 0,
            requested: Resources::default(),
            non_zero_requested: (0, 0),
            pod_count: 0,
            used_ports: Vec::new(),
            placed: Vec::new(),
            with_affinity: 0,
            images: HashMap::new(),
            generation: next_generation(),
        }
    }

    /// Takes what the node object says, keeping what its pods take.
    /// Answers whether anything that scheduling reads changed.
    pub fn set_node(&mut self, node: &Node) -> bool {
        let spec = node.spec.clone().unwrap_or_default();
        let allocatable = node.status.as_ref().and_then(|s| s.allocatable.as_ref());
        let before = (
            self.labels.clone(),
            self.taints.clone(),
            self.unschedulable,
            self.allocatable.clone(),
            self.allowed_pods,
        );
        self.name = node.metadata.name.clone().unwrap_or_default();
        self.labels = node.metadata.labels.clone().unwrap_or_default();
        self.taints = spec.taints.unwrap_or_default();
        self.unschedulable = spec.unschedulable.unwrap_or(false);
        self.allocatable = Resources::from_map(allocatable);
        self.images = node
            .status
            .as_ref()
            .and_then(|s| s.images.as_ref())
            .into_iter()
            .flatten()
            .flat_map(|image| {
                let size = image.size_bytes.unwrap_or(0);
                image
                    .names
                    .iter()
                    .flatten()
                    .map(move |name| (normalized_image(name), size))
            })
            .collect();
        self.allowed_pods = allocatable
            .and_then(|a| a.get("pods"))
            .and_then(|q| quantity::value(&q.0))
            .map_or(0, |v| v.clamp(0, i64::MAX.into()) as i64);
        before
            != (
                self.labels.clone(),
                self.taints.clone(),
                self.unschedulable,
                self.allocatable.clone(),
                self.allowed_pods,
            )
    }

    pub fn add_pod(&mut self, pod: &PodUsage) {
        self.generation = next_generation();
        self.requested.add(&pod.requests);
        self.non_zero_requested.0 += pod.non_zero.0;
        self.non_zero_requested.1 += pod.non_zero.1;
        self.pod_count += 1;
        self.used_ports.extend(pod.host_ports.iter().cloned());
        if !pod.resident.affinity.is_empty() {
            self.with_affinity += 1;
        }
        self.placed.push(pod.clone());
    }

    /// The pods placed here, as affinity and spreading see them.
    pub fn residents(&self) -> impl Iterator<Item = &Resident> {
        self.placed.iter().map(|p| &*p.resident)
    }

    pub fn remove_pod(&mut self, pod: &PodUsage) {
        self.generation = next_generation();
        self.requested.sub(&pod.requests);
        self.non_zero_requested.0 -= pod.non_zero.0;
        self.non_zero_requested.1 -= pod.non_zero.1;
        self.pod_count -= 1;
        for port in &pod.host_ports {
            if let Some(i) = self.used_ports.iter().position(|p| p == port) {
                self.used_ports.swap_remove(i);
            }
        }
        if let Some(i) = self
            .placed
            .iter()
            .position(|p| p.resident.key == pod.resident.key)
        {
            let removed = self.placed.swap_remove(i);
            if !removed.resident.affinity.is_empty() {
                self.with_affinity -= 1;
            }
        }
    }
}

/// An image name with the `latest` tag made explicit, as upstream's
/// ImageLocality compares them.
pub fn normalized_image(name: &str) -> String {
    let tag = name.rfind(':');
    if tag.is_none_or(|at| name.rfind('/').is_some_and(|slash| at < slash)) {
        return format!("{name}:latest");
    }
    name.to_string()
}

/// What a pod placed on a node takes from it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodUsage {
    pub node: String,
    pub requests: Resources,
    pub non_zero: (i64, i64),
    pub host_ports: Vec<HostPort>,
    pub resident: Arc<Resident>,
}

impl PodUsage {
    pub fn of(info: &PodInfo, node: &str) -> Self {
        PodUsage {
            node: node.to_string(),
            requests: info.requests.clone(),
            non_zero: info.non_zero,
            host_ports: info.host_ports.clone(),
            resident: info.resident.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    pub(crate) fn pod(spec: serde_json::Value) -> PodInfo {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "default"},
            "spec": spec,
        }))
        .unwrap();
        PodInfo::new(Arc::new(pod))
    }

    #[test]
    fn requests_sum_containers_or_the_largest_init_container_plus_overhead() {
        let info = pod(json!({
            "containers": [
                {"name": "a", "resources": {"requests": {"cpu": "100m", "memory": "1Gi"}}},
                {"name": "b", "resources": {"limits": {"cpu": "200m", "example.com/gpu": "1"}}},
            ],
            "initContainers": [
                {"name": "i1", "resources": {"requests": {"cpu": "1", "memory": "10Mi"}}},
                {"name": "side", "restartPolicy": "Always", "resources": {"requests": {"cpu": "50m"}}},
                {"name": "i2", "resources": {"requests": {"cpu": "500m"}}},
            ],
            "overhead": {"cpu": "10m"},
        }));
        // Containers 300m + sidecar 50m = 350m; init peak: i1 alone 1000m.
        assert_eq!(info.requests.milli_cpu, 1010);
        assert_eq!(info.requests.memory, 1 << 30);
        assert_eq!(info.requests.scalar["example.com/gpu"], 1);
        // Scoring counts 100m and 200Mi for what asks nothing: i2 with the
        // sidecar is 550m, below i1's 1000m.
        assert_eq!(info.non_zero.0, 1010);
        let empty = pod(json!({"containers": [{"name": "a"}]}));
        assert_eq!(empty.requests, Resources::default());
        assert_eq!(empty.non_zero, (DEFAULT_MILLI_CPU, DEFAULT_MEMORY));
    }

    #[test]
    fn host_ports_conflict_on_the_same_protocol_port_and_overlapping_ip() {
        let info = pod(json!({"containers": [{"name": "a", "ports": [
            {"containerPort": 80, "hostPort": 8080},
            {"containerPort": 53, "hostPort": 53, "protocol": "UDP", "hostIP": "127.0.0.1"},
            {"containerPort": 90},
        ]}]}));
        assert_eq!(info.host_ports.len(), 2);
        let any = &info.host_ports[0];
        let udp = &info.host_ports[1];
        let other_ip = HostPort {
            ip: "127.0.0.2".into(),
            ..udp.clone()
        };
        assert!(!udp.conflicts(&other_ip));
        assert!(any.conflicts(&HostPort {
            ip: "10.0.0.1".into(),
            ..any.clone()
        }));
        assert!(!any.conflicts(udp));
    }

    #[test]
    fn equal_terms_and_equal_pods_share_their_fingerprints() {
        let anti = |app: &str, key: &str| {
            json!({"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                {"labelSelector": {"matchLabels": {"app": app}}, "topologyKey": key}]}})
        };
        let term = |info: &PodInfo| info.resident.affinity.required_anti[0].clone();
        let a = pod(json!({"containers": [], "affinity": anti("web", "zone")}));
        let b = pod(json!({"containers": [], "affinity": anti("web", "host")}));
        let c = pod(json!({"containers": [], "affinity": anti("db", "zone")}));
        assert_eq!(
            term(&a).fingerprint,
            term(&b).fingerprint,
            "the topology key does not change what a term selects"
        );
        assert_ne!(term(&a).fingerprint, term(&c).fingerprint);
        let labelled = |namespace: &str, app: &str| {
            let pod: Pod = serde_json::from_value(json!({
                "metadata": {"name": "x", "namespace": namespace, "labels": {"app": app}},
                "spec": {"containers": []},
            }))
            .unwrap();
            PodInfo::new(Arc::new(pod)).resident.identity
        };
        assert_eq!(labelled("default", "web"), labelled("default", "web"));
        assert_ne!(labelled("default", "web"), labelled("other", "web"));
        assert_ne!(labelled("default", "web"), labelled("default", "db"));
        let mut memo = Memo::default();
        assert!(memo.get_or(7, || true));
        assert!(memo.get_or(7, || false), "answered once, then remembered");
    }
}
