//! NodeAffinity: `nodeSelector` and required node affinity decide which
//! nodes a pod may use; preferred node affinity ranks them.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{NodeSelectorRequirement, NodeSelectorTerm};

use super::{Cycle, Filter, Fit, Score, normalize_by_max};
use crate::info::{NodeInfo, PodInfo};

pub struct NodeAffinity;

fn requirement_matches(requirement: &NodeSelectorRequirement, value: Option<&str>) -> bool {
    let values = requirement.values.as_deref().unwrap_or_default();
    let number = |text: &str| text.parse::<i64>().ok();
    match requirement.operator.as_str() {
        "In" => value.is_some_and(|v| values.iter().any(|w| w == v)),
        "NotIn" => !value.is_some_and(|v| values.iter().any(|w| w == v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" | "Lt" => {
            let (Some(have), [want]) = (value.and_then(number), values) else {
                return false;
            };
            let Some(want) = number(want) else {
                return false;
            };
            if requirement.operator == "Gt" {
                have > want
            } else {
                have < want
            }
        }
        _ => false,
    }
}

/// Whether a term matches: all its expressions on labels and all its
/// fields (only `metadata.name`); a term with neither matches nothing.
pub(crate) fn term_matches(
    term: &NodeSelectorTerm,
    labels: &BTreeMap<String, String>,
    name: &str,
) -> bool {
    let expressions = term.match_expressions.as_deref().unwrap_or_default();
    let fields = term.match_fields.as_deref().unwrap_or_default();
    if expressions.is_empty() && fields.is_empty() {
        return false;
    }
    expressions
        .iter()
        .all(|r| requirement_matches(r, labels.get(&r.key).map(String::as_str)))
        && fields.iter().all(|r| {
            let value = (r.key == "metadata.name").then_some(name);
            r.key == "metadata.name" && requirement_matches(r, value)
        })
}

/// Whether the pod's nodeSelector and required node affinity admit the
/// node.
pub(crate) fn admits(pod: &PodInfo, node: &NodeInfo) -> bool {
    let selected = pod
        .node_selector
        .iter()
        .all(|(key, value)| node.labels.get(key) == Some(value));
    selected
        && pod.required_affinity.as_ref().is_none_or(|selector| {
            selector
                .node_selector_terms
                .iter()
                .any(|term| term_matches(term, &node.labels, &node.name))
        })
}

impl Filter for NodeAffinity {
    fn name(&self) -> &'static str {
        "NodeAffinity"
    }

    fn filter(&self, _cycle: &Cycle, pod: &PodInfo, node: &NodeInfo) -> Fit {
        if admits(pod, node) {
            Fit::Fits
        } else {
            Fit::unresolvable("node(s) didn't match Pod's node affinity/selector")
        }
    }
}

impl Score for NodeAffinity {
    fn name(&self) -> &'static str {
        "NodeAffinity"
    }

    /// The weights of the preferred terms the node matches.
    fn score(&self, _cycle: &Cycle, pod: &PodInfo, node: &NodeInfo) -> i64 {
        pod.preferred_affinity
            .iter()
            .filter(|p| p.weight != 0 && term_matches(&p.preference, &node.labels, &node.name))
            .map(|p| i64::from(p.weight))
            .sum()
    }

    fn normalize(&self, _cycle: &Cycle, scores: &mut [i64]) {
        normalize_by_max(scores, false);
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::plugins::testing::{node, pod};

    fn fits(affinity: serde_json::Value, labels: serde_json::Value) -> bool {
        let p = pod(
            json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": affinity}}}),
        );
        NodeAffinity.filter(&Cycle::default(), &p, &node("n1", labels, json!({}))) == Fit::Fits
    }

    #[test]
    fn required_terms_match_as_upstream_matches_them() {
        let term = |expressions: serde_json::Value| json!({"nodeSelectorTerms": [{"matchExpressions": expressions}]});
        let zone = json!({"zone": "a", "cores": "8"});
        for (expressions, expected) in [
            (
                json!([{"key": "zone", "operator": "In", "values": ["a", "b"]}]),
                true,
            ),
            (
                json!([{"key": "zone", "operator": "In", "values": ["b"]}]),
                false,
            ),
            (
                json!([{"key": "zone", "operator": "NotIn", "values": ["b"]}]),
                true,
            ),
            (
                json!([{"key": "gpu", "operator": "NotIn", "values": ["x"]}]),
                true,
            ),
            (json!([{"key": "zone", "operator": "Exists"}]), true),
            (json!([{"key": "zone", "operator": "DoesNotExist"}]), false),
            (
                json!([{"key": "cores", "operator": "Gt", "values": ["4"]}]),
                true,
            ),
            (
                json!([{"key": "cores", "operator": "Lt", "values": ["4"]}]),
                false,
            ),
            (
                json!([{"key": "zone", "operator": "Gt", "values": ["4"]}]),
                false,
            ),
            (
                json!([{"key": "zone", "operator": "In", "values": ["a"]}, {"key": "cores", "operator": "In", "values": ["1"]}]),
                false,
            ),
        ] {
            assert_eq!(
                fits(term(expressions.clone()), zone.clone()),
                expected,
                "{expressions}"
            );
        }
        // Terms are ORed; an empty term matches nothing.
        assert!(fits(
            json!({"nodeSelectorTerms": [{}, {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n1"]}]}]}),
            json!({})
        ));
        assert!(!fits(json!({"nodeSelectorTerms": [{}]}), json!({})));
    }

    #[test]
    fn node_selector_needs_every_label() {
        let p = pod(json!({"nodeSelector": {"disk": "ssd", "zone": "a"}}));
        let both = node("a", json!({"disk": "ssd", "zone": "a"}), json!({}));
        let one = node("b", json!({"disk": "ssd"}), json!({}));
        assert_eq!(NodeAffinity.filter(&Cycle::default(), &p, &both), Fit::Fits);
        assert_eq!(
            NodeAffinity.filter(&Cycle::default(), &p, &one),
            Fit::unresolvable("node(s) didn't match Pod's node affinity/selector")
        );
    }

    #[test]
    fn preferred_terms_add_their_weights() {
        let p = pod(
            json!({"affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 10, "preference": {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}},
                {"weight": 30, "preference": {"matchExpressions": [{"key": "disk", "operator": "Exists"}]}},
            ]}}}),
        );
        let nodes = [
            node("a", json!({"zone": "a", "disk": "ssd"}), json!({})),
            node("b", json!({"zone": "a"}), json!({})),
            node("c", json!({}), json!({})),
        ];
        let mut scores: Vec<i64> = nodes
            .iter()
            .map(|n| NodeAffinity.score(&Cycle::default(), &p, n))
            .collect();
        assert_eq!(scores, [40, 10, 0]);
        NodeAffinity.normalize(&Cycle::default(), &mut scores);
        assert_eq!(scores, [100, 25, 0]);
    }
}
