//! The LimitRanger and ResourceQuota admission plugins, on creation: a
//! new pod gets its namespace's LimitRange defaults and is held to their
//! bounds (a claim to its storage bounds); then every ResourceQuota of
//! the namespace that limits what the new object uses must have room for
//! it, and is charged at once (its status.used, written with the
//! revision read as precondition) so that concurrent creations cannot
//! both take the last of it. The resource-quota controller recomputes
//! the usage from what exists.

use std::collections::BTreeSet;

use serde_json::{Value, json};
use tug_api::quota;
use tug_api::registry::Resource;
use tug_api::selector::{FieldSelector, LabelSelector};

use crate::rest::{ApiState, decode, encode, key};
use crate::status::{ApiError, from_store};

/// Rounds of reading and charging the quotas when writes keep racing.
const CHARGE_ATTEMPTS: usize = 8;

fn find(plural: &str) -> &'static Resource {
    tug_api::registry::find("", "v1", plural).expect("core kinds are served")
}

/// What one quota is charged for an object.
struct Charge {
    key: String,
    revision: i64,
    quota: Value,
}

impl ApiState {
    /// The objects of a core kind in `namespace`, from the watch cache.
    async fn in_namespace(&self, plural: &str, namespace: &str) -> Result<Vec<Value>, ApiError> {
        let resource = find(plural);
        let cache = self.caches.get(resource).await.map_err(from_store)?;
        let prefix = format!("{}{namespace}/", tug_api::convert::storage_prefix(resource));
        let listed = cache.list(
            &prefix,
            &LabelSelector::default(),
            &FieldSelector::default(),
            0,
        );
        Ok(listed.items.iter().map(|o| o.value()).collect())
    }

    /// LimitRanger: defaults and bounds for a new pod or claim.
    pub(crate) async fn admit_limits(
        &self,
        resource: &Resource,
        namespace: &str,
        name: &str,
        object: &mut Value,
    ) -> Result<(), ApiError> {
        let pod = match (resource.group, resource.plural) {
            ("", "pods") => true,
            ("", "persistentvolumeclaims") => false,
            _ => return Ok(()),
        };
        let ranges = self.in_namespace("limitranges", namespace).await?;
        if ranges.is_empty() {
            return Ok(());
        }
        let checked = if pod {
            let checked = tug_api::limits::admit_pod(object, &ranges);
            let qos = tug_api::defaults::qos_class(&object["spec"]);
            object["status"]["qosClass"] = json!(qos);
            checked
        } else {
            tug_api::limits::admit_claim(object, &ranges)
        };
        checked
            .map_err(|message| ApiError::forbidden(resource.plural, resource.group, name, &message))
    }

    /// ResourceQuota: refuses what a quota of the namespace has no room
    /// for, and charges the quotas for the rest (but on a dry run).
    pub(crate) async fn admit_quota(
        &self,
        resource: &Resource,
        namespace: &str,
        name: &str,
        object: &Value,
        dry_run: bool,
    ) -> Result<(), ApiError> {
        let quotas = self.in_namespace("resourcequotas", namespace).await?;
        let concerned: Vec<&Value> = quotas
            .iter()
            .filter(|q| {
                q["spec"]["hard"].as_object().is_some_and(|hard| {
                    hard.keys()
                        .any(|n| quota::concerns(resource.group, resource.plural, n))
                })
            })
            .collect();
        if concerned.is_empty() {
            return Ok(());
        }
        let usage = quota::usage(resource.group, resource.plural, object);
        if usage.is_empty() {
            return Ok(());
        }
        let forbidden =
            |message: String| ApiError::forbidden(resource.plural, resource.group, name, &message);
        let quotas_resource = find("resourcequotas");
        let mut pending: Vec<String> = concerned
            .iter()
            .filter_map(|q| q["metadata"]["name"].as_str().map(String::from))
            .collect();
        for _ in 0..CHARGE_ATTEMPTS {
            // Read each quota fresh, check it, and charge it.
            let mut charges = Vec::new();
            for quota_name in &pending {
                let key = key(quotas_resource, Some(namespace), quota_name);
                let Some(kv) = self.store.get(&key, None).await.map_err(from_store)?.kv else {
                    continue;
                };
                let mut current = decode(quotas_resource, &kv)?;
                if !quota::covers(&current, resource.group, resource.plural, object) {
                    continue;
                }
                let hard = quota::parse_list(&current["status"]["hard"]);
                let limited: BTreeSet<String> = current["spec"]["hard"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(n, _)| n.clone())
                    .filter(|n| quota::concerns(resource.group, resource.plural, n))
                    .collect();
                if limited.is_empty() {
                    continue;
                }
                if resource.group.is_empty() && resource.plural == "pods" {
                    quota::pod_constraints(&limited, object).map_err(|message| {
                        forbidden(format!("failed quota: {quota_name}: {message}"))
                    })?;
                }
                let mut used = quota::parse_list(&current["status"]["used"]);
                let known = limited
                    .iter()
                    .all(|n| hard.contains_key(n) && used.contains_key(n));
                if !known {
                    let names: Vec<&str> = limited.iter().map(String::as_str).collect();
                    return Err(forbidden(format!(
                        "status unknown for quota: {quota_name}, resources: {}",
                        names.join(",")
                    )));
                }
                let requested: quota::Usage = usage
                    .iter()
                    .filter(|(n, _)| limited.contains(*n))
                    .map(|(n, a)| (n.clone(), *a))
                    .collect();
                let mut wanted = used.clone();
                quota::add(&mut wanted, &requested);
                let exceeded: BTreeSet<String> = limited
                    .iter()
                    .filter(|n| {
                        let total = wanted.get(*n).map_or(0, |a| a.milli);
                        hard.get(*n).is_some_and(|h| total > h.milli)
                    })
                    .cloned()
                    .collect();
                if !exceeded.is_empty() {
                    return Err(forbidden(format!(
                        "exceeded quota: {quota_name}, requested: {}, used: {}, limited: {}",
                        quota::pretty(&requested, &exceeded),
                        quota::pretty(&used, &exceeded),
                        quota::pretty(&hard, &exceeded),
                    )));
                }
                if requested.is_empty() {
                    continue;
                }
                quota::add(&mut used, &requested);
                current["status"]["used"] = quota::to_list(&used);
                charges.push(Charge {
                    key,
                    revision: kv.mod_revision,
                    quota: current,
                });
            }
            if dry_run {
                return Ok(());
            }
            let mut raced = Vec::new();
            for charge in charges {
                let written = self
                    .store
                    .update(
                        &charge.key,
                        encode(quotas_resource, &charge.quota),
                        charge.revision,
                        Default::default(),
                    )
                    .await;
                match written {
                    Ok(_) | Err(tug_store::Error::NotFound { .. }) => {}
                    Err(tug_store::Error::Conflict { .. }) => raced.push(
                        charge.quota["metadata"]["name"]
                            .as_str()
                            .unwrap_or_default()
                            .to_string(),
                    ),
                    Err(err) => return Err(from_store(err)),
                }
            }
            if raced.is_empty() {
                return Ok(());
            }
            pending = raced;
        }
        Err(ApiError::new_conflict(format!(
            "Operation cannot be fulfilled on resourcequotas: the quotas of namespace {namespace} kept changing while charging them; try again"
        )))
    }
}
