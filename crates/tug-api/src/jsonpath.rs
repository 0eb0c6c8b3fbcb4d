//! The JSONPath that CRDs' additionalPrinterColumns use: fields
//! (`.spec.size`), indexes (`[0]`), wildcards (`[*]`) and filters
//! (`[?(@.type=="Ready")]`, with `==` or `!=`).

use serde_json::Value;

#[derive(Debug, Clone, PartialEq)]
enum Step {
    Field(String),
    Index(usize),
    All,
    Filter {
        path: Vec<Step>,
        equal: bool,
        literal: Value,
    },
}

/// A parsed path.
#[derive(Debug, Clone, PartialEq)]
pub struct Path(Vec<Step>);

impl Path {
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let text = text
            .strip_prefix('{')
            .and_then(|t| t.strip_suffix('}'))
            .unwrap_or(text);
        let text = text.strip_prefix('$').unwrap_or(text);
        parse_steps(text).map(Path)
    }

    /// Every value the path reaches in `object`, in order.
    pub fn find<'a>(&self, object: &'a Value) -> Vec<&'a Value> {
        walk(&self.0, vec![object])
    }
}

fn parse_steps(mut text: &str) -> Result<Vec<Step>, String> {
    let mut steps = Vec::new();
    while !text.is_empty() {
        if let Some(rest) = text.strip_prefix('.') {
            let end = rest.find(['.', '[']).unwrap_or(rest.len());
            if end > 0 {
                steps.push(Step::Field(rest[..end].to_string()));
            }
            text = &rest[end..];
        } else if let Some(rest) = text.strip_prefix('[') {
            let end = closing_bracket(rest).ok_or_else(|| format!("unclosed [ in {text:?}"))?;
            let inside = rest[..end].trim();
            steps.push(bracket(inside)?);
            text = &rest[end + 1..];
        } else {
            // A leading field without its dot: `spec.size`.
            let end = text.find(['.', '[']).unwrap_or(text.len());
            steps.push(Step::Field(text[..end].to_string()));
            text = &text[end..];
        }
    }
    Ok(steps)
}

/// Where the `]` matching an opened `[` is, skipping quoted text.
fn closing_bracket(text: &str) -> Option<usize> {
    let mut quote = None;
    for (i, c) in text.char_indices() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '"' | '\'') => quote = Some(c),
            (None, ']') => return Some(i),
            _ => {}
        }
    }
    None
}

fn bracket(inside: &str) -> Result<Step, String> {
    if inside == "*" {
        return Ok(Step::All);
    }
    if let Ok(index) = inside.parse::<usize>() {
        return Ok(Step::Index(index));
    }
    if let Some(name) = inside
        .strip_prefix('\'')
        .and_then(|n| n.strip_suffix('\''))
        .or_else(|| inside.strip_prefix('"').and_then(|n| n.strip_suffix('"')))
    {
        return Ok(Step::Field(name.to_string()));
    }
    let filter = inside
        .strip_prefix("?(")
        .and_then(|f| f.strip_suffix(')'))
        .ok_or_else(|| format!("unsupported [{inside}]"))?;
    let (left, right, equal) = match (filter.split_once("=="), filter.split_once("!=")) {
        (Some((l, r)), _) => (l, r, true),
        (None, Some((l, r))) => (l, r, false),
        _ => return Err(format!("unsupported filter {filter:?}")),
    };
    let left = left
        .trim()
        .strip_prefix('@')
        .ok_or("a filter starts with @")?;
    let right = right.trim();
    let literal = match right
        .strip_prefix('"')
        .and_then(|r| r.strip_suffix('"'))
        .or_else(|| right.strip_prefix('\'').and_then(|r| r.strip_suffix('\'')))
    {
        Some(text) => Value::String(text.to_string()),
        None => serde_json::from_str(right).map_err(|_| format!("bad literal {right:?}"))?,
    };
    Ok(Step::Filter {
        path: parse_steps(left)?,
        equal,
        literal,
    })
}

fn walk<'a>(steps: &[Step], mut values: Vec<&'a Value>) -> Vec<&'a Value> {
    for step in steps {
        values = values
            .into_iter()
            .flat_map(|value| -> Vec<&'a Value> {
                match (step, value) {
                    (Step::Field(name), Value::Object(map)) => map.get(name).into_iter().collect(),
                    (Step::Index(index), Value::Array(items)) => {
                        items.get(*index).into_iter().collect()
                    }
                    (Step::All, Value::Array(items)) => items.iter().collect(),
                    (Step::All, Value::Object(map)) => map.values().collect(),
                    (
                        Step::Filter {
                            path,
                            equal,
                            literal,
                        },
                        Value::Array(items),
                    ) => items
                        .iter()
                        .filter(|item| {
                            let found = walk(path, vec![item]);
                            found.contains(&literal) == *equal
                        })
                        .collect(),
                    _ => Vec::new(),
                }
            })
            .collect();
    }
    values
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_paths_printer_columns_use() {
        let object = json!({
            "spec": {"size": 3, "items": [{"name": "a"}, {"name": "b"}]},
            "status": {"conditions": [
                {"type": "Progressing", "status": "True"},
                {"type": "Ready", "status": "False", "reason": "Waiting"},
            ]},
        });
        let find = |path: &str| {
            Path::parse(path)
                .unwrap()
                .find(&object)
                .into_iter()
                .cloned()
                .collect::<Vec<_>>()
        };
        assert_eq!(find(".spec.size"), [json!(3)]);
        assert_eq!(find("{.spec.size}"), [json!(3)]);
        assert_eq!(find(".spec.items[1].name"), [json!("b")]);
        assert_eq!(find(".spec.items[*].name"), [json!("a"), json!("b")]);
        assert_eq!(
            find(r#".status.conditions[?(@.type=="Ready")].status"#),
            [json!("False")]
        );
        assert_eq!(
            find(r#".status.conditions[?(@.type!="Ready")].type"#),
            [json!("Progressing")]
        );
        assert!(find(".spec.missing").is_empty());
        assert!(Path::parse(".spec[").is_err());
    }
}
