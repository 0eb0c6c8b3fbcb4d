//! Namespace deletion, as upstream's namespace controller does it: a
//! deleted namespace is Terminating while its `kubernetes` finalizer is
//! there; everything in it is deleted (each object as a DELETE of it would:
//! pods on a node get their grace period, objects with finalizers wait for
//! them); once nothing is left, the finalizer is removed and the namespace
//! goes. It lives in the API server until the controller manager exists.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tug_api::registry;
use tug_api::selector::{FieldSelector, LabelSelector};
use tug_store::{PutOptions, RangeRequest};

use crate::rest::ApiState;

/// How often terminating namespaces are looked at again while objects in
/// them are still going.
const RECHECK: Duration = Duration::from_secs(1);

pub async fn run(api: Arc<ApiState>, shutdown: CancellationToken) {
    let namespaces = registry::find("", "v1", "namespaces").expect("namespaces are served");
    let prefix = tug_api::convert::storage_prefix(namespaces);
    loop {
        // From the watch cache: looking costs no store read.
        let terminating: Vec<String> = match api.caches.get(namespaces).await {
            Ok(cache) => cache
                .list(
                    &prefix,
                    &LabelSelector::default(),
                    &FieldSelector::default(),
                    0,
                )
                .items
                .iter()
                .map(|cached| cached.value())
                .filter(|ns| !ns["metadata"]["deletionTimestamp"].is_null())
                .filter_map(|ns| ns["metadata"]["name"].as_str().map(str::to_string))
                .collect(),
            Err(err) => {
                tracing::warn!(error = %err, "reading namespaces failed");
                Vec::new()
            }
        };
        for name in &terminating {
            if let Err(err) = finalize(&api, name).await {
                tracing::warn!(namespace = %name, error = %err, "emptying a namespace failed; retrying");
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(RECHECK) => {}
        }
    }
}

/// Deletes what is in a terminating namespace; once it is empty, removes
/// the `kubernetes` finalizer, and the namespace if nothing else holds it.
async fn finalize(api: &ApiState, name: &str) -> anyhow::Result<()> {
    let mut remaining = 0;
    let mut seen_prefixes = HashSet::new();
    for resource in registry::all() {
        if !resource.namespaced || !resource.stored {
            continue;
        }
        let prefix = format!("{}{name}/", tug_api::convert::storage_prefix(resource));
        // Versions sharing storage are one set of objects.
        if !seen_prefixes.insert(prefix.clone()) {
            continue;
        }
        let listed = api
            .store
            .range(RangeRequest {
                prefix,
                ..RangeRequest::default()
            })
            .await?;
        for kv in listed.kvs {
            remaining += 1;
            let query = HashMap::new();
            // Gone meanwhile, or waiting for its grace period or
            // finalizers: looked at again on the next pass.
            let _ = api.delete_object(resource, kv, &json!({}), &query).await;
        }
    }
    if remaining > 0 {
        return Ok(());
    }
    let key = format!(
        "{}{name}",
        tug_api::convert::storage_prefix(
            registry::find("", "v1", "namespaces").expect("namespaces are served"),
        )
    );
    let Some(kv) = api.store.get(&key, None).await?.kv else {
        return Ok(());
    };
    let mut namespace: Value = serde_json::from_slice(&kv.value)?;
    if let Some(finalizers) = namespace["spec"]["finalizers"].as_array_mut() {
        finalizers.retain(|f| f != "kubernetes");
    }
    let held = namespace["metadata"]["finalizers"]
        .as_array()
        .is_some_and(|f| !f.is_empty())
        || namespace["spec"]["finalizers"]
            .as_array()
            .is_some_and(|f| !f.is_empty());
    if held {
        api.store
            .update(
                &key,
                bytes::Bytes::from(serde_json::to_vec(&namespace)?),
                kv.mod_revision,
                PutOptions::default(),
            )
            .await?;
    } else {
        api.store.delete(&key, Some(kv.mod_revision)).await?;
    }
    Ok(())
}
