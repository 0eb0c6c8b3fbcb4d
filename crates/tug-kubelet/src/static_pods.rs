//! Static pods, as kubelet's: the Pod manifests in
//! `<data-dir>/agent/pod-manifests` (YAML or JSON, one pod a file) run on
//! this node whatever the API says, read again every 20 s. Each is named
//! `<name>-<node>` and has a UID of its own, the hash of its manifest and
//! the node; the API shows it as a mirror pod (annotation
//! `kubernetes.io/config.mirror`, owned by the Node) whose status the
//! agent writes. Deleting the mirror pod only makes the agent put it back;
//! removing the file stops the pod.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, PostParams, Preconditions};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

pub const SOURCE: &str = "kubernetes.io/config.source";
pub const HASH: &str = "kubernetes.io/config.hash";
pub const MIRROR: &str = "kubernetes.io/config.mirror";
/// How often the manifests are read (kubelet's --file-check-frequency).
const CHECK_EVERY: Duration = Duration::from_secs(20);
/// A manifest, read at most.
const MANIFEST_BYTES_MAX: u64 = 1024 * 1024;

/// Whether an API pod is a mirror of a static pod.
pub fn is_mirror(pod: &Pod) -> bool {
    pod.metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(MIRROR))
}

/// The static pods of the manifests in `dir`, by UID; a file that is not a
/// valid Pod is skipped with a warning.
pub fn read_manifests(dir: &Path, node: &str) -> BTreeMap<String, Pod> {
    let mut pods = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return pods;
    };
    let mut paths: Vec<_> = entries.filter_map(|e| e.ok()).map(|e| e.path()).collect();
    paths.sort();
    for path in paths {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        let wanted = !name.starts_with('.')
            && (name.ends_with(".yaml") || name.ends_with(".yml") || name.ends_with(".json"));
        if !wanted || !path.is_file() {
            continue;
        }
        let text = match std::fs::metadata(&path) {
            Ok(meta) if meta.len() > MANIFEST_BYTES_MAX => {
                tracing::warn!(path = %path.display(), "a static pod manifest over 1 MiB is skipped");
                continue;
            }
            _ => std::fs::read_to_string(&path).unwrap_or_default(),
        };
        match static_pod(&text, node) {
            Ok(pod) => {
                let uid = pod.metadata.uid.clone().unwrap_or_default();
                pods.insert(uid, pod);
            }
            Err(err) => {
                tracing::warn!(path = %path.display(), error = %err, "a static pod manifest is skipped")
            }
        }
    }
    pods
}

/// The static pod of one manifest on `node`.
pub fn static_pod(text: &str, node: &str) -> Result<Pod, String> {
    let mut value: Value = serde_saphyr::from_str(text).map_err(|e| e.to_string())?;
    if value["kind"] != "Pod" || value["apiVersion"] != "v1" {
        return Err("not a v1 Pod".into());
    }
    let name = value["metadata"]["name"]
        .as_str()
        .filter(|n| !n.is_empty())
        .ok_or("the pod has no name")?
        .to_string();
    let digest = ring::digest::digest(&ring::digest::SHA256, format!("{text}\n{node}").as_bytes());
    let uid: String = digest.as_ref()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let metadata = &mut value["metadata"];
    metadata["name"] = json!(format!("{name}-{node}"));
    if metadata["namespace"].as_str().is_none_or(str::is_empty) {
        metadata["namespace"] = json!("default");
    }
    metadata["uid"] = json!(uid);
    if !metadata["annotations"].is_object() {
        metadata["annotations"] = json!({});
    }
    metadata["annotations"][SOURCE] = json!("file");
    metadata["annotations"][HASH] = json!(uid);
    value["spec"]["nodeName"] = json!(node);
    tug_api::defaults::apply("", "pods", &mut value);
    serde_json::from_value(value).map_err(|e| e.to_string())
}

/// The mirror pod of a static pod, as created in the API.
fn mirror_of(pod: &Pod, node: &Node) -> Pod {
    let mut mirror = pod.clone();
    let hash = pod.metadata.uid.clone().unwrap_or_default();
    mirror.metadata.uid = None;
    mirror.metadata.resource_version = None;
    mirror
        .metadata
        .annotations
        .get_or_insert_with(Default::default)
        .insert(MIRROR.into(), hash);
    mirror.metadata.owner_references = Some(vec![
        k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
            api_version: "v1".into(),
            kind: "Node".into(),
            name: node.metadata.name.clone().unwrap_or_default(),
            uid: node.metadata.uid.clone().unwrap_or_default(),
            controller: Some(true),
            ..Default::default()
        },
    ]);
    mirror.status = None;
    mirror
}

/// What the worker side of the agent needs from here.
pub trait Host: Send + Sync + 'static {
    /// The static pods are now these (by UID); told once at least, after
    /// the directory's first reading.
    fn set_static(&self, pods: BTreeMap<String, Pod>);
    /// The mirror of the static pod `uid` is the API pod `mirror_uid`.
    fn set_mirror(&self, uid: &str, mirror_uid: Option<String>);
}

/// Reads the manifests and keeps the mirror pods until `shutdown`.
pub async fn run(
    client: kube::Client,
    dir: std::path::PathBuf,
    node: String,
    host: Arc<dyn Host>,
    poke: Arc<tokio::sync::Notify>,
    shutdown: CancellationToken,
) {
    let mut known: BTreeMap<String, Pod> = BTreeMap::new();
    let mut first = true;
    loop {
        let pods = read_manifests(&dir, &node);
        // The first reading is told even when empty: the directory has
        // been read.
        if first || pods.keys().ne(known.keys()) {
            first = false;
            host.set_static(pods.clone());
        }
        let gone: Vec<Pod> = known
            .iter()
            .filter(|(uid, _)| !pods.contains_key(*uid))
            .map(|(_, pod)| pod.clone())
            .collect();
        known = pods;
        for pod in gone {
            if let Err(err) = remove_mirror(&client, &pod, None).await {
                tracing::warn!(error = %format!("{err:#}"), "removing a mirror pod");
            }
        }
        if let Err(err) = keep_mirrors(&client, &node, &known, host.as_ref()).await {
            tracing::warn!(error = %format!("{err:#}"), "keeping the mirror pods");
        }
        // Poked when a mirror pod changes in the API (a user deletes it).
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(CHECK_EVERY) => {}
            _ = poke.notified() => {}
        }
    }
}

async fn keep_mirrors(
    client: &kube::Client,
    node_name: &str,
    pods: &BTreeMap<String, Pod>,
    host: &dyn Host,
) -> anyhow::Result<()> {
    if pods.is_empty() {
        return Ok(());
    }
    let node = Api::<Node>::all(client.clone()).get(node_name).await?;
    let mut mirrors: HashMap<String, Option<String>> = HashMap::new();
    for (uid, pod) in pods {
        let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
        let name = pod.metadata.name.as_deref().unwrap_or_default();
        let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
        let existing = api.get_opt(name).await?;
        let current = existing.as_ref().filter(|m| {
            m.metadata.deletion_timestamp.is_none()
                && m.metadata.annotations.as_ref().and_then(|a| a.get(MIRROR)) == Some(uid)
        });
        if let Some(mirror) = current {
            mirrors.insert(uid.clone(), mirror.metadata.uid.clone());
            continue;
        }
        if let Some(other) = &existing {
            if !is_mirror(other) {
                tracing::warn!(pod = %name, "a pod of a static pod's name is not its mirror; left alone");
                continue;
            }
            // Deleted by a user, or of an older manifest: replaced.
            remove_mirror(client, pod, other.metadata.uid.clone()).await?;
        }
        match api
            .create(&PostParams::default(), &mirror_of(pod, &node))
            .await
        {
            Ok(created) => {
                mirrors.insert(uid.clone(), created.metadata.uid.clone());
            }
            Err(kube::Error::Api(response)) if response.code == 409 => {}
            Err(err) => return Err(err.into()),
        }
    }
    for (uid, mirror) in mirrors {
        host.set_mirror(&uid, mirror);
    }
    Ok(())
}

/// Deletes the mirror of `pod` at once (the one of `uid` if given).
async fn remove_mirror(
    client: &kube::Client,
    pod: &Pod,
    uid: Option<String>,
) -> anyhow::Result<()> {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let params = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: uid.map(|uid| Preconditions {
            uid: Some(uid),
            resource_version: None,
        }),
        ..Default::default()
    };
    match api.delete(name, &params).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(response)) if matches!(response.code, 404 | 409) => Ok(()),
        Err(err) => Err(err.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manifest_becomes_a_static_pod_of_this_node() {
        let text = "apiVersion: v1\nkind: Pod\nmetadata: {name: web}\nspec:\n  containers: [{name: c, image: busybox}]\n";
        let pod = static_pod(text, "n1").unwrap();
        assert_eq!(pod.metadata.name.as_deref(), Some("web-n1"));
        assert_eq!(pod.metadata.namespace.as_deref(), Some("default"));
        let uid = pod.metadata.uid.clone().unwrap();
        assert_eq!(uid.len(), 32);
        let annotations = pod.metadata.annotations.clone().unwrap();
        assert_eq!(annotations[SOURCE], "file");
        assert_eq!(annotations[HASH], uid);
        let spec = pod.spec.unwrap();
        assert_eq!(spec.node_name.as_deref(), Some("n1"));
        assert_eq!(spec.restart_policy.as_deref(), Some("Always"));
        // Another node, or another manifest, is another pod.
        assert_ne!(static_pod(text, "n2").unwrap().metadata.uid.unwrap(), uid);
        let changed = text.replace("busybox", "busybox:2");
        assert_ne!(
            static_pod(&changed, "n1").unwrap().metadata.uid.unwrap(),
            uid
        );
        assert!(
            static_pod(
                "kind: ConfigMap\napiVersion: v1\nmetadata: {name: x}\n",
                "n1"
            )
            .is_err()
        );
        assert!(static_pod("apiVersion: v1\nkind: Pod\nmetadata: {}\n", "n1").is_err());
        assert!(static_pod(": not yaml [", "n1").is_err());
    }
}
