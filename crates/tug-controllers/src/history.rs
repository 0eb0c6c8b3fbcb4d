//! ControllerRevisions: the pod-template history of StatefulSets and
//! DaemonSets, as upstream's controller history keeps it. A revision's
//! data is the strategic merge patch that puts its template back (what
//! `kubectl rollout undo` applies); its name is the owner's with the
//! hash of that data; its number orders the history. Going back to an
//! old template renumbers its revision rather than making a new one.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::runtime::RawExtension;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

use crate::deployment::hash_name;
use crate::pods;

/// The label a StatefulSet's revisions carry their hash under.
pub const HASH_LABEL: &str = "controller.kubernetes.io/hash";
/// Names stay within a label value's 253 characters, hash included.
const PREFIX_MAX: usize = 223;
/// Collisions tried before a sync gives up (and retries later).
const COLLISIONS_MAX: i32 = 20;

/// The data of a template's revision: `{"spec": {"template": ...}}`
/// with the template marked to replace, not merge.
pub fn patch_of(template: &PodTemplateSpec) -> Value {
    let mut template = serde_json::to_value(template).unwrap_or_else(|_| json!({}));
    if let Some(fields) = template.as_object_mut() {
        fields.insert("$patch".into(), json!("replace"));
        // As Go's encoder writes an unset time, which kubectl compares
        // against byte for byte.
        let meta = fields.entry("metadata").or_insert_with(|| json!({}));
        if let Some(meta) = meta.as_object_mut() {
            meta.entry("creationTimestamp").or_insert(Value::Null);
        }
    }
    json!({"spec": {"template": template}})
}

/// The hash of a revision's data and the owner's collision count.
pub fn hash(data: &Value, collisions: Option<i32>) -> String {
    hash_name(&serde_json::to_vec(data).unwrap_or_default(), collisions)
}

/// `<owner>-<hash>`, the owner's name cut short enough.
pub fn name(owner: &str, hash: &str) -> String {
    let mut end = owner.len().min(PREFIX_MAX);
    while !owner.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}-{hash}", &owner[..end])
}

fn data(revision: &ControllerRevision) -> Option<&Value> {
    revision.data.as_ref().map(|d| &d.0)
}

/// Revisions oldest first.
pub fn sorted(history: &[Arc<ControllerRevision>]) -> Vec<Arc<ControllerRevision>> {
    let mut sorted = history.to_vec();
    sorted.sort_by(|a, b| {
        (a.revision, a.metadata.name.as_deref()).cmp(&(b.revision, b.metadata.name.as_deref()))
    });
    sorted
}

/// The number the next revision gets.
pub fn next_number(history: &[Arc<ControllerRevision>]) -> i64 {
    history.iter().map(|r| r.revision).max().unwrap_or(0) + 1
}

/// What the history needs for the owner's current template.
#[derive(Debug, PartialEq)]
pub enum Step {
    /// The latest revision is the template's.
    Keep(String),
    /// An older revision is: it becomes the latest.
    Renumber(String, i64),
    /// No revision is: one is made with this number.
    Create(i64),
}

pub fn step(history: &[Arc<ControllerRevision>], wanted: &Value) -> Step {
    let sorted = sorted(history);
    let Some(equal) = sorted.iter().rev().find(|r| data(r) == Some(wanted)) else {
        return Step::Create(next_number(history));
    };
    let name = equal.name_any();
    if sorted
        .last()
        .is_some_and(|latest| latest.name_any() == name)
    {
        Step::Keep(name)
    } else {
        Step::Renumber(name, next_number(history))
    }
}

/// The revisions to delete so that at most `limit` remain beside those
/// in `keep` (in use by pods, or current): the oldest go.
pub fn truncate(
    history: &[Arc<ControllerRevision>],
    keep: &HashSet<String>,
    limit: usize,
) -> Vec<String> {
    let spare: Vec<String> = sorted(history)
        .iter()
        .map(|r| r.name_any())
        .filter(|n| !keep.contains(n))
        .collect();
    let excess = spare.len().saturating_sub(limit);
    spare.into_iter().take(excess).collect()
}

/// Who the history is of.
pub struct Owner<'a> {
    pub meta: &'a ObjectMeta,
    pub api_version: &'static str,
    pub kind: &'static str,
    /// The labels a revision gets (the template's); the hash is added
    /// under `hash_label`.
    pub labels: BTreeMap<String, String>,
    pub hash_label: &'static str,
}

/// The revision of `wanted`, made or renumbered as [`step`] says; a new
/// one is named by `hash_for` the collision count. A name taken by other
/// data bumps `collisions` (the owner's status keeps it) and tries again.
pub async fn update_revision(
    client: &Client,
    owner: &Owner<'_>,
    history: &[Arc<ControllerRevision>],
    wanted: Value,
    hash_for: &(dyn Fn(i32) -> String + Send + Sync),
    collisions: &mut i32,
) -> anyhow::Result<ControllerRevision> {
    let namespace = owner.meta.namespace.clone().unwrap_or_default();
    let api: Api<ControllerRevision> = Api::namespaced(client.clone(), &namespace);
    let number = match step(history, &wanted) {
        Step::Keep(name) => {
            let found = history.iter().find(|r| r.name_any() == name);
            return Ok(found.map(|r| (**r).clone()).unwrap_or_default());
        }
        Step::Renumber(name, number) => {
            let patch = json!({"revision": number});
            return Ok(api
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await?);
        }
        Step::Create(number) => number,
    };
    for _ in 0..COLLISIONS_MAX {
        let hash = hash_for(*collisions);
        let mut labels = owner.labels.clone();
        labels.insert(owner.hash_label.into(), hash.clone());
        let revision = ControllerRevision {
            metadata: ObjectMeta {
                name: Some(name(owner.meta.name.as_deref().unwrap_or_default(), &hash)),
                namespace: Some(namespace.clone()),
                labels: Some(labels),
                annotations: owner.meta.annotations.clone(),
                owner_references: Some(vec![pods::controller_ref(
                    owner.api_version,
                    owner.kind,
                    owner.meta,
                )]),
                ..ObjectMeta::default()
            },
            data: Some(RawExtension(wanted.clone())),
            revision: number,
        };
        match api.create(&PostParams::default(), &revision).await {
            Ok(made) => return Ok(made),
            Err(kube::Error::Api(s)) if s.code == 409 => {
                let existing = api.get(&revision.name_any()).await?;
                let ours = existing
                    .metadata
                    .owner_references
                    .iter()
                    .flatten()
                    .any(|r| Some(&r.uid) == owner.meta.uid.as_ref());
                if ours && data(&existing) == Some(&wanted) {
                    return Ok(existing);
                }
                *collisions += 1;
            }
            Err(err) => return Err(err.into()),
        }
    }
    anyhow::bail!("no free name for a new revision after {COLLISIONS_MAX} collisions")
}

/// Deletes `names`; those already gone are fine.
pub async fn delete(client: &Client, namespace: &str, names: &[String]) -> anyhow::Result<()> {
    let api: Api<ControllerRevision> = Api::namespaced(client.clone(), namespace);
    for name in names {
        match api.delete(name, &Default::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(err) => return Err(err.into()),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn revision(name: &str, number: i64, image: &str) -> Arc<ControllerRevision> {
        Arc::new(ControllerRevision {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..ObjectMeta::default()
            },
            data: Some(RawExtension(patch_of(&template(image)))),
            revision: number,
        })
    }

    fn template(image: &str) -> PodTemplateSpec {
        serde_json::from_value(json!({"spec": {"containers": [{"name": "c", "image": image}]}}))
            .unwrap()
    }

    #[test]
    fn a_revision_is_a_replacing_patch_named_by_its_hash() {
        let data = patch_of(&template("web:1"));
        assert_eq!(data["spec"]["template"]["$patch"], "replace");
        assert_eq!(
            serde_json::to_string(&data["spec"]["template"]["metadata"]).unwrap(),
            r#"{"creationTimestamp":null}"#,
            "as Go writes an unset time"
        );
        assert_eq!(
            data["spec"]["template"]["spec"]["containers"][0]["image"],
            "web:1"
        );
        let h = hash(&data, None);
        assert_eq!(h, hash(&patch_of(&template("web:1")), None));
        assert_ne!(h, hash(&patch_of(&template("web:2")), None));
        assert_ne!(h, hash(&data, Some(1)), "a collision changes the name");
        assert!(h.chars().all(|c| "456789bcdf".contains(c)));
        assert_eq!(name("web", "5d9c"), "web-5d9c");
        assert_eq!(name(&"x".repeat(300), "5d9c").len(), 223 + 5);
    }

    #[test]
    fn the_history_keeps_renumbers_or_grows() {
        let history = vec![revision("w-1", 1, "web:1"), revision("w-2", 2, "web:2")];
        assert_eq!(
            step(&history, &patch_of(&template("web:2"))),
            Step::Keep("w-2".into())
        );
        assert_eq!(
            step(&history, &patch_of(&template("web:1"))),
            Step::Renumber("w-1".into(), 3),
            "an undo makes the old revision the latest"
        );
        assert_eq!(
            step(&history, &patch_of(&template("web:3"))),
            Step::Create(3)
        );
        assert_eq!(step(&[], &patch_of(&template("web:1"))), Step::Create(1));
    }

    #[test]
    fn truncation_drops_the_oldest_spare_revisions() {
        let history: Vec<_> = (1..=5)
            .map(|n| revision(&format!("w-{n}"), n, &format!("web:{n}")))
            .collect();
        let keep: HashSet<String> = ["w-1".to_string(), "w-5".to_string()].into();
        assert_eq!(truncate(&history, &keep, 2), ["w-2"]);
        assert_eq!(truncate(&history, &keep, 0), ["w-2", "w-3", "w-4"]);
        assert!(truncate(&history, &keep, 10).is_empty());
    }
}
