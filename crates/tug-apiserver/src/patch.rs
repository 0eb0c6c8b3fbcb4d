//! Patches over JSON documents: JSON merge patch (RFC 7386) and JSON patch
//! (RFC 6902). Pure functions; the REST layer turns their errors into
//! `Status`es (a malformed patch is 400, one that does not apply is 422).

use serde_json::{Map, Value};

/// RFC 7386 JSON merge patch.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let target = target.as_object_mut().expect("made an object above");
    for (key, value) in patch {
        if value.is_null() {
            target.remove(key);
        } else {
            merge_patch(target.entry(key.clone()).or_insert(Value::Null), value);
        }
    }
}

/// Why a JSON patch was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum JsonPatchError {
    /// The patch itself is not a JSON patch document.
    #[error("invalid JSON patch: {0}")]
    Malformed(String),
    /// The patch is well formed but does not apply to this document.
    #[error("{0}")]
    DoesNotApply(String),
}

fn tokens(pointer: &str) -> Result<Vec<String>, JsonPatchError> {
    if pointer.is_empty() {
        return Ok(Vec::new());
    }
    let Some(rest) = pointer.strip_prefix('/') else {
        return Err(JsonPatchError::Malformed(format!(
            "path {pointer:?} does not start with '/'"
        )));
    };
    Ok(rest
        .split('/')
        .map(|t| t.replace("~1", "/").replace("~0", "~"))
        .collect())
}

fn missing(pointer: &str) -> JsonPatchError {
    JsonPatchError::DoesNotApply(format!("doc is missing path: \"{pointer}\": missing value"))
}

fn index(token: &str, len: usize, allow_end: bool, pointer: &str) -> Result<usize, JsonPatchError> {
    if allow_end && token == "-" {
        return Ok(len);
    }
    let valid = !token.is_empty()
        && token.bytes().all(|b| b.is_ascii_digit())
        && (token == "0" || !token.starts_with('0'));
    match token.parse::<usize>() {
        Ok(i) if valid && (i < len || (allow_end && i == len)) => Ok(i),
        _ => Err(JsonPatchError::DoesNotApply(format!(
            "unable to access invalid index {token:?} in {pointer:?}"
        ))),
    }
}

fn get<'a>(doc: &'a Value, pointer: &str) -> Result<&'a Value, JsonPatchError> {
    let mut here = doc;
    for token in tokens(pointer)? {
        here = match here {
            Value::Object(map) => map.get(&token).ok_or_else(|| missing(pointer))?,
            Value::Array(items) => &items[index(&token, items.len(), false, pointer)?],
            _ => return Err(missing(pointer)),
        };
    }
    Ok(here)
}

/// The parent of `pointer` and the last token.
fn parent<'a>(
    doc: &'a mut Value,
    pointer: &str,
) -> Result<(&'a mut Value, String), JsonPatchError> {
    let mut path = tokens(pointer)?;
    let last = path.pop().ok_or_else(|| {
        JsonPatchError::DoesNotApply("the whole document cannot be added to or removed".into())
    })?;
    let mut here = doc;
    for token in path {
        here = match here {
            Value::Object(map) => map.get_mut(&token).ok_or_else(|| missing(pointer))?,
            Value::Array(items) => {
                let i = index(&token, items.len(), false, pointer)?;
                &mut items[i]
            }
            _ => return Err(missing(pointer)),
        };
    }
    Ok((here, last))
}

fn add(doc: &mut Value, pointer: &str, value: Value) -> Result<(), JsonPatchError> {
    if pointer.is_empty() {
        *doc = value;
        return Ok(());
    }
    let (parent, last) = parent(doc, pointer)?;
    match parent {
        Value::Object(map) => {
            map.insert(last, value);
        }
        Value::Array(items) => {
            let i = index(&last, items.len(), true, pointer)?;
            items.insert(i, value);
        }
        _ => return Err(missing(pointer)),
    }
    Ok(())
}

fn remove(doc: &mut Value, pointer: &str) -> Result<Value, JsonPatchError> {
    let (parent, last) = parent(doc, pointer)?;
    match parent {
        Value::Object(map) => map.remove(&last).ok_or_else(|| missing(pointer)),
        Value::Array(items) => {
            let i = index(&last, items.len(), false, pointer)?;
            Ok(items.remove(i))
        }
        _ => Err(missing(pointer)),
    }
}

/// Applies an RFC 6902 JSON patch; on error `doc` is left unchanged.
pub fn json_patch(doc: &mut Value, patch: &Value) -> Result<(), JsonPatchError> {
    let operations = patch.as_array().ok_or_else(|| {
        JsonPatchError::Malformed("a JSON patch is an array of operations".into())
    })?;
    let mut result = doc.clone();
    for operation in operations {
        let field = |name: &str| -> Result<&str, JsonPatchError> {
            operation[name].as_str().ok_or_else(|| {
                JsonPatchError::Malformed(format!("operation {operation} has no string {name:?}"))
            })
        };
        let value = || -> Result<Value, JsonPatchError> {
            operation.get("value").cloned().ok_or_else(|| {
                JsonPatchError::Malformed(format!("operation {operation} has no \"value\""))
            })
        };
        let path = field("path")?;
        match field("op")? {
            "add" => add(&mut result, path, value()?)?,
            "remove" => {
                remove(&mut result, path)?;
            }
            "replace" => {
                get(&result, path)?;
                if path.is_empty() {
                    result = value()?;
                } else {
                    remove(&mut result, path)?;
                    add(&mut result, path, value()?)?;
                }
            }
            "move" => {
                let from = field("from")?;
                if path.starts_with(&format!("{from}/")) {
                    return Err(JsonPatchError::DoesNotApply(format!(
                        "cannot move {from:?} into its own child {path:?}"
                    )));
                }
                let moved = remove(&mut result, from)?;
                add(&mut result, path, moved)?;
            }
            "copy" => {
                let copied = get(&result, field("from")?)?.clone();
                add(&mut result, path, copied)?;
            }
            "test" => {
                if *get(&result, path)? != value()? {
                    return Err(JsonPatchError::DoesNotApply(format!(
                        "testing value {path} failed: test failed"
                    )));
                }
            }
            other => {
                return Err(JsonPatchError::Malformed(format!(
                    "unknown operation {other:?}"
                )));
            }
        }
    }
    *doc = result;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_follows_rfc_7386() {
        for (target, patch, expected) in [
            (json!({"a": "b"}), json!({"a": "c"}), json!({"a": "c"})),
            (
                json!({"a": "b"}),
                json!({"b": "c"}),
                json!({"a": "b", "b": "c"}),
            ),
            (json!({"a": "b"}), json!({"a": null}), json!({})),
            (
                json!({"a": {"b": "c"}}),
                json!({"a": {"b": "d", "c": null}}),
                json!({"a": {"b": "d"}}),
            ),
            (
                json!({"a": [{"b": "c"}]}),
                json!({"a": [1]}),
                json!({"a": [1]}),
            ),
            (json!(["a", "b"]), json!({"a": "c"}), json!({"a": "c"})),
            (
                json!({"e": null}),
                json!({"a": 1}),
                json!({"e": null, "a": 1}),
            ),
        ] {
            let mut merged = target.clone();
            merge_patch(&mut merged, &patch);
            assert_eq!(merged, expected, "{target} + {patch}");
        }
    }

    fn check(doc: Value, patch: Value, expected: Result<Value, &str>) {
        let mut patched = doc.clone();
        let result = json_patch(&mut patched, &patch);
        match expected {
            Ok(expected) => {
                assert_eq!(result, Ok(()), "{patch}");
                assert_eq!(patched, expected, "{patch}");
            }
            Err(kind) => {
                let err = result.expect_err(&patch.to_string());
                let got = match err {
                    JsonPatchError::Malformed(_) => "malformed",
                    JsonPatchError::DoesNotApply(_) => "does not apply",
                };
                assert_eq!(got, kind, "{patch}: {err}");
                assert_eq!(patched, doc, "a failed patch changes nothing");
            }
        }
    }

    #[test]
    fn json_patch_follows_rfc_6902() {
        let doc =
            json!({"metadata": {"labels": {"a": "1"}}, "list": [1, 2, 3], "a/b": 0, "m~n": 1});
        check(
            doc.clone(),
            json!([{"op": "add", "path": "/metadata/labels/b", "value": "2"}]),
            Ok(
                json!({"metadata": {"labels": {"a": "1", "b": "2"}}, "list": [1, 2, 3], "a/b": 0, "m~n": 1}),
            ),
        );
        check(
            json!({"list": [1, 3]}),
            json!([{"op": "add", "path": "/list/1", "value": 2}]),
            Ok(json!({"list": [1, 2, 3]})),
        );
        check(
            json!({"list": [1]}),
            json!([{"op": "add", "path": "/list/-", "value": 2}]),
            Ok(json!({"list": [1, 2]})),
        );
        check(
            json!({"list": [1, 2]}),
            json!([{"op": "remove", "path": "/list/0"}]),
            Ok(json!({"list": [2]})),
        );
        check(
            json!({"a/b": 0, "m~n": 1}),
            json!([{"op": "replace", "path": "/a~1b", "value": 5}, {"op": "remove", "path": "/m~0n"}]),
            Ok(json!({"a/b": 5})),
        );
        check(
            json!({"a": {"b": 1}}),
            json!([{"op": "move", "from": "/a/b", "path": "/c"}]),
            Ok(json!({"a": {}, "c": 1})),
        );
        check(
            json!({"a": [1]}),
            json!([{"op": "copy", "from": "/a", "path": "/b"}]),
            Ok(json!({"a": [1], "b": [1]})),
        );
        check(
            json!({"a": 1}),
            json!([{"op": "test", "path": "/a", "value": 1}, {"op": "replace", "path": "/a", "value": 2}]),
            Ok(json!({"a": 2})),
        );
        check(
            json!({"a": 1}),
            json!([{"op": "replace", "path": "/a", "value": 2}, {"op": "test", "path": "/a", "value": 1}]),
            Err("does not apply"),
        );
        check(
            json!({"a": 1}),
            json!([{"op": "remove", "path": "/b"}]),
            Err("does not apply"),
        );
        check(
            json!({"a": 1}),
            json!([{"op": "replace", "path": "/b", "value": 1}]),
            Err("does not apply"),
        );
        check(
            json!({"l": [1]}),
            json!([{"op": "add", "path": "/l/5", "value": 1}]),
            Err("does not apply"),
        );
        check(
            json!({"l": [1]}),
            json!([{"op": "add", "path": "/l/01", "value": 1}]),
            Err("does not apply"),
        );
        check(
            json!({"a": {}}),
            json!([{"op": "move", "from": "/a", "path": "/a/b"}]),
            Err("does not apply"),
        );
        check(json!({"a": 1}), json!({"op": "add"}), Err("malformed"));
        check(
            json!({"a": 1}),
            json!([{"op": "frobnicate", "path": "/a"}]),
            Err("malformed"),
        );
        check(
            json!({"a": 1}),
            json!([{"op": "add", "path": "a", "value": 1}]),
            Err("malformed"),
        );
        check(
            json!({"a": 1}),
            json!([{"op": "add", "path": "/b"}]),
            Err("malformed"),
        );
    }
}
