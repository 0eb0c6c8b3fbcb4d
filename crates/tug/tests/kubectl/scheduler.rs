//! The scheduler inside `tug server`, placing pods on simulated nodes.

use k8s_openapi::api::core::v1::{Pod, Taint};
use kube::api::{Api, DeleteParams, PostParams};
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
