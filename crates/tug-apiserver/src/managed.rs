//! Field management: who owns which field of an object (`managedFields`),
//! and server-side apply over it. Pure functions over JSON; the REST layer
//! decides when they run and turns their errors into `Status`es.
//!
//! The rules follow upstream's structured-merge-diff as the API server
//! uses it (docs/notes/server-side-apply.md): a field set is a trie in the
//! shape of `fieldsV1`; the schema that says how lists and maps merge is a
//! table of the built-in kinds' list types, keyed by field name.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

/// A set of field paths, as a trie in the shape of `fieldsV1`: a child is
/// `f:<field>`, `k:<key fields as JSON>` (an item of a keyed list) or
/// `v:<value as JSON>` (an item of a set).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct FieldSet {
    /// Whether the node this set is rooted at is itself a member.
    own: bool,
    /// Sorted by element; a few entries each, so a vector beats a tree.
    children: Vec<(String, FieldSet)>,
}

impl FieldSet {
    pub(crate) fn from_fields_v1(value: &Value) -> FieldSet {
        let mut set = FieldSet::default();
        if let Value::Object(map) = value {
            for (key, child) in map {
                if key == "." {
                    set.own = true;
                    continue;
                }
                let mut node = FieldSet::from_fields_v1(child);
                if child.as_object().is_none_or(Map::is_empty) {
                    node.own = true;
                }
                set.put(key.clone(), node);
            }
        }
        set
    }

    pub(crate) fn to_fields_v1(&self) -> Value {
        let mut map = Map::new();
        if self.own && !self.children.is_empty() {
            map.insert(".".into(), json!({}));
        }
        for (key, child) in &self.children {
            map.insert(key.clone(), child.to_fields_v1());
        }
        Value::Object(map)
    }

    pub(crate) fn is_empty(&self) -> bool {
        !self.own && self.children.is_empty()
    }

    fn get(&self, element: &str) -> Option<&FieldSet> {
        self.children
            .binary_search_by(|(key, _)| key.as_str().cmp(element))
            .ok()
            .map(|i| &self.children[i].1)
    }

    fn child(&mut self, element: &str) -> &mut FieldSet {
        let index = match self
            .children
            .binary_search_by(|(key, _)| key.as_str().cmp(element))
        {
            Ok(i) => i,
            Err(i) => {
                self.children
                    .insert(i, (element.to_string(), FieldSet::default()));
                i
            }
        };
        &mut self.children[index].1
    }

    /// Adds `set` as the child `element`, merging with one already there.
    fn put(&mut self, element: String, set: FieldSet) {
        match self
            .children
            .binary_search_by(|(key, _)| key.as_str().cmp(&element))
        {
            Ok(i) => self.children[i].1.absorb(set),
            Err(i) => self.children.insert(i, (element, set)),
        }
    }

    fn insert(&mut self, path: &[String]) {
        match path.split_first() {
            None => self.own = true,
            Some((first, rest)) => self.child(first).insert(rest),
        }
    }

    /// Adds `other`'s members under `path`.
    fn graft(&mut self, path: &[String], other: FieldSet) {
        match path.split_first() {
            None => self.absorb(other),
            Some((first, rest)) => self.child(first).graft(rest, other),
        }
    }

    /// Adds `other`'s members, moving its nodes rather than copying them.
    fn absorb(&mut self, other: FieldSet) {
        self.own |= other.own;
        for (key, child) in other.children {
            self.put(key, child);
        }
    }

    pub(crate) fn union(&self, other: &FieldSet) -> FieldSet {
        let mut set = self.clone();
        set.absorb(other.clone());
        set
    }

    pub(crate) fn difference(&self, other: &FieldSet) -> FieldSet {
        let empty = FieldSet::default();
        let mut set = FieldSet {
            own: self.own && !other.own,
            children: Vec::new(),
        };
        for (key, child) in &self.children {
            let left = child.difference(other.get(key).unwrap_or(&empty));
            if !left.is_empty() {
                set.children.push((key.clone(), left));
            }
        }
        set
    }

    pub(crate) fn intersection(&self, other: &FieldSet) -> FieldSet {
        let mut set = FieldSet {
            own: self.own && other.own,
            children: Vec::new(),
        };
        for (key, child) in &self.children {
            if let Some(theirs) = other.get(key) {
                let both = child.intersection(theirs);
                if !both.is_empty() {
                    set.children.push((key.clone(), both));
                }
            }
        }
        set
    }

    /// Whether any member lies at or under `path`.
    fn holds_under(&self, path: &[String]) -> bool {
        match path.split_first() {
            None => !self.is_empty(),
            Some((first, rest)) => self.get(first).is_some_and(|child| child.holds_under(rest)),
        }
    }

    /// Every member, as a path of elements, shallow before deep.
    pub(crate) fn paths(&self) -> Vec<Vec<String>> {
        let mut out = Vec::new();
        let mut path = Vec::new();
        self.collect(&mut path, &mut out);
        out
    }

    fn collect(&self, path: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
        if self.own {
            out.push(path.clone());
        }
        for (key, child) in &self.children {
            path.push(key.clone());
            child.collect(path, out);
            path.pop();
        }
    }
}

/// A path as upstream prints it in conflicts:
/// `.spec.template.spec.containers[name="nginx"].image`.
pub(crate) fn path_string(path: &[String]) -> String {
    let mut out = String::new();
    for element in path {
        if let Some(field) = element.strip_prefix("f:") {
            out.push('.');
            out.push_str(field);
        } else if let Some(key) = element.strip_prefix("k:") {
            let fields: Map<String, Value> = serde_json::from_str(key).unwrap_or_default();
            let parts: Vec<String> = fields.iter().map(|(k, v)| format!("{k}={v}")).collect();
            out.push_str(&format!("[{}]", parts.join(",")));
        } else if let Some(value) = element.strip_prefix("v:") {
            out.push_str(&format!("[={value}]"));
        } else if let Some(index) = element.strip_prefix("i:") {
            out.push_str(&format!("[{index}]"));
        }
    }
    out
}

// ---------------------------------------------------------------------------
// The schema: how each list and map of a kind merges.

/// The kind of object whose fields are walked; custom resources have no
/// list-type table, so their lists are atomic.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Schema<'a> {
    pub(crate) kind: &'a str,
    pub(crate) custom: bool,
    /// A custom resource's structural schema: its `x-kubernetes-list-type`,
    /// `x-kubernetes-list-map-keys` and `x-kubernetes-map-type` decide.
    pub(crate) crd: Option<&'a Value>,
}

enum Shape<'a> {
    /// A scalar, or a list, map or struct replaced whole.
    Atomic,
    /// A struct or map merged key by key.
    Granular,
    /// A list whose items are identified by these fields (with defaults),
    /// in name order.
    Keyed(Vec<(&'a str, Option<&'static str>)>),
    /// A list of distinct scalars.
    Set,
}

const BY_NAME: &[(&str, Option<&str>)] = &[("name", None)];
const CONTAINER_PORT: &[(&str, Option<&str>)] =
    &[("containerPort", None), ("protocol", Some("TCP"))];
const SERVICE_PORT: &[(&str, Option<&str>)] = &[("port", None), ("protocol", Some("TCP"))];
const BY_TYPE: &[(&str, Option<&str>)] = &[("type", None)];
const BY_IP: &[(&str, Option<&str>)] = &[("ip", None)];
const BY_UID: &[(&str, Option<&str>)] = &[("uid", None)];
const SPREAD: &[(&str, Option<&str>)] = &[("topologyKey", None), ("whenUnsatisfiable", None)];

/// Structs and maps the built-in types mark atomic, found by field name.
const ATOMIC_OBJECTS: &[&str] = &[
    "selector",
    "labelSelector",
    "namespaceSelector",
    "podSelector",
    "nodeSelector",
    "configMapKeyRef",
    "secretKeyRef",
    "fieldRef",
    "resourceFieldRef",
    "involvedObject",
    "regarding",
    "related",
    "claimRef",
    "targetRef",
    "roleRef",
    "dataSource",
    "dataSourceRef",
    "requiredDuringSchedulingIgnoredDuringExecution",
];

const CONTAINER_LISTS: &[&str] = &["containers", "initContainers", "ephemeralContainers"];

impl<'a> Schema<'a> {
    /// The structural schema of the node at `fields`, for custom resources.
    fn crd_node(&self, fields: &[&str]) -> Option<&'a Value> {
        let mut node = self.crd?;
        for field in fields {
            if node["type"] == "array" {
                node = node.get("items")?;
            }
            node = match node.get("properties").and_then(|p| p.get(*field)) {
                Some(property) => property,
                None => node.get("additionalProperties").filter(|a| a.is_object())?,
            };
        }
        Some(node)
    }

    fn custom_shape(&self, fields: &[&str], value: &Value) -> Shape<'a> {
        let node = self.crd_node(fields);
        let extension = |name: &str| node.and_then(|n| n.get(name)).and_then(Value::as_str);
        match value {
            Value::Array(_) => match extension("x-kubernetes-list-type") {
                Some("set") => Shape::Set,
                Some("map") => {
                    let mut keys: Vec<(&'a str, Option<&'static str>)> = node
                        .and_then(|n| n["x-kubernetes-list-map-keys"].as_array())
                        .into_iter()
                        .flatten()
                        .filter_map(Value::as_str)
                        .map(|k| (k, None))
                        .collect();
                    keys.sort();
                    if keys.is_empty() {
                        Shape::Atomic
                    } else {
                        Shape::Keyed(keys)
                    }
                }
                _ => Shape::Atomic,
            },
            Value::Object(_) if extension("x-kubernetes-map-type") == Some("atomic") => {
                Shape::Atomic
            }
            Value::Object(_) => Shape::Granular,
            _ => Shape::Atomic,
        }
    }

    /// How the node at `fields` (the field names from the root; list items
    /// leave no name) holding `value` merges.
    fn shape(&self, fields: &[&str], value: &Value) -> Shape<'a> {
        let last = fields.last().copied().unwrap_or("");
        let parent = fields.len().checked_sub(2).map(|i| fields[i]).unwrap_or("");
        if self.custom && fields.first() != Some(&"metadata") {
            return self.custom_shape(fields, value);
        }
        let keyed = |keys: &[(&'static str, Option<&'static str>)]| Shape::Keyed(keys.to_vec());
        match value {
            Value::Array(_) => match last {
                "containers"
                | "initContainers"
                | "ephemeralContainers"
                | "volumes"
                | "imagePullSecrets"
                | "resourceClaims"
                | "schedulingGates" => keyed(BY_NAME),
                "env" if CONTAINER_LISTS.contains(&parent) => keyed(BY_NAME),
                "claims" if parent == "resources" => keyed(BY_NAME),
                "secrets" if self.kind == "ServiceAccount" && fields.len() == 1 => keyed(BY_NAME),
                "ports" if CONTAINER_LISTS.contains(&parent) => keyed(CONTAINER_PORT),
                "ports" if self.kind == "Service" && fields == ["spec", "ports"] => {
                    keyed(SERVICE_PORT)
                }
                "volumeMounts" => keyed(&[("mountPath", None)]),
                "volumeDevices" => keyed(&[("devicePath", None)]),
                "hostAliases" | "podIPs" | "hostIPs" => keyed(BY_IP),
                "topologySpreadConstraints" => keyed(SPREAD),
                "conditions" if fields.first() == Some(&"status") => keyed(BY_TYPE),
                "addresses" if self.kind == "Node" && fields == ["status", "addresses"] => {
                    keyed(BY_TYPE)
                }
                "ownerReferences" if fields == ["metadata", "ownerReferences"] => keyed(BY_UID),
                "finalizers" if fields == ["metadata", "finalizers"] => Shape::Set,
                "podCIDRs" if self.kind == "Node" => Shape::Set,
                _ => Shape::Atomic,
            },
            Value::Object(_) if ATOMIC_OBJECTS.contains(&last) => Shape::Atomic,
            Value::Object(_) => Shape::Granular,
            _ => Shape::Atomic,
        }
    }

    /// Whether the items of the keyed list at `fields` are replaced whole.
    fn atomic_items(fields: &[&str]) -> bool {
        fields == ["metadata", "ownerReferences"]
    }
}

/// The path element of an item of a keyed list or set.
fn item_element(fields: &[&str], shape: &Shape<'_>, item: &Value) -> Result<String, String> {
    match shape {
        Shape::Set => Ok(format!("v:{item}")),
        Shape::Keyed(keys) => {
            let mut parts = Vec::new();
            for (key, default) in keys {
                let value = match item.get(*key) {
                    Some(value) if !value.is_null() => value.clone(),
                    _ => match default {
                        Some(default) => json!(default),
                        None => {
                            return Err(format!(
                                ".{}: associative list with keys has an element that omits key field {key:?} (and doesn't have default value)",
                                fields.join(".")
                            ));
                        }
                    },
                };
                parts.push(format!("{}:{value}", json!(key)));
            }
            // Key fields are few and already in name order in every table entry.
            Ok(format!("k:{{{}}}", parts.join(",")))
        }
        _ => unreachable!("only lists of items have item elements"),
    }
}

/// The items of a keyed list or set, by element; duplicates are refused.
fn items<'v>(
    fields: &[&str],
    shape: &Shape<'_>,
    list: &'v [Value],
) -> Result<Vec<(String, &'v Value)>, String> {
    let mut out: Vec<(String, &Value)> = Vec::with_capacity(list.len());
    for item in list {
        let element = item_element(fields, shape, item)?;
        if out.iter().any(|(e, _)| *e == element) {
            if matches!(shape, Shape::Set) {
                continue;
            }
            return Err(format!(
                ".{}: duplicate entries for key {}",
                fields.join("."),
                path_string(std::slice::from_ref(&element))
            ));
        }
        out.push((element, item));
    }
    Ok(out)
}

// ---------------------------------------------------------------------------
// Field sets of objects, and differences between objects.

/// The fields `value` sets, as an applier comes to own them.
pub(crate) fn field_set(schema: Schema<'_>, value: &Value) -> Result<FieldSet, String> {
    let mut set = FieldSet::default();
    let mut fields = Vec::new();
    walk(schema, &mut fields, value, &mut set)?;
    set.own = false;
    Ok(set)
}

fn walk<'v>(
    schema: Schema<'_>,
    fields: &mut Vec<&'v str>,
    value: &'v Value,
    node: &mut FieldSet,
) -> Result<(), String> {
    let shape = schema.shape(fields, value);
    match (&shape, value) {
        (Shape::Granular, Value::Object(_)) => walk_item(schema, fields, value, node)?,
        (Shape::Keyed(_) | Shape::Set, Value::Array(list)) => {
            let atomic_items = Schema::atomic_items(fields);
            for (element, item) in items(fields, &shape, list)? {
                let mut sub = FieldSet {
                    own: true,
                    ..FieldSet::default()
                };
                if matches!(shape, Shape::Keyed(_)) && !atomic_items {
                    walk_item(schema, fields, item, &mut sub)?;
                }
                node.put(element, sub);
            }
        }
        _ => node.own = true,
    }
    Ok(())
}

/// The fields of a struct or map merged key by key (an item of a keyed
/// list is one): its null or empty children are members themselves.
fn walk_item<'v>(
    schema: Schema<'_>,
    fields: &mut Vec<&'v str>,
    item: &'v Value,
    node: &mut FieldSet,
) -> Result<(), String> {
    if let Value::Object(map) = item {
        for (key, child) in map {
            let mut sub = FieldSet::default();
            if child.is_null() || child.as_object().is_some_and(Map::is_empty) {
                sub.own = true;
            } else {
                fields.push(key);
                walk(schema, fields, child, &mut sub)?;
                fields.pop();
            }
            if !sub.is_empty() {
                node.put(format!("f:{key}"), sub);
            }
        }
    }
    Ok(())
}

/// What changed from one object to another, by path.
#[derive(Debug, Default)]
pub(crate) struct Diff {
    pub(crate) added: FieldSet,
    pub(crate) modified: FieldSet,
    pub(crate) removed: FieldSet,
}

impl Diff {
    fn is_empty(&self) -> bool {
        self.added.is_empty() && self.modified.is_empty() && self.removed.is_empty()
    }

    fn changed(&self) -> FieldSet {
        self.added.union(&self.modified).union(&self.removed)
    }
}

pub(crate) fn diff(schema: Schema<'_>, old: &Value, new: &Value) -> Result<Diff, String> {
    let mut out = Diff::default();
    let mut fields = Vec::new();
    let mut path = Vec::new();
    compare(
        schema,
        &mut fields,
        &mut path,
        Some(old),
        Some(new),
        &mut out,
    )?;
    out.added.own = false;
    out.modified.own = false;
    out.removed.own = false;
    Ok(out)
}

/// Everything under a node that appears or goes: the node and its fields.
fn whole<'v>(schema: Schema<'_>, fields: &[&'v str], value: &'v Value) -> Result<FieldSet, String> {
    let mut set = FieldSet::default();
    walk(schema, &mut fields.to_vec(), value, &mut set)?;
    // Upstream's keyed lists and sets are never members themselves.
    set.own = !matches!(schema.shape(fields, value), Shape::Keyed(_) | Shape::Set);
    Ok(set)
}

fn compare<'v>(
    schema: Schema<'_>,
    fields: &mut Vec<&'v str>,
    path: &mut Vec<String>,
    old: Option<&'v Value>,
    new: Option<&'v Value>,
    out: &mut Diff,
) -> Result<(), String> {
    match (old, new) {
        (None, None) => {}
        (None, Some(new)) => {
            let set = whole(schema, fields, new)?;
            out.added.graft(path, set);
        }
        (Some(old), None) => {
            let set = whole(schema, fields, old)?;
            out.removed.graft(path, set);
        }
        (Some(old), Some(new)) => {
            let shape = schema.shape(fields, new);
            match (&shape, old, new) {
                (Shape::Granular, Value::Object(_), Value::Object(_)) => {
                    compare_item(schema, fields, path, old, new, out)?;
                }
                (Shape::Keyed(_) | Shape::Set, Value::Array(a), Value::Array(b)) => {
                    let before = items(fields, &shape, a)?;
                    let after = items(fields, &shape, b)?;
                    let atomic_items = matches!(shape, Shape::Set) || Schema::atomic_items(fields);
                    for (element, item) in &before {
                        let now = after.iter().find(|(e, _)| e == element).map(|(_, v)| *v);
                        path.push(element.clone());
                        match now {
                            None => {
                                let mut gone = FieldSet::default();
                                if !atomic_items {
                                    walk_item(schema, fields, item, &mut gone)?;
                                }
                                gone.own = true;
                                out.removed.graft(path, gone);
                            }
                            Some(now) if atomic_items => {
                                if now != *item {
                                    out.modified.insert(path);
                                }
                            }
                            Some(now) => compare_item(schema, fields, path, item, now, out)?,
                        }
                        path.pop();
                    }
                    for (element, item) in &after {
                        if before.iter().any(|(e, _)| e == element) {
                            continue;
                        }
                        path.push(element.clone());
                        let mut s = FieldSet::default();
                        if !atomic_items {
                            walk_item(schema, fields, item, &mut s)?;
                        }
                        s.own = true;
                        out.added.graft(path, s);
                        path.pop();
                    }
                }
                _ => {
                    if old != new {
                        out.modified.insert(path);
                    }
                }
            }
        }
    }
    Ok(())
}

/// Compares two structs or maps merged key by key (or whatever two values
/// stand where one is expected).
fn compare_item<'v>(
    schema: Schema<'_>,
    fields: &mut Vec<&'v str>,
    path: &mut Vec<String>,
    old: &'v Value,
    new: &'v Value,
    out: &mut Diff,
) -> Result<(), String> {
    let (Value::Object(a), Value::Object(b)) = (old, new) else {
        if old != new {
            out.modified.insert(path);
        }
        return Ok(());
    };
    let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    for key in keys {
        fields.push(key);
        path.push(format!("f:{key}"));
        compare(schema, fields, path, a.get(key), b.get(key), out)?;
        path.pop();
        fields.pop();
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Merging an applied configuration into a live object.

pub(crate) fn merge(schema: Schema<'_>, live: &Value, config: &Value) -> Result<Value, String> {
    let mut fields = Vec::new();
    merge_at(schema, &mut fields, live, config)
}

fn merge_at<'v>(
    schema: Schema<'_>,
    fields: &mut Vec<&'v str>,
    live: &'v Value,
    config: &'v Value,
) -> Result<Value, String> {
    let shape = schema.shape(fields, config);
    match (&shape, live, config) {
        (Shape::Granular, Value::Object(_), Value::Object(_)) => {
            merge_item(schema, fields, live, config)
        }
        (Shape::Keyed(_) | Shape::Set, Value::Array(live), Value::Array(config)) => {
            let before = items(fields, &shape, live)?;
            let applied = items(fields, &shape, config)?;
            let granular_items = matches!(shape, Shape::Keyed(_)) && !Schema::atomic_items(fields);
            let mut out = Vec::with_capacity(before.len() + applied.len());
            let mut emitted = vec![false; applied.len()];
            let mut next = 0;
            let merged_item = |fields: &mut Vec<&'v str>, index: usize| -> Result<Value, String> {
                let (element, item) = &applied[index];
                let old = before.iter().find(|(e, _)| e == element).map(|(_, v)| *v);
                match old {
                    Some(old) if granular_items => merge_item(schema, fields, old, item),
                    _ => Ok((*item).clone()),
                }
            };
            for (element, item) in &before {
                match applied.iter().position(|(e, _)| e == element) {
                    None => out.push((*item).clone()),
                    Some(index) => {
                        // Config items keep their order; live ones stay in place.
                        while next <= index {
                            if !emitted[next] {
                                out.push(merged_item(fields, next)?);
                                emitted[next] = true;
                            }
                            next += 1;
                        }
                    }
                }
            }
            for (index, done) in emitted.iter().enumerate() {
                if !done {
                    out.push(merged_item(fields, index)?);
                }
            }
            Ok(Value::Array(out))
        }
        _ => Ok(config.clone()),
    }
}

fn merge_item<'v>(
    schema: Schema<'_>,
    fields: &mut Vec<&'v str>,
    live: &'v Value,
    config: &'v Value,
) -> Result<Value, String> {
    let (Value::Object(live), Value::Object(config)) = (live, config) else {
        return Ok(config.clone());
    };
    let mut out = live.clone();
    for (key, value) in config {
        if value.is_null() {
            out.remove(key);
            continue;
        }
        fields.push(key);
        let merged = merge_at(schema, fields, live.get(key).unwrap_or(&Value::Null), value)?;
        fields.pop();
        out.insert(key.clone(), merged);
    }
    Ok(Value::Object(out))
}

/// Removes the node at `path` (and all under it) from `value`.
fn remove_path(schema: Schema<'_>, value: &mut Value, path: &[String]) {
    let mut fields: Vec<String> = Vec::new();
    let mut here = value;
    for (i, element) in path.iter().enumerate() {
        let last = i + 1 == path.len();
        if let Some(field) = element.strip_prefix("f:") {
            let Value::Object(map) = here else { return };
            if last {
                map.remove(field);
                return;
            }
            let Some(next) = map.get_mut(field) else {
                return;
            };
            fields.push(field.to_string());
            here = next;
        } else {
            let Value::Array(list) = here else { return };
            let names: Vec<&str> = fields.iter().map(String::as_str).collect();
            let shape = schema.shape(&names, &Value::Array(Vec::new()));
            let position = list
                .iter()
                .position(|item| item_element(&names, &shape, item).as_deref() == Ok(element));
            let Some(position) = position else { return };
            if last {
                list.remove(position);
                return;
            }
            here = &mut list[position];
        }
    }
}

/// The value at `path` in `value`, if there is one.
fn lookup<'v>(schema: Schema<'_>, value: &'v Value, path: &[String]) -> Option<&'v Value> {
    let mut fields: Vec<&str> = Vec::new();
    let mut here = value;
    for element in path {
        if let Some(field) = element.strip_prefix("f:") {
            here = here.get(field)?;
            fields.push(field);
        } else {
            let list = here.as_array()?;
            let shape = schema.shape(&fields, here);
            here = list
                .iter()
                .find(|item| item_element(&fields, &shape, item).as_deref() == Ok(element))?;
        }
    }
    Some(here)
}

// ---------------------------------------------------------------------------
// managedFields entries.

/// One entry of `metadata.managedFields`.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Entry {
    pub(crate) manager: String,
    pub(crate) apply: bool,
    pub(crate) api_version: String,
    pub(crate) time: Option<String>,
    pub(crate) subresource: Option<String>,
    pub(crate) fields: FieldSet,
}

impl Entry {
    fn operation(&self) -> &'static str {
        if self.apply { "Apply" } else { "Update" }
    }

    /// Whether the two entries record the same writer; appliers are one
    /// writer whatever the version they applied.
    fn same_writer(&self, other: &Entry) -> bool {
        self.manager == other.manager
            && self.apply == other.apply
            && self.subresource == other.subresource
            && (self.apply || self.api_version == other.api_version)
    }

    /// How a conflict names this writer.
    fn describe(&self) -> String {
        let mut text = format!("{:?}", self.manager);
        if let Some(subresource) = &self.subresource {
            text.push_str(&format!(" with subresource {subresource:?}"));
        }
        if !self.apply {
            text.push_str(&format!(" using {}", self.api_version));
        }
        text
    }

    fn parse(value: &Value) -> Option<Entry> {
        let manager = value.get("manager")?.as_str()?.to_string();
        let apply = match value.get("operation")?.as_str()? {
            "Apply" => true,
            "Update" => false,
            _ => return None,
        };
        Some(Entry {
            manager,
            apply,
            api_version: value["apiVersion"].as_str().unwrap_or("").to_string(),
            time: value["time"].as_str().map(str::to_string),
            subresource: value["subresource"]
                .as_str()
                .filter(|s| !s.is_empty())
                .map(str::to_string),
            fields: FieldSet::from_fields_v1(&value["fieldsV1"]),
        })
    }

    fn render(&self) -> Value {
        let mut entry = json!({
            "manager": self.manager,
            "operation": self.operation(),
            "apiVersion": self.api_version,
        });
        if let Some(time) = &self.time {
            entry["time"] = json!(time);
        }
        entry["fieldsType"] = json!("FieldsV1");
        entry["fieldsV1"] = self.fields.to_fields_v1();
        if let Some(subresource) = &self.subresource {
            entry["subresource"] = json!(subresource);
        }
        entry
    }
}

/// The entries of an object's managedFields (malformed ones are dropped).
pub(crate) fn entries(object: &Value) -> Vec<Entry> {
    object["metadata"]["managedFields"]
        .as_array()
        .map(|list| list.iter().filter_map(Entry::parse).collect())
        .unwrap_or_default()
}

/// Update entries kept at most; older ones fold into `ancient-changes`.
const UPDATES_MAX: usize = 10;

/// Writes `entries` into `object` in upstream's order: appliers first, then
/// by time, manager, version and subresource.
fn store_entries(object: &mut Value, mut entries: Vec<Entry>) {
    entries.retain(|e| !e.fields.is_empty());
    let updates = entries.iter().filter(|e| !e.apply).count();
    if updates > UPDATES_MAX {
        entries.sort_by(|a, b| a.time.cmp(&b.time));
        let mut kept = Vec::new();
        let mut excess = updates - UPDATES_MAX + 1;
        let mut ancient: Vec<Entry> = Vec::new();
        for entry in entries {
            if !entry.apply && excess > 0 && entry.manager != "ancient-changes" {
                excess -= 1;
                match ancient
                    .iter_mut()
                    .find(|a| a.api_version == entry.api_version)
                {
                    Some(a) => a.fields.absorb(entry.fields),
                    None => ancient.push(Entry {
                        manager: "ancient-changes".into(),
                        time: None,
                        subresource: None,
                        ..entry
                    }),
                }
            } else if !entry.apply && entry.manager == "ancient-changes" {
                match ancient
                    .iter_mut()
                    .find(|a| a.api_version == entry.api_version)
                {
                    Some(a) => a.fields.absorb(entry.fields),
                    None => ancient.push(entry),
                }
            } else {
                kept.push(entry);
            }
        }
        kept.extend(ancient);
        entries = kept;
    }
    entries.sort_by(|a, b| {
        (
            !a.apply,
            a.time.as_deref().unwrap_or(""),
            &a.manager,
            &a.api_version,
            &a.subresource,
        )
            .cmp(&(
                !b.apply,
                b.time.as_deref().unwrap_or(""),
                &b.manager,
                &b.api_version,
                &b.subresource,
            ))
    });
    let Some(metadata) = object.get_mut("metadata").and_then(Value::as_object_mut) else {
        return;
    };
    if entries.is_empty() {
        metadata.remove("managedFields");
    } else {
        metadata.insert(
            "managedFields".into(),
            Value::Array(entries.iter().map(Entry::render).collect()),
        );
    }
}

// ---------------------------------------------------------------------------
// The operations.

/// Which part of an object a write may change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Scope {
    /// The object itself; `status` too when the kind has no status subresource.
    Main { has_status: bool },
    /// The status subresource.
    Status,
}

/// Who writes, as recorded.
pub(crate) struct Writer<'a> {
    pub(crate) manager: &'a str,
    pub(crate) api_version: &'a str,
    pub(crate) subresource: Option<&'a str>,
    pub(crate) now: &'a str,
}

/// The object without what is never recorded: type, the system's metadata,
/// and what the scope does not write.
fn strip(value: &Value, scope: Scope) -> Value {
    const UNTRACKED: &[&str] = &[
        "name",
        "namespace",
        "creationTimestamp",
        "selfLink",
        "uid",
        "clusterName",
        "generation",
        "managedFields",
        "resourceVersion",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
    ];
    let Some(map) = value.as_object() else {
        return value.clone();
    };
    // Only what is kept is copied (a pod's status alone, say).
    let mut out = Map::new();
    for (key, field) in map {
        let kept = match (key.as_str(), scope) {
            ("apiVersion" | "kind", _) => false,
            ("status", Scope::Main { has_status }) => !has_status,
            ("status", Scope::Status) => true,
            (_, Scope::Status) => false,
            (_, Scope::Main { .. }) => true,
        };
        if !kept {
            continue;
        }
        match (key.as_str(), field) {
            ("metadata", Value::Object(metadata)) => {
                let metadata: Map<String, Value> = metadata
                    .iter()
                    .filter(|(k, _)| !UNTRACKED.contains(&k.as_str()))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                if !metadata.is_empty() {
                    out.insert(key.clone(), Value::Object(metadata));
                }
            }
            _ => {
                out.insert(key.clone(), field.clone());
            }
        }
    }
    Value::Object(out)
}

/// The empty object a create is compared with: the structs that upstream's
/// empty objects hold by value, where the new object has them.
fn empty_like(new: &Value) -> Value {
    const CHAINS: &[&[&str]] = &[
        &["metadata"],
        &["spec"],
        &["status"],
        &["spec", "strategy"],
        &["spec", "updateStrategy"],
        &["spec", "template"],
        &["spec", "template", "metadata"],
        &["spec", "template", "spec"],
        &["spec", "jobTemplate"],
        &["spec", "jobTemplate", "metadata"],
        &["spec", "jobTemplate", "spec"],
        &["spec", "jobTemplate", "spec", "template"],
        &["spec", "jobTemplate", "spec", "template", "metadata"],
        &["spec", "jobTemplate", "spec", "template", "spec"],
    ];
    let mut empty = json!({});
    for chain in CHAINS {
        let mut here = new;
        let mut present = true;
        for field in *chain {
            match here.get(*field) {
                Some(next) if next.is_object() => here = next,
                _ => {
                    present = false;
                    break;
                }
            }
        }
        if present {
            let mut slot = &mut empty;
            for field in *chain {
                slot = &mut slot[*field];
                if slot.is_null() {
                    *slot = json!({});
                }
            }
        }
    }
    empty
}

/// What the body of a write says about managedFields.
enum Submitted {
    /// Nothing (absent or null): keep what is stored.
    Nothing,
    /// `[]` or `[{}]`: forget them all.
    Reset,
    /// These entries replace the stored ones.
    Entries(Vec<Entry>),
}

fn submitted(object: &Value) -> Submitted {
    match &object["metadata"]["managedFields"] {
        Value::Array(list) if list.is_empty() => Submitted::Reset,
        Value::Array(list) if list.len() == 1 && list[0].as_object().is_some_and(Map::is_empty) => {
            Submitted::Reset
        }
        Value::Array(list) => Submitted::Entries(list.iter().filter_map(Entry::parse).collect()),
        _ => Submitted::Nothing,
    }
}

/// Records a create, update or non-apply patch by `writer` in `new`'s
/// managedFields: the writer owns what it changed, others lose it. `old` is
/// `None` for a create. An existing object without managedFields stays
/// untracked.
pub(crate) fn record_update(
    schema: Schema<'_>,
    scope: Scope,
    old: Option<&Value>,
    new: &mut Value,
    writer: &Writer<'_>,
) -> Result<(), String> {
    let mut list = match (submitted(new), old) {
        (Submitted::Entries(list), _) => list,
        (Submitted::Reset, _) => Vec::new(),
        (Submitted::Nothing, Some(old)) => entries(old),
        (Submitted::Nothing, None) => Vec::new(),
    };
    if old.is_some() && list.is_empty() {
        if let Some(metadata) = new["metadata"].as_object_mut() {
            metadata.remove("managedFields");
        }
        return Ok(());
    }
    let after = strip(new, scope);
    let before = match old {
        Some(old) => strip(old, scope),
        None => empty_like(&after),
    };
    let diff = diff(schema, &before, &after)?;
    if !diff.is_empty() {
        let changed = if list.is_empty() {
            FieldSet::default()
        } else {
            diff.changed()
        };
        let me = Entry {
            manager: writer.manager.to_string(),
            apply: false,
            api_version: writer.api_version.to_string(),
            time: Some(writer.now.to_string()),
            subresource: writer.subresource.map(str::to_string),
            fields: FieldSet::default(),
        };
        let mut mine = FieldSet::default();
        for entry in &mut list {
            if entry.same_writer(&me) {
                mine = std::mem::take(&mut entry.fields);
            } else {
                entry.fields = entry.fields.difference(&changed);
            }
        }
        list.retain(|e| !e.same_writer(&me));
        let Diff {
            added,
            modified,
            removed,
        } = diff;
        mine.absorb(added);
        mine.absorb(modified);
        if !removed.is_empty() {
            mine = mine.difference(&removed);
        }
        list.push(Entry { fields: mine, ..me });
    }
    store_entries(new, list);
    Ok(())
}

/// Why an apply was refused.
#[derive(Debug, PartialEq)]
pub(crate) enum ApplyError {
    /// The configuration does not fit the schema (a keyed item without its
    /// key, duplicate keys).
    Schema(String),
    /// Fields that other writers own would change: (writer, path) pairs.
    Conflicts(Vec<(String, String)>),
}

impl ApplyError {
    /// Upstream's message for a conflict.
    pub(crate) fn conflict_message(conflicts: &[(String, String)]) -> String {
        if let [(writer, path)] = conflicts {
            return format!("Apply failed with 1 conflict: conflict with {writer}: {path}");
        }
        let mut by_writer: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for (writer, path) in conflicts {
            by_writer.entry(writer).or_default().push(path);
        }
        let mut lines = Vec::new();
        for (writer, paths) in by_writer {
            lines.push(format!("conflicts with {writer}:"));
            lines.extend(paths.iter().map(|p| format!("- {p}")));
        }
        format!(
            "Apply failed with {} conflicts: {}",
            conflicts.len(),
            lines.join("\n")
        )
    }
}

/// The annotation client-side apply keeps; see `apply`.
pub(crate) const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Server-side apply of `config` by `writer` to `live` (`None` when the
/// object does not exist yet): the merged object, with managedFields.
pub(crate) fn apply(
    schema: Schema<'_>,
    scope: Scope,
    live: Option<&Value>,
    config: &Value,
    writer: &Writer<'_>,
    force: bool,
) -> Result<Value, ApplyError> {
    let stripped_config = strip(config, scope);
    let config_set = field_set(schema, &stripped_config).map_err(ApplyError::Schema)?;
    let empty = json!({});
    let live_object = live.unwrap_or(&empty);
    let mut list = entries(live_object);
    if live.is_some() && list.is_empty() {
        // Objects made before anyone applied: their fields so far belong
        // to one writer, who may conflict.
        let fields = field_set(schema, &strip(live_object, scope)).map_err(ApplyError::Schema)?;
        list.push(Entry {
            manager: "before-first-apply".into(),
            apply: false,
            api_version: writer.api_version.to_string(),
            time: Some(writer.now.to_string()),
            subresource: writer.subresource.map(str::to_string),
            fields,
        });
    }
    let applied_part = match scope {
        Scope::Status => json!({"status": config.get("status").cloned().unwrap_or(json!({}))}),
        Scope::Main { has_status } => {
            let mut part = config.clone();
            if has_status && let Some(map) = part.as_object_mut() {
                map.remove("status");
            }
            if let Some(metadata) = part["metadata"].as_object_mut() {
                metadata.remove("managedFields");
            }
            part
        }
    };
    let mut merged = merge(schema, live_object, &applied_part).map_err(ApplyError::Schema)?;
    let before = strip(live_object, scope);
    let diff = diff(schema, &before, &strip(&merged, scope)).map_err(ApplyError::Schema)?;
    let touched = diff.added.union(&diff.modified);

    let me = Entry {
        manager: writer.manager.to_string(),
        apply: true,
        api_version: writer.api_version.to_string(),
        time: Some(writer.now.to_string()),
        subresource: writer.subresource.map(str::to_string),
        fields: config_set.clone(),
    };
    // kubectl moving from client-side apply: fields whose last applied
    // value is what they hold now are its own, and taken without conflict.
    let last_applied: Option<Value> = (writer.manager == "kubectl")
        .then(|| live_object["metadata"]["annotations"][LAST_APPLIED].as_str())
        .flatten()
        .and_then(|text| serde_json::from_str(text).ok());
    let mut conflicts = Vec::new();
    for entry in &mut list {
        if entry.same_writer(&me) {
            continue;
        }
        let clash = entry.fields.intersection(&touched);
        if clash.is_empty() {
            continue;
        }
        let mut taken = FieldSet::default();
        for path in clash.paths() {
            let csa_owned = last_applied.as_ref().is_some_and(|last| {
                lookup(schema, last, &path).is_some()
                    && lookup(schema, last, &path) == lookup(schema, live_object, &path)
            });
            if !force && !csa_owned {
                conflicts.push((entry.describe(), path_string(&path)));
            }
            taken.insert(&path);
        }
        entry.fields = entry.fields.difference(&taken);
    }
    if !conflicts.is_empty() {
        return Err(ApplyError::Conflicts(conflicts));
    }
    for entry in &mut list {
        if !entry.same_writer(&me) {
            entry.fields = entry.fields.difference(&diff.removed);
        }
    }

    // What the applier gave up goes, unless someone else still owns it.
    let previous = list
        .iter()
        .find(|e| e.same_writer(&me))
        .map(|e| (e.fields.clone(), e.time.clone()));
    let (last_set, last_time) = previous.unwrap_or_default();
    let others = list
        .iter()
        .filter(|e| !e.same_writer(&me))
        .fold(FieldSet::default(), |all, e| all.union(&e.fields));
    let given_up = last_set.difference(&config_set).difference(&others);
    let kept = others.union(&config_set);
    let mut pruned: Vec<Vec<String>> = Vec::new();
    for path in given_up.paths() {
        // A node that still holds someone's fields stays; what under it
        // was given up goes on its own.
        if pruned.iter().any(|p| path.starts_with(p)) || kept.holds_under(&path) {
            continue;
        }
        remove_path(schema, &mut merged, &path);
        pruned.push(path);
    }

    let unchanged = live.is_some()
        && diff.is_empty()
        && pruned.is_empty()
        && last_set == config_set
        && last_time.is_some();
    list.retain(|e| !e.same_writer(&me));
    list.push(Entry {
        time: if unchanged {
            last_time
        } else {
            me.time.clone()
        },
        ..me
    });
    if writer.manager == "kubectl"
        && live_object["metadata"]["annotations"][LAST_APPLIED].is_string()
    {
        let mut last = config.clone();
        if let Some(metadata) = last.get_mut("metadata").and_then(Value::as_object_mut)
            && let Some(Value::Object(annotations)) = metadata.get_mut("annotations")
        {
            annotations.remove(LAST_APPLIED);
            if annotations.is_empty() {
                metadata.remove("annotations");
            }
        }
        merged["metadata"]["annotations"][LAST_APPLIED] = json!(last.to_string());
    }
    if merged.get("metadata").is_none_or(|m| !m.is_object()) {
        merged["metadata"] = json!({});
    }
    store_entries(&mut merged, list);
    Ok(merged)
}

/// The manager a write is recorded under: `fieldManager`, else the client's
/// User-Agent up to its first `/`, as upstream.
pub(crate) fn manager_name(field_manager: Option<&str>, user_agent: Option<&str>) -> String {
    if let Some(name) = field_manager {
        return name.to_string();
    }
    let agent = user_agent.unwrap_or("");
    let name: String = agent
        .split('/')
        .next()
        .unwrap_or("")
        .chars()
        .filter(|c| !c.is_control())
        .collect();
    let mut name = name;
    while name.len() > 128 {
        name.pop();
    }
    if name.is_empty() {
        "unknown".to_string()
    } else {
        name
    }
}

/// Why a `fieldManager` query parameter is refused, in upstream's words.
pub(crate) fn field_manager_problem(name: &str) -> Option<(String, String)> {
    if name.len() > 128 {
        return Some((
            "FieldValueTooLong".into(),
            "Too long: may not be more than 128 bytes".into(),
        ));
    }
    if let Some(c) = name.chars().find(|c| c.is_control()) {
        return Some((
            "FieldValueInvalid".into(),
            format!("Invalid value: {name:?}: invalid character {c:?}"),
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const CM: Schema<'static> = Schema {
        kind: "ConfigMap",
        custom: false,
        crd: None,
    };
    const DEPLOY: Schema<'static> = Schema {
        kind: "Deployment",
        custom: false,
        crd: None,
    };
    const MAIN: Scope = Scope::Main { has_status: true };

    fn writer(manager: &'static str, now: &'static str) -> Writer<'static> {
        Writer {
            manager,
            api_version: "v1",
            subresource: None,
            now,
        }
    }

    fn fields_of(object: &Value, manager: &str) -> Value {
        object["metadata"]["managedFields"]
            .as_array()
            .and_then(|l| l.iter().find(|e| e["manager"] == manager))
            .map(|e| e["fieldsV1"].clone())
            .unwrap_or(Value::Null)
    }

    #[test]
    fn fields_v1_round_trips_with_dot_only_beside_children() {
        let text =
            json!({"f:metadata": {"f:labels": {".": {}, "f:app": {}}}, "f:data": {"f:a": {}}});
        let set = FieldSet::from_fields_v1(&text);
        assert_eq!(set.to_fields_v1(), text);
        assert_eq!(set.paths().len(), 3);
        assert_eq!(
            path_string(&[
                "f:spec".into(),
                "k:{\"port\":80,\"protocol\":\"TCP\"}".into()
            ]),
            ".spec[port=80,protocol=\"TCP\"]"
        );
        assert_eq!(
            path_string(&["f:metadata".into(), "f:finalizers".into(), "v:\"x\"".into()]),
            ".metadata.finalizers[=\"x\"]"
        );
    }

    #[test]
    fn a_deployment_is_owned_by_keyed_items_and_atomic_selectors() {
        let deployment = json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "default", "finalizers": ["a/b"]},
            "spec": {
                "selector": {"matchLabels": {"app": "web"}},
                "template": {"spec": {"containers": [{
                    "name": "nginx", "image": "nginx",
                    "ports": [{"containerPort": 80}],
                    "env": [{"name": "A", "value": "1"}]
                }]}}
            }
        });
        let set = field_set(DEPLOY, &strip(&deployment, MAIN)).unwrap();
        assert_eq!(
            set.to_fields_v1(),
            json!({
                "f:metadata": {"f:finalizers": {"v:\"a/b\"": {}}},
                "f:spec": {
                    "f:selector": {},
                    "f:template": {"f:spec": {"f:containers": {"k:{\"name\":\"nginx\"}": {
                        ".": {},
                        "f:env": {"k:{\"name\":\"A\"}": {".": {}, "f:name": {}, "f:value": {}}},
                        "f:image": {},
                        "f:name": {},
                        "f:ports": {"k:{\"containerPort\":80,\"protocol\":\"TCP\"}": {".": {}, "f:containerPort": {}}}
                    }}}}
                }
            })
        );
        let missing = json!({"spec": {"template": {"spec": {"containers": [{"image": "x"}]}}}});
        assert!(
            field_set(DEPLOY, &missing)
                .unwrap_err()
                .contains("omits key field \"name\"")
        );
    }

    #[test]
    fn a_create_records_everything_the_creator_set_with_dots_on_new_maps() {
        let mut created = json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "cm", "uid": "u", "labels": {"app": "x"}},
            "data": {"a": "1"}
        });
        update_cm(None, &mut created, "kubectl-create", "T1").unwrap();
        let entries = created["metadata"]["managedFields"].as_array().unwrap();
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0]["operation"], "Update");
        assert_eq!(entries[0]["time"], "T1");
        assert_eq!(
            entries[0]["fieldsV1"],
            json!({"f:data": {".": {}, "f:a": {}}, "f:metadata": {"f:labels": {".": {}, "f:app": {}}}})
        );

        // A label added by another writer moves that field to it alone.
        let mut labelled = created.clone();
        labelled["metadata"]["labels"]["tier"] = json!("web");
        update_cm(Some(&created), &mut labelled, "kubectl-label", "T2").unwrap();
        assert_eq!(
            fields_of(&labelled, "kubectl-label"),
            json!({"f:metadata": {"f:labels": {"f:tier": {}}}})
        );
        assert_eq!(
            fields_of(&labelled, "kubectl-create")["f:data"],
            json!({".": {}, "f:a": {}})
        );

        // Nothing changed: nothing recorded, the time stays.
        let mut same = labelled.clone();
        update_cm(Some(&labelled), &mut same, "kubectl-label", "T3").unwrap();
        assert_eq!(same, labelled);

        // `[{}]` forgets them, and an untracked object stays so.
        let mut reset = labelled.clone();
        reset["metadata"]["managedFields"] = json!([{}]);
        update_cm(Some(&labelled), &mut reset, "x", "T4").unwrap();
        assert!(reset["metadata"].get("managedFields").is_none());
        let mut later = reset.clone();
        later["data"]["b"] = json!("2");
        update_cm(Some(&reset), &mut later, "x", "T5").unwrap();
        assert!(later["metadata"].get("managedFields").is_none());
    }

    fn config(data: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm", "namespace": "default"}, "data": data})
    }

    const CM_SCOPE: Scope = Scope::Main { has_status: false };

    fn apply_cm(
        live: Option<&Value>,
        data: Value,
        manager: &'static str,
        now: &'static str,
        force: bool,
    ) -> Result<Value, ApplyError> {
        apply(
            CM,
            CM_SCOPE,
            live,
            &config(data),
            &writer(manager, now),
            force,
        )
    }

    fn update_cm(
        old: Option<&Value>,
        new: &mut Value,
        manager: &'static str,
        now: &'static str,
    ) -> Result<(), String> {
        record_update(CM, CM_SCOPE, old, new, &writer(manager, now))
    }

    #[test]
    fn apply_creates_owns_exactly_its_config_and_prunes_what_it_drops() {
        let first = apply_cm(None, json!({"a": "1", "b": "2"}), "kubectl", "T1", false).unwrap();
        assert_eq!(first["data"], json!({"a": "1", "b": "2"}));
        assert_eq!(
            fields_of(&first, "kubectl"),
            json!({"f:data": {"f:a": {}, "f:b": {}}})
        );
        assert_eq!(first["metadata"]["managedFields"][0]["operation"], "Apply");

        // The same config again changes nothing, not even the time.
        let again = apply_cm(
            Some(&first),
            json!({"a": "1", "b": "2"}),
            "kubectl",
            "T2",
            false,
        )
        .unwrap();
        assert_eq!(again, first);

        let dropped = apply_cm(Some(&first), json!({"a": "1"}), "kubectl", "T3", false).unwrap();
        assert_eq!(dropped["data"], json!({"a": "1"}));
        assert_eq!(dropped["metadata"]["managedFields"][0]["time"], "T3");

        // Co-owned by a creator, a dropped field stays.
        let mut created = config(json!({"a": "1", "b": "2"}));
        update_cm(None, &mut created, "kubectl-create", "T1").unwrap();
        let applied = apply_cm(
            Some(&created),
            json!({"a": "1", "b": "2"}),
            "kubectl",
            "T2",
            false,
        )
        .unwrap();
        let dropped = apply_cm(Some(&applied), json!({"a": "1"}), "kubectl", "T3", false).unwrap();
        assert_eq!(dropped["data"], json!({"a": "1", "b": "2"}));
    }

    #[test]
    fn giving_up_a_map_keeps_the_keys_still_applied() {
        let mut live = config(json!({"a": "1", "b": "2"}));
        live["metadata"]["managedFields"] = json!([{
            "manager": "kubectl", "operation": "Apply", "apiVersion": "v1", "time": "T1",
            "fieldsType": "FieldsV1", "fieldsV1": {"f:data": {".": {}, "f:a": {}, "f:b": {}}}
        }]);
        let applied = apply_cm(Some(&live), json!({"a": "9"}), "kubectl", "T2", false).unwrap();
        assert_eq!(applied["data"], json!({"a": "9"}));
    }

    #[test]
    fn a_second_applier_conflicts_unless_it_agrees_or_forces() {
        let a = apply_cm(None, json!({"x": "2"}), "a", "T1", false).unwrap();
        let refused = apply_cm(Some(&a), json!({"x": "3"}), "b", "T2", false).unwrap_err();
        assert_eq!(
            refused,
            ApplyError::Conflicts(vec![("\"a\"".into(), ".data.x".into())])
        );
        assert_eq!(
            ApplyError::conflict_message(&[("\"a\"".into(), ".data.x".into())]),
            "Apply failed with 1 conflict: conflict with \"a\": .data.x"
        );

        let shared = apply_cm(Some(&a), json!({"x": "2"}), "b", "T2", false).unwrap();
        assert_eq!(fields_of(&shared, "a"), json!({"f:data": {"f:x": {}}}));
        assert_eq!(fields_of(&shared, "b"), json!({"f:data": {"f:x": {}}}));

        let forced = apply_cm(Some(&a), json!({"x": "3"}), "b", "T2", true).unwrap();
        assert_eq!(forced["data"]["x"], "3");
        assert_eq!(fields_of(&forced, "a"), Value::Null);

        // Updaters are named with their version.
        let mut updated = a.clone();
        updated["data"]["y"] = json!("1");
        update_cm(Some(&a), &mut updated, "editor", "T3").unwrap();
        let refused = apply_cm(
            Some(&updated),
            json!({"x": "9", "y": "9"}),
            "b",
            "T4",
            false,
        )
        .unwrap_err();
        let ApplyError::Conflicts(conflicts) = refused else {
            panic!("conflicts expected")
        };
        assert_eq!(
            ApplyError::conflict_message(&conflicts),
            "Apply failed with 2 conflicts: conflicts with \"a\":\n- .data.x\nconflicts with \"editor\" using v1:\n- .data.y"
        );
    }

    #[test]
    fn keyed_lists_merge_by_key_and_keep_live_items_in_place() {
        let live = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "a", "image": "a:1"}, {"name": "side", "image": "s"}, {"name": "b", "image": "b:1"}
        ], "tolerations": [{"key": "x"}]}}}});
        let config = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "b", "image": "b:2"}, {"name": "a", "image": "a:2"}, {"name": "c", "image": "c"}
        ], "tolerations": [{"key": "y"}]}}}});
        let merged = merge(DEPLOY, &live, &config).unwrap();
        let names: Vec<&str> = merged["spec"]["template"]["spec"]["containers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["b", "a", "side", "c"]);
        assert_eq!(
            merged["spec"]["template"]["spec"]["containers"][0]["image"],
            "b:2"
        );
        assert_eq!(
            merged["spec"]["template"]["spec"]["tolerations"],
            json!([{"key": "y"}])
        );

        let mut pruned = merged.clone();
        remove_path(
            DEPLOY,
            &mut pruned,
            &[
                "f:spec".into(),
                "f:template".into(),
                "f:spec".into(),
                "f:containers".into(),
                "k:{\"name\":\"side\"}".into(),
            ],
        );
        assert_eq!(
            pruned["spec"]["template"]["spec"]["containers"]
                .as_array()
                .unwrap()
                .len(),
            3
        );
    }

    #[test]
    fn managers_come_from_the_query_or_the_user_agent() {
        assert_eq!(manager_name(Some("mine"), Some("curl/8")), "mine");
        assert_eq!(
            manager_name(None, Some("kubectl.1.33/v1.33.0 (linux/amd64)")),
            "kubectl.1.33"
        );
        assert_eq!(manager_name(None, None), "unknown");
        assert!(field_manager_problem(&"x".repeat(129)).is_some());
        assert!(field_manager_problem("ok").is_none());
    }
}
