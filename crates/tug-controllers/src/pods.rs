//! What controllers ask of pods: active, ready, available, matched by a
//! selector, made from a template, and which to delete first.

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::jiff::Timestamp;

/// Not finished and not being deleted (upstream's IsPodActive).
pub fn is_active(pod: &Pod) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    !matches!(phase, Some("Succeeded" | "Failed")) && pod.metadata.deletion_timestamp.is_none()
}

fn ready_condition(pod: &Pod) -> Option<&k8s_openapi::api::core::v1::PodCondition> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")
}

pub fn is_ready(pod: &Pod) -> bool {
    ready_condition(pod).is_some_and(|c| c.status == "True")
}

/// When the pod last turned Ready (or not).
fn ready_since(pod: &Pod) -> Option<Timestamp> {
    ready_condition(pod)?
        .last_transition_time
        .as_ref()
        .map(|t| t.0)
}

/// Ready for at least `min_ready_seconds` (upstream's IsPodAvailable).
pub fn is_available(pod: &Pod, min_ready_seconds: i32, now: Timestamp) -> bool {
    if !is_ready(pod) {
        return false;
    }
    if min_ready_seconds <= 0 {
        return true;
    }
    ready_since(pod).is_some_and(|since| {
        since
            .checked_add(k8s_openapi::jiff::SignedDuration::from_secs(
                min_ready_seconds.into(),
            ))
            .is_ok_and(|at| at < now)
    })
}

/// What an API error says: the Status message, or the error itself.
pub fn error_message(err: &kube::Error) -> String {
    match err {
        kube::Error::Api(s) => s.message.clone(),
        other => other.to_string(),
    }
}

/// Whether `selector` selects `labels`. No selector selects nothing; an
/// empty one selects everything.
pub fn selects(
    selector: Option<&LabelSelector>,
    labels: Option<&BTreeMap<String, String>>,
) -> bool {
    let Some(selector) = selector else {
        return false;
    };
    let empty = BTreeMap::new();
    let labels = labels.unwrap_or(&empty);
    let labels_match = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    labels_match
        && selector.match_expressions.iter().flatten().all(|e| {
            let values = e.values.as_deref().unwrap_or_default();
            let value = labels.get(&e.key);
            match e.operator.as_str() {
                "In" => value.is_some_and(|v| values.contains(v)),
                "NotIn" => value.is_none_or(|v| !values.contains(v)),
                "Exists" => value.is_some(),
                "DoesNotExist" => value.is_none(),
                _ => false,
            }
        })
}

/// Whether `labels` carry every label of `wanted`.
pub fn has_labels(
    labels: Option<&BTreeMap<String, String>>,
    wanted: Option<&BTreeMap<String, String>>,
) -> bool {
    let empty = BTreeMap::new();
    let labels = labels.unwrap_or(&empty);
    wanted
        .iter()
        .flat_map(|w| w.iter())
        .all(|(k, v)| labels.get(k) == Some(v))
}

/// The owner reference a controller puts on what it makes.
pub fn controller_ref(api_version: &str, kind: &str, owner: &ObjectMeta) -> OwnerReference {
    OwnerReference {
        api_version: api_version.into(),
        kind: kind.into(),
        name: owner.name.clone().unwrap_or_default(),
        uid: owner.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// A pod as a controller makes it from its template: named after the
/// owner with a random suffix, the template's labels, annotations,
/// finalizers and spec, the owner as controller.
pub fn from_template(
    template: &PodTemplateSpec,
    owner: &ObjectMeta,
    owner_ref: OwnerReference,
) -> Pod {
    let meta = template.metadata.clone().unwrap_or_default();
    let name = owner.name.as_deref().unwrap_or_default();
    Pod {
        metadata: ObjectMeta {
            generate_name: Some(format!("{name}-")),
            namespace: owner.namespace.clone(),
            labels: meta.labels,
            annotations: meta.annotations,
            finalizers: meta.finalizers,
            owner_references: Some(vec![owner_ref]),
            ..ObjectMeta::default()
        },
        spec: template.spec.clone(),
        status: None,
    }
}

/// Creates `pods` for an owner the way upstream's controllers do (the
/// caller has recorded them as expected): batches of 1, 2, 4, ... that
/// stop at the first failure (those never tried no longer expected),
/// each success and failure an event on the owner. A namespace being
/// terminated is not a failure. Answers the first failure's message.
pub async fn create_in_batches(
    api: &kube::Api<Pod>,
    pods: Vec<Pod>,
    key: &str,
    expectations: &crate::expectations::Expectations,
    recorder: &crate::events::Recorder,
    owner: &k8s_openapi::api::core::v1::ObjectReference,
) -> Result<(), String> {
    use crate::events;
    use kube::ResourceExt;
    let mut left = pods.into_iter();
    for batch in crate::replicaset::slow_start(left.len()) {
        let wave: Vec<Pod> = left.by_ref().take(batch).collect();
        let post = kube::api::PostParams::default();
        let results = futures::future::join_all(wave.iter().map(|p| api.create(&post, p))).await;
        let mut failure = None;
        for result in results {
            match result {
                Ok(created) => recorder.event(
                    owner.clone(),
                    events::NORMAL,
                    "SuccessfulCreate",
                    format!("Created pod: {}", created.name_any()),
                ),
                Err(err) => {
                    expectations.creation_observed(key);
                    let message = match &err {
                        kube::Error::Api(s)
                            if s.code == 403
                                && s.message.contains("because it is being terminated") =>
                        {
                            continue;
                        }
                        kube::Error::Api(s) => s.message.clone(),
                        other => other.to_string(),
                    };
                    recorder.event(
                        owner.clone(),
                        events::WARNING,
                        "FailedCreate",
                        format!("Error creating: {message}"),
                    );
                    failure.get_or_insert(message);
                }
            }
        }
        if let Some(message) = failure {
            expectations.lower_creations(key, left.len());
            return Err(message);
        }
    }
    Ok(())
}

const DELETION_COST: &str = "controller.kubernetes.io/pod-deletion-cost";

fn phase_order(pod: &Pod) -> u8 {
    match pod.status.as_ref().and_then(|s| s.phase.as_deref()) {
        Some("Pending") => 0,
        Some("Unknown") => 1,
        Some("Running") => 2,
        _ => 0,
    }
}

fn deletion_cost(pod: &Pod) -> i32 {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(DELETION_COST))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn node_name(pod: &Pod) -> &str {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .unwrap_or("")
}

fn max_restarts(pod: &Pod) -> i32 {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|c| c.iter().map(|c| c.restart_count).max())
        .unwrap_or(0)
}

/// The whole power of two of nanoseconds since `t` (upstream's
/// logarithmic bucket of an age).
fn age_bucket(t: Timestamp, now: Timestamp) -> i64 {
    let nanos = now.as_nanosecond() - t.as_nanosecond();
    if nanos <= 0 {
        return 0;
    }
    127 - i64::from(nanos.leading_zeros()) - 1
}

/// Younger first, by logarithmic age with the UID as tie-break; an
/// unknown time goes first.
fn younger_first(
    a: Option<Timestamp>,
    b: Option<Timestamp>,
    uids: (&str, &str),
    now: Timestamp,
) -> Option<Ordering> {
    if a == b {
        return None;
    }
    Some(match (a, b) {
        (None, _) => Ordering::Less,
        (_, None) => Ordering::Greater,
        (Some(a), Some(b)) => match age_bucket(a, now).cmp(&age_bucket(b, now)) {
            Ordering::Equal => uids.0.cmp(uids.1),
            other => other,
        },
    })
}

/// Orders `pods` so that the first are the ones to delete first, as
/// upstream ranks them: unscheduled, then pending, then not ready, then
/// of lower deletion cost, then on nodes crowded with `related` pods (the
/// pods of every ReplicaSet of the same owner), then more recently ready,
/// then restarted more, then younger.
pub fn rank_for_deletion(pods: &mut [Arc<Pod>], related: &[Arc<Pod>], now: Timestamp) {
    let mut on_node: HashMap<&str, usize> = HashMap::new();
    for pod in related {
        *on_node.entry(node_name(pod)).or_default() += 1;
    }
    let rank = |pod: &Pod| on_node.get(node_name(pod)).copied().unwrap_or(0);
    let uid = |pod: &Pod| pod.metadata.uid.clone().unwrap_or_default();
    pods.sort_by(|a, b| {
        let (na, nb) = (node_name(a), node_name(b));
        if na != nb && (na.is_empty() || nb.is_empty()) {
            return if na.is_empty() {
                Ordering::Less
            } else {
                Ordering::Greater
            };
        }
        let by_phase = phase_order(a).cmp(&phase_order(b));
        if by_phase != Ordering::Equal {
            return by_phase;
        }
        let (ra, rb) = (is_ready(a), is_ready(b));
        if ra != rb {
            return if ra {
                Ordering::Greater
            } else {
                Ordering::Less
            };
        }
        let by_cost = deletion_cost(a).cmp(&deletion_cost(b));
        if by_cost != Ordering::Equal {
            return by_cost;
        }
        let by_rank = rank(b).cmp(&rank(a));
        if by_rank != Ordering::Equal {
            return by_rank;
        }
        let uids = (uid(a), uid(b));
        if ra
            && rb
            && let Some(order) =
                younger_first(ready_since(a), ready_since(b), (&uids.0, &uids.1), now)
        {
            return order;
        }
        let by_restarts = max_restarts(b).cmp(&max_restarts(a));
        if by_restarts != Ordering::Equal {
            return by_restarts;
        }
        let created = |p: &Pod| p.metadata.creation_timestamp.as_ref().map(|t| t.0);
        younger_first(created(a), created(b), (&uids.0, &uids.1), now).unwrap_or(Ordering::Equal)
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn pod(name: &str, extra: Value) -> Arc<Pod> {
        let mut value = json!({"metadata": {"name": name, "uid": format!("uid-{name}"),
            "creationTimestamp": "2026-11-30T10:00:00Z"}, "spec": {"containers": []}});
        merge(&mut value, extra);
        Arc::new(serde_json::from_value(value).unwrap())
    }

    fn merge(into: &mut Value, from: Value) {
        match (into, from) {
            (Value::Object(into), Value::Object(from)) => {
                for (k, v) in from {
                    merge(into.entry(k).or_insert(Value::Null), v);
                }
            }
            (into, from) => *into = from,
        }
    }

    fn running(node: &str, ready_at: Option<&str>) -> Value {
        let mut v = json!({"spec": {"nodeName": node}, "status": {"phase": "Running"}});
        if let Some(at) = ready_at {
            v["status"]["conditions"] =
                json!([{"type": "Ready", "status": "True", "lastTransitionTime": at}]);
        }
        v
    }

    fn names(pods: &[Arc<Pod>]) -> Vec<String> {
        pods.iter()
            .map(|p| p.metadata.name.clone().unwrap())
            .collect()
    }

    #[test]
    fn pods_to_delete_are_ranked_as_upstream_ranks_them() {
        let now: Timestamp = "2026-11-30T12:00:00Z".parse().unwrap();
        let old_ready = Some("2026-11-30T08:00:00Z");
        type Case = (&'static str, Vec<Arc<Pod>>, Vec<&'static str>);
        let cases: Vec<Case> = vec![
            (
                "unscheduled, then pending, then not ready, then ready",
                vec![
                    pod("ready", running("n1", old_ready)),
                    pod("not-ready", running("n1", None)),
                    pod(
                        "pending",
                        json!({"spec": {"nodeName": "n1"}, "status": {"phase": "Pending"}}),
                    ),
                    pod("unscheduled", json!({"status": {"phase": "Pending"}})),
                ],
                vec!["unscheduled", "pending", "not-ready", "ready"],
            ),
            (
                "lower deletion cost first",
                vec![
                    pod("cheap", {
                        let mut v = running("n1", old_ready);
                        v["metadata"] = json!({"annotations": {DELETION_COST: "-5"}});
                        v
                    }),
                    pod("dear", {
                        let mut v = running("n1", old_ready);
                        v["metadata"] = json!({"annotations": {DELETION_COST: "100"}});
                        v
                    }),
                    pod("plain", running("n1", old_ready)),
                ],
                vec!["cheap", "plain", "dear"],
            ),
            (
                "pods on crowded nodes first",
                vec![
                    pod("alone", running("n1", old_ready)),
                    pod("crowded", running("n2", old_ready)),
                ],
                vec!["crowded", "alone"],
            ),
            (
                "recently ready first, by power-of-two age",
                vec![
                    pod("old", running("n1", old_ready)),
                    pod("young", running("n1", Some("2026-11-30T11:59:00Z"))),
                ],
                vec!["young", "old"],
            ),
            (
                "more restarts first, then younger",
                vec![
                    pod("calm", running("n1", None)),
                    pod("restarting", {
                        let mut v = running("n1", None);
                        v["status"]["containerStatuses"] = json!([{"name": "c", "restartCount": 4,
                            "image": "i", "imageID": "", "ready": false}]);
                        v
                    }),
                    pod("newborn", {
                        let mut v = running("n1", None);
                        v["metadata"] = json!({"creationTimestamp": "2026-11-30T11:59:59Z"});
                        v
                    }),
                ],
                vec!["restarting", "newborn", "calm"],
            ),
        ];
        for (what, mut pods, want) in cases {
            let mut related = pods.clone();
            related.push(pod("sibling", running("n2", old_ready)));
            rank_for_deletion(&mut pods, &related, now);
            assert_eq!(names(&pods), want, "{what}");
        }
    }

    #[test]
    fn selectors_match_labels_and_expressions() {
        let labels: BTreeMap<String, String> = [
            ("app".to_string(), "web".to_string()),
            ("tier".into(), "front".into()),
        ]
        .into();
        let selector = |v: Value| -> LabelSelector { serde_json::from_value(v).unwrap() };
        let cases = [
            (json!({"matchLabels": {"app": "web"}}), true),
            (json!({"matchLabels": {"app": "db"}}), false),
            (json!({}), true),
            (
                json!({"matchExpressions": [{"key": "tier", "operator": "In", "values": ["front", "back"]}]}),
                true,
            ),
            (
                json!({"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["front"]}]}),
                false,
            ),
            (
                json!({"matchExpressions": [{"key": "zone", "operator": "DoesNotExist"}]}),
                true,
            ),
            (
                json!({"matchExpressions": [{"key": "zone", "operator": "Exists"}]}),
                false,
            ),
        ];
        for (sel, want) in cases {
            assert_eq!(
                selects(Some(&selector(sel.clone())), Some(&labels)),
                want,
                "{sel}"
            );
        }
        assert!(!selects(None, Some(&labels)));
    }

    #[test]
    fn availability_waits_for_min_ready_seconds() {
        let now: Timestamp = "2026-11-30T12:00:00Z".parse().unwrap();
        let p = pod("p", running("n1", Some("2026-11-30T11:59:50Z")));
        assert!(is_available(&p, 0, now));
        assert!(is_available(&p, 9, now));
        assert!(!is_available(&p, 10, now));
        assert!(!is_available(&pod("q", running("n1", None)), 0, now));
    }
}
