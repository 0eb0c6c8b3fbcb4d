//! The disruption controller: each PodDisruptionBudget's status, as
//! upstream's: the pods it selects, how many are healthy (Ready, not
//! being deleted, not evicted a moment ago), how many must stay so
//! (minAvailable, or the controllers' scale less maxUnavailable), and so
//! how many disruptions it allows now. The eviction API reads that.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use crate::informer::{Informer, key_of};
use crate::pods::{is_ready, selects};
use crate::workqueue::WorkQueue;
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::{Pod, ReplicationController};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, PostParams};
use kube::{Client, ResourceExt};

pub const COMPONENT: &str = "disruption-controller";

/// An evicted pod stays counted as disrupted (not healthy) this long at
/// most, unless it is seen deleted first.
const DISRUPTED_FOR: Duration = Duration::from_secs(120);

/// A controller's scale: its UID and replicas.
pub type Scale = (String, i32);

/// `value` of `total`, a percentage rounded up, as upstream scales them.
fn scaled(value: &IntOrString, total: i32) -> Result<i32, String> {
    match value {
        IntOrString::Int(n) => Ok(*n),
        IntOrString::String(text) => {
            let percent: i64 = text
                .strip_suffix('%')
                .and_then(|p| p.parse().ok())
                .ok_or_else(|| format!("invalid value for IntOrString: invalid value {text:?}"))?;
            Ok(((percent * i64::from(total) + 99) / 100) as i32)
        }
    }
}

/// The budget's status for `pods` (those it selects), the scale of each
/// pod's controller found by `scale_of`, at `now`.
pub fn status(
    budget: &PodDisruptionBudget,
    pods: &[Arc<Pod>],
    scale_of: impl Fn(&Pod) -> Option<Scale>,
    now: Timestamp,
) -> PodDisruptionBudgetStatus {
    let spec = budget.spec.clone().unwrap_or_default();
    let old = budget.status.clone().unwrap_or_default();
    let present: HashSet<String> = pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .map(|p| p.name_any())
        .collect();
    // Evicted pods still here (not yet seen deleted), for a while.
    let disrupted: BTreeMap<String, Time> = old
        .disrupted_pods
        .unwrap_or_default()
        .into_iter()
        .filter(|(name, at)| {
            present.contains(name)
                && now.duration_since(at.0)
                    < SignedDuration::try_from(DISRUPTED_FOR).unwrap_or_default()
        })
        .collect();
    let healthy = pods
        .iter()
        .filter(|p| {
            p.metadata.deletion_timestamp.is_none()
                && !disrupted.contains_key(&p.name_any())
                && is_ready(p)
        })
        .count() as i32;
    let expected_scale = || -> Result<i32, String> {
        let mut seen = HashSet::new();
        let mut total = 0;
        for pod in pods {
            let Some((uid, replicas)) = scale_of(pod) else {
                return Err(format!("found no controllers for pod {:?}", pod.name_any()));
            };
            if seen.insert(uid) {
                total += replicas;
            }
        }
        Ok(total)
    };
    let planned = match (&spec.max_unavailable, &spec.min_available) {
        (Some(max_unavailable), _) => expected_scale().and_then(|expected| {
            let unavailable = scaled(max_unavailable, expected)?;
            Ok((expected, (expected - unavailable).max(0)))
        }),
        (None, Some(IntOrString::Int(min))) => Ok((pods.len() as i32, *min)),
        (None, Some(min)) => {
            expected_scale().and_then(|expected| Ok((expected, scaled(min, expected)?)))
        }
        (None, None) => Ok((pods.len() as i32, 0)),
    };
    let generation = budget.metadata.generation;
    let (expected, desired, allowed, condition) = match planned {
        Ok((expected, desired)) => {
            let allowed = (healthy - desired).max(0);
            let condition = if allowed > 0 {
                ("True", "SufficientPods", String::new())
            } else {
                ("False", "InsufficientPods", String::new())
            };
            (expected, desired, allowed, condition)
        }
        Err(why) => (0, 0, 0, ("False", "SyncFailed", why)),
    };
    let kept = old
        .conditions
        .unwrap_or_default()
        .into_iter()
        .find(|c| c.type_ == "DisruptionAllowed");
    let transition = match &kept {
        Some(c) if c.status == condition.0 && c.reason == condition.1 => {
            c.last_transition_time.clone()
        }
        _ => Time(now),
    };
    PodDisruptionBudgetStatus {
        current_healthy: healthy,
        desired_healthy: desired,
        expected_pods: expected,
        disruptions_allowed: allowed,
        observed_generation: generation,
        disrupted_pods: Some(disrupted).filter(|d| !d.is_empty()),
        conditions: Some(vec![Condition {
            type_: "DisruptionAllowed".into(),
            status: condition.0.into(),
            reason: condition.1.into(),
            message: condition.2,
            observed_generation: generation,
            last_transition_time: transition,
        }]),
    }
}

struct Controller {
    client: Client,
    budgets: Informer<PodDisruptionBudget>,
    pods: Informer<Pod>,
    replica_sets: Informer<ReplicaSet>,
    deployments: Informer<Deployment>,
    replication_controllers: Informer<ReplicationController>,
    stateful_sets: Informer<StatefulSet>,
    queue: WorkQueue,
}

impl Controller {
    /// A pod's controller and its replicas: a ReplicaSet's Deployment if
    /// it has one, else the ReplicaSet; a ReplicationController; a
    /// StatefulSet.
    fn scale_of(&self, pod: &Pod) -> Option<Scale> {
        let owner = pod
            .metadata
            .owner_references
            .as_ref()?
            .iter()
            .find(|o| o.controller == Some(true))?;
        let namespace = pod.namespace().unwrap_or_default();
        let key = format!("{namespace}/{}", owner.name);
        match owner.kind.as_str() {
            "ReplicaSet" => {
                let set = self
                    .replica_sets
                    .get(&key)
                    .filter(|s| s.metadata.uid.as_deref() == Some(&owner.uid))?;
                if let Some(deployment) = self.deployments.controller_of(&set.metadata) {
                    let replicas = deployment
                        .spec
                        .as_ref()
                        .and_then(|s| s.replicas)
                        .unwrap_or(1);
                    return Some((deployment.metadata.uid.clone()?, replicas));
                }
                let replicas = set.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
                Some((owner.uid.clone(), replicas))
            }
            "ReplicationController" => {
                let controller = self
                    .replication_controllers
                    .get(&key)
                    .filter(|c| c.metadata.uid.as_deref() == Some(&owner.uid))?;
                let replicas = controller
                    .spec
                    .as_ref()
                    .and_then(|s| s.replicas)
                    .unwrap_or(1);
                Some((owner.uid.clone(), replicas))
            }
            "StatefulSet" => {
                let set = self
                    .stateful_sets
                    .get(&key)
                    .filter(|s| s.metadata.uid.as_deref() == Some(&owner.uid))?;
                let replicas = set.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
                Some((owner.uid.clone(), replicas))
            }
            _ => None,
        }
    }

    async fn sync(&self, key: &str) -> anyhow::Result<Option<Duration>> {
        let Some(budget) = self.budgets.get(key) else {
            return Ok(None);
        };
        let namespace = budget.namespace().unwrap_or_default();
        let selector = budget.spec.as_ref().and_then(|s| s.selector.as_ref());
        let pods: Vec<Arc<Pod>> = self
            .pods
            .in_namespace(&namespace)
            .into_iter()
            .filter(|p| selects(selector, p.metadata.labels.as_ref()))
            .collect();
        let status = status(&budget, &pods, |p| self.scale_of(p), Timestamp::now());
        // Entries of evicted pods expire: look again then.
        let again = status
            .disrupted_pods
            .as_ref()
            .filter(|d| !d.is_empty())
            .map(|_| DISRUPTED_FOR);
        let unchanged = budget.status.as_ref().is_some_and(|old| {
            let mut old = old.clone();
            let mut new = status.clone();
            // A transition time alone is no change.
            for s in [&mut old, &mut new] {
                for c in s.conditions.iter_mut().flatten() {
                    c.last_transition_time = Time(Timestamp::UNIX_EPOCH);
                }
            }
            old == new
        });
        if unchanged {
            return Ok(again);
        }
        let api: Api<PodDisruptionBudget> = Api::namespaced(self.client.clone(), &namespace);
        // The status replaced whole (disruptedPods included), on the
        // version read: an eviction meanwhile makes this a conflict, and
        // the budget is looked at again.
        let mut updated = (*budget).clone();
        updated.status = Some(status);
        match api
            .replace_status(&budget.name_any(), &PostParams::default(), &updated)
            .await
        {
            Ok(_) => Ok(again),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(None),
            Err(err) => Err(err.into()),
        }
    }

    /// Queues the budgets in the pod's namespace that select it.
    fn pod_changed(&self, pod: &Pod) {
        let namespace = pod.namespace().unwrap_or_default();
        for budget in self.budgets.in_namespace(&namespace) {
            let selector = budget.spec.as_ref().and_then(|s| s.selector.as_ref());
            if selects(selector, pod.metadata.labels.as_ref()) {
                self.queue.add(&key_of(budget.as_ref()));
            }
        }
    }
}

pub(crate) fn start(ctx: &crate::Context) -> crate::Running {
    let controller = Arc::new(Controller {
        client: ctx.client.clone(),
        budgets: ctx.budgets.clone(),
        pods: ctx.pods.clone(),
        replica_sets: ctx.replica_sets.clone(),
        deployments: ctx.deployments.clone(),
        replication_controllers: ctx.replication_controllers.clone(),
        stateful_sets: ctx.stateful_sets.clone(),
        queue: WorkQueue::default(),
    });
    let c = controller.clone();
    ctx.budgets.subscribe(Box::new(move |_, new| {
        if let Some(budget) = new {
            c.queue.add(&key_of(budget.as_ref()));
        }
    }));
    let c = controller.clone();
    ctx.pods.subscribe(Box::new(move |old, new| {
        for pod in [old, new].into_iter().flatten() {
            c.pod_changed(pod);
        }
    }));
    crate::Running::workers(COMPONENT, controller.queue.clone(), 2, move |key| {
        let c = controller.clone();
        async move { c.sync(&key).await }
    })
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    fn budget(spec: Value, status: Value) -> PodDisruptionBudget {
        serde_json::from_value(json!({
            "metadata": {"name": "b", "namespace": "default", "generation": 2},
            "spec": spec, "status": status,
        }))
        .unwrap()
    }

    fn pod(name: &str, ready: bool, owner: Option<&str>) -> Arc<Pod> {
        let mut pod = json!({
            "metadata": {"name": name, "namespace": "default"},
            "status": {"phase": "Running", "conditions": [
                {"type": "Ready", "status": if ready { "True" } else { "False" }}]},
        });
        if let Some(uid) = owner {
            pod["metadata"]["ownerReferences"] = json!([{"apiVersion": "apps/v1",
                "kind": "ReplicaSet", "name": "rs", "uid": uid, "controller": true}]);
        }
        Arc::new(serde_json::from_value(pod).unwrap())
    }

    fn now() -> Timestamp {
        "2026-12-01T12:00:00Z".parse().unwrap()
    }

    #[test]
    fn min_available_counts_the_selected_pods() {
        let pods = vec![
            pod("a", true, None),
            pod("b", true, None),
            pod("c", false, None),
        ];
        let status = status(
            &budget(json!({"minAvailable": 1}), json!({})),
            &pods,
            |_| None,
            now(),
        );
        assert_eq!(
            (
                status.expected_pods,
                status.current_healthy,
                status.desired_healthy,
                status.disruptions_allowed
            ),
            (3, 2, 1, 1)
        );
        assert_eq!(status.observed_generation, Some(2));
        let condition = &status.conditions.unwrap()[0];
        assert_eq!(
            (condition.status.as_str(), condition.reason.as_str()),
            ("True", "SufficientPods")
        );
        let none = super::status(
            &budget(json!({"minAvailable": 2}), json!({})),
            &pods,
            |_| None,
            now(),
        );
        assert_eq!(none.disruptions_allowed, 0);
        assert_eq!(none.conditions.unwrap()[0].reason, "InsufficientPods");
    }

    #[test]
    fn max_unavailable_and_percentages_scale_the_controllers_replicas() {
        // Four replicas wanted, three pods there, all ready.
        let pods = vec![
            pod("a", true, Some("rs1")),
            pod("b", true, Some("rs1")),
            pod("c", true, Some("rs1")),
        ];
        let scale = |_: &Pod| Some(("rs1".to_string(), 4));
        let status = status(
            &budget(json!({"maxUnavailable": 1}), json!({})),
            &pods,
            scale,
            now(),
        );
        assert_eq!(
            (
                status.expected_pods,
                status.desired_healthy,
                status.disruptions_allowed
            ),
            (4, 3, 0)
        );
        // 30% of 4, rounded up: 2 may be unavailable.
        let status = super::status(
            &budget(json!({"maxUnavailable": "30%"}), json!({})),
            &pods,
            scale,
            now(),
        );
        assert_eq!((status.desired_healthy, status.disruptions_allowed), (2, 1));
        // minAvailable 50% of 4: 2.
        let status = super::status(
            &budget(json!({"minAvailable": "50%"}), json!({})),
            &pods,
            scale,
            now(),
        );
        assert_eq!((status.desired_healthy, status.disruptions_allowed), (2, 1));
        // A pod without a controller: the budget cannot say.
        let lone = vec![pod("x", true, None)];
        let failed = super::status(
            &budget(json!({"maxUnavailable": 1}), json!({})),
            &lone,
            |_| None,
            now(),
        );
        assert_eq!(failed.disruptions_allowed, 0);
        let condition = &failed.conditions.unwrap()[0];
        assert_eq!(condition.reason, "SyncFailed");
        assert_eq!(condition.message, "found no controllers for pod \"x\"");
    }

    #[test]
    fn evicted_pods_count_as_disrupted_until_gone_or_expired() {
        let pods = vec![pod("a", true, None), pod("b", true, None)];
        let evicted = json!({"disruptedPods": {
            "a": "2026-12-01T11:59:30Z",
            "gone": "2026-12-01T11:59:30Z",
            "b": "2026-12-01T11:50:00Z",
        }});
        let status = status(
            &budget(json!({"minAvailable": 1}), evicted),
            &pods,
            |_| None,
            now(),
        );
        // a is still disrupted; b's entry expired and gone's pod is gone.
        assert_eq!(status.current_healthy, 1);
        assert_eq!(status.disruptions_allowed, 0);
        let kept: Vec<&String> = status.disrupted_pods.as_ref().unwrap().keys().collect();
        assert_eq!(kept, ["a"]);
    }
}
