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

/// How a list field merges in a strategic merge patch, as upstream's
/// `patchStrategy` and `patchMergeKey` say for the built-in kinds. The API
/// is JSON without schemas here, so the rule is found from the field name
/// (and, for `ports`, from the elements: a container's merge on
/// `containerPort`, a Service's on `port`).
fn list_strategy(field: &str, elements: &[&Value]) -> ListStrategy {
    let key = match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "volumes"
        | "env"
        | "imagePullSecrets"
        | "secrets"
        | "resourceClaims" => "name",
        "volumeMounts" => "mountPath",
        "volumeDevices" => "devicePath",
        "conditions" | "addresses" => "type",
        "ownerReferences" => "uid",
        "hostAliases" => "ip",
        "topologySpreadConstraints" => "topologyKey",
        "ports" => {
            if elements.iter().any(|e| e.get("containerPort").is_some()) {
                "containerPort"
            } else {
                "port"
            }
        }
        "finalizers" => return ListStrategy::MergePrimitives,
        _ => return ListStrategy::Replace,
    };
    ListStrategy::MergeByKey(key)
}

enum ListStrategy {
    Replace,
    MergePrimitives,
    MergeByKey(&'static str),
}

const DIRECTIVE: &str = "$patch";
const RETAIN_KEYS: &str = "$retainKeys";
const SET_ORDER: &str = "$setElementOrder/";
const DELETE_PRIMITIVES: &str = "$deleteFromPrimitiveList/";

/// Applies a strategic merge patch (what `kubectl apply`, `edit`, `patch`
/// and `scale` send) to `target`.
pub fn strategic_merge(target: &mut Value, patch: &Value) -> Result<(), JsonPatchError> {
    let mut result = target.clone();
    merge_map(&mut result, patch)?;
    *target = result;
    Ok(())
}

fn merge_map(target: &mut Value, patch: &Value) -> Result<(), JsonPatchError> {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return Ok(());
    };
    match patch.get(DIRECTIVE).and_then(Value::as_str) {
        Some("replace") => {
            let mut replaced = patch.clone();
            replaced.remove(DIRECTIVE);
            *target = Value::Object(replaced);
            return Ok(());
        }
        Some("delete") => {
            *target = Value::Null;
            return Ok(());
        }
        Some("merge") | None => {}
        Some(other) => {
            return Err(JsonPatchError::Malformed(format!(
                "unknown patch type {other:?}"
            )));
        }
    }
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let object = target.as_object_mut().expect("made an object above");
    for (key, value) in patch {
        if key == DIRECTIVE || key == RETAIN_KEYS || key.starts_with(SET_ORDER) {
            continue;
        }
        if let Some(field) = key.strip_prefix(DELETE_PRIMITIVES) {
            let gone = value.as_array().cloned().unwrap_or_default();
            if let Some(Value::Array(list)) = object.get_mut(field) {
                list.retain(|item| !gone.contains(item));
            }
            continue;
        }
        if value.is_null() {
            object.remove(key);
            continue;
        }
        match value {
            Value::Object(_) => {
                let slot = object.entry(key.clone()).or_insert(Value::Null);
                merge_map(slot, value)?;
                if slot.is_null() {
                    object.remove(key);
                }
            }
            Value::Array(items) => {
                let original = object.remove(key).unwrap_or(Value::Array(Vec::new()));
                let merged = merge_list(key, original, items)?;
                object.insert(key.clone(), merged);
            }
            _ => {
                object.insert(key.clone(), value.clone());
            }
        }
    }
    // $setElementOrder: the patch names the order of the whole list.
    for (key, order) in patch {
        let Some(field) = key.strip_prefix(SET_ORDER) else {
            continue;
        };
        let (Some(Value::Array(list)), Some(order)) = (object.get_mut(field), order.as_array())
        else {
            continue;
        };
        let elements: Vec<&Value> = order.iter().collect();
        let position = |item: &Value| -> Option<usize> {
            match list_strategy(field, &elements) {
                ListStrategy::MergeByKey(merge_key) => order.iter().position(|o| {
                    o.get(merge_key).is_some() && o.get(merge_key) == item.get(merge_key)
                }),
                _ => order.iter().position(|o| o == item),
            }
        };
        let mut keyed: Vec<(usize, Value)> = Vec::new();
        let mut rest = Vec::new();
        for item in list.drain(..) {
            match position(&item) {
                Some(i) => keyed.push((i, item)),
                None => rest.push(item),
            }
        }
        keyed.sort_by_key(|(i, _)| *i);
        list.extend(keyed.into_iter().map(|(_, item)| item));
        list.extend(rest);
    }
    // $retainKeys: keys the patch does not name are cleared.
    if let Some(retain) = patch.get(RETAIN_KEYS).and_then(Value::as_array) {
        object.retain(|key, _| retain.iter().any(|r| r.as_str() == Some(key)));
    }
    Ok(())
}

fn merge_list(field: &str, original: Value, patch: &[Value]) -> Result<Value, JsonPatchError> {
    // A `{"$patch": "replace"}` element replaces the whole list.
    if patch
        .iter()
        .any(|item| item.get(DIRECTIVE).and_then(Value::as_str) == Some("replace"))
    {
        let kept: Vec<Value> = patch
            .iter()
            .filter(|item| item.get(DIRECTIVE).is_none())
            .cloned()
            .collect();
        return Ok(Value::Array(kept));
    }
    let mut list = match original {
        Value::Array(list) => list,
        _ => Vec::new(),
    };
    let elements: Vec<&Value> = list.iter().chain(patch.iter()).collect();
    match list_strategy(field, &elements) {
        ListStrategy::Replace => Ok(Value::Array(patch.to_vec())),
        ListStrategy::MergePrimitives => {
            for item in patch {
                if !list.contains(item) {
                    list.push(item.clone());
                }
            }
            Ok(Value::Array(list))
        }
        ListStrategy::MergeByKey(merge_key) => {
            for item in patch {
                let Some(key) = item.get(merge_key) else {
                    return Err(JsonPatchError::DoesNotApply(format!(
                        "an element of {field} has no merge key {merge_key:?}: {item}"
                    )));
                };
                let existing = list.iter().position(|e| e.get(merge_key) == Some(key));
                let delete = item.get(DIRECTIVE).and_then(Value::as_str) == Some("delete");
                match (existing, delete) {
                    (Some(i), true) => {
                        list.remove(i);
                    }
                    (None, true) => {}
                    (Some(i), false) => merge_map(&mut list[i], item)?,
                    (None, false) => {
                        let mut added = Value::Object(Map::new());
                        merge_map(&mut added, item)?;
                        list.push(added);
                    }
                }
            }
            Ok(Value::Array(list))
        }
    }
}

#[cfg(test)]
mod strategic_tests {
    use super::*;
    use serde_json::json;

    fn check(original: Value, patch: Value, expected: Value) {
        let mut merged = original.clone();
        strategic_merge(&mut merged, &patch).unwrap();
        assert_eq!(merged, expected, "{original} + {patch}");
    }

    #[test]
    fn maps_merge_and_null_deletes() {
        check(
            json!({"data": {"a": "1", "b": "2"}}),
            json!({"data": {"a": "3", "b": null}}),
            json!({"data": {"a": "3"}}),
        );
        check(
            json!({"spec": {"x": {"y": 1}}}),
            json!({"spec": {"x": {"$patch": "replace", "z": 2}}}),
            json!({"spec": {"x": {"z": 2}}}),
        );
        check(
            json!({"spec": {"x": {"y": 1}, "k": 1}}),
            json!({"spec": {"x": {"$patch": "delete"}}}),
            json!({"spec": {"k": 1}}),
        );
    }

    #[test]
    fn containers_merge_by_name_as_kubectl_apply_sends_them() {
        let original = json!({"spec": {"containers": [
            {"name": "app", "image": "nginx:1.30", "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "1"}]},
            {"name": "sidecar", "image": "busybox"},
        ]}});
        let patch = json!({"spec": {
            "$setElementOrder/containers": [{"name": "app"}, {"name": "logger"}],
            "containers": [
                {"env": [{"name": "B", "value": "2"}], "image": "nginx:1.31", "name": "app"},
                {"$patch": "delete", "name": "sidecar"},
                {"name": "logger", "image": "busybox"},
            ],
        }});
        check(
            original,
            patch,
            json!({"spec": {"containers": [
                {"name": "app", "image": "nginx:1.31", "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]},
                {"name": "logger", "image": "busybox"},
            ]}}),
        );
    }

    #[test]
    fn ports_merge_on_their_own_keys_and_other_lists_are_replaced() {
        check(
            json!({"spec": {"ports": [{"port": 80, "name": "http"}, {"port": 443}]}}),
            json!({"spec": {"ports": [{"port": 80, "targetPort": 8080}]}}),
            json!({"spec": {"ports": [{"port": 80, "name": "http", "targetPort": 8080}, {"port": 443}]}}),
        );
        check(
            json!({"c": {"ports": [{"containerPort": 80}], "args": ["a", "b"]}}),
            json!({"c": {"ports": [{"containerPort": 81}], "args": ["c"]}}),
            json!({"c": {"ports": [{"containerPort": 80}, {"containerPort": 81}], "args": ["c"]}}),
        );
    }

    #[test]
    fn finalizers_merge_and_directives_delete_and_retain() {
        check(
            json!({"metadata": {"finalizers": ["a", "b"]}}),
            json!({"metadata": {"finalizers": ["c"], "$deleteFromPrimitiveList/finalizers": ["a"]}}),
            json!({"metadata": {"finalizers": ["b", "c"]}}),
        );
        check(
            json!({"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}}}),
            json!({"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}),
            json!({"strategy": {"type": "Recreate"}}),
        );
        check(
            json!({"volumes": [{"name": "a", "emptyDir": {}}]}),
            json!({"volumes": [{"$patch": "replace"}, {"name": "b", "emptyDir": {}}]}),
            json!({"volumes": [{"name": "b", "emptyDir": {}}]}),
        );
        let mut bad = json!({"containers": []});
        assert!(strategic_merge(&mut bad, &json!({"containers": [{"image": "x"}]})).is_err());
    }
}
