//! The agent's Node: registered with what the machine has, its Lease
//! renewed every 10 s, its conditions posted when they change (and every
//! minute), and the pod network configured once it has a pod CIDR.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use tug_controllers::events::{self, Recorder};

use crate::Config;
use crate::cri::Runtime;
use crate::pressure::{NodePressure, Signal};

const LEASE_SECONDS: i64 = 40;
const LEASE_RENEW: Duration = Duration::from_secs(10);
/// How often the node's status is checked, and at most how long between
/// two posts of it.
const STATUS_CHECK: Duration = Duration::from_secs(10);
const STATUS_REPORT: Duration = Duration::from_secs(60);
/// The version the agent reports, as tug's API server's.
pub const KUBELET_VERSION: &str = "v1.33.0+tug1";

/// What the machine is, read once at start.
#[derive(Clone, Debug)]
pub struct Machine {
    pub cpus: usize,
    pub memory_ki: u64,
    pub storage_bytes: u64,
    pub kernel: String,
    pub os_image: String,
    pub machine_id: String,
    pub boot_id: String,
}

fn read_trimmed(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

impl Machine {
    /// The machine's memory, from /proc/meminfo.
    pub fn memory_bytes() -> u64 {
        read_trimmed("/proc/meminfo")
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap_or(0)
            * 1024
    }

    pub fn read(data_dir: &Path) -> Machine {
        let memory_ki = Machine::memory_bytes() / 1024;
        let storage_bytes = rustix::fs::statvfs(data_dir)
            .map(|s| s.f_blocks * s.f_frsize)
            .unwrap_or(0);
        let os_image = read_trimmed("/etc/os-release")
            .lines()
            .find_map(|l| l.strip_prefix("PRETTY_NAME="))
            .map(|v| v.trim_matches('"').to_string())
            .unwrap_or_else(|| "Linux".into());
        Machine {
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            memory_ki,
            storage_bytes,
            kernel: read_trimmed("/proc/sys/kernel/osrelease"),
            os_image,
            machine_id: read_trimmed("/etc/machine-id"),
            boot_id: read_trimmed("/proc/sys/kernel/random/boot_id"),
        }
    }
}

/// This machine's address as other machines see it: the source address
/// of a route out (no packet is sent), or loopback without one.
pub fn default_ip() -> std::net::IpAddr {
    std::net::UdpSocket::bind("0.0.0.0:0")
        .and_then(|socket| {
            socket.connect("10.255.255.255:9")?;
            socket.local_addr()
        })
        .map(|address| address.ip())
        .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST))
}

/// The conditions kubelet posts: (type, status, reason, message), the
/// pressures as `pressure` has them.
fn condition_states(
    not_ready: Option<&str>,
    pressure: &BTreeSet<&str>,
) -> [(&'static str, &'static str, &'static str, String); 4] {
    let under = |kind| pressure.contains(kind);
    [
        if under("MemoryPressure") {
            (
                "MemoryPressure",
                "True",
                "KubeletHasInsufficientMemory",
                "kubelet has insufficient memory available".into(),
            )
        } else {
            (
                "MemoryPressure",
                "False",
                "KubeletHasSufficientMemory",
                "kubelet has sufficient memory available".into(),
            )
        },
        if under("DiskPressure") {
            (
                "DiskPressure",
                "True",
                "KubeletHasDiskPressure",
                "kubelet has disk pressure".into(),
            )
        } else {
            (
                "DiskPressure",
                "False",
                "KubeletHasNoDiskPressure",
                "kubelet has no disk pressure".into(),
            )
        },
        if under("PIDPressure") {
            (
                "PIDPressure",
                "True",
                "KubeletHasInsufficientPID",
                "kubelet has insufficient PID available".into(),
            )
        } else {
            (
                "PIDPressure",
                "False",
                "KubeletHasSufficientPID",
                "kubelet has sufficient PID available".into(),
            )
        },
        match not_ready {
            None => (
                "Ready",
                "True",
                "KubeletReady",
                "kubelet is posting ready status".into(),
            ),
            Some(message) => ("Ready", "False", "KubeletNotReady", message.to_string()),
        },
    ]
}

fn conditions(
    not_ready: Option<&str>,
    pressure: &BTreeSet<&str>,
    now: &str,
    previous: &Value,
) -> Value {
    let listed: Vec<Value> = condition_states(not_ready, pressure)
        .into_iter()
        .map(|(kind, status, reason, message)| {
            let since = previous["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|c| c["type"] == kind && c["status"] == status)
                .and_then(|c| c["lastTransitionTime"].as_str())
                .unwrap_or(now)
                .to_string();
            json!({
                "type": kind, "status": status, "reason": reason, "message": message,
                "lastHeartbeatTime": now, "lastTransitionTime": since,
            })
        })
        .collect();
    json!(listed)
}

/// The events kubelet records when its node's conditions change, as
/// `NodeHasSufficientMemory`, `NodeHasDiskPressure`, `NodeReady`: each
/// condition whose status differs from `previous`'s (or that it lacks).
fn transition_reasons(conditions: &Value, previous: &Value) -> Vec<&'static str> {
    let mut reasons = Vec::new();
    for condition in conditions.as_array().into_iter().flatten() {
        let kind = condition["type"].as_str().unwrap_or_default();
        let status = condition["status"].as_str().unwrap_or_default();
        let before = previous["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["type"] == kind)
            .and_then(|c| c["status"].as_str());
        if before == Some(status) {
            continue;
        }
        let reason = match (kind, status == "True") {
            ("MemoryPressure", false) => "NodeHasSufficientMemory",
            ("MemoryPressure", true) => "NodeHasInsufficientMemory",
            ("DiskPressure", false) => "NodeHasNoDiskPressure",
            ("DiskPressure", true) => "NodeHasDiskPressure",
            ("PIDPressure", false) => "NodeHasSufficientPID",
            ("PIDPressure", true) => "NodeHasInsufficientPID",
            ("Ready", true) => "NodeReady",
            ("Ready", false) => "NodeNotReady",
            _ => continue,
        };
        reasons.push(reason);
    }
    reasons
}

/// The Node as the agent registers it.
pub fn object(config: &Config, machine: &Machine, runtime_version: &str) -> Value {
    let arch = crate::images::go_arch();
    let mut labels = json!({
        "kubernetes.io/hostname": config.node_name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": arch,
        "beta.kubernetes.io/os": "linux",
        "beta.kubernetes.io/arch": arch,
    });
    if config.control_plane {
        labels["node-role.kubernetes.io/control-plane"] = json!("true");
    }
    let memory = machine.memory_ki * 1024;
    let storage = machine.storage_bytes / 1024 * 1024;
    let capacity = json!({
        "cpu": machine.cpus.to_string(),
        "memory": bytes(memory),
        "pods": "110",
        "ephemeral-storage": bytes(storage),
    });
    // As kubelet: allocatable is what is left once the hard eviction
    // thresholds are taken off (no resources are reserved here).
    let reserved = |signal: Signal, capacity: u64| {
        config
            .eviction_hard
            .iter()
            .find(|t| t.signal == signal)
            .map_or(0, |t| t.amount(capacity))
    };
    let mut allocatable = capacity.clone();
    allocatable["memory"] = json!(bytes(
        memory.saturating_sub(reserved(Signal::MemoryAvailable, memory))
    ));
    allocatable["ephemeral-storage"] = json!(bytes(
        storage.saturating_sub(reserved(Signal::NodefsAvailable, storage))
    ));
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": config.node_name, "labels": labels},
        "spec": {},
        "status": {
            "capacity": capacity,
            "allocatable": allocatable,
            "conditions": conditions(Some("container runtime network not ready: the node has no pod CIDR yet"), &BTreeSet::new(), &now(), &Value::Null),
            "addresses": [
                {"type": "InternalIP", "address": config.node_ip.to_string()},
                {"type": "Hostname", "address": config.node_name},
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": config.port}},
            "nodeInfo": {
                "machineID": machine.machine_id,
                "systemUUID": machine.machine_id,
                "bootID": machine.boot_id,
                "kernelVersion": machine.kernel,
                "osImage": machine.os_image,
                "containerRuntimeVersion": runtime_version,
                "kubeletVersion": KUBELET_VERSION,
                "kubeProxyVersion": "",
                "operatingSystem": "linux",
                "architecture": arch,
            },
        },
    })
}

/// A byte count as Kubernetes writes a quantity: in Ki when it is whole
/// kibibytes.
fn bytes(count: u64) -> String {
    if count.is_multiple_of(1024) {
        format!("{}Ki", count / 1024)
    } else {
        count.to_string()
    }
}

fn now() -> String {
    tug_api::format::timestamp(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64),
    )
}

fn micro_now() -> String {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let whole = tug_api::format::timestamp(since.as_secs() as i64);
    format!(
        "{}.{:06}Z",
        whole.trim_end_matches('Z'),
        since.subsec_micros()
    )
}

/// Registers the Node (or takes over the one there, updating its
/// status) and its Lease.
pub async fn register(client: &Client, node: &Value) -> anyhow::Result<Node> {
    let nodes: Api<Node> = Api::all(client.clone());
    let name = node["metadata"]["name"].as_str().unwrap_or_default();
    let object: Node = serde_json::from_value(node.clone())?;
    let registered = match nodes.create(&PostParams::default(), &object).await {
        Ok(node) => node,
        Err(kube::Error::Api(status)) if status.code == 409 => {
            let labels = json!({"metadata": {"labels": node["metadata"]["labels"]}});
            nodes
                .patch(name, &PatchParams::default(), &Patch::Merge(labels))
                .await
                .with_context(|| format!("updating node {name}"))?;
            // Its conditions stay as they were until the status loop
            // posts the runtime's (a restarted agent's node stays Ready).
            let mut status = json!({"status": node["status"]});
            if let Some(status) = status["status"].as_object_mut() {
                status.remove("conditions");
            }
            nodes
                .patch_status(name, &PatchParams::default(), &Patch::Merge(status))
                .await
                .with_context(|| format!("updating node {name}"))?
        }
        Err(err) => return Err(err).with_context(|| format!("registering node {name}")),
    };
    Ok(registered)
}

/// Renews the node's Lease every 10 s until `shutdown`.
pub async fn lease_loop(
    client: Client,
    name: String,
    node_uid: String,
    shutdown: CancellationToken,
) {
    let leases: Api<Lease> = Api::namespaced(client, "kube-node-lease");
    loop {
        let lease = json!({
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {
                "name": name,
                "namespace": "kube-node-lease",
                "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": name, "uid": node_uid}],
            },
            "spec": {"holderIdentity": name, "leaseDurationSeconds": LEASE_SECONDS, "renewTime": micro_now()},
        });
        let result = match leases
            .patch(&name, &PatchParams::default(), &Patch::Merge(&lease))
            .await
        {
            Err(kube::Error::Api(status)) if status.code == 404 => {
                match serde_json::from_value::<Lease>(lease) {
                    Ok(lease) => leases
                        .create(&PostParams::default(), &lease)
                        .await
                        .map(|_| ()),
                    Err(err) => {
                        tracing::error!(error = %err, "the node's Lease");
                        Ok(())
                    }
                }
            }
            other => other.map(|_| ()),
        };
        if let Err(err) = result {
            tracing::warn!(error = %err, "renewing the node's Lease");
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(LEASE_RENEW) => {}
        }
    }
}

/// How many images the node's status lists at most, and names per image
/// (kubelet's nodeStatusMaxImages and MaxNamesPerImageInNodeStatus).
const STATUS_IMAGES: usize = 50;
const NAMES_PER_IMAGE: usize = 5;

/// The node's images as its status lists them: largest first, each with
/// its digests and tags.
pub fn images_status(images: &[k8s_cri::v1::Image]) -> Value {
    let mut images: Vec<&k8s_cri::v1::Image> = images.iter().collect();
    images.sort_by_key(|image| std::cmp::Reverse(image.size));
    let listed: Vec<Value> = images
        .into_iter()
        .take(STATUS_IMAGES)
        .map(|image| {
            let names: Vec<&String> = image
                .repo_digests
                .iter()
                .chain(&image.repo_tags)
                .take(NAMES_PER_IMAGE)
                .collect();
            json!({"names": names, "sizeBytes": image.size})
        })
        .collect();
    json!(listed)
}

/// Posts the node's conditions when the runtime's readiness changes, and
/// at least every minute; writes the CNI configuration once the node has a
/// pod CIDR.
pub async fn status_loop(
    client: Client,
    config: Config,
    runtime: Runtime,
    recorder: Recorder,
    pressure: Arc<NodePressure>,
    shutdown: CancellationToken,
) {
    let node_reference = crate::pressure::node_reference(&config.node_name);
    let nodes: Api<Node> = Api::all(client);
    // What was last posted: the reason the node was not ready, the
    // conditions under pressure, and when.
    type Posted = (Option<String>, BTreeSet<&'static str>, tokio::time::Instant);
    let mut last: Option<Posted> = None;
    loop {
        match nodes.get(&config.node_name).await {
            Ok(node) => {
                let cidr = node.spec.as_ref().and_then(|s| s.pod_cidr.clone());
                let mut not_ready = match &cidr {
                    Some(cidr) => match crate::network::configure(&config, cidr) {
                        Ok(()) => None,
                        Err(err) => Some(format!("container runtime network not ready: {err:#}")),
                    },
                    None => Some(
                        "container runtime network not ready: the node has no pod CIDR yet".into(),
                    ),
                };
                if not_ready.is_none() {
                    not_ready = runtime
                        .not_ready()
                        .await
                        .unwrap_or_else(|err| Some(format!("container runtime is down: {err:#}")));
                }
                let images = match runtime.list_images().await {
                    Ok(listed) => Some(images_status(&listed)),
                    Err(err) => {
                        tracing::debug!(error = %format!("{err:#}"), "listing the node's images");
                        None
                    }
                };
                let previous = serde_json::to_value(&node).unwrap_or_default();
                let images_changed = images
                    .as_ref()
                    .is_some_and(|images| previous["status"]["images"] != *images);
                let pressed = pressure.conditions();
                let due = images_changed
                    || last.as_ref().is_none_or(|(previous, posted, at)| {
                        *previous != not_ready
                            || *posted != pressed
                            || at.elapsed() >= STATUS_REPORT
                    });
                if due {
                    let conditions = conditions(not_ready.as_deref(), &pressed, &now(), &previous);
                    let transitions = transition_reasons(&conditions, &previous);
                    let mut patch = json!({"status": {"conditions": conditions}});
                    if let Some(images) = images {
                        patch["status"]["images"] = images;
                    }
                    match nodes
                        .patch_status(
                            &config.node_name,
                            &PatchParams::default(),
                            &Patch::Strategic(patch),
                        )
                        .await
                    {
                        Ok(_) => {
                            for reason in transitions {
                                recorder.event(
                                    node_reference.clone(),
                                    events::NORMAL,
                                    reason,
                                    format!("Node {} status is now: {reason}", config.node_name),
                                );
                            }
                            last = Some((not_ready, pressed, tokio::time::Instant::now()));
                        }
                        Err(err) => tracing::warn!(error = %err, "posting the node's status"),
                    }
                }
            }
            Err(err) => tracing::warn!(error = %err, "reading the node"),
        }
        // Checked every second until the node is ready.
        let pause = match &last {
            Some((None, _, _)) => STATUS_CHECK,
            _ => Duration::from_secs(1),
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(pause) => {}
            _ = pressure.changed.notified() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_are_listed_largest_first_with_digests_then_tags() {
        let image = |tags: &[&str], digests: &[&str], size: u64| k8s_cri::v1::Image {
            repo_tags: tags.iter().map(|t| t.to_string()).collect(),
            repo_digests: digests.iter().map(|d| d.to_string()).collect(),
            size,
            ..Default::default()
        };
        let many: Vec<String> = (0..7).map(|i| format!("r/x:{i}")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        let images = vec![
            image(&["pause:1"], &[], 300_000),
            image(&["busybox:1"], &["busybox@sha256:ab"], 2_000_000),
            image(&many, &[], 5),
        ];
        let listed = images_status(&images);
        assert_eq!(
            listed[0]["names"],
            json!(["busybox@sha256:ab", "busybox:1"])
        );
        assert_eq!(listed[0]["sizeBytes"], 2_000_000);
        assert_eq!(listed[1]["names"], json!(["pause:1"]));
        assert_eq!(
            listed[2]["names"].as_array().unwrap().len(),
            NAMES_PER_IMAGE
        );
        let lots: Vec<k8s_cri::v1::Image> = (0..60).map(|i| image(&["a"], &[], i)).collect();
        assert_eq!(
            images_status(&lots).as_array().unwrap().len(),
            STATUS_IMAGES
        );
    }
}
