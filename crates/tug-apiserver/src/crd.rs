//! CustomResourceDefinitions: each served version of each CRD becomes a
//! resource the API serves like a built-in one (REST, watch, discovery,
//! OpenAPI), its objects checked against the version's structural schema.
//!
//! One task follows the CRDs through the watch cache. On every change it
//! recomputes the custom resources and their schemas, marks new CRDs
//! NamesAccepted and Established (what `kubectl wait --for
//! condition=established` waits for), and deletes the objects of a CRD
//! that is gone.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tug_api::format::timestamp;
use tug_api::registry::{self, Definition, Resource};
use tug_store::{PutOptions, RangeRequest};

use crate::cache::Batch;
use crate::rest::ApiState;
use crate::status::ApiError;

type Scales = HashMap<(&'static str, &'static str, &'static str), Value>;

fn scales() -> &'static std::sync::RwLock<Scales> {
    static SCALES: std::sync::OnceLock<std::sync::RwLock<Scales>> = std::sync::OnceLock::new();
    SCALES.get_or_init(Default::default)
}

/// A custom kind's scale subresource (specReplicasPath,
/// statusReplicasPath, labelSelectorPath), if its CRD declares one.
pub fn scale(resource: &Resource) -> Option<Value> {
    scales()
        .read()
        .expect("scales lock")
        .get(&(resource.group, resource.version, resource.kind))
        .cloned()
}

/// The served versions a CRD defines, each with its schema and printer
/// columns.
pub fn definitions(crd: &Value) -> Vec<(Definition, Value, Vec<Value>)> {
    let spec = &crd["spec"];
    let names = &spec["names"];
    let text = |v: &Value| v.as_str().unwrap_or("").to_string();
    let list = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|items| {
                items
                    .iter()
                    .filter_map(|i| i.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let kind = text(&names["kind"]);
    let singular = names["singular"]
        .as_str()
        .map_or_else(|| kind.to_lowercase(), str::to_string);
    let mut definitions = Vec::new();
    for version in spec["versions"].as_array().into_iter().flatten() {
        if version["served"] == false {
            continue;
        }
        let mut subresources = Vec::new();
        if version["subresources"]["status"].is_object() {
            subresources.push("status".to_string());
        }
        if version["subresources"]["scale"].is_object() {
            subresources.push("scale".to_string());
        }
        definitions.push((
            Definition {
                group: text(&spec["group"]),
                version: text(&version["name"]),
                kind: kind.clone(),
                plural: text(&names["plural"]),
                singular: singular.clone(),
                namespaced: spec["scope"] == "Namespaced",
                short_names: list(&names["shortNames"]),
                categories: list(&names["categories"]),
                subresources,
            },
            version["schema"]["openAPIV3Schema"].clone(),
            version["additionalPrinterColumns"]
                .as_array()
                .cloned()
                .unwrap_or_default(),
        ));
    }
    definitions
}

/// What upstream checks of a CRD before storing it; defaults it too.
pub fn validate(crd: &mut Value) -> Result<(), ApiError> {
    let name = crd["metadata"]["name"].as_str().unwrap_or("").to_string();
    let invalid = |field: &str, message: String| {
        ApiError::invalid(
            "CustomResourceDefinition",
            "apiextensions.k8s.io",
            &name,
            vec![("FieldValueInvalid".into(), field.into(), message)],
        )
    };
    let spec = &crd["spec"];
    let (plural, group) = (
        spec["names"]["plural"].as_str().unwrap_or(""),
        spec["group"].as_str().unwrap_or(""),
    );
    if name != format!("{plural}.{group}") {
        return Err(invalid(
            "metadata.name",
            format!("Invalid value: {name:?}: must be spec.names.plural+\".\"+spec.group"),
        ));
    }
    if !group.contains('.') {
        return Err(invalid(
            "spec.group",
            format!("Invalid value: {group:?}: should be a domain with at least one dot"),
        ));
    }
    if spec["names"]["kind"].as_str().is_none_or(str::is_empty) {
        return Err(ApiError::invalid(
            "CustomResourceDefinition",
            "apiextensions.k8s.io",
            &name,
            vec![(
                "FieldValueRequired".into(),
                "spec.names.kind".into(),
                "Required value".into(),
            )],
        ));
    }
    let versions = spec["versions"].as_array().map_or(&[][..], Vec::as_slice);
    if versions.iter().filter(|v| v["storage"] == true).count() != 1 {
        return Err(invalid(
            "spec.versions",
            "Invalid value: []apiextensions.CustomResourceDefinitionVersion{...}: must have exactly one version marked as storage version".into(),
        ));
    }
    let kind = spec["names"]["kind"].as_str().unwrap_or("").to_string();
    let names = &mut crd["spec"]["names"];
    if names["singular"].as_str().is_none_or(str::is_empty) {
        names["singular"] = json!(kind.to_lowercase());
    }
    if names["listKind"].as_str().is_none_or(str::is_empty) {
        names["listKind"] = json!(format!("{kind}List"));
    }
    if crd["spec"]["conversion"].is_null() {
        crd["spec"]["conversion"] = json!({"strategy": "None"});
    }
    Ok(())
}

/// The status of an accepted, established CRD.
fn established_status(crd: &Value, now: i64) -> Value {
    let names = &crd["spec"]["names"];
    let storage: Vec<&Value> = crd["spec"]["versions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|v| v["storage"] == true)
        .map(|v| &v["name"])
        .collect();
    let at = timestamp(now);
    json!({
        "acceptedNames": names,
        "conditions": [
            {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts", "message": "no conflicts found", "lastTransitionTime": at},
            {"type": "Established", "status": "True", "reason": "InitialNamesAccepted", "message": "the initial names have been accepted", "lastTransitionTime": at},
        ],
        "storedVersions": storage,
    })
}

/// Follows the CRDs until `shutdown`.
pub async fn run(api: Arc<ApiState>, shutdown: CancellationToken) {
    let crds = registry::find("apiextensions.k8s.io", "v1", "customresourcedefinitions")
        .expect("CRDs are served");
    let prefix = tug_api::convert::storage_prefix(crds);
    let mut served: HashMap<String, Vec<&'static Resource>> = HashMap::new();
    loop {
        let cache = match api.caches.get(crds).await {
            Ok(cache) => cache,
            Err(err) => {
                tracing::error!(error = %err, "cannot read CRDs; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => continue,
                }
            }
        };
        let Some(mut subscription) = cache.subscribe(&prefix, None) else {
            continue;
        };
        let mut current: Vec<Value> = subscription.initial.iter().map(|c| c.value()).collect();
        loop {
            served = reconcile(&api, &current, served).await;
            let batch = tokio::select! {
                _ = shutdown.cancelled() => return,
                batch = subscription.batches.recv() => batch,
            };
            match batch.as_deref() {
                Ok(Batch::Changes(_)) => {
                    let all = cache.list(
                        &prefix,
                        &tug_api::selector::LabelSelector::default(),
                        &tug_api::selector::FieldSelector::default(),
                        0,
                    );
                    current = all.items.iter().map(|c| c.value()).collect();
                }
                Ok(Batch::Progress(_)) => {}
                // Fell behind: start again from the current state.
                Err(_) => break,
            }
        }
    }
}

/// Serves what `crds` define; answers what is served, by CRD name.
async fn reconcile(
    api: &ApiState,
    crds: &[Value],
    before: HashMap<String, Vec<&'static Resource>>,
) -> HashMap<String, Vec<&'static Resource>> {
    let mut served = HashMap::new();
    let mut schemas = HashMap::new();
    let mut columns = HashMap::new();
    let mut scale_paths = HashMap::new();
    for crd in crds {
        let name = crd["metadata"]["name"].as_str().unwrap_or("").to_string();
        let mut resources = Vec::new();
        for (definition, schema, printer) in definitions(crd) {
            let resource = registry::intern(&definition);
            let kind = (resource.group, resource.version, resource.kind);
            schemas.insert(kind, schema);
            columns.insert(kind, printer);
            let version = crd["spec"]["versions"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|v| v["name"] == resource.version);
            if let Some(scale) = version
                .map(|v| &v["subresources"]["scale"])
                .filter(|s| s.is_object())
            {
                scale_paths.insert(kind, scale.clone());
            }
            resources.push(resource);
        }
        served.insert(name, resources);
    }
    let mut all: Vec<&'static Resource> = served.values().flatten().copied().collect();
    all.sort_by_key(|r| (r.group, r.plural, r.version));
    registry::set_custom(all);
    crate::openapi::set_custom_schemas(schemas);
    crate::table::set_custom_columns(columns);
    *scales().write().expect("scales lock") = scale_paths;

    for crd in crds {
        if crd["status"]["conditions"].as_array().is_some_and(|c| {
            c.iter()
                .any(|c| c["type"] == "Established" && c["status"] == "True")
        }) {
            continue;
        }
        if let Err(err) = establish(api, crd).await {
            tracing::warn!(error = ?err, "marking a CRD established failed; retried on its next change");
        }
    }
    for (name, resources) in &before {
        if served.contains_key(name) {
            continue;
        }
        // The CRD is gone: so are its objects.
        if let Some(resource) = resources.first() {
            delete_all(api, resource).await;
        }
    }
    served
}

async fn establish(api: &ApiState, crd: &Value) -> anyhow::Result<()> {
    let name = crd["metadata"]["name"].as_str().unwrap_or("");
    let key = format!("/registry/apiextensions.k8s.io/customresourcedefinitions/{name}");
    let Some(kv) = api.store.get(&key, None).await?.kv else {
        return Ok(());
    };
    let mut stored: Value = serde_json::from_slice(&kv.value)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    stored["status"] = established_status(&stored, now);
    api.store
        .update(
            &key,
            bytes::Bytes::from(serde_json::to_vec(&stored)?),
            kv.mod_revision,
            PutOptions::default(),
        )
        .await?;
    Ok(())
}

async fn delete_all(api: &ApiState, resource: &Resource) {
    let prefix = tug_api::convert::storage_prefix(resource);
    let Ok(listed) = api
        .store
        .range(RangeRequest {
            prefix,
            ..RangeRequest::default()
        })
        .await
    else {
        return;
    };
    for kv in listed.kvs {
        let _ = api.store.delete(&kv.key, Some(kv.mod_revision)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn crd() -> Value {
        json!({
            "metadata": {"name": "widgets.example.com"},
            "spec": {
                "group": "example.com",
                "scope": "Namespaced",
                "names": {"plural": "widgets", "kind": "Widget", "shortNames": ["wd"]},
                "versions": [
                    {"name": "v1", "served": true, "storage": true,
                     "schema": {"openAPIV3Schema": {"type": "object"}},
                     "subresources": {"status": {}}},
                    {"name": "v1beta1", "served": false, "storage": false},
                ],
            },
        })
    }

    #[test]
    fn served_versions_become_resources() {
        let mut crd = crd();
        validate(&mut crd).unwrap();
        assert_eq!(crd["spec"]["names"]["listKind"], "WidgetList");
        let definitions = definitions(&crd);
        assert_eq!(definitions.len(), 1);
        let (definition, schema, columns) = &definitions[0];
        assert!(columns.is_empty());
        assert_eq!(definition.plural, "widgets");
        assert_eq!(definition.singular, "widget");
        assert!(definition.namespaced);
        assert_eq!(definition.subresources, ["status"]);
        assert_eq!(definition.short_names, ["wd"]);
        assert_eq!(schema["type"], "object");
        let status = established_status(&crd, 0);
        assert_eq!(status["storedVersions"], json!(["v1"]));
        assert_eq!(status["conditions"][1]["type"], "Established");
    }

    #[test]
    fn a_crd_must_be_named_for_its_plural_and_group() {
        let mut crd = crd();
        crd["metadata"]["name"] = json!("gadgets.example.com");
        let err = validate(&mut crd).unwrap_err();
        assert!(
            err.message
                .contains("must be spec.names.plural+\".\"+spec.group"),
            "{}",
            err.message
        );
    }
}
