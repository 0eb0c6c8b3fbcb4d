//! The scheduling plugins, each a type implementing [`Filter`] and/or
//! [`Score`], registered in one place: [`Profile::default`].

mod node_affinity;
mod node_name;
mod node_ports;
mod node_resources;
mod node_unschedulable;
mod taint_toleration;

pub use node_affinity::NodeAffinity;
pub use node_name::NodeName;
pub use node_ports::NodePorts;
pub use node_resources::{BalancedAllocation, NodeResourcesFit};
pub use node_unschedulable::NodeUnschedulable;
pub use taint_toleration::{TaintToleration, tolerates};

use crate::info::{NodeInfo, PodInfo};

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

/// Decides whether a pod may run on a node.
pub trait Filter: Send + Sync {
    fn name(&self) -> &'static str;
    fn filter(&self, pod: &PodInfo, node: &NodeInfo) -> Fit;
}

/// Ranks the nodes that passed the filters, 0 to [`MAX_SCORE`] after
/// [`Score::normalize`].
pub trait Score: Send + Sync {
    fn name(&self) -> &'static str;
    fn score(&self, pod: &PodInfo, node: &NodeInfo) -> i64;
    /// Brings the raw scores of all feasible nodes to 0..=MAX_SCORE.
    fn normalize(&self, _scores: &mut [i64]) {}
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
            ],
            scores: vec![
                (Box::new(TaintToleration), 3),
                (Box::new(NodeAffinity), 2),
                (Box::new(NodeResourcesFit::default()), 1),
                (Box::new(BalancedAllocation), 1),
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
