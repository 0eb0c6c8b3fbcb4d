//! OpenAPI v2 (`/openapi/v2`): every kind's schema as a Swagger 2.0
//! `definitions` table, in JSON, or in protobuf (gnostic's
//! `openapi.v2.Document`) when asked for it as kubectl asks.
//!
//! kubectl reads it for what it validates on the client: the items of a
//! `kind: List` manifest (what `kubectl get -o yaml` prints for several
//! objects), which the server's `fieldValidation` cannot cover. Its parser
//! is strict: a `$ref` stands alone, an array has exactly one item schema,
//! a type is one of the JSON primitives, and every reference resolves. So
//! the v3 schemas are rewritten into that subset rather than copied.
//! Paths are left out: kubectl finds kinds by their
//! `x-kubernetes-group-version-kind`, never by path.

use std::sync::{Mutex, OnceLock};

use bytes::Bytes;
use serde_json::{Map, Value, json};
use tug_api::registry;

use crate::openapi;

/// The media type kubectl asks for.
pub const PROTOBUF: &str = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf";

/// The document, built on first request and again after the custom
/// resources change: (JSON, protobuf).
fn cache() -> &'static Mutex<Option<(Bytes, Bytes)>> {
    static CACHE: OnceLock<Mutex<Option<(Bytes, Bytes)>>> = OnceLock::new();
    CACHE.get_or_init(Mutex::default)
}

/// Drops the built document: custom resources changed.
pub(crate) fn invalidate() {
    *cache().lock().expect("openapi v2 lock") = None;
}

/// `GET /openapi/v2`: the document as protobuf when `protobuf`, else JSON.
pub fn document(protobuf: bool) -> Bytes {
    let mut cached = cache().lock().expect("openapi v2 lock");
    let (json, proto) = cached.get_or_insert_with(|| {
        let document = build();
        let json = Bytes::from(serde_json::to_vec(&document).unwrap_or_default());
        let proto = Bytes::from(encode_document(&document));
        (json, proto)
    });
    if protobuf {
        proto.clone()
    } else {
        json.clone()
    }
}

fn build() -> Value {
    let resources = registry::all();
    let schemas = openapi::schemas(&resources);
    let mut definitions = Map::new();
    for (name, schema) in &schemas {
        definitions.insert(name.clone(), to_v2(schema));
    }
    // A custom kind's schema leaves out what every object has.
    for resource in resources.iter().filter(|r| registry::is_custom(r)) {
        let name = openapi::custom_schema_name(resource);
        if let Some(Value::Object(schema)) = definitions.get_mut(&name) {
            let properties = schema.entry("properties").or_insert_with(|| json!({}));
            if let Value::Object(properties) = properties {
                properties
                    .entry("apiVersion")
                    .or_insert_with(|| json!({"type": "string"}));
                properties
                    .entry("kind")
                    .or_insert_with(|| json!({"type": "string"}));
                properties.entry("metadata").or_insert_with(|| {
                    json!({"$ref": "#/definitions/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"})
                });
            }
            schema.insert("type".into(), json!("object"));
        }
    }
    // What is referenced but missing would make kubectl refuse the whole
    // document.
    let mut missing = Vec::new();
    for schema in definitions.values() {
        references(schema, &mut |name| {
            if !definitions.contains_key(name) {
                missing.push(name.to_string());
            }
        });
    }
    for name in missing {
        definitions.insert(name, json!({}));
    }
    json!({
        "swagger": "2.0",
        "info": {"title": "Kubernetes", "version": "v1.33.0"},
        "paths": {},
        "definitions": definitions,
    })
}

fn references(schema: &Value, found: &mut impl FnMut(&str)) {
    match schema {
        Value::Object(map) => {
            if let Some(name) = map
                .get("$ref")
                .and_then(Value::as_str)
                .and_then(|r| r.strip_prefix("#/definitions/"))
            {
                found(name);
            }
            map.values().for_each(|v| references(v, found));
        }
        Value::Array(items) => items.iter().for_each(|v| references(v, found)),
        _ => {}
    }
}

const PRIMITIVES: &[&str] = &["string", "number", "integer", "boolean"];

/// A v3 schema in the subset of Swagger 2.0 that kubectl parses.
fn to_v2(schema: &Value) -> Value {
    let Value::Object(v3) = schema else {
        return json!({});
    };
    let mut out = Map::new();
    for key in ["description", "default"] {
        if let Some(value) = v3.get(key) {
            out.insert(key.into(), value.clone());
        }
    }
    let reference = v3.get("$ref").and_then(Value::as_str).or_else(|| {
        match v3.get("allOf").and_then(Value::as_array).map(Vec::as_slice) {
            Some([only]) => only.get("$ref").and_then(Value::as_str),
            _ => None,
        }
    });
    if let Some(reference) = reference {
        let name = reference
            .strip_prefix("#/components/schemas/")
            .unwrap_or(reference);
        out.insert("$ref".into(), json!(format!("#/definitions/{name}")));
        return Value::Object(out);
    }
    for (key, value) in v3 {
        if key.starts_with("x-kubernetes-") {
            out.insert(key.clone(), value.clone());
        }
    }
    if v3.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true)) {
        out.insert("type".into(), json!("string"));
        out.insert("format".into(), json!("int-or-string"));
        return Value::Object(out);
    }
    if v3.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true)) {
        // Anything goes: an arbitrary value to kubectl.
        return Value::Object(out);
    }
    let kind = match v3.get("type") {
        Some(Value::String(t)) => Some(t.as_str()),
        Some(Value::Array(types)) => {
            let types: Vec<&str> = types
                .iter()
                .filter_map(Value::as_str)
                .filter(|t| *t != "null")
                .collect();
            match types.as_slice() {
                [only] => Some(*only),
                _ => None,
            }
        }
        _ => None,
    };
    if let Some(format) = v3.get("format") {
        out.insert("format".into(), format.clone());
    }
    match kind {
        Some("array") => {
            if let Some(items) = v3.get("items").filter(|items| items.is_object()) {
                out.insert("type".into(), json!("array"));
                out.insert("items".into(), to_v2(items));
            }
        }
        Some(t) if PRIMITIVES.contains(&t) => {
            out.insert("type".into(), json!(t));
            if let Some(values) = v3.get("enum") {
                out.insert("enum".into(), values.clone());
            }
        }
        Some("object") | None => {
            let properties = v3
                .get("properties")
                .and_then(Value::as_object)
                .filter(|p| !p.is_empty());
            if let Some(properties) = properties {
                out.insert("type".into(), json!("object"));
                let properties: Map<String, Value> = properties
                    .iter()
                    .map(|(name, property)| (name.clone(), to_v2(property)))
                    .collect();
                out.insert("properties".into(), Value::Object(properties));
                if let Some(required) = v3.get("required") {
                    out.insert("required".into(), required.clone());
                }
            } else if kind == Some("object") {
                out.insert("type".into(), json!("object"));
                if let Some(values) = v3.get("additionalProperties").filter(|v| v.is_object()) {
                    out.insert("additionalProperties".into(), to_v2(values));
                }
            }
        }
        Some(_) => {}
    }
    Value::Object(out)
}

/// Protobuf, field by field as gnostic's OpenAPIv2.proto numbers them.
struct Writer(Vec<u8>);

impl Writer {
    fn varint(&mut self, mut value: u64) {
        while value >= 0x80 {
            self.0.push((value as u8) | 0x80);
            value >>= 7;
        }
        self.0.push(value as u8);
    }

    fn bytes(&mut self, field: u32, bytes: &[u8]) {
        self.varint(u64::from(field) << 3 | 2);
        self.varint(bytes.len() as u64);
        self.0.extend_from_slice(bytes);
    }

    fn string(&mut self, field: u32, text: &str) {
        if !text.is_empty() {
            self.bytes(field, text.as_bytes());
        }
    }

    fn message(&mut self, field: u32, build: impl FnOnce(&mut Writer)) {
        let mut inner = Writer(Vec::new());
        build(&mut inner);
        self.bytes(field, &inner.0);
    }

    /// A `NamedAny`: a name and a value written as YAML (JSON is YAML).
    fn named_any(&mut self, field: u32, name: &str, value: &Value) {
        self.message(field, |named| {
            named.string(1, name);
            named.message(2, |any| any.string(2, &value.to_string()));
        });
    }
}

fn encode_document(document: &Value) -> Vec<u8> {
    let mut w = Writer(Vec::new());
    w.string(1, document["swagger"].as_str().unwrap_or("2.0"));
    w.message(2, |info| {
        info.string(1, document["info"]["title"].as_str().unwrap_or_default());
        info.string(2, document["info"]["version"].as_str().unwrap_or_default());
    });
    w.message(8, |_| {});
    w.message(9, |definitions| {
        if let Some(map) = document["definitions"].as_object() {
            for (name, schema) in map {
                definitions.message(1, |named| {
                    named.string(1, name);
                    named.message(2, |s| encode_schema(s, schema));
                });
            }
        }
    });
    w.0
}

fn encode_schema(w: &mut Writer, schema: &Value) {
    let text = |key: &str| schema.get(key).and_then(Value::as_str).unwrap_or_default();
    w.string(1, text("$ref"));
    w.string(2, text("format"));
    w.string(4, text("description"));
    if let Some(default) = schema.get("default") {
        w.message(5, |any| any.string(2, &default.to_string()));
    }
    for required in schema["required"].as_array().into_iter().flatten() {
        w.string(19, required.as_str().unwrap_or_default());
    }
    for value in schema["enum"].as_array().into_iter().flatten() {
        w.message(20, |any| any.string(2, &value.to_string()));
    }
    if let Some(values) = schema.get("additionalProperties") {
        w.message(21, |item| item.message(1, |s| encode_schema(s, values)));
    }
    if let Some(kind) = schema.get("type").and_then(Value::as_str) {
        w.message(22, |t| t.string(1, kind));
    }
    if let Some(items) = schema.get("items") {
        w.message(23, |item| item.message(1, |s| encode_schema(s, items)));
    }
    if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
        w.message(25, |p| {
            for (name, property) in properties {
                p.message(1, |named| {
                    named.string(1, name);
                    named.message(2, |s| encode_schema(s, property));
                });
            }
        });
    }
    if let Some(map) = schema.as_object() {
        for (key, value) in map.iter().filter(|(k, _)| k.starts_with("x-")) {
            w.named_any(31, key, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_stand_alone_and_all_resolve() {
        let document = build();
        let definitions = document["definitions"].as_object().unwrap();
        let deployment = &definitions["io.k8s.api.apps.v1.Deployment"];
        assert_eq!(
            deployment["x-kubernetes-group-version-kind"],
            json!([{"group": "apps", "kind": "Deployment", "version": "v1"}])
        );
        assert_eq!(
            deployment["properties"]["spec"],
            json!({"$ref": "#/definitions/io.k8s.api.apps.v1.DeploymentSpec", "description": deployment["properties"]["spec"]["description"]})
        );
        let strategy = &definitions["io.k8s.api.apps.v1.RollingUpdateDeployment"];
        assert_eq!(
            strategy["properties"]["maxSurge"]["$ref"],
            "#/definitions/io.k8s.apimachinery.pkg.util.intstr.IntOrString"
        );
        let int_or_string = &definitions["io.k8s.apimachinery.pkg.util.intstr.IntOrString"];
        assert_eq!(int_or_string["format"], "int-or-string");
        for (name, schema) in definitions {
            check(name, schema, definitions);
        }
    }

    /// What kubectl's parser refuses.
    fn check(path: &str, schema: &Value, definitions: &Map<String, Value>) {
        if let Some(reference) = schema.get("$ref").and_then(Value::as_str) {
            let name = reference.strip_prefix("#/definitions/").unwrap();
            assert!(definitions.contains_key(name), "{path}: {name} missing");
            assert!(schema.get("type").is_none() && schema.get("properties").is_none());
            return;
        }
        match schema.get("type").and_then(Value::as_str) {
            Some("array") => check(&format!("{path}[]"), &schema["items"], definitions),
            Some("object") | None => {
                for (name, property) in schema["properties"].as_object().into_iter().flatten() {
                    check(&format!("{path}.{name}"), property, definitions);
                }
                if schema["additionalProperties"].is_object() {
                    check(path, &schema["additionalProperties"], definitions);
                }
            }
            Some(t) => assert!(PRIMITIVES.contains(&t), "{path}: type {t}"),
        }
    }

    #[test]
    fn protobuf_holds_the_definitions() {
        let proto = document(true);
        // Document field 1: "2.0".
        assert_eq!(&proto[..5], b"\x0a\x032.0");
        let needle = b"io.k8s.api.core.v1.Pod";
        assert!(proto.windows(needle.len()).any(|w| w == needle));
        let json: Value = serde_json::from_slice(&document(false)).unwrap();
        assert_eq!(json["swagger"], "2.0");
    }
}
