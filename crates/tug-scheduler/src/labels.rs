//! Label selectors as the scheduler uses them: compiled once from the
//! API's `LabelSelector` when a pod is read, then matched against many
//! pods' labels in every cycle.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

#[derive(Clone, Debug, PartialEq, Eq)]
enum Op {
    In(Vec<String>),
    NotIn(Vec<String>),
    Exists,
    DoesNotExist,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Requirement {
    key: String,
    op: Op,
}

/// A compiled selector. As upstream converts them: a missing selector
/// selects nothing, an empty one everything.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Selector(Option<Vec<Requirement>>);

impl Selector {
    pub fn nothing() -> Self {
        Selector(None)
    }

    /// Compiles `selector`; one with an operator it does not know (which
    /// validation refuses) selects nothing.
    pub fn new(selector: Option<&LabelSelector>) -> Self {
        let Some(selector) = selector else {
            return Selector::nothing();
        };
        let mut requirements: Vec<Requirement> = selector
            .match_labels
            .iter()
            .flatten()
            .map(|(key, value)| Requirement {
                key: key.clone(),
                op: Op::In(vec![value.clone()]),
            })
            .collect();
        for expression in selector.match_expressions.iter().flatten() {
            let values = expression.values.clone().unwrap_or_default();
            let op = match expression.operator.as_str() {
                "In" => Op::In(values),
                "NotIn" => Op::NotIn(values),
                "Exists" => Op::Exists,
                "DoesNotExist" => Op::DoesNotExist,
                _ => return Selector::nothing(),
            };
            requirements.push(Requirement {
                key: expression.key.clone(),
                op,
            });
        }
        Selector(Some(requirements))
    }

    /// Narrows the selector to pods whose `key` is `value` (how
    /// `matchLabelKeys` takes the incoming pod's own labels).
    pub fn require(&mut self, key: &str, value: &str) {
        if let Some(requirements) = self.0.as_mut() {
            requirements.push(Requirement {
                key: key.to_string(),
                op: Op::In(vec![value.to_string()]),
            });
        }
    }

    pub fn selects_nothing(&self) -> bool {
        self.0.is_none()
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let Some(requirements) = &self.0 else {
            return false;
        };
        requirements.iter().all(|r| {
            let value = labels.get(&r.key);
            match &r.op {
                Op::In(values) => value.is_some_and(|v| values.contains(v)),
                Op::NotIn(values) => value.is_none_or(|v| !values.contains(v)),
                Op::Exists => value.is_some(),
                Op::DoesNotExist => value.is_none(),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn selector(value: serde_json::Value) -> Selector {
        Selector::new(Some(&serde_json::from_value(value).unwrap()))
    }

    fn labels(value: serde_json::Value) -> BTreeMap<String, String> {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn selectors_match_as_upstream_converts_them() {
        let web = labels(json!({"app": "web", "tier": "front"}));
        let db = labels(json!({"app": "db"}));
        assert!(!Selector::nothing().matches(&web));
        assert!(selector(json!({})).matches(&web));
        let app = selector(json!({"matchLabels": {"app": "web"}}));
        assert!(app.matches(&web) && !app.matches(&db));
        let expressions = selector(json!({"matchExpressions": [
            {"key": "app", "operator": "In", "values": ["web", "db"]},
            {"key": "tier", "operator": "DoesNotExist"},
        ]}));
        assert!(expressions.matches(&db) && !expressions.matches(&web));
        let not_in = selector(json!({"matchExpressions": [
            {"key": "app", "operator": "NotIn", "values": ["web"]},
            {"key": "app", "operator": "Exists"},
        ]}));
        assert!(not_in.matches(&db) && !not_in.matches(&web));
        let unknown = selector(json!({"matchExpressions": [{"key": "app", "operator": "Gt"}]}));
        assert!(!unknown.matches(&web));
        let mut narrowed = selector(json!({}));
        narrowed.require("app", "db");
        assert!(narrowed.matches(&db) && !narrowed.matches(&web));
    }
}
