//! The Job controller: runs a Job's pods until enough succeed, or too
//! many fail, or its deadline passes, as upstream's does.
//!
//! Finished pods are counted exactly once through a finalizer
//! (`batch.kubernetes.io/job-tracking`) on every pod the Job makes: a
//! finished pod is first recorded in `status.uncountedTerminatedPods`,
//! then loses its finalizer, then moves into the `succeeded` / `failed`
//! counts, so that neither a restart nor the pod's deletion loses or
//! doubles it. Indexed Jobs give each pod an index and record the
//! indexes done in `status.completedIndexes`.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::join_all;
use k8s_openapi::api::batch::v1::{Job, JobCondition, JobStatus, UncountedTerminatedPods};
use k8s_openapi::api::core::v1::{EnvVar, EnvVarSource, ObjectFieldSelector, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;

use crate::claim;
use crate::events::{self, Recorder};
use crate::expectations::Expectations;
use crate::informer::{Informer, controller_uid, key_of};
use crate::pods;
use crate::workqueue::WorkQueue;

pub const COMPONENT: &str = "job-controller";
pub const TRACKING_FINALIZER: &str = "batch.kubernetes.io/job-tracking";
pub const INDEX: &str = "batch.kubernetes.io/job-completion-index";
const WORKERS: usize = 5;
/// Back-off after failures: 10 s doubling, at most 6 minutes.
const BACKOFF_BASE: Duration = Duration::from_secs(10);
const BACKOFF_MAX: Duration = Duration::from_secs(360);

fn phase(pod: &Pod) -> Option<&str> {
    pod.status.as_ref()?.phase.as_deref()
}

fn finished(pod: &Pod) -> bool {
    matches!(phase(pod), Some("Succeeded" | "Failed"))
}

/// Whether a pod counts as failed: Failed, or (unless the Job replaces
/// only failed pods) being deleted before it succeeded, as upstream
/// counts pods that never get to fail.
fn failed_pod(job: &Job, pod: &Pod) -> bool {
    if phase(pod) == Some("Failed") {
        return true;
    }
    let waits = job
        .spec
        .as_ref()
        .and_then(|s| s.pod_replacement_policy.as_deref())
        == Some("Failed");
    !waits && pod.metadata.deletion_timestamp.is_some() && phase(pod) != Some("Succeeded")
}

/// Whether a pod is done as far as counting goes.
fn counted_as_done(job: &Job, pod: &Pod) -> bool {
    phase(pod) == Some("Succeeded") || failed_pod(job, pod)
}

fn tracked(pod: &Pod) -> bool {
    pod.metadata
        .finalizers
        .as_ref()
        .is_some_and(|f| f.iter().any(|f| f == TRACKING_FINALIZER))
}

fn index_of(pod: &Pod) -> Option<i32> {
    pod.metadata.annotations.as_ref()?.get(INDEX)?.parse().ok()
}

fn condition_true(job: &Job, type_: &str) -> bool {
    job.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == type_ && c.status == "True"))
}

/// Whether the Job is done, one way or the other.
pub fn is_finished(job: &Job) -> bool {
    condition_true(job, "Complete") || condition_true(job, "Failed")
}

fn indexed(job: &Job) -> bool {
    job.spec.as_ref().and_then(|s| s.completion_mode.as_deref()) == Some("Indexed")
}

/// Parses `completedIndexes` ("1,3-5").
pub fn parse_indexes(text: &str) -> BTreeSet<i32> {
    let mut set = BTreeSet::new();
    for part in text.split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                if let (Ok(a), Ok(b)) = (a.parse::<i32>(), b.parse::<i32>()) {
                    set.extend(a..=b);
                }
            }
            None => {
                if let Ok(n) = part.parse() {
                    set.insert(n);
                }
            }
        }
    }
    set
}

/// Writes indexes as upstream does: ranges of three or more joined by `-`.
pub fn format_indexes(set: &BTreeSet<i32>) -> String {
    let mut parts = Vec::new();
    let mut iter = set.iter().copied().peekable();
    while let Some(start) = iter.next() {
        let mut end = start;
        while iter.peek() == Some(&(end + 1)) {
            end = iter.next().unwrap_or(end);
        }
        parts.push(match end - start {
            0 => start.to_string(),
            1 => format!("{start},{end}"),
            _ => format!("{start}-{end}"),
        });
    }
    parts.join(",")
}

/// How long to wait before making a pod again after `failures` failures.
pub fn backoff(failures: i32) -> Duration {
    if failures <= 0 {
        return Duration::ZERO;
    }
    let exponent = (failures - 1).min(16) as u32;
    BACKOFF_BASE.saturating_mul(1 << exponent).min(BACKOFF_MAX)
}

/// How a Job ends, if it does now.
#[derive(Debug, PartialEq)]
pub enum End {
    Complete,
    Failed {
        reason: &'static str,
        message: String,
    },
}

/// What a podFailurePolicy rule does with a failed pod it matches.
#[derive(Debug, PartialEq)]
pub enum PolicyAction {
    /// The Job fails, saying why.
    FailJob(String),
    /// The failure does not count toward backoffLimit.
    Ignore,
    /// The failure counts, as without a rule (FailIndex, which needs
    /// backoffLimitPerIndex, counts so too for now).
    Count,
}

/// The first rule of the Job's podFailurePolicy that a Failed pod
/// matches, as upstream evaluates them: by a container's non-zero exit
/// code (In or NotIn the values, of the named container if any), or by a
/// pod condition with the given status.
pub fn pod_failure_policy(job: &Job, pod: &Pod) -> Option<PolicyAction> {
    if phase(pod) != Some("Failed") {
        return None;
    }
    let rules = job.spec.as_ref()?.pod_failure_policy.as_ref()?;
    let status = pod.status.as_ref();
    let namespace = pod.metadata.namespace.as_deref().unwrap_or_default();
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    for (index, rule) in rules.rules.iter().enumerate() {
        let matched = if let Some(codes) = &rule.on_exit_codes {
            status
                .into_iter()
                .flat_map(|s| {
                    s.init_container_statuses
                        .iter()
                        .flatten()
                        .chain(s.container_statuses.iter().flatten())
                })
                .filter(|c| codes.container_name.as_ref().is_none_or(|n| *n == c.name))
                .find_map(|c| {
                    let code = c.state.as_ref()?.terminated.as_ref()?.exit_code;
                    let listed = codes.values.contains(&code);
                    let hit = code != 0
                        && match codes.operator.as_str() {
                            "In" => listed,
                            "NotIn" => !listed,
                            _ => false,
                        };
                    hit.then(|| {
                        format!(
                            "Container {} for pod {namespace}/{name} failed with exit code {code} matching {} rule at index {index}",
                            c.name, rule.action
                        )
                    })
                })
        } else {
            rule.on_pod_conditions.iter().flatten().find_map(|pattern| {
                let wanted = if pattern.status.is_empty() { "True" } else { pattern.status.as_str() };
                status
                    .and_then(|s| s.conditions.as_ref())
                    .into_iter()
                    .flatten()
                    .any(|c| c.type_ == pattern.type_ && c.status == wanted)
                    .then(|| {
                        format!(
                            "Pod {namespace}/{name} has condition {} matching {} rule at index {index}",
                            pattern.type_, rule.action
                        )
                    })
            })
        };
        if let Some(message) = matched {
            return Some(match rule.action.as_str() {
                "FailJob" => PolicyAction::FailJob(message),
                "Ignore" => PolicyAction::Ignore,
                _ => PolicyAction::Count,
            });
        }
    }
    None
}

/// Whether the Job is over: succeeded enough, failed too often, or past
/// its deadline. `completed` is the number of succeeded pods (indexes for
/// an Indexed Job).
pub fn end(job: &Job, succeeded: i32, failed: i32, active: usize, now: Timestamp) -> Option<End> {
    let spec = job.spec.clone().unwrap_or_default();
    if failed > spec.backoff_limit.unwrap_or(6) {
        return Some(End::Failed {
            reason: "BackoffLimitExceeded",
            message: "Job has reached the specified backoff limit".into(),
        });
    }
    if let (Some(deadline), Some(start)) = (
        spec.active_deadline_seconds,
        job.status.as_ref().and_then(|s| s.start_time.as_ref()),
    ) && start
        .0
        .checked_add(SignedDuration::from_secs(deadline))
        .is_ok_and(|at| at <= now)
    {
        return Some(End::Failed {
            reason: "DeadlineExceeded",
            message: "Job was active longer than specified deadline".into(),
        });
    }
    let done = match spec.completions {
        Some(completions) => succeeded >= completions,
        None => succeeded > 0 && active == 0,
    };
    done.then_some(End::Complete)
}

/// How many pods should be active now.
pub fn wanted_active(job: &Job, succeeded: i32) -> i32 {
    let spec = job.spec.clone().unwrap_or_default();
    let parallelism = spec.parallelism.unwrap_or(1).max(0);
    match spec.completions {
        Some(completions) => (completions - succeeded).clamp(0, parallelism),
        None if succeeded > 0 => 0,
        None => parallelism,
    }
}

fn new_condition(type_: &str, reason: &str, message: &str, now: Timestamp) -> JobCondition {
    JobCondition {
        type_: type_.into(),
        status: "True".into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_probe_time: Some(Time(now)),
        last_transition_time: Some(Time(now)),
    }
}

/// Sets a condition, keeping its times when status and reason stay.
fn set_condition(status: &mut JobStatus, new: JobCondition) {
    let conditions = status.conditions.get_or_insert_with(Vec::new);
    if let Some(current) = conditions.iter_mut().find(|c| c.type_ == new.type_) {
        if current.status != new.status || current.reason != new.reason {
            *current = new;
        }
        return;
    }
    conditions.push(new);
}

struct Controller {
    client: Client,
    jobs: Informer<Job>,
    pods: Informer<Pod>,
    queue: WorkQueue,
    expectations: Expectations,
    /// When each Job last saw a pod fail, by our clock.
    last_failure: Mutex<HashMap<String, Instant>>,
    /// UIDs of the Jobs this controller finished, until the cache shows
    /// it (so that a stale sync does not finish one twice).
    finished_here: Mutex<std::collections::HashSet<String>>,
    /// UIDs of pods whose tracking finalizer this controller took off,
    /// until the pod cache shows it gone: the Job cache may show the pod
    /// counted before the pod cache shows it released, and the pod must
    /// not be counted again meanwhile (upstream's finalizer expectations).
    /// By UID, the pod's key.
    releasing: Mutex<HashMap<String, String>>,
    recorder: Recorder,
}

impl Controller {
    fn owner_of(&self, pod: &Pod) -> Option<Arc<Job>> {
        self.jobs.controller_of(&pod.metadata)
    }

    fn on_pod(&self, old: Option<&Arc<Pod>>, new: Option<&Arc<Pod>>) {
        let Some(pod) = new.or(old) else { return };
        let Some(job) = self.owner_of(pod) else {
            if let Some(pod) = new
                && tracked(pod)
                && (finished(pod) || pod.metadata.deletion_timestamp.is_some())
            {
                self.queue.add(&format!("pod:{}", key_of(pod.as_ref())));
            }
            if let Some(pod) = new
                && controller_uid(&pod.metadata).is_none()
            {
                for job in self.jobs.in_namespace(&pod.namespace().unwrap_or_default()) {
                    if pods::selects(
                        job.spec.as_ref().and_then(|s| s.selector.as_ref()),
                        pod.metadata.labels.as_ref(),
                    ) {
                        self.queue.add(&key_of(job.as_ref()));
                    }
                }
            }
            return;
        };
        let key = key_of(job.as_ref());
        match (old, new) {
            (None, Some(p)) if p.metadata.deletion_timestamp.is_none() => {
                self.expectations.creation_observed(&key)
            }
            (_, None) => self
                .expectations
                .deletion_observed(&key, &key_of(pod.as_ref())),
            (Some(o), Some(n))
                if o.metadata.deletion_timestamp.is_none()
                    && n.metadata.deletion_timestamp.is_some() =>
            {
                self.expectations
                    .deletion_observed(&key, &key_of(pod.as_ref()))
            }
            _ => {}
        }
        if new.is_some_and(|n| phase(n) == Some("Failed"))
            && old.is_none_or(|o| phase(o) != Some("Failed"))
        {
            self.last_failure
                .lock()
                .expect("job failures")
                .insert(key.clone(), Instant::now());
        }
        self.queue.add(&key);
    }

    fn pod_for(&self, job: &Job, index: Option<i32>) -> Pod {
        let spec = job.spec.clone().unwrap_or_default();
        let owner = pods::controller_ref("batch/v1", "Job", &job.metadata);
        let mut pod = pods::from_template(&spec.template, &job.metadata, owner);
        pod.metadata
            .finalizers
            .get_or_insert_with(Vec::new)
            .push(TRACKING_FINALIZER.into());
        if let Some(i) = index {
            let name = job.name_any();
            pod.metadata.generate_name = Some(format!("{name}-{i}-"));
            pod.metadata
                .annotations
                .get_or_insert_with(Default::default)
                .insert(INDEX.into(), i.to_string());
            pod.metadata
                .labels
                .get_or_insert_with(Default::default)
                .insert(INDEX.into(), i.to_string());
            if let Some(pod_spec) = pod.spec.as_mut() {
                if pod_spec.subdomain.is_some() {
                    pod_spec.hostname = Some(format!("{name}-{i}"));
                }
                let env = EnvVar {
                    name: "JOB_COMPLETION_INDEX".into(),
                    value: None,
                    value_from: Some(EnvVarSource {
                        field_ref: Some(ObjectFieldSelector {
                            api_version: None,
                            field_path: format!("metadata.labels['{INDEX}']"),
                        }),
                        ..EnvVarSource::default()
                    }),
                };
                for container in pod_spec
                    .containers
                    .iter_mut()
                    .chain(pod_spec.init_containers.iter_mut().flatten())
                {
                    container.env.get_or_insert_with(Vec::new).push(env.clone());
                }
            }
        }
        pod
    }

    async fn create(&self, job: &Job, key: &str, indexes: Vec<Option<i32>>) -> anyhow::Result<()> {
        let api: Api<Pod> =
            Api::namespaced(self.client.clone(), &job.namespace().unwrap_or_default());
        let wave: Vec<Pod> = indexes.into_iter().map(|i| self.pod_for(job, i)).collect();
        self.expectations.expect(key, wave.len(), Vec::new());
        pods::create_in_batches(
            &api,
            wave,
            key,
            &self.expectations,
            &self.recorder,
            &events::reference(job),
        )
        .await
        .map_err(|message| anyhow::anyhow!(message))
    }

    async fn delete(&self, job: &Job, key: &str, doomed: &[Arc<Pod>]) -> anyhow::Result<()> {
        if doomed.is_empty() {
            return Ok(());
        }
        let api: Api<Pod> =
            Api::namespaced(self.client.clone(), &job.namespace().unwrap_or_default());
        self.expectations
            .expect(key, 0, doomed.iter().map(|p| key_of(p.as_ref())).collect());
        let params = DeleteParams::default();
        let results = join_all(
            doomed
                .iter()
                .map(|p| api.delete(p.metadata.name.as_deref().unwrap_or(""), &params)),
        )
        .await;
        for (pod, result) in doomed.iter().zip(results) {
            match result {
                Ok(_) => self.recorder.event(
                    events::reference(job),
                    events::NORMAL,
                    "SuccessfulDelete",
                    format!("Deleted pod: {}", pod.name_any()),
                ),
                Err(err) => {
                    self.expectations
                        .deletion_observed(key, &key_of(pod.as_ref()));
                    if !matches!(&err, kube::Error::Api(s) if s.code == 404) {
                        return Err(err.into());
                    }
                }
            }
        }
        Ok(())
    }

    /// Takes the tracking finalizer off a pod.
    async fn release(&self, pod: &Pod) -> anyhow::Result<()> {
        let api: Api<Pod> =
            Api::namespaced(self.client.clone(), &pod.namespace().unwrap_or_default());
        let finalizers: Vec<&String> = pod
            .metadata
            .finalizers
            .iter()
            .flatten()
            .filter(|f| *f != TRACKING_FINALIZER)
            .collect();
        let patch = json!({"metadata": {
            "finalizers": if finalizers.is_empty() { serde_json::Value::Null } else { json!(finalizers) },
            "resourceVersion": pod.metadata.resource_version,
        }});
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        self.releasing
            .lock()
            .expect("job releasing")
            .insert(uid.clone(), key_of(pod));
        let released = api
            .patch(
                &pod.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await;
        match released {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(err) => {
                // Not released: it may be counted when it is.
                self.releasing.lock().expect("job releasing").remove(&uid);
                Err(err.into())
            }
        }
    }

    /// A finished or deleted pod still tracked whose Job is gone: its
    /// finalizer goes (else it would stay for ever).
    async fn release_orphan(&self, pod_key: &str) -> anyhow::Result<Option<Duration>> {
        let Some(pod) = self.pods.get(pod_key) else {
            return Ok(None);
        };
        if !tracked(&pod) || self.owner_of(&pod).is_some() {
            return Ok(None);
        }
        if let Some(reference) = pod
            .metadata
            .owner_references
            .iter()
            .flatten()
            .find(|r| r.controller == Some(true))
        {
            let jobs: Api<Job> =
                Api::namespaced(self.client.clone(), &pod.namespace().unwrap_or_default());
            if jobs
                .get_opt(&reference.name)
                .await?
                .is_some_and(|j| j.metadata.uid.as_deref() == Some(reference.uid.as_str()))
            {
                // The cache has not caught up: the Job's sync counts it.
                return Ok(None);
            }
        }
        self.release(&pod).await.map(|_| None)
    }

    async fn write_status(&self, job: &mut Job, mut status: JobStatus) -> anyhow::Result<()> {
        // Zero counts are left out, as upstream's omitempty does.
        for count in [
            &mut status.active,
            &mut status.succeeded,
            &mut status.failed,
        ] {
            if *count == Some(0) {
                *count = None;
            }
        }
        if job.status.as_ref() == Some(&status) {
            return Ok(());
        }
        let api: Api<Job> =
            Api::namespaced(self.client.clone(), &job.namespace().unwrap_or_default());
        let mut object = job.clone();
        object.metadata.managed_fields = None;
        object.status = Some(status);
        *job = api
            .replace_status(&job.name_any(), &PostParams::default(), &object)
            .await?;
        Ok(())
    }

    /// Counts finished pods exactly once; answers the status with the
    /// counts moved in.
    async fn track(&self, job: &mut Job, claimed: &[Arc<Pod>]) -> anyhow::Result<JobStatus> {
        let mut status = job.status.clone().unwrap_or_default();
        let mut uncounted = status.uncounted_terminated_pods.clone().unwrap_or_default();
        let (mut succeeded_uids, mut failed_uids) = (
            uncounted.succeeded.clone().unwrap_or_default(),
            uncounted.failed.clone().unwrap_or_default(),
        );
        let mut added = false;
        let releasing: std::collections::HashSet<String> = {
            let mut releasing = self.releasing.lock().expect("job releasing");
            // Seen released, or gone: expected no more.
            releasing.retain(|uid, key| {
                self.pods
                    .get(key)
                    .is_some_and(|p| p.metadata.uid.as_deref() == Some(uid.as_str()) && tracked(&p))
            });
            releasing.keys().cloned().collect()
        };
        for pod in claimed
            .iter()
            .filter(|p| counted_as_done(job, p) && tracked(p))
        {
            let uid = pod.metadata.uid.clone().unwrap_or_default();
            if succeeded_uids.contains(&uid)
                || failed_uids.contains(&uid)
                || releasing.contains(&uid)
            {
                continue;
            }
            if !failed_pod(job, pod) {
                succeeded_uids.push(uid);
                added = true;
            } else if pod_failure_policy(job, pod) != Some(PolicyAction::Ignore) {
                failed_uids.push(uid);
                added = true;
            }
        }
        if added {
            uncounted.succeeded = Some(succeeded_uids.clone());
            uncounted.failed = Some(failed_uids.clone());
            status.uncounted_terminated_pods = Some(uncounted.clone());
            self.write_status(job, status.clone()).await?;
        }
        // Recorded: the finalizers may go.
        for pod in claimed
            .iter()
            .filter(|p| counted_as_done(job, p) && tracked(p))
        {
            self.release(pod).await?;
        }
        // Every recorded pod is now counted.
        let by_uid: HashMap<String, &Arc<Pod>> = claimed
            .iter()
            .map(|p| (p.metadata.uid.clone().unwrap_or_default(), p))
            .collect();
        let mut completed = parse_indexes(status.completed_indexes.as_deref().unwrap_or(""));
        for uid in &succeeded_uids {
            if let Some(i) = by_uid.get(uid).and_then(|p| index_of(p)) {
                completed.insert(i);
            }
        }
        let succeeded = status.succeeded.unwrap_or(0) + succeeded_uids.len() as i32;
        let failed = status.failed.unwrap_or(0) + failed_uids.len() as i32;
        status.succeeded = Some(if indexed(job) {
            completed.len() as i32
        } else {
            succeeded
        });
        status.failed = Some(failed);
        if indexed(job) {
            status.completed_indexes = Some(format_indexes(&completed));
        }
        status.uncounted_terminated_pods = Some(UncountedTerminatedPods::default());
        Ok(status)
    }

    async fn sync(&self, key: &str) -> anyhow::Result<Option<Duration>> {
        if let Some(pod) = key.strip_prefix("pod:") {
            return self.release_orphan(pod).await;
        }
        let Some(cached) = self.jobs.get(key) else {
            self.expectations.forget(key);
            self.last_failure.lock().expect("job failures").remove(key);
            return Ok(None);
        };
        let mut job = (*cached).clone();
        let selector = job.spec.as_ref().and_then(|s| s.selector.clone());
        let owner = claim::Owner {
            meta: &cached.metadata,
            api_version: "batch/v1",
            kind: "Job",
            selector: selector.as_ref(),
        };
        let client = &self.client;
        let claimed = claim::claim(
            client,
            &self.pods,
            owner,
            |_| true,
            async || claim::still_there::<Job>(client, &cached.metadata).await,
        )
        .await?;
        let uid = job.metadata.uid.clone().unwrap_or_default();
        if is_finished(&job) {
            self.finished_here
                .lock()
                .expect("jobs finished")
                .remove(&uid);
        } else if self
            .finished_here
            .lock()
            .expect("jobs finished")
            .contains(&uid)
        {
            // Finished by an earlier sync that the cache has not caught up with.
            return Ok(None);
        }
        let mut status = self.track(&mut job, &claimed).await?;
        let now = Timestamp::now();
        if is_finished(&job) {
            return self.write_status(&mut job, status).await.map(|_| None);
        }
        let active: Vec<Arc<Pod>> = claimed
            .iter()
            .filter(|p| pods::is_active(p))
            .cloned()
            .collect();
        let terminating = claimed
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_some() && !finished(p))
            .count() as i32;
        let suspended = job.spec.as_ref().and_then(|s| s.suspend).unwrap_or(false);
        let needs_sync = self.expectations.satisfied(key);
        let mut again = None;
        if suspended {
            if needs_sync {
                self.delete(&job, key, &active).await?;
            }
            if !condition_true(&job, "Suspended") {
                set_condition(
                    &mut status,
                    new_condition("Suspended", "JobSuspended", "Job suspended", now),
                );
                self.recorder.event(
                    events::reference(&job),
                    events::NORMAL,
                    "Suspended",
                    "Job suspended".into(),
                );
            }
            status.active = Some(0);
            status.ready = Some(0);
        } else {
            if condition_true(&job, "Suspended") {
                let mut resumed = new_condition("Suspended", "JobResumed", "Job resumed", now);
                resumed.status = "False".into();
                set_condition(&mut status, resumed);
                status.start_time = None;
                self.recorder.event(
                    events::reference(&job),
                    events::NORMAL,
                    "Resumed",
                    "Job resumed".into(),
                );
            }
            if status.start_time.is_none() {
                status.start_time = Some(Time(now));
                job.status.get_or_insert_with(Default::default).start_time =
                    status.start_time.clone();
            }
            let succeeded = status.succeeded.unwrap_or(0);
            let failed = status.failed.unwrap_or(0);
            // A failed pod matching a FailJob rule ends the Job first.
            let failing = claimed
                .iter()
                .find_map(|p| match pod_failure_policy(&job, p) {
                    Some(PolicyAction::FailJob(message)) => Some(End::Failed {
                        reason: "PodFailurePolicy",
                        message,
                    }),
                    _ => None,
                });
            match failing.or_else(|| end(&job, succeeded, failed, active.len(), now)) {
                Some(End::Complete) => {
                    self.delete(&job, key, &active).await?;
                    set_condition(
                        &mut status,
                        new_condition(
                            "SuccessCriteriaMet",
                            "CompletionsReached",
                            "Reached expected number of succeeded pods",
                            now,
                        ),
                    );
                    set_condition(
                        &mut status,
                        new_condition(
                            "Complete",
                            "CompletionsReached",
                            "Reached expected number of succeeded pods",
                            now,
                        ),
                    );
                    status.completion_time = Some(Time(now));
                    status.active = Some(0);
                    status.ready = Some(0);
                    self.recorder.event(
                        events::reference(&job),
                        events::NORMAL,
                        "Completed",
                        "Job completed".into(),
                    );
                }
                Some(End::Failed { reason, message }) => {
                    self.delete(&job, key, &active).await?;
                    set_condition(
                        &mut status,
                        new_condition("FailureTarget", reason, &message, now),
                    );
                    set_condition(&mut status, new_condition("Failed", reason, &message, now));
                    status.active = Some(0);
                    status.ready = Some(0);
                    self.recorder
                        .event(events::reference(&job), events::WARNING, reason, message);
                }
                None => {
                    if needs_sync {
                        again = self
                            .manage(&job, key, &active, terminating, succeeded, failed, &status)
                            .await?;
                    }
                    status.active = Some(active.len() as i32);
                    status.ready = Some(active.iter().filter(|p| pods::is_ready(p)).count() as i32);
                    if let Some(deadline) =
                        job.spec.as_ref().and_then(|s| s.active_deadline_seconds)
                    {
                        let started = status.start_time.as_ref().map_or(now, |t| t.0);
                        let left = started
                            .checked_add(SignedDuration::from_secs(deadline))
                            .map_or(SignedDuration::ZERO, |at| at.duration_since(now));
                        let left = Duration::from_secs(left.as_secs().max(0) as u64 + 1);
                        again = Some(again.map_or(left, |a: Duration| a.min(left)));
                    }
                }
            }
        }
        status.terminating = Some(terminating);
        let finishing = status
            .conditions
            .iter()
            .flatten()
            .any(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True");
        self.write_status(&mut job, status).await?;
        if finishing {
            self.finished_here
                .lock()
                .expect("jobs finished")
                .insert(uid);
        }
        Ok(again)
    }

    /// Creates or deletes pods toward the wanted number of active ones;
    /// answers when to come back if failures hold creations back.
    #[allow(clippy::too_many_arguments)]
    async fn manage(
        &self,
        job: &Job,
        key: &str,
        active: &[Arc<Pod>],
        terminating: i32,
        succeeded: i32,
        failed: i32,
        status: &JobStatus,
    ) -> anyhow::Result<Option<Duration>> {
        let spec = job.spec.clone().unwrap_or_default();
        let wanted = wanted_active(job, succeeded);
        let replacing_waits = spec.pod_replacement_policy.as_deref() == Some("Failed");
        let busy = active.len() as i32 + if replacing_waits { terminating } else { 0 };
        if (active.len() as i32) > wanted {
            let mut ranked = active.to_vec();
            pods::rank_for_deletion(&mut ranked, active, Timestamp::now());
            ranked.truncate(active.len() - wanted as usize);
            self.delete(job, key, &ranked).await?;
            return Ok(None);
        }
        if busy >= wanted {
            return Ok(None);
        }
        if failed > 0 {
            let delay = backoff(failed);
            let since = self
                .last_failure
                .lock()
                .expect("job failures")
                .get(key)
                .map(|at| at.elapsed());
            if let Some(since) = since
                && since < delay
            {
                return Ok(Some(delay - since));
            }
        }
        let count = (wanted - busy) as usize;
        let indexes: Vec<Option<i32>> = if indexed(job) {
            let completions = spec.completions.unwrap_or(0);
            let done = parse_indexes(status.completed_indexes.as_deref().unwrap_or(""));
            let running: BTreeSet<i32> = active.iter().filter_map(|p| index_of(p)).collect();
            (0..completions)
                .filter(|i| !done.contains(i) && !running.contains(i))
                .take(count)
                .map(Some)
                .collect()
        } else {
            vec![None; count]
        };
        self.create(job, key, indexes).await?;
        Ok(None)
    }
}

pub(crate) fn start(ctx: &crate::Context) -> crate::Running {
    let controller = Arc::new(Controller {
        client: ctx.client.clone(),
        jobs: ctx.jobs.clone(),
        pods: ctx.pods.clone(),
        queue: WorkQueue::default(),
        expectations: Expectations::default(),
        last_failure: Mutex::new(HashMap::new()),
        finished_here: Mutex::new(Default::default()),
        releasing: Mutex::new(Default::default()),
        recorder: ctx.recorder.for_component(COMPONENT),
    });
    let c = controller.clone();
    ctx.jobs.subscribe(Box::new(move |old, new| match new {
        Some(job) => c.queue.add(&key_of(job.as_ref())),
        None => {
            if let Some(job) = old {
                c.expectations.forget(&key_of(job.as_ref()));
                if let Some(uid) = &job.metadata.uid {
                    c.finished_here.lock().expect("jobs finished").remove(uid);
                }
                c.queue.add(&key_of(job.as_ref()));
            }
        }
    }));
    let c = controller.clone();
    ctx.pods
        .subscribe(Box::new(move |old, new| c.on_pod(old, new)));
    crate::Running::workers(COMPONENT, controller.queue.clone(), WORKERS, move |key| {
        let c = controller.clone();
        async move { c.sync(&key).await }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn job(spec: serde_json::Value) -> Job {
        let mut spec = spec;
        spec["template"] = json!({"spec": {"containers": []}});
        serde_json::from_value(json!({"metadata": {"name": "pi"}, "spec": spec,
            "status": {"startTime": "2026-11-30T12:00:00Z"}}))
        .unwrap()
    }

    #[test]
    fn indexes_read_and_write_as_upstream_writes_them() {
        let set = parse_indexes("0,2-4,7,8");
        assert_eq!(set.iter().copied().collect::<Vec<_>>(), [0, 2, 3, 4, 7, 8]);
        assert_eq!(format_indexes(&set), "0,2-4,7,8");
        assert_eq!(format_indexes(&BTreeSet::new()), "");
    }

    #[test]
    fn failures_back_off_ten_seconds_doubling_to_six_minutes() {
        assert_eq!(backoff(0), Duration::ZERO);
        assert_eq!(backoff(1), Duration::from_secs(10));
        assert_eq!(backoff(3), Duration::from_secs(40));
        assert_eq!(backoff(10), BACKOFF_MAX);
    }

    #[test]
    fn a_job_ends_on_completions_backoff_limit_or_deadline() {
        let now: Timestamp = "2026-11-30T12:00:30Z".parse().unwrap();
        let counted = job(json!({"completions": 3, "parallelism": 2, "backoffLimit": 1}));
        assert_eq!(end(&counted, 2, 1, 1, now), None);
        assert_eq!(end(&counted, 3, 0, 0, now), Some(End::Complete));
        assert!(matches!(
            end(&counted, 1, 2, 1, now),
            Some(End::Failed {
                reason: "BackoffLimitExceeded",
                ..
            })
        ));
        let deadline = job(json!({"completions": 1, "activeDeadlineSeconds": 30}));
        assert!(matches!(
            end(&deadline, 0, 0, 1, now),
            Some(End::Failed {
                reason: "DeadlineExceeded",
                ..
            })
        ));
        let queue = job(json!({"parallelism": 3}));
        assert_eq!(end(&queue, 1, 0, 2, now), None);
        assert_eq!(end(&queue, 1, 0, 0, now), Some(End::Complete));
    }

    #[test]
    fn pod_failure_policy_rules_match_exit_codes_and_conditions_in_order() {
        let policy = job(json!({"podFailurePolicy": {"rules": [
            {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]},
            {"action": "FailJob", "onExitCodes": {"containerName": "main", "operator": "In", "values": [42]}},
            {"action": "Count", "onExitCodes": {"operator": "NotIn", "values": [42]}},
        ]}, "template": {"spec": {"containers": []}}}));
        let pod = |phase: &str, code: i32, conditions: serde_json::Value| -> Pod {
            serde_json::from_value(json!({
                "metadata": {"name": "p", "namespace": "ns"},
                "status": {"phase": phase, "conditions": conditions, "containerStatuses": [
                    {"name": "side", "state": {"terminated": {"exitCode": 0}}},
                    {"name": "main", "state": {"terminated": {"exitCode": code}}},
                ]},
            }))
            .unwrap()
        };
        let disrupted = json!([{"type": "DisruptionTarget", "status": "True"}]);
        assert_eq!(
            pod_failure_policy(&policy, &pod("Failed", 42, disrupted.clone())),
            Some(PolicyAction::Ignore)
        );
        assert_eq!(
            pod_failure_policy(&policy, &pod("Failed", 42, json!([]))),
            Some(PolicyAction::FailJob(
                "Container main for pod ns/p failed with exit code 42 matching FailJob rule at index 1".into()
            ))
        );
        // Exit code 0 never matches, NotIn included.
        assert_eq!(
            pod_failure_policy(&policy, &pod("Failed", 7, json!([]))),
            Some(PolicyAction::Count)
        );
        assert_eq!(
            pod_failure_policy(&policy, &pod("Running", 42, json!([]))),
            None
        );
        assert_eq!(
            pod_failure_policy(
                &job(json!({"template": {"spec": {"containers": []}}})),
                &pod("Failed", 42, json!([]))
            ),
            None
        );
    }

    #[test]
    fn parallelism_caps_what_remains_to_complete() {
        assert_eq!(
            wanted_active(&job(json!({"completions": 5, "parallelism": 2})), 0),
            2
        );
        assert_eq!(
            wanted_active(&job(json!({"completions": 5, "parallelism": 2})), 4),
            1
        );
        assert_eq!(
            wanted_active(&job(json!({"completions": 5, "parallelism": 2})), 5),
            0
        );
        assert_eq!(wanted_active(&job(json!({"parallelism": 3})), 0), 3);
        assert_eq!(wanted_active(&job(json!({"parallelism": 3})), 1), 0);
    }
}
