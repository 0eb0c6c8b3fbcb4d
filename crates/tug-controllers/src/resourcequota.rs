//! The resource-quota controller: each ResourceQuota's status, its hard
//! limits as its spec states them and what the namespace's objects use
//! of each (counted as the API server's admission charges them, from the
//! shared caches for pods and claims and from lists for other kinds).
//! Quotas are computed again when their spec changes, when pods or
//! claims of their namespace change or go, and every resync period.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, ResourceQuota};
use kube::api::{Api, ApiResource, DynamicObject, ListParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use tug_api::quota::{self, Usage};

use crate::informer::{Informer, key_of};
use crate::workqueue::WorkQueue;

pub const COMPONENT: &str = "resourcequota-controller";
/// Every quota is computed again this often, whatever changed.
const RESYNC: Duration = Duration::from_secs(30);
const WORKERS: usize = 2;

/// The kinds whose objects a quota resource name counts: `(group,
/// plural)`.
pub fn kinds_of(name: &str) -> Vec<(String, String)> {
    if let Some(counted) = name.strip_prefix("count/") {
        let (plural, group) = counted.split_once('.').unwrap_or((counted, ""));
        return vec![(group.into(), plural.into())];
    }
    [
        "pods",
        "services",
        "persistentvolumeclaims",
        "configmaps",
        "secrets",
        "replicationcontrollers",
        "resourcequotas",
    ]
    .into_iter()
    .filter(|plural| quota::concerns("", plural, name))
    .map(|plural| (String::new(), plural.to_string()))
    .collect()
}

/// The status of `quota` over `objects`, each with its kind: `hard` as
/// its spec says, `used` of every hard name by the objects it covers.
pub fn status(quota_object: &Value, objects: &[(&str, &str, Value)]) -> Value {
    let hard = &quota_object["spec"]["hard"];
    let names: BTreeSet<String> = hard
        .as_object()
        .into_iter()
        .flatten()
        .map(|(n, _)| n.clone())
        .collect();
    let mut used: Usage = names
        .iter()
        .map(|n| (n.clone(), Default::default()))
        .collect();
    for (group, plural, object) in objects {
        if !quota::covers(quota_object, group, plural, object) {
            continue;
        }
        let usage: Usage = quota::usage(group, plural, object)
            .into_iter()
            .filter(|(n, _)| names.contains(n))
            .collect();
        quota::add(&mut used, &usage);
    }
    let canonical: serde_json::Map<String, Value> = hard
        .as_object()
        .into_iter()
        .flatten()
        .map(|(n, v)| {
            let shown = v
                .as_str()
                .and_then(quota::Amount::parse)
                .map_or_else(|| v.clone(), |a| json!(a.to_string()));
            (n.clone(), shown)
        })
        .collect();
    json!({"hard": canonical, "used": quota::to_list(&used)})
}

struct Controller {
    client: Client,
    quotas: Informer<ResourceQuota>,
    pods: Informer<Pod>,
    claims: Informer<PersistentVolumeClaim>,
    queue: WorkQueue,
}

impl Controller {
    /// Every quota of `namespace` looks again.
    fn namespace_changed(&self, namespace: &str) {
        for q in self.quotas.in_namespace(namespace) {
            self.queue.add(&key_of(q.as_ref()));
        }
    }

    /// The objects of one kind in `namespace`, as JSON.
    async fn objects(
        &self,
        group: &str,
        plural: &str,
        namespace: &str,
    ) -> anyhow::Result<Vec<Value>> {
        match (group, plural) {
            ("", "pods") => Ok(as_json(self.pods.in_namespace(namespace))),
            ("", "persistentvolumeclaims") => Ok(as_json(self.claims.in_namespace(namespace))),
            ("", "resourcequotas") => Ok(as_json(self.quotas.in_namespace(namespace))),
            _ => {
                let Some(resource) = tug_api::registry::RESOURCES
                    .iter()
                    .find(|r| r.group == group && r.plural == plural && r.namespaced)
                else {
                    return Ok(Vec::new());
                };
                let api_resource = ApiResource {
                    group: group.into(),
                    version: resource.version.into(),
                    api_version: if group.is_empty() {
                        resource.version.into()
                    } else {
                        format!("{group}/{}", resource.version)
                    },
                    kind: resource.kind.into(),
                    plural: plural.into(),
                };
                let api: Api<DynamicObject> =
                    Api::namespaced_with(self.client.clone(), namespace, &api_resource);
                let list = api.list(&ListParams::default()).await?;
                Ok(list
                    .items
                    .iter()
                    .map(|o| serde_json::to_value(o).unwrap_or_default())
                    .collect())
            }
        }
    }

    async fn sync(&self, key: &str) -> anyhow::Result<Option<Duration>> {
        let Some(cached) = self.quotas.get(key) else {
            return Ok(None);
        };
        let namespace = cached.namespace().unwrap_or_default();
        let object = serde_json::to_value(cached.as_ref())?;
        let names: Vec<String> = object["spec"]["hard"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(n, _)| n.clone())
            .collect();
        let kinds: BTreeSet<(String, String)> = names.iter().flat_map(|n| kinds_of(n)).collect();
        let mut objects: Vec<(&str, &str, Value)> = Vec::new();
        let mut listed: BTreeMap<&(String, String), Vec<Value>> = BTreeMap::new();
        for kind in &kinds {
            listed.insert(kind, self.objects(&kind.0, &kind.1, &namespace).await?);
        }
        for (kind, items) in listed {
            for item in items {
                objects.push((kind.0.as_str(), kind.1.as_str(), item));
            }
        }
        let wanted = status(&object, &objects);
        if object["status"] != wanted {
            let mut updated = (*cached).clone();
            updated.metadata.managed_fields = None;
            updated.status = serde_json::from_value(wanted).ok();
            let api: Api<ResourceQuota> = Api::namespaced(self.client.clone(), &namespace);
            match api
                .replace_status(&cached.name_any(), &PostParams::default(), &updated)
                .await
            {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(err) => return Err(err.into()),
            }
        }
        Ok(Some(RESYNC))
    }
}

fn as_json<T: serde::Serialize>(objects: Vec<Arc<T>>) -> Vec<Value> {
    objects
        .iter()
        .map(|o| serde_json::to_value(o.as_ref()).unwrap_or_default())
        .collect()
}

pub(crate) fn start(ctx: &crate::Context) -> crate::Running {
    let controller = Arc::new(Controller {
        client: ctx.client.clone(),
        quotas: ctx.quotas.clone(),
        pods: ctx.pods.clone(),
        claims: ctx.claims.clone(),
        queue: WorkQueue::default(),
    });
    let c = controller.clone();
    ctx.quotas.subscribe(Box::new(move |old, new| {
        let Some(q) = new.or(old) else { return };
        // Its own status writes need no new look; spec changes do.
        let changed = match (old, new) {
            (Some(o), Some(n)) => o.spec != n.spec || n.status.is_none(),
            _ => true,
        };
        if changed {
            c.queue.add(&key_of(q.as_ref()));
        }
        // Quotas count quotas too.
        if old.is_none() || new.is_none() {
            c.namespace_changed(&q.namespace().unwrap_or_default());
        }
    }));
    let c = controller.clone();
    ctx.pods.subscribe(Box::new(move |old, new| {
        // What a pod uses changes when it comes, finishes or goes.
        let counts =
            |p: Option<&Arc<Pod>>| p.map(|p| p.status.as_ref().and_then(|s| s.phase.clone()));
        if counts(old) != counts(new)
            && let Some(pod) = new.or(old)
        {
            c.namespace_changed(&pod.namespace().unwrap_or_default());
        }
    }));
    let c = controller.clone();
    ctx.claims.subscribe(Box::new(move |old, new| {
        if (old.is_none() || new.is_none())
            && let Some(claim) = new.or(old)
        {
            c.namespace_changed(&claim.namespace().unwrap_or_default());
        }
    }));
    crate::Running::workers(COMPONENT, controller.queue.clone(), WORKERS, move |key| {
        let c = controller.clone();
        async move { c.sync(&key).await }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_to_the_kinds_they_count() {
        assert_eq!(
            kinds_of("requests.cpu"),
            [("".to_string(), "pods".to_string())]
        );
        assert_eq!(
            kinds_of("count/deployments.apps"),
            [("apps".to_string(), "deployments".to_string())]
        );
        assert_eq!(
            kinds_of("count/configmaps"),
            [("".to_string(), "configmaps".to_string())]
        );
        assert_eq!(
            kinds_of("requests.storage"),
            [("".to_string(), "persistentvolumeclaims".to_string())]
        );
        assert_eq!(
            kinds_of("services.nodeports"),
            [("".to_string(), "services".to_string())]
        );
    }

    #[test]
    fn the_status_sums_what_the_quota_covers() {
        let q = json!({"spec": {"hard": {"pods": "4", "requests.cpu": "2000m", "requests.memory": "1Gi", "count/configmaps": "5"}}});
        let pod = |cpu: &str, phase: &str| {
            json!({"spec": {"containers": [{"name": "c",
            "resources": {"requests": {"cpu": cpu}}}]}, "status": {"phase": phase}})
        };
        let objects = [
            ("", "pods", pod("500m", "Running")),
            ("", "pods", pod("1", "Pending")),
            ("", "pods", pod("1", "Succeeded")),
            ("", "configmaps", json!({})),
        ];
        let objects: Vec<(&str, &str, Value)> = objects.into_iter().collect();
        assert_eq!(
            status(&q, &objects),
            json!({"hard": {"pods": "4", "requests.cpu": "2", "requests.memory": "1Gi", "count/configmaps": "5"},
                "used": {"pods": "2", "requests.cpu": "1500m", "requests.memory": "0", "count/configmaps": "1"}})
        );
    }
}
