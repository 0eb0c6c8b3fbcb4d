//! The scheduler inside `tug server`, placing pods on simulated nodes.

use k8s_openapi::api::core::v1::{Pod, Taint};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use serde_json::{Value, json};

use super::Server;
use super::sim_nodes::eventually;

fn pod(name: &str, cpu: &str, spec: Value) -> Pod {
    let mut spec = spec;
    spec["containers"] = json!([{
        "name": "app",
        "image": "registry.local/app:1",
        "resources": {"requests": {"cpu": cpu}},
    }]);
    serde_json::from_value(json!({"metadata": {"name": name}, "spec": spec})).unwrap()
}

fn node_of(pod: &Pod) -> Option<String> {
    pod.spec.as_ref()?.node_name.clone()
}

fn scheduled_condition(pod: &Pod) -> Option<(String, String, String)> {
    let condition = pod
        .status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "PodScheduled")?
        .clone();
    Some((
        condition.status,
        condition.reason.unwrap_or_default(),
        condition.message.unwrap_or_default(),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_are_placed_by_resources_and_taints_and_the_rest_say_why_not() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let client = super::kube_client::client(&server).await;
    let plain = tug_sim::SimNodes::start(
        client.clone(),
        tug_sim::Config {
            count: 2,
            name_prefix: "plain-".into(),
            cpu: "4".into(),
            ..tug_sim::Config::default()
        },
    )
    .await
    .unwrap();
    let tainted = tug_sim::SimNodes::start(
        client.clone(),
        tug_sim::Config {
            count: 1,
            name_prefix: "tainted-".into(),
            cpu: "4".into(),
            taints: vec![Taint {
                key: "node-role".into(),
                value: Some("x".into()),
                effect: "NoSchedule".into(),
                ..Taint::default()
            }],
            ..tug_sim::Config::default()
        },
    )
    .await
    .unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");

    // Four pods of one CPU each: two on each untainted node, the least
    // allocated first; they run.
    for i in 0..4 {
        pods.create(
            &PostParams::default(),
            &pod(&format!("web-{i}"), "1", json!({})),
        )
        .await
        .unwrap();
    }
    let placed = eventually(20, "four pods running", || async {
        let mut nodes = Vec::new();
        for i in 0..4 {
            let pod = pods.get(&format!("web-{i}")).await.ok()?;
            let running = pod.status.as_ref()?.phase.as_deref() == Some("Running");
            nodes.push(node_of(&pod).filter(|_| running)?);
        }
        Some(nodes)
    })
    .await;
    for node in ["plain-0", "plain-1"] {
        assert_eq!(
            placed.iter().filter(|n| *n == node).count(),
            2,
            "{placed:?}"
        );
    }
    let described = server.ok(&["describe", "pod", "web-0"]);
    assert!(
        described.contains("Normal  Scheduled")
            && described.contains(&format!(
                "default-scheduler  Successfully assigned default/web-0 to {}",
                placed[0]
            )),
        "{described}"
    );

    // Three CPUs fit nowhere: the taint keeps it off one node, the two
    // others have two CPUs left.
    pods.create(&PostParams::default(), &pod("big", "3", json!({})))
        .await
        .unwrap();
    let message = "0/3 nodes are available: 1 node(s) had untolerated taint {node-role: x}, \
                   2 Insufficient cpu. preemption: 0/3 nodes are available: \
                   1 Preemption is not helpful for scheduling, \
                   2 No preemption victims found for incoming pod.";
    // Until the scheduler has seen every node, it may say less.
    let expected = (
        "False".to_string(),
        "Unschedulable".to_string(),
        message.to_string(),
    );
    eventually(20, "big unschedulable on all three nodes", || async {
        let condition = scheduled_condition(&pods.get("big").await.ok()?)?;
        (condition == expected).then_some(())
    })
    .await;
    let described = server.ok(&["describe", "pod", "big"]);
    assert!(
        described.contains("Warning  FailedScheduling")
            && described.contains(&format!("default-scheduler  {message}")),
        "{described}"
    );
    let listed = server.ok(&["get", "pod", "big", "--no-headers"]);
    assert_eq!(super::columns(&listed)[2], "Pending", "{listed}");

    // A pod that tolerates the taint and selects the node goes there.
    pods.create(
        &PostParams::default(),
        &pod(
            "tolerant",
            "1",
            json!({
                "nodeSelector": {"kubernetes.io/hostname": "tainted-0"},
                "tolerations": [{"key": "node-role", "operator": "Equal", "value": "x", "effect": "NoSchedule"}],
            }),
        ),
    )
    .await
    .unwrap();
    let node = eventually(20, "tolerant placed", || async {
        node_of(&pods.get("tolerant").await.ok()?)
    })
    .await;
    assert_eq!(node, "tainted-0");

    // Another scheduler's pod is left alone.
    pods.create(
        &PostParams::default(),
        &pod("other", "1", json!({"schedulerName": "my-scheduler"})),
    )
    .await
    .unwrap();

    // Freeing a node makes the big pod fit: it is tried again at once.
    let freed = placed[0].clone();
    for (i, node) in placed.iter().enumerate() {
        if *node == freed {
            pods.delete(
                &format!("web-{i}"),
                &DeleteParams::default().grace_period(0),
            )
            .await
            .unwrap();
        }
    }
    let node = eventually(20, "big placed once a node is free", || async {
        node_of(&pods.get("big").await.ok()?)
    })
    .await;
    assert_eq!(node, freed);
    let other = pods.get("other").await.unwrap();
    assert_eq!(node_of(&other), None);
    assert_eq!(scheduled_condition(&other), None);

    // The scheduler holds its Lease, as kube-scheduler does.
    let holder = server.ok(&[
        "get",
        "lease",
        "-n",
        "kube-system",
        "kube-scheduler",
        "-o",
        "jsonpath={.spec.holderIdentity} {.spec.leaseDurationSeconds}",
    ]);
    let (identity, seconds) = holder.split_once(' ').unwrap();
    assert!(identity.contains('_') && seconds == "15", "{holder}");

    plain.shutdown().await;
    tainted.shutdown().await;
}

/// A Deployment of `replicas` pods labelled `app: NAME`, with `extra`
/// (YAML, indented for the pod spec) in their spec.
fn deployment(name: &str, replicas: u32, extra: &str) -> String {
    format!(
        "apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
spec:
  replicas: {replicas}
  selector:
    matchLabels: {{app: {name}}}
  template:
    metadata:
      labels: {{app: {name}}}
    spec:
      terminationGracePeriodSeconds: 1
{extra}      containers:
      - name: app
        image: registry.local/app:1
"
    )
}

/// The nodes of the pods labelled `app=NAME`, and how many are Pending
/// without a node.
async fn placement(pods: &Api<Pod>, name: &str) -> Option<(Vec<String>, usize)> {
    let (mut nodes, pending) = placement_of(pods, &format!("app={name}")).await?;
    nodes.sort();
    Some((nodes, pending))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_keep_apart_join_others_and_spread_over_zones() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let client = super::kube_client::client(&server).await;
    let zone = |name: &str| [("topology.kubernetes.io/zone".to_string(), name.to_string())].into();
    // Zone a has three nodes, zone b one.
    let mut sims = Vec::new();
    for (prefix, count) in [("a-", 3), ("b-", 1)] {
        let config = tug_sim::Config {
            count,
            name_prefix: prefix.into(),
            labels: zone(&prefix[..1]),
            ..tug_sim::Config::default()
        };
        sims.push(
            tug_sim::SimNodes::start(client.clone(), config)
                .await
                .unwrap(),
        );
    }
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let apply = |name: &str, manifest: String| {
        let path = dir.path().join(format!("{name}.yaml"));
        std::fs::write(&path, manifest).unwrap();
        server.ok(&["apply", "-f", path.to_str().unwrap()]);
    };

    // Required anti-affinity per host: one pod on each of the four
    // nodes; the fifth waits, saying why as upstream does.
    apply(
        "web",
        deployment(
            "web",
            5,
            "      affinity:
        podAntiAffinity:
          requiredDuringSchedulingIgnoredDuringExecution:
          - labelSelector: {matchLabels: {app: web}}
            topologyKey: kubernetes.io/hostname
",
        ),
    );
    let (nodes, _) = eventually(30, "four web pods placed, one pending", || async {
        placement(&pods, "web")
            .await
            .filter(|(n, pending)| n.len() == 4 && *pending == 1)
    })
    .await;
    assert_eq!(nodes, ["a-0", "a-1", "a-2", "b-0"]);
    let message = "0/4 nodes are available: 4 node(s) didn't match pod anti-affinity rules. \
                   preemption: 0/4 nodes are available: 4 No preemption victims found for incoming pod.";
    let pending = eventually(20, "the fifth web pod unschedulable", || async {
        let list = pods
            .list(&ListParams::default().labels("app=web"))
            .await
            .ok()?;
        list.items.into_iter().find(|p| {
            scheduled_condition(p).is_some_and(|(status, reason, text)| {
                status == "False" && reason == "Unschedulable" && text == message
            })
        })
    })
    .await;
    let name = pending.metadata.name.unwrap();
    let described = server.ok(&["describe", "pod", &name]);
    assert!(
        described.contains("Warning  FailedScheduling")
            && described.contains(&format!("default-scheduler  {message}")),
        "{described}"
    );

    // Required affinity to a pod that does not exist yet: pending, and
    // preemption could not help; once the pod it wants runs in zone b,
    // it joins it there.
    apply(
        "cache",
        deployment(
            "cache",
            1,
            "      affinity:
        podAffinity:
          requiredDuringSchedulingIgnoredDuringExecution:
          - labelSelector: {matchLabels: {app: db}}
            topologyKey: topology.kubernetes.io/zone
",
        ),
    );
    let message = "0/4 nodes are available: 4 node(s) didn't match pod affinity rules. \
                   preemption: 0/4 nodes are available: 4 Preemption is not helpful for scheduling.";
    eventually(20, "the cache pod waiting for its db", || async {
        let list = pods
            .list(&ListParams::default().labels("app=cache"))
            .await
            .ok()?;
        list.items
            .iter()
            .find(|p| scheduled_condition(p).is_some_and(|(_, _, text)| text == message))?;
        Some(())
    })
    .await;
    apply(
        "db",
        deployment(
            "db",
            1,
            "      nodeSelector: {topology.kubernetes.io/zone: b}\n",
        ),
    );
    let (nodes, _) = eventually(20, "the cache pod placed beside the db", || async {
        placement(&pods, "cache")
            .await
            .filter(|(n, _)| n.len() == 1)
    })
    .await;
    assert_eq!(nodes, ["b-0"]);

    // Six pods spread over the zones with maxSkew 1: three in the lone
    // node of zone b, three over zone a's three (by resources alone,
    // zone a would take most).
    apply(
        "spread",
        deployment(
            "spread",
            6,
            "      topologySpreadConstraints:
      - maxSkew: 1
        topologyKey: topology.kubernetes.io/zone
        whenUnsatisfiable: DoNotSchedule
        labelSelector: {matchLabels: {app: spread}}
",
        ),
    );
    let (nodes, _) = eventually(30, "six spread pods placed", || async {
        placement(&pods, "spread")
            .await
            .filter(|(n, _)| n.len() == 6)
    })
    .await;
    let in_b = nodes.iter().filter(|n| n.starts_with("b-")).count();
    assert_eq!(in_b, 3, "{nodes:?}");

    for sim in sims {
        sim.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn higher_priority_pods_preempt_lower_ones() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let client = super::kube_client::client(&server).await;
    let sim = tug_sim::SimNodes::start(
        client.clone(),
        tug_sim::Config {
            count: 1,
            cpu: "2".into(),
            ..tug_sim::Config::default()
        },
    )
    .await
    .unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");

    // Every cluster has the system classes.
    let classes = server.ok(&["get", "priorityclass", "--no-headers"]);
    assert!(
        classes.contains("system-cluster-critical   2000000000")
            && classes.contains("system-node-critical      2000001000"),
        "{classes}"
    );
    let manifest = dir.path().join("classes.yaml");
    std::fs::write(
        &manifest,
        "apiVersion: scheduling.k8s.io/v1
kind: PriorityClass
metadata: {name: high}
value: 1000
---
apiVersion: scheduling.k8s.io/v1
kind: PriorityClass
metadata: {name: polite}
value: 1000
preemptionPolicy: Never
",
    )
    .unwrap();
    server.ok(&["apply", "-f", manifest.to_str().unwrap()]);

    // Two pods of one CPU fill the node; admission gave them priority 0.
    for i in 0..2 {
        let mut low = pod(
            &format!("low-{i}"),
            "1",
            json!({"terminationGracePeriodSeconds": 1}),
        );
        low.metadata.labels = Some([("tier".to_string(), "low".to_string())].into());
        pods.create(&PostParams::default(), &low).await.unwrap();
    }
    eventually(20, "the low pods placed", || async {
        let (nodes, pending) = placement_of(&pods, "tier=low").await?;
        (nodes.len() == 2 && pending == 0).then_some(())
    })
    .await;
    let admitted = server.ok(&[
        "get",
        "pod",
        "low-0",
        "-o",
        "jsonpath={.spec.priority} {.spec.preemptionPolicy}",
    ]);
    assert_eq!(admitted, "0 PreemptLowerPriority");

    // A class that does not exist is refused; so is a priority that
    // contradicts the class.
    let refused = server.fails(&[
        "run",
        "nope",
        "--image=registry.local/app:1",
        "--overrides",
        r#"{"spec": {"priorityClassName": "missing"}}"#,
    ]);
    assert!(
        refused
            .contains(r#"pods "nope" is forbidden: no PriorityClass with name missing was found"#),
        "{refused}"
    );
    let refused = server.fails(&[
        "run",
        "nope",
        "--image=registry.local/app:1",
        "--overrides",
        r#"{"spec": {"priorityClassName": "high", "priority": 5}}"#,
    ]);
    assert!(
        refused.contains("the integer value of priority (5) must not be provided in pod spec; \
                          priority admission controller computed 1000 from the given PriorityClass name"),
        "{refused}"
    );

    // A polite pod of priority 1000 waits rather than evict.
    pods.create(
        &PostParams::default(),
        &pod("polite", "1", json!({"priorityClassName": "polite"})),
    )
    .await
    .unwrap();
    let message = "0/1 nodes are available: 1 Insufficient cpu. \
                   preemption: not eligible due to preemptionPolicy=Never.";
    eventually(20, "the polite pod waiting", || async {
        let condition = scheduled_condition(&pods.get("polite").await.ok()?)?;
        (condition.2 == message).then_some(())
    })
    .await;

    // An urgent one evicts one low pod (not both), is nominated to the
    // node, then runs there.
    let urgent = pods
        .create(
            &PostParams::default(),
            &pod("urgent", "1", json!({"priorityClassName": "high"})),
        )
        .await
        .unwrap();
    let node = eventually(30, "the urgent pod placed", || async {
        node_of(&pods.get("urgent").await.ok()?)
    })
    .await;
    assert_eq!(node, "sim-0");
    let nominated = server.ok(&[
        "get",
        "pod",
        "urgent",
        "-o",
        "jsonpath={.status.nominatedNodeName}",
    ]);
    assert_eq!(nominated, "sim-0");
    let (left, _) = placement_of(&pods, "tier=low").await.unwrap();
    assert_eq!(left.len(), 1, "{left:?}");
    let preempted = server.ok(&[
        "get",
        "events",
        "--field-selector",
        "reason=Preempted",
        "-o",
        "jsonpath={.items[*].message}",
    ]);
    assert_eq!(
        preempted,
        format!(
            "Preempted by pod {} on node sim-0",
            urgent.metadata.uid.unwrap()
        )
    );
    // The polite pod still waits: it never evicts.
    assert_eq!(node_of(&pods.get("polite").await.unwrap()), None);

    sim.shutdown().await;
}

/// The nodes of the pods matching `selector` (not being deleted), and how
/// many have none.
async fn placement_of(pods: &Api<Pod>, selector: &str) -> Option<(Vec<String>, usize)> {
    let (all, _, nodes) = super::workloads::live_pods(pods, selector).await?;
    let pending = all - nodes.len();
    Some((nodes, pending))
}
