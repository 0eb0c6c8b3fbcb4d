//! One scheduling cycle over the nodes: filter (stopping once enough
//! feasible nodes are found, as percentageOfNodesToScore asks), score,
//! pick the best; or say why nothing fits, in upstream's words.

use std::collections::BTreeMap;

use rand::Rng;

use crate::info::{NodeInfo, PodInfo};
use crate::plugins::{Cycle, Fit, Profile, Snapshot};

/// Below this many nodes, all are filtered.
const MIN_FEASIBLE_NODES: usize = 100;
const MIN_PERCENTAGE: usize = 5;

/// How many feasible nodes are enough to stop filtering: all below 100
/// nodes; else `percentage` (by default 50% less 1% per 125 nodes, at
/// least 5%) of them, at least 100.
pub fn feasible_nodes_to_find(nodes: usize, percentage: Option<u32>) -> usize {
    if nodes < MIN_FEASIBLE_NODES {
        return nodes;
    }
    let percentage = match percentage {
        Some(p) if p > 0 => (p as usize).min(100),
        _ => (50usize.saturating_sub(nodes / 125)).max(MIN_PERCENTAGE),
    };
    (nodes * percentage / 100).max(MIN_FEASIBLE_NODES)
}

/// Why a pod fits no node.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct FitError {
    pub nodes: usize,
    /// Each reason with how many nodes gave it.
    pub reasons: BTreeMap<String, usize>,
    /// Nodes that failed only for reasons that preemption could change.
    pub resolvable: usize,
    /// What preemption found (the text after "preemption: "), empty if
    /// it made room; `None` if it was not tried.
    pub preemption: Option<String>,
}

impl std::fmt::Display for FitError {
    /// `0/3 nodes are available: 1 node(s) had untolerated taint {a: b},
    /// 2 Insufficient cpu. preemption: 0/3 nodes are available: 2 No
    /// preemption victims found for incoming pod, 1 Preemption is not
    /// helpful for scheduling.`
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.nodes == 0 {
            return write!(f, "no nodes available to schedule pods");
        }
        let mut reasons: Vec<String> = self
            .reasons
            .iter()
            .map(|(reason, count)| format!("{count} {reason}"))
            .collect();
        reasons.sort();
        write!(
            f,
            "0/{} nodes are available: {}.",
            self.nodes,
            reasons.join(", ")
        )?;
        match self.preemption.as_deref() {
            Some("") => return Ok(()),
            Some(found) => return write!(f, " preemption: {found}"),
            None => {}
        }
        let mut preemption = Vec::new();
        if self.resolvable > 0 {
            preemption.push(format!(
                "{} No preemption victims found for incoming pod",
                self.resolvable
            ));
        }
        if self.nodes > self.resolvable {
            preemption.push(format!(
                "{} Preemption is not helpful for scheduling",
                self.nodes - self.resolvable
            ));
        }
        preemption.sort();
        write!(
            f,
            " preemption: 0/{} nodes are available: {}.",
            self.nodes,
            preemption.join(", ")
        )
    }
}

/// Where the last cycle stopped filtering: the next starts there, so
/// that all nodes get their turn.
#[derive(Debug, Default)]
pub struct Cursor(pub usize);

/// Picks a node for `pod` among `nodes`, answering its index.
pub fn schedule(
    profile: &Profile,
    pod: &PodInfo,
    cluster: Snapshot<'_>,
    percentage: Option<u32>,
    cursor: &mut Cursor,
) -> Result<usize, FitError> {
    let nodes = cluster.nodes;
    let mut error = FitError {
        nodes: nodes.len(),
        ..FitError::default()
    };
    if nodes.is_empty() {
        return Err(error);
    }
    let mut cycle = Cycle::default();
    for filter in &profile.filters {
        filter.pre_filter(pod, cluster, &mut cycle);
    }
    let wanted = feasible_nodes_to_find(nodes.len(), percentage);
    let mut feasible = Vec::with_capacity(wanted);
    let start = cursor.0 % nodes.len();
    let mut visited = 0;
    for offset in 0..nodes.len() {
        let index = (start + offset) % nodes.len();
        visited += 1;
        let reserved = cluster.reserved(pod, &nodes[index]);
        let node = reserved.as_ref().unwrap_or(&nodes[index]);
        let verdict = profile
            .filters
            .iter()
            .map(|filter| filter.filter(&cycle, pod, node))
            .find(|fit| *fit != Fit::Fits);
        match verdict {
            None => {
                feasible.push(index);
                if feasible.len() >= wanted {
                    break;
                }
            }
            Some(Fit::Unschedulable(reasons)) => {
                error.resolvable += 1;
                for reason in reasons {
                    *error.reasons.entry(reason).or_default() += 1;
                }
            }
            Some(Fit::Unresolvable(reasons)) => {
                for reason in reasons {
                    *error.reasons.entry(reason).or_default() += 1;
                }
            }
            Some(Fit::Fits) => unreachable!("found only what does not fit"),
        }
    }
    cursor.0 = (start + visited) % nodes.len();
    match feasible.as_slice() {
        [] => Err(error),
        [only] => Ok(*only),
        _ => Ok(best(profile, cycle, pod, cluster, &feasible)),
    }
}

/// The feasible node with the highest weighted score; ties are broken at
/// random, so that equal nodes share the load.
fn best(
    profile: &Profile,
    mut cycle: Cycle,
    pod: &PodInfo,
    cluster: Snapshot<'_>,
    feasible: &[usize],
) -> usize {
    let nodes = cluster.nodes;
    let candidates: Vec<&NodeInfo> = feasible.iter().map(|&i| &nodes[i]).collect();
    for (plugin, _) in &profile.scores {
        plugin.pre_score(pod, cluster, &candidates, &mut cycle);
    }
    let mut totals = vec![0i64; feasible.len()];
    let mut scores = vec![0i64; feasible.len()];
    for (plugin, weight) in &profile.scores {
        for (score, node) in scores.iter_mut().zip(&candidates) {
            *score = plugin.score(&cycle, pod, node);
        }
        plugin.normalize(&cycle, &mut scores);
        for (total, score) in totals.iter_mut().zip(&scores) {
            *total += score * weight;
        }
    }
    let mut rng = rand::rng();
    let mut chosen = feasible[0];
    let mut top = i64::MIN;
    let mut ties = 0u32;
    for (&index, &total) in feasible.iter().zip(&totals) {
        if total > top {
            top = total;
            chosen = index;
            ties = 1;
        } else if total == top {
            ties += 1;
            if rng.random_range(0..ties) == 0 {
                chosen = index;
            }
        }
    }
    chosen
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::info::{Namespaces, PodUsage};
    use crate::plugins::testing::{labelled, node, place, pod};

    static NO_NAMESPACES: std::sync::LazyLock<Namespaces> =
        std::sync::LazyLock::new(Namespaces::new);

    fn on(nodes: &[NodeInfo]) -> Snapshot<'_> {
        Snapshot::new(nodes, &NO_NAMESPACES)
    }

    #[test]
    fn the_share_of_nodes_filtered_shrinks_with_the_cluster() {
        assert_eq!(feasible_nodes_to_find(50, None), 50);
        assert_eq!(feasible_nodes_to_find(100, None), 100);
        // 1,000 nodes: 42% -> 420.
        assert_eq!(feasible_nodes_to_find(1000, None), 420);
        // 5,000 nodes: 10% -> 500.
        assert_eq!(feasible_nodes_to_find(5000, None), 500);
        // 10,000 nodes: at least 5%.
        assert_eq!(feasible_nodes_to_find(10_000, None), 500);
        assert_eq!(feasible_nodes_to_find(300, Some(10)), 100);
        assert_eq!(feasible_nodes_to_find(5000, Some(100)), 5000);
    }

    #[test]
    fn the_emptiest_fitting_node_wins() {
        let profile = Profile::default();
        let small =
            pod(json!({"containers": [{"name": "c", "resources": {"requests": {"cpu": "1"}}}]}));
        let mut nodes = vec![
            node("a", json!({}), json!({})),
            node("b", json!({}), json!({})),
            node(
                "c",
                json!({}),
                json!({"taints": [{"key": "x", "effect": "NoSchedule"}]}),
            ),
        ];
        nodes[0].add_pod(&PodUsage::of(&small, "a"));
        let mut cursor = Cursor::default();
        for _ in 0..5 {
            assert_eq!(
                schedule(&profile, &small, on(&nodes), None, &mut cursor),
                Ok(1)
            );
        }
    }

    #[test]
    fn a_pod_that_fits_nowhere_says_why_as_upstream() {
        let profile = Profile::default();
        let big =
            pod(json!({"containers": [{"name": "c", "resources": {"requests": {"cpu": "8"}}}]}));
        let nodes = vec![
            node("a", json!({}), json!({})),
            node("b", json!({}), json!({})),
            node(
                "c",
                json!({}),
                json!({"taints": [{"key": "node-role", "value": "x", "effect": "NoSchedule"}]}),
            ),
        ];
        let error = schedule(&profile, &big, on(&nodes), None, &mut Cursor::default()).unwrap_err();
        assert_eq!(
            error.to_string(),
            "0/3 nodes are available: 1 node(s) had untolerated taint {node-role: x}, 2 Insufficient cpu. \
             preemption: 0/3 nodes are available: 1 Preemption is not helpful for scheduling, \
             2 No preemption victims found for incoming pod."
        );
        let none = schedule(&profile, &big, on(&[]), None, &mut Cursor::default()).unwrap_err();
        assert_eq!(none.to_string(), "no nodes available to schedule pods");
    }

    #[test]
    fn required_anti_affinity_places_one_pod_per_node_then_says_why_not() {
        let profile = Profile::default();
        let mut nodes: Vec<NodeInfo> = (0..3)
            .map(|i| {
                let name = format!("n{i}");
                node(&name, json!({"kubernetes.io/hostname": name}), json!({}))
            })
            .collect();
        let replica = |i: usize| {
            labelled(
                &format!("web-{i}"),
                json!({"app": "web"}),
                Some("rs"),
                json!({"affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                    {"labelSelector": {"matchLabels": {"app": "web"}},
                     "topologyKey": "kubernetes.io/hostname"}]}}}),
            )
        };
        let mut cursor = Cursor::default();
        let mut used = Vec::new();
        for i in 0..3 {
            let pod = replica(i);
            let index = schedule(&profile, &pod, on(&nodes), None, &mut cursor).unwrap();
            place(&mut nodes[index], &pod);
            used.push(index);
        }
        used.sort();
        assert_eq!(used, vec![0, 1, 2]);
        let error = schedule(&profile, &replica(3), on(&nodes), None, &mut cursor).unwrap_err();
        assert_eq!(
            error.to_string(),
            "0/3 nodes are available: 3 node(s) didn't match pod anti-affinity rules. \
             preemption: 0/3 nodes are available: 3 No preemption victims found for incoming pod."
        );
    }

    #[test]
    fn room_made_by_a_preemption_is_kept_for_the_nominated_pod() {
        let profile = Profile::default();
        let nodes = vec![node("a", json!({}), json!({}))];
        let asking = |name: &str, cpu: &str, priority: i32| {
            labelled(
                name,
                json!({}),
                None,
                json!({"priority": priority, "containers": [
                    {"name": "c", "resources": {"requests": {"cpu": cpu}}}]}),
            )
        };
        let urgent = asking("urgent", "4", 100);
        let nominated =
            std::collections::HashMap::from([("a".to_string(), vec![PodUsage::of(&urgent, "a")])]);
        let mut cluster = on(&nodes);
        cluster.nominated = Some(&nominated);
        let mut cursor = Cursor::default();
        let same = schedule(
            &profile,
            &asking("same", "1", 100),
            cluster,
            None,
            &mut cursor,
        );
        assert_eq!(
            same.unwrap_err().reasons,
            BTreeMap::from([("Insufficient cpu".to_string(), 1)])
        );
        assert_eq!(
            schedule(&profile, &urgent, cluster, None, &mut cursor),
            Ok(0)
        );
        let higher = asking("higher", "1", 200);
        assert_eq!(
            schedule(&profile, &higher, cluster, None, &mut cursor),
            Ok(0)
        );
    }

    #[test]
    fn filtering_stops_once_enough_nodes_fit_and_resumes_where_it_stopped() {
        let profile = Profile::default();
        let nodes: Vec<NodeInfo> = (0..200)
            .map(|i| node(&format!("n{i}"), json!({}), json!({})))
            .collect();
        let mut cursor = Cursor::default();
        let p = pod(json!({}));
        let first = schedule(&profile, &p, on(&nodes), Some(50), &mut cursor).unwrap();
        assert!(first < 100, "{first}");
        assert_eq!(cursor.0, 100);
        let second = schedule(&profile, &p, on(&nodes), Some(50), &mut cursor).unwrap();
        assert!(second >= 100, "{second}");
        assert_eq!(cursor.0, 0);
    }
}
