//! The ReplicaSet controller: keeps `spec.replicas` active pods matching
//! each ReplicaSet's selector, adopting orphans that match and releasing
//! its pods that no longer do, and reports the counts in its status.
//!
//! A sync acts only when what it did last is seen in the cache
//! (expectations); it creates at most 500 pods at once, in batches of 1,
//! 2, 4, ... that stop at the first failure, and deletes the pods
//! upstream would delete first.

use std::sync::Arc;
use std::time::Duration;

use crate::claim;
use crate::events::{self, Recorder};
use crate::expectations::Expectations;
use crate::informer::{Informer, controller_uid, key_of};
use crate::pods;
use crate::workqueue::WorkQueue;
use futures::future::join_all;
use k8s_openapi::api::apps::v1::{
    ReplicaSet, ReplicaSetCondition, ReplicaSetSpec, ReplicaSetStatus,
};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::core::v1::{
    ReplicationController, ReplicationControllerCondition, ReplicationControllerStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, PostParams};
use kube::{Client, ResourceExt};

pub const COMPONENT: &str = "replicaset-controller";
/// Pods created or deleted by one sync at most (upstream's burstReplicas).
pub const BURST: usize = 500;
const WORKERS: usize = 5;

/// What one sync should do about the number of pods.
#[derive(Debug, PartialEq)]
pub enum Manage {
    Nothing,
    Create(usize),
    /// The pods to delete, first to go first.
    Delete(Vec<Arc<Pod>>),
}

/// The plan for `active` pods claimed by a ReplicaSet that wants
/// `replicas`; `related` are the active pods of its owner's other
/// ReplicaSets too (for ranking by node).
pub fn manage(
    active: &[Arc<Pod>],
    related: &[Arc<Pod>],
    replicas: usize,
    now: Timestamp,
) -> Manage {
    use std::cmp::Ordering::*;
    match active.len().cmp(&replicas) {
        Equal => Manage::Nothing,
        Less => Manage::Create((replicas - active.len()).min(BURST)),
        Greater => {
            let diff = (active.len() - replicas).min(BURST);
            let mut ranked = active.to_vec();
            if diff < ranked.len() {
                pods::rank_for_deletion(&mut ranked, related, now);
            }
            ranked.truncate(diff);
            Manage::Delete(ranked)
        }
    }
}

/// Batch sizes for `n` creations: 1, 2, 4, ... (upstream's slow start).
pub fn slow_start(n: usize) -> Vec<usize> {
    let mut batches = Vec::new();
    let (mut left, mut size) = (n, 1);
    while left > 0 {
        let batch = size.min(left);
        batches.push(batch);
        left -= batch;
        size *= 2;
    }
    batches
}

/// A failure of the last sync's creations or deletions, for the
/// ReplicaFailure condition.
pub struct Failure {
    pub reason: &'static str,
    pub message: String,
}

/// The status a ReplicaSet should have with `active` claimed pods.
pub fn status(
    rs: &ReplicaSet,
    active: &[Arc<Pod>],
    failure: Option<&Failure>,
    now: Timestamp,
) -> ReplicaSetStatus {
    let spec = rs.spec.as_ref();
    let min_ready = spec.and_then(|s| s.min_ready_seconds).unwrap_or(0);
    let template_labels = spec
        .and_then(|s| s.template.as_ref())
        .and_then(|t| t.metadata.as_ref())
        .and_then(|m| m.labels.as_ref());
    let mut status = rs.status.clone().unwrap_or_default();
    status.replicas = active.len() as i32;
    status.fully_labeled_replicas = Some(
        active
            .iter()
            .filter(|p| pods::has_labels(p.metadata.labels.as_ref(), template_labels))
            .count() as i32,
    );
    status.ready_replicas = Some(active.iter().filter(|p| pods::is_ready(p)).count() as i32);
    status.available_replicas = Some(
        active
            .iter()
            .filter(|p| pods::is_available(p, min_ready, now))
            .count() as i32,
    );
    status.observed_generation = rs.metadata.generation;
    let conditions = status.conditions.get_or_insert_with(Vec::new);
    let has_failure = conditions.iter().any(|c| c.type_ == "ReplicaFailure");
    match failure {
        Some(failure) if !has_failure => conditions.push(ReplicaSetCondition {
            type_: "ReplicaFailure".into(),
            status: "True".into(),
            reason: Some(failure.reason.into()),
            message: Some(failure.message.clone()),
            last_transition_time: Some(Time(now)),
        }),
        None if has_failure => conditions.retain(|c| c.type_ != "ReplicaFailure"),
        _ => {}
    }
    if conditions.is_empty() {
        status.conditions = None;
    }
    status
}

/// Whether a written status differs from `new` in anything a reader sees.
fn status_differs(old: Option<&ReplicaSetStatus>, new: &ReplicaSetStatus) -> bool {
    let Some(old) = old else { return true };
    let counts = |s: &ReplicaSetStatus| {
        (
            s.replicas,
            s.fully_labeled_replicas.unwrap_or(0),
            s.ready_replicas.unwrap_or(0),
            s.available_replicas.unwrap_or(0),
            s.observed_generation,
        )
    };
    counts(old) != counts(new)
        || old.conditions.as_deref().unwrap_or_default()
            != new.conditions.as_deref().unwrap_or_default()
}

/// What the controller keeps replicas of: ReplicaSets, and
/// ReplicationControllers seen as ReplicaSets.
pub trait Replicated:
    kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
    + Clone
    + serde::de::DeserializeOwned
    + serde::Serialize
    + std::fmt::Debug
    + Send
    + Sync
    + 'static
{
    const API_VERSION: &'static str;
    const KIND: &'static str;
    const COMPONENT: &'static str;
    /// The object as a ReplicaSet, for planning.
    fn view(&self) -> ReplicaSet;
    fn selector(&self) -> Option<LabelSelector>;
    /// The object with this status.
    fn with_status(&self, status: ReplicaSetStatus) -> Self;
}

impl Replicated for ReplicaSet {
    const API_VERSION: &'static str = "apps/v1";
    const KIND: &'static str = "ReplicaSet";
    const COMPONENT: &'static str = COMPONENT;

    fn view(&self) -> ReplicaSet {
        self.clone()
    }

    fn selector(&self) -> Option<LabelSelector> {
        self.spec.as_ref().map(|s| s.selector.clone())
    }

    fn with_status(&self, status: ReplicaSetStatus) -> Self {
        let mut object = self.clone();
        object.status = Some(status);
        object
    }
}

impl Replicated for ReplicationController {
    const API_VERSION: &'static str = "v1";
    const KIND: &'static str = "ReplicationController";
    const COMPONENT: &'static str = "replication-controller";

    fn view(&self) -> ReplicaSet {
        let spec = self.spec.clone().unwrap_or_default();
        let status = self.status.clone();
        ReplicaSet {
            metadata: self.metadata.clone(),
            spec: Some(ReplicaSetSpec {
                replicas: spec.replicas,
                min_ready_seconds: spec.min_ready_seconds,
                selector: self.selector().unwrap_or_default(),
                template: spec.template,
            }),
            status: status.map(|s| ReplicaSetStatus {
                replicas: s.replicas,
                fully_labeled_replicas: s.fully_labeled_replicas,
                ready_replicas: s.ready_replicas,
                available_replicas: s.available_replicas,
                observed_generation: s.observed_generation,
                terminating_replicas: None,
                conditions: s.conditions.map(|c| {
                    c.into_iter()
                        .map(|c| ReplicaSetCondition {
                            type_: c.type_,
                            status: c.status,
                            reason: c.reason,
                            message: c.message,
                            last_transition_time: c.last_transition_time,
                        })
                        .collect()
                }),
            }),
        }
    }

    /// The selector, or (as upstream defaults it) the template's labels.
    fn selector(&self) -> Option<LabelSelector> {
        let spec = self.spec.as_ref()?;
        let labels = spec
            .selector
            .clone()
            .filter(|s| !s.is_empty())
            .or_else(|| spec.template.as_ref()?.metadata.as_ref()?.labels.clone())?;
        Some(LabelSelector {
            match_labels: Some(labels),
            match_expressions: None,
        })
    }

    fn with_status(&self, status: ReplicaSetStatus) -> Self {
        let mut object = self.clone();
        object.status = Some(ReplicationControllerStatus {
            replicas: status.replicas,
            fully_labeled_replicas: status.fully_labeled_replicas,
            ready_replicas: status.ready_replicas,
            available_replicas: status.available_replicas,
            observed_generation: status.observed_generation,
            conditions: status.conditions.map(|c| {
                c.into_iter()
                    .map(|c| ReplicationControllerCondition {
                        type_: c.type_,
                        status: c.status,
                        reason: c.reason,
                        message: c.message,
                        last_transition_time: c.last_transition_time,
                    })
                    .collect()
            }),
        });
        object
    }
}

pub(crate) struct Controller<K: Replicated> {
    client: Client,
    sets: Informer<K>,
    pods: Informer<Pod>,
    queue: WorkQueue,
    expectations: Expectations,
    recorder: Recorder,
}

fn replicas_of(rs: &ReplicaSet) -> usize {
    rs.spec
        .as_ref()
        .and_then(|s| s.replicas)
        .unwrap_or(1)
        .max(0) as usize
}

fn min_ready_of(rs: &ReplicaSet) -> i32 {
    rs.spec
        .as_ref()
        .and_then(|s| s.min_ready_seconds)
        .unwrap_or(0)
}

impl<K: Replicated> Controller<K> {
    fn owner_of(&self, pod: &Pod) -> Option<Arc<K>> {
        self.sets.controller_of(&pod.metadata)
    }

    /// Queues every ReplicaSet whose selector takes an orphan `pod`.
    fn queue_matching(&self, pod: &Pod) {
        for rs in self.sets.in_namespace(&pod.namespace().unwrap_or_default()) {
            let selector = rs.selector();
            if pods::selects(selector.as_ref(), pod.metadata.labels.as_ref()) {
                self.queue.add(&key_of(rs.as_ref()));
            }
        }
    }

    fn pod_gone(&self, pod: &Pod) {
        if let Some(rs) = self.owner_of(pod) {
            let key = key_of(rs.as_ref());
            self.expectations.deletion_observed(&key, &key_of(pod));
            self.queue.add(&key);
        }
    }

    fn on_pod(&self, old: Option<&Arc<Pod>>, new: Option<&Arc<Pod>>) {
        match (old, new) {
            (_, None) => {
                if let Some(old) = old {
                    self.pod_gone(old);
                }
            }
            (None, Some(pod)) => {
                if pod.metadata.deletion_timestamp.is_some() {
                    return self.pod_gone(pod);
                }
                if let Some(rs) = self.owner_of(pod) {
                    let key = key_of(rs.as_ref());
                    self.expectations.creation_observed(&key);
                    self.queue.add(&key);
                } else if controller_uid(&pod.metadata).is_none() {
                    self.queue_matching(pod);
                }
            }
            (Some(old), Some(new)) => {
                if old.metadata.resource_version == new.metadata.resource_version {
                    return;
                }
                let labels_changed = old.metadata.labels != new.metadata.labels;
                if new.metadata.deletion_timestamp.is_some() {
                    self.pod_gone(new);
                    if labels_changed {
                        self.pod_gone(old);
                    }
                    return;
                }
                let ref_changed = controller_uid(&old.metadata) != controller_uid(&new.metadata);
                if ref_changed && let Some(rs) = self.owner_of(old) {
                    self.queue.add(&key_of(rs.as_ref()));
                }
                if let Some(rs) = self.owner_of(new) {
                    let key = key_of(rs.as_ref());
                    self.queue.add(&key);
                    let min_ready = min_ready_of(&rs.view());
                    if min_ready > 0 && !pods::is_ready(old) && pods::is_ready(new) {
                        self.queue
                            .add_after(&key, Duration::from_secs(min_ready as u64 + 1));
                    }
                } else if controller_uid(&new.metadata).is_none() && (labels_changed || ref_changed)
                {
                    self.queue_matching(new);
                }
            }
        }
    }

    fn on_set(&self, old: Option<&Arc<K>>, new: Option<&Arc<K>>) {
        match new {
            Some(rs) => self.queue.add(&key_of(rs.as_ref())),
            None => {
                if let Some(rs) = old {
                    let key = key_of(rs.as_ref());
                    self.expectations.forget(&key);
                    self.queue.add(&key);
                }
            }
        }
    }

    /// The active pods `rs` controls after adopting matching orphans and
    /// releasing its pods that no longer match.
    async fn claim(&self, rs: &ReplicaSet) -> anyhow::Result<Vec<Arc<Pod>>> {
        let owner = claim::Owner {
            meta: &rs.metadata,
            api_version: K::API_VERSION,
            kind: K::KIND,
            selector: rs.spec.as_ref().map(|s| &s.selector),
        };
        let client = &self.client;
        claim::claim(client, &self.pods, owner, pods::is_active, async || {
            claim::still_there::<K>(client, &rs.metadata).await
        })
        .await
    }

    /// The active pods of every ReplicaSet with the same controller as
    /// `rs` (just its own when it has none).
    fn related(&self, rs: &ReplicaSet, own: &[Arc<Pod>]) -> Vec<Arc<Pod>> {
        let Some(owner) = controller_uid(&rs.metadata) else {
            return own.to_vec();
        };
        let mut related = Vec::new();
        for sibling in self.sets.indexed(&format!("owner:{owner}")) {
            let uid = sibling.meta().uid.clone().unwrap_or_default();
            related.extend(
                self.pods
                    .indexed(&format!("owner:{uid}"))
                    .into_iter()
                    .filter(|p| pods::is_active(p)),
            );
        }
        related
    }

    async fn create_pods(
        &self,
        k: &K,
        rs: &ReplicaSet,
        key: &str,
        n: usize,
    ) -> Result<(), Failure> {
        let namespace = rs.namespace().unwrap_or_default();
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &namespace);
        let Some(template) = rs.spec.as_ref().and_then(|s| s.template.as_ref()) else {
            return Ok(());
        };
        let owner = pods::controller_ref(K::API_VERSION, K::KIND, &rs.metadata);
        let pod = pods::from_template(template, &rs.metadata, owner);
        if pod.metadata.labels.as_ref().is_none_or(|l| l.is_empty()) {
            self.expectations.lower_creations(key, n);
            return Err(Failure {
                reason: "FailedCreate",
                message: "unable to create pods, no labels".into(),
            });
        }
        self.expectations.expect(key, n, Vec::new());
        pods::create_in_batches(
            &api,
            vec![pod; n],
            key,
            &self.expectations,
            &self.recorder,
            &events::reference(k),
        )
        .await
        .map_err(|message| Failure {
            reason: "FailedCreate",
            message,
        })
    }

    async fn delete_pods(
        &self,
        k: &K,
        rs: &ReplicaSet,
        key: &str,
        doomed: Vec<Arc<Pod>>,
    ) -> Result<(), Failure> {
        let namespace = rs.namespace().unwrap_or_default();
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &namespace);
        self.expectations
            .expect(key, 0, doomed.iter().map(|p| key_of(p.as_ref())).collect());
        let params = DeleteParams::default();
        let results = join_all(
            doomed
                .iter()
                .map(|pod| api.delete(pod.metadata.name.as_deref().unwrap_or(""), &params)),
        )
        .await;
        let mut failure = None;
        for (pod, result) in doomed.iter().zip(results) {
            match result {
                Ok(_) => self.recorder.event(
                    events::reference(k),
                    events::NORMAL,
                    "SuccessfulDelete",
                    format!("Deleted pod: {}", pod.name_any()),
                ),
                Err(err) => {
                    self.expectations
                        .deletion_observed(key, &key_of(pod.as_ref()));
                    if matches!(&err, kube::Error::Api(s) if s.code == 404) {
                        continue;
                    }
                    let message = pods::error_message(&err);
                    self.recorder.event(
                        events::reference(k),
                        events::WARNING,
                        "FailedDelete",
                        format!("Error deleting: {message}"),
                    );
                    failure.get_or_insert(Failure {
                        reason: "FailedDelete",
                        message,
                    });
                }
            }
        }
        failure.map_or(Ok(()), Err)
    }

    /// One sync of the ReplicaSet at `key`; asks to come back after the
    /// duration returned, if any.
    async fn sync(&self, key: &str) -> anyhow::Result<Option<Duration>> {
        let Some(k) = self.sets.get(key) else {
            self.expectations.forget(key);
            return Ok(None);
        };
        let rs = k.view();
        let needs_sync = self.expectations.satisfied(key);
        let active = self.claim(&rs).await?;
        let mut failure = None;
        if needs_sync && rs.metadata.deletion_timestamp.is_none() {
            let related = self.related(&rs, &active);
            failure = match manage(&active, &related, replicas_of(&rs), Timestamp::now()) {
                Manage::Nothing => None,
                Manage::Create(n) => self.create_pods(&k, &rs, key, n).await.err(),
                Manage::Delete(doomed) => self.delete_pods(&k, &rs, key, doomed).await.err(),
            };
        }
        let status = status(&rs, &active, failure.as_ref(), Timestamp::now());
        if status_differs(rs.status.as_ref(), &status) {
            self.write_status(&k, status.clone()).await?;
        }
        if let Some(failure) = failure {
            anyhow::bail!("{}", failure.message);
        }
        let replicas = replicas_of(&rs) as i32;
        let min_ready = min_ready_of(&rs);
        Ok((min_ready > 0
            && status.ready_replicas == Some(replicas)
            && status.available_replicas != Some(replicas))
        .then(|| Duration::from_secs(min_ready as u64)))
    }

    /// Writes `status` over the cached ReplicaSet; on a conflict, once
    /// more over a fresh one.
    async fn write_status(&self, k: &K, status: ReplicaSetStatus) -> kube::Result<()> {
        let api: Api<K> = Api::namespaced(self.client.clone(), &k.namespace().unwrap_or_default());
        let name = k.name_any();
        let mut object = k.with_status(status.clone());
        object.meta_mut().managed_fields = None;
        match api
            .replace_status(&name, &PostParams::default(), &object)
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 409 => {
                let mut fresh = api.get(&name).await?.with_status(status);
                fresh.meta_mut().managed_fields = None;
                api.replace_status(&name, &PostParams::default(), &fresh)
                    .await
                    .map(|_| ())
            }
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(err) => Err(err),
        }
    }
}

/// Starts the ReplicaSet controller over the shared informers.
pub(crate) fn start(ctx: &crate::Context) -> crate::Running {
    start_for(ctx, &ctx.replica_sets)
}

/// Starts the ReplicationController controller, the same over
/// ReplicationControllers.
pub(crate) fn start_replication(ctx: &crate::Context) -> crate::Running {
    start_for(ctx, &ctx.replication_controllers)
}

fn start_for<K: Replicated>(ctx: &crate::Context, sets: &Informer<K>) -> crate::Running {
    let controller = Arc::new(Controller {
        client: ctx.client.clone(),
        sets: sets.clone(),
        pods: ctx.pods.clone(),
        queue: WorkQueue::default(),
        expectations: Expectations::default(),
        recorder: ctx.recorder.for_component(K::COMPONENT),
    });
    let c = controller.clone();
    ctx.pods
        .subscribe(Box::new(move |old, new| c.on_pod(old, new)));
    let c = controller.clone();
    sets.subscribe(Box::new(move |old, new| c.on_set(old, new)));
    let queue = controller.queue.clone();
    crate::Running::workers(K::COMPONENT, queue, WORKERS, move |key| {
        let controller = controller.clone();
        async move { controller.sync(&key).await }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn pod(name: &str, node: &str, ready: bool) -> Arc<Pod> {
        let value: Value = json!({
            "metadata": {"name": name, "uid": name, "labels": {"app": "web"}},
            "spec": {"containers": [], "nodeName": node},
            "status": {"phase": "Running", "conditions": [{"type": "Ready",
                "status": if ready { "True" } else { "False" },
                "lastTransitionTime": "2026-11-30T11:00:00Z"}]},
        });
        Arc::new(serde_json::from_value(value).unwrap())
    }

    fn rs(replicas: i32, min_ready: i32) -> ReplicaSet {
        serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "default", "generation": 3},
            "spec": {"replicas": replicas, "minReadySeconds": min_ready,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web", "v": "2"}}, "spec": {"containers": []}}},
        }))
        .unwrap()
    }

    #[test]
    fn a_sync_creates_the_missing_deletes_the_extra_at_most_a_burst() {
        let now: Timestamp = "2026-11-30T12:00:00Z".parse().unwrap();
        let three = vec![
            pod("a", "n1", true),
            pod("b", "n1", false),
            pod("c", "", false),
        ];
        assert_eq!(manage(&three, &three, 3, now), Manage::Nothing);
        assert_eq!(manage(&three, &three, 5, now), Manage::Create(2));
        assert_eq!(manage(&[], &[], 2000, now), Manage::Create(BURST));
        let Manage::Delete(doomed) = manage(&three, &three, 1, now) else {
            panic!("expected deletions");
        };
        let names: Vec<_> = doomed.iter().map(|p| p.name_any()).collect();
        assert_eq!(names, ["c", "b"], "unscheduled, then not ready");
        let Manage::Delete(all) = manage(&three, &three, 0, now) else {
            panic!("expected deletions");
        };
        assert_eq!(all.len(), 3);
    }

    #[test]
    fn a_replication_controller_is_seen_as_a_replica_set_and_back() {
        let rc: ReplicationController = serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "default", "generation": 2},
            "spec": {"replicas": 3, "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": []}}},
        }))
        .unwrap();
        let view = rc.view();
        let spec = view.spec.as_ref().unwrap();
        assert_eq!(spec.replicas, Some(3));
        assert_eq!(
            spec.selector.match_labels.as_ref().unwrap()["app"],
            "web",
            "defaults to the template's labels"
        );
        let now: Timestamp = "2026-11-30T12:00:00Z".parse().unwrap();
        let counted = status(&view, &[pod("a", "n1", true)], None, now);
        let written = rc.with_status(counted).status.unwrap();
        assert_eq!(
            (
                written.replicas,
                written.ready_replicas,
                written.observed_generation
            ),
            (1, Some(1), Some(2))
        );
    }

    #[test]
    fn creations_start_slow_and_double() {
        assert_eq!(slow_start(0), Vec::<usize>::new());
        assert_eq!(slow_start(1), [1]);
        assert_eq!(slow_start(10), [1, 2, 4, 3]);
        assert_eq!(slow_start(500).iter().sum::<usize>(), 500);
        assert_eq!(slow_start(500).len(), 9);
    }

    #[test]
    fn status_counts_labeled_ready_and_available_pods() {
        let now: Timestamp = "2026-11-30T12:00:00Z".parse().unwrap();
        let mut labeled = (*pod("a", "n1", true)).clone();
        labeled
            .metadata
            .labels
            .as_mut()
            .unwrap()
            .insert("v".into(), "2".into());
        let pods = vec![
            Arc::new(labeled),
            pod("b", "n1", true),
            pod("c", "n2", false),
        ];
        let s = status(&rs(3, 0), &pods, None, now);
        assert_eq!(
            (
                s.replicas,
                s.fully_labeled_replicas,
                s.ready_replicas,
                s.available_replicas,
                s.observed_generation
            ),
            (3, Some(1), Some(2), Some(2), Some(3))
        );
        // Ready at 11:00, minReadySeconds one hour and a bit: not yet available.
        let s = status(&rs(3, 3601), &pods, None, now);
        assert_eq!(s.available_replicas, Some(0));
        assert!(s.conditions.is_none());
    }

    #[test]
    fn a_failure_sets_replica_failure_once_and_success_clears_it() {
        let now: Timestamp = "2026-11-30T12:00:00Z".parse().unwrap();
        let mut set = rs(3, 0);
        let failure = Failure {
            reason: "FailedCreate",
            message: "exceeded quota".into(),
        };
        let s = status(&set, &[], Some(&failure), now);
        let conditions = s.conditions.clone().unwrap();
        assert_eq!(conditions.len(), 1);
        assert_eq!(conditions[0].reason.as_deref(), Some("FailedCreate"));
        set.status = Some(s);
        let other = Failure {
            reason: "FailedCreate",
            message: "something else".into(),
        };
        let s = status(&set, &[], Some(&other), now);
        assert_eq!(
            s.conditions.as_ref().unwrap()[0].message.as_deref(),
            Some("exceeded quota")
        );
        set.status = Some(s);
        assert!(status(&set, &[], None, now).conditions.is_none());
    }
}
