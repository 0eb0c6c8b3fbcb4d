//! Preemption, as upstream's DefaultPreemption: a pod that fits nowhere
//! may evict pods of lower priority. For each node whose filters failed
//! for reasons eviction could change, the pod is tried with every lower
//! priority pod gone; those it still fits beside are given back, most
//! important first; what remains are the victims. Of the nodes that
//! would do, the one whose victims matter least wins (the lowest highest
//! priority, then the lowest sum of priorities, then the fewest).
//!
//! Pure: the caller deletes the victims and nominates the node.

use std::collections::BTreeMap;

use crate::info::{NodeInfo, PodInfo, PodUsage};
use crate::plugins::{Cycle, Fit, Profile, Snapshot};

/// Upstream stops looking once it has this many candidate nodes, or a
/// tenth of the nodes if that is more.
const MIN_CANDIDATES: usize = 100;

const NO_VICTIMS: &str = "No preemption victims found for incoming pod";
const NOT_HELPFUL: &str = "Preemption is not helpful for scheduling";

/// Where to make room, and by evicting whom.
#[derive(Debug)]
pub struct Plan {
    pub node: usize,
    pub victims: Vec<PodUsage>,
}

/// The filters' verdict on `node`, with the cluster-wide state worked
/// out from `cluster`.
fn verdict(profile: &Profile, pod: &PodInfo, cluster: Snapshot<'_>, node: &NodeInfo) -> Fit {
    let mut cycle = Cycle::default();
    for filter in &profile.filters {
        filter.pre_filter(pod, cluster, &mut cycle);
    }
    profile
        .filters
        .iter()
        .map(|filter| filter.filter(&cycle, pod, node))
        .find(|fit| *fit != Fit::Fits)
        .unwrap_or(Fit::Fits)
}

/// Plans a preemption for `pod`, or says why there is none (the text
/// after "preemption: " in the pod's condition).
pub fn plan(profile: &Profile, pod: &PodInfo, cluster: Snapshot<'_>) -> Result<Plan, String> {
    let nodes = cluster.nodes;
    if pod.never_preempts {
        return Err("not eligible due to preemptionPolicy=Never.".into());
    }
    if let Some(nominated) = &pod.nominated_node
        && let Some(node) = nodes.iter().find(|n| n.name == *nominated)
        && node
            .residents()
            .any(|r| r.terminating && r.priority < pod.priority)
    {
        // Its earlier victims are still going.
        return Err("not eligible due to a terminating pod on the nominated node.".into());
    }
    let wanted = (nodes.len() / 10).max(MIN_CANDIDATES);
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    let mut best: Option<((i64, i64, usize), Plan)> = None;
    let mut candidates = 0;
    for (index, node) in nodes.iter().enumerate() {
        if candidates >= wanted {
            break;
        }
        match verdict(profile, pod, cluster, node) {
            Fit::Unresolvable(_) => {
                *reasons.entry(NOT_HELPFUL.into()).or_default() += 1;
                continue;
            }
            // Fits now (the cluster changed since): nothing to evict.
            Fit::Fits => continue,
            Fit::Unschedulable(_) => {}
        }
        let mut lower: Vec<PodUsage> = node
            .placed
            .iter()
            .filter(|p| p.resident.priority < pod.priority && !p.resident.terminating)
            .cloned()
            .collect();
        if lower.is_empty() {
            *reasons.entry(NO_VICTIMS.into()).or_default() += 1;
            continue;
        }
        let mut trial = node.clone();
        for victim in &lower {
            trial.remove_pod(victim);
        }
        let fit = verdict(profile, pod, cluster.replacing(index, &trial), &trial);
        if let Fit::Unschedulable(why) | Fit::Unresolvable(why) = fit {
            for reason in why {
                *reasons.entry(reason).or_default() += 1;
            }
            continue;
        }
        // Give back what the pod can live beside, most important first.
        lower.sort_by_key(|p| std::cmp::Reverse(p.resident.priority));
        let mut victims = Vec::new();
        for pod_back in lower {
            trial.add_pod(&pod_back);
            let fits = verdict(profile, pod, cluster.replacing(index, &trial), &trial);
            if fits != Fit::Fits {
                trial.remove_pod(&pod_back);
                victims.push(pod_back);
            }
        }
        candidates += 1;
        let priorities = victims.iter().map(|v| i64::from(v.resident.priority));
        let rank = (
            priorities.clone().max().unwrap_or(i64::MIN),
            priorities.sum::<i64>(),
            victims.len(),
        );
        if best.as_ref().is_none_or(|(top, _)| rank < *top) {
            best = Some((
                rank,
                Plan {
                    node: index,
                    victims,
                },
            ));
        }
    }
    if let Some((_, plan)) = best {
        return Ok(plan);
    }
    let mut listed: Vec<String> = reasons
        .iter()
        .map(|(reason, count)| format!("{count} {reason}"))
        .collect();
    listed.sort();
    Err(format!(
        "0/{} nodes are available: {}.",
        nodes.len(),
        listed.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::info::Namespaces;
    use crate::plugins::testing::{node, place, pod_with};

    fn asking(name: &str, cpu: &str, priority: i32) -> PodInfo {
        pod_with(
            json!({"name": name, "namespace": "default", "uid": format!("uid-{name}")}),
            json!({"priority": priority, "containers": [
                {"name": "c", "resources": {"requests": {"cpu": cpu}}}]}),
        )
    }

    fn names(victims: &[PodUsage]) -> Vec<&str> {
        let mut names: Vec<&str> = victims.iter().map(|v| v.resident.key.as_str()).collect();
        names.sort();
        names
    }

    #[test]
    fn the_node_whose_victims_matter_least_is_chosen_and_the_rest_kept() {
        // Nodes of 4 CPUs: a runs two 1-CPU pods of priority 10 and one of
        // 100; b one 2-CPU pod of priority 50 and one 1-CPU of 5.
        let mut nodes = vec![
            node("a", json!({}), json!({})),
            node("b", json!({}), json!({})),
        ];
        for (name, cpu, priority) in [("a1", "1", 10), ("a2", "1", 10), ("a3", "1", 100)] {
            place(&mut nodes[0], &asking(name, cpu, priority));
        }
        for (name, cpu, priority) in [("b1", "2", 50), ("b2", "1", 5)] {
            place(&mut nodes[1], &asking(name, cpu, priority));
        }
        let none = Namespaces::new();
        let profile = Profile::default();
        // Three CPUs at priority 1000: on a, evicting a1 and a2 (highest
        // victim 10) beats evicting b1 (50) on b; a3 is given back.
        let plan = plan(
            &profile,
            &asking("big", "3", 1000),
            Snapshot::new(&nodes, &none),
        )
        .unwrap();
        assert_eq!(plan.node, 0);
        assert_eq!(names(&plan.victims), ["default/a1", "default/a2"]);
        // Two CPUs at priority 60 (a3 and b1 are not lower): a would lose
        // a2 (10), b only b2 (5).
        let plan = plan_for(&profile, "2", 60, &nodes);
        assert_eq!((plan.node, names(&plan.victims)), (1, vec!["default/b2"]));
        // At priority 8 only b2 is lower, and a node of 4 CPUs with b1 has
        // room for 2 more only: 3 CPUs fit nowhere.
        let failed =
            super::plan(&profile, &asking("x", "3", 8), Snapshot::new(&nodes, &none)).unwrap_err();
        assert_eq!(
            failed,
            "0/2 nodes are available: 1 Insufficient cpu, 1 No preemption victims found for incoming pod."
        );
    }

    fn plan_for(profile: &Profile, cpu: &str, priority: i32, nodes: &[NodeInfo]) -> Plan {
        let none = Namespaces::new();
        plan(
            profile,
            &asking("p", cpu, priority),
            Snapshot::new(nodes, &none),
        )
        .unwrap()
    }

    #[test]
    fn pods_that_never_preempt_or_wait_for_victims_do_not_evict() {
        let mut nodes = vec![node("a", json!({}), json!({}))];
        place(&mut nodes[0], &asking("low", "4", 0));
        let none = Namespaces::new();
        let profile = Profile::default();
        let never = pod_with(
            json!({"name": "never", "namespace": "default"}),
            json!({"priority": 100, "preemptionPolicy": "Never",
                   "containers": [{"name": "c", "resources": {"requests": {"cpu": "1"}}}]}),
        );
        assert_eq!(
            plan(&profile, &never, Snapshot::new(&nodes, &none)).unwrap_err(),
            "not eligible due to preemptionPolicy=Never."
        );
        // A taint is not the victims' doing: preemption would not help.
        let tainted = vec![node(
            "t",
            json!({}),
            json!({"taints": [{"key": "k", "effect": "NoSchedule"}]}),
        )];
        assert_eq!(
            plan(
                &profile,
                &asking("p", "1", 100),
                Snapshot::new(&tainted, &none)
            )
            .unwrap_err(),
            "0/1 nodes are available: 1 Preemption is not helpful for scheduling."
        );
        // Nominated where its victim is still terminating: it waits.
        let mut terminating = vec![node("a", json!({}), json!({}))];
        let going = pod_with(
            json!({"name": "going", "namespace": "default",
                   "deletionTimestamp": "2026-01-01T00:00:00Z"}),
            json!({"priority": 0, "containers": [
                {"name": "c", "resources": {"requests": {"cpu": "4"}}}]}),
        );
        place(&mut terminating[0], &going);
        let nominated = pod_with(
            json!({"name": "n", "namespace": "default"}),
            json!({"priority": 100, "containers": [
                {"name": "c", "resources": {"requests": {"cpu": "1"}}}]}),
        );
        let mut nominated = nominated;
        nominated.nominated_node = Some("a".into());
        assert_eq!(
            plan(&profile, &nominated, Snapshot::new(&terminating, &none)).unwrap_err(),
            "not eligible due to a terminating pod on the nominated node."
        );
    }
}
