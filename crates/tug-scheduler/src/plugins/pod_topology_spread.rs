//! PodTopologySpread: a pod's topologySpreadConstraints keep the pods
//! they select spread over topology domains (nodes sharing a label's
//! value). `DoNotSchedule` constraints filter: placing the pod must not
//! make its domain exceed the least populated one by more than maxSkew
//! (the least counting 0 while there are fewer domains than minDomains).
//! `ScheduleAnyway` constraints score: fewer selected pods in a domain
//! rank it higher.
//!
//! A pod with no constraints of its own gets upstream's system defaults
//! for scoring (hostname maxSkew 3, zone maxSkew 5) when a ReplicaSet,
//! ReplicationController or StatefulSet owns it; like upstream, those
//! count the pods of the same owner. (Upstream also applies them to pods
//! that only a Service selects; tug does not.)

use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::TopologySpreadConstraint;

use super::node_affinity::admits;
use super::taint_toleration::tolerated;
use super::{Cycle, Filter, Fit, MAX_SCORE, Score, Snapshot};
use crate::info::{Domains, Memo, NodeCounts, NodeInfo, PodInfo, Topology, Totals};
use crate::labels::Selector;

pub struct PodTopologySpread;

const NAME: &str = "PodTopologySpread";
const HOSTNAME: &str = "kubernetes.io/hostname";
const ZONE: &str = "topology.kubernetes.io/zone";
const NOT_MATCH: &str = "node(s) didn't match pod topology spread constraints";
const MISSING_LABEL: &str =
    "node(s) didn't match pod topology spread constraints (missing required label)";

/// Which pods a constraint counts.
#[derive(Debug)]
enum Counted {
    /// Those its selector matches, in the pod's namespace.
    Selected(Selector),
    /// Those of the same owner (the system defaults).
    Owned(String),
}

#[derive(Debug)]
struct Constraint {
    max_skew: i64,
    topology_key: String,
    counted: Counted,
    min_domains: usize,
    /// nodeAffinityPolicy Honor: only nodes the pod's node affinity
    /// admits count.
    honor_affinity: bool,
    /// nodeTaintsPolicy Honor: only nodes whose taints it tolerates.
    honor_taints: bool,
    /// Which pod identities the selector takes, learnt this cycle.
    memo: Mutex<Memo>,
}

impl Constraint {
    fn from_spec(spec: &TopologySpreadConstraint, pod: &PodInfo) -> Self {
        let mut selector = Selector::new(spec.label_selector.as_ref());
        for key in spec.match_label_keys.iter().flatten() {
            if let Some(value) = pod.labels().get(key) {
                selector.require(key, value);
            }
        }
        Constraint {
            max_skew: spec.max_skew.into(),
            topology_key: spec.topology_key.clone(),
            counted: Counted::Selected(selector),
            min_domains: spec.min_domains.map_or(1, |m| m.max(1) as usize),
            honor_affinity: spec.node_affinity_policy.as_deref() != Some("Ignore"),
            honor_taints: spec.node_taints_policy.as_deref() == Some("Honor"),
            memo: Mutex::default(),
        }
    }

    /// Whether the node's domain counts for this pod.
    fn includes(&self, pod: &PodInfo, node: &NodeInfo) -> bool {
        (!self.honor_affinity || admits(pod, node))
            && (!self.honor_taints
                || node.taints.iter().all(|taint| {
                    !matches!(taint.effect.as_str(), "NoSchedule" | "NoExecute")
                        || tolerated(&pod.tolerations, taint)
                }))
    }

    /// Whether [`Constraint::includes`] holds for every node, whatever
    /// its labels and taints.
    fn includes_all(&self, pod: &PodInfo) -> bool {
        !self.honor_taints
            && (!self.honor_affinity
                || (pod.node_selector.is_empty() && pod.required_affinity.is_none()))
    }

    /// How many of the node's pods this constraint counts.
    fn count(&self, pod: &PodInfo, node: &NodeInfo) -> i64 {
        let mut memo = self.memo.lock().unwrap_or_else(|e| e.into_inner());
        let counted = node.residents().filter(|r| match &self.counted {
            Counted::Selected(selector) => {
                !r.terminating
                    && memo.get_or(r.identity, || {
                        r.namespace == pod.namespace && selector.matches(&r.labels)
                    })
            }
            Counted::Owned(owner) => r.owner.as_deref() == Some(owner),
        });
        counted.count() as i64
    }

    fn selects(&self, pod: &PodInfo) -> bool {
        match &self.counted {
            Counted::Selected(selector) => selector.matches(pod.labels()),
            Counted::Owned(_) => true,
        }
    }

    /// All that decides what [`Constraint::count`] finds on a node: the
    /// key its counts are kept under between cycles.
    fn signature(&self, pod: &PodInfo) -> String {
        match &self.counted {
            Counted::Selected(selector) => format!("selected {} {selector:?}", pod.namespace),
            Counted::Owned(owner) => format!("owned {owner}"),
        }
    }
}

/// Each constraint's count of each node's pods, taken from the counts
/// kept between cycles for the nodes whose pods have not changed since
/// (a cycle would otherwise look at every pod of every node), and kept
/// again when dropped.
struct NodeCounter<'a> {
    topology: Option<&'a Topology>,
    tables: Vec<(String, NodeCounts)>,
}

impl<'a> NodeCounter<'a> {
    fn new(cluster: Snapshot<'a>, pod: &PodInfo, constraints: &[Constraint]) -> Self {
        let nodes = cluster.nodes.len();
        let tables = constraints
            .iter()
            .map(|constraint| {
                let signature = constraint.signature(pod);
                let counts = match cluster.topology {
                    Some(topology) => topology.take_counts(&signature, nodes),
                    None => vec![(0, 0); nodes],
                };
                (signature, counts)
            })
            .collect();
        NodeCounter {
            topology: cluster.topology,
            tables,
        }
    }

    /// What constraint `which` counts of the pods of `node`, the cluster's
    /// node `index` (or a copy of it with other pods).
    fn count(
        &mut self,
        which: usize,
        constraint: &Constraint,
        pod: &PodInfo,
        index: usize,
        node: &NodeInfo,
    ) -> i64 {
        let kept = &mut self.tables[which].1[index];
        if kept.0 != node.generation {
            *kept = (node.generation, constraint.count(pod, node));
        }
        kept.1
    }
}

impl Drop for NodeCounter<'_> {
    fn drop(&mut self) {
        if let Some(topology) = self.topology {
            for (signature, counts) in self.tables.drain(..) {
                topology.keep_counts(signature, counts);
            }
        }
    }
}

/// The pod's own constraints for `when` (DoNotSchedule or
/// ScheduleAnyway).
fn constraints(pod: &PodInfo, when: &str) -> Vec<Constraint> {
    pod.spread
        .iter()
        .filter(|c| c.when_unsatisfiable == when)
        .map(|c| Constraint::from_spec(c, pod))
        .collect()
}

/// Upstream's system default constraints, for a pod that states none.
fn default_constraints(pod: &PodInfo) -> Vec<Constraint> {
    let owners = pod
        .pod
        .metadata
        .owner_references
        .as_deref()
        .unwrap_or_default();
    let Some(owner) = owners.first().filter(|o| {
        matches!(
            o.kind.as_str(),
            "ReplicaSet" | "ReplicationController" | "StatefulSet"
        )
    }) else {
        return Vec::new();
    };
    [(HOSTNAME, 3), (ZONE, 5)]
        .into_iter()
        .map(|(key, max_skew)| Constraint {
            max_skew,
            topology_key: key.to_string(),
            counted: Counted::Owned(owner.uid.clone()),
            min_domains: 1,
            honor_affinity: true,
            honor_taints: false,
            memo: Mutex::default(),
        })
        .collect()
}

fn has_keys(node: &NodeInfo, constraints: &[Constraint]) -> bool {
    constraints
        .iter()
        .all(|c| node.labels.contains_key(&c.topology_key))
}

/// Each constraint's count of selected pods per domain (`None` for a
/// domain no counted node is in), from every node: only nodes with all
/// the constraints' keys count, and for each constraint those it
/// includes.
fn walked_totals(
    cluster: Snapshot<'_>,
    pod: &PodInfo,
    constraints: &[Constraint],
    domains: &[Arc<Domains>],
) -> Vec<Vec<Option<i64>>> {
    let mut counts: Vec<Vec<Option<i64>>> = domains.iter().map(|d| vec![None; d.len()]).collect();
    let mut counter = NodeCounter::new(cluster, pod, constraints);
    for (i, node) in cluster.nodes().enumerate() {
        if domains.iter().any(|d| d.of_node[i].is_none()) {
            continue;
        }
        for (which, ((constraint, domains), counts)) in constraints
            .iter()
            .zip(domains)
            .zip(counts.iter_mut())
            .enumerate()
        {
            if !constraint.includes(pod, node) {
                continue;
            }
            let domain = domains.of_node[i].unwrap_or_default() as usize;
            *counts[domain].get_or_insert(0) += counter.count(which, constraint, pod, i, node);
        }
    }
    counts
}

/// The same as [`walked_totals`], for constraints that include every
/// node, from the totals kept by the last cycle and the nodes whose pods
/// changed since (every node when none are kept).
fn kept_totals(
    topology: &Topology,
    cluster: Snapshot<'_>,
    pod: &PodInfo,
    constraints: &[Constraint],
    domains: &[Arc<Domains>],
) -> Vec<Vec<Option<i64>>> {
    let nodes = cluster.nodes;
    // Whether a node counts at all: it has every constraint's key.
    let counted = |i: usize| domains.iter().all(|d| d.of_node[i].is_some());
    let keys: Vec<&str> = constraints
        .iter()
        .map(|c| c.topology_key.as_str())
        .collect();
    let mut counter = NodeCounter::new(cluster, pod, constraints);
    let mut all = Vec::with_capacity(constraints.len());
    for (which, (constraint, domains)) in constraints.iter().zip(domains).enumerate() {
        let name = format!(
            "{} by {} of {keys:?}",
            constraint.signature(pod),
            constraint.topology_key
        );
        let mut add = |totals: &mut Totals, i: usize| {
            let Some(domain) = domains.of_node[i].filter(|_| counted(i)) else {
                return;
            };
            let now = counter.count(which, constraint, pod, i, &nodes[i]);
            let total = totals.per_domain[domain as usize].get_or_insert(0);
            *total += now - totals.per_node[i];
            totals.per_node[i] = now;
        };
        let totals = match topology.take_totals(&name, nodes.len()) {
            Some((mut totals, changed)) => {
                for i in changed {
                    add(&mut totals, i as usize);
                }
                totals
            }
            None => {
                let mut totals = Totals::new(nodes.len(), domains.len());
                for i in 0..nodes.len() {
                    add(&mut totals, i);
                }
                totals
            }
        };
        all.push(totals.per_domain.clone());
        topology.keep_totals(name, totals);
    }
    all
}

struct FilterState {
    constraints: Vec<Constraint>,
    /// Per constraint: whether it counts the incoming pod itself.
    selects: Vec<bool>,
    domains: Vec<Arc<Domains>>,
    /// Per constraint and domain: the count of selected pods, `None` for
    /// a domain no counted node is in.
    counts: Vec<Vec<Option<i64>>>,
    /// Per constraint: the least count (0 below minDomains domains).
    minimum: Vec<i64>,
    /// The address of the cycle's first node and how many there are.
    nodes: (usize, usize),
}

impl FilterState {
    /// Where `node` is in the cycle's nodes, if it is one of them rather
    /// than a copy (whose domains are then found by its labels).
    fn position(&self, node: &NodeInfo) -> Option<usize> {
        let (first, len) = self.nodes;
        let offset = (node as *const NodeInfo as usize).checked_sub(first)?;
        let size = std::mem::size_of::<NodeInfo>();
        (offset % size == 0 && offset / size < len).then_some(offset / size)
    }
}

impl Filter for PodTopologySpread {
    fn name(&self) -> &'static str {
        NAME
    }

    fn pre_filter(&self, pod: &PodInfo, cluster: Snapshot<'_>, cycle: &mut Cycle) {
        let constraints = constraints(pod, "DoNotSchedule");
        if constraints.is_empty() {
            return;
        }
        let domains: Vec<Arc<Domains>> = constraints
            .iter()
            .map(|c| cluster.domains(&c.topology_key))
            .collect();
        let counts = match cluster.topology {
            Some(topology)
                if topology.keeps_totals()
                    && cluster.replaced.is_none()
                    && constraints.iter().all(|c| c.includes_all(pod)) =>
            {
                kept_totals(topology, cluster, pod, &constraints, &domains)
            }
            _ => walked_totals(cluster, pod, &constraints, &domains),
        };
        let minimum = constraints
            .iter()
            .zip(&counts)
            .map(|(constraint, counts)| {
                let present = counts.iter().flatten();
                if present.clone().count() < constraint.min_domains {
                    0
                } else {
                    present.copied().min().unwrap_or(i64::from(i32::MAX))
                }
            })
            .collect();
        let selects = constraints.iter().map(|c| c.selects(pod)).collect();
        cycle.write(
            NAME,
            FilterState {
                constraints,
                selects,
                domains,
                counts,
                minimum,
                nodes: (cluster.nodes.as_ptr() as usize, cluster.nodes.len()),
            },
        );
    }

    fn filter(&self, cycle: &Cycle, _pod: &PodInfo, node: &NodeInfo) -> Fit {
        let Some(state) = cycle.read::<FilterState>(NAME) else {
            return Fit::Fits;
        };
        let position = state.position(node);
        for (i, constraint) in state.constraints.iter().enumerate() {
            let domain = match position {
                Some(at) => state.domains[i].of_node[at].map(|d| d as usize),
                None => state.domains[i].of(&constraint.topology_key, node),
            };
            let Some(domain) = domain else {
                return Fit::unresolvable(MISSING_LABEL);
            };
            let count = state.counts[i][domain].unwrap_or(0);
            let skew = count + i64::from(state.selects[i]) - state.minimum[i];
            if skew > constraint.max_skew {
                return Fit::unschedulable(NOT_MATCH);
            }
        }
        Fit::Fits
    }
}

struct ScoreState {
    constraints: Vec<Constraint>,
    domains: Vec<Arc<Domains>>,
    /// Whether nodes lacking a topology key are left unscored.
    require_all: bool,
    /// Per constraint (but hostname, counted per node) and domain: the
    /// count of selected pods, for the domains of the scored nodes.
    counts: Vec<Vec<Option<i64>>>,
    /// Per constraint: ln(domains + 2), so that counts in small
    /// topologies are not watered down by large ones.
    weights: Vec<f64>,
}

impl Score for PodTopologySpread {
    fn name(&self) -> &'static str {
        NAME
    }

    fn pre_score(
        &self,
        pod: &PodInfo,
        cluster: Snapshot<'_>,
        feasible: &[&NodeInfo],
        cycle: &mut Cycle,
    ) {
        let require_all = !pod.spread.is_empty();
        let mut constraints = if require_all {
            constraints(pod, "ScheduleAnyway")
        } else {
            default_constraints(pod)
        };
        // A key no feasible node has scores nothing.
        constraints.retain(|c| {
            feasible
                .iter()
                .any(|n| n.labels.contains_key(&c.topology_key))
        });
        if constraints.is_empty() {
            return;
        }
        let domains: Vec<Arc<Domains>> = constraints
            .iter()
            .map(|c| cluster.domains(&c.topology_key))
            .collect();
        let scored: Vec<&NodeInfo> = feasible
            .iter()
            .copied()
            .filter(|n| !require_all || has_keys(n, &constraints))
            .collect();
        let mut counts: Vec<Vec<Option<i64>>> = Vec::with_capacity(constraints.len());
        let mut weights = Vec::with_capacity(constraints.len());
        for (constraint, domains) in constraints.iter().zip(&domains) {
            let mut present = vec![None; domains.len()];
            let size = if constraint.topology_key == HOSTNAME {
                scored.len()
            } else {
                // Nodes without the key make one more domain, as upstream
                // counts them under the empty value.
                let mut missing = false;
                for node in &scored {
                    match domains.of(&constraint.topology_key, node) {
                        Some(domain) => present[domain] = Some(0),
                        None => missing = true,
                    }
                }
                present.iter().flatten().count() + usize::from(missing)
            };
            weights.push(((size + 2) as f64).ln());
            counts.push(present);
        }
        if counts.iter().any(|c| c.iter().any(Option::is_some)) {
            let mut counter = NodeCounter::new(cluster, pod, &constraints);
            for (i, node) in cluster.nodes().enumerate() {
                if require_all && domains.iter().any(|d| d.of_node[i].is_none()) {
                    continue;
                }
                for (which, ((constraint, domains), counts)) in constraints
                    .iter()
                    .zip(&domains)
                    .zip(counts.iter_mut())
                    .enumerate()
                {
                    if constraint.topology_key == HOSTNAME {
                        continue;
                    }
                    let Some(domain) = domains.of_node[i] else {
                        continue;
                    };
                    if let Some(total) = counts[domain as usize].as_mut()
                        && constraint.includes(pod, node)
                    {
                        *total += counter.count(which, constraint, pod, i, node);
                    }
                }
            }
        }
        cycle.write(
            NAME,
            ScoreState {
                constraints,
                domains,
                require_all,
                counts,
                weights,
            },
        );
    }

    /// The selected pods in the node's domains, weighted; -1 for a node
    /// left unscored.
    fn score(&self, cycle: &Cycle, pod: &PodInfo, node: &NodeInfo) -> i64 {
        let Some(state) = cycle.read::<ScoreState>(NAME) else {
            return 0;
        };
        if state.require_all && !has_keys(node, &state.constraints) {
            return -1;
        }
        let mut score = 0.0;
        for (i, constraint) in state.constraints.iter().enumerate() {
            let Some(domain) = state.domains[i].of(&constraint.topology_key, node) else {
                continue;
            };
            let count = if constraint.topology_key == HOSTNAME {
                constraint.count(pod, node)
            } else {
                state.counts[i][domain].unwrap_or(0)
            };
            score += count as f64 * state.weights[i] + (constraint.max_skew - 1) as f64;
        }
        score.round() as i64
    }

    /// The fewest pods score MAX_SCORE; unscored nodes 0.
    fn normalize(&self, cycle: &Cycle, scores: &mut [i64]) {
        if cycle.read::<ScoreState>(NAME).is_none() {
            return;
        }
        let valid = scores.iter().copied().filter(|s| *s >= 0);
        let min = valid.clone().min().unwrap_or(0);
        let max = valid.max().unwrap_or(0);
        for score in scores.iter_mut() {
            *score = if *score < 0 {
                0
            } else if max == 0 {
                MAX_SCORE
            } else {
                MAX_SCORE * (max + min - *score) / max
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::info::Namespaces;
    use crate::plugins::testing::{labelled, node, place};

    fn nodes() -> Vec<NodeInfo> {
        vec![
            node("a1", json!({"zone": "a", HOSTNAME: "a1"}), json!({})),
            node("a2", json!({"zone": "a", HOSTNAME: "a2"}), json!({})),
            node("b1", json!({"zone": "b", HOSTNAME: "b1"}), json!({})),
            node("c1", json!({"zone": "c", HOSTNAME: "c1"}), json!({})),
            node("bare", json!({HOSTNAME: "bare"}), json!({})),
        ]
    }

    fn web(constraints: Value) -> PodInfo {
        labelled(
            "web",
            json!({"app": "web", "rev": "2"}),
            None,
            json!({"topologySpreadConstraints": constraints}),
        )
    }

    fn spread(key: &str, max_skew: i32, when: &str) -> Value {
        json!({"maxSkew": max_skew, "topologyKey": key, "whenUnsatisfiable": when,
               "labelSelector": {"matchLabels": {"app": "web"}}})
    }

    fn verdicts(pod: &PodInfo, nodes: &[NodeInfo]) -> Vec<Fit> {
        let namespaces = Namespaces::new();
        let mut cycle = Cycle::default();
        PodTopologySpread.pre_filter(pod, Snapshot::new(nodes, &namespaces), &mut cycle);
        nodes
            .iter()
            .map(|n| PodTopologySpread.filter(&cycle, pod, n))
            .collect()
    }

    fn scores(pod: &PodInfo, nodes: &[NodeInfo]) -> Vec<i64> {
        let namespaces = Namespaces::new();
        let feasible: Vec<&NodeInfo> = nodes.iter().collect();
        let mut cycle = Cycle::default();
        let cluster = Snapshot::new(nodes, &namespaces);
        PodTopologySpread.pre_score(pod, cluster, &feasible, &mut cycle);
        let mut scores: Vec<i64> = nodes
            .iter()
            .map(|n| PodTopologySpread.score(&cycle, pod, n))
            .collect();
        PodTopologySpread.normalize(&cycle, &mut scores);
        scores
    }

    fn with_pods(counts: &[usize]) -> Vec<NodeInfo> {
        let mut nodes = nodes();
        for (node, count) in nodes.iter_mut().zip(counts) {
            for i in 0..*count {
                let name = format!("{}-{i}", node.name);
                place(
                    node,
                    &labelled(&name, json!({"app": "web", "rev": "1"}), None, json!({})),
                );
            }
        }
        nodes
    }

    #[test]
    fn do_not_schedule_keeps_the_skew_within_max_skew() {
        // Zones a: 2 (a1) + 0 (a2), b: 1, c: 0; the bare node has no zone.
        let nodes = with_pods(&[2, 0, 1, 0, 5]);
        let skewed = Fit::unschedulable(NOT_MATCH);
        let missing = Fit::unresolvable(MISSING_LABEL);
        assert_eq!(
            verdicts(&web(json!([spread("zone", 1, "DoNotSchedule")])), &nodes),
            vec![
                skewed.clone(),
                skewed.clone(),
                skewed.clone(),
                Fit::Fits,
                missing.clone()
            ]
        );
        // Per host, maxSkew 2: the least host has 0.
        assert_eq!(
            verdicts(&web(json!([spread(HOSTNAME, 2, "DoNotSchedule")])), &nodes),
            vec![
                skewed.clone(),
                Fit::Fits,
                Fit::Fits,
                Fit::Fits,
                skewed.clone()
            ]
        );
        // A pod its selector does not select adds nothing to the skew.
        let mut other = spread("zone", 2, "DoNotSchedule");
        other["labelSelector"] = json!({"matchLabels": {"app": "db"}});
        assert_eq!(
            verdicts(&web(json!([other])), &nodes),
            vec![Fit::Fits, Fit::Fits, Fit::Fits, Fit::Fits, missing]
        );
        // ScheduleAnyway never filters.
        assert_eq!(
            verdicts(&web(json!([spread("zone", 1, "ScheduleAnyway")])), &nodes),
            vec![Fit::Fits; 5]
        );
    }

    #[test]
    fn counts_kept_between_cycles_follow_the_pods_placed_and_gone() {
        let namespaces = Namespaces::new();
        let topology = Topology::default();
        let pod = web(json!([spread("zone", 1, "DoNotSchedule")]));
        let verdicts = |nodes: &[NodeInfo]| -> Vec<Fit> {
            let mut cluster = Snapshot::new(nodes, &namespaces);
            cluster.topology = Some(&topology);
            let mut cycle = Cycle::default();
            PodTopologySpread.pre_filter(&pod, cluster, &mut cycle);
            let mut verdicts: Vec<Fit> = nodes
                .iter()
                .map(|n| PodTopologySpread.filter(&cycle, &pod, n))
                .collect();
            // A copy of a node (with nominated pods, say) is judged alike.
            verdicts.push(PodTopologySpread.filter(&cycle, &pod, &nodes[2].clone()));
            verdicts
        };
        let (fits, missing) = (Fit::Fits, Fit::unresolvable(MISSING_LABEL));
        let skewed = Fit::unschedulable(NOT_MATCH);
        // Zones a: 1, b: 0, c: 0.
        let mut nodes = with_pods(&[1, 0, 0, 0, 0]);
        assert_eq!(
            verdicts(&nodes),
            [&skewed, &skewed, &fits, &fits, &missing, &fits].map(Clone::clone)
        );
        // b and c get one each: every zone has 1.
        let other = labelled("other", json!({"app": "web"}), None, json!({}));
        place(&mut nodes[2], &other);
        place(&mut nodes[3], &other);
        assert_eq!(
            verdicts(&nodes),
            [&fits, &fits, &fits, &fits, &missing, &fits].map(Clone::clone)
        );
        // a's pod goes: a is the least, the others one above it.
        let gone = nodes[0].placed[0].clone();
        nodes[0].remove_pod(&gone);
        assert_eq!(
            verdicts(&nodes),
            [&fits, &fits, &skewed, &skewed, &missing, &skewed].map(Clone::clone)
        );
    }

    #[test]
    fn totals_kept_between_cycles_follow_the_changes_told() {
        let namespaces = Namespaces::new();
        let mut topology = Topology::tracked();
        let pod = web(json!([spread("zone", 1, "DoNotSchedule")]));
        let kept = |nodes: &[NodeInfo], topology: &Topology| -> Vec<Fit> {
            let mut cluster = Snapshot::new(nodes, &namespaces);
            cluster.topology = Some(topology);
            let mut cycle = Cycle::default();
            PodTopologySpread.pre_filter(&pod, cluster, &mut cycle);
            let verdicts: Vec<Fit> = nodes
                .iter()
                .map(|n| PodTopologySpread.filter(&cycle, &pod, n))
                .collect();
            // The same as counting every node afresh.
            assert_eq!(verdicts, super::tests::verdicts(&pod, nodes));
            verdicts
        };
        let (fits, missing) = (Fit::Fits, Fit::unresolvable(MISSING_LABEL));
        let skewed = Fit::unschedulable(NOT_MATCH);
        // Zones a: 1, b: 0, c: 0.
        let mut nodes = with_pods(&[1, 0, 0, 0, 0]);
        assert_eq!(
            kept(&nodes, &topology),
            [&skewed, &skewed, &fits, &fits, &missing].map(Clone::clone)
        );
        // b and c get one each: every zone has 1.
        let other = labelled("other", json!({"app": "web"}), None, json!({}));
        place(&mut nodes[2], &other);
        topology.touched(2);
        place(&mut nodes[3], &other);
        topology.touched(3);
        assert_eq!(
            kept(&nodes, &topology),
            [&fits, &fits, &fits, &fits, &missing].map(Clone::clone)
        );
        // a's pod goes: a is the least, the others one above it.
        let gone = nodes[0].placed[0].clone();
        nodes[0].remove_pod(&gone);
        topology.touched(0);
        assert_eq!(
            kept(&nodes, &topology),
            [&fits, &fits, &skewed, &skewed, &missing].map(Clone::clone)
        );
        // It comes back among more changes than are remembered: the
        // totals are counted again from every node.
        place(&mut nodes[1], &other);
        for _ in 0..10_000 {
            topology.touched(4);
        }
        assert_eq!(
            kept(&nodes, &topology),
            [&fits, &fits, &fits, &fits, &missing].map(Clone::clone)
        );
    }

    #[test]
    fn min_domains_counts_missing_domains_as_empty() {
        // Every zone has one pod: with three zones and maxSkew 1 any fits,
        // but minDomains 4 makes the least count 0 (a fourth zone could
        // come), so no zone may get a second pod.
        let nodes = with_pods(&[1, 0, 1, 1, 0]);
        let mut constraint = spread("zone", 1, "DoNotSchedule");
        assert_eq!(
            verdicts(&web(json!([constraint.clone()])), &nodes)[..4],
            vec![Fit::Fits; 4]
        );
        constraint["minDomains"] = json!(4);
        assert_eq!(
            verdicts(&web(json!([constraint])), &nodes)[..4],
            vec![Fit::unschedulable(NOT_MATCH); 4]
        );
    }

    #[test]
    fn match_label_keys_and_node_policies_narrow_what_counts() {
        // Only pods of the same revision count: revision 2 has none yet.
        let nodes = with_pods(&[2, 0, 0, 0, 0]);
        let mut constraint = spread(HOSTNAME, 1, "DoNotSchedule");
        constraint["matchLabelKeys"] = json!(["rev"]);
        assert_eq!(
            verdicts(&web(json!([constraint])), &nodes),
            vec![Fit::Fits; 5]
        );
        // A node the pod's nodeSelector excludes does not hold the least
        // count (nodeAffinityPolicy Honor, the default)...
        let mut tainted = with_pods(&[1, 1, 1, 1, 0]);
        tainted[4] = node(
            "bare",
            json!({HOSTNAME: "bare"}),
            json!({"taints": [{"key": "dedicated", "value": "x", "effect": "NoSchedule"}]}),
        );
        let pinned = labelled(
            "web",
            json!({"app": "web"}),
            None,
            json!({"nodeSelector": {"zone": "a"},
                   "topologySpreadConstraints": [spread(HOSTNAME, 1, "DoNotSchedule")]}),
        );
        assert_eq!(verdicts(&pinned, &tainted)[0], Fit::Fits);
        // ...a tainted node does (nodeTaintsPolicy Ignore, the default),
        // unless the constraint honours taints.
        let mut ignore = spread(HOSTNAME, 1, "DoNotSchedule");
        assert_eq!(
            verdicts(&web(json!([ignore.clone()])), &tainted)[0],
            Fit::unschedulable(NOT_MATCH)
        );
        ignore["nodeTaintsPolicy"] = json!("Honor");
        assert_eq!(verdicts(&web(json!([ignore])), &tainted)[0], Fit::Fits);
    }

    #[test]
    fn schedule_anyway_ranks_emptier_domains_higher() {
        let nodes = with_pods(&[2, 0, 1, 0, 0]);
        // Zone counts a 2, b 1, c 0; weight ln(3 + 2) = 1.61, so raw
        // scores 3, 2, 0; the bare node lacks the key and is not scored.
        let ranked = scores(&web(json!([spread("zone", 1, "ScheduleAnyway")])), &nodes);
        assert_eq!(ranked, vec![0, 0, 33, 100, 0]);
        // Nobody selected anywhere: all equal.
        let mut other = spread(HOSTNAME, 1, "ScheduleAnyway");
        other["labelSelector"] = json!({"matchLabels": {"app": "db"}});
        assert_eq!(scores(&web(json!([other])), &nodes), vec![100; 5]);
    }

    #[test]
    fn pods_of_a_replica_set_spread_by_default() {
        let mut nodes = nodes();
        for (i, node) in nodes.iter_mut().enumerate().take(3) {
            let sibling = labelled(&format!("s{i}"), json!({}), Some("rs-1"), json!({}));
            place(node, &sibling);
        }
        let stranger = labelled("x", json!({}), Some("rs-2"), json!({}));
        place(&mut nodes[3], &stranger);
        let pod = labelled("new", json!({}), Some("rs-1"), json!({}));
        // Per host (maxSkew 3, weight ln(5 + 2)): one sibling scores 1.95 +
        // 2 -> 4, none (the stranger is not a sibling) 2; the zone key is
        // on no node, so only hosts count.
        assert_eq!(scores(&pod, &nodes), vec![50, 50, 50, 100, 100]);
        // Pods without such an owner get no default constraints.
        let alone = labelled("alone", json!({}), None, json!({}));
        assert_eq!(scores(&alone, &nodes), vec![0; 5]);
    }
}
