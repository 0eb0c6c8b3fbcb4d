//! ImageLocality: nodes that already have a pod's images rank higher, by
//! the images' sizes scaled by the share of nodes that have them (so
//! that pods do not all crowd onto the few nodes with a rare image), as
//! upstream's.

use std::collections::HashMap;

use super::{Cycle, MAX_SCORE, Score, Snapshot};
use crate::info::{NodeInfo, PodInfo, normalized_image};

pub struct ImageLocality;

const NAME: &str = "ImageLocality";
const MB: i64 = 1024 * 1024;
/// Below this, images count as nothing; a container's image counts at
/// most the larger.
const MIN_THRESHOLD: i64 = 23 * MB;
const MAX_CONTAINER_THRESHOLD: i64 = 1000 * MB;

/// Each of the pod's images (one per container, init containers too)
/// with the share of nodes that have it.
struct State {
    images: Vec<(String, f64)>,
}

impl Score for ImageLocality {
    fn name(&self) -> &'static str {
        NAME
    }

    fn pre_score(
        &self,
        pod: &PodInfo,
        cluster: Snapshot<'_>,
        _feasible: &[&NodeInfo],
        cycle: &mut Cycle,
    ) {
        let Some(spec) = pod.pod.spec.as_ref() else {
            return;
        };
        let total = cluster.nodes.len().max(1) as f64;
        let images = spec
            .init_containers
            .iter()
            .flatten()
            .chain(&spec.containers)
            .filter_map(|c| c.image.as_deref())
            .map(|image| {
                let name = normalized_image(image);
                let having = match cluster.image_nodes {
                    Some(counts) => counts.get(&name).copied().unwrap_or(0),
                    None => cluster
                        .nodes()
                        .filter(|n| n.images.contains_key(&name))
                        .count(),
                };
                (name, having as f64 / total)
            })
            .collect();
        cycle.write(NAME, State { images });
    }

    fn score(&self, cycle: &Cycle, _pod: &PodInfo, node: &NodeInfo) -> i64 {
        let Some(state) = cycle.read::<State>(NAME) else {
            return 0;
        };
        if state.images.is_empty() {
            return 0;
        }
        let sum: i64 = state
            .images
            .iter()
            .filter_map(|(name, spread)| {
                node.images
                    .get(name)
                    .map(|size| (*size as f64 * spread) as i64)
            })
            .sum();
        let max = MAX_CONTAINER_THRESHOLD * state.images.len() as i64;
        let sum = sum.clamp(MIN_THRESHOLD, max);
        MAX_SCORE * (sum - MIN_THRESHOLD) / (max - MIN_THRESHOLD)
    }
}

/// How many nodes have each image, kept as nodes come, change and go.
#[derive(Debug, Default)]
pub struct ImageCounts(pub HashMap<String, usize>);

impl ImageCounts {
    /// A node's images went from `old` to `new`.
    pub fn update(&mut self, old: &HashMap<String, i64>, new: &HashMap<String, i64>) {
        for name in old.keys().filter(|n| !new.contains_key(*n)) {
            if let Some(count) = self.0.get_mut(name) {
                *count -= 1;
                if *count == 0 {
                    self.0.remove(name);
                }
            }
        }
        for name in new.keys().filter(|n| !old.contains_key(*n)) {
            *self.0.entry(name.clone()).or_default() += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::Node;
    use serde_json::json;

    use super::*;
    use crate::info::Namespaces;
    use crate::plugins::testing::pod;

    fn node(name: &str, images: serde_json::Value) -> NodeInfo {
        let node: Node = serde_json::from_value(json!({
            "metadata": {"name": name},
            "status": {"images": images, "allocatable": {"cpu": "4", "pods": "110"}},
        }))
        .unwrap();
        NodeInfo::new(&node)
    }

    #[test]
    fn nodes_with_the_pods_images_rank_higher_the_more_nodes_share_them() {
        let big = 500 * MB;
        let nodes = vec![
            node(
                "a",
                json!([{"names": ["registry.local/app:1", "registry.local/app@sha256:aa"], "sizeBytes": big}]),
            ),
            node(
                "b",
                json!([{"names": ["registry.local/tool"], "sizeBytes": big}]),
            ),
            node("c", json!([])),
            node("d", json!([])),
        ];
        let p = pod(
            json!({"containers": [{"name": "c", "image": "registry.local/app:1"}],
                           "initContainers": [{"name": "i", "image": "registry.local/tool"}]}),
        );
        let namespaces = Namespaces::new();
        let mut counts = ImageCounts::default();
        for n in &nodes {
            counts.update(&HashMap::new(), &n.images);
        }
        let mut cluster = Snapshot::new(&nodes, &namespaces);
        cluster.image_nodes = Some(&counts.0);
        let mut cycle = Cycle::default();
        ImageLocality.pre_score(&p, cluster, &[], &mut cycle);
        let scores: Vec<i64> = nodes
            .iter()
            .map(|n| ImageLocality.score(&cycle, &p, n))
            .collect();
        // Each image on one node of four: 125 MiB counts, of a range of
        // 23 MiB to 2,000 MiB (two containers): 5.
        assert_eq!(scores, vec![5, 5, 0, 0]);
        // Had every node the app image, it would count 500 MiB: 24.
        let everywhere: Vec<NodeInfo> = ["a", "b", "c", "d"]
            .iter()
            .map(|n| {
                node(
                    n,
                    json!([{"names": ["registry.local/app:1"], "sizeBytes": big}]),
                )
            })
            .collect();
        let mut cycle = Cycle::default();
        ImageLocality.pre_score(&p, Snapshot::new(&everywhere, &namespaces), &[], &mut cycle);
        assert_eq!(ImageLocality.score(&cycle, &p, &everywhere[0]), 24);
        // Counts follow nodes that lose an image.
        counts.update(&nodes[0].images, &HashMap::new());
        assert_eq!(counts.0.get("registry.local/app:1"), None);
        assert_eq!(counts.0.get("registry.local/tool:latest"), Some(&1));
    }

    #[test]
    fn names_without_a_tag_mean_latest() {
        assert_eq!(normalized_image("busybox"), "busybox:latest");
        assert_eq!(
            normalized_image("host:5000/busybox"),
            "host:5000/busybox:latest"
        );
        assert_eq!(normalized_image("busybox:1.36"), "busybox:1.36");
        assert_eq!(normalized_image("busybox@sha256:ab"), "busybox@sha256:ab");
    }
}
