//! The DaemonSet controller: one pod on every node its template may run
//! on (node selector, required node affinity, taints against the
//! tolerations upstream adds), placed by the scheduler through a node
//! affinity on the node's name; failed pods replaced, extra ones
//! removed, old ones rolled at most maxUnavailable at a time.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use k8s_openapi::api::apps::v1::{ControllerRevision, DaemonSet, DaemonSetStatus};
use k8s_openapi::api::core::v1::{
    Affinity, Node, NodeAffinity, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, Pod,
    Toleration,
};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, PostParams};
use kube::{Client, ResourceExt};
use tug_scheduler::info::{NodeInfo, PodInfo};
use tug_scheduler::plugins::{Cycle, Filter, Fit, NodeAffinity as AffinityFilter, TaintToleration};

use crate::claim;
use crate::deployment::{scaled, template_hash};
use crate::events::{self, Recorder};
use crate::expectations::Expectations;
use crate::history;
use crate::informer::{Informer, key_of};
use crate::pods;
use crate::workqueue::WorkQueue;

pub const COMPONENT: &str = "daemonset-controller";
pub const HASH_LABEL: &str = "controller-revision-hash";
const GENERATION_LABEL: &str = "pod-template-generation";

/// The tolerations every daemon pod gets (upstream's
/// AddOrUpdateDaemonPodTolerations), the network one only with
/// hostNetwork.
fn daemon_tolerations(host_network: bool) -> Vec<Toleration> {
    let toleration = |key: &str, effect: &str| Toleration {
        key: Some(key.into()),
        operator: Some("Exists".into()),
        effect: Some(effect.into()),
        ..Toleration::default()
    };
    let mut all = vec![
        toleration("node.kubernetes.io/not-ready", "NoExecute"),
        toleration("node.kubernetes.io/unreachable", "NoExecute"),
        toleration("node.kubernetes.io/disk-pressure", "NoSchedule"),
        toleration("node.kubernetes.io/memory-pressure", "NoSchedule"),
        toleration("node.kubernetes.io/pid-pressure", "NoSchedule"),
        toleration("node.kubernetes.io/unschedulable", "NoSchedule"),
    ];
    if host_network {
        all.push(toleration(
            "node.kubernetes.io/network-unavailable",
            "NoSchedule",
        ));
    }
    all
}

/// The DaemonSet's pod, not yet bound to a node: its template with the
/// daemon tolerations added (those it has already kept).
pub fn daemon_pod(ds: &DaemonSet, hash: &str) -> Pod {
    let template = ds
        .spec
        .as_ref()
        .map(|s| s.template.clone())
        .unwrap_or_default();
    let owner = pods::controller_ref("apps/v1", "DaemonSet", &ds.metadata);
    let mut pod = pods::from_template(&template, &ds.metadata, owner);
    let labels = pod.metadata.labels.get_or_insert_with(BTreeMap::new);
    labels.insert(HASH_LABEL.into(), hash.into());
    labels.insert(
        GENERATION_LABEL.into(),
        ds.metadata.generation.unwrap_or(1).to_string(),
    );
    if let Some(spec) = pod.spec.as_mut() {
        let tolerations = spec.tolerations.get_or_insert_with(Vec::new);
        for wanted in daemon_tolerations(spec.host_network == Some(true)) {
            if !tolerations
                .iter()
                .any(|t| t.key == wanted.key && t.effect == wanted.effect)
            {
                tolerations.push(wanted);
            }
        }
    }
    pod
}

/// The same pod for one node: required node affinity on the node's name
/// (the scheduler binds it there).
pub fn for_node(mut pod: Pod, node: &str) -> Pod {
    let term = NodeSelectorTerm {
        match_fields: Some(vec![NodeSelectorRequirement {
            key: "metadata.name".into(),
            operator: "In".into(),
            values: Some(vec![node.into()]),
        }]),
        match_expressions: None,
    };
    if let Some(spec) = pod.spec.as_mut() {
        let affinity = spec.affinity.get_or_insert_with(Affinity::default);
        let node_affinity = affinity
            .node_affinity
            .get_or_insert_with(NodeAffinity::default);
        node_affinity.required_during_scheduling_ignored_during_execution = Some(NodeSelector {
            node_selector_terms: vec![term],
        });
    }
    pod
}

/// Whether the daemon pod may run on `node`.
pub fn should_run(pod: &Pod, node: &Node) -> bool {
    let info = PodInfo::new(Arc::new(pod.clone()));
    let node = NodeInfo::new(node);
    matches!(
        AffinityFilter.filter(&Cycle::default(), &info, &node),
        Fit::Fits
    ) && matches!(
        TaintToleration.filter(&Cycle::default(), &info, &node),
        Fit::Fits
    )
}

/// The node a daemon pod is for: bound, or named in its affinity.
pub fn node_of(pod: &Pod) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    if let Some(node) = spec.node_name.clone().filter(|n| !n.is_empty()) {
        return Some(node);
    }
    let terms = &spec
        .affinity
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required_during_scheduling_ignored_during_execution
        .as_ref()?
        .node_selector_terms;
    terms.iter().find_map(|t| {
        t.match_fields
            .iter()
            .flatten()
            .find(|r| r.key == "metadata.name" && r.operator == "In")
            .and_then(|r| r.values.as_ref()?.first().cloned())
    })
}

fn hash_of(pod: &Pod) -> Option<&str> {
    pod.metadata
        .labels
        .as_ref()?
        .get(HASH_LABEL)
        .map(String::as_str)
}

/// What one sync does: pods to make (per node) and pods to delete.
#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    pub create: Vec<String>,
    pub delete: Vec<String>,
    /// Failed pods among `delete`, by name, for the event.
    pub failed: Vec<(String, String)>,
}

/// The plan over every node, and the status it leaves.
pub fn plan(
    ds: &DaemonSet,
    nodes: &[Arc<Node>],
    pods: &[Arc<Pod>],
    hash: &str,
    now: Timestamp,
) -> (Plan, DaemonSetStatus) {
    let spec = ds.spec.clone().unwrap_or_default();
    let min_ready = spec.min_ready_seconds.unwrap_or(0);
    let template = daemon_pod(ds, hash);
    let mut by_node: HashMap<String, Vec<&Arc<Pod>>> = HashMap::new();
    for pod in pods {
        if let Some(node) = node_of(pod) {
            by_node.entry(node).or_default().push(pod);
        }
    }
    let mut plan = Plan::default();
    let mut status = DaemonSetStatus {
        observed_generation: ds.metadata.generation,
        ..DaemonSetStatus::default()
    };
    let desired_count = nodes.iter().filter(|n| should_run(&template, n)).count() as i32;
    let rolling = spec
        .update_strategy
        .as_ref()
        .and_then(|s| s.type_.as_deref())
        .unwrap_or("RollingUpdate")
        == "RollingUpdate";
    let rolling_update = spec
        .update_strategy
        .as_ref()
        .and_then(|s| s.rolling_update.as_ref());
    let max_surge = scaled(
        rolling_update.and_then(|r| r.max_surge.as_ref()),
        "0",
        desired_count,
        true,
    )
    .max(0);
    let max_unavailable = match rolling_update.and_then(|r| r.max_unavailable.as_ref()) {
        None => 1,
        given => scaled(given, "1", desired_count, true).max(1),
    };
    let mut old_on_nodes: Vec<(bool, String)> = Vec::new();
    // With surge: nodes where a new pod may join an old one, where an
    // unavailable old one may be replaced at once, and new pods still
    // becoming available.
    let (mut surge_candidates, mut surge_allowed, mut surging) = (Vec::new(), Vec::new(), 0);
    let mut unavailable = 0;
    for node in nodes {
        let name = node.name_any();
        let runs_here = should_run(&template, node);
        let mut here: Vec<&Arc<Pod>> = by_node.get(&name).cloned().unwrap_or_default();
        here.sort_by(|a, b| {
            a.metadata
                .creation_timestamp
                .cmp(&b.metadata.creation_timestamp)
        });
        let (failed, mut alive): (Vec<&Arc<Pod>>, Vec<&Arc<Pod>>) = here
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .partition(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Failed"));
        for pod in failed {
            plan.delete.push(pod.name_any());
            plan.failed.push((pod.name_any(), name.clone()));
        }
        if !runs_here {
            if !alive.is_empty() {
                status.number_misscheduled += 1;
                plan.delete.extend(alive.iter().map(|p| p.name_any()));
            }
            continue;
        }
        if alive.is_empty() {
            plan.create.push(name.clone());
            unavailable += 1;
            continue;
        }
        // One pod per node: the oldest stays; while surging, the oldest
        // new one beside the oldest old one.
        if max_surge > 0 && rolling {
            let (mut new_pod, mut old_pod) = (None, None);
            for pod in &alive {
                let slot = if hash_of(pod) == Some(hash) {
                    &mut new_pod
                } else {
                    &mut old_pod
                };
                if slot.is_none() {
                    *slot = Some(*pod);
                } else {
                    plan.delete.push(pod.name_any());
                }
            }
            match (old_pod, new_pod) {
                (Some(old), None) if !pods::is_available(old, min_ready, now) => {
                    surge_allowed.push(name.clone());
                }
                (Some(_), None) => surge_candidates.push(name.clone()),
                (Some(old), Some(new)) => {
                    if pods::is_available(new, min_ready, now) {
                        plan.delete.push(old.name_any());
                    } else {
                        surging += 1;
                    }
                }
                _ => {}
            }
            alive.retain(|p| Some(*p) == old_pod || Some(*p) == new_pod);
        } else {
            for extra in alive.split_off(1) {
                plan.delete.push(extra.name_any());
            }
        }
        let pod = alive[0];
        status.current_number_scheduled += 1;
        let ready = pods::is_ready(pod);
        let available = pods::is_available(pod, min_ready, now);
        if ready {
            status.number_ready += 1;
        }
        if available {
            status.number_available = Some(status.number_available.unwrap_or(0) + 1);
        } else {
            unavailable += 1;
        }
        if hash_of(pod) == Some(hash) {
            status.updated_number_scheduled =
                Some(status.updated_number_scheduled.unwrap_or(0) + 1);
        } else {
            old_on_nodes.push((available, pod.name_any()));
        }
    }
    if rolling && max_surge > 0 {
        // A new pod beside each old one, maxSurge at a time (at once
        // where the old one is not available); the old one goes when the
        // new one is available.
        let room = (max_surge - surging).max(0) as usize;
        surge_candidates.truncate(room);
        plan.create.extend(surge_allowed);
        plan.create.extend(surge_candidates);
    } else if rolling {
        // Old pods that are not available go first; available ones only
        // while the unavailable stay within maxUnavailable.
        old_on_nodes.sort();
        for (available, name) in old_on_nodes {
            if !available {
                plan.delete.push(name);
            } else if unavailable < max_unavailable {
                plan.delete.push(name);
                unavailable += 1;
            }
        }
    }
    status.desired_number_scheduled = desired_count;
    let available = status.number_available.unwrap_or(0);
    status.number_unavailable = Some(desired_count - available).filter(|n| *n > 0);
    (plan, status)
}

struct Controller {
    client: Client,
    sets: Informer<DaemonSet>,
    nodes: Informer<Node>,
    pods: Informer<Pod>,
    revisions: Informer<ControllerRevision>,
    queue: WorkQueue,
    expectations: Expectations,
    recorder: Recorder,
}

impl Controller {
    fn owner_of(&self, pod: &Pod) -> Option<Arc<DaemonSet>> {
        self.sets.controller_of(&pod.metadata)
    }

    fn on_pod(&self, old: Option<&Arc<Pod>>, new: Option<&Arc<Pod>>) {
        let Some(pod) = new.or(old) else { return };
        let Some(ds) = self.owner_of(pod) else { return };
        let key = key_of(ds.as_ref());
        match (old, new) {
            (None, Some(_)) => self.expectations.creation_observed(&key),
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
        self.queue.add(&key);
    }

    async fn sync(&self, key: &str) -> anyhow::Result<Option<Duration>> {
        let Some(cached) = self.sets.get(key) else {
            self.expectations.forget(key);
            return Ok(None);
        };
        let ds = (*cached).clone();
        let namespace = ds.namespace().unwrap_or_default();
        let selector = ds.spec.as_ref().map(|s| s.selector.clone());
        let owner = claim::Owner {
            meta: &cached.metadata,
            api_version: "apps/v1",
            kind: "DaemonSet",
            selector: selector.as_ref(),
        };
        let client = &self.client;
        let claimed = claim::claim(
            client,
            &self.pods,
            owner,
            |p: &Pod| p.status.as_ref().and_then(|s| s.phase.as_deref()) != Some("Succeeded"),
            async || claim::still_there::<DaemonSet>(client, &cached.metadata).await,
        )
        .await?;
        let template = ds
            .spec
            .as_ref()
            .map(|s| s.template.clone())
            .unwrap_or_default();
        // The template's revision; its hash labels the pods.
        let revisions = claim::claim(
            client,
            &self.revisions,
            claim::Owner {
                meta: &cached.metadata,
                api_version: "apps/v1",
                kind: "DaemonSet",
                selector: selector.as_ref(),
            },
            |_| true,
            async || claim::still_there::<DaemonSet>(client, &cached.metadata).await,
        )
        .await?;
        let given = ds.status.as_ref().and_then(|s| s.collision_count);
        let mut collisions = given.unwrap_or(0);
        let history_owner = history::Owner {
            meta: &ds.metadata,
            api_version: "apps/v1",
            kind: "DaemonSet",
            labels: template
                .metadata
                .as_ref()
                .and_then(|m| m.labels.clone())
                .unwrap_or_default(),
            hash_label: HASH_LABEL,
        };
        let revision = history::update_revision(
            client,
            &history_owner,
            &revisions,
            history::patch_of(&template),
            &|count| template_hash(&template, if count == 0 { given } else { Some(count) }),
            &mut collisions,
        )
        .await?;
        let hash = revision
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(HASH_LABEL).cloned())
            .unwrap_or_else(|| template_hash(&template, given));
        let nodes: Vec<Arc<Node>> = self
            .nodes
            .keys()
            .iter()
            .filter_map(|k| self.nodes.get(k))
            .collect();
        let (plan, mut status) = plan(&ds, &nodes, &claimed, &hash, Timestamp::now());
        if self.expectations.satisfied(key) && ds.metadata.deletion_timestamp.is_none() {
            let api: Api<Pod> = Api::namespaced(self.client.clone(), &namespace);
            for (pod, node) in &plan.failed {
                self.recorder.event(
                    events::reference(&ds),
                    events::WARNING,
                    "FailedDaemonPod",
                    format!("Found failed daemon pod {namespace}/{pod} on node {node}, will try to kill it"),
                );
            }
            let doomed: Vec<String> = plan
                .delete
                .iter()
                .map(|n| format!("{namespace}/{n}"))
                .collect();
            self.expectations.expect(key, plan.create.len(), doomed);
            let params = DeleteParams::default();
            let results = join_all(plan.delete.iter().map(|n| api.delete(n, &params))).await;
            for (name, result) in plan.delete.iter().zip(results) {
                match result {
                    Ok(_) => self.recorder.event(
                        events::reference(&ds),
                        events::NORMAL,
                        "SuccessfulDelete",
                        format!("Deleted pod: {name}"),
                    ),
                    Err(err) => {
                        self.expectations
                            .deletion_observed(key, &format!("{namespace}/{name}"));
                        if !matches!(&err, kube::Error::Api(s) if s.code == 404) {
                            return Err(err.into());
                        }
                    }
                }
            }
            let base = daemon_pod(&ds, &hash);
            let wave: Vec<Pod> = plan
                .create
                .iter()
                .map(|n| for_node(base.clone(), n))
                .collect();
            pods::create_in_batches(
                &api,
                wave,
                key,
                &self.expectations,
                &self.recorder,
                &events::reference(&ds),
            )
            .await
            .map_err(|message| anyhow::anyhow!(message))?;
        }
        status.collision_count = Some(collisions).filter(|c| *c > 0).or(given);
        status.conditions = ds.status.as_ref().and_then(|s| s.conditions.clone());
        if ds.status.as_ref() != Some(&status) {
            let api: Api<DaemonSet> = Api::namespaced(self.client.clone(), &namespace);
            let mut object = ds.clone();
            object.metadata.managed_fields = None;
            object.status = Some(status.clone());
            match api
                .replace_status(&ds.name_any(), &PostParams::default(), &object)
                .await
            {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(err) => return Err(err.into()),
            }
        }
        // Old revisions beyond the limit go, but those pods still run.
        let live: HashSet<&str> = claimed.iter().filter_map(|p| hash_of(p)).collect();
        let keep: HashSet<String> = revisions
            .iter()
            .filter(|r| {
                r.metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(HASH_LABEL))
                    .is_some_and(|h| live.contains(h.as_str()))
            })
            .map(|r| r.name_any())
            .chain([revision.name_any()])
            .collect();
        let limit = ds
            .spec
            .as_ref()
            .and_then(|s| s.revision_history_limit)
            .unwrap_or(10)
            .max(0) as usize;
        history::delete(
            client,
            &namespace,
            &history::truncate(&revisions, &keep, limit),
        )
        .await?;
        let min_ready = ds
            .spec
            .as_ref()
            .and_then(|s| s.min_ready_seconds)
            .unwrap_or(0);
        Ok(
            (min_ready > 0 && status.number_available.unwrap_or(0) < status.number_ready)
                .then(|| Duration::from_secs(min_ready as u64)),
        )
    }
}

pub(crate) fn start(ctx: &crate::Context) -> crate::Running {
    let controller = Arc::new(Controller {
        client: ctx.client.clone(),
        sets: ctx.daemon_sets.clone(),
        nodes: ctx.nodes.clone(),
        pods: ctx.pods.clone(),
        revisions: ctx.revisions.clone(),
        queue: WorkQueue::default(),
        expectations: Expectations::default(),
        recorder: ctx.recorder.for_component(COMPONENT),
    });
    let c = controller.clone();
    ctx.daemon_sets.subscribe(Box::new(move |old, new| {
        if let Some(ds) = new.or(old) {
            if new.is_none() {
                c.expectations.forget(&key_of(ds.as_ref()));
            }
            c.queue.add(&key_of(ds.as_ref()));
        }
    }));
    let c = controller.clone();
    ctx.pods
        .subscribe(Box::new(move |old, new| c.on_pod(old, new)));
    let c = controller.clone();
    let sets = ctx.daemon_sets.clone();
    ctx.nodes.subscribe(Box::new(move |old, new| {
        // Labels, taints or the node itself changed: every DaemonSet looks.
        let relevant = match (old, new) {
            (Some(o), Some(n)) => {
                o.metadata.labels != n.metadata.labels
                    || o.spec.as_ref().and_then(|s| s.taints.clone())
                        != n.spec.as_ref().and_then(|s| s.taints.clone())
            }
            _ => true,
        };
        if relevant {
            for key in sets.keys() {
                c.queue.add(&key);
            }
        }
    }));
    crate::Running::workers(COMPONENT, controller.queue.clone(), 2, move |key| {
        let c = controller.clone();
        async move { c.sync(&key).await }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn ds(extra: Value) -> DaemonSet {
        let mut v = json!({
            "metadata": {"name": "agent", "namespace": "kube-system", "uid": "d1", "generation": 2},
            "spec": {"selector": {"matchLabels": {"app": "agent"}},
                "template": {"metadata": {"labels": {"app": "agent"}}, "spec": {"containers": []}}},
        });
        for (k, val) in extra.as_object().unwrap() {
            v["spec"][k] = val.clone();
        }
        serde_json::from_value(v).unwrap()
    }

    fn node(name: &str, extra: Value) -> Arc<Node> {
        let mut v = json!({"metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}}, "spec": {}});
        for (k, val) in extra.as_object().unwrap() {
            v[k] = val.clone();
        }
        Arc::new(serde_json::from_value(v).unwrap())
    }

    fn pod(name: &str, node: &str, hash: &str, ready: bool) -> Arc<Pod> {
        Arc::new(serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {"app": "agent", HASH_LABEL: hash},
                "creationTimestamp": "2026-11-30T10:00:00Z"},
            "spec": {"nodeName": node, "containers": []},
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}]},
        })).unwrap())
    }

    #[test]
    fn one_pod_per_eligible_node() {
        let now: Timestamp = "2026-11-30T12:00:00Z".parse().unwrap();
        let nodes = vec![
            node("n1", json!({})),
            node(
                "n2",
                json!({"spec": {"taints": [{"key": "dedicated", "value": "db", "effect": "NoSchedule"}]}}),
            ),
            node(
                "n3",
                json!({"spec": {"unschedulable": true, "taints": [{"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}]}}),
            ),
            node("n4", json!({})),
        ];
        let pods = vec![
            pod("a", "n1", "h", true),
            pod("b", "n2", "h", true),
            pod("c", "n4", "h", true),
            pod("d", "n4", "h", true),
        ];
        let (planned, status) = plan(&ds(json!({})), &nodes, &pods, "h", now);
        assert_eq!(
            planned.create,
            ["n3"],
            "the unschedulable node is tolerated"
        );
        assert_eq!(
            planned.delete,
            ["b", "d"],
            "the tainted node's pod and an extra go"
        );
        assert_eq!(
            (
                status.desired_number_scheduled,
                status.current_number_scheduled,
                status.number_misscheduled,
                status.number_ready
            ),
            (3, 2, 1, 2)
        );
        assert_eq!(status.number_unavailable, Some(1));
        // A node selector narrows the nodes.
        let picky = ds(
            json!({"template": {"metadata": {"labels": {"app": "agent"}},
            "spec": {"containers": [], "nodeSelector": {"kubernetes.io/hostname": "n4"}}}}),
        );
        let (planned, status) = plan(&picky, &nodes, &[], "h", now);
        assert_eq!(
            (planned.create, status.desired_number_scheduled),
            (vec!["n4".to_string()], 1)
        );
    }

    #[test]
    fn a_rolling_update_replaces_unavailable_first_then_one_at_a_time() {
        let now: Timestamp = "2026-11-30T12:00:00Z".parse().unwrap();
        let nodes = vec![
            node("n1", json!({})),
            node("n2", json!({})),
            node("n3", json!({})),
        ];
        let pods = vec![
            pod("a", "n1", "old", true),
            pod("b", "n2", "old", false),
            pod("c", "n3", "old", true),
        ];
        let (planned, status) = plan(&ds(json!({})), &nodes, &pods, "new", now);
        assert_eq!(
            planned.delete,
            ["b"],
            "the unavailable old pod; no more while one is down"
        );
        assert_eq!(status.updated_number_scheduled, None);
        let pods = vec![
            pod("a", "n1", "old", true),
            pod("b2", "n2", "new", true),
            pod("c", "n3", "old", true),
        ];
        let (planned, status) = plan(&ds(json!({})), &nodes, &pods, "new", now);
        assert_eq!(planned.delete.len(), 1);
        assert_eq!(status.updated_number_scheduled, Some(1));
        let on_delete = ds(json!({"updateStrategy": {"type": "OnDelete"}}));
        assert!(plan_deletes_nothing(&on_delete, &nodes, &pods, now));
    }

    #[test]
    fn a_surging_update_adds_new_pods_before_old_ones_go() {
        let now: Timestamp = "2026-11-30T12:00:00Z".parse().unwrap();
        let nodes = vec![
            node("n1", json!({})),
            node("n2", json!({})),
            node("n3", json!({})),
        ];
        let surge = ds(json!({"updateStrategy": {"type": "RollingUpdate",
            "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}}));
        let pods = vec![
            pod("a", "n1", "old", true),
            pod("b", "n2", "old", false),
            pod("c", "n3", "old", true),
        ];
        let (planned, _) = plan(&surge, &nodes, &pods, "new", now);
        assert_eq!(
            (planned.create, planned.delete),
            (vec!["n2".to_string(), "n1".to_string()], vec![]),
            "the unavailable node at once, one more within the surge"
        );
        let mut later = pods.clone();
        later.push(pod("a2", "n1", "new", true));
        later.push(pod("b2", "n2", "new", false));
        let (planned, status) = plan(&surge, &nodes, &later, "new", now);
        assert_eq!(
            (planned.create, planned.delete),
            (vec![], vec!["a".to_string()]),
            "the old pod beside an available new one goes; n2's new pod still counts against the surge"
        );
        assert_eq!(status.current_number_scheduled, 3);
    }

    fn plan_deletes_nothing(
        ds: &DaemonSet,
        nodes: &[Arc<Node>],
        pods: &[Arc<Pod>],
        now: Timestamp,
    ) -> bool {
        plan(ds, nodes, pods, "new", now).0.delete.is_empty()
    }

    #[test]
    fn daemon_pods_tolerate_what_upstream_adds_and_target_their_node() {
        let pod = for_node(daemon_pod(&ds(json!({})), "h"), "n7");
        assert_eq!(node_of(&pod).as_deref(), Some("n7"));
        let keys: Vec<String> = pod
            .spec
            .as_ref()
            .unwrap()
            .tolerations
            .iter()
            .flatten()
            .filter_map(|t| t.key.clone())
            .collect();
        assert!(keys.contains(&"node.kubernetes.io/unreachable".to_string()));
        assert!(!keys.contains(&"node.kubernetes.io/network-unavailable".to_string()));
        assert_eq!(pod.metadata.labels.as_ref().unwrap()[HASH_LABEL], "h");
        assert_eq!(pod.metadata.generate_name.as_deref(), Some("agent-"));
    }
}
