//! The Deployment controller: rolls a Deployment's pods from one
//! ReplicaSet (one per template, named after the template's hash) to the
//! next, within maxSurge and maxUnavailable, or all at once (Recreate);
//! scales them in proportion; keeps revisionHistoryLimit old ReplicaSets;
//! and reports progress in the status and conditions that `kubectl
//! rollout status` reads.
//!
//! The arithmetic is pure functions over the Deployment and its
//! ReplicaSets; [`Controller::sync`] applies them one step per sync, as
//! upstream does, and the next change seen brings the next step.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentCondition, DeploymentStatus, ReplicaSet, ReplicaSetSpec,
};
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, DeleteParams, PostParams};
use kube::{Client, ResourceExt};

use crate::claim;
use crate::events::{self, Recorder};
use crate::informer::{Informer, controller_uid, key_of};
use crate::pods;
use crate::workqueue::WorkQueue;

pub const COMPONENT: &str = "deployment-controller";
const WORKERS: usize = 5;

pub const REVISION: &str = "deployment.kubernetes.io/revision";
pub const REVISION_HISTORY: &str = "deployment.kubernetes.io/revision-history";
pub const DESIRED_REPLICAS: &str = "deployment.kubernetes.io/desired-replicas";
pub const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";
const ROLLBACK_TO: &str = "deprecated.deployment.rollback.to";
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";
pub const HASH_LABEL: &str = "pod-template-hash";
/// The revision-history annotation stays under this length.
const HISTORY_MAX: usize = 2000;

// ---- The Deployment's numbers -------------------------------------------

pub fn replicas(d: &Deployment) -> i32 {
    d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
}

fn is_recreate(d: &Deployment) -> bool {
    d.spec
        .as_ref()
        .and_then(|s| s.strategy.as_ref())
        .and_then(|s| s.type_.as_deref())
        == Some("Recreate")
}

/// An integer as is, a percentage of `total` rounded up or down.
pub fn scaled(value: Option<&IntOrString>, default: &str, total: i32, round_up: bool) -> i32 {
    let percent = match value {
        Some(IntOrString::Int(n)) => return *n,
        Some(IntOrString::String(s)) => s.as_str(),
        None => default,
    };
    let Some(n) = percent
        .strip_suffix('%')
        .and_then(|n| n.parse::<i64>().ok())
    else {
        return 0;
    };
    let product = n * i64::from(total);
    let value = if round_up {
        (product + 99).div_euclid(100)
    } else {
        product.div_euclid(100)
    };
    value as i32
}

/// maxSurge and maxUnavailable resolved; both zero makes one unavailable
/// allowed (upstream's ResolveFenceposts).
fn fenceposts(d: &Deployment) -> (i32, i32) {
    let rolling = d
        .spec
        .as_ref()
        .and_then(|s| s.strategy.as_ref())
        .and_then(|s| s.rolling_update.as_ref());
    let total = replicas(d);
    let surge = scaled(
        rolling.and_then(|r| r.max_surge.as_ref()),
        "25%",
        total,
        true,
    );
    let unavailable = scaled(
        rolling.and_then(|r| r.max_unavailable.as_ref()),
        "25%",
        total,
        false,
    );
    if surge == 0 && unavailable == 0 {
        return (0, 1);
    }
    (surge, unavailable)
}

pub fn max_surge(d: &Deployment) -> i32 {
    if is_recreate(d) { 0 } else { fenceposts(d).0 }
}

pub fn max_unavailable(d: &Deployment) -> i32 {
    if is_recreate(d) || replicas(d) == 0 {
        return 0;
    }
    fenceposts(d).1.min(replicas(d))
}

fn progress_deadline(d: &Deployment) -> Option<i32> {
    d.spec
        .as_ref()
        .and_then(|s| s.progress_deadline_seconds)
        .filter(|s| *s != i32::MAX)
}

fn paused(d: &Deployment) -> bool {
    d.spec.as_ref().and_then(|s| s.paused).unwrap_or(false)
}

// ---- ReplicaSets --------------------------------------------------------

pub fn spec_replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
}

fn available(rs: &ReplicaSet) -> i32 {
    rs.status
        .as_ref()
        .and_then(|s| s.available_replicas)
        .unwrap_or(0)
}

fn annotation<'a>(meta: &'a ObjectMeta, key: &str) -> Option<&'a str> {
    meta.annotations.as_ref()?.get(key).map(String::as_str)
}

pub fn revision(rs: &ReplicaSet) -> Option<i64> {
    match annotation(&rs.metadata, REVISION) {
        None => Some(0),
        Some(value) => value.parse().ok(),
    }
}

fn max_revision(sets: &[ReplicaSet]) -> i64 {
    sets.iter().filter_map(revision).max().unwrap_or(0)
}

fn by_age(a: &ReplicaSet, b: &ReplicaSet) -> std::cmp::Ordering {
    let created = |rs: &ReplicaSet| rs.metadata.creation_timestamp.as_ref().map(|t| t.0);
    created(a)
        .cmp(&created(b))
        .then_with(|| a.metadata.name.cmp(&b.metadata.name))
}

fn without_hash(template: &PodTemplateSpec) -> PodTemplateSpec {
    let mut template = template.clone();
    if let Some(meta) = template.metadata.as_mut()
        && let Some(labels) = meta.labels.as_mut()
    {
        labels.remove(HASH_LABEL);
    }
    template
}

/// Whether two pod templates are the same but for the hash label.
pub fn same_template(a: Option<&PodTemplateSpec>, b: Option<&PodTemplateSpec>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => without_hash(a) == without_hash(b),
        (None, None) => true,
        _ => false,
    }
}

/// The hash that names a template's ReplicaSet: FNV-1a (32 bits) of the
/// template and the collision count, written in upstream's alphabet.
pub fn template_hash(template: &PodTemplateSpec, collisions: Option<i32>) -> String {
    hash_name(
        &serde_json::to_vec(template).unwrap_or_default(),
        collisions,
    )
}

/// The FNV-1a hash of `bytes` (and of the collision count, if any),
/// spelled in the alphabet upstream's names use (no vowels, no digits
/// that look like letters).
pub fn hash_name(bytes: &[u8], collisions: Option<i32>) -> String {
    let mut hash: u32 = 0x811c_9dc5;
    let mut feed = |bytes: &[u8]| {
        for b in bytes {
            hash ^= u32::from(*b);
            hash = hash.wrapping_mul(0x0100_0193);
        }
    };
    feed(bytes);
    if let Some(count) = collisions {
        feed(&(count as u32).to_le_bytes());
        feed(&[0; 4]);
    }
    hash.to_string()
        .bytes()
        .map(|d| b"456789bcdf"[(d - b'0') as usize] as char)
        .collect()
}

/// The ReplicaSet whose template is the Deployment's (the oldest, if
/// several), and the others.
pub fn split(d: &Deployment, sets: &[ReplicaSet]) -> (Option<ReplicaSet>, Vec<ReplicaSet>) {
    let template = d.spec.as_ref().map(|s| &s.template);
    let mut sorted: Vec<ReplicaSet> = sets.to_vec();
    sorted.sort_by(by_age);
    let new = sorted
        .iter()
        .position(|rs| same_template(template, rs.spec.as_ref().and_then(|s| s.template.as_ref())));
    match new {
        Some(i) => {
            let new = sorted.remove(i);
            (Some(new), sorted)
        }
        None => (None, sorted),
    }
}

/// How many replicas the new ReplicaSet should have now (upstream's
/// NewRSNewReplicas): as many as the surge allows.
pub fn new_replicas(d: &Deployment, all: &[ReplicaSet], new: &ReplicaSet) -> i32 {
    let wanted = replicas(d);
    if is_recreate(d) {
        return wanted;
    }
    let new_spec = spec_replicas(new);
    let total: i32 = all.iter().map(spec_replicas).sum();
    let max_total = wanted + max_surge(d);
    if total >= max_total {
        return new_spec;
    }
    new_spec + (max_total - total).min(wanted - new_spec)
}

/// New sizes for the old ReplicaSets (oldest first) in a rolling update:
/// unhealthy replicas go first, then healthy ones as far as availability
/// allows. Empty when nothing may go.
pub fn scale_down_old(
    d: &Deployment,
    old: &[ReplicaSet],
    new: Option<&ReplicaSet>,
) -> Vec<(String, i32)> {
    let old_total: i32 = old.iter().map(spec_replicas).sum();
    if old_total == 0 {
        return Vec::new();
    }
    let mut old: Vec<ReplicaSet> = old.to_vec();
    old.sort_by(by_age);
    let all_total = old_total + new.map_or(0, spec_replicas);
    let min_available = replicas(d) - max_unavailable(d);
    let new_unavailable = new.map_or(0, |n| spec_replicas(n) - available(n));
    let max_scaled_down = all_total - min_available - new_unavailable;
    if max_scaled_down <= 0 {
        return Vec::new();
    }
    let mut sizes: Vec<i32> = old.iter().map(spec_replicas).collect();
    let mut done = 0;
    for (rs, size) in old.iter().zip(sizes.iter_mut()) {
        if done >= max_scaled_down {
            break;
        }
        if *size == 0 || *size == available(rs) {
            continue;
        }
        let down = (max_scaled_down - done).min(*size - available(rs));
        *size -= down;
        done += down;
    }
    let available_total: i32 = old.iter().map(available).sum::<i32>() + new.map_or(0, available);
    if available_total > min_available {
        let mut left = available_total - min_available;
        for size in sizes.iter_mut() {
            if left <= 0 {
                break;
            }
            let down = (*size).min(left);
            *size -= down;
            left -= down;
        }
    }
    old.iter()
        .zip(sizes)
        .filter(|(rs, size)| spec_replicas(rs) != *size)
        .map(|(rs, size)| (rs.name_any(), size))
        .collect()
}

fn desired_annotation(rs: &ReplicaSet) -> Option<i32> {
    annotation(&rs.metadata, DESIRED_REPLICAS)?.parse().ok()
}

/// New sizes after the Deployment's size changed (upstream's `scale`),
/// and whether that is a scale up.
pub fn proportional(
    d: &Deployment,
    new: Option<&ReplicaSet>,
    old: &[ReplicaSet],
) -> (Vec<(String, i32)>, bool) {
    let wanted = replicas(d);
    let mut active: Vec<&ReplicaSet> = new
        .into_iter()
        .chain(old.iter())
        .filter(|rs| spec_replicas(rs) > 0)
        .collect();
    let single = match active.len() {
        0 => new.or_else(|| old.iter().max_by(|a, b| by_age(a, b))),
        1 => Some(active[0]),
        _ => None,
    };
    if let Some(rs) = single {
        let up = wanted > spec_replicas(rs);
        return if spec_replicas(rs) == wanted {
            (Vec::new(), up)
        } else {
            (vec![(rs.name_any(), wanted)], up)
        };
    }
    if let Some(new) = new
        && spec_replicas(new) == wanted
        && desired_annotation(new) == Some(wanted)
        && available(new) == wanted
    {
        let down = old
            .iter()
            .filter(|rs| spec_replicas(rs) > 0)
            .map(|rs| (rs.name_any(), 0))
            .collect();
        return (down, false);
    }
    if is_recreate(d) {
        return (Vec::new(), false);
    }
    let surge = max_surge(d);
    let allowed = if wanted > 0 { wanted + surge } else { 0 };
    let total: i32 = active.iter().map(|rs| spec_replicas(rs)).sum();
    let to_add = allowed - total;
    let up = to_add > 0;
    active.sort_by(|a, b| {
        spec_replicas(b)
            .cmp(&spec_replicas(a))
            .then_with(|| if up { by_age(b, a) } else { by_age(a, b) })
    });
    let mut sizes: Vec<i32> = active.iter().map(|rs| spec_replicas(rs)).collect();
    let mut added = 0;
    if to_add != 0 {
        for (rs, size) in active.iter().zip(sizes.iter_mut()) {
            let current = spec_replicas(rs);
            if added == to_add || current == 0 {
                continue;
            }
            let before = annotation(&rs.metadata, MAX_REPLICAS)
                .and_then(|v| v.parse::<i32>().ok())
                .unwrap_or_else(|| rs.status.as_ref().map_or(0, |s| s.replicas));
            let fraction = if wanted == 0 || before == 0 {
                -current
            } else {
                let exact = f64::from(current) * f64::from(wanted + surge) / f64::from(before);
                exact.round() as i32 - current
            };
            let left = to_add - added;
            let share = if up {
                fraction.min(left)
            } else {
                fraction.max(left)
            };
            *size += share;
            added += share;
        }
        if let Some(first) = sizes.first_mut() {
            *first = (*first + to_add - added).max(0);
        }
    }
    let changes = active
        .iter()
        .zip(sizes)
        .map(|(rs, size)| (rs.name_any(), size))
        .collect();
    (changes, up)
}

/// The old ReplicaSets to delete beyond revisionHistoryLimit, oldest
/// revision first, skipping any that still has replicas.
pub fn beyond_history(d: &Deployment, old: &[ReplicaSet]) -> Vec<String> {
    let Some(limit) = d.spec.as_ref().and_then(|s| s.revision_history_limit) else {
        return Vec::new();
    };
    if limit == i32::MAX {
        return Vec::new();
    }
    let mut candidates: Vec<&ReplicaSet> = old
        .iter()
        .filter(|rs| rs.metadata.deletion_timestamp.is_none())
        .collect();
    let excess = candidates.len() as i64 - i64::from(limit.max(0));
    if excess <= 0 {
        return Vec::new();
    }
    candidates.sort_by(|a, b| match (revision(a), revision(b)) {
        (Some(x), Some(y)) if x != y => x.cmp(&y),
        _ => by_age(a, b),
    });
    candidates
        .into_iter()
        .take(excess as usize)
        .filter(|rs| {
            let status = rs.status.clone().unwrap_or_default();
            status.replicas == 0
                && spec_replicas(rs) == 0
                && rs.metadata.generation.unwrap_or(0) <= status.observed_generation.unwrap_or(0)
        })
        .map(|rs| rs.name_any())
        .collect()
}

// ---- Status and conditions ----------------------------------------------

fn condition<'a>(status: &'a DeploymentStatus, type_: &str) -> Option<&'a DeploymentCondition> {
    status
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
}

fn new_condition(
    type_: &str,
    status: &str,
    reason: &str,
    message: String,
    now: Timestamp,
) -> DeploymentCondition {
    DeploymentCondition {
        type_: type_.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message),
        last_update_time: Some(Time(now)),
        last_transition_time: Some(Time(now)),
    }
}

/// Upstream's SetDeploymentCondition: the same status and reason change
/// nothing; the same status keeps its transition time; the condition
/// goes to the end.
pub fn set_condition(status: &mut DeploymentStatus, mut new: DeploymentCondition) {
    let conditions = status.conditions.get_or_insert_with(Vec::new);
    if let Some(current) = conditions.iter().find(|c| c.type_ == new.type_) {
        if current.status == new.status && current.reason == new.reason {
            return;
        }
        if current.status == new.status {
            new.last_transition_time = current.last_transition_time.clone();
        }
    }
    conditions.retain(|c| c.type_ != new.type_);
    conditions.push(new);
}

fn remove_condition(status: &mut DeploymentStatus, type_: &str) {
    if let Some(conditions) = status.conditions.as_mut() {
        conditions.retain(|c| c.type_ != type_);
    }
}

/// Counts summed over the ReplicaSets, and the Available condition.
pub fn calculate_status(
    d: &Deployment,
    all: &[ReplicaSet],
    new: Option<&ReplicaSet>,
    now: Timestamp,
) -> DeploymentStatus {
    let old = d.status.clone().unwrap_or_default();
    let sum = |f: fn(&ReplicaSet) -> i32| all.iter().map(f).sum::<i32>();
    let available = sum(available);
    let total_spec = sum(spec_replicas);
    let mut status = DeploymentStatus {
        observed_generation: d.metadata.generation,
        replicas: Some(sum(|rs| rs.status.as_ref().map_or(0, |s| s.replicas))),
        updated_replicas: Some(new.map_or(0, |rs| rs.status.as_ref().map_or(0, |s| s.replicas))),
        ready_replicas: Some(sum(|rs| {
            rs.status
                .as_ref()
                .and_then(|s| s.ready_replicas)
                .unwrap_or(0)
        })),
        available_replicas: Some(available),
        unavailable_replicas: Some((total_spec - available).max(0)),
        conditions: old.conditions.clone(),
        collision_count: old.collision_count,
        terminating_replicas: None,
    };
    if available >= replicas(d) - max_unavailable(d) {
        set_condition(
            &mut status,
            new_condition(
                "Available",
                "True",
                "MinimumReplicasAvailable",
                "Deployment has minimum availability.".into(),
                now,
            ),
        );
    } else {
        set_condition(
            &mut status,
            new_condition(
                "Available",
                "False",
                "MinimumReplicasUnavailable",
                "Deployment does not have minimum availability.".into(),
                now,
            ),
        );
    }
    status
}

fn complete(d: &Deployment, status: &DeploymentStatus) -> bool {
    let wanted = Some(replicas(d));
    status.updated_replicas == wanted
        && status.replicas == wanted
        && status.available_replicas == wanted
        && status.observed_generation >= d.metadata.generation
}

fn progressed(d: &Deployment, new: &DeploymentStatus) -> bool {
    let old = d.status.clone().unwrap_or_default();
    let n = |v: Option<i32>| v.unwrap_or(0);
    let old_old = n(old.replicas) - n(old.updated_replicas);
    let new_old = n(new.replicas) - n(new.updated_replicas);
    n(new.updated_replicas) > n(old.updated_replicas)
        || new_old < old_old
        || n(new.ready_replicas) > n(old.ready_replicas)
        || n(new.available_replicas) > n(old.available_replicas)
}

fn timed_out(d: &Deployment, status: &DeploymentStatus, now: Timestamp) -> bool {
    let (Some(deadline), Some(progressing)) =
        (progress_deadline(d), condition(status, "Progressing"))
    else {
        return false;
    };
    match progressing.reason.as_deref() {
        Some("NewReplicaSetAvailable") => false,
        Some("ProgressDeadlineExceeded") => true,
        _ => progressing.last_update_time.as_ref().is_some_and(|t| {
            t.0.checked_add(SignedDuration::from_secs(deadline.into()))
                .is_ok_and(|at| at < now)
        }),
    }
}

/// The status a rollout step leaves (upstream's syncRolloutStatus): the
/// counts, Available, Progressing by the progress made, and
/// ReplicaFailure copied from the ReplicaSets.
pub fn rollout_status(
    d: &Deployment,
    all: &[ReplicaSet],
    new: Option<&ReplicaSet>,
    now: Timestamp,
) -> DeploymentStatus {
    let mut status = calculate_status(d, all, new, now);
    if progress_deadline(d).is_none() {
        remove_condition(&mut status, "Progressing");
    }
    let current = condition(&status, "Progressing").cloned();
    let is_complete = status.replicas == status.updated_replicas
        && current.as_ref().and_then(|c| c.reason.as_deref()) == Some("NewReplicaSetAvailable");
    if progress_deadline(d).is_some() && !is_complete {
        let subject = match new {
            Some(rs) => format!("ReplicaSet {:?}", rs.name_any()),
            None => format!("Deployment {:?}", d.name_any()),
        };
        if complete(d, &status) {
            set_condition(
                &mut status,
                new_condition(
                    "Progressing",
                    "True",
                    "NewReplicaSetAvailable",
                    format!("{subject} has successfully progressed."),
                    now,
                ),
            );
        } else if progressed(d, &status) {
            let mut progressing = new_condition(
                "Progressing",
                "True",
                "ReplicaSetUpdated",
                format!("{subject} is progressing."),
                now,
            );
            if let Some(current) = &current {
                if current.status == "True" {
                    progressing.last_transition_time = current.last_transition_time.clone();
                }
                remove_condition(&mut status, "Progressing");
            }
            set_condition(&mut status, progressing);
        } else if timed_out(d, &status, now) {
            set_condition(
                &mut status,
                new_condition(
                    "Progressing",
                    "False",
                    "ProgressDeadlineExceeded",
                    format!("{subject} has timed out progressing."),
                    now,
                ),
            );
        }
    }
    let failure = new.into_iter().chain(all.iter()).find_map(|rs| {
        rs.status
            .as_ref()?
            .conditions
            .as_ref()?
            .iter()
            .find(|c| c.type_ == "ReplicaFailure")
            .cloned()
    });
    match failure {
        Some(c) => set_condition(
            &mut status,
            DeploymentCondition {
                type_: c.type_,
                status: c.status,
                reason: c.reason,
                message: c.message,
                last_update_time: c.last_transition_time.clone(),
                last_transition_time: c.last_transition_time,
            },
        ),
        None => remove_condition(&mut status, "ReplicaFailure"),
    }
    status
}

/// When to look again at a Deployment whose rollout has not progressed,
/// to notice its deadline pass.
fn deadline_check(d: &Deployment, status: &DeploymentStatus, now: Timestamp) -> Option<Duration> {
    let deadline = progress_deadline(d)?;
    let progressing = condition(status, "Progressing")?;
    if complete(d, status) || progressing.reason.as_deref() == Some("ProgressDeadlineExceeded") {
        return None;
    }
    let updated = progressing.last_update_time.as_ref()?.0;
    let due = updated
        .checked_add(SignedDuration::from_secs(deadline.into()))
        .ok()?;
    let left = due.duration_since(now);
    if left < SignedDuration::from_secs(1) {
        return Some(Duration::from_secs(1));
    }
    Some(Duration::from_secs(left.as_secs() as u64 + 1))
}

/// Copies the Deployment's annotations to its new ReplicaSet and raises
/// its revision; answers whether anything changed.
pub fn sync_annotations(d: &Deployment, rs: &mut ReplicaSet, revision: i64, created: bool) -> bool {
    let mut changed = false;
    let annotations = rs.metadata.annotations.get_or_insert_with(BTreeMap::new);
    for (k, v) in d.metadata.annotations.iter().flatten() {
        let skipped = [
            LAST_APPLIED,
            REVISION,
            REVISION_HISTORY,
            DESIRED_REPLICAS,
            MAX_REPLICAS,
            ROLLBACK_TO,
        ]
        .contains(&k.as_str());
        if skipped || annotations.get(k) == Some(v) {
            continue;
        }
        annotations.insert(k.clone(), v.clone());
        changed = true;
    }
    let old = annotations.get(REVISION).cloned();
    let old_number = match &old {
        None => 0,
        Some(value) => match value.parse::<i64>() {
            Ok(n) => n,
            Err(_) => return changed,
        },
    };
    if old_number < revision {
        annotations.insert(REVISION.into(), revision.to_string());
        changed = true;
        if let Some(old) = old {
            let history = annotations
                .get(REVISION_HISTORY)
                .cloned()
                .unwrap_or_default();
            let mut entries: Vec<&str> = history.split(',').filter(|e| !e.is_empty()).collect();
            entries.push(&old);
            while entries.join(",").len() > HISTORY_MAX && entries.len() > 1 {
                entries.remove(0);
            }
            annotations.insert(REVISION_HISTORY.into(), entries.join(","));
        }
    }
    if created {
        let wanted = replicas(d);
        annotations.insert(DESIRED_REPLICAS.into(), wanted.to_string());
        annotations.insert(MAX_REPLICAS.into(), (wanted + max_surge(d)).to_string());
        changed = true;
    }
    changed
}

fn replica_annotations_differ(d: &Deployment, rs: &ReplicaSet) -> bool {
    let wanted = replicas(d);
    annotation(&rs.metadata, DESIRED_REPLICAS) != Some(wanted.to_string().as_str())
        || annotation(&rs.metadata, MAX_REPLICAS)
            != Some((wanted + max_surge(d)).to_string().as_str())
}

/// The ReplicaSet a Deployment makes for its current template.
pub fn new_replica_set(d: &Deployment, hash: &str) -> ReplicaSet {
    let spec = d.spec.clone().unwrap_or_default();
    let mut template = spec.template.clone();
    let meta = template.metadata.get_or_insert_with(ObjectMeta::default);
    meta.labels
        .get_or_insert_with(BTreeMap::new)
        .insert(HASH_LABEL.into(), hash.into());
    let labels = meta.labels.clone();
    let mut selector = spec.selector.clone();
    selector
        .match_labels
        .get_or_insert_with(BTreeMap::new)
        .insert(HASH_LABEL.into(), hash.into());
    ReplicaSet {
        metadata: ObjectMeta {
            name: Some(format!("{}-{hash}", d.name_any())),
            namespace: d.metadata.namespace.clone(),
            labels,
            owner_references: Some(vec![pods::controller_ref(
                "apps/v1",
                "Deployment",
                &d.metadata,
            )]),
            ..ObjectMeta::default()
        },
        spec: Some(ReplicaSetSpec {
            replicas: Some(0),
            min_ready_seconds: spec.min_ready_seconds,
            selector,
            template: Some(template),
        }),
        status: None,
    }
}

// ---- The shell ------------------------------------------------------------

pub(crate) struct Controller {
    client: Client,
    deployments: Informer<Deployment>,
    sets: Informer<ReplicaSet>,
    pods: Informer<Pod>,
    queue: WorkQueue,
    recorder: Recorder,
}

/// A sync's outcome: when to look again, if asked.
type Step = anyhow::Result<Option<Duration>>;

impl Controller {
    fn owner_of(&self, rs: &ReplicaSet) -> Option<Arc<Deployment>> {
        self.deployments.controller_of(&rs.metadata)
    }

    fn queue_matching(&self, rs: &ReplicaSet) {
        for d in self
            .deployments
            .in_namespace(&rs.namespace().unwrap_or_default())
        {
            if pods::selects(
                d.spec.as_ref().map(|s| &s.selector),
                rs.metadata.labels.as_ref(),
            ) {
                self.queue.add(&key_of(d.as_ref()));
            }
        }
    }

    fn on_set(&self, old: Option<&Arc<ReplicaSet>>, new: Option<&Arc<ReplicaSet>>) {
        if let Some(old) = old
            && new.is_none_or(|n| controller_uid(&n.metadata) != controller_uid(&old.metadata))
            && let Some(d) = self.owner_of(old)
        {
            self.queue.add(&key_of(d.as_ref()));
        }
        let Some(new) = new else { return };
        if old.is_some_and(|o| o.metadata.resource_version == new.metadata.resource_version) {
            return;
        }
        if let Some(d) = self.owner_of(new) {
            self.queue.add(&key_of(d.as_ref()));
        } else if controller_uid(&new.metadata).is_none()
            && old.is_none_or(|o| {
                o.metadata.labels != new.metadata.labels || controller_uid(&o.metadata).is_some()
            })
        {
            self.queue_matching(new);
        }
    }

    /// A Recreate rollout waits for old pods to go.
    fn on_pod(&self, old: Option<&Arc<Pod>>, new: Option<&Arc<Pod>>) {
        let (Some(pod), None) = (old, new) else {
            return;
        };
        let Some(rs_uid) = controller_uid(&pod.metadata) else {
            return;
        };
        let Some(rs) = self
            .sets
            .in_namespace(&pod.namespace().unwrap_or_default())
            .into_iter()
            .find(|rs| rs.metadata.uid.as_deref() == Some(rs_uid))
        else {
            return;
        };
        if let Some(d) = self.owner_of(&rs)
            && is_recreate(&d)
        {
            self.queue.add(&key_of(d.as_ref()));
        }
    }

    fn api(&self, d: &Deployment) -> (Api<Deployment>, Api<ReplicaSet>) {
        let ns = d.namespace().unwrap_or_default();
        (
            Api::namespaced(self.client.clone(), &ns),
            Api::namespaced(self.client.clone(), &ns),
        )
    }

    fn event(&self, d: &Deployment, type_: &'static str, reason: &'static str, message: String) {
        self.recorder
            .event(events::reference(d), type_, reason, message);
    }

    /// Writes the Deployment's status (and annotations) through /status.
    async fn write_status(&self, d: &mut Deployment) -> anyhow::Result<()> {
        let (deployments, _) = self.api(d);
        let mut object = d.clone();
        object.metadata.managed_fields = None;
        *d = deployments
            .replace_status(&d.name_any(), &PostParams::default(), &object)
            .await?;
        Ok(())
    }

    /// Writes a ReplicaSet's size with fresh replica annotations.
    async fn scale(
        &self,
        d: &Deployment,
        rs: &ReplicaSet,
        size: i32,
        up: Option<bool>,
    ) -> anyhow::Result<ReplicaSet> {
        let old = spec_replicas(rs);
        if old == size && !replica_annotations_differ(d, rs) {
            return Ok(rs.clone());
        }
        let mut copy = rs.clone();
        copy.metadata.managed_fields = None;
        if let Some(spec) = copy.spec.as_mut() {
            spec.replicas = Some(size);
        }
        let annotations = copy.metadata.annotations.get_or_insert_with(BTreeMap::new);
        annotations.insert(DESIRED_REPLICAS.into(), replicas(d).to_string());
        annotations.insert(
            MAX_REPLICAS.into(),
            (replicas(d) + max_surge(d)).to_string(),
        );
        let (_, sets) = self.api(d);
        let written = sets
            .replace(&rs.name_any(), &PostParams::default(), &copy)
            .await?;
        if old != size {
            let direction = if up.unwrap_or(size > old) {
                "up"
            } else {
                "down"
            };
            self.event(
                d,
                events::NORMAL,
                "ScalingReplicaSet",
                format!(
                    "Scaled {direction} replica set {} from {old} to {size}",
                    rs.name_any()
                ),
            );
        }
        Ok(written)
    }

    /// Scales `rs` if its size differs; answers whether it did.
    async fn scale_to(
        &self,
        d: &Deployment,
        sets: &mut [ReplicaSet],
        name: &str,
        size: i32,
    ) -> anyhow::Result<bool> {
        let Some(rs) = sets.iter_mut().find(|rs| rs.name_any() == name) else {
            return Ok(false);
        };
        if spec_replicas(rs) == size {
            return Ok(false);
        }
        *rs = self.scale(d, rs, size, None).await?;
        Ok(true)
    }

    /// The new ReplicaSet (made if `create` and missing) with its
    /// annotations current, and the old ones.
    async fn new_and_old(
        &self,
        d: &mut Deployment,
        sets: &[ReplicaSet],
        create: bool,
    ) -> anyhow::Result<(Option<ReplicaSet>, Vec<ReplicaSet>)> {
        let (existing, old) = split(d, sets);
        let revision = max_revision(&old) + 1;
        let (_, rs_api) = self.api(d);
        if let Some(existing) = existing {
            let mut copy = existing.clone();
            let changed = sync_annotations(d, &mut copy, revision, false);
            let min_ready = d.spec.as_ref().and_then(|s| s.min_ready_seconds);
            let min_ready_differs =
                copy.spec.as_ref().and_then(|s| s.min_ready_seconds) != min_ready;
            if changed || min_ready_differs {
                if let Some(spec) = copy.spec.as_mut() {
                    spec.min_ready_seconds = min_ready;
                }
                copy.metadata.managed_fields = None;
                let written = rs_api
                    .replace(&copy.name_any(), &PostParams::default(), &copy)
                    .await?;
                return Ok((Some(written), old));
            }
            let rs_revision = annotation(&copy.metadata, REVISION)
                .unwrap_or("")
                .to_string();
            let mut needs_update = set_revision(d, &rs_revision);
            if progress_deadline(d).is_some()
                && condition(&d.status.clone().unwrap_or_default(), "Progressing").is_none()
            {
                set_progressing(
                    d,
                    "True",
                    "FoundNewReplicaSet",
                    format!("Found new replica set {:?}", copy.name_any()),
                );
                needs_update = true;
            }
            if needs_update {
                self.write_status(d).await?;
            }
            return Ok((Some(copy), old));
        }
        if !create {
            return Ok((None, old));
        }
        let collisions = d.status.as_ref().and_then(|s| s.collision_count);
        let template = d
            .spec
            .as_ref()
            .map(|s| s.template.clone())
            .unwrap_or_default();
        let hash = template_hash(&template, collisions);
        let mut rs = new_replica_set(d, &hash);
        let mut all = old.clone();
        all.push(rs.clone());
        let size = new_replicas(d, &all, &rs);
        if let Some(spec) = rs.spec.as_mut() {
            spec.replicas = Some(size);
        }
        sync_annotations(d, &mut rs, revision, true);
        let created = match rs_api.create(&PostParams::default(), &rs).await {
            Ok(created) => {
                if size > 0 {
                    self.event(
                        d,
                        events::NORMAL,
                        "ScalingReplicaSet",
                        format!(
                            "Scaled up replica set {} from 0 to {size}",
                            created.name_any()
                        ),
                    );
                }
                if progress_deadline(d).is_some() {
                    set_progressing(
                        d,
                        "True",
                        "NewReplicaSetCreated",
                        format!("Created new replica set {:?}", created.name_any()),
                    );
                }
                created
            }
            Err(kube::Error::Api(s)) if s.code == 409 => {
                let existing = rs_api.get(&rs.name_any()).await?;
                let ours = controller_uid(&existing.metadata) == d.metadata.uid.as_deref();
                if !(ours
                    && same_template(
                        d.spec.as_ref().map(|s| &s.template),
                        existing.spec.as_ref().and_then(|s| s.template.as_ref()),
                    ))
                {
                    let status = d.status.get_or_insert_with(DeploymentStatus::default);
                    status.collision_count = Some(status.collision_count.unwrap_or(0) + 1);
                    self.write_status(d).await?;
                    anyhow::bail!(
                        "hash collision: ReplicaSet {} exists with another template",
                        rs.name_any()
                    );
                }
                existing
            }
            Err(err) => {
                if matches!(&err, kube::Error::Api(s) if s.code == 403 && s.message.contains("being terminated"))
                {
                    return Err(err.into());
                }
                let message = format!(
                    "Failed to create new replica set {:?}: {}",
                    rs.name_any(),
                    pods::error_message(&err)
                );
                if progress_deadline(d).is_some() {
                    set_progressing(d, "False", "ReplicaSetCreateError", message.clone());
                    let _ = self.write_status(d).await;
                }
                self.event(d, events::WARNING, "ReplicaSetCreateError", message);
                return Err(err.into());
            }
        };
        set_revision(d, &revision.to_string());
        self.write_status(d).await?;
        Ok((Some(created), old))
    }

    /// Writes the status a rollout step leaves; answers when to look again.
    async fn finish_rollout(
        &self,
        d: &mut Deployment,
        all: &[ReplicaSet],
        new: Option<&ReplicaSet>,
    ) -> Step {
        let now = Timestamp::now();
        let status = rollout_status(d, all, new, now);
        if d.status.as_ref() == Some(&status) {
            return Ok(deadline_check(d, &status, now));
        }
        d.status = Some(status);
        self.write_status(d).await?;
        Ok(None)
    }

    /// Status only: counts and Available.
    async fn finish_sync(
        &self,
        d: &mut Deployment,
        all: &[ReplicaSet],
        new: Option<&ReplicaSet>,
    ) -> Step {
        let status = calculate_status(d, all, new, Timestamp::now());
        if d.status.as_ref() != Some(&status) {
            d.status = Some(status);
            self.write_status(d).await?;
        }
        Ok(None)
    }

    async fn cleanup(&self, d: &Deployment, old: &[ReplicaSet]) -> anyhow::Result<()> {
        let (_, sets) = self.api(d);
        for name in beyond_history(d, old) {
            match sets.delete(&name, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(err) => return Err(err.into()),
            }
        }
        Ok(())
    }

    /// Proportional scaling, annotation sync and (while paused) cleanup.
    async fn sync_scale(&self, d: &mut Deployment, sets: &[ReplicaSet]) -> Step {
        let (new, mut old) = self.new_and_old(d, sets, false).await?;
        let (changes, up) = proportional(d, new.as_ref(), &old);
        let mut new = new;
        for (name, size) in changes {
            if let Some(rs) = new.as_mut().filter(|rs| rs.name_any() == name) {
                *rs = self.scale(d, rs, size, Some(up)).await?;
            } else if let Some(rs) = old.iter_mut().find(|rs| rs.name_any() == name) {
                *rs = self.scale(d, rs, size, Some(up)).await?;
            }
        }
        if paused(d) {
            self.cleanup(d, &old).await?;
        }
        let mut all = old;
        all.extend(new.clone());
        self.finish_sync(d, &all, new.as_ref()).await
    }

    async fn rolling(&self, d: &mut Deployment, sets: &[ReplicaSet]) -> Step {
        let (new, mut old) = self.new_and_old(d, sets, true).await?;
        let mut all = old.clone();
        all.extend(new.clone());
        if let Some(new_rs) = &new {
            let wanted = replicas(d);
            let current = spec_replicas(new_rs);
            if current != wanted {
                let size = if current > wanted {
                    wanted
                } else {
                    new_replicas(d, &all, new_rs)
                };
                if size != current {
                    let written = self.scale(d, new_rs, size, None).await?;
                    let mut all = old.clone();
                    all.push(written.clone());
                    return self.finish_rollout(d, &all, Some(&written)).await;
                }
            }
        }
        let changes = scale_down_old(d, &old, new.as_ref());
        if !changes.is_empty() {
            for (name, size) in changes {
                self.scale_to(d, &mut old, &name, size).await?;
            }
            let mut all = old.clone();
            all.extend(new.clone());
            return self.finish_rollout(d, &all, new.as_ref()).await;
        }
        if complete(d, &d.status.clone().unwrap_or_default()) {
            self.cleanup(d, &old).await?;
        }
        self.finish_rollout(d, &all, new.as_ref()).await
    }

    async fn recreate(&self, d: &mut Deployment, sets: &[ReplicaSet]) -> Step {
        let (new, mut old) = self.new_and_old(d, sets, false).await?;
        let mut scaled = false;
        let active: Vec<String> = old
            .iter()
            .filter(|rs| spec_replicas(rs) > 0)
            .map(|rs| rs.name_any())
            .collect();
        for name in active {
            scaled |= self.scale_to(d, &mut old, &name, 0).await?;
        }
        let mut all = old.clone();
        all.extend(new.clone());
        if scaled {
            return self.finish_rollout(d, &all, new.as_ref()).await;
        }
        let old_running = old.iter().any(|rs| {
            rs.status.as_ref().is_some_and(|s| s.replicas > 0)
                || self
                    .pods
                    .indexed(&format!(
                        "owner:{}",
                        rs.metadata.uid.as_deref().unwrap_or("")
                    ))
                    .iter()
                    .any(|p| {
                        !matches!(
                            p.status.as_ref().and_then(|s| s.phase.as_deref()),
                            Some("Succeeded" | "Failed")
                        )
                    })
        });
        if old_running {
            return self.finish_rollout(d, &all, new.as_ref()).await;
        }
        let (new, old) = match new {
            Some(new) => (new, old),
            None => {
                let (new, old) = self.new_and_old(d, sets, true).await?;
                let Some(new) = new else {
                    anyhow::bail!("no new ReplicaSet");
                };
                (new, old)
            }
        };
        let new = self.scale(d, &new, replicas(d), None).await?;
        if complete(d, &d.status.clone().unwrap_or_default()) {
            self.cleanup(d, &old).await?;
        }
        let mut all = old;
        all.push(new.clone());
        self.finish_rollout(d, &all, Some(&new)).await
    }

    /// Progressing=Unknown while paused, and again when resumed.
    async fn paused_conditions(&self, d: &mut Deployment) -> anyhow::Result<()> {
        if progress_deadline(d).is_none() {
            return Ok(());
        }
        let status = d.status.clone().unwrap_or_default();
        let reason = condition(&status, "Progressing").and_then(|c| c.reason.clone());
        if reason.as_deref() == Some("ProgressDeadlineExceeded") {
            return Ok(());
        }
        let has_paused = reason.as_deref() == Some("DeploymentPaused");
        let (reason, message) = match (paused(d), has_paused) {
            (true, false) => ("DeploymentPaused", "Deployment is paused"),
            (false, true) => ("DeploymentResumed", "Deployment is resumed"),
            _ => return Ok(()),
        };
        set_progressing(d, "Unknown", reason, message.into());
        self.write_status(d).await
    }

    async fn sync(&self, key: &str) -> Step {
        let Some(cached) = self.deployments.get(key) else {
            return Ok(None);
        };
        let mut d = (*cached).clone();
        let selector = d
            .spec
            .as_ref()
            .map(|s| s.selector.clone())
            .unwrap_or_default();
        if selector.match_labels.as_ref().is_none_or(|l| l.is_empty())
            && selector
                .match_expressions
                .as_ref()
                .is_none_or(|e| e.is_empty())
        {
            self.event(
                &d,
                events::WARNING,
                "SelectingAll",
                "This deployment is selecting all pods. A non-empty selector is required.".into(),
            );
            let observed = d.status.as_ref().and_then(|s| s.observed_generation);
            if observed < d.metadata.generation {
                d.status
                    .get_or_insert_with(DeploymentStatus::default)
                    .observed_generation = d.metadata.generation;
                self.write_status(&mut d).await?;
            }
            return Ok(None);
        }
        let owner = claim::Owner {
            meta: &d.metadata,
            api_version: "apps/v1",
            kind: "Deployment",
            selector: Some(&selector),
        };
        let client = &self.client;
        let sets: Vec<ReplicaSet> = claim::claim(
            client,
            &self.sets,
            owner,
            |_| true,
            async || claim::still_there::<Deployment>(client, &cached.metadata).await,
        )
        .await?
        .into_iter()
        .map(|rs| (*rs).clone())
        .collect();
        if d.metadata.deletion_timestamp.is_some() {
            let (new, old) = self.new_and_old(&mut d, &sets, false).await?;
            let mut all = old;
            all.extend(new.clone());
            return self.finish_sync(&mut d, &all, new.as_ref()).await;
        }
        self.paused_conditions(&mut d).await?;
        if paused(&d) {
            return self.sync_scale(&mut d, &sets).await;
        }
        let scaling = {
            let (new, old) = split(&d, &sets);
            new.iter()
                .chain(old.iter())
                .filter(|rs| spec_replicas(rs) > 0)
                .any(|rs| desired_annotation(rs).is_some_and(|n| n != replicas(&d)))
        };
        if scaling {
            return self.sync_scale(&mut d, &sets).await;
        }
        if is_recreate(&d) {
            self.recreate(&mut d, &sets).await
        } else {
            self.rolling(&mut d, &sets).await
        }
    }
}

/// Sets the Deployment's Progressing condition, as of now.
fn set_progressing(d: &mut Deployment, status: &str, reason: &str, message: String) {
    let current = d.status.get_or_insert_with(DeploymentStatus::default);
    set_condition(
        current,
        new_condition("Progressing", status, reason, message, Timestamp::now()),
    );
}

/// Sets the Deployment's revision annotation; answers whether it changed.
fn set_revision(d: &mut Deployment, revision: &str) -> bool {
    let annotations = d.metadata.annotations.get_or_insert_with(BTreeMap::new);
    if annotations.get(REVISION).map(String::as_str) == Some(revision) {
        return false;
    }
    annotations.insert(REVISION.into(), revision.into());
    true
}

/// Starts the controller over the shared informers.
pub(crate) fn start(ctx: &crate::Context) -> crate::Running {
    let controller = Arc::new(Controller {
        client: ctx.client.clone(),
        deployments: ctx.deployments.clone(),
        sets: ctx.replica_sets.clone(),
        pods: ctx.pods.clone(),
        queue: WorkQueue::default(),
        recorder: ctx.recorder.for_component(COMPONENT),
    });
    let c = controller.clone();
    ctx.deployments.subscribe(Box::new(move |old, new| {
        if let Some(d) = new.or(old) {
            c.queue.add(&key_of(d.as_ref()));
        }
    }));
    let c = controller.clone();
    ctx.replica_sets
        .subscribe(Box::new(move |old, new| c.on_set(old, new)));
    let c = controller.clone();
    ctx.pods
        .subscribe(Box::new(move |old, new| c.on_pod(old, new)));
    let queue = controller.queue.clone();
    crate::Running::workers(COMPONENT, queue, WORKERS, move |key| {
        let controller = controller.clone();
        async move { controller.sync(&key).await }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn deployment(replicas: i32, strategy: Value) -> Deployment {
        serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "default", "uid": "d1", "generation": 2,
                "annotations": {"kubernetes.io/change-cause": "v2", LAST_APPLIED: "{}", REVISION: "7"}},
            "spec": {"replicas": replicas, "strategy": strategy, "revisionHistoryLimit": 1,
                "progressDeadlineSeconds": 600,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "c", "image": "v2"}]}}},
        }))
        .unwrap()
    }

    fn rolling(surge: Value, unavailable: Value) -> Value {
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": surge, "maxUnavailable": unavailable}})
    }

    /// A ReplicaSet of `spec` replicas, `available` of them available,
    /// created at minute `minute`.
    fn rs(name: &str, spec: i32, available: i32, minute: u32) -> ReplicaSet {
        serde_json::from_value(json!({
            "metadata": {"name": name, "creationTimestamp": format!("2026-11-30T10:{minute:02}:00Z"),
                "annotations": {REVISION: minute.to_string()}},
            "spec": {"replicas": spec, "selector": {}},
            "status": {"replicas": spec, "readyReplicas": available, "availableReplicas": available},
        }))
        .unwrap()
    }

    #[test]
    fn surge_and_unavailable_resolve_as_upstream() {
        let cases = [
            (10, json!("25%"), json!("25%"), 3, 2),
            (3, json!("25%"), json!("25%"), 1, 0),
            (4, json!(0), json!(0), 0, 1),
            (5, json!(2), json!("50%"), 2, 2),
            (2, json!(0), json!(5), 0, 2),
            (0, json!("25%"), json!("25%"), 0, 0),
        ];
        for (replicas, surge, unavailable, want_surge, want_unavailable) in cases {
            let d = deployment(replicas, rolling(surge.clone(), unavailable.clone()));
            assert_eq!(
                (max_surge(&d), max_unavailable(&d)),
                (want_surge, want_unavailable),
                "{replicas} replicas, surge {surge}, unavailable {unavailable}"
            );
        }
        let d = deployment(4, json!({"type": "Recreate"}));
        assert_eq!((max_surge(&d), max_unavailable(&d)), (0, 0));
    }

    #[test]
    fn the_new_replica_set_grows_as_far_as_the_surge_allows() {
        let d = deployment(4, rolling(json!(1), json!(1)));
        let cases = [
            // (old spec, new spec, want)
            (4, 0, 1),
            (3, 1, 2),
            (4, 1, 1),
            (0, 2, 4),
            (1, 3, 4),
        ];
        for (old, new, want) in cases {
            let old = rs("old", old, old, 1);
            let new = rs("new", new, 0, 2);
            let all = vec![old, new.clone()];
            assert_eq!(new_replicas(&d, &all, &new), want);
        }
        let recreate = deployment(4, json!({"type": "Recreate"}));
        assert_eq!(
            new_replicas(&recreate, &[rs("old", 4, 4, 1)], &rs("new", 0, 0, 2)),
            4
        );
    }

    #[test]
    fn old_replica_sets_shrink_unhealthy_first_then_within_availability() {
        let d = deployment(4, rolling(json!(1), json!(1)));
        // 4 old all available, new 1 not yet available: one may go.
        let changes = scale_down_old(&d, &[rs("old", 4, 4, 1)], Some(&rs("new", 1, 0, 2)));
        assert_eq!(changes, [("old".to_string(), 3)]);
        // Unavailable old replicas go first, whatever availability says.
        let changes = scale_down_old(
            &d,
            &[rs("older", 2, 0, 1), rs("old", 3, 3, 2)],
            Some(&rs("new", 0, 0, 3)),
        );
        assert_eq!(changes, [("older".to_string(), 0)]);
        // Nothing may go while the new ones are not available.
        let changes = scale_down_old(&d, &[rs("old", 3, 3, 1)], Some(&rs("new", 2, 0, 2)));
        assert!(changes.is_empty());
        // All available: the oldest go down to the minimum.
        let changes = scale_down_old(&d, &[rs("old", 2, 2, 1)], Some(&rs("new", 3, 3, 2)));
        assert_eq!(changes, [("old".to_string(), 0)]);
    }

    #[test]
    fn a_resize_mid_rollout_is_shared_in_proportion() {
        // 10 replicas, surge 3: old 8 and new 5 (max-replicas 13); scaled to 20.
        let mut d = deployment(20, rolling(json!(3), json!(2)));
        let mut old = rs("old", 8, 8, 1);
        let mut new = rs("new", 5, 5, 2);
        for set in [&mut old, &mut new] {
            let annotations = set.metadata.annotations.as_mut().unwrap();
            annotations.insert(MAX_REPLICAS.into(), "13".into());
            annotations.insert(DESIRED_REPLICAS.into(), "10".into());
        }
        let (changes, up) = proportional(&d, Some(&new), std::slice::from_ref(&old));
        assert!(up);
        let total: i32 = changes.iter().map(|(_, n)| n).sum();
        assert_eq!(total, 23, "replicas plus surge");
        assert_eq!(changes, [("old".to_string(), 14), ("new".to_string(), 9)]);
        // One active ReplicaSet takes the size as it is.
        d = deployment(7, rolling(json!(1), json!(1)));
        let (changes, _) = proportional(&d, Some(&new), &[rs("old", 0, 0, 1)]);
        assert_eq!(changes, [("new".to_string(), 7)]);
    }

    #[test]
    fn history_beyond_the_limit_goes_oldest_revision_first_if_empty() {
        let d = deployment(1, rolling(json!(1), json!(1)));
        let old = [rs("a", 0, 0, 1), rs("b", 0, 0, 2), rs("c", 0, 0, 3)];
        assert_eq!(beyond_history(&d, &old), ["a", "b"]);
        let busy = [rs("a", 1, 1, 1), rs("b", 0, 0, 2)];
        assert!(
            beyond_history(&d, &busy).is_empty(),
            "one with replicas stays"
        );
    }

    #[test]
    fn the_new_replica_set_is_named_by_hash_and_carries_the_annotations() {
        let d = deployment(3, rolling(json!("25%"), json!("25%")));
        let hash = template_hash(&d.spec.as_ref().unwrap().template, None);
        assert!(hash.bytes().all(|b| b"456789bcdf".contains(&b)), "{hash}");
        assert_ne!(
            hash,
            template_hash(&d.spec.as_ref().unwrap().template, Some(1))
        );
        let mut set = new_replica_set(&d, &hash);
        assert_eq!(
            set.metadata.name.as_deref(),
            Some(format!("web-{hash}").as_str())
        );
        let selector = &set.spec.as_ref().unwrap().selector;
        assert_eq!(selector.match_labels.as_ref().unwrap()[HASH_LABEL], hash);
        assert!(same_template(
            Some(&d.spec.as_ref().unwrap().template),
            set.spec.as_ref().unwrap().template.as_ref()
        ));
        assert!(sync_annotations(&d, &mut set, 3, true));
        let annotations = set.metadata.annotations.clone().unwrap();
        assert_eq!(annotations[REVISION], "3");
        assert_eq!(annotations["kubernetes.io/change-cause"], "v2");
        assert_eq!(annotations[DESIRED_REPLICAS], "3");
        assert_eq!(annotations[MAX_REPLICAS], "4");
        assert!(!annotations.contains_key(LAST_APPLIED));
        // Brought back by a rollback: a higher revision, the old kept.
        assert!(sync_annotations(&d, &mut set, 5, false));
        let annotations = set.metadata.annotations.clone().unwrap();
        assert_eq!(
            (
                annotations[REVISION].as_str(),
                annotations[REVISION_HISTORY].as_str()
            ),
            ("5", "3")
        );
        assert!(!sync_annotations(&d, &mut set, 5, false));
    }

    #[test]
    fn rollout_conditions_follow_progress_completion_and_the_deadline() {
        let now: Timestamp = "2026-11-30T12:00:00Z".parse().unwrap();
        let mut d = deployment(2, rolling(json!(1), json!(0)));
        d.status = Some(DeploymentStatus {
            observed_generation: Some(2),
            replicas: Some(2),
            updated_replicas: Some(0),
            ..DeploymentStatus::default()
        });
        let new = rs("web-1", 1, 0, 2);
        let all = [rs("web-0", 2, 2, 1), new.clone()];
        let status = rollout_status(&d, &all, Some(&new), now);
        let progressing = condition(&status, "Progressing").unwrap();
        assert_eq!(progressing.reason.as_deref(), Some("ReplicaSetUpdated"));
        assert_eq!(
            progressing.message.as_deref(),
            Some("ReplicaSet \"web-1\" is progressing.")
        );
        assert_eq!(condition(&status, "Available").unwrap().status, "True");

        // No progress for longer than the deadline: timed out.
        d.status = Some(status.clone());
        let later = now.checked_add(SignedDuration::from_secs(601)).unwrap();
        assert!(deadline_check(&d, &status, now).is_some());
        let stuck = rollout_status(&d, &all, Some(&new), later);
        let progressing = condition(&stuck, "Progressing").unwrap();
        assert_eq!(
            (progressing.status.as_str(), progressing.reason.as_deref()),
            ("False", Some("ProgressDeadlineExceeded"))
        );

        // Complete.
        let done = rs("web-1", 2, 2, 2);
        let status = rollout_status(&d, std::slice::from_ref(&done), Some(&done), now);
        let progressing = condition(&status, "Progressing").unwrap();
        assert_eq!(
            progressing.reason.as_deref(),
            Some("NewReplicaSetAvailable")
        );
        assert_eq!(
            (
                status.replicas,
                status.updated_replicas,
                status.available_replicas,
                status.unavailable_replicas
            ),
            (Some(2), Some(2), Some(2), Some(0))
        );
    }
}
