//! TaintToleration: a node's NoSchedule and NoExecute taints keep away
//! the pods that do not tolerate them; PreferNoSchedule ones make the
//! node less preferred.

use k8s_openapi::api::core::v1::{Taint, Toleration};

use super::{Cycle, Filter, Fit, Score, normalize_by_max};
use crate::info::{NodeInfo, PodInfo};

pub struct TaintToleration;

/// Whether `toleration` tolerates `taint`, as upstream matches them: the
/// same effect (or none given), the same key (or none with Exists), and
/// the same value unless the operator is Exists.
pub fn tolerates(toleration: &Toleration, taint: &Taint) -> bool {
    if let Some(effect) = toleration.effect.as_deref().filter(|e| !e.is_empty())
        && effect != taint.effect
    {
        return false;
    }
    if let Some(key) = toleration.key.as_deref().filter(|k| !k.is_empty())
        && key != taint.key
    {
        return false;
    }
    match toleration.operator.as_deref().unwrap_or("Equal") {
        "Exists" => true,
        "" | "Equal" => {
            toleration.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or("")
        }
        _ => false,
    }
}

pub(crate) fn tolerated(tolerations: &[Toleration], taint: &Taint) -> bool {
    tolerations.iter().any(|t| tolerates(t, taint))
}

impl Filter for TaintToleration {
    fn name(&self) -> &'static str {
        "TaintToleration"
    }

    fn filter(&self, _cycle: &Cycle, pod: &PodInfo, node: &NodeInfo) -> Fit {
        let untolerated = node.taints.iter().find(|taint| {
            (taint.effect == "NoSchedule" || taint.effect == "NoExecute")
                && !tolerated(&pod.tolerations, taint)
        });
        match untolerated {
            Some(taint) => Fit::unresolvable(format!(
                "node(s) had untolerated taint {{{}: {}}}",
                taint.key,
                taint.value.as_deref().unwrap_or("")
            )),
            None => Fit::Fits,
        }
    }
}

impl Score for TaintToleration {
    fn name(&self) -> &'static str {
        "TaintToleration"
    }

    /// How many PreferNoSchedule taints the pod does not tolerate.
    fn score(&self, _cycle: &Cycle, pod: &PodInfo, node: &NodeInfo) -> i64 {
        let tolerations: Vec<Toleration> = pod
            .tolerations
            .iter()
            .filter(|t| {
                matches!(
                    t.effect.as_deref(),
                    None | Some("") | Some("PreferNoSchedule")
                )
            })
            .cloned()
            .collect();
        node.taints
            .iter()
            .filter(|taint| taint.effect == "PreferNoSchedule" && !tolerated(&tolerations, taint))
            .count() as i64
    }

    fn normalize(&self, _cycle: &Cycle, scores: &mut [i64]) {
        normalize_by_max(scores, true);
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::plugins::testing::{node, pod};

    #[test]
    fn untolerated_taints_keep_pods_away() {
        let tainted = node(
            "a",
            json!({}),
            json!({"taints": [
                {"key": "soft", "effect": "PreferNoSchedule"},
                {"key": "node-role", "value": "x", "effect": "NoSchedule"},
            ]}),
        );
        let cases = [
            (json!([]), false),
            (json!([{"key": "node-role", "value": "x"}]), true),
            (json!([{"key": "node-role", "value": "y"}]), false),
            (json!([{"key": "node-role", "operator": "Exists"}]), true),
            (json!([{"operator": "Exists"}]), true),
            (
                json!([{"key": "node-role", "operator": "Exists", "effect": "NoExecute"}]),
                false,
            ),
            (
                json!([{"key": "node-role", "operator": "Exists", "effect": "NoSchedule"}]),
                true,
            ),
        ];
        for (tolerations, fits) in cases {
            let fit = TaintToleration.filter(
                &Cycle::default(),
                &pod(json!({"tolerations": tolerations})),
                &tainted,
            );
            let expected = if fits {
                Fit::Fits
            } else {
                Fit::unresolvable("node(s) had untolerated taint {node-role: x}")
            };
            assert_eq!(fit, expected, "{tolerations}");
        }
    }

    #[test]
    fn prefer_no_schedule_taints_lower_the_score() {
        let plain = node("a", json!({}), json!({}));
        let soft = node(
            "b",
            json!({}),
            json!({"taints": [{"key": "soft", "effect": "PreferNoSchedule"}]}),
        );
        let p = pod(json!({}));
        let mut scores = [
            TaintToleration.score(&Cycle::default(), &p, &plain),
            TaintToleration.score(&Cycle::default(), &p, &soft),
        ];
        TaintToleration.normalize(&Cycle::default(), &mut scores);
        assert_eq!(scores, [100, 0]);
        let tolerant = pod(json!({"tolerations": [{"key": "soft", "operator": "Exists"}]}));
        assert_eq!(
            TaintToleration.score(&Cycle::default(), &tolerant, &soft),
            0
        );
    }
}
