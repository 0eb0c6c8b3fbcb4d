//! The controller-manager inside `tug server`: Deployments and their
//! ReplicaSets on simulated nodes, and the garbage collector.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};

use super::Server;
use super::sim_nodes::eventually;

const DEPLOYMENT: &str = "apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 3
  strategy:
    rollingUpdate: {maxSurge: 1, maxUnavailable: 0}
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: app
        image: registry.local/app:1
        resources:
          requests: {cpu: '1'}
";

/// A client of `server` and simulated nodes registered through it.
async fn simulated(server: &Server, config: tug_sim::Config) -> (kube::Client, tug_sim::SimNodes) {
    let client = super::kube_client::client(server).await;
    let nodes = tug_sim::SimNodes::start(client.clone(), config)
        .await
        .unwrap();
    (client, nodes)
}

fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// The pods of `selector` not being deleted: (all, ready, their nodes).
pub(super) async fn live_pods(
    pods: &Api<Pod>,
    selector: &str,
) -> Option<(usize, usize, Vec<String>)> {
    let list = pods
        .list(&ListParams::default().labels(selector))
        .await
        .ok()?;
    let live: Vec<&Pod> = list
        .items
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect();
    let nodes = live
        .iter()
        .filter_map(|p| p.spec.as_ref()?.node_name.clone())
        .collect();
    Some((
        live.len(),
        live.iter().filter(|p| is_ready(p)).count(),
        nodes,
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployments_roll_out_scale_undo_and_go_with_their_pods() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let (client, nodes) = simulated(
        &server,
        tug_sim::Config {
            count: 3,
            name_prefix: "node-".into(),
            cpu: "4".into(),
            ready_delay: Duration::from_millis(300),
            ..tug_sim::Config::default()
        },
    )
    .await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let manifest = dir.path().join("web.yaml");
    std::fs::write(&manifest, DEPLOYMENT).unwrap();
    server.ok(&["apply", "-f", manifest.to_str().unwrap()]);
    let out = server.ok(&["rollout", "status", "deploy/web", "--timeout=60s"]);
    assert!(
        out.ends_with("deployment \"web\" successfully rolled out\n"),
        "{out}"
    );
    let (_, ready, mut placed) = live_pods(&pods, "app=web").await.unwrap();
    assert_eq!(ready, 3);
    placed.sort();
    assert_eq!(
        placed,
        ["node-0", "node-1", "node-2"],
        "one CPU each, spread"
    );
    let listed = server.ok(&["get", "deploy", "web", "--no-headers"]);
    assert_eq!(super::columns(&listed)[..4], ["web", "3/3", "3", "3"]);
    // The controller-manager, in the server's process, writes as itself:
    // its field manager names it.
    let managers = |what: &str| {
        server.ok(&[
            "get",
            what,
            "-l",
            "app=web",
            "-o",
            "jsonpath={.items[0].metadata.managedFields[*].manager}",
        ])
    };
    let set_managers = managers("replicasets");
    assert!(
        set_managers
            .split(' ')
            .all(|manager| manager == "kube-controller-manager"),
        "{set_managers}"
    );
    let pod_managers = managers("pods");
    assert!(
        pod_managers.starts_with("kube-controller-manager"),
        "{pod_managers}"
    );

    // A rolling update with maxSurge 1 and maxUnavailable 0: never fewer
    // than 3 ready pods, never more than 4 pods.
    let watching = Arc::new(AtomicBool::new(true));
    let monitor = tokio::spawn({
        let pods = pods.clone();
        let watching = watching.clone();
        async move {
            let mut seen = Vec::new();
            while watching.load(Ordering::Relaxed) {
                if let Some((all, ready, _)) = live_pods(&pods, "app=web").await {
                    seen.push((all, ready));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            seen
        }
    });
    server.ok(&["set", "image", "deploy/web", "app=registry.local/app:2"]);
    let out = server.ok(&["rollout", "status", "deploy/web", "--timeout=60s"]);
    assert!(out.ends_with("successfully rolled out\n"), "{out}");
    watching.store(false, Ordering::Relaxed);
    let seen = monitor.await.unwrap();
    assert!(seen.len() > 5, "the rollout was watched: {seen:?}");
    assert!(
        seen.iter().all(|(all, ready)| *all <= 4 && *ready >= 3),
        "pods (all, ready) during the rollout: {seen:?}"
    );
    assert!(seen.iter().any(|(all, _)| *all == 4), "it surged: {seen:?}");
    let history = server.ok(&["rollout", "history", "deploy/web"]);
    let revisions: Vec<&str> = history
        .lines()
        .skip(2)
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(revisions, ["1", "2"], "{history}");
    let described = server.ok(&["describe", "deploy", "web"]);
    for expected in [
        "Available      True    MinimumReplicasAvailable",
        "Progressing    True    NewReplicaSetAvailable",
        "ScalingReplicaSet",
        "deployment-controller  Scaled up replica set web-",
    ] {
        assert!(described.contains(expected), "{expected}: {described}");
    }

    // Undo: the first template comes back as revision 3.
    assert_eq!(
        server.ok(&["rollout", "undo", "deploy/web"]),
        "deployment.apps/web rolled back\n"
    );
    server.ok(&["rollout", "status", "deploy/web", "--timeout=60s"]);
    let image = server.ok(&[
        "get",
        "deploy",
        "web",
        "-o",
        "jsonpath={.spec.template.spec.containers[0].image} {.metadata.annotations.deployment\\.kubernetes\\.io/revision}",
    ]);
    assert_eq!(image, "registry.local/app:1 3");
    let sets = server.ok(&["get", "rs", "--no-headers"]);
    assert_eq!(sets.lines().count(), 2, "{sets}");

    // Scale up and down.
    server.ok(&["scale", "deploy/web", "--replicas=5"]);
    server.ok(&["rollout", "status", "deploy/web", "--timeout=60s"]);
    eventually(30, "five ready pods", || async {
        let (all, ready, _) = live_pods(&pods, "app=web").await?;
        (all == 5 && ready == 5).then_some(())
    })
    .await;
    server.ok(&["scale", "deploy/web", "--replicas=2"]);
    eventually(30, "two pods", || async {
        let (all, ready, _) = live_pods(&pods, "app=web").await?;
        (all == 2 && ready == 2).then_some(())
    })
    .await;
    eventually(30, "the deployment says 2/2", || async {
        let listed = server.ok(&["get", "deploy", "web", "--no-headers"]);
        (super::columns(&listed)[..4] == ["web", "2/2", "2", "2"]).then_some(())
    })
    .await;

    // A deleted pod is replaced.
    let victim = pods
        .list(&ListParams::default().labels("app=web"))
        .await
        .unwrap()
        .items[0]
        .metadata
        .name
        .clone()
        .unwrap();
    server.ok(&["delete", "pod", &victim, "--wait=false"]);
    eventually(30, "a replacement", || async {
        let list = pods
            .list(&ListParams::default().labels("app=web"))
            .await
            .ok()?;
        let replaced = list.items.iter().any(|p| {
            p.metadata.name.as_deref() != Some(&victim) && p.metadata.deletion_timestamp.is_none()
        });
        let (all, ready, _) = live_pods(&pods, "app=web").await?;
        (replaced && all == 2 && ready == 2).then_some(())
    })
    .await;

    // Deleting the Deployment takes its ReplicaSets and their pods.
    server.ok(&["delete", "deploy", "web"]);
    eventually(30, "no ReplicaSet and no pod left", || async {
        let sets = server.ok(&["get", "rs", "-o", "name"]);
        let left = pods.list(&ListParams::default()).await.ok()?.items.len();
        (sets.is_empty() && left == 0).then_some(())
    })
    .await;
    nodes.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreground_deletion_waits_for_dependents_and_orphan_deletion_keeps_them() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let (client, nodes) = simulated(
        &server,
        tug_sim::Config {
            count: 2,
            name_prefix: "node-".into(),
            ..tug_sim::Config::default()
        },
    )
    .await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    for name in ["fg", "orph"] {
        server.ok(&[
            "create",
            "deployment",
            name,
            "--image=registry.local/app:1",
            "--replicas=2",
        ]);
        server.ok(&[
            "rollout",
            "status",
            &format!("deploy/{name}"),
            "--timeout=60s",
        ]);
    }

    // Foreground: the Deployment stays, marked and with the collector's
    // finalizer, until its ReplicaSet and pods are gone (the pods take
    // their 30 s grace on the simulated nodes: long enough to look).
    server.ok(&[
        "delete",
        "deploy",
        "fg",
        "--cascade=foreground",
        "--wait=false",
    ]);
    let marked = server.ok(&[
        "get",
        "deploy",
        "fg",
        "-o",
        "jsonpath={.metadata.finalizers} {.metadata.deletionTimestamp}",
    ]);
    assert!(
        marked.starts_with("[\"foregroundDeletion\"] 20"),
        "{marked}"
    );
    eventually(
        20,
        "the ReplicaSet deleted in the foreground too",
        || async {
            let rs = server.ok(&[
                "get",
                "rs",
                "-l",
                "app=fg",
                "-o",
                "jsonpath={.items[*].metadata.finalizers}",
            ]);
            (rs == "[\"foregroundDeletion\"]").then_some(())
        },
    )
    .await;
    assert!(
        server
            .ok(&["get", "deploy", "fg", "-o", "name"])
            .contains("fg"),
        "still there while its pods terminate"
    );
    server.ok(&[
        "delete",
        "pods",
        "-l",
        "app=fg",
        "--grace-period=0",
        "--force",
    ]);
    eventually(30, "the Deployment gone after its dependents", || async {
        let left = server.kubectl(&["get", "deploy", "fg"]);
        let sets = server.ok(&["get", "rs", "-l", "app=fg", "-o", "name"]);
        (!left.status.success() && sets.is_empty()).then_some(())
    })
    .await;

    // Orphan: the ReplicaSet and pods stay, no longer owned.
    server.ok(&["delete", "deploy", "orph", "--cascade=orphan"]);
    let owners = eventually(30, "the ReplicaSet orphaned", || async {
        let out = server.ok(&[
            "get",
            "rs",
            "-l",
            "app=orph",
            "-o",
            "jsonpath={.items[0].metadata.name} {.items[0].metadata.ownerReferences}",
        ]);
        let (name, owners) = out.split_once(' ')?;
        (owners.is_empty() && !name.is_empty()).then(|| name.to_string())
    })
    .await;
    assert!(server.kubectl(&["get", "deploy", "orph"]).status.code() != Some(0));
    let (all, _, _) = live_pods(&pods, "app=orph").await.unwrap();
    assert_eq!(all, 2, "the orphaned ReplicaSet {owners} keeps its pods");
    nodes.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_nodes_pods_are_evicted_and_run_elsewhere() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(dir.path(), &["--node-monitor-grace-period", "3"]);
    let (client, nodes) = simulated(
        &server,
        tug_sim::Config {
            count: 3,
            name_prefix: "node-".into(),
            cpu: "4".into(),
            lease_interval: Duration::from_secs(1),
            ..tug_sim::Config::default()
        },
    )
    .await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    // The Deployment's pods tolerate an unreachable node for 2 s (the
    // DefaultTolerationSeconds admission would give them 300).
    let manifest = dir.path().join("web.yaml");
    let tolerating = DEPLOYMENT.replace(
        "      containers:",
        "      tolerations:\n      - {key: node.kubernetes.io/unreachable, operator: Exists, effect: NoExecute, tolerationSeconds: 2}\n      containers:",
    );
    std::fs::write(&manifest, tolerating).unwrap();
    server.ok(&["apply", "-f", manifest.to_str().unwrap()]);
    server.ok(&["rollout", "status", "deploy/web", "--timeout=60s"]);
    let (_, _, placed) = live_pods(&pods, "app=web").await.unwrap();
    assert_eq!(placed.len(), 3);
    let lost = placed[0].clone();
    // A StatefulSet's pod on the same node.
    let db = dir.path().join("db.yaml");
    std::fs::write(
        &db,
        format!(
            "apiVersion: apps/v1
kind: StatefulSet
metadata: {{name: db}}
spec:
  selector:
    matchLabels: {{app: db}}
  template:
    metadata:
      labels: {{app: db}}
    spec:
      nodeSelector: {{kubernetes.io/hostname: {lost}}}
      terminationGracePeriodSeconds: 1
      tolerations:
      - {{key: node.kubernetes.io/unreachable, operator: Exists, effect: NoExecute, tolerationSeconds: 2}}
      containers: [{{name: db, image: registry.local/db:1}}]
"
        ),
    )
    .unwrap();
    server.ok(&["apply", "-f", db.to_str().unwrap()]);
    server.ok(&["rollout", "status", "sts/db", "--timeout=60s"]);

    // Its kubelet falls silent: within grace (3 s) + a monitor period
    // (5 s) + tolerationSeconds (2 s) + slack, the node is Unknown and
    // tainted, and the pod that ran there runs elsewhere.
    nodes.stop_lease(&lost).await.unwrap();
    let started = std::time::Instant::now();
    let elsewhere = eventually(30, "three ready pods, none on the silent node", || async {
        let (all, ready, placed) = live_pods(&pods, "app=web").await?;
        (all == 3 && ready == 3 && !placed.contains(&lost)).then_some(placed)
    })
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "replaced after {:?}",
        started.elapsed()
    );
    assert_eq!(elsewhere.len(), 3);
    let node = server.ok(&[
        "get",
        "node",
        &lost,
        "-o",
        "jsonpath={.status.conditions[?(@.type==\"Ready\")].status} {.status.conditions[?(@.type==\"Ready\")].reason} {.spec.taints[*].key}",
    ]);
    assert!(
        node.starts_with("Unknown NodeStatusUnknown node.kubernetes.io/unreachable"),
        "{node}"
    );
    let effects = server.ok(&[
        "get",
        "node",
        &lost,
        "-o",
        "jsonpath={.spec.taints[*].effect}",
    ]);
    assert!(
        effects.contains("NoExecute") && effects.contains("NoSchedule"),
        "{effects}"
    );
    let events = server.ok(&[
        "get",
        "events",
        "--field-selector",
        "reason=TaintManagerEviction",
        "-o",
        "jsonpath={.items[*].message}",
    ]);
    assert!(
        events.contains("Marking for deletion Pod default/web-")
            && events.contains("Marking for deletion Pod default/db-0"),
        "{events}"
    );

    // The StatefulSet's pod is evicted but not made again while the
    // node may still run it: it stays, terminating, where it was.
    let db0 = eventually(30, "db-0 marked for deletion", || async {
        let pod = pods.get("db-0").await.ok()?;
        pod.metadata.deletion_timestamp.is_some().then_some(pod)
    })
    .await;
    assert_eq!(db0.spec.unwrap().node_name.as_deref(), Some(lost.as_str()));
    eventually(30, "the set's pod counted, not ready", || async {
        let listed = server.ok(&["get", "sts", "db", "--no-headers"]);
        (super::columns(&listed)[1] == "0/1").then_some(())
    })
    .await;
    let db = live_pods(&pods, "app=db").await.unwrap();
    assert_eq!(db.0, 0, "no second db pod while db-0 terminates");

    // The kubelet comes back: the node is Ready and untainted again, its
    // pod's deletion finishes and db-0 is made anew.
    nodes.resume_lease(&lost).await.unwrap();
    eventually(30, "a new db-0 running", || async {
        let pod = pods.get("db-0").await.ok()?;
        (pod.metadata.uid != db0.metadata.uid
            && pod.metadata.deletion_timestamp.is_none()
            && is_ready(&pod))
        .then_some(())
    })
    .await;
    eventually(30, "the node's taints gone", || async {
        let taints = server.ok(&["get", "node", &lost, "-o", "jsonpath={.spec.taints}"]);
        taints.is_empty().then_some(())
    })
    .await;
    nodes.shutdown().await;
}

#[test]
fn nodes_without_a_pod_cidr_get_one_from_the_cluster_cidr() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(dir.path(), &["--cluster-cidr", "10.99.0.0/16"]);
    for name in ["bare-0", "bare-1"] {
        let manifest = dir.path().join(format!("{name}.yaml"));
        std::fs::write(
            &manifest,
            format!("apiVersion: v1\nkind: Node\nmetadata:\n  name: {name}\n"),
        )
        .unwrap();
        server.ok(&["apply", "-f", manifest.to_str().unwrap()]);
    }
    let cidrs = super::until(20, "both nodes with a pod CIDR", || {
        let out = server.ok(&["get", "nodes", "-o", "jsonpath={.items[*].spec.podCIDR}"]);
        let mut cidrs: Vec<String> = out.split_whitespace().map(String::from).collect();
        cidrs.sort();
        (cidrs.len() == 2).then_some(cidrs)
    });
    assert_eq!(cidrs, ["10.99.0.0/24", "10.99.1.0/24"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_get_endpoint_slices_and_endpoints_and_namespaces_a_default_account() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let (client, nodes) = simulated(
        &server,
        tug_sim::Config {
            count: 2,
            name_prefix: "node-".into(),
            ..tug_sim::Config::default()
        },
    )
    .await;
    let manifest = dir.path().join("web.yaml");
    std::fs::write(
        &manifest,
        DEPLOYMENT.replace(
            "        resources:",
            "        ports: [{name: http, containerPort: 8080}]\n        resources:",
        ) + "---
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  selector: {app: web}
  ports: [{name: web, port: 80, targetPort: http}]
",
    )
    .unwrap();
    server.ok(&["apply", "-f", manifest.to_str().unwrap()]);
    server.ok(&["rollout", "status", "deploy/web", "--timeout=60s"]);
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let ips = |pods: &[Pod]| {
        let mut ips: Vec<String> = pods
            .iter()
            .filter_map(|p| p.status.as_ref()?.pod_ip.clone())
            .collect();
        ips.sort();
        ips
    };
    let running = pods
        .list(&ListParams::default().labels("app=web"))
        .await
        .unwrap()
        .items;
    let want: Vec<String> = ips(&running)
        .into_iter()
        .map(|ip| format!("{ip}:8080"))
        .collect();
    let endpoints = eventually(20, "the Endpoints of web", || async {
        let out = server.ok(&["get", "endpoints", "web", "--no-headers"]);
        let mut listed: Vec<String> = super::columns(&out)
            .get(1)?
            .split(',')
            .map(String::from)
            .collect();
        listed.sort();
        (listed == want).then_some(out)
    })
    .await;
    assert!(endpoints.starts_with("web "), "{endpoints}");
    let slice = server.ok(&[
        "get",
        "endpointslices",
        "-l",
        "kubernetes.io/service-name=web",
        "-o",
        "jsonpath={.items[0].ports[0].name}:{.items[0].ports[0].port} {.items[0].endpoints[*].conditions.ready} {.items[0].metadata.ownerReferences[0].kind}",
    ]);
    assert_eq!(slice, "web:8080 true true true Service");
    let described = server.ok(&["describe", "service", "web"]);
    assert!(
        described.contains("Endpoints:") && described.contains(":8080"),
        "{described}"
    );

    // A pod no longer ready: not ready in the slice, in notReadyAddresses.
    let first = running[0].metadata.name.clone().unwrap();
    nodes.set_ready("default", &first, false).await.unwrap();
    eventually(20, "one endpoint not ready", || async {
        let ready = server.ok(&[
            "get",
            "endpointslices",
            "-l",
            "kubernetes.io/service-name=web",
            "-o",
            "jsonpath={.items[0].endpoints[*].conditions.ready}",
        ]);
        let not_ready = server.ok(&[
            "get",
            "endpoints",
            "web",
            "-o",
            "jsonpath={.subsets[0].notReadyAddresses[*].targetRef.name}",
        ]);
        (ready.matches("false").count() == 1 && not_ready == first).then_some(())
    })
    .await;

    // Scaled to zero: an empty slice, no subsets.
    server.ok(&["scale", "deploy/web", "--replicas=0"]);
    eventually(40, "no endpoints", || async {
        let out = server.ok(&["get", "endpoints", "web", "-o", "jsonpath={.subsets}"]);
        let slice = server.ok(&[
            "get",
            "endpointslices",
            "-l",
            "kubernetes.io/service-name=web",
            "-o",
            "jsonpath={.items[*].endpoints[*].addresses}",
        ]);
        (out.is_empty() && slice.is_empty()).then_some(())
    })
    .await;
    // Deleted with its Service.
    server.ok(&["delete", "service", "web"]);
    eventually(20, "the Endpoints and slices gone", || async {
        let left = server.ok(&[
            "get",
            "endpoints,endpointslices",
            "-l",
            "app=web",
            "-o",
            "name",
        ]);
        let named = server.kubectl(&["get", "endpoints", "web"]);
        (left.is_empty() && !named.status.success()).then_some(())
    })
    .await;

    // Every namespace gets its default service account.
    server.ok(&["create", "namespace", "team-a"]);
    eventually(20, "default/team-a service account", || async {
        server
            .kubectl(&["get", "serviceaccount", "default", "-n", "team-a"])
            .status
            .success()
            .then_some(())
    })
    .await;
    nodes.shutdown().await;
}

const JOBS: &str = "apiVersion: batch/v1
kind: Job
metadata: {name: ok}
spec:
  completions: 3
  parallelism: 2
  template:
    metadata:
      annotations: {sim.tug.dev/succeed-after: '1'}
    spec:
      restartPolicy: Never
      containers: [{name: c, image: registry.local/app:1}]
---
apiVersion: batch/v1
kind: Job
metadata: {name: bad}
spec:
  backoffLimit: 1
  template:
    metadata:
      annotations: {sim.tug.dev/fail-after: '0'}
    spec:
      restartPolicy: Never
      containers: [{name: c, image: registry.local/app:1}]
---
apiVersion: batch/v1
kind: Job
metadata: {name: indexed}
spec:
  completions: 3
  parallelism: 3
  completionMode: Indexed
  template:
    metadata:
      annotations: {sim.tug.dev/succeed-after: '0'}
    spec:
      restartPolicy: Never
      containers: [{name: c, image: registry.local/app:1}]
---
apiVersion: batch/v1
kind: Job
metadata: {name: brief}
spec:
  ttlSecondsAfterFinished: 1
  template:
    metadata:
      annotations: {sim.tug.dev/succeed-after: '0'}
    spec:
      restartPolicy: Never
      containers: [{name: c, image: registry.local/app:1}]
---
apiVersion: batch/v1
kind: CronJob
metadata: {name: tick}
spec:
  schedule: '* * * * *'
  jobTemplate:
    spec:
      template:
        metadata:
          annotations: {sim.tug.dev/succeed-after: '0'}
        spec:
          restartPolicy: Never
          containers: [{name: c, image: registry.local/app:1}]
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_complete_or_fail_as_their_specs_say_and_cron_jobs_fire() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let (_client, nodes) = simulated(
        &server,
        tug_sim::Config {
            count: 2,
            name_prefix: "node-".into(),
            ..tug_sim::Config::default()
        },
    )
    .await;
    let manifest = dir.path().join("jobs.yaml");
    std::fs::write(&manifest, JOBS).unwrap();
    server.ok(&["apply", "-f", manifest.to_str().unwrap()]);
    let status = |job: &str| {
        server.ok(&[
            "get",
            "job",
            job,
            "-o",
            "jsonpath={.status.succeeded}/{.status.failed} {.status.conditions[*].type} {.status.conditions[*].reason}",
        ])
    };
    server.ok(&[
        "wait",
        "--for=condition=complete",
        "job/ok",
        "--timeout=60s",
    ]);
    assert_eq!(
        status("ok"),
        "3/ SuccessCriteriaMet Complete CompletionsReached CompletionsReached"
    );
    let listed = server.ok(&["get", "job", "ok", "--no-headers"]);
    assert_eq!(
        super::columns(&listed)[..3],
        ["ok", "Complete", "3/3"],
        "{listed}"
    );
    let finalizers = server.ok(&[
        "get",
        "pods",
        "-l",
        "job-name=ok",
        "-o",
        "jsonpath={.items[*].metadata.finalizers}",
    ]);
    assert!(
        finalizers.is_empty(),
        "counted pods keep no finalizer: {finalizers}"
    );
    let described = server.ok(&["describe", "job", "ok"]);
    assert_eq!(
        described
            .matches("job-controller  Created pod: ok-")
            .count(),
        3,
        "{described}"
    );
    assert!(described.contains("Normal  Completed"), "{described}");

    server.ok(&["wait", "--for=condition=failed", "job/bad", "--timeout=60s"]);
    assert_eq!(
        status("bad"),
        "/2 FailureTarget Failed BackoffLimitExceeded BackoffLimitExceeded"
    );
    let described = server.ok(&["describe", "job", "bad"]);
    assert!(
        described.contains("Warning  BackoffLimitExceeded")
            && described.contains("Job has reached the specified backoff limit"),
        "{described}"
    );

    server.ok(&[
        "wait",
        "--for=condition=complete",
        "job/indexed",
        "--timeout=60s",
    ]);
    let indexes = server.ok(&[
        "get",
        "job",
        "indexed",
        "-o",
        "jsonpath={.status.completedIndexes}",
    ]);
    assert_eq!(indexes, "0-2");
    let mut pod_indexes: Vec<String> = server
        .ok(&[
            "get",
            "pods",
            "-l",
            "job-name=indexed",
            "-o",
            "jsonpath={.items[*].metadata.annotations.batch\\.kubernetes\\.io/job-completion-index}",
        ])
        .split_whitespace()
        .map(String::from)
        .collect();
    pod_indexes.sort();
    assert_eq!(pod_indexes, ["0", "1", "2"]);

    // A finished Job with a TTL goes by itself, with its pods.
    eventually(30, "brief gone after its TTL", || async {
        let job = server.kubectl(&["get", "job", "brief"]);
        let pods = server.ok(&["get", "pods", "-l", "job-name=brief", "-o", "name"]);
        (!job.status.success() && pods.is_empty()).then_some(())
    })
    .await;

    // Deleting a Job takes its pods.
    server.ok(&["delete", "job", "ok"]);
    eventually(30, "the pods of ok gone", || async {
        server
            .ok(&["get", "pods", "-l", "job-name=ok", "-o", "name"])
            .is_empty()
            .then_some(())
    })
    .await;

    // The CronJob fires within the minute and its Job completes.
    let fired = eventually(75, "tick's first Job complete", || async {
        let out = server.ok(&[
            "get",
            "cronjob",
            "tick",
            "-o",
            "jsonpath={.status.lastScheduleTime} {.status.lastSuccessfulTime}",
        ]);
        let (scheduled, succeeded) = out.split_once(' ')?;
        (!scheduled.is_empty() && !succeeded.is_empty()).then(|| scheduled.to_string())
    })
    .await;
    assert!(fired.ends_with(":00Z"), "{fired}");
    let jobs = server.ok(&["get", "jobs", "-o", "jsonpath={.items[*].metadata.name}"]);
    assert!(
        jobs.split_whitespace().any(|j| j.starts_with("tick-")),
        "{jobs}"
    );
    let described = server.ok(&["describe", "cronjob", "tick"]);
    assert!(
        described.contains("cronjob-controller  Created job tick-"),
        "{described}"
    );
    nodes.shutdown().await;
}

/// Pods of `app=web` not being deleted, listed through kubectl.
fn live_web_pods(server: &Server) -> usize {
    server
        .ok(&[
            "get",
            "pods",
            "-l",
            "app=web",
            "-o",
            "jsonpath={range .items[*]}{.metadata.deletionTimestamp}|{end}",
        ])
        .split('|')
        .filter(|stamp| stamp.is_empty())
        .count()
        - 1
}

#[test]
fn scaling_survives_the_controller_manager_killed_midway() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path());
    server.ok(&[
        "create",
        "deployment",
        "web",
        "--image=registry.local/app:1",
        "--replicas=0",
    ]);
    // A kill point from the clock's nanoseconds: a different moment each run.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as usize;
    for (round, to) in [50, 0].into_iter().enumerate() {
        server.ok(&["scale", "deploy/web", &format!("--replicas={to}")]);
        // Killed (SIGKILL) at a random moment of the scaling, which takes
        // about this long or more: the delay picks the moment, it waits for
        // nothing.
        let moment = Duration::from_millis(((nanos >> (round * 8)) % 200) as u64);
        std::thread::sleep(moment);
        let live = live_web_pods(&server);
        eprintln!("round {round}: killed {moment:?} after the scale, {live} of {to} pods live");
        server = server.crash().start(dir.path());
        super::until(60, &format!("exactly {to} pods"), || {
            let listed = server.ok(&[
                "get",
                "rs",
                "-l",
                "app=web",
                "-o",
                "jsonpath={.items[0].status.replicas} {.items[0].status.observedGeneration} {.items[0].metadata.generation}",
            ]);
            let fields: Vec<&str> = listed.split(' ').collect();
            let settled = fields.len() == 3
                && fields[0].parse::<usize>().unwrap_or(0) == to
                && fields[1] == fields[2];
            (settled && live_web_pods(&server) == to).then_some(())
        });
    }
    let sets = server.ok(&["get", "rs", "-o", "name"]);
    assert_eq!(sets.lines().count(), 1, "one ReplicaSet: {sets}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_set_runs_one_pod_per_eligible_node_and_rolls() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let (client, plain) = simulated(
        &server,
        tug_sim::Config {
            count: 2,
            name_prefix: "plain-".into(),
            ..tug_sim::Config::default()
        },
    )
    .await;
    let tainted = tug_sim::SimNodes::start(
        client.clone(),
        tug_sim::Config {
            count: 1,
            name_prefix: "tainted-".into(),
            taints: vec![k8s_openapi::api::core::v1::Taint {
                key: "dedicated".into(),
                value: Some("db".into()),
                effect: "NoSchedule".into(),
                ..Default::default()
            }],
            ..tug_sim::Config::default()
        },
    )
    .await
    .unwrap();
    let manifest = dir.path().join("agent.yaml");
    std::fs::write(
        &manifest,
        "apiVersion: apps/v1
kind: DaemonSet
metadata: {name: agent}
spec:
  selector:
    matchLabels: {app: agent}
  template:
    metadata:
      labels: {app: agent}
    spec:
      terminationGracePeriodSeconds: 1
      containers: [{name: c, image: registry.local/agent:1}]
",
    )
    .unwrap();
    server.ok(&["apply", "-f", manifest.to_str().unwrap()]);
    let out = server.ok(&["rollout", "status", "ds/agent", "--timeout=60s"]);
    assert!(
        out.ends_with("daemon set \"agent\" successfully rolled out\n"),
        "{out}"
    );
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let (_, ready, mut placed) = live_pods(&pods, "app=agent").await.unwrap();
    placed.sort();
    assert_eq!(
        (ready, placed),
        (2, vec!["plain-0".to_string(), "plain-1".to_string()])
    );
    let listed = server.ok(&["get", "ds", "agent", "--no-headers"]);
    assert_eq!(
        super::columns(&listed)[..6],
        ["agent", "2", "2", "2", "2", "2"],
        "{listed}"
    );

    server.ok(&["set", "image", "ds/agent", "c=registry.local/agent:2"]);
    let out = server.ok(&["rollout", "status", "ds/agent", "--timeout=60s"]);
    assert!(out.ends_with("successfully rolled out\n"), "{out}");
    eventually(30, "both live pods ready on the new image", || async {
        let list = pods
            .list(&ListParams::default().labels("app=agent"))
            .await
            .ok()?;
        let live: Vec<&Pod> = list
            .items
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .collect();
        let updated = live.iter().all(|p| {
            p.spec
                .as_ref()
                .is_some_and(|s| s.containers[0].image.as_deref() == Some("registry.local/agent:2"))
        });
        (live.len() == 2 && updated && live.iter().all(|p| is_ready(p))).then_some(())
    })
    .await;
    let described = server.ok(&["describe", "ds", "agent"]);
    assert!(
        described.contains("daemonset-controller  Created pod: agent-"),
        "{described}"
    );
    // Each template is a ControllerRevision: history and undo.
    let history = server.ok(&["rollout", "history", "ds/agent"]);
    assert_eq!(
        history,
        "daemonset.apps/agent \nREVISION  CHANGE-CAUSE\n1         <none>\n2         <none>\n\n"
    );
    assert_eq!(
        server.ok(&["rollout", "undo", "ds/agent"]),
        "daemonset.apps/agent rolled back\n"
    );
    eventually(
        60,
        "both live pods ready on the first image again",
        || async {
            let list = pods
                .list(&ListParams::default().labels("app=agent"))
                .await
                .ok()?;
            let live: Vec<&Pod> = list
                .items
                .iter()
                .filter(|p| p.metadata.deletion_timestamp.is_none() && is_ready(p))
                .filter(|p| {
                    p.spec.as_ref().is_some_and(|s| {
                        s.containers[0].image.as_deref() == Some("registry.local/agent:1")
                    })
                })
                .collect();
            (live.len() == 2).then_some(())
        },
    )
    .await;
    let history = server.ok(&["rollout", "history", "ds/agent"]);
    assert!(
        history.ends_with("\n2         <none>\n3         <none>\n\n"),
        "{history}"
    );
    plain.shutdown().await;
    tainted.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replication_controller_keeps_its_replicas() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let (client, nodes) = simulated(
        &server,
        tug_sim::Config {
            count: 2,
            name_prefix: "node-".into(),
            ..tug_sim::Config::default()
        },
    )
    .await;
    let manifest = dir.path().join("rc.yaml");
    std::fs::write(
        &manifest,
        "apiVersion: v1
kind: ReplicationController
metadata: {name: legacy}
spec:
  replicas: 2
  selector: {app: legacy}
  template:
    metadata:
      labels: {app: legacy}
    spec:
      terminationGracePeriodSeconds: 1
      containers: [{name: c, image: registry.local/app:1}]
",
    )
    .unwrap();
    server.ok(&["apply", "-f", manifest.to_str().unwrap()]);
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    eventually(30, "two ready pods and the counts", || async {
        let (all, ready, _) = live_pods(&pods, "app=legacy").await?;
        let listed = server.ok(&["get", "rc", "legacy", "--no-headers"]);
        (all == 2 && ready == 2 && super::columns(&listed)[..4] == ["legacy", "2", "2", "2"])
            .then_some(())
    })
    .await;
    let owner = server.ok(&[
        "get",
        "pods",
        "-l",
        "app=legacy",
        "-o",
        "jsonpath={.items[0].metadata.ownerReferences[0].kind}",
    ]);
    assert_eq!(owner, "ReplicationController");
    server.ok(&["scale", "rc/legacy", "--replicas=3"]);
    eventually(30, "three ready pods", || async {
        let (all, ready, _) = live_pods(&pods, "app=legacy").await?;
        (all == 3 && ready == 3).then_some(())
    })
    .await;
    let described = server.ok(&["describe", "rc", "legacy"]);
    assert!(
        described.contains("replication-controller  Created pod: legacy-"),
        "{described}"
    );
    nodes.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disruption_budgets_hold_evictions_and_kubectl_drain() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let (client, nodes) = simulated(
        &server,
        tug_sim::Config {
            count: 2,
            ..tug_sim::Config::default()
        },
    )
    .await;
    let manifest = dir.path().join("web.yaml");
    std::fs::write(
        &manifest,
        DEPLOYMENT.replace("replicas: 3", "replicas: 2")
            + "---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: web
spec:
  minAvailable: 2
  selector:
    matchLabels: {app: web}
",
    )
    .unwrap();
    server.ok(&["apply", "-f", manifest.to_str().unwrap()]);
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let (_, _, placed) = eventually(30, "two web pods ready", || async {
        live_pods(&pods, "app=web")
            .await
            .filter(|(all, ready, _)| *all == 2 && *ready == 2)
    })
    .await;
    // The budget's status, as kubectl shows it.
    let budget = eventually(20, "the budget counting two healthy pods", || async {
        let line = server.ok(&["get", "pdb", "web", "--no-headers"]);
        let columns: Vec<String> = super::columns(&line)
            .iter()
            .map(|c| c.to_string())
            .collect();
        (columns.get(1).map(String::as_str) == Some("2")).then_some(columns)
    })
    .await;
    assert_eq!(&budget[1..4], ["2", "N/A", "0"], "{budget:?}");
    let status = server.ok(&[
        "get",
        "pdb",
        "web",
        "-o",
        "jsonpath={.status.currentHealthy} {.status.desiredHealthy} {.status.expectedPods} {.status.conditions[0].reason}",
    ]);
    assert_eq!(status, "2 2 2 InsufficientPods");

    // kubectl drain cordons the node; its eviction is refused with 429
    // (which kubectl retries every 5 s) and the budget's reason, until it
    // gives up.
    let node = placed[0].clone();
    let refused = server.fails(&["drain", &node, "--ignore-daemonsets", "--timeout=3s"]);
    assert!(
        refused.contains("(will retry after 5s): Cannot evict pod as it would violate the pod's disruption budget.")
            && refused.contains("global timeout reached: 3s"),
        "{refused}"
    );
    let cordoned = server.ok(&["get", "node", &node, "--no-headers"]);
    assert!(cordoned.contains("SchedulingDisabled"), "{cordoned}");

    // One may be unavailable now: the drain evicts the node's pod, and
    // the Deployment runs it again on the other node.
    server.ok(&[
        "patch",
        "pdb",
        "web",
        "--type=merge",
        "-p",
        r#"{"spec": {"minAvailable": null, "maxUnavailable": 1}}"#,
    ]);
    eventually(20, "the budget allowing one disruption", || async {
        let allowed = server.ok(&[
            "get",
            "pdb",
            "web",
            "-o",
            "jsonpath={.status.disruptionsAllowed}",
        ]);
        (allowed == "1").then_some(())
    })
    .await;
    let drained = server.ok(&["drain", &node, "--ignore-daemonsets", "--timeout=60s"]);
    assert!(
        drained.contains(&format!("node/{node} drained")),
        "{drained}"
    );
    let (_, _, placed) = eventually(30, "both pods ready on the other node", || async {
        live_pods(&pods, "app=web")
            .await
            .filter(|(all, ready, nodes)| *all == 2 && *ready == 2 && !nodes.contains(&node))
    })
    .await;
    assert!(placed.iter().all(|n| *n != node), "{placed:?}");
    nodes.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_failure_policies_fail_or_ignore_as_their_rules_say() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let (client, nodes) = simulated(&server, tug_sim::Config::default()).await;
    // Simulated pods that fail exit with code 1.
    let job = |name: &str, backoff: u32, action: &str| {
        format!(
            "apiVersion: batch/v1
kind: Job
metadata: {{name: {name}}}
spec:
  backoffLimit: {backoff}
  podFailurePolicy:
    rules:
    - action: {action}
      onExitCodes: {{operator: In, values: [1]}}
  template:
    metadata:
      annotations: {{sim.tug.dev/fail-after: '0'}}
    spec:
      restartPolicy: Never
      containers: [{{name: c, image: registry.local/app:1}}]
"
        )
    };
    let manifest = dir.path().join("jobs.yaml");
    std::fs::write(
        &manifest,
        job("fatal", 6, "FailJob") + "---\n" + &job("tolerant", 0, "Ignore"),
    )
    .unwrap();
    server.ok(&["apply", "-f", manifest.to_str().unwrap()]);

    // FailJob: the first failure ends the Job, whatever its backoffLimit.
    server.ok(&[
        "wait",
        "--for=condition=failed",
        "job/fatal",
        "--timeout=60s",
    ]);
    let status = server.ok(&[
        "get",
        "job",
        "fatal",
        "-o",
        "jsonpath={.status.failed} {.status.conditions[?(@.type==\"Failed\")].reason}",
    ]);
    assert_eq!(status, "1 PodFailurePolicy");
    let message = server.ok(&[
        "get",
        "job",
        "fatal",
        "-o",
        "jsonpath={.status.conditions[?(@.type==\"Failed\")].message}",
    ]);
    assert!(
        message.starts_with("Container c for pod default/fatal-")
            && message.ends_with(" failed with exit code 1 matching FailJob rule at index 0"),
        "{message}"
    );

    // Ignore: failures do not count, so a backoffLimit of 0 is never
    // reached and failed pods are replaced.
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    eventually(60, "three tolerant pods failed", || async {
        let list = pods
            .list(&ListParams::default().labels("job-name=tolerant"))
            .await
            .ok()?;
        let failed = list
            .items
            .iter()
            .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Failed"))
            .count();
        (failed >= 3).then_some(())
    })
    .await;
    let status = server.ok(&[
        "get",
        "job",
        "tolerant",
        "-o",
        "jsonpath={.status.failed}/{.status.conditions[*].type}",
    ]);
    assert!(status == "/" || status == "0/", "{status}");
    server.ok(&["delete", "job", "tolerant", "fatal"]);
    nodes.shutdown().await;
}

/// The ready pods of the StatefulSet `web`: name → (image, revision label).
async fn set_pods(pods: &Api<Pod>) -> Option<std::collections::BTreeMap<String, (String, String)>> {
    let list = pods
        .list(&ListParams::default().labels("app=web"))
        .await
        .ok()?;
    list.items
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none() && is_ready(p))
        .map(|p| {
            let image = p.spec.as_ref()?.containers[0].image.clone()?;
            let revision = p
                .metadata
                .labels
                .as_ref()?
                .get("controller-revision-hash")?
                .clone();
            Some((p.metadata.name.clone()?, (image, revision)))
        })
        .collect::<Option<_>>()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stateful_set_makes_named_pods_in_order_rolls_from_the_top_and_keeps_claims() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let (client, nodes) = simulated(
        &server,
        tug_sim::Config {
            count: 2,
            ready_delay: Duration::from_secs(1),
            ..tug_sim::Config::default()
        },
    )
    .await;
    let manifest = dir.path().join("web.yaml");
    std::fs::write(
        &manifest,
        "apiVersion: v1
kind: Service
metadata: {name: nginx}
spec:
  clusterIP: None
  selector: {app: web}
  ports: [{port: 80}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: web}
spec:
  serviceName: nginx
  replicas: 3
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: c
        image: registry.local/web:1
        volumeMounts: [{name: www, mountPath: /usr/share/nginx/html}]
  volumeClaimTemplates:
  - metadata: {name: www}
    spec:
      accessModes: [ReadWriteOnce]
      resources:
        requests: {storage: 1Gi}
",
    )
    .unwrap();
    server.ok(&["apply", "-f", manifest.to_str().unwrap()]);
    let out = server.ok(&["rollout", "status", "sts/web", "--timeout=60s"]);
    assert!(
        out.ends_with("partitioned roll out complete: 3 new pods have been updated...\n"),
        "{out}"
    );
    let listed = server.ok(&["get", "sts", "web", "--no-headers"]);
    assert_eq!(super::columns(&listed)[..2], ["web", "3/3"], "{listed}");

    // Stable names, identity labels, hostnames under the Service, one
    // claim each; each pod made only once the one before was ready (a
    // second after it was made, here).
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let mut made = Vec::new();
    for ordinal in 0..3 {
        let name = format!("web-{ordinal}");
        let pod = pods.get(&name).await.unwrap();
        let labels = pod.metadata.labels.clone().unwrap();
        assert_eq!(labels["statefulset.kubernetes.io/pod-name"], name);
        assert_eq!(labels["apps.kubernetes.io/pod-index"], ordinal.to_string());
        let spec = pod.spec.clone().unwrap();
        assert_eq!(
            (spec.hostname.as_deref(), spec.subdomain.as_deref()),
            (Some(name.as_str()), Some("nginx"))
        );
        let claim = spec
            .volumes
            .iter()
            .flatten()
            .find(|v| v.name == "www")
            .unwrap();
        assert_eq!(
            claim.persistent_volume_claim.as_ref().unwrap().claim_name,
            format!("www-web-{ordinal}")
        );
        made.push(pod.metadata.creation_timestamp.unwrap().0);
    }
    assert!(
        made[0] < made[1] && made[1] < made[2],
        "made in order, each after the last was ready: {made:?}"
    );
    let claims = server.ok(&["get", "pvc", "-o", "name"]);
    assert_eq!(
        claims,
        "persistentvolumeclaim/www-web-0\npersistentvolumeclaim/www-web-1\npersistentvolumeclaim/www-web-2\n"
    );
    let events = server.ok(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.kind=StatefulSet",
        "-o",
        "custom-columns=R:.reason,M:.message",
        "--no-headers",
    ]);
    assert!(
        events.contains("create Pod web-0 in StatefulSet web successful"),
        "{events}"
    );
    assert!(
        events.contains("create Claim www-web-0 Pod web-0 in StatefulSet web success"),
        "{events}"
    );

    // A rolling update goes from the highest ordinal down; the history
    // has both templates and undo brings the first back.
    server.ok(&["set", "image", "sts/web", "c=registry.local/web:2"]);
    let out = server.ok(&["rollout", "status", "sts/web", "--timeout=60s"]);
    assert!(
        out.ends_with("partitioned roll out complete: 3 new pods have been updated...\n"),
        "{out}"
    );
    let status = || async {
        let sets: Api<k8s_openapi::api::apps::v1::StatefulSet> =
            Api::namespaced(client.clone(), "default");
        sets.get("web").await.unwrap().status.unwrap()
    };
    let updated = eventually(30, "the update revision current", || async {
        let s = status().await;
        (s.current_revision == s.update_revision && s.current_replicas == Some(3))
            .then_some(s.update_revision)
    })
    .await
    .unwrap();
    let now = set_pods(&pods).await.unwrap();
    assert!(
        now.values()
            .all(|(image, rev)| image == "registry.local/web:2" && *rev == updated),
        "{now:?}"
    );
    let mut made = Vec::new();
    for ordinal in 0..3 {
        made.push(
            pods.get(&format!("web-{ordinal}"))
                .await
                .unwrap()
                .metadata
                .creation_timestamp
                .unwrap()
                .0,
        );
    }
    assert!(
        made[2] < made[1] && made[1] < made[0],
        "replaced from the top: {made:?}"
    );
    let history = server.ok(&["rollout", "history", "sts/web"]);
    assert_eq!(
        history,
        "statefulset.apps/web \nREVISION  CHANGE-CAUSE\n1         <none>\n2         <none>\n\n"
    );
    let revisions = server.ok(&["get", "controllerrevisions", "--no-headers"]);
    assert_eq!(revisions.lines().count(), 2, "{revisions}");
    assert!(
        revisions
            .lines()
            .all(|l| super::columns(l)[1] == "statefulset.apps/web"),
        "{revisions}"
    );
    assert_eq!(
        server.ok(&["rollout", "undo", "sts/web"]),
        "statefulset.apps/web rolled back\n"
    );
    eventually(60, "every pod back on the first image", || async {
        let now = set_pods(&pods).await?;
        (now.len() == 3
            && now
                .values()
                .all(|(image, _)| image == "registry.local/web:1"))
        .then_some(())
    })
    .await;
    let history = server.ok(&["rollout", "history", "sts/web"]);
    assert!(
        history.contains("\n2         <none>\n3         <none>\n"),
        "undo renumbers the first revision: {history}"
    );
    assert_eq!(
        server.ok(&["rollout", "undo", "sts/web", "--to-revision=3"]),
        "statefulset.apps/web skipped rollback (current template already matches revision 3)\n"
    );

    // With a partition of 2 only web-2 moves.
    server.ok(&[
        "patch",
        "sts",
        "web",
        "-p",
        r#"{"spec":{"updateStrategy":{"rollingUpdate":{"partition":2}}}}"#,
    ]);
    server.ok(&["set", "image", "sts/web", "c=registry.local/web:3"]);
    let out = server.ok(&["rollout", "status", "sts/web", "--timeout=60s"]);
    assert!(
        out.ends_with("partitioned roll out complete: 1 new pods have been updated...\n"),
        "{out}"
    );
    let now = set_pods(&pods).await.unwrap();
    let images: Vec<&str> = now.values().map(|(image, _)| image.as_str()).collect();
    assert_eq!(
        images,
        [
            "registry.local/web:1",
            "registry.local/web:1",
            "registry.local/web:3"
        ]
    );

    // Scaling down removes the highest ordinals; the claims stay.
    server.ok(&["scale", "sts", "web", "--replicas=1"]);
    eventually(60, "only web-0 left", || async {
        let left = live_pods(&pods, "app=web").await?;
        (left.0 == 1
            && pods
                .get_opt("web-0")
                .await
                .ok()??
                .metadata
                .deletion_timestamp
                .is_none())
        .then_some(())
    })
    .await;
    eventually(30, "READY 1/1 once the others are gone", || async {
        let listed = server.ok(&["get", "sts", "web", "--no-headers"]);
        (super::columns(&listed)[1] == "1/1").then_some(())
    })
    .await;
    assert_eq!(
        server.ok(&["get", "pvc", "--no-headers"]).lines().count(),
        3
    );

    // A budget with maxUnavailable scales with the set.
    server.ok(&[
        "create",
        "pdb",
        "web",
        "--selector=app=web",
        "--max-unavailable=1",
    ]);
    eventually(30, "the budget counting the set's scale", || async {
        let status = server.ok(&[
            "get",
            "pdb",
            "web",
            "-o",
            "jsonpath={.status.expectedPods} {.status.disruptionsAllowed}",
        ]);
        (status == "1 1").then_some(())
    })
    .await;

    // Deleting the set takes its pods and history, not the claims.
    server.ok(&["delete", "sts", "web"]);
    eventually(60, "the pods and revisions gone", || async {
        let left = live_pods(&pods, "app=web").await?.0;
        let revisions = server.ok(&["get", "controllerrevisions", "-o", "name"]);
        (left == 0 && revisions.is_empty()).then_some(())
    })
    .await;
    assert_eq!(
        server.ok(&["get", "pvc", "--no-headers"]).lines().count(),
        3
    );

    // A set whose claims go with its pods (whenScaled) and with it
    // (whenDeleted).
    let cache = dir.path().join("cache.yaml");
    std::fs::write(
        &cache,
        "apiVersion: apps/v1
kind: StatefulSet
metadata: {name: cache}
spec:
  replicas: 2
  persistentVolumeClaimRetentionPolicy: {whenDeleted: Delete, whenScaled: Delete}
  selector:
    matchLabels: {app: cache}
  template:
    metadata:
      labels: {app: cache}
    spec:
      terminationGracePeriodSeconds: 1
      containers: [{name: c, image: registry.local/cache:1}]
  volumeClaimTemplates:
  - metadata: {name: data}
    spec:
      accessModes: [ReadWriteOnce]
      resources:
        requests: {storage: 1Gi}
",
    )
    .unwrap();
    server.ok(&["apply", "-f", cache.to_str().unwrap()]);
    server.ok(&["rollout", "status", "sts/cache", "--timeout=60s"]);
    let claims = |server: &Server| server.ok(&["get", "pvc", "-l", "app=cache", "-o", "name"]);
    assert_eq!(
        claims(&server),
        "persistentvolumeclaim/data-cache-0\npersistentvolumeclaim/data-cache-1\n"
    );
    server.ok(&["scale", "sts", "cache", "--replicas=1"]);
    eventually(60, "the scaled-away pod's claim gone", || async {
        (claims(&server) == "persistentvolumeclaim/data-cache-0\n").then_some(())
    })
    .await;
    server.ok(&["delete", "sts", "cache"]);
    eventually(60, "the set's last claim gone with it", || async {
        claims(&server).is_empty().then_some(())
    })
    .await;
    nodes.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quotas_and_limit_ranges_bound_what_a_namespace_runs() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let (_client, nodes) = simulated(&server, tug_sim::Config::default()).await;
    server.ok(&["create", "namespace", "team"]);
    server.ok(&[
        "create",
        "quota",
        "compute",
        "-n",
        "team",
        "--hard=pods=2,requests.cpu=1,limits.memory=1Gi",
    ]);
    let used = |name: &str| {
        server.ok(&[
            "get",
            "quota",
            "compute",
            "-n",
            "team",
            "-o",
            &format!("jsonpath={{.status.used.{name}}}"),
        ])
    };
    eventually(30, "the quota's usage counted", || async {
        (used("pods") == "0").then_some(())
    })
    .await;

    // A quota on cpu and memory wants every container to state them.
    let refused = server.fails(&["run", "a", "-n", "team", "--image=registry.local/app:1"]);
    assert_eq!(
        refused,
        "Error from server (Forbidden): pods \"a\" is forbidden: failed quota: compute: must specify limits.memory for: a; requests.cpu for: a\n"
    );

    // A LimitRange gives them defaults, and bounds them.
    let ranges = dir.path().join("limits.yaml");
    std::fs::write(
        &ranges,
        "apiVersion: v1
kind: LimitRange
metadata: {name: limits, namespace: team}
spec:
  limits:
  - type: Container
    default: {cpu: 500m, memory: 256Mi}
    max: {cpu: '1'}
",
    )
    .unwrap();
    server.ok(&["apply", "-f", ranges.to_str().unwrap()]);
    let range = server.ok(&[
        "get",
        "limitrange",
        "limits",
        "-n",
        "team",
        "-o",
        "jsonpath={.spec.limits[0].defaultRequest}",
    ]);
    assert_eq!(
        range, r#"{"cpu":"500m","memory":"256Mi"}"#,
        "default requests from the default limits"
    );
    server.ok(&["run", "a", "-n", "team", "--image=registry.local/app:1"]);
    let a = server.ok(&["get", "pod", "a", "-n", "team", "-o", "jsonpath={.spec.containers[0].resources} {.metadata.annotations.kubernetes\\.io/limit-ranger} {.status.qosClass}"]);
    assert_eq!(
        a,
        r#"{"limits":{"cpu":"500m","memory":"256Mi"},"requests":{"cpu":"500m","memory":"256Mi"}} LimitRanger plugin set: cpu, memory request for container a; cpu, memory limit for container a Guaranteed"#
    );
    server.ok(&["run", "b", "-n", "team", "--image=registry.local/app:1"]);
    let refused = server.fails(&["run", "c", "-n", "team", "--image=registry.local/app:1"]);
    assert_eq!(
        refused,
        "Error from server (Forbidden): pods \"c\" is forbidden: exceeded quota: compute, requested: pods=1,requests.cpu=500m, used: pods=2,requests.cpu=1, limited: pods=2,requests.cpu=1\n"
    );
    let big = dir.path().join("big.yaml");
    std::fs::write(
        &big,
        "apiVersion: v1
kind: Pod
metadata: {name: big, namespace: team}
spec:
  containers:
  - name: c
    image: registry.local/app:1
    resources:
      limits: {cpu: '2', memory: 128Mi}
",
    )
    .unwrap();
    let refused = server.fails(&["apply", "-f", big.to_str().unwrap()]);
    assert!(
        refused.contains(
            "pods \"big\" is forbidden: maximum cpu usage per Container is 1, but limit is 2"
        ),
        "{refused}"
    );
    let described = server.ok(&["describe", "quota", "compute", "-n", "team"]);
    let rows: Vec<Vec<&str>> = described
        .lines()
        .skip_while(|l| !l.starts_with("Resource"))
        .skip(2)
        .map(super::columns)
        .collect();
    assert_eq!(
        rows,
        [
            ["limits.memory", "512Mi", "1Gi"],
            ["pods", "2", "2"],
            ["requests.cpu", "1", "1"]
        ],
        "{described}"
    );

    // A pod gone gives its share back.
    server.ok(&["delete", "pod", "a", "-n", "team", "--grace-period=1"]);
    eventually(30, "the deleted pod no longer counted", || async {
        (used("pods") == "1").then_some(())
    })
    .await;
    server.ok(&["run", "c", "-n", "team", "--image=registry.local/app:1"]);
    nodes.shutdown().await;
}
