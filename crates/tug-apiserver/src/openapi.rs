//! OpenAPI v3, as much as kubectl needs today: the root listing every
//! group-version, and per group-version the operations of each resource,
//! each PATCH carrying `x-kubernetes-group-version-kind` and the
//! `fieldValidation` parameter. With those, kubectl leaves validation to the
//! server (`fieldValidation=Strict`) instead of refusing to apply, create or
//! edit. Schemas for `kubectl explain` are not here yet; `/openapi/v2` is
//! not served (kubectl copes with its 404).

use serde_json::{Map, Value, json};
use tug_api::registry::{self, Resource};

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

/// `GET /openapi/v3/api/v1`, `GET /openapi/v3/apis/{group}/{version}`
pub fn group_version(group: &str, version: &str) -> Option<Value> {
    let mut paths = Map::new();
    let field_validation = json!({"name": "fieldValidation", "in": "query", "schema": {"type": "string", "uniqueItems": true}});
    for resource in registry::in_group_version(group, version) {
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
            let mut sub_op = operation(
                "patch",
                "patch",
                resource,
                namespaced,
                std::slice::from_ref(&field_validation),
            );
            sub_op["operationId"] = json!(format!(
                "{}Status",
                sub_op["operationId"].as_str().unwrap_or("")
            ));
            paths.insert(
                format!("{collection}/{{name}}/{sub}"),
                json!({"patch": sub_op}),
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
        "components": {"schemas": {}},
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
        let doc = group_version("apps", "v1").unwrap();
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
        let core = group_version("", "v1").unwrap();
        assert_eq!(
            core["paths"]["/api/v1/namespaces/{name}"]["patch"]["operationId"],
            "patchCoreV1Namespace"
        );
        assert!(group_version("nope", "v1").is_none());
    }
}
