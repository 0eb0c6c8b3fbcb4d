//! What the simulated kubelet writes, as pure functions: the Node it
//! registers, its Lease, a pod's status; the address arithmetic; and the
//! process's own CPU and memory from /proc.

use std::net::Ipv4Addr;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use crate::Config;

/// Nodes at most: each gets a /24 of 10.64.0.0/10.
pub(crate) const NODES_MAX: usize = 16_384;

pub(crate) fn now() -> String {
    tug_api::format::timestamp(unix_now().0)
}

/// A MicroTime, as Leases carry: `2026-11-23T10:00:00.123456Z`.
pub(crate) fn micro_now() -> String {
    let (seconds, micros) = unix_now();
    let whole = tug_api::format::timestamp(seconds);
    format!("{}.{micros:06}Z", whole.trim_end_matches('Z'))
}

fn unix_now() -> (i64, u32) {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    (since.as_secs() as i64, since.subsec_micros())
}

/// Node `index`'s pod range: `10.{64 + index / 256}.{index % 256}.0/24`.
pub(crate) fn pod_cidr(index: usize) -> (Ipv4Addr, String) {
    let base = Ipv4Addr::new(10, 64 + (index / 256) as u8, (index % 256) as u8, 0);
    (base, format!("{base}/24"))
}

/// Node `index`'s own address.
pub(crate) fn node_ip(index: usize) -> Ipv4Addr {
    Ipv4Addr::new(
        100,
        64 + (index / 65_536) as u8,
        (index / 256 % 256) as u8,
        (index % 256) as u8,
    )
}

/// A pod address in a node's range: `slot` 0 is `.2` (`.1` is the gateway's).
pub(crate) fn pod_ip(base: Ipv4Addr, slot: u8) -> Ipv4Addr {
    let [a, b, c, _] = base.octets();
    Ipv4Addr::new(a, b, c, slot + 2)
}

/// Host addresses per node for pods: .2 to .254.
pub(crate) const SLOTS: usize = 253;

fn node_conditions(now: &str) -> Value {
    let condition = |kind: &str, status: &str, reason: &str, message: &str| {
        json!({
            "type": kind, "status": status, "reason": reason, "message": message,
            "lastHeartbeatTime": now, "lastTransitionTime": now,
        })
    };
    json!([
        condition(
            "MemoryPressure",
            "False",
            "KubeletHasSufficientMemory",
            "kubelet has sufficient memory available"
        ),
        condition(
            "DiskPressure",
            "False",
            "KubeletHasNoDiskPressure",
            "kubelet has no disk pressure"
        ),
        condition(
            "PIDPressure",
            "False",
            "KubeletHasSufficientPID",
            "kubelet has sufficient PID available"
        ),
        condition(
            "Ready",
            "True",
            "KubeletReady",
            "kubelet is posting ready status"
        ),
    ])
}

/// The Node a simulated kubelet registers, status included.
pub(crate) fn node(config: &Config, index: usize, name: &str) -> Value {
    let (_, cidr) = pod_cidr(index);
    let mut labels = json!({
        "kubernetes.io/hostname": name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        "node.kubernetes.io/instance-type": "sim",
        "type": "sim",
    });
    if config.zones > 0 {
        labels["topology.kubernetes.io/zone"] = json!(format!("zone-{}", index % config.zones));
    }
    for (key, value) in &config.labels {
        labels[key] = json!(value);
    }
    let resources = json!({
        "cpu": config.cpu, "memory": config.memory, "pods": config.pods.to_string(),
        "ephemeral-storage": "100Gi",
    });
    let now = now();
    let id = format!("{:032x}", index);
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": labels},
        "spec": {"podCIDR": cidr, "podCIDRs": [cidr], "taints": config.taints},
        "status": {
            "capacity": resources,
            "allocatable": resources,
            "conditions": node_conditions(&now),
            "addresses": [
                {"type": "InternalIP", "address": node_ip(index).to_string()},
                {"type": "Hostname", "address": name},
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            "nodeInfo": {
                "machineID": id, "systemUUID": id, "bootID": id,
                "kernelVersion": "sim", "osImage": "tug simulated node",
                "containerRuntimeVersion": "sim://1.0", "kubeletVersion": "v1.33.0-tug-sim",
                "kubeProxyVersion": "", "operatingSystem": "linux", "architecture": "amd64",
            },
        },
    })
}

/// The status patch that renews a node's heartbeat.
pub(crate) fn heartbeat() -> Value {
    json!({"status": {"conditions": node_conditions(&now())}})
}

/// A node's Lease in kube-node-lease, owned by the Node.
pub(crate) fn lease(name: &str, node_uid: &str, seconds: i64) -> Value {
    json!({
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {
            "name": name,
            "namespace": "kube-node-lease",
            "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": name, "uid": node_uid}],
        },
        "spec": {"holderIdentity": name, "leaseDurationSeconds": seconds, "renewTime": micro_now()},
    })
}

/// Where a simulated pod is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    Pending,
    Running,
    Succeeded,
    Failed,
}

/// What the simulator keeps of a pod: enough to write its status.
#[derive(Clone, Debug)]
pub(crate) struct SimPod {
    pub(crate) uid: String,
    pub(crate) node: usize,
    pub(crate) slot: Option<u8>,
    pub(crate) phase: Phase,
    pub(crate) started: Option<String>,
    pub(crate) finished: Option<String>,
    /// Containers (name, image), then init containers.
    pub(crate) containers: Vec<(String, String)>,
    pub(crate) init_containers: Vec<(String, String)>,
    pub(crate) restart_policy: String,
    /// As the API server set it.
    pub(crate) qos: &'static str,
    /// The containers crashed (staged fault); restarts counts the crashes.
    pub(crate) crashed: bool,
    pub(crate) restarts: i32,
    /// Ready unless staged not ready, once the ready delay has passed.
    pub(crate) ready_wanted: bool,
    pub(crate) ready_delay_passed: bool,
    pub(crate) deleting: bool,
    /// Told to finish this many seconds after it runs: (seconds, success).
    pub(crate) finish: Option<(u64, bool)>,
}

impl SimPod {
    pub(crate) fn ready(&self) -> bool {
        self.phase == Phase::Running
            && !self.crashed
            && self.ready_wanted
            && self.ready_delay_passed
    }
}

fn pod_conditions(pod: &SimPod, now: &str) -> Value {
    let ready = pod.ready();
    let not_ready = |kind: &str| {
        let names: Vec<&str> = pod.containers.iter().map(|(n, _)| n.as_str()).collect();
        json!({
            "type": kind, "status": "False", "lastTransitionTime": now,
            "reason": if pod.phase == Phase::Running { "ContainersNotReady" } else { "PodCompleted" },
            "message": format!("containers with unready status: [{}]", names.join(" ")),
        })
    };
    let truly = |kind: &str| json!({"type": kind, "status": "True", "lastTransitionTime": now});
    let sandbox = if pod.phase == Phase::Running {
        truly("PodReadyToStartContainers")
    } else {
        json!({"type": "PodReadyToStartContainers", "status": "False", "lastTransitionTime": now})
    };
    json!([
        sandbox,
        truly("Initialized"),
        if ready {
            truly("Ready")
        } else {
            not_ready("Ready")
        },
        if ready {
            truly("ContainersReady")
        } else {
            not_ready("ContainersReady")
        },
        truly("PodScheduled"),
    ])
}

/// The status a simulated kubelet writes for `pod` on the node whose pod
/// range starts at `base` and whose address is `host`.
pub(crate) fn pod_status(pod: &SimPod, base: Ipv4Addr, host: Ipv4Addr) -> Value {
    let now = now();
    let started = pod.started.clone().unwrap_or_else(|| now.clone());
    let phase = match pod.phase {
        Phase::Pending => "Pending",
        Phase::Running => "Running",
        Phase::Succeeded => "Succeeded",
        Phase::Failed => "Failed",
    };
    let terminated = |code: i32, reason: &str| {
        json!({"terminated": {
            "exitCode": code, "reason": reason, "startedAt": started,
            "finishedAt": pod.finished.clone().unwrap_or_else(|| now.clone()),
        }})
    };
    let containers: Vec<Value> = pod
        .containers
        .iter()
        .map(|(name, image)| {
            let mut status = json!({
                "name": name, "image": image, "imageID": format!("sim://{image}"),
                "containerID": format!("sim://{}-{name}", pod.uid),
                "ready": pod.ready(), "restartCount": pod.restarts,
                "started": pod.phase == Phase::Running && !pod.crashed,
            });
            status["state"] = match pod.phase {
                Phase::Succeeded => terminated(0, "Completed"),
                Phase::Failed => terminated(1, "Error"),
                Phase::Running if pod.crashed => json!({"waiting": {
                    "reason": "CrashLoopBackOff",
                    "message": format!("back-off 10s restarting failed container={name} pod={}", pod.uid),
                }}),
                Phase::Running => json!({"running": {"startedAt": started}}),
                Phase::Pending => json!({"waiting": {"reason": "ContainerCreating"}}),
            };
            if pod.restarts > 0 {
                status["lastState"] = terminated(1, "Error");
            }
            status
        })
        .collect();
    let init: Vec<Value> = pod
        .init_containers
        .iter()
        .map(|(name, image)| {
            json!({
                "name": name, "image": image, "imageID": format!("sim://{image}"),
                "containerID": format!("sim://{}-{name}", pod.uid),
                "ready": true, "restartCount": 0, "started": false,
                "state": {"terminated": {"exitCode": 0, "reason": "Completed", "startedAt": started, "finishedAt": started}},
            })
        })
        .collect();
    let mut status = json!({
        "phase": phase,
        "conditions": pod_conditions(pod, &now),
        "hostIP": host.to_string(),
        "hostIPs": [{"ip": host.to_string()}],
        "startTime": started,
        "containerStatuses": containers,
        "qosClass": pod.qos,
    });
    if !init.is_empty() {
        status["initContainerStatuses"] = json!(init);
    }
    if let Some(slot) = pod.slot {
        let ip = pod_ip(base, slot).to_string();
        status["podIP"] = json!(ip);
        status["podIPs"] = json!([{"ip": ip}]);
    }
    json!({"status": status})
}

/// This process's CPU seconds (user and system) and resident bytes.
pub fn process_usage() -> (f64, u64) {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    (cpu_seconds(&stat), rss_bytes(&status))
}

/// utime + stime (fields 14 and 15) of a /proc/PID/stat line, at Linux's
/// 100 ticks per second. The command name may hold spaces: count after `)`.
fn cpu_seconds(stat: &str) -> f64 {
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    // After the name: state is field 3, so utime (14) is at index 11.
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    (ticks(11) + ticks(12)) as f64 / 100.0
}

fn rss_bytes(status: &str) -> u64 {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sim_pod() -> SimPod {
        SimPod {
            uid: "u1".into(),
            node: 0,
            slot: Some(0),
            phase: Phase::Running,
            started: Some("2026-11-23T10:00:00Z".into()),
            finished: None,
            containers: vec![("app".into(), "img:1".into())],
            init_containers: vec![],
            restart_policy: "Always".into(),
            qos: "BestEffort",
            crashed: false,
            restarts: 0,
            ready_wanted: true,
            ready_delay_passed: true,
            deleting: false,
            finish: None,
        }
    }

    #[test]
    fn nodes_get_a_pod_range_and_an_address_each() {
        assert_eq!(pod_cidr(300).1, "10.65.44.0/24");
        assert_eq!(pod_cidr(NODES_MAX - 1).1, "10.127.255.0/24");
        assert_eq!(node_ip(300), Ipv4Addr::new(100, 64, 1, 44));
        assert_eq!(pod_ip(pod_cidr(300).0, 0), Ipv4Addr::new(10, 65, 44, 2));
        let config = Config {
            labels: [("zone".to_string(), "a".to_string())].into(),
            zones: 3,
            ..Config::default()
        };
        let node = node(&config, 7, "sim-7");
        assert_eq!(node["metadata"]["labels"]["zone"], "a");
        assert_eq!(
            node["metadata"]["labels"]["topology.kubernetes.io/zone"],
            "zone-1"
        );
        assert_eq!(node["status"]["allocatable"]["pods"], "110");
        assert_eq!(node["status"]["conditions"][3]["type"], "Ready");
        assert_eq!(node["spec"]["podCIDR"], "10.64.7.0/24");
    }

    #[test]
    fn a_running_pod_is_ready_with_its_address() {
        let status = &pod_status(
            &sim_pod(),
            Ipv4Addr::new(10, 64, 0, 0),
            Ipv4Addr::new(100, 64, 0, 0),
        )["status"];
        assert_eq!(status["phase"], "Running");
        assert_eq!(status["podIP"], "10.64.0.2");
        assert_eq!(
            status["conditions"][2],
            json!({"type": "Ready", "status": "True", "lastTransitionTime": status["conditions"][2]["lastTransitionTime"]})
        );
        assert_eq!(
            status["containerStatuses"][0]["state"]["running"]["startedAt"],
            "2026-11-23T10:00:00Z"
        );
    }

    #[test]
    fn a_crashed_pod_backs_off_and_is_not_ready() {
        let pod = SimPod {
            crashed: true,
            restarts: 1,
            ..sim_pod()
        };
        let status = &pod_status(
            &pod,
            Ipv4Addr::new(10, 64, 0, 0),
            Ipv4Addr::new(100, 64, 0, 0),
        )["status"];
        let container = &status["containerStatuses"][0];
        assert_eq!(container["state"]["waiting"]["reason"], "CrashLoopBackOff");
        assert_eq!(container["restartCount"], 1);
        assert_eq!(container["lastState"]["terminated"]["exitCode"], 1);
        assert_eq!(status["conditions"][2]["status"], "False");
        assert_eq!(
            status["conditions"][2]["message"],
            "containers with unready status: [app]"
        );
    }

    #[test]
    fn a_finished_pod_reports_its_exit() {
        let pod = SimPod {
            phase: Phase::Succeeded,
            ..sim_pod()
        };
        let status = &pod_status(
            &pod,
            Ipv4Addr::new(10, 64, 0, 0),
            Ipv4Addr::new(100, 64, 0, 0),
        )["status"];
        assert_eq!(status["phase"], "Succeeded");
        assert_eq!(
            status["containerStatuses"][0]["state"]["terminated"]["reason"],
            "Completed"
        );
        assert_eq!(status["conditions"][2]["reason"], "PodCompleted");
    }

    #[test]
    fn proc_text_reads_as_cpu_seconds_and_bytes() {
        let stat =
            "1234 (tug sim (x)) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 150 0 0 20 0 8 0 100 0 0";
        assert_eq!(cpu_seconds(stat), 4.0);
        assert_eq!(
            rss_bytes("Name:\ttug\nVmRSS:\t  2048 kB\n"),
            2 * 1024 * 1024
        );
    }
}
