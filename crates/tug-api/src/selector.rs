//! Label and field selectors, parsed as upstream parses `?labelSelector=`
//! and `?fieldSelector=`.

use std::collections::BTreeSet;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct SelectorError(pub String);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Op {
    Equals(String),
    NotEquals(String),
    In(BTreeSet<String>),
    NotIn(BTreeSet<String>),
    Exists,
    DoesNotExist,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Requirement {
    key: String,
    op: Op,
}

/// A parsed label selector; the empty selector matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector {
    requirements: Vec<Requirement>,
}

/// Splits on commas that are not inside parentheses.
fn split_top_level(text: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0i32, 0);
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

fn check_key(key: &str, whole: &str) -> Result<(), SelectorError> {
    let valid = !key.is_empty()
        && key.len() <= 317
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'));
    if valid {
        Ok(())
    } else {
        Err(SelectorError(format!(
            "unable to parse requirement: found '{key}', expected: key in {whole:?}"
        )))
    }
}

fn check_value(value: &str) -> Result<(), SelectorError> {
    let valid = value.len() <= 63
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if valid {
        Ok(())
    } else {
        Err(SelectorError(format!(
            "invalid label value: \"{value}\": a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.'"
        )))
    }
}

fn value_set(text: &str, whole: &str) -> Result<BTreeSet<String>, SelectorError> {
    let inner = text
        .trim()
        .strip_prefix('(')
        .and_then(|t| t.strip_suffix(')'))
        .ok_or_else(|| {
            SelectorError(format!(
                "unable to parse requirement: expected '(' and ')' in {whole:?}"
            ))
        })?;
    let mut values = BTreeSet::new();
    for value in inner.split(',') {
        let value = value.trim();
        check_value(value)?;
        values.insert(value.to_string());
    }
    Ok(values)
}

impl LabelSelector {
    pub fn parse(text: &str) -> Result<Self, SelectorError> {
        let mut requirements = Vec::new();
        if text.trim().is_empty() {
            return Ok(Self { requirements });
        }
        for part in split_top_level(text) {
            let part = part.trim();
            let requirement = if let Some(key) = part.strip_prefix('!') {
                check_key(key.trim(), text)?;
                Requirement {
                    key: key.trim().to_string(),
                    op: Op::DoesNotExist,
                }
            } else if let Some((key, value)) = part.split_once("!=") {
                check_key(key.trim(), text)?;
                check_value(value.trim())?;
                Requirement {
                    key: key.trim().to_string(),
                    op: Op::NotEquals(value.trim().to_string()),
                }
            } else if let Some((key, value)) = part.split_once('=') {
                let value = value.strip_prefix('=').unwrap_or(value);
                check_key(key.trim(), text)?;
                check_value(value.trim())?;
                Requirement {
                    key: key.trim().to_string(),
                    op: Op::Equals(value.trim().to_string()),
                }
            } else if let Some((key, values)) = part.split_once(" notin ") {
                check_key(key.trim(), text)?;
                Requirement {
                    key: key.trim().to_string(),
                    op: Op::NotIn(value_set(values, text)?),
                }
            } else if let Some((key, values)) = part.split_once(" in ") {
                check_key(key.trim(), text)?;
                Requirement {
                    key: key.trim().to_string(),
                    op: Op::In(value_set(values, text)?),
                }
            } else {
                check_key(part, text)?;
                Requirement {
                    key: part.to_string(),
                    op: Op::Exists,
                }
            };
            requirements.push(requirement);
        }
        Ok(Self { requirements })
    }

    /// A `LabelSelector` object (`matchLabels`, `matchExpressions`), as
    /// its JSON. `None` for a missing selector (which selects nothing) or
    /// one with an operator upstream does not know.
    pub fn from_object(selector: &serde_json::Value) -> Option<Self> {
        let selector = selector.as_object()?;
        let mut requirements = Vec::new();
        for (key, value) in selector
            .get("matchLabels")
            .and_then(|m| m.as_object())
            .into_iter()
            .flatten()
        {
            requirements.push(Requirement {
                key: key.clone(),
                op: Op::Equals(value.as_str()?.to_string()),
            });
        }
        for expression in selector
            .get("matchExpressions")
            .and_then(|m| m.as_array())
            .into_iter()
            .flatten()
        {
            let key = expression["key"].as_str()?.to_string();
            let values: BTreeSet<String> = expression["values"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect();
            let op = match expression["operator"].as_str()? {
                "In" => Op::In(values),
                "NotIn" => Op::NotIn(values),
                "Exists" => Op::Exists,
                "DoesNotExist" => Op::DoesNotExist,
                _ => return None,
            };
            requirements.push(Requirement { key, op });
        }
        Some(Self { requirements })
    }

    /// Whether an object with `labels` (its `metadata.labels`) matches.
    pub fn matches(&self, labels: Option<&serde_json::Map<String, serde_json::Value>>) -> bool {
        self.requirements.iter().all(|r| {
            let value = labels.and_then(|l| l.get(&r.key)).and_then(|v| v.as_str());
            match (&r.op, value) {
                (Op::Equals(want), Some(have)) => want == have,
                (Op::Equals(_), None) => false,
                (Op::NotEquals(want), have) => have != Some(want.as_str()),
                (Op::In(set), Some(have)) => set.contains(have),
                (Op::In(_), None) => false,
                (Op::NotIn(set), have) => have.is_none_or(|h| !set.contains(h)),
                (Op::Exists, have) => have.is_some(),
                (Op::DoesNotExist, have) => have.is_none(),
            }
        })
    }
}

/// A parsed field selector: `metadata.name=x,metadata.namespace!=y`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector {
    terms: Vec<(String, bool, String)>,
}

impl FieldSelector {
    pub fn parse(text: &str) -> Result<Self, SelectorError> {
        let mut terms = Vec::new();
        if text.trim().is_empty() {
            return Ok(Self { terms });
        }
        for part in text.split(',') {
            let (field, equal, value) = if let Some((f, v)) = part.split_once("!=") {
                (f, false, v)
            } else if let Some((f, v)) = part.split_once("==") {
                (f, true, v)
            } else if let Some((f, v)) = part.split_once('=') {
                (f, true, v)
            } else {
                return Err(SelectorError(format!(
                    "invalid selector: '{text}'; can't understand '{part}'"
                )));
            };
            terms.push((field.trim().to_string(), equal, value.trim().to_string()));
        }
        Ok(Self { terms })
    }

    /// The fields this selector reads.
    pub fn fields(&self) -> impl Iterator<Item = &str> {
        self.terms.iter().map(|(field, _, _)| field.as_str())
    }

    /// Whether an object matches, given a lookup of field values.
    pub fn matches(&self, field: impl Fn(&str) -> Option<String>) -> bool {
        self.terms.iter().all(|(name, equal, want)| {
            let have = field(name).unwrap_or_default();
            (have == *want) == *equal
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(selector: &str, labels: serde_json::Value, expected: bool) {
        let parsed = LabelSelector::parse(selector).unwrap();
        assert_eq!(
            parsed.matches(labels.as_object()),
            expected,
            "{selector} on {labels}"
        );
    }

    #[test]
    fn label_selectors_match_as_upstream() {
        let labels = json!({"app": "web", "tier": "front"});
        check("", labels.clone(), true);
        check("app=web", labels.clone(), true);
        check("app==web", labels.clone(), true);
        check("app=db", labels.clone(), false);
        check("app!=db", labels.clone(), true);
        check("missing!=x", labels.clone(), true);
        check("app in (web, db)", labels.clone(), true);
        check("app notin (web,db)", labels.clone(), false);
        check("missing notin (web)", labels.clone(), true);
        check("tier", labels.clone(), true);
        check("!tier", labels.clone(), false);
        check("app=web,tier=front", labels.clone(), true);
        check("app=web,tier=back", labels.clone(), false);
        check("app", json!(null), false);
        check("!app", json!(null), true);
    }

    #[test]
    fn selector_objects_match_as_their_text_would() {
        let selector = LabelSelector::from_object(&serde_json::json!({
            "matchLabels": {"app": "web"},
            "matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["db"]}],
        }))
        .unwrap();
        let labels = |v: serde_json::Value| v.as_object().cloned();
        assert!(selector.matches(labels(serde_json::json!({"app": "web"})).as_ref()));
        assert!(
            !selector.matches(labels(serde_json::json!({"app": "web", "tier": "db"})).as_ref())
        );
        assert!(!selector.matches(None));
        let everything = LabelSelector::from_object(&serde_json::json!({})).unwrap();
        assert!(everything.matches(None));
        assert_eq!(LabelSelector::from_object(&serde_json::Value::Null), None);
        let unknown = serde_json::json!({"matchExpressions": [{"key": "a", "operator": "Gt"}]});
        assert_eq!(LabelSelector::from_object(&unknown), None);
    }

    #[test]
    fn bad_label_selectors_are_refused() {
        for bad in ["app=we b", "a pp", "app in web", "=x"] {
            assert!(LabelSelector::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn field_selectors_compare_fields() {
        let selector =
            FieldSelector::parse("metadata.name=web,metadata.namespace!=kube-system").unwrap();
        let field = |name: &str| match name {
            "metadata.name" => Some("web".to_string()),
            "metadata.namespace" => Some("default".to_string()),
            _ => None,
        };
        assert!(selector.matches(field));
        assert!(
            !FieldSelector::parse("metadata.name=db")
                .unwrap()
                .matches(field)
        );
        assert!(FieldSelector::parse("nonsense").is_err());
        assert_eq!(
            selector.fields().collect::<Vec<_>>(),
            ["metadata.name", "metadata.namespace"]
        );
    }
}
