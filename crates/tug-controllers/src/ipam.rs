//! Node IPAM: every node without a pod CIDR gets the next free /24 of
//! the cluster CIDR (upstream's range allocator, IPv4).

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_json::json;

use crate::events::{self, Recorder};
use crate::informer::Informer;
use crate::workqueue::WorkQueue;

pub const COMPONENT: &str = "cidrAllocator";
/// The size of each node's range.
const NODE_MASK: u8 = 24;

/// An IPv4 cluster CIDR cut into per-node /24s.
#[derive(Clone, Debug, PartialEq)]
pub struct Ranges {
    base: u32,
    count: u32,
}

impl Ranges {
    /// `None` unless an IPv4 CIDR of /24 or wider.
    pub fn parse(cidr: &str) -> Option<Ranges> {
        let (ip, bits) = cidr.split_once('/')?;
        let ip: Ipv4Addr = ip.parse().ok()?;
        let bits: u8 = bits.parse().ok()?;
        if bits > NODE_MASK {
            return None;
        }
        let mask = if bits == 0 {
            0
        } else {
            u32::MAX << (32 - bits)
        };
        Some(Ranges {
            base: u32::from(ip) & mask,
            count: 1 << (NODE_MASK - bits),
        })
    }

    /// The index of `cidr` if it is one of these ranges.
    pub fn index_of(&self, cidr: &str) -> Option<u32> {
        let (ip, bits) = cidr.split_once('/')?;
        if bits != NODE_MASK.to_string() {
            return None;
        }
        let ip = u32::from(ip.parse::<Ipv4Addr>().ok()?);
        let offset = ip.checked_sub(self.base)?;
        let index = offset >> (32 - NODE_MASK);
        (index < self.count && offset & 0xff == 0).then_some(index)
    }

    pub fn cidr(&self, index: u32) -> String {
        format!(
            "{}/{NODE_MASK}",
            Ipv4Addr::from(self.base + (index << (32 - NODE_MASK)))
        )
    }

    /// The first range not in `used`.
    pub fn first_free(&self, used: &HashSet<u32>) -> Option<u32> {
        (0..self.count).find(|i| !used.contains(i))
    }
}

struct Allocator {
    client: Client,
    ranges: Ranges,
    nodes: Informer<Node>,
    used: Mutex<HashSet<u32>>,
    queue: WorkQueue,
    recorder: Recorder,
}

fn pod_cidr(node: &Node) -> Option<String> {
    node.spec
        .as_ref()?
        .pod_cidr
        .clone()
        .filter(|c| !c.is_empty())
}

impl Allocator {
    async fn sync(&self, name: &str) -> anyhow::Result<Option<std::time::Duration>> {
        let Some(node) = self.nodes.get(name) else {
            return Ok(None);
        };
        if pod_cidr(&node).is_some() {
            return Ok(None);
        }
        let Some(index) = ({
            let mut used = self.used.lock().expect("ipam");
            let free = self.ranges.first_free(&used);
            if let Some(i) = free {
                used.insert(i);
            }
            free
        }) else {
            self.recorder.event(
                events::reference(node.as_ref()),
                events::NORMAL,
                "CIDRNotAvailable",
                format!("Node {name} status is now: CIDRNotAvailable"),
            );
            anyhow::bail!("no pod CIDR left for node {name}");
        };
        let cidr = self.ranges.cidr(index);
        let api: Api<Node> = Api::all(self.client.clone());
        // Only onto the node as seen: a node seen before its last pod CIDR
        // patch arrived would otherwise get a second, different one.
        let patch = json!({
            "metadata": {"resourceVersion": node.metadata.resource_version},
            "spec": {"podCIDR": cidr, "podCIDRs": [cidr]},
        });
        match api
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => Ok(None),
            Err(kube::Error::Api(response)) if response.code == 409 => {
                // Changed meanwhile: look again once the informer has it.
                self.used.lock().expect("ipam").remove(&index);
                Ok(Some(std::time::Duration::from_millis(200)))
            }
            Err(err) => {
                self.used.lock().expect("ipam").remove(&index);
                Err(err.into())
            }
        }
    }
}

/// Starts the allocator; without a usable cluster CIDR it does nothing.
pub(crate) fn start(ctx: &crate::Context) -> crate::Running {
    let ranges = Ranges::parse(&ctx.config.cluster_cidr);
    if ranges.is_none() {
        tracing::info!(cidr = %ctx.config.cluster_cidr, "node IPAM: not an IPv4 CIDR of /24 or wider; no pod CIDRs allocated");
    }
    let controller = Arc::new(Allocator {
        client: ctx.client.clone(),
        ranges: ranges.clone().unwrap_or(Ranges { base: 0, count: 0 }),
        nodes: ctx.nodes.clone(),
        used: Mutex::new(HashSet::new()),
        queue: WorkQueue::default(),
        recorder: ctx.recorder.for_component(COMPONENT),
    });
    let c = controller.clone();
    ctx.nodes.subscribe(Box::new(move |old, new| {
        let index = |n: &Node| pod_cidr(n).and_then(|cidr| c.ranges.index_of(&cidr));
        let mut used = c.used.lock().expect("ipam");
        if let Some(i) = old.and_then(|n| index(n)) {
            used.remove(&i);
        }
        if let Some(node) = new {
            match index(node) {
                Some(i) => {
                    used.insert(i);
                }
                None if pod_cidr(node).is_none() && ranges.is_some() => {
                    c.queue.add(&node.name_any())
                }
                None => {}
            }
        }
    }));
    // One worker: allocations never race.
    crate::Running::workers(COMPONENT, controller.queue.clone(), 1, move |name| {
        let c = controller.clone();
        async move { c.sync(&name).await }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_cidr_is_cut_into_node_ranges() {
        let ranges = Ranges::parse("10.42.0.0/16").unwrap();
        assert_eq!(ranges.cidr(0), "10.42.0.0/24");
        assert_eq!(ranges.cidr(255), "10.42.255.0/24");
        assert_eq!(ranges.index_of("10.42.7.0/24"), Some(7));
        assert_eq!(ranges.index_of("10.43.0.0/24"), None);
        assert_eq!(ranges.index_of("10.42.7.5/24"), None);
        let used: HashSet<u32> = [0, 1, 3].into();
        assert_eq!(ranges.first_free(&used), Some(2));
        let tiny = Ranges::parse("192.168.5.0/24").unwrap();
        assert_eq!(tiny.first_free(&[0].into()), None);
        assert!(Ranges::parse("10.0.0.0/25").is_none());
        assert!(Ranges::parse("fd00::/64").is_none());
    }
}
