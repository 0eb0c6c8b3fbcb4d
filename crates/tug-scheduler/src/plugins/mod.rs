//! The scheduling plugins, each a type implementing [`Filter`] and/or
//! [`Score`], registered in one place: [`Profile::default`].

mod image_locality;
mod inter_pod_affinity;
mod node_affinity;
mod node_name;
mod node_ports;
mod node_resources;
mod node_unschedulable;
mod pod_topology_spread;
mod taint_toleration;

pub use image_locality::{ImageCounts, ImageLocality};
pub use inter_pod_affinity::InterPodAffinity;
pub use node_affinity::NodeAffinity;
pub use node_name::NodeName;
pub use node_ports::NodePorts;
pub use node_resources::{BalancedAllocation, NodeResourcesFit};
pub use node_unschedulable::NodeUnschedulable;
pub use pod_topology_spread::PodTopologySpread;
pub use taint_toleration::{TaintToleration, tolerates};

use std::any::Any;
use std::collections::HashMap;
use std::sync::Arc;

use crate::info::{Domains, Namespaces, NodeInfo, PodInfo, PodUsage, Topology};

/// The highest score a plugin gives a node.
pub const MAX_SCORE: i64 = 100;

/// A filter's verdict on one node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fit {
    Fits,
    /// Does not fit now; evicting lower-priority pods could change that.
    Unschedulable(Vec<String>),
    /// Does not fit, and preemption would not help.
    Unresolvable(Vec<String>),
}

impl Fit {
    pub(crate) fn unschedulable(reason: impl Into<String>) -> Self {
        Fit::Unschedulable(vec![reason.into()])
    }

    pub(crate) fn unresolvable(reason: impl Into<String>) -> Self {
        Fit::Unresolvable(vec![reason.into()])
    }
}

/// The cluster as one cycle sees it.
#[derive(Clone, Copy)]
pub struct Snapshot<'a> {
    pub nodes: &'a [NodeInfo],
    pub namespaces: &'a Namespaces,
    /// A node seen in place of `nodes[i]` (preemption trying a node
    /// without some of its pods).
    replaced: Option<(usize, &'a NodeInfo)>,
    /// Per node, the pods nominated to it by a preemption: the room they
    /// made is theirs, for pods of no higher priority.
    pub nominated: Option<&'a HashMap<String, Vec<PodUsage>>>,
    /// Topology domains kept between cycles.
    pub topology: Option<&'a Topology>,
    /// How many nodes have each image (counted from the nodes if absent).
    pub image_nodes: Option<&'a HashMap<String, usize>>,
}

impl<'a> Snapshot<'a> {
    pub fn new(nodes: &'a [NodeInfo], namespaces: &'a Namespaces) -> Self {
        Snapshot {
            nodes,
            namespaces,
            replaced: None,
            nominated: None,
            topology: None,
            image_nodes: None,
        }
    }

    /// The domains of a topology key, numbered (a replaced node has the
    /// same labels as the one it replaces).
    pub fn domains(&self, key: &str) -> Arc<Domains> {
        match self.topology {
            Some(topology) => topology.domains(key, self.nodes),
            None => Arc::new(Domains::build(key, self.nodes)),
        }
    }

    /// `node` as `pod` may see it: with the pods nominated to it that
    /// come before `pod` (as high a priority), if there are any.
    pub fn reserved(&self, pod: &PodInfo, node: &NodeInfo) -> Option<NodeInfo> {
        let before: Vec<&PodUsage> = self
            .nominated?
            .get(&node.name)?
            .iter()
            .filter(|p| p.resident.priority >= pod.priority && p.resident.key != pod.resident.key)
            .collect();
        if before.is_empty() {
            return None;
        }
        let mut reserved = node.clone();
        for nominated in before {
            reserved.add_pod(nominated);
        }
        Some(reserved)
    }

    /// The same cluster with `node` in place of `nodes[index]`.
    pub fn replacing(self, index: usize, node: &'a NodeInfo) -> Self {
        Snapshot {
            replaced: Some((index, node)),
            ..self
        }
    }

    /// Every node, as this snapshot sees it.
    pub fn nodes(&self) -> impl Iterator<Item = &'a NodeInfo> + 'a {
        let replaced = self.replaced;
        self.nodes
            .iter()
            .enumerate()
            .map(move |(i, node)| match replaced {
                Some((index, other)) if index == i => other,
                _ => node,
            })
    }
}

/// What plugins work out once per cycle (before filtering or scoring the
/// nodes one by one), each under its own name.
#[derive(Default)]
pub struct Cycle {
    data: Vec<(&'static str, Box<dyn Any + Send + Sync>)>,
}

impl Cycle {
    pub fn write<T: Any + Send + Sync>(&mut self, key: &'static str, value: T) {
        self.data.retain(|(k, _)| *k != key);
        self.data.push((key, Box::new(value)));
    }

    pub fn read<T: Any>(&self, key: &'static str) -> Option<&T> {
        self.data
            .iter()
            .find(|(k, _)| *k == key)
            .and_then(|(_, value)| value.downcast_ref())
    }
}

/// Decides whether a pod may run on a node.
pub trait Filter: Send + Sync {
    fn name(&self) -> &'static str;
    /// Works out, from the whole cluster, what [`Filter::filter`] needs.
    fn pre_filter(&self, _pod: &PodInfo, _cluster: Snapshot<'_>, _cycle: &mut Cycle) {}
    fn filter(&self, cycle: &Cycle, pod: &PodInfo, node: &NodeInfo) -> Fit;
}

/// Ranks the nodes that passed the filters, 0 to [`MAX_SCORE`] after
/// [`Score::normalize`].
pub trait Score: Send + Sync {
    fn name(&self) -> &'static str;
    /// Works out, from the whole cluster and the nodes that passed the
    /// filters, what [`Score::score`] needs.
    fn pre_score(
        &self,
        _pod: &PodInfo,
        _cluster: Snapshot<'_>,
        _feasible: &[&NodeInfo],
        _cycle: &mut Cycle,
    ) {
    }
    fn score(&self, cycle: &Cycle, pod: &PodInfo, node: &NodeInfo) -> i64;
    /// Brings the raw scores of all feasible nodes to 0..=MAX_SCORE.
    fn normalize(&self, _cycle: &Cycle, _scores: &mut [i64]) {}
}

/// The plugins a scheduler runs, filters in order, scores with weights.
pub struct Profile {
    pub filters: Vec<Box<dyn Filter>>,
    pub scores: Vec<(Box<dyn Score>, i64)>,
}

impl Default for Profile {
    /// Upstream's default profile, in its order and with its weights,
    /// for the plugins tug has.
    fn default() -> Self {
        Profile {
            filters: vec![
                Box::new(NodeUnschedulable),
                Box::new(NodeName),
                Box::new(TaintToleration),
                Box::new(NodeAffinity),
                Box::new(NodePorts),
                Box::new(NodeResourcesFit::default()),
                Box::new(PodTopologySpread),
                Box::new(InterPodAffinity),
            ],
            scores: vec![
                (Box::new(TaintToleration), 3),
                (Box::new(NodeAffinity), 2),
                (Box::new(PodTopologySpread), 2),
                (Box::new(InterPodAffinity), 2),
                (Box::new(NodeResourcesFit::default()), 1),
                (Box::new(BalancedAllocation), 1),
                (Box::new(ImageLocality), 1),
            ],
        }
    }
}

/// Scales scores to 0..=MAX_SCORE by the highest one; `reverse` makes the
/// lowest raw score the best.
pub(crate) fn normalize_by_max(scores: &mut [i64], reverse: bool) {
    let max = scores.iter().copied().max().unwrap_or(0);
    for score in scores.iter_mut() {
        if max == 0 {
            *score = if reverse { MAX_SCORE } else { 0 };
            continue;
        }
        let scaled = *score * MAX_SCORE / max;
        *score = if reverse { MAX_SCORE - scaled } else { scaled };
    }
}

#[cfg(test)]
pub(crate) mod testing {
    use std::sync::Arc;

    use k8s_openapi::api::core::v1::{Node, Pod};
    use serde_json::{Value, json};

    use crate::info::{NodeInfo, PodInfo};

    pub(crate) fn pod(spec: Value) -> PodInfo {
        pod_with(json!({"name": "p", "namespace": "default"}), spec)
    }

    pub(crate) fn pod_with(metadata: Value, spec: Value) -> PodInfo {
        let mut spec = spec;
        if spec.get("containers").is_none() {
            spec["containers"] = json!([{"name": "c"}]);
        }
        let pod: Pod = serde_json::from_value(json!({"metadata": metadata, "spec": spec})).unwrap();
        PodInfo::new(Arc::new(pod))
    }

    /// A pod with labels (and an owner's UID, if `owner`), in `default`.
    pub(crate) fn labelled(name: &str, labels: Value, owner: Option<&str>, spec: Value) -> PodInfo {
        let mut metadata = json!({"name": name, "namespace": "default", "labels": labels});
        if let Some(uid) = owner {
            metadata["ownerReferences"] = json!([{
                "apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs",
                "uid": uid, "controller": true,
            }]);
        }
        pod_with(metadata, spec)
    }

    /// Places `pod` on `node`.
    pub(crate) fn place(node: &mut NodeInfo, pod: &PodInfo) {
        let name = node.name.clone();
        node.add_pod(&crate::info::PodUsage::of(pod, &name));
    }

    pub(crate) fn node(name: &str, labels: Value, spec: Value) -> NodeInfo {
        let node: Node = serde_json::from_value(json!({
            "metadata": {"name": name, "labels": labels},
            "spec": spec,
            "status": {"allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"}},
        }))
        .unwrap();
        NodeInfo::new(&node)
    }
}
