//! The StatefulSet controller: pods with stable names (`<set>-<ordinal>`),
//! stable hostnames under the set's Service, and a claim per volume claim
//! template that outlives them; made in order, each waiting for the one
//! before to be Running and Ready (OrderedReady), or all at once
//! (Parallel); removed from the highest ordinal down; rolled from the
//! highest ordinal down to the partition, one at a time. The template's
//! history is kept as ControllerRevisions ([`history`]).

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{ControllerRevision, StatefulSet, StatefulSetStatus};
use k8s_openapi::api::core::v1::{
    PersistentVolumeClaim, PersistentVolumeClaimVolumeSource, Pod, PodTemplateSpec, Volume,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};

use crate::claim;
use crate::events::{self, Recorder};
use crate::history;
use crate::informer::{Informer, key_of};
use crate::pods;
use crate::workqueue::WorkQueue;

pub const COMPONENT: &str = "statefulset-controller";
pub const POD_NAME_LABEL: &str = "statefulset.kubernetes.io/pod-name";
pub const POD_INDEX_LABEL: &str = "apps.kubernetes.io/pod-index";
/// The pod's revision: the full name of its ControllerRevision.
pub const REVISION_LABEL: &str = "controller-revision-hash";
const WORKERS: usize = 2;

/// The ordinal in a pod's name, if the name is `<set>-<ordinal>`.
pub fn ordinal_of(set: &str, pod: &str) -> Option<i32> {
    let digits = pod.strip_prefix(set)?.strip_prefix('-')?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().filter(|n| *n >= 0)
}

/// The claim of template `claim` for the pod of `ordinal`.
pub fn claim_name(claim: &str, set: &str, ordinal: i32) -> String {
    format!("{claim}-{set}-{ordinal}")
}

/// The claims the pod of `ordinal` uses: the set's templates, named for
/// the pod, labelled with the set's selector labels.
pub fn claims_for(set: &StatefulSet, ordinal: i32) -> Vec<PersistentVolumeClaim> {
    let spec = set.spec.clone().unwrap_or_default();
    let set_name = set.name_any();
    let selector_labels = spec.selector.match_labels.clone().unwrap_or_default();
    spec.volume_claim_templates
        .unwrap_or_default()
        .into_iter()
        .map(|template| {
            let mut labels = template.metadata.labels.clone().unwrap_or_default();
            labels.extend(selector_labels.clone());
            let name = claim_name(&template.name_any(), &set_name, ordinal);
            let owners = claim_owners(set, ordinal, None, &[]);
            PersistentVolumeClaim {
                metadata: ObjectMeta {
                    name: Some(name),
                    namespace: set.metadata.namespace.clone(),
                    labels: Some(labels),
                    annotations: template.metadata.annotations.clone(),
                    owner_references: Some(owners).filter(|o| !o.is_empty()),
                    ..ObjectMeta::default()
                },
                spec: template.spec.clone(),
                status: None,
            }
        })
        .collect()
}

/// Whether the pod of `ordinal` is within the set's replicas.
fn in_range(set: &StatefulSet, ordinal: i32) -> bool {
    let spec = set.spec.as_ref();
    let start = spec
        .and_then(|s| s.ordinals.as_ref())
        .and_then(|o| o.start)
        .unwrap_or(0);
    let replicas = spec.and_then(|s| s.replicas).unwrap_or(1);
    (start..start + replicas).contains(&ordinal)
}

/// The owners a claim of the pod of `ordinal` should have, as the set's
/// persistentVolumeClaimRetentionPolicy says: the set when claims go
/// with it (whenDeleted Delete) and the pod is in range; the pod itself
/// when claims go on scale-down (whenScaled Delete) and it is beyond the
/// replicas; none to keep them (Retain). `others` are the claim's
/// current owners: those neither the set nor the pod stay.
pub fn claim_owners(
    set: &StatefulSet,
    ordinal: i32,
    pod: Option<&Pod>,
    others: &[OwnerReference],
) -> Vec<OwnerReference> {
    let policy = set
        .spec
        .as_ref()
        .and_then(|s| s.persistent_volume_claim_retention_policy.as_ref());
    let deletes = |which: Option<&String>| which.map(String::as_str) == Some("Delete");
    let when_deleted = deletes(policy.and_then(|p| p.when_deleted.as_ref()));
    let when_scaled = deletes(policy.and_then(|p| p.when_scaled.as_ref()));
    let pod_name = format!("{}-{ordinal}", set.name_any());
    let mut owners: Vec<OwnerReference> = others
        .iter()
        .filter(|o| {
            let set_ref = o.kind == "StatefulSet" && o.name == set.name_any();
            let pod_ref = o.kind == "Pod" && o.name == pod_name;
            !set_ref && !pod_ref
        })
        .cloned()
        .collect();
    if in_range(set, ordinal) {
        if when_deleted {
            owners.push(pods::controller_ref(
                "apps/v1",
                "StatefulSet",
                &set.metadata,
            ));
        }
    } else if when_scaled && let Some(pod) = pod {
        owners.push(pods::controller_ref("v1", "Pod", &pod.metadata));
    }
    owners
}

/// The pod of `ordinal` made from `template` (of revision `revision`):
/// its name, hostname and subdomain, identity labels, and the claims as
/// volumes in place of template volumes of the same names.
pub fn new_pod(set: &StatefulSet, template: &PodTemplateSpec, ordinal: i32, revision: &str) -> Pod {
    let owner = pods::controller_ref("apps/v1", "StatefulSet", &set.metadata);
    let mut pod = pods::from_template(template, &set.metadata, owner);
    let name = format!("{}-{ordinal}", set.name_any());
    pod.metadata.generate_name = None;
    pod.metadata.name = Some(name.clone());
    let labels = pod.metadata.labels.get_or_insert_with(BTreeMap::new);
    labels.insert(POD_NAME_LABEL.into(), name.clone());
    labels.insert(POD_INDEX_LABEL.into(), ordinal.to_string());
    labels.insert(REVISION_LABEL.into(), revision.into());
    let claims: Vec<(String, String)> = set
        .spec
        .as_ref()
        .and_then(|s| s.volume_claim_templates.as_ref())
        .into_iter()
        .flatten()
        .map(|t| {
            let template = t.name_any();
            let claim = claim_name(&template, &set.name_any(), ordinal);
            (template, claim)
        })
        .collect();
    let spec = pod.spec.get_or_insert_with(Default::default);
    spec.hostname = Some(name);
    if let Some(service) = set
        .spec
        .as_ref()
        .and_then(|s| s.service_name.clone())
        .filter(|s| !s.is_empty())
    {
        spec.subdomain = Some(service);
    }
    if !claims.is_empty() {
        let mut volumes: Vec<Volume> = claims
            .iter()
            .map(|(template, claim)| Volume {
                name: template.clone(),
                persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                    claim_name: claim.clone(),
                    read_only: None,
                }),
                ..Volume::default()
            })
            .collect();
        volumes.extend(
            spec.volumes
                .take()
                .unwrap_or_default()
                .into_iter()
                .filter(|v| !claims.iter().any(|(t, _)| *t == v.name)),
        );
        spec.volumes = Some(volumes);
    }
    pod
}

/// The template a revision holds.
pub fn template_of(revision: &ControllerRevision) -> Option<PodTemplateSpec> {
    let mut template = revision
        .data
        .as_ref()?
        .0
        .get("spec")?
        .get("template")?
        .clone();
    template.as_object_mut()?.remove("$patch");
    serde_json::from_value(template).ok()
}

fn revision_of(pod: &Pod) -> &str {
    pod.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(REVISION_LABEL))
        .map_or("", String::as_str)
}

fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

fn terminating(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_some()
}

fn running_and_ready(pod: &Pod) -> bool {
    phase(pod) == "Running" && pods::is_ready(pod)
}

fn healthy(pod: &Pod, min_ready: i32, now: Timestamp) -> bool {
    running_and_ready(pod) && pods::is_available(pod, min_ready, now) && !terminating(pod)
}

/// One step of a sync.
#[derive(Debug, PartialEq)]
pub enum Action {
    /// Make the pod of this ordinal (and its claims), of the update
    /// revision or of the current one.
    Create { ordinal: i32, update: bool },
    /// Delete a pod that failed or succeeded, to make it again once it
    /// is gone.
    Recreate(String),
    /// Delete a pod past the replicas, or of an old revision.
    Delete(String),
}

/// What a sync does and the status it leaves.
#[derive(Debug, Default)]
pub struct Plan {
    pub actions: Vec<Action>,
    pub status: StatefulSetStatus,
    /// A pod is ready but not yet available: look again then.
    pub again: Option<Duration>,
}

/// The plan for `set`, whose claimed pods are `pods`, with its revisions
/// named `current` and `update` (upstream's updateStatefulSet).
pub fn plan(
    set: &StatefulSet,
    pods: &[Arc<Pod>],
    current: &str,
    update: &str,
    now: Timestamp,
) -> Plan {
    let spec = set.spec.clone().unwrap_or_default();
    let name = set.name_any();
    let replicas = spec.replicas.unwrap_or(1).max(0);
    let start = spec.ordinals.as_ref().and_then(|o| o.start).unwrap_or(0);
    let min_ready = spec.min_ready_seconds.unwrap_or(0);
    let monotonic = spec.pod_management_policy.as_deref() != Some("Parallel");
    let strategy = spec.update_strategy.clone().unwrap_or_default();
    let rolling = strategy.type_.as_deref() != Some("OnDelete");
    let partition = strategy
        .rolling_update
        .as_ref()
        .and_then(|r| r.partition)
        .unwrap_or(0)
        .clamp(0, replicas);
    let mut slots: Vec<Option<&Arc<Pod>>> = vec![None; replicas as usize];
    let mut condemned: Vec<(i32, &Arc<Pod>)> = Vec::new();
    for pod in pods {
        let Some(ordinal) = ordinal_of(&name, &pod.name_any()) else {
            continue;
        };
        if (start..start + replicas).contains(&ordinal) {
            slots[(ordinal - start) as usize] = Some(pod);
        } else {
            condemned.push((ordinal, pod));
        }
    }
    condemned.sort_by_key(|c| std::cmp::Reverse(c.0));

    let mut status = StatefulSetStatus {
        observed_generation: set.metadata.generation,
        collision_count: set.status.as_ref().and_then(|s| s.collision_count),
        current_revision: Some(current.into()),
        update_revision: Some(update.into()),
        ..StatefulSetStatus::default()
    };
    let (mut ready, mut available, mut at_current, mut at_update) = (0, 0, 0, 0);
    let mut again = None;
    for pod in slots
        .iter()
        .flatten()
        .chain(condemned.iter().map(|(_, p)| p))
    {
        status.replicas += 1;
        if running_and_ready(pod) {
            ready += 1;
            if pods::is_available(pod, min_ready, now) {
                available += 1;
            } else {
                again = Some(Duration::from_secs(min_ready.max(1) as u64));
            }
        }
        if !terminating(pod) {
            at_current += i32::from(revision_of(pod) == current);
            at_update += i32::from(revision_of(pod) == update);
        }
    }
    let mut plan = Plan {
        again,
        ..Plan::default()
    };
    let finish = |mut plan: Plan, created_current: i32, created_update: i32| {
        plan.status.replicas += created_current + created_update;
        // With one revision, a pod made is at both.
        let (created_current, created_update) = if current == update {
            let all = created_current + created_update;
            (all, all)
        } else {
            (created_current, created_update)
        };
        plan.status.ready_replicas = Some(ready);
        plan.status.available_replicas = Some(available);
        plan.status.current_replicas = Some(at_current + created_current);
        plan.status.updated_replicas = Some(at_update + created_update);
        // A finished rolling update makes the update revision current.
        if rolling
            && plan.status.updated_replicas == Some(plan.status.replicas)
            && ready == plan.status.replicas
            && replicas == plan.status.replicas
        {
            plan.status.current_revision = Some(update.into());
            plan.status.current_replicas = plan.status.updated_replicas;
        }
        plan
    };
    plan.status = status;
    if set.metadata.deletion_timestamp.is_some() {
        return finish(plan, 0, 0);
    }
    let (mut created_current, mut created_update) = (0, 0);
    let first_unhealthy = slots
        .iter()
        .flatten()
        .chain(condemned.iter().map(|(_, p)| p))
        .find(|p| !healthy(p, min_ready, now))
        .map(|p| p.name_any());

    for (i, slot) in slots.iter().enumerate() {
        let ordinal = start + i as i32;
        let Some(pod) = slot else {
            // Below the partition, a rolling update keeps the current
            // revision; everything else is made at the update revision.
            let update_revision = !(rolling && ordinal < start + partition);
            plan.actions.push(Action::Create {
                ordinal,
                update: update_revision,
            });
            if update_revision {
                created_update += 1;
            } else {
                created_current += 1;
            }
            if monotonic {
                return finish(plan, created_current, created_update);
            }
            continue;
        };
        let phase = phase(pod);
        if phase == "Failed" || phase == "Succeeded" {
            if !terminating(pod) {
                plan.actions.push(Action::Recreate(pod.name_any()));
            }
            if monotonic {
                return finish(plan, created_current, created_update);
            }
            continue;
        }
        if monotonic && !healthy(pod, min_ready, now) {
            return finish(plan, created_current, created_update);
        }
    }

    for (_, pod) in &condemned {
        if terminating(pod) {
            if monotonic {
                return finish(plan, created_current, created_update);
            }
            continue;
        }
        if monotonic
            && !healthy(pod, min_ready, now)
            && first_unhealthy.as_deref() != Some(pod.name_any().as_str())
        {
            return finish(plan, created_current, created_update);
        }
        plan.actions.push(Action::Delete(pod.name_any()));
        if monotonic {
            return finish(plan, created_current, created_update);
        }
    }

    if rolling {
        for slot in slots[partition as usize..].iter().rev() {
            let Some(pod) = slot else { continue };
            if revision_of(pod) != update && !terminating(pod) {
                plan.actions.push(Action::Delete(pod.name_any()));
                break;
            }
            if !healthy(pod, min_ready, now) {
                break;
            }
        }
    }
    finish(plan, created_current, created_update)
}

struct Controller {
    client: Client,
    sets: Informer<StatefulSet>,
    pods: Informer<Pod>,
    revisions: Informer<ControllerRevision>,
    claims: Informer<PersistentVolumeClaim>,
    queue: WorkQueue,
    recorder: Recorder,
}

impl Controller {
    fn on_pod(&self, pod: &Pod) {
        if let Some(set) = self.sets.controller_of(&pod.metadata) {
            self.queue.add(&key_of(set.as_ref()));
        } else if pod.metadata.owner_references.is_none() {
            // An orphan may be adopted by a set whose selector takes it.
            let namespace = pod.namespace().unwrap_or_default();
            for set in self.sets.in_namespace(&namespace) {
                let selector = set.spec.as_ref().map(|s| &s.selector);
                if pods::selects(selector, pod.metadata.labels.as_ref()) {
                    self.queue.add(&key_of(set.as_ref()));
                }
            }
        }
    }

    fn event(&self, set: &StatefulSet, type_: &'static str, reason: &'static str, message: String) {
        self.recorder
            .event(events::reference(set), type_, reason, message);
    }

    /// Creates the pod's missing claims, then the pod.
    async fn create(&self, set: &StatefulSet, pod: &Pod, ordinal: i32) -> anyhow::Result<()> {
        let namespace = set.namespace().unwrap_or_default();
        let pod_name = pod.name_any();
        let set_name = set.name_any();
        let claims: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), &namespace);
        for claim in claims_for(set, ordinal) {
            let claim_name = claim.name_any();
            if self
                .claims
                .get(&format!("{namespace}/{claim_name}"))
                .is_some()
            {
                continue;
            }
            match claims.create(&PostParams::default(), &claim).await {
                Ok(_) => self.event(
                    set,
                    events::NORMAL,
                    "SuccessfulCreate",
                    format!(
                        "create Claim {claim_name} Pod {pod_name} in StatefulSet {set_name} success"
                    ),
                ),
                Err(kube::Error::Api(s)) if s.code == 409 => {}
                Err(err) => {
                    let message = pods::error_message(&err);
                    self.event(
                        set,
                        events::WARNING,
                        "FailedCreate",
                        format!("create Claim {claim_name} for Pod {pod_name} in StatefulSet {set_name} failed error: {message}"),
                    );
                    return Err(err.into());
                }
            }
        }
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &namespace);
        match api.create(&PostParams::default(), pod).await {
            Ok(_) => {
                self.event(
                    set,
                    events::NORMAL,
                    "SuccessfulCreate",
                    format!("create Pod {pod_name} in StatefulSet {set_name} successful"),
                );
                Ok(())
            }
            // The old pod of that name is still going.
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
            Err(kube::Error::Api(s))
                if s.code == 403 && s.message.contains("because it is being terminated") =>
            {
                Ok(())
            }
            Err(err) => {
                let message = pods::error_message(&err);
                self.event(
                    set,
                    events::WARNING,
                    "FailedCreate",
                    format!(
                        "create Pod {pod_name} in StatefulSet {set_name} failed error: {message}"
                    ),
                );
                Err(err.into())
            }
        }
    }

    async fn delete(&self, set: &StatefulSet, pod: &str) -> anyhow::Result<()> {
        let namespace = set.namespace().unwrap_or_default();
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &namespace);
        let set_name = set.name_any();
        match api.delete(pod, &DeleteParams::default()).await {
            Ok(_) => {
                self.event(
                    set,
                    events::NORMAL,
                    "SuccessfulDelete",
                    format!("delete Pod {pod} in StatefulSet {set_name} successful"),
                );
                Ok(())
            }
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(err) => {
                let message = pods::error_message(&err);
                self.event(
                    set,
                    events::WARNING,
                    "FailedDelete",
                    format!("delete Pod {pod} in StatefulSet {set_name} failed error: {message}"),
                );
                Err(err.into())
            }
        }
    }

    /// Gives the claims of the set's pods the owners the retention policy
    /// wants (before a condemned pod goes, so that its claims follow it).
    async fn retain_claims(&self, set: &StatefulSet, pods: &[Arc<Pod>]) -> anyhow::Result<()> {
        let namespace = set.namespace().unwrap_or_default();
        let templates: Vec<String> = set
            .spec
            .as_ref()
            .and_then(|s| s.volume_claim_templates.as_ref())
            .into_iter()
            .flatten()
            .map(|t| t.name_any())
            .collect();
        if templates.is_empty() {
            return Ok(());
        }
        let api: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), &namespace);
        for pod in pods {
            let Some(ordinal) = ordinal_of(&set.name_any(), &pod.name_any()) else {
                continue;
            };
            for template in &templates {
                let name = claim_name(template, &set.name_any(), ordinal);
                let Some(claim) = self.claims.get(&format!("{namespace}/{name}")) else {
                    continue;
                };
                let current = claim.metadata.owner_references.clone().unwrap_or_default();
                let wanted = claim_owners(set, ordinal, Some(pod), &current);
                if wanted == current {
                    continue;
                }
                let patch = serde_json::json!({"metadata": {
                    "ownerReferences": wanted,
                    "resourceVersion": claim.metadata.resource_version,
                }});
                match api
                    .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                {
                    Ok(_) => {}
                    Err(kube::Error::Api(s)) if s.code == 404 => {}
                    // Changed meanwhile: the sync is tried again, before
                    // any pod is deleted.
                    Err(err) => return Err(err.into()),
                }
            }
        }
        Ok(())
    }

    async fn sync(&self, key: &str) -> anyhow::Result<Option<Duration>> {
        let Some(cached) = self.sets.get(key) else {
            return Ok(None);
        };
        let set = (*cached).clone();
        let namespace = set.namespace().unwrap_or_default();
        let spec = set.spec.clone().unwrap_or_default();
        let client = &self.client;
        let owner = || claim::Owner {
            meta: &cached.metadata,
            api_version: "apps/v1",
            kind: "StatefulSet",
            selector: Some(&spec.selector),
        };
        let revisions = claim::claim(
            client,
            &self.revisions,
            owner(),
            |_| true,
            async || claim::still_there::<StatefulSet>(client, &cached.metadata).await,
        )
        .await?;
        let claimed = claim::claim(
            client,
            &self.pods,
            owner(),
            |_| true,
            async || claim::still_there::<StatefulSet>(client, &cached.metadata).await,
        )
        .await?;

        let mut collisions = set
            .status
            .as_ref()
            .and_then(|s| s.collision_count)
            .unwrap_or(0);
        let history_owner = history::Owner {
            meta: &set.metadata,
            api_version: "apps/v1",
            kind: "StatefulSet",
            labels: spec
                .template
                .metadata
                .as_ref()
                .and_then(|m| m.labels.clone())
                .unwrap_or_default(),
            hash_label: history::HASH_LABEL,
        };
        let data = history::patch_of(&spec.template);
        let update = history::update_revision(
            client,
            &history_owner,
            &revisions,
            data.clone(),
            &|collisions| history::hash(&data, Some(collisions)),
            &mut collisions,
        )
        .await?;
        let update_name = update.name_any();
        let current = set
            .status
            .as_ref()
            .and_then(|s| s.current_revision.as_deref())
            .and_then(|name| revisions.iter().find(|r| r.name_any() == name))
            .map(|r| (**r).clone())
            .unwrap_or_else(|| update.clone());
        let current_name = current.name_any();
        let current_template = template_of(&current).unwrap_or_else(|| spec.template.clone());

        if set.metadata.deletion_timestamp.is_none() {
            self.retain_claims(&set, &claimed).await?;
        }
        let plan = plan(
            &set,
            &claimed,
            &current_name,
            &update_name,
            Timestamp::now(),
        );
        for action in &plan.actions {
            match action {
                Action::Create { ordinal, update } => {
                    let pod = if *update {
                        new_pod(&set, &spec.template, *ordinal, &update_name)
                    } else {
                        new_pod(&set, &current_template, *ordinal, &current_name)
                    };
                    self.create(&set, &pod, *ordinal).await?;
                }
                Action::Recreate(pod) | Action::Delete(pod) => self.delete(&set, pod).await?,
            }
        }

        let mut status = plan.status;
        status.collision_count = Some(collisions)
            .filter(|c| *c > 0)
            .or(status.collision_count);
        status.conditions = set.status.as_ref().and_then(|s| s.conditions.clone());
        if set.status.as_ref() != Some(&status) {
            let api: Api<StatefulSet> = Api::namespaced(client.clone(), &namespace);
            let mut object = set.clone();
            object.metadata.managed_fields = None;
            object.status = Some(status.clone());
            match api
                .replace_status(&set.name_any(), &PostParams::default(), &object)
                .await
            {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
                Err(err) => return Err(err.into()),
            }
        }

        // History beyond the limit goes, but what pods still run and the
        // current and update revisions.
        let mut keep: HashSet<String> =
            claimed.iter().map(|p| revision_of(p).to_string()).collect();
        keep.extend(status.current_revision.clone());
        keep.extend(status.update_revision.clone());
        let limit = spec.revision_history_limit.unwrap_or(10).max(0) as usize;
        let doomed = history::truncate(&revisions, &keep, limit);
        history::delete(client, &namespace, &doomed).await?;
        Ok(plan.again)
    }
}

pub(crate) fn start(ctx: &crate::Context) -> crate::Running {
    let controller = Arc::new(Controller {
        client: ctx.client.clone(),
        sets: ctx.stateful_sets.clone(),
        pods: ctx.pods.clone(),
        revisions: ctx.revisions.clone(),
        claims: ctx.claims.clone(),
        queue: WorkQueue::default(),
        recorder: ctx.recorder.for_component(COMPONENT),
    });
    let c = controller.clone();
    ctx.stateful_sets.subscribe(Box::new(move |old, new| {
        if let Some(set) = new.or(old) {
            c.queue.add(&key_of(set.as_ref()));
        }
    }));
    let c = controller.clone();
    ctx.pods.subscribe(Box::new(move |old, new| {
        if let Some(pod) = new.or(old) {
            c.on_pod(pod);
        }
    }));
    let c = controller.clone();
    ctx.revisions.subscribe(Box::new(move |old, new| {
        if let Some(revision) = new.or(old)
            && let Some(set) = c.sets.controller_of(&revision.metadata)
        {
            c.queue.add(&key_of(set.as_ref()));
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
    use serde_json::{Value, json};

    fn set(extra: Value) -> StatefulSet {
        let mut v = json!({
            "metadata": {"name": "web", "namespace": "default", "uid": "s1", "generation": 1},
            "spec": {"replicas": 3, "serviceName": "nginx",
                "selector": {"matchLabels": {"app": "web"}},
                "podManagementPolicy": "OrderedReady",
                "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 0}},
                "template": {"metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "c", "image": "web:1"}],
                        "volumes": [{"name": "www", "emptyDir": {}}, {"name": "cfg", "emptyDir": {}}]}},
                "volumeClaimTemplates": [{"metadata": {"name": "www"},
                    "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}]},
        });
        for (k, val) in extra.as_object().unwrap() {
            v["spec"][k] = val.clone();
        }
        serde_json::from_value(v).unwrap()
    }

    /// A pod of the set: `state` is "ready", "pending", "failed" or
    /// "terminating".
    fn pod(ordinal: i32, revision: &str, state: &str) -> Arc<Pod> {
        let (phase, ready) = match state {
            "ready" | "terminating" => ("Running", "True"),
            "failed" => ("Failed", "False"),
            _ => ("Pending", "False"),
        };
        let mut v = json!({
            "metadata": {"name": format!("web-{ordinal}"), "labels": {"app": "web", REVISION_LABEL: revision}},
            "spec": {"containers": []},
            "status": {"phase": phase, "conditions": [{"type": "Ready", "status": ready}]},
        });
        if state == "terminating" {
            v["metadata"]["deletionTimestamp"] = json!("2026-12-01T10:00:00Z");
        }
        Arc::new(serde_json::from_value(v).unwrap())
    }

    fn now() -> Timestamp {
        "2026-12-01T12:00:00Z".parse().unwrap()
    }

    fn actions(set: &StatefulSet, pods: &[Arc<Pod>], current: &str, update: &str) -> Vec<Action> {
        plan(set, pods, current, update, now()).actions
    }

    #[test]
    fn names_ordinals_and_claims_are_stable() {
        assert_eq!(ordinal_of("web", "web-12"), Some(12));
        assert_eq!(ordinal_of("web", "web-x"), None);
        assert_eq!(ordinal_of("web", "webby-1"), None);
        assert_eq!(ordinal_of("web", "web-"), None);
        let s = set(json!({}));
        let pod = new_pod(&s, &s.spec.as_ref().unwrap().template, 2, "web-abc");
        assert_eq!(pod.metadata.name.as_deref(), Some("web-2"));
        let labels = pod.metadata.labels.as_ref().unwrap();
        assert_eq!(labels[POD_NAME_LABEL], "web-2");
        assert_eq!(labels[POD_INDEX_LABEL], "2");
        assert_eq!(labels[REVISION_LABEL], "web-abc");
        let spec = pod.spec.as_ref().unwrap();
        assert_eq!(
            (spec.hostname.as_deref(), spec.subdomain.as_deref()),
            (Some("web-2"), Some("nginx"))
        );
        let volumes: Vec<(String, Option<String>)> = spec
            .volumes
            .iter()
            .flatten()
            .map(|v| {
                let claim = v
                    .persistent_volume_claim
                    .as_ref()
                    .map(|c| c.claim_name.clone());
                (v.name.clone(), claim)
            })
            .collect();
        assert_eq!(
            volumes,
            [
                ("www".to_string(), Some("www-web-2".to_string())),
                ("cfg".to_string(), None)
            ],
            "the claim replaces the template volume of its name"
        );
        let claims = claims_for(&s, 2);
        assert_eq!(claims.len(), 1);
        assert_eq!(claims[0].metadata.name.as_deref(), Some("www-web-2"));
        assert_eq!(claims[0].metadata.labels.as_ref().unwrap()["app"], "web");
    }

    #[test]
    fn ordered_ready_makes_one_pod_at_a_time_in_order() {
        let s = set(json!({}));
        assert_eq!(
            actions(&s, &[], "r1", "r1"),
            [Action::Create {
                ordinal: 0,
                update: true
            }]
        );
        // web-0 not ready yet: nothing more.
        assert!(actions(&s, &[pod(0, "r1", "pending")], "r1", "r1").is_empty());
        assert_eq!(
            actions(&s, &[pod(0, "r1", "ready")], "r1", "r1"),
            [Action::Create {
                ordinal: 1,
                update: true
            }]
        );
        // A gap is filled first, even above a pod that exists.
        assert_eq!(
            actions(
                &s,
                &[pod(0, "r1", "ready"), pod(2, "r1", "ready")],
                "r1",
                "r1"
            ),
            [Action::Create {
                ordinal: 1,
                update: true
            }]
        );
        let parallel = set(json!({"podManagementPolicy": "Parallel"}));
        assert_eq!(
            actions(&parallel, &[pod(0, "r1", "pending")], "r1", "r1"),
            [
                Action::Create {
                    ordinal: 1,
                    update: true
                },
                Action::Create {
                    ordinal: 2,
                    update: true
                }
            ]
        );
        let status = plan(&s, &[pod(0, "r1", "ready")], "r1", "r1", now()).status;
        assert_eq!(
            (
                status.replicas,
                status.ready_replicas,
                status.current_replicas,
                status.updated_replicas
            ),
            (2, Some(1), Some(2), Some(2)),
            "the pod made counts at once"
        );
    }

    #[test]
    fn failed_pods_are_recreated_and_scale_down_goes_from_the_top() {
        let s = set(json!({}));
        let pods = [
            pod(0, "r1", "ready"),
            pod(1, "r1", "failed"),
            pod(2, "r1", "ready"),
        ];
        assert_eq!(
            actions(&s, &pods, "r1", "r1"),
            [Action::Recreate("web-1".into())]
        );
        let one = set(json!({"replicas": 1}));
        let pods = [
            pod(0, "r1", "ready"),
            pod(1, "r1", "ready"),
            pod(2, "r1", "ready"),
        ];
        assert_eq!(
            actions(&one, &pods, "r1", "r1"),
            [Action::Delete("web-2".into())]
        );
        // The highest is still going: wait for it.
        let pods = [
            pod(0, "r1", "ready"),
            pod(1, "r1", "ready"),
            pod(2, "r1", "terminating"),
        ];
        assert!(actions(&one, &pods, "r1", "r1").is_empty());
        // Condemned pods go from the top whatever their health, one at a
        // time.
        let pods = [
            pod(0, "r1", "ready"),
            pod(1, "r1", "pending"),
            pod(2, "r1", "ready"),
        ];
        assert_eq!(
            actions(&one, &pods, "r1", "r1"),
            [Action::Delete("web-2".into())]
        );
        let pods = [
            pod(0, "r1", "ready"),
            pod(1, "r1", "ready"),
            pod(2, "r1", "pending"),
        ];
        assert_eq!(
            actions(&one, &pods, "r1", "r1"),
            [Action::Delete("web-2".into())]
        );
        let parallel = set(json!({"replicas": 1, "podManagementPolicy": "Parallel"}));
        let pods = [
            pod(0, "r1", "ready"),
            pod(1, "r1", "ready"),
            pod(2, "r1", "ready"),
        ];
        assert_eq!(
            actions(&parallel, &pods, "r1", "r1"),
            [
                Action::Delete("web-2".into()),
                Action::Delete("web-1".into())
            ]
        );
    }

    #[test]
    fn a_rolling_update_goes_down_to_the_partition_one_at_a_time() {
        let s = set(json!({}));
        let old = [
            pod(0, "r1", "ready"),
            pod(1, "r1", "ready"),
            pod(2, "r1", "ready"),
        ];
        assert_eq!(
            actions(&s, &old, "r1", "r2"),
            [Action::Delete("web-2".into())]
        );
        let mid = [
            pod(0, "r1", "ready"),
            pod(1, "r1", "ready"),
            pod(2, "r2", "pending"),
        ];
        assert!(
            actions(&s, &mid, "r1", "r2").is_empty(),
            "the new pod must be ready first"
        );
        let mid = [
            pod(0, "r1", "ready"),
            pod(1, "r1", "ready"),
            pod(2, "r2", "ready"),
        ];
        assert_eq!(
            actions(&s, &mid, "r1", "r2"),
            [Action::Delete("web-1".into())]
        );
        let status = plan(&s, &mid, "r1", "r2", now()).status;
        assert_eq!(
            (
                status.current_replicas,
                status.updated_replicas,
                status.current_revision.as_deref()
            ),
            (Some(2), Some(1), Some("r1"))
        );
        let done = [
            pod(0, "r2", "ready"),
            pod(1, "r2", "ready"),
            pod(2, "r2", "ready"),
        ];
        let status = plan(&s, &done, "r1", "r2", now()).status;
        assert_eq!(
            (status.current_replicas, status.current_revision.as_deref()),
            (Some(3), Some("r2")),
            "a finished update makes its revision current"
        );
        // With partition 2 only web-2 moves; web-1 recreated stays at r1.
        let partitioned = set(
            json!({"updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 2}}}),
        );
        assert_eq!(
            actions(&partitioned, &mid, "r1", "r2"),
            Vec::<Action>::new()
        );
        let gap = [pod(0, "r1", "ready"), pod(2, "r2", "ready")];
        assert_eq!(
            actions(&partitioned, &gap, "r1", "r2"),
            [Action::Create {
                ordinal: 1,
                update: false
            }]
        );
        let status = plan(&partitioned, &mid, "r1", "r2", now()).status;
        assert_eq!(status.current_revision.as_deref(), Some("r1"));
        let on_delete = set(json!({"updateStrategy": {"type": "OnDelete"}}));
        assert!(actions(&on_delete, &old, "r1", "r2").is_empty());
        assert_eq!(
            actions(&on_delete, &gap, "r1", "r2"),
            [Action::Create {
                ordinal: 1,
                update: true
            }]
        );
    }

    #[test]
    fn claims_belong_to_the_set_or_the_condemned_pod_as_the_policy_says() {
        let owner_kinds = |owners: Vec<OwnerReference>| -> Vec<String> {
            owners
                .into_iter()
                .map(|o| format!("{}/{}", o.kind, o.name))
                .collect()
        };
        let condemned: Pod = serde_json::from_value(json!({
            "metadata": {"name": "web-4", "uid": "p4"}}))
        .unwrap();
        let retain = set(json!({}));
        assert!(claim_owners(&retain, 0, None, &[]).is_empty());
        let both = set(json!({"persistentVolumeClaimRetentionPolicy":
            {"whenDeleted": "Delete", "whenScaled": "Delete"}}));
        assert_eq!(
            owner_kinds(claim_owners(&both, 1, None, &[])),
            ["StatefulSet/web"]
        );
        let set_ref = claim_owners(&both, 1, None, &[]);
        assert_eq!(
            owner_kinds(claim_owners(&both, 4, Some(&condemned), &set_ref)),
            ["Pod/web-4"],
            "beyond the replicas the claim follows its pod, not the set"
        );
        let scaled = set(json!({"persistentVolumeClaimRetentionPolicy": {"whenScaled": "Delete"}}));
        assert!(claim_owners(&scaled, 2, None, &[]).is_empty());
        let other = OwnerReference {
            kind: "Backup".into(),
            name: "b".into(),
            ..OwnerReference::default()
        };
        assert_eq!(
            owner_kinds(claim_owners(&retain, 4, Some(&condemned), &[other])),
            ["Backup/b"],
            "owners that are not the set's stay"
        );
    }

    #[test]
    fn a_revision_gives_its_template_back() {
        let s = set(json!({}));
        let template = s.spec.as_ref().unwrap().template.clone();
        let revision = ControllerRevision {
            data: Some(k8s_openapi::apimachinery::pkg::runtime::RawExtension(
                history::patch_of(&template),
            )),
            ..ControllerRevision::default()
        };
        assert_eq!(template_of(&revision), Some(template));
    }
}
