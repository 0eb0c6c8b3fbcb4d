//! OpenAPI v3: the root listing every group-version, and per group-version
//! the operations of each resource and the schemas of its kinds.
//!
//! Operations carry `x-kubernetes-group-version-kind`, and writes the
//! `fieldValidation` parameter: with those, kubectl leaves validation to the
//! server instead of refusing to apply, create or edit. Schemas come from
//! k8s-openapi's schemars impls (upstream's names, descriptions and
//! structure), each kind's marked with its group-version-kind, which is how
//! `kubectl explain` finds it. A document holds every schema its kinds
//! reference, since references resolve only within it. Documents are built
//! once, on first request. `/openapi/v2` is in `openapi_v2`.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use bytes::Bytes;

use k8s_openapi::api::{
    apps, authentication, authorization, autoscaling, batch, coordination, core, discovery, events,
    networking, policy, rbac, scheduling, storage,
};
use k8s_openapi::schemars::generate::SchemaSettings;
use k8s_openapi::schemars::{JsonSchema, SchemaGenerator};
use serde_json::{Map, Value, json};
use tug_api::registry::{self, Resource};

/// The schema of each kind tug serves, found by its group, version and
/// kind as k8s-openapi states them; the definitions it needs land in
/// `generator`. `None` for a kind without one.
macro_rules! kinds {
    ($($ty:ty),* $(,)?) => {
        fn kind_schema(resource: &Resource, generator: &mut SchemaGenerator) -> Option<String> {
            $(
                if <$ty as k8s_openapi::Resource>::GROUP == resource.group
                    && <$ty as k8s_openapi::Resource>::VERSION == resource.version
                    && <$ty as k8s_openapi::Resource>::KIND == resource.kind
                {
                    generator.subschema_for::<$ty>();
                    return Some(<$ty as JsonSchema>::schema_name().into_owned());
                }
            )*
            None
        }
    };
}

kinds!(
    core::v1::ConfigMap,
    core::v1::Endpoints,
    core::v1::Event,
    core::v1::LimitRange,
    core::v1::Namespace,
    core::v1::Node,
    core::v1::PersistentVolumeClaim,
    core::v1::PersistentVolume,
    core::v1::Pod,
    core::v1::PodTemplate,
    core::v1::ReplicationController,
    core::v1::ResourceQuota,
    core::v1::Secret,
    core::v1::ServiceAccount,
    core::v1::Service,
    apps::v1::ControllerRevision,
    apps::v1::DaemonSet,
    apps::v1::Deployment,
    apps::v1::ReplicaSet,
    apps::v1::StatefulSet,
    authentication::v1::SelfSubjectReview,
    authentication::v1::TokenReview,
    authorization::v1::LocalSubjectAccessReview,
    authorization::v1::SelfSubjectAccessReview,
    authorization::v1::SelfSubjectRulesReview,
    authorization::v1::SubjectAccessReview,
    autoscaling::v2::HorizontalPodAutoscaler,
    autoscaling::v1::HorizontalPodAutoscaler,
    batch::v1::CronJob,
    batch::v1::Job,
    coordination::v1::Lease,
    discovery::v1::EndpointSlice,
    events::v1::Event,
    networking::v1::IngressClass,
    networking::v1::Ingress,
    networking::v1::NetworkPolicy,
    policy::v1::PodDisruptionBudget,
    rbac::v1::ClusterRoleBinding,
    rbac::v1::ClusterRole,
    rbac::v1::RoleBinding,
    rbac::v1::Role,
    scheduling::v1::PriorityClass,
    storage::v1::CSIDriver,
    storage::v1::CSINode,
    storage::v1::StorageClass,
    storage::v1::VolumeAttachment,
    k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
);

/// The schemas of a group-version's kinds and all they reference, keyed by
/// upstream's names (`io.k8s.api.core.v1.Pod`), refs as
/// `#/components/schemas/...`.
pub(crate) fn schemas(resources: &[&'static Resource]) -> Map<String, Value> {
    let mut generator = SchemaSettings::openapi3().into_generator();
    let mut kinds = Vec::new();
    let mut custom = Vec::new();
    let custom_schemas = custom_schemas().read().expect("custom schemas lock");
    for resource in resources {
        if let Some(name) = kind_schema(resource, &mut generator) {
            kinds.push((name, *resource));
        } else if let Some(schema) =
            custom_schemas.get(&(resource.group, resource.version, resource.kind))
        {
            let name = custom_schema_name(resource);
            custom.push((name.clone(), schema.clone()));
            kinds.push((name, *resource));
        }
    }
    let mut schemas: Map<String, Value> = generator.take_definitions(true).into_iter().collect();
    schemas.extend(custom);
    for (name, resource) in kinds {
        let Some(schema) = schemas.get_mut(&name).and_then(Value::as_object_mut) else {
            continue;
        };
        schema.insert(
            "x-kubernetes-group-version-kind".into(),
            json!([{"group": resource.group, "kind": resource.kind, "version": resource.version}]),
        );
        // The server sets what a client leaves out of metadata; upstream
        // does not mark it required.
        if let Some(required) = schema.get_mut("required").and_then(Value::as_array_mut) {
            required.retain(|field| field != "metadata");
            if required.is_empty() {
                schema.remove("required");
            }
        }
    }
    let mut schemas = Value::Object(schemas);
    open_objects(&mut schemas);
    match schemas {
        Value::Object(schemas) => schemas,
        _ => Map::new(),
    }
}

/// Every kind's schema and all they reference, built once: what writes
/// are checked against for unknown fields.
pub struct KindSchemas {
    definitions: Map<String, Value>,
    by_kind: HashMap<(&'static str, &'static str, &'static str), String>,
}

impl KindSchemas {
    pub fn get() -> &'static KindSchemas {
        static SCHEMAS: OnceLock<KindSchemas> = OnceLock::new();
        SCHEMAS.get_or_init(|| {
            let mut generator = SchemaSettings::openapi3().into_generator();
            let mut by_kind = HashMap::new();
            for resource in registry::RESOURCES {
                if let Some(name) = kind_schema(resource, &mut generator) {
                    by_kind.insert((resource.group, resource.version, resource.kind), name);
                }
            }
            let mut definitions =
                Value::Object(generator.take_definitions(true).into_iter().collect());
            open_objects(&mut definitions);
            let Value::Object(definitions) = definitions else {
                unreachable!("definitions are an object")
            };
            KindSchemas {
                definitions,
                by_kind,
            }
        })
    }

    /// Removes from `object` the fields its kind's schema does not
    /// declare, answering their paths as upstream writes them
    /// (`spec.containers[0].imagee`). Kinds without a schema keep all.
    pub fn prune_unknown(&self, resource: &Resource, object: &mut Value) -> Vec<String> {
        let mut unknown = Vec::new();
        let kind = (resource.group, resource.version, resource.kind);
        if let Some(name) = self.by_kind.get(&kind)
            && let Some(schema) = self.definitions.get(name)
        {
            self.prune(schema, object, &mut String::new(), &mut unknown);
        } else if let Some(schema) = custom_schemas()
            .read()
            .expect("custom schemas lock")
            .get(&kind)
            .filter(|schema| schema.is_object())
        {
            // apiVersion, kind and metadata are every object's.
            let mut schema = schema.clone();
            if let Some(properties) = schema["properties"].as_object_mut() {
                for field in ["apiVersion", "kind", "metadata"] {
                    properties
                        .entry(field)
                        .or_insert(json!({"x-kubernetes-preserve-unknown-fields": true}));
                }
            }
            self.prune(&schema, object, &mut String::new(), &mut unknown);
        }
        unknown
    }

    /// The schema a reference (bare, or wrapped in `allOf`) points at.
    fn resolve<'a>(&'a self, schema: &'a Value) -> &'a Value {
        let reference = schema["$ref"]
            .as_str()
            .or_else(|| schema["allOf"][0]["$ref"].as_str());
        match reference.and_then(|r| r.strip_prefix("#/components/schemas/")) {
            Some(name) => self.definitions.get(name).unwrap_or(schema),
            None => schema,
        }
    }

    /// `path` is where `value` is, grown and shrunk in place as the walk
    /// goes, so that only unknown fields cost a string.
    fn prune(
        &self,
        schema: &Value,
        value: &mut Value,
        path: &mut String,
        unknown: &mut Vec<String>,
    ) {
        let schema = self.resolve(schema);
        let enter = |path: &mut String, key: &str| {
            let length = path.len();
            if !path.is_empty() {
                path.push('.');
            }
            path.push_str(key);
            length
        };
        match value {
            Value::Object(map) => {
                if let Some(properties) = schema["properties"].as_object() {
                    let open = schema["x-kubernetes-preserve-unknown-fields"] == true
                        || schema["additionalProperties"] == true;
                    if !open {
                        let undeclared: Vec<String> = map
                            .keys()
                            .filter(|key| !properties.contains_key(*key))
                            .cloned()
                            .collect();
                        for key in undeclared {
                            map.remove(&key);
                            let length = enter(path, &key);
                            unknown.push(path.clone());
                            path.truncate(length);
                        }
                    }
                    for (key, child) in map.iter_mut() {
                        if let Some(property) = properties.get(key) {
                            let length = enter(path, key);
                            self.prune(property, child, path, unknown);
                            path.truncate(length);
                        }
                    }
                } else if schema["additionalProperties"].is_object() {
                    let values = &schema["additionalProperties"];
                    for (key, child) in map.iter_mut() {
                        let length = enter(path, key);
                        self.prune(values, child, path, unknown);
                        path.truncate(length);
                    }
                }
            }
            Value::Array(items) if schema["items"].is_object() => {
                for (index, item) in items.iter_mut().enumerate() {
                    let length = path.len();
                    path.push_str(&format!("[{index}]"));
                    self.prune(&schema["items"], item, path, unknown);
                    path.truncate(length);
                }
            }
            _ => {}
        }
    }
}

/// `additionalProperties: true` (free-form JSON) as upstream writes it,
/// `x-kubernetes-preserve-unknown-fields`: kubectl 1.29's explain cannot
/// read the boolean form.
fn open_objects(value: &mut Value) {
    match value {
        Value::Object(map) => {
            if map.get("additionalProperties") == Some(&Value::Bool(true)) {
                map.remove("additionalProperties");
                map.insert("x-kubernetes-preserve-unknown-fields".into(), json!(true));
            }
            map.values_mut().for_each(open_objects);
        }
        Value::Array(items) => items.iter_mut().for_each(open_objects),
        _ => {}
    }
}

/// The URL path segment of a group-version: `api/v1`, `apis/apps/v1`.
fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// A stable hash of what the documents hold, so clients may cache them.
fn hash(group: &str, version: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for resource in registry::in_group_version(group, version) {
        for byte in resource.plural.bytes().chain(resource.kind.bytes()) {
            h ^= u64::from(byte);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    format!("{h:016X}")
}

/// `GET /openapi/v3`
pub fn root() -> Value {
    let mut paths = Map::new();
    for (group, version) in registry::groups() {
        let path = gv_path(group, version);
        paths.insert(
            path.clone(),
            json!({"serverRelativeURL": format!("/openapi/v3/{path}?hash={}", hash(group, version))}),
        );
    }
    json!({"paths": paths})
}

fn operation_id(verb: &str, resource: &Resource, namespaced_path: bool) -> String {
    let group = resource
        .group
        .split('.')
        .next()
        .map(|g| {
            let mut chars = g.chars();
            chars
                .next()
                .map(|c| c.to_ascii_uppercase().to_string() + chars.as_str())
                .unwrap_or_else(|| "Core".into())
        })
        .unwrap_or_default();
    let version = {
        let mut chars = resource.version.chars();
        chars
            .next()
            .map(|c| c.to_ascii_uppercase().to_string() + chars.as_str())
            .unwrap_or_default()
    };
    let scope = if namespaced_path { "Namespaced" } else { "" };
    format!("{verb}{group}{version}{scope}{}", resource.kind)
}

fn operation(
    verb: &str,
    action: &str,
    resource: &Resource,
    namespaced: bool,
    extra: &[Value],
) -> Value {
    let mut parameters = vec![
        json!({"name": "dryRun", "in": "query", "schema": {"type": "string", "uniqueItems": true}}),
        json!({"name": "fieldManager", "in": "query", "schema": {"type": "string", "uniqueItems": true}}),
    ];
    parameters.extend_from_slice(extra);
    json!({
        "operationId": operation_id(verb, resource, namespaced),
        "parameters": parameters,
        "responses": {"200": {"description": "OK"}},
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": {"group": resource.group, "version": resource.version, "kind": resource.kind},
    })
}

/// `GET /openapi/v3/api/v1`, `GET /openapi/v3/apis/{group}/{version}`:
/// the document as JSON bytes, built once.
pub fn group_version(group: &str, version: &str) -> Option<Bytes> {
    let key = (group.to_string(), version.to_string());
    if let Some(document) = documents().lock().expect("documents lock").get(&key) {
        return document.clone();
    }
    // Built outside the lock: two first requests may both build it.
    let document = build(group, version)
        .map(|document| Bytes::from(serde_json::to_vec(&document).unwrap_or_default()));
    documents()
        .lock()
        .expect("documents lock")
        .insert(key, document.clone());
    document
}

type Documents = Mutex<HashMap<(String, String), Option<Bytes>>>;

/// The documents built so far, by group and version.
fn documents() -> &'static Documents {
    static DOCUMENTS: OnceLock<Documents> = OnceLock::new();
    DOCUMENTS.get_or_init(Documents::default)
}

type CustomSchemas = HashMap<(&'static str, &'static str, &'static str), Value>;

/// The schemas of custom resources, by group, version and kind.
fn custom_schemas() -> &'static std::sync::RwLock<CustomSchemas> {
    static CUSTOM: OnceLock<std::sync::RwLock<CustomSchemas>> = OnceLock::new();
    CUSTOM.get_or_init(Default::default)
}

/// Replaces the custom resources' schemas (from their CRDs); documents
/// are built again on their next request.
pub fn set_custom_schemas(schemas: CustomSchemas) {
    *custom_schemas().write().expect("custom schemas lock") = schemas;
    documents().lock().expect("documents lock").clear();
    crate::openapi_v2::invalidate();
}

/// What a custom resource's structural schema refuses in an object: wrong
/// types, missing required fields, values outside an enum. Each is
/// (reason, field, message) as upstream words them.
/// A custom kind's structural schema, if it is one.
pub(crate) fn custom_schema(resource: &Resource) -> Option<Value> {
    let schemas = custom_schemas().read().expect("custom schemas lock");
    schemas
        .get(&(resource.group, resource.version, resource.kind))
        .cloned()
}

pub fn custom_errors(resource: &Resource, object: &Value) -> Vec<(String, String, String)> {
    let schemas = custom_schemas().read().expect("custom schemas lock");
    let mut errors = Vec::new();
    if let Some(schema) = schemas.get(&(resource.group, resource.version, resource.kind)) {
        check_value(schema, object, "", &mut errors);
    }
    errors
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn check_value(
    schema: &Value,
    value: &Value,
    path: &str,
    errors: &mut Vec<(String, String, String)>,
) {
    let at = |field: &str| {
        if path.is_empty() {
            field.to_string()
        } else {
            format!("{path}.{field}")
        }
    };
    let given = json_type(value);
    if let Some(wanted) = schema["type"].as_str()
        && !path.is_empty()
        && given != wanted
        && !(wanted == "number" && given == "integer")
        && schema["x-kubernetes-int-or-string"] != true
        && !(given == "null" && schema["nullable"] == true)
    {
        errors.push((
            "FieldValueTypeInvalid".into(),
            path.into(),
            format!(
                "Invalid value: \"{given}\": {path} in body must be of type {wanted}: \"{given}\""
            ),
        ));
        return;
    }
    if let Some(allowed) = schema["enum"].as_array()
        && !allowed.contains(value)
    {
        let supported: Vec<String> = allowed.iter().map(Value::to_string).collect();
        errors.push((
            "FieldValueNotSupported".into(),
            path.into(),
            format!(
                "Unsupported value: {value}: supported values: {}",
                supported.join(", ")
            ),
        ));
    }
    check_bounds(schema, value, path, errors);
    match value {
        Value::Object(map) => {
            for required in schema["required"].as_array().into_iter().flatten() {
                if let Some(field) = required.as_str()
                    && !map.contains_key(field)
                {
                    errors.push((
                        "FieldValueRequired".into(),
                        at(field),
                        "Required value".into(),
                    ));
                }
            }
            let properties = schema["properties"].as_object();
            for (key, child) in map {
                if path.is_empty() && matches!(key.as_str(), "apiVersion" | "kind" | "metadata") {
                    continue;
                }
                match properties.and_then(|p| p.get(key)) {
                    Some(property) => check_value(property, child, &at(key), errors),
                    None if schema["additionalProperties"].is_object() => {
                        check_value(&schema["additionalProperties"], child, &at(key), errors);
                    }
                    None => {}
                }
            }
        }
        Value::Array(items) if schema["items"].is_object() => {
            for (index, item) in items.iter().enumerate() {
                check_value(&schema["items"], item, &format!("{path}[{index}]"), errors);
            }
        }
        _ => {}
    }
}

/// The value keywords of a structural schema: bounds, lengths, pattern,
/// item counts, in upstream's words.
fn check_bounds(
    schema: &Value,
    value: &Value,
    path: &str,
    errors: &mut Vec<(String, String, String)>,
) {
    let mut invalid = |reason: &str, message: String| {
        errors.push((reason.into(), path.into(), message));
    };
    match value {
        Value::Number(n) => {
            let Some(x) = n.as_f64() else { return };
            if let Some(min) = schema["minimum"].as_f64() {
                let exclusive = schema["exclusiveMinimum"] == true;
                if x < min || (exclusive && x == min) {
                    let relation = if exclusive {
                        "greater than"
                    } else {
                        "greater than or equal to"
                    };
                    invalid(
                        "FieldValueInvalid",
                        format!(
                            "Invalid value: {n}: {path} in body should be {relation} {}",
                            schema["minimum"]
                        ),
                    );
                }
            }
            if let Some(max) = schema["maximum"].as_f64() {
                let exclusive = schema["exclusiveMaximum"] == true;
                if x > max || (exclusive && x == max) {
                    let relation = if exclusive {
                        "less than"
                    } else {
                        "less than or equal to"
                    };
                    invalid(
                        "FieldValueInvalid",
                        format!(
                            "Invalid value: {n}: {path} in body should be {relation} {}",
                            schema["maximum"]
                        ),
                    );
                }
            }
        }
        Value::String(text) => {
            let length = text.chars().count() as u64;
            if let Some(max) = schema["maxLength"].as_u64()
                && length > max
            {
                invalid(
                    "FieldValueTooLong",
                    format!("Too long: may not be more than {max} bytes"),
                );
            }
            if let Some(min) = schema["minLength"].as_u64()
                && length < min
            {
                invalid(
                    "FieldValueInvalid",
                    format!(
                        "Invalid value: {value}: {path} in body should be at least {min} chars long"
                    ),
                );
            }
            if let Some(pattern) = schema["pattern"].as_str()
                && regex::Regex::new(pattern).is_ok_and(|re| !re.is_match(text))
            {
                invalid(
                    "FieldValueInvalid",
                    format!("Invalid value: {value}: {path} in body should match '{pattern}'"),
                );
            }
        }
        Value::Array(items) => {
            let count = items.len() as u64;
            if let Some(max) = schema["maxItems"].as_u64()
                && count > max
            {
                invalid(
                    "FieldValueTooMany",
                    format!("Too many: {count}: must have at most {max} items"),
                );
            }
            if let Some(min) = schema["minItems"].as_u64()
                && count < min
            {
                invalid(
                    "FieldValueInvalid",
                    format!(
                        "Invalid value: {count}: {path} in body should have at least {min} items"
                    ),
                );
            }
        }
        Value::Object(map) => {
            let count = map.len() as u64;
            if let Some(max) = schema["maxProperties"].as_u64()
                && count > max
            {
                invalid(
                    "FieldValueTooMany",
                    format!("Too many: {count}: must have at most {max} items"),
                );
            }
            if let Some(min) = schema["minProperties"].as_u64()
                && count < min
            {
                invalid(
                    "FieldValueInvalid",
                    format!(
                        "Invalid value: {count}: {path} in body should have at least {min} properties"
                    ),
                );
            }
        }
        _ => {}
    }
}

/// A custom kind's schema name, as upstream names it: the group reversed,
/// then version and kind (`com.example.v1.Widget`).
pub(crate) fn custom_schema_name(resource: &Resource) -> String {
    let mut parts: Vec<&str> = resource.group.split('.').collect();
    parts.reverse();
    format!("{}.{}.{}", parts.join("."), resource.version, resource.kind)
}

fn build(group: &str, version: &str) -> Option<Value> {
    let mut paths = Map::new();
    let field_validation = json!({"name": "fieldValidation", "in": "query", "schema": {"type": "string", "uniqueItems": true}});
    let resources: Vec<&'static Resource> = registry::in_group_version(group, version).collect();
    for &resource in &resources {
        let base = format!("/{}", gv_path(group, version));
        let collection = if resource.namespaced {
            format!("{base}/namespaces/{{namespace}}/{}", resource.plural)
        } else {
            format!("{base}/{}", resource.plural)
        };
        let namespaced = resource.namespaced;
        if !resource.stored {
            paths.insert(
                collection,
                json!({"post": operation("create", "post", resource, namespaced, std::slice::from_ref(&field_validation))}),
            );
            continue;
        }
        paths.insert(
            collection.clone(),
            json!({
                "get": operation("list", "list", resource, namespaced, &[]),
                "post": operation("create", "post", resource, namespaced, std::slice::from_ref(&field_validation)),
            }),
        );
        let object = json!({
            "get": operation("read", "get", resource, namespaced, &[]),
            "put": operation("replace", "put", resource, namespaced, std::slice::from_ref(&field_validation)),
            "patch": operation("patch", "patch", resource, namespaced, std::slice::from_ref(&field_validation)),
            "delete": operation("delete", "delete", resource, namespaced, &[]),
        });
        paths.insert(format!("{collection}/{{name}}"), object);
        for sub in resource.subresources {
            if Resource::streaming(sub) {
                continue;
            }
            let (verb, action, method) = if Resource::create_only(sub) {
                ("create", "post", "post")
            } else {
                ("patch", "patch", "patch")
            };
            let mut sub_op = operation(
                verb,
                action,
                resource,
                namespaced,
                std::slice::from_ref(&field_validation),
            );
            let mut suffix = sub.to_string();
            suffix[..1].make_ascii_uppercase();
            sub_op["operationId"] = json!(format!(
                "{}{suffix}",
                sub_op["operationId"].as_str().unwrap_or("")
            ));
            paths.insert(
                format!("{collection}/{{name}}/{sub}"),
                json!({method: sub_op}),
            );
        }
    }
    if paths.is_empty() {
        return None;
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.33.0"},
        "paths": paths,
        "components": {"schemas": schemas(&resources)},
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_a_patch_with_its_gvk_and_field_validation() {
        let root = root();
        let apps = &root["paths"]["apis/apps/v1"]["serverRelativeURL"];
        assert!(
            apps.as_str()
                .unwrap()
                .starts_with("/openapi/v3/apis/apps/v1?hash=")
        );
        let doc = build("apps", "v1").unwrap();
        let patch =
            &doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"];
        assert_eq!(
            patch["x-kubernetes-group-version-kind"]["kind"],
            "Deployment"
        );
        assert_eq!(patch["operationId"], "patchAppsV1NamespacedDeployment");
        assert!(
            patch["parameters"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["name"] == "fieldValidation")
        );
        let core = build("", "v1").unwrap();
        assert_eq!(
            core["paths"]["/api/v1/namespaces/{name}"]["patch"]["operationId"],
            "patchCoreV1Namespace"
        );
        assert!(group_version("nope", "v1").is_none());
    }

    #[test]
    fn unknown_fields_are_pruned_and_named_by_their_path() {
        let pods = registry::find("", "v1", "pods").unwrap();
        let mut pod = json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "p", "labels": {"any": "label"}, "colour": "red"},
            "spec": {
                "containers": [
                    {"name": "a", "image": "x", "imagee": "y", "resources": {"limits": {"cpu": "1"}}},
                ],
                "nodeSelector": {"disk": "ssd"},
            },
            "extra": 1,
        });
        let unknown = KindSchemas::get().prune_unknown(pods, &mut pod);
        assert_eq!(
            unknown,
            ["extra", "metadata.colour", "spec.containers[0].imagee"]
        );
        assert_eq!(pod["spec"]["containers"][0].get("imagee"), None);
        assert_eq!(pod["spec"]["containers"][0]["image"], "x");
        assert_eq!(pod["metadata"]["labels"]["any"], "label");
        assert_eq!(pod["spec"]["nodeSelector"]["disk"], "ssd");
        // Free-form fields keep what they hold.
        let revisions = registry::find("apps", "v1", "controllerrevisions").unwrap();
        let mut revision =
            json!({"metadata": {"name": "r"}, "revision": 1, "data": {"spec": {"anything": true}}});
        assert!(
            KindSchemas::get()
                .prune_unknown(revisions, &mut revision)
                .is_empty()
        );
        assert_eq!(revision["data"]["spec"]["anything"], true);
    }

    #[test]
    fn every_kind_served_has_a_schema_that_names_its_kind() {
        for (group, version) in registry::groups() {
            let doc = build(group, version).unwrap();
            let schemas = doc["components"]["schemas"].as_object().unwrap();
            for resource in registry::in_group_version(group, version) {
                let found = schemas.values().any(|schema| {
                    schema["x-kubernetes-group-version-kind"]
                        .as_array()
                        .is_some_and(|gvks| {
                            gvks.contains(&json!({
                                "group": resource.group,
                                "kind": resource.kind,
                                "version": resource.version,
                            }))
                        })
                });
                assert!(found, "no schema for {}", resource.kind);
            }
            // Every reference resolves inside the document.
            let text = doc.to_string();
            for reference in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
                let name = &reference[..reference.find('"').unwrap()];
                assert!(
                    schemas.contains_key(name),
                    "{group}/{version}: {name} missing"
                );
            }
            assert!(!text.contains("\"additionalProperties\":true"));
        }
        let core = build("", "v1").unwrap();
        let pod = &core["components"]["schemas"]["io.k8s.api.core.v1.Pod"];
        assert!(
            pod["description"]
                .as_str()
                .unwrap()
                .starts_with("Pod is a collection of containers")
        );
        assert_eq!(pod.get("required"), None);
        let spec = &pod["properties"]["spec"];
        assert_eq!(
            spec["allOf"][0]["$ref"],
            "#/components/schemas/io.k8s.api.core.v1.PodSpec"
        );
    }
}
