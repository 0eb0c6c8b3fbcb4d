//! Adoption and release (upstream's ControllerRefManager): an owner
//! claims the objects its selector takes, adopting orphans and releasing
//! its own that no longer match, through patches of their
//! ownerReferences.

use std::fmt::Debug;
use std::sync::Arc;

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use kube::api::{Api, Patch, PatchParams};
use kube::{Client, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::informer::Informer;
use crate::pods;

/// The owner side of a claim.
pub struct Owner<'a> {
    pub meta: &'a ObjectMeta,
    pub api_version: &'static str,
    pub kind: &'static str,
    pub selector: Option<&'a LabelSelector>,
}

/// The objects `owner` controls once matching orphans are adopted and
/// non-matching ones released; `eligible` filters both (active pods,
/// say). `recheck` is asked once before the first adoption whether the
/// owner still exists as cached (an uncached read).
pub async fn claim<K, R>(
    client: &Client,
    informer: &Informer<K>,
    owner: Owner<'_>,
    eligible: impl Fn(&K) -> bool,
    recheck: R,
) -> anyhow::Result<Vec<Arc<K>>>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + Serialize
        + Debug
        + Send
        + Sync
        + 'static,
    R: AsyncFnOnce() -> anyhow::Result<()>,
{
    let uid = owner.meta.uid.clone().unwrap_or_default();
    let namespace = owner.meta.namespace.clone().unwrap_or_default();
    let deleting = owner.meta.deletion_timestamp.is_some();
    let api: Api<K> = Api::namespaced(client.clone(), &namespace);
    let params = PatchParams::default();
    let mut claimed = Vec::new();
    for object in informer.indexed(&format!("owner:{uid}")) {
        if !eligible(&object) {
            continue;
        }
        if pods::selects(owner.selector, object.meta().labels.as_ref()) {
            claimed.push(object);
        } else if !deleting {
            let patch = json!({"metadata": {
                "ownerReferences": [{"$patch": "delete", "uid": uid}],
                "uid": object.meta().uid,
            }});
            let name = object.meta().name.clone().unwrap_or_default();
            match api.patch(&name, &params, &Patch::Strategic(&patch)).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 || s.code == 422 => {}
                Err(err) => return Err(err.into()),
            }
        }
    }
    if deleting {
        return Ok(claimed);
    }
    let mut recheck = Some(recheck);
    for object in informer.indexed(&format!("orphan:{namespace}")) {
        let meta = object.meta();
        if !eligible(&object)
            || meta.deletion_timestamp.is_some()
            || !pods::selects(owner.selector, meta.labels.as_ref())
        {
            continue;
        }
        if let Some(recheck) = recheck.take() {
            recheck().await?;
        }
        let reference = pods::controller_ref(owner.api_version, owner.kind, owner.meta);
        let patch = json!({"metadata": {"ownerReferences": [reference], "uid": meta.uid}});
        let name = meta.name.clone().unwrap_or_default();
        match api.patch(&name, &params, &Patch::Strategic(&patch)).await {
            Ok(adopted) => claimed.push(Arc::new(adopted)),
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(err) => return Err(err.into()),
        }
    }
    Ok(claimed)
}

/// Fails unless the owner named by `meta` still exists with the same UID
/// and is not being deleted, read past the cache.
pub async fn still_there<K>(client: &Client, meta: &ObjectMeta) -> anyhow::Result<()>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + Debug,
{
    let namespace = meta.namespace.as_deref().unwrap_or_default();
    let name = meta.name.as_deref().unwrap_or_default();
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    let fresh = api.get(name).await?;
    if fresh.meta().uid != meta.uid {
        anyhow::bail!(
            "original {} {namespace}/{name} is gone: got uid {:?}, wanted {:?}",
            K::kind(&()),
            fresh.meta().uid,
            meta.uid
        );
    }
    if let Some(at) = &fresh.meta().deletion_timestamp {
        anyhow::bail!("{namespace}/{name} has just been deleted at {}", at.0);
    }
    Ok(())
}
