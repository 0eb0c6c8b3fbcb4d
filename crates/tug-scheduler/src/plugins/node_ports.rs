//! NodePorts: two pods cannot take the same host port on one node.

use super::{Cycle, Filter, Fit};
use crate::info::{NodeInfo, PodInfo};

pub struct NodePorts;

impl Filter for NodePorts {
    fn name(&self) -> &'static str {
        "NodePorts"
    }

    fn filter(&self, _cycle: &Cycle, pod: &PodInfo, node: &NodeInfo) -> Fit {
        let taken = pod
            .host_ports
            .iter()
            .any(|wanted| node.used_ports.iter().any(|used| used.conflicts(wanted)));
        if taken {
            return Fit::unschedulable(
                "node(s) didn't have free ports for the requested pod ports",
            );
        }
        Fit::Fits
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::info::PodUsage;
    use crate::plugins::testing::{node, pod};

    #[test]
    fn a_host_port_in_use_keeps_the_next_pod_away() {
        let web = pod(
            json!({"containers": [{"name": "c", "ports": [{"containerPort": 80, "hostPort": 8080}]}]}),
        );
        let mut n = node("a", json!({}), json!({}));
        assert_eq!(NodePorts.filter(&Cycle::default(), &web, &n), Fit::Fits);
        n.add_pod(&PodUsage::of(&web, "a"));
        assert_eq!(
            NodePorts.filter(&Cycle::default(), &web, &n),
            Fit::unschedulable("node(s) didn't have free ports for the requested pod ports")
        );
        let udp = pod(
            json!({"containers": [{"name": "c", "ports": [{"containerPort": 80, "hostPort": 8080, "protocol": "UDP"}]}]}),
        );
        assert_eq!(NodePorts.filter(&Cycle::default(), &udp, &n), Fit::Fits);
        n.remove_pod(&PodUsage::of(&web, "a"));
        assert_eq!(NodePorts.filter(&Cycle::default(), &web, &n), Fit::Fits);
    }
}
