//! InterPodAffinity: a pod's required pod affinity places it only in a
//! topology domain (a zone, a host: nodes sharing a label's value) that
//! already runs pods its terms select; its required anti-affinity, and
//! that of the pods already placed, keeps it out of domains running
//! selected pods. Preferred terms (and other pods' terms) rank nodes.
//!
//! As upstream: the counts per domain are taken once per cycle over all
//! nodes; the first pod of a group with affinity to itself may go
//! anywhere the topology keys exist.

use std::sync::Arc;

use super::{Cycle, Filter, Fit, MAX_SCORE, Score, Snapshot};
use crate::info::{AffinityTerm, Domains as NodeDomains, Memo, NodeInfo, PodInfo, Resident};

pub struct InterPodAffinity;

const NAME: &str = "InterPodAffinity";
const AFFINITY: &str = "node(s) didn't match pod affinity rules";
const ANTI_AFFINITY: &str = "node(s) didn't match pod anti-affinity rules";
const EXISTING_ANTI_AFFINITY: &str = "node(s) didn't satisfy existing pods anti-affinity rules";

/// Per topology key: its numbered domains, and a count (or a score) for
/// each domain.
#[derive(Debug, Default)]
struct Domains {
    keys: Vec<(String, Arc<NodeDomains>, Vec<i64>)>,
    /// Whether anything was added.
    touched: bool,
}

impl Domains {
    /// Adds `amount` to the domain of `term`'s key that node `index` is in.
    fn add(&mut self, cluster: &Snapshot<'_>, term: &AffinityTerm, index: usize, amount: i64) {
        let key = &term.topology_key;
        let at = match self.keys.iter().position(|(k, _, _)| k == key) {
            Some(at) => at,
            None => {
                let domains = cluster.domains(key);
                let counts = vec![0; domains.len()];
                self.keys.push((key.clone(), domains, counts));
                self.keys.len() - 1
            }
        };
        let (_, domains, counts) = &mut self.keys[at];
        if let Some(domain) = domains.of_node[index] {
            counts[domain as usize] += amount;
            self.touched = true;
        }
    }

    fn get(&self, key: &str, node: &NodeInfo) -> i64 {
        self.keys
            .iter()
            .find(|(k, _, _)| k == key)
            .and_then(|(k, domains, counts)| domains.of(k, node).map(|d| counts[d]))
            .unwrap_or(0)
    }

    /// The count of each domain the node is in.
    fn of_node<'a>(&'a self, node: &'a NodeInfo) -> impl Iterator<Item = i64> + 'a {
        self.keys
            .iter()
            .filter_map(|(key, domains, counts)| domains.of(key, node).map(|d| counts[d]))
    }
}

/// Selector tests of one cycle, each distinct one made once: the
/// incoming pod against placed pods' terms, and its own terms against
/// placed pods.
#[derive(Default)]
struct Tests {
    incoming: Memo,
    placed: Memo,
}

impl Tests {
    /// Whether `term` (a placed pod's) selects the incoming `pod`.
    fn selected(&mut self, pod: &PodInfo, term: &AffinityTerm, cluster: &Snapshot<'_>) -> bool {
        self.incoming.get_or(term.fingerprint, || {
            pod.selected_by(term, cluster.namespaces)
        })
    }

    /// Whether `term` (the incoming pod's) selects `resident`.
    fn selects(
        &mut self,
        term: &AffinityTerm,
        resident: &Resident,
        cluster: &Snapshot<'_>,
    ) -> bool {
        self.placed
            .get_or(Memo::pair(term.fingerprint, resident.identity), || {
                term.selects_pod(resident, cluster.namespaces)
            })
    }
}

#[derive(Debug, Default)]
struct FilterState {
    /// Pods matching all of the incoming pod's required affinity terms.
    affinity: Domains,
    /// Pods matching each of its required anti-affinity terms.
    anti_affinity: Domains,
    /// Placed pods whose required anti-affinity selects the incoming pod.
    existing_anti_affinity: Domains,
}

impl Filter for InterPodAffinity {
    fn name(&self) -> &'static str {
        NAME
    }

    fn pre_filter(&self, pod: &PodInfo, cluster: Snapshot<'_>, cycle: &mut Cycle) {
        let affinity = pod.affinity();
        let incoming = !affinity.required.is_empty() || !affinity.required_anti.is_empty();
        let mut state = FilterState::default();
        let mut tests = Tests::default();
        for (index, node) in cluster.nodes().enumerate() {
            if !incoming && node.with_affinity == 0 {
                continue;
            }
            for resident in node.residents() {
                for term in &resident.affinity.required_anti {
                    if tests.selected(pod, term, &cluster) {
                        state.existing_anti_affinity.add(&cluster, term, index, 1);
                    }
                }
                if !incoming {
                    continue;
                }
                if !affinity.required.is_empty()
                    && affinity
                        .required
                        .iter()
                        .all(|t| tests.selects(t, resident, &cluster))
                {
                    for term in &affinity.required {
                        state.affinity.add(&cluster, term, index, 1);
                    }
                }
                for term in &affinity.required_anti {
                    if tests.selects(term, resident, &cluster) {
                        state.anti_affinity.add(&cluster, term, index, 1);
                    }
                }
            }
        }
        // The first of a group of pods with affinity to each other: no pod
        // matches anywhere yet, but the pod matches its own terms.
        let first_of_group = !state.affinity.touched
            && !affinity.required.is_empty()
            && affinity
                .required
                .iter()
                .all(|t| pod.selected_by(t, cluster.namespaces));
        cycle.write(NAME, (state, first_of_group));
    }

    fn filter(&self, cycle: &Cycle, pod: &PodInfo, node: &NodeInfo) -> Fit {
        let Some((state, first_of_group)) = cycle.read::<(FilterState, bool)>(NAME) else {
            return Fit::Fits;
        };
        let affinity = pod.affinity();
        let mut selected_pods_near = true;
        for term in &affinity.required {
            if !node.labels.contains_key(&term.topology_key) {
                return Fit::unresolvable(AFFINITY);
            }
            if state.affinity.get(&term.topology_key, node) <= 0 {
                selected_pods_near = false;
            }
        }
        if !selected_pods_near && !first_of_group {
            return Fit::unresolvable(AFFINITY);
        }
        for term in &affinity.required_anti {
            if state.anti_affinity.get(&term.topology_key, node) > 0 {
                return Fit::unschedulable(ANTI_AFFINITY);
            }
        }
        if state
            .existing_anti_affinity
            .of_node(node)
            .any(|count| count > 0)
        {
            return Fit::unschedulable(EXISTING_ANTI_AFFINITY);
        }
        Fit::Fits
    }
}

impl Score for InterPodAffinity {
    fn name(&self) -> &'static str {
        NAME
    }

    /// Sums, per topology domain, the weights of the incoming pod's
    /// preferred terms that placed pods match (anti-affinity subtracts),
    /// and of placed pods' terms that the incoming pod matches (their
    /// required affinity weighing 1).
    fn pre_score(
        &self,
        pod: &PodInfo,
        cluster: Snapshot<'_>,
        _feasible: &[&NodeInfo],
        cycle: &mut Cycle,
    ) {
        let affinity = pod.affinity();
        let preferred = !affinity.preferred.is_empty() || !affinity.preferred_anti.is_empty();
        let mut scores = Domains::default();
        let mut tests = Tests::default();
        for (index, node) in cluster.nodes().enumerate() {
            if !preferred && node.with_affinity == 0 {
                continue;
            }
            for resident in node.residents() {
                for term in &affinity.preferred {
                    if tests.selects(term, resident, &cluster) {
                        scores.add(&cluster, term, index, term.weight);
                    }
                }
                for term in &affinity.preferred_anti {
                    if tests.selects(term, resident, &cluster) {
                        scores.add(&cluster, term, index, -term.weight);
                    }
                }
                let theirs = &resident.affinity;
                for term in theirs.required.iter().chain(&theirs.preferred) {
                    if tests.selected(pod, term, &cluster) {
                        scores.add(&cluster, term, index, term.weight);
                    }
                }
                for term in &theirs.preferred_anti {
                    if tests.selected(pod, term, &cluster) {
                        scores.add(&cluster, term, index, -term.weight);
                    }
                }
            }
        }
        cycle.write(NAME, scores);
    }

    fn score(&self, cycle: &Cycle, _pod: &PodInfo, node: &NodeInfo) -> i64 {
        cycle
            .read::<Domains>(NAME)
            .map_or(0, |scores| scores.of_node(node).sum())
    }

    /// From the lowest sum (0) to the highest (MAX_SCORE).
    fn normalize(&self, cycle: &Cycle, scores: &mut [i64]) {
        if cycle.read::<Domains>(NAME).is_none_or(|s| !s.touched) {
            return;
        }
        let min = scores.iter().copied().min().unwrap_or(0);
        let max = scores.iter().copied().max().unwrap_or(0);
        for score in scores.iter_mut() {
            *score = if max > min {
                MAX_SCORE * (*score - min) / (max - min)
            } else {
                0
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

    fn zone_nodes() -> Vec<NodeInfo> {
        vec![
            node(
                "a1",
                json!({"zone": "a", "kubernetes.io/hostname": "a1"}),
                json!({}),
            ),
            node(
                "a2",
                json!({"zone": "a", "kubernetes.io/hostname": "a2"}),
                json!({}),
            ),
            node(
                "b1",
                json!({"zone": "b", "kubernetes.io/hostname": "b1"}),
                json!({}),
            ),
            node("none", json!({"kubernetes.io/hostname": "none"}), json!({})),
        ]
    }

    fn term(labels: Value, key: &str) -> Value {
        json!({"labelSelector": {"matchLabels": labels}, "topologyKey": key})
    }

    /// The verdict of the filter on each node.
    fn verdicts(pod: &PodInfo, nodes: &[NodeInfo], namespaces: &Namespaces) -> Vec<Fit> {
        let mut cycle = Cycle::default();
        let cluster = Snapshot::new(nodes, namespaces);
        InterPodAffinity.pre_filter(pod, cluster, &mut cycle);
        nodes
            .iter()
            .map(|n| InterPodAffinity.filter(&cycle, pod, n))
            .collect()
    }

    #[test]
    fn required_affinity_places_a_pod_in_the_domain_of_the_pods_it_selects() {
        let mut nodes = zone_nodes();
        place(
            &mut nodes[1],
            &labelled("db", json!({"app": "db"}), None, json!({})),
        );
        let web = labelled(
            "web",
            json!({"app": "web"}),
            None,
            json!({"affinity": {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                term(json!({"app": "db"}), "zone")]}}}),
        );
        let none = Namespaces::new();
        let affinity = Fit::unresolvable(AFFINITY);
        // Zone a holds the db: both its nodes fit; zone b does not; a node
        // without the zone label never fits.
        assert_eq!(
            verdicts(&web, &nodes, &none),
            vec![Fit::Fits, Fit::Fits, affinity.clone(), affinity.clone()]
        );
        // With no db anywhere, nothing fits...
        let empty = zone_nodes();
        assert_eq!(verdicts(&web, &empty, &none), vec![affinity.clone(); 4]);
        // ...unless the pod selects itself: the first of its group goes
        // wherever the key exists.
        let first = labelled(
            "web",
            json!({"app": "web"}),
            None,
            json!({"affinity": {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                term(json!({"app": "web"}), "zone")]}}}),
        );
        assert_eq!(
            verdicts(&first, &empty, &none),
            vec![Fit::Fits, Fit::Fits, Fit::Fits, affinity]
        );
    }

    #[test]
    fn anti_affinity_both_ways_keeps_pods_apart() {
        let anti = |key: &str| {
            json!({"affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                term(json!({"app": "web"}), key)]}}})
        };
        let mut nodes = zone_nodes();
        place(
            &mut nodes[0],
            &labelled(
                "web-0",
                json!({"app": "web"}),
                None,
                anti("kubernetes.io/hostname"),
            ),
        );
        let none = Namespaces::new();
        // The incoming pod's own anti-affinity, per zone.
        let web = labelled("web-1", json!({"app": "web"}), None, anti("zone"));
        let ours = Fit::unschedulable(ANTI_AFFINITY);
        assert_eq!(
            verdicts(&web, &nodes, &none),
            vec![ours.clone(), ours, Fit::Fits, Fit::Fits]
        );
        // A pod without terms is kept off the host of web-0, whose
        // anti-affinity selects it; a pod it does not select is not.
        let plain = labelled("web-2", json!({"app": "web"}), None, json!({}));
        let theirs = Fit::unschedulable(EXISTING_ANTI_AFFINITY);
        assert_eq!(
            verdicts(&plain, &nodes, &none),
            vec![theirs, Fit::Fits, Fit::Fits, Fit::Fits]
        );
        let other = labelled("db", json!({"app": "db"}), None, json!({}));
        assert_eq!(verdicts(&other, &nodes, &none), vec![Fit::Fits; 4]);
    }

    #[test]
    fn terms_select_pods_in_their_namespaces() {
        let mut nodes = zone_nodes();
        let elsewhere = crate::plugins::testing::pod_with(
            json!({"name": "db", "namespace": "prod", "labels": {"app": "db"}}),
            json!({}),
        );
        place(&mut nodes[2], &elsewhere);
        let with = |terms: Value| {
            labelled(
                "web",
                json!({"app": "web"}),
                None,
                json!({"affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": terms}}}),
            )
        };
        let mut namespaces = Namespaces::new();
        namespaces.insert(
            "prod".into(),
            [("env".to_string(), "prod".to_string())].into(),
        );
        let blocked = Fit::unschedulable(ANTI_AFFINITY);
        // Only its own namespace by default: the db in prod is not seen.
        let own = with(json!([term(json!({"app": "db"}), "zone")]));
        assert_eq!(verdicts(&own, &nodes, &namespaces), vec![Fit::Fits; 4]);
        let mut named = term(json!({"app": "db"}), "zone");
        named["namespaces"] = json!(["prod"]);
        let by_name = with(json!([named]));
        assert_eq!(verdicts(&by_name, &nodes, &namespaces)[2], blocked);
        let mut selected = term(json!({"app": "db"}), "zone");
        selected["namespaceSelector"] = json!({"matchLabels": {"env": "prod"}});
        assert_eq!(
            verdicts(&with(json!([selected])), &nodes, &namespaces)[2],
            blocked
        );
        let mut all = term(json!({"app": "db"}), "zone");
        all["namespaceSelector"] = json!({});
        assert_eq!(
            verdicts(&with(json!([all])), &nodes, &namespaces)[2],
            blocked
        );
    }

    #[test]
    fn preferred_terms_rank_domains_from_zero_to_max() {
        let mut nodes = zone_nodes();
        place(
            &mut nodes[0],
            &labelled("db", json!({"app": "db"}), None, json!({})),
        );
        place(
            &mut nodes[2],
            &labelled("cache", json!({"app": "cache"}), None, json!({})),
        );
        let web = labelled(
            "web",
            json!({"app": "web"}),
            None,
            json!({"affinity": {
                "podAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
                    {"weight": 80, "podAffinityTerm": term(json!({"app": "db"}), "zone")}]},
                "podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
                    {"weight": 20, "podAffinityTerm": term(json!({"app": "cache"}), "zone")}]},
            }}),
        );
        let none = Namespaces::new();
        let feasible: Vec<&NodeInfo> = nodes.iter().collect();
        let mut cycle = Cycle::default();
        let cluster = Snapshot::new(&nodes, &none);
        InterPodAffinity.pre_score(&web, cluster, &feasible, &mut cycle);
        let mut scores: Vec<i64> = nodes
            .iter()
            .map(|n| InterPodAffinity.score(&cycle, &web, n))
            .collect();
        assert_eq!(scores, vec![80, 80, -20, 0]);
        InterPodAffinity.normalize(&cycle, &mut scores);
        assert_eq!(scores, vec![100, 100, 0, 20]);
        // A placed pod's required affinity draws a pod it selects (weight 1).
        let mut drawn = zone_nodes();
        place(
            &mut drawn[2],
            &labelled(
                "sidecar",
                json!({}),
                None,
                json!({"affinity": {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                    term(json!({"app": "web"}), "zone")]}}}),
            ),
        );
        let plain = labelled("web", json!({"app": "web"}), None, json!({}));
        let mut cycle = Cycle::default();
        let cluster = Snapshot::new(&drawn, &none);
        InterPodAffinity.pre_score(&plain, cluster, &feasible, &mut cycle);
        let mut scores: Vec<i64> = drawn
            .iter()
            .map(|n| InterPodAffinity.score(&cycle, &plain, n))
            .collect();
        InterPodAffinity.normalize(&cycle, &mut scores);
        assert_eq!(scores, vec![0, 0, 100, 0]);
    }
}
