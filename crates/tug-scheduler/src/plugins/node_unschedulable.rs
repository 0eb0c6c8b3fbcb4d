//! NodeUnschedulable: a cordoned node takes only pods that tolerate
//! `node.kubernetes.io/unschedulable:NoSchedule`.

use k8s_openapi::api::core::v1::Taint;

use super::taint_toleration::tolerated;
use super::{Cycle, Filter, Fit};
use crate::info::{NodeInfo, PodInfo};

pub struct NodeUnschedulable;

impl Filter for NodeUnschedulable {
    fn name(&self) -> &'static str {
        "NodeUnschedulable"
    }

    fn filter(&self, _cycle: &Cycle, pod: &PodInfo, node: &NodeInfo) -> Fit {
        let cordon = Taint {
            key: "node.kubernetes.io/unschedulable".into(),
            effect: "NoSchedule".into(),
            ..Taint::default()
        };
        if node.unschedulable && !tolerated(&pod.tolerations, &cordon) {
            return Fit::unresolvable("node(s) were unschedulable");
        }
        Fit::Fits
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::plugins::testing::{node, pod};

    #[test]
    fn cordoned_nodes_take_only_tolerant_pods() {
        let cordoned = node("a", json!({}), json!({"unschedulable": true}));
        assert_eq!(
            NodeUnschedulable.filter(&Cycle::default(), &pod(json!({})), &cordoned),
            Fit::unresolvable("node(s) were unschedulable")
        );
        let tolerant = pod(json!({"tolerations": [
            {"key": "node.kubernetes.io/unschedulable", "operator": "Exists", "effect": "NoSchedule"}
        ]}));
        assert_eq!(
            NodeUnschedulable.filter(&Cycle::default(), &tolerant, &cordoned),
            Fit::Fits
        );
        assert_eq!(
            NodeUnschedulable.filter(
                &Cycle::default(),
                &pod(json!({})),
                &node("b", json!({}), json!({}))
            ),
            Fit::Fits
        );
    }
}
