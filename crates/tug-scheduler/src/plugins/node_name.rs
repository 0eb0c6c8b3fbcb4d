//! NodeName: a pod that names its node fits only there.

use super::{Cycle, Filter, Fit};
use crate::info::{NodeInfo, PodInfo};

pub struct NodeName;

impl Filter for NodeName {
    fn name(&self) -> &'static str {
        "NodeName"
    }

    fn filter(&self, _cycle: &Cycle, pod: &PodInfo, node: &NodeInfo) -> Fit {
        match &pod.node_name {
            Some(name) if *name != node.name => {
                Fit::unresolvable("node(s) didn't match the requested node name")
            }
            _ => Fit::Fits,
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::plugins::testing::{node, pod};

    #[test]
    fn only_the_named_node_fits() {
        let named = pod(json!({"nodeName": "a"}));
        assert_eq!(
            NodeName.filter(&Cycle::default(), &named, &node("a", json!({}), json!({}))),
            Fit::Fits
        );
        assert_eq!(
            NodeName.filter(&Cycle::default(), &named, &node("b", json!({}), json!({}))),
            Fit::unresolvable("node(s) didn't match the requested node name")
        );
        let free = pod(json!({}));
        assert_eq!(
            NodeName.filter(&Cycle::default(), &free, &node("b", json!({}), json!({}))),
            Fit::Fits
        );
    }
}
