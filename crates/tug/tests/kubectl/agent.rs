//! The node agent inside `tug server`, with real containerd, runc and the
//! CNI plugins, and a busybox image built here from Debian's
//! busybox-static. One agent runs at a time (they share the machine's
//! network); each test removes its pods, its containerd and its bridge.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard};

use serde_json::Value;

use super::{Server, until};

const BUSYBOX: &str = "tug.local/busybox:1";
const NODE: &str = "tug-agent-test";
const BRIDGE: &str = "tugtest0";
/// kubelet's default thresholds are shares of the disk, met on a build
/// machine whose disk is 85% full; the tests' agents evict below fixed
/// amounts instead, unless a test sets its own.
const EVICTION_HARD: &str = "memory.available<100Mi,nodefs.available<1Gi,imagefs.available<1Gi,nodefs.inodesFree<5%,imagefs.inodesFree<5%";

static ONE_AGENT: Mutex<()> = Mutex::new(());

/// A server with a node agent; on drop its pods are removed, the server
/// stopped (its containerd with it) and the bridge deleted.
struct Agent {
    server: Option<Server>,
    _turn: MutexGuard<'static, ()>,
}

impl std::ops::Deref for Agent {
    type Target = Server;
    fn deref(&self) -> &Server {
        self.server.as_ref().expect("the agent's server")
    }
}

fn agent_flags() -> Vec<&'static str> {
    vec![
        "--node-name",
        NODE,
        "--cluster-cidr",
        "10.244.0.0/16",
        "--cni-bridge",
        BRIDGE,
    ]
}

impl Agent {
    fn start(dir: &Path) -> Agent {
        Agent::start_with(dir, &[])
    }

    /// An agent with more flags.
    fn start_with(dir: &Path, extra: &[&str]) -> Agent {
        let turn = ONE_AGENT.lock().unwrap_or_else(|p| p.into_inner());
        let mut flags = agent_flags();
        // The host's disk is not the test's: thresholds it cannot meet,
        // unless the test sets its own.
        if !extra.contains(&"--eviction-hard") {
            flags.extend_from_slice(&["--eviction-hard", EVICTION_HARD]);
        }
        if !extra.contains(&"--image-gc-high-threshold") {
            flags.extend_from_slice(&["--image-gc-high-threshold", "100"]);
        }
        flags.extend_from_slice(extra);
        let agent = Agent {
            server: Some(Server::start_with_agent(dir, &flags)),
            _turn: turn,
        };
        until(60, "the agent's node to be Ready", || {
            let ready = agent.kubectl(&[
                "get",
                "node",
                NODE,
                "-o",
                "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
            ]);
            (String::from_utf8_lossy(&ready.stdout) == "True").then_some(())
        });
        agent
    }

    fn socket(&self) -> PathBuf {
        self.dir.join("data/agent/containerd/containerd.sock")
    }

    fn tug(&self, args: &[&str]) -> String {
        let output = Command::new(env!("CARGO_BIN_EXE_tug"))
            .args(args)
            .arg("--data-dir")
            .arg(self.dir.join("data"))
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "tug {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    }

    /// Restarts the server (and its agent and containerd) on its data.
    fn restart(&mut self) {
        let server = self.server.take().expect("a running server");
        let dir = server.dir.clone();
        self.server = Some(server.stop().start(&dir));
    }

    /// Restarts the server and its agent with another `--eviction-hard`.
    fn restart_with_eviction_hard(&mut self, thresholds: &str) {
        let server = self.server.take().expect("a running server");
        let dir = server.dir.clone();
        let mut stopped = server.stop();
        let flags = stopped.agent.as_mut().expect("the agent's flags");
        let at = flags.iter().position(|f| f == "--eviction-hard").unwrap();
        flags[at + 1] = thresholds.to_string();
        self.server = Some(stopped.start(&dir));
    }

    /// Waits until `check` holds for the pod's JSON, and answers it.
    fn pod_until(
        &self,
        seconds: u64,
        name: &str,
        what: &str,
        check: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(seconds);
        loop {
            let output = self.kubectl(&["get", "pod", name, "-o", "json"]);
            if let Ok(pod) = serde_json::from_slice::<Value>(&output.stdout)
                && check(&pod)
            {
                return pod;
            }
            if std::time::Instant::now() > deadline {
                // What kubectl shows of the pod, to tell why: its events,
                // then its status (last, where a cut output keeps it).
                let described = self.kubectl(&["describe", "pod", name]);
                let status = serde_json::from_slice::<Value>(&output.stdout)
                    .map(|pod| pod["status"].to_string())
                    .unwrap_or_else(|_| String::from_utf8_lossy(&output.stdout).into_owned());
                panic!(
                    "timed out waiting for {what}:\n{}\nstatus: {status}",
                    String::from_utf8_lossy(&described.stdout)
                );
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }

    /// The runtime's containers, through CRI.
    fn runtime_containers(&self) -> usize {
        let socket = self.socket();
        runtime().block_on(async {
            let runtime = tug_kubelet::cri::Runtime::connect(&socket).unwrap();
            runtime.containers(None).await.unwrap().len()
        })
    }
}

/// Removes the pods an agent's runtime still has, once the agent had time
/// to remove what the test deleted (only a failed test's pods are left
/// then), so that two do not stop the same sandbox at once (which can
/// leave its network namespace behind).
fn remove_pods_left(socket: &Path) {
    let _ = runtime().block_on(async {
        let runtime = tug_kubelet::cri::Runtime::connect(socket)?;
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
        while !runtime.sandboxes(None).await?.is_empty() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        tug_kubelet::remove_all_pods(socket).await
    });
}

/// Unmounts and removes what a stopped agent's data dir may still mount:
/// its pods' volumes, and network namespaces containerd did not remove
/// (seen now and then under load; said on stderr). Containers that
/// outlived the agent and its containerd go too: a test that failed with
/// pods running, or a sandbox the agent made again while the clean-up
/// removed it, would otherwise leave their shims and mounts behind.
fn remove_node_leftovers(data: &Path) {
    let _ = tug_kubelet::volumes::remove_dir(&data.join("agent/pods"));
    let netns = data.join("agent/containerd/state/io.containerd.grpc.v1.cri/netns");
    let left = std::fs::read_dir(&netns).map_or(0, |d| d.count());
    if left > 0 {
        eprintln!(
            "{left} network namespace(s) left by containerd in {}",
            netns.display()
        );
    }
    let _ = tug_kubelet::volumes::remove_dir(&netns);
    kill_containers_left(data);
}

/// Kills, through runc, the containers left under a stopped agent's
/// containerd, then the shims serving its socket, and unmounts their
/// root filesystems and shared memory.
fn kill_containers_left(data: &Path) {
    let containerd = data.join("agent/containerd");
    let runc = |args: &[&str]| {
        Command::new("runc")
            .arg("--root")
            .arg(containerd.join("runc/k8s.io"))
            .args(args)
            .stderr(Stdio::null())
            .output()
    };
    let listed = runc(&["list", "-q"]).map(|o| o.stdout).unwrap_or_default();
    let listed = String::from_utf8_lossy(&listed);
    let ids: Vec<&str> = listed.lines().filter(|id| !id.is_empty()).collect();
    for id in &ids {
        let _ = runc(&["delete", "--force", id]);
    }
    let socket = containerd.join("containerd.sock").display().to_string();
    let mut shims = 0;
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        let shim = args
            .first()
            .is_some_and(|a| a.ends_with(b"containerd-shim-runc-v2"));
        if shim && args.contains(&socket.as_bytes()) {
            let pid = entry.file_name().to_string_lossy().into_owned();
            let _ = Command::new("kill").args(["-KILL", &pid]).status();
            shims += 1;
        }
    }
    if !ids.is_empty() || shims > 0 {
        eprintln!(
            "{} container(s) and {shims} shim(s) left after the agent stopped, killed",
            ids.len()
        );
    }
    let _ = tug_kubelet::volumes::remove_dir(&containerd.join("state"));
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

impl Drop for Agent {
    fn drop(&mut self) {
        remove_pods_left(&self.socket());
        if let Some(server) = self.server.take() {
            let data = server.dir.join("data");
            drop(server.stop());
            remove_node_leftovers(&data);
        }
        let _ = Command::new("ip").args(["link", "del", BRIDGE]).status();
    }
}

/// A Docker archive of busybox (Debian's busybox-static, every applet
/// linked in /bin), imported with `tug images import`.
fn busybox_archive(dir: &Path) -> PathBuf {
    use tug_kubelet::images::{Entry, ImageConfig, docker_archive, tar};
    let busybox = std::fs::read("/bin/busybox").expect("Debian's busybox-static");
    let list = Command::new("/bin/busybox").arg("--list").output().unwrap();
    let applets: Vec<String> = String::from_utf8_lossy(&list.stdout)
        .lines()
        .filter(|a| *a != "busybox")
        .map(|a| format!("bin/{a}"))
        .collect();
    let mut entries = vec![
        Entry::Dir { path: "bin" },
        Entry::Dir { path: "tmp" },
        Entry::Dir { path: "etc" },
        Entry::File {
            path: "bin/busybox",
            mode: 0o755,
            data: &busybox,
        },
    ];
    for applet in &applets {
        entries.push(Entry::Symlink {
            path: applet,
            target: "busybox",
        });
    }
    let layer = tar(&entries).unwrap();
    let archive = docker_archive(
        BUSYBOX,
        &[layer],
        &ImageConfig {
            cmd: &["sh"],
            env: &["PATH=/bin"],
            ..Default::default()
        },
    )
    .unwrap();
    let path = dir.join("busybox.tar");
    std::fs::write(&path, archive).unwrap();
    path
}

/// A node whose image filesystem is below its eviction threshold (here
/// any: imagefs.available<100%) is under DiskPressure: tainted, new pods
/// refused but critical ones, and its unused images deleted once past
/// their minimum age; images in use and the pause image stay.
#[test]
fn disk_pressure_taints_the_node_and_collects_unused_images() {
    use tug_kubelet::images::{Entry, ImageConfig, docker_archive, tar};
    let dir = tempfile::tempdir().unwrap();
    // Images are spared for their first 20 s, long enough to see them
    // and to start the pod that uses one.
    let agent = Agent::start_with(
        dir.path(),
        &[
            "--eviction-hard",
            "imagefs.available<100%",
            "--minimum-image-ttl-duration",
            "20s",
        ],
    );
    let layer = tar(&[Entry::File {
        path: "unused",
        mode: 0o644,
        data: b"nothing runs this",
    }])
    .unwrap();
    let unused = dir.path().join("unused.tar");
    std::fs::write(
        &unused,
        docker_archive("tug.local/unused:1", &[layer], &ImageConfig::default()).unwrap(),
    )
    .unwrap();
    agent.tug(&["images", "import", unused.to_str().unwrap()]);
    let archive = busybox_archive(dir.path());
    agent.tug(&["images", "import", archive.to_str().unwrap()]);
    let images = agent.tug(&["images", "list"]);
    assert!(images.contains("tug.local/unused"), "{images}");
    // A critical pod bound to the node by name is admitted in spite of
    // the pressure (and is never evicted); a pod that is not critical is
    // refused.
    let bound = |name: &str, priority: &str| {
        format!(
            "apiVersion: v1
kind: Pod
metadata:
  name: {name}
spec:
  nodeName: {NODE}
  {priority}
  containers:
  - name: c
    image: {BUSYBOX}
    imagePullPolicy: IfNotPresent
    command: [sleep, '3600']
"
        )
    };
    let condition = |kind: &str| {
        agent.ok(&[
            "get",
            "node",
            NODE,
            "-o",
            &format!(
                "jsonpath={{.status.conditions[?(@.type==\"{kind}\")].status}} {{.status.conditions[?(@.type==\"{kind}\")].reason}}"
            ),
        ])
    };
    until(60, "DiskPressure", || {
        (condition("DiskPressure") == "True KubeletHasDiskPressure").then_some(())
    });
    agent.apply(&bound("bound", "priorityClassName: system-node-critical"));
    agent.apply(&bound("refused", ""));
    let refused = agent.pod_until(60, "refused", "refused to be refused", |p| {
        p["status"]["phase"] == "Failed"
    });
    assert_eq!(refused["status"]["reason"], "Evicted");
    assert_eq!(
        refused["status"]["message"],
        "Pod was rejected: The node had condition: [DiskPressure]. "
    );
    assert_eq!(
        condition("MemoryPressure"),
        "False KubeletHasSufficientMemory"
    );
    assert_eq!(condition("Ready"), "True KubeletReady");
    until(60, "the disk-pressure taint", || {
        agent
            .ok(&["get", "node", NODE, "-o", "jsonpath={.spec.taints}"])
            .contains("node.kubernetes.io/disk-pressure")
            .then_some(())
    });
    until(60, "the unused image to be collected", || {
        (!agent.tug(&["images", "list"]).contains("tug.local/unused")).then_some(())
    });
    agent.pod_until(60, "bound", "the bound pod to run", |p| {
        p["status"]["phase"] == "Running"
    });
    let images = agent.tug(&["images", "list"]);
    assert!(images.contains("tug.local/busybox"), "{images}");
    assert!(images.contains("tug.local/pause"), "{images}");

    // The scheduler leaves a pod without the toleration pending.
    agent.ok(&[
        "run",
        "pending",
        &format!("--image={BUSYBOX}"),
        "--image-pull-policy=IfNotPresent",
        "--",
        "sleep",
        "3600",
    ]);
    let pending = agent.pod_until(30, "pending", "pending to be unschedulable", |p| {
        p["status"]["conditions"][0]["reason"] == "Unschedulable"
    });
    let message = pending["status"]["conditions"][0]["message"]
        .as_str()
        .unwrap();
    assert!(
        message.starts_with(
            "0/1 nodes are available: 1 node(s) had untolerated taint {node.kubernetes.io/disk-pressure: }."
        ),
        "{message}"
    );
    // What kubelet said, as `kubectl describe node` shows it.
    let described = agent.ok(&["describe", "node", NODE]);
    for event in [
        "Starting kubelet.",
        "EvictionThresholdMet",
        "Attempting to reclaim ephemeral-storage",
        &format!("Node {NODE} status is now: NodeHasDiskPressure"),
        &format!("Node {NODE} status is now: NodeReady"),
    ] {
        assert!(described.contains(event), "{event}:\n{described}");
    }
}

/// A pod that fills the node's disk past the eviction threshold is
/// evicted (the one using the most, over its request), its emptyDir
/// freed; new pods are refused while the pressure lasts, the others run
/// on, and the pressure ends.
#[test]
fn a_pod_that_fills_the_disk_is_evicted() {
    let dir = tempfile::tempdir().unwrap();
    // The threshold: 1.5 GiB less than what is free now, so that the
    // 3 GiB the pod writes cross it whatever else the machine does.
    let df = Command::new("df")
        .args(["-B1", "--output=avail"])
        .arg(dir.path())
        .output()
        .unwrap();
    let available: u64 = String::from_utf8_lossy(&df.stdout)
        .lines()
        .nth(1)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let threshold = available - (3 << 29);
    let agent = Agent::start_with(
        dir.path(),
        &[
            "--eviction-hard",
            &format!("nodefs.available<{threshold}"),
            "--eviction-pressure-transition-period",
            "30s",
        ],
    );
    let archive = busybox_archive(dir.path());
    agent.tug(&["images", "import", archive.to_str().unwrap()]);
    agent.apply(&format!(
        "apiVersion: v1
kind: Pod
metadata:
  name: quiet
spec:
  containers:
  - name: c
    image: {BUSYBOX}
    imagePullPolicy: IfNotPresent
    command: [sleep, '3600']
---
apiVersion: v1
kind: Pod
metadata:
  name: filler
spec:
  terminationGracePeriodSeconds: 30
  volumes:
  - {{name: data, emptyDir: {{}}}}
  containers:
  - name: c
    image: {BUSYBOX}
    imagePullPolicy: IfNotPresent
    command: [sleep, '3600']
    volumeMounts:
    - {{name: data, mountPath: /data}}
"
    ));
    for pod in ["quiet", "filler"] {
        agent.pod_until(60, pod, "the pods to run", |p| {
            p["status"]["phase"] == "Running"
        });
    }
    // (the eviction may kill dd before it is done)
    agent.kubectl(&[
        "exec",
        "filler",
        "--",
        "dd",
        "if=/dev/zero",
        "of=/data/fill",
        "bs=1M",
        "count=3072",
    ]);
    let evicted = agent.pod_until(90, "filler", "filler to be evicted", |p| {
        p["status"]["phase"] == "Failed"
    });
    assert_eq!(evicted["status"]["reason"], "Evicted");
    let message = evicted["status"]["message"].as_str().unwrap();
    assert!(
        message
            .starts_with("The node was low on resource: ephemeral-storage. Threshold quantity: "),
        "{message}"
    );
    let target = evicted["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "DisruptionTarget")
        .cloned()
        .unwrap_or_default();
    assert_eq!(target["reason"], "TerminationByKubelet", "{evicted}");
    // (`kubectl get` shows Evicted only until the killed container's
    // status is reported, then its reason, Error, as upstream does; the
    // pod's own reason stays.)
    let described = agent.ok(&["describe", "pod", "filler"]);
    let reason = described.lines().find(|l| l.starts_with("Reason:"));
    assert_eq!(
        reason.map(|l| l.split_whitespace().collect::<Vec<_>>()),
        Some(vec!["Reason:", "Evicted"]),
        "{described}"
    );
    assert!(described.contains("Warning  Evicted"), "{described}");

    // While the pressure lasts, a new pod is refused.
    agent.ok(&[
        "run",
        "late",
        &format!("--image={BUSYBOX}"),
        "--image-pull-policy=IfNotPresent",
        "--overrides",
        &format!(r#"{{"spec":{{"nodeName":"{NODE}"}}}}"#),
        "--",
        "sleep",
        "3600",
    ]);
    let late = agent.pod_until(60, "late", "late to be refused", |p| {
        p["status"]["phase"] == "Failed"
    });
    assert_eq!(
        late["status"]["message"],
        "Pod was rejected: The node had condition: [DiskPressure]. "
    );
    // The pressure ends with the emptyDir gone; the other pod ran on.
    until(90, "DiskPressure to end", || {
        let status = agent.ok(&[
            "get",
            "node",
            NODE,
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"DiskPressure\")].status}",
        ]);
        (status == "False").then_some(())
    });
    let quiet = agent.pod_until(10, "quiet", "quiet to run", |p| {
        p["status"]["phase"] == "Running"
    });
    assert_eq!(status_of(&quiet, "c")["restartCount"], 0);
    agent.ok(&[
        "delete",
        "pod",
        "quiet",
        "filler",
        "late",
        "--grace-period=1",
    ]);
}

/// Whatever the node's pressure, a pod whose disk emptyDir outgrows its
/// sizeLimit, or whose containers outgrow their ephemeral-storage limits
/// (writable layer and logs), is evicted with kubelet's message; a pod
/// within its limits runs on.
#[test]
fn pods_over_their_local_storage_limits_are_evicted() {
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::start(dir.path());
    let archive = busybox_archive(dir.path());
    agent.tug(&["images", "import", archive.to_str().unwrap()]);
    let pod = |name: &str, volumes: &str, mount: &str, file: &str, mib: u32| {
        format!(
            "apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  terminationGracePeriodSeconds: 1
  volumes: [{volumes}]
  containers:
  - name: c
    image: {BUSYBOX}
    imagePullPolicy: IfNotPresent
    command: [sh, -c, 'dd if=/dev/zero of={file} bs=1M count={mib} 2>/dev/null; sleep 3600']
    volumeMounts: [{mount}]
    resources:
      limits: {{ephemeral-storage: 10Mi}}
---
"
        )
    };
    let data = "{name: data, emptyDir: {sizeLimit: 5Mi}}";
    let mount = "{name: data, mountPath: /data}";
    let manifest = [
        pod("sized", data, mount, "/data/fill", 8),
        pod("bounded", "", "", "/tmp/fill", 20),
        pod("modest", data, mount, "/data/fill", 1),
    ]
    .concat();
    agent.apply(&manifest);
    for (name, message) in [
        (
            "sized",
            "Usage of EmptyDir volume \"data\" exceeds the limit \"5Mi\". ",
        ),
        (
            "bounded",
            "Pod ephemeral local storage usage exceeds the total limit of containers 10Mi. ",
        ),
    ] {
        let evicted = agent.pod_until(90, name, "the pod to be evicted", |p| {
            p["status"]["phase"] == "Failed"
        });
        assert_eq!(evicted["status"]["reason"], "Evicted", "{evicted}");
        assert_eq!(evicted["status"]["message"], message, "{evicted}");
        let described = agent.ok(&["describe", "pod", name]);
        assert!(described.contains("Warning  Evicted"), "{described}");
    }
    let modest = agent.pod_until(10, "modest", "modest to run", |p| {
        p["status"]["phase"] == "Running"
    });
    assert_eq!(status_of(&modest, "c")["restartCount"], 0);
    agent.ok(&[
        "delete",
        "pod",
        "sized",
        "bounded",
        "modest",
        "--grace-period=1",
    ]);
}

/// Under memory pressure the pod using the most memory above its request
/// goes first, with kubelet's message naming its container; the other
/// goes next (the pressure lasting).
#[test]
fn memory_pressure_evicts_the_pod_most_over_its_request_first() {
    let dir = tempfile::tempdir().unwrap();
    let mut agent = Agent::start(dir.path());
    let archive = busybox_archive(dir.path());
    agent.tug(&["images", "import", archive.to_str().unwrap()]);
    // hog holds 64Mi (a Memory emptyDir's pages are its container's) on a
    // request of 1Mi; small holds little on a request of 32Mi.
    let pod = |name: &str, request: &str, command: &str| {
        format!(
            "apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  nodeName: {NODE}
  terminationGracePeriodSeconds: 1
  volumes: [{{name: ram, emptyDir: {{medium: Memory}}}}]
  containers:
  - name: {name}
    image: {BUSYBOX}
    imagePullPolicy: IfNotPresent
    command: [sh, -c, '{command}; sleep 3600']
    volumeMounts: [{{name: ram, mountPath: /ram}}]
    resources:
      requests: {{memory: {request}}}
---
"
        )
    };
    agent.apply(
        &[
            pod(
                "hog",
                "1Mi",
                "dd if=/dev/zero of=/ram/fill bs=1M count=64 2>/dev/null",
            ),
            pod("small", "32Mi", "true"),
        ]
        .concat(),
    );
    for name in ["hog", "small"] {
        agent.pod_until(60, name, "the pod to run", ready);
    }
    // The node's memory is now short by any measure.
    agent.restart_with_eviction_hard("memory.available<1000Ti");
    let hog = agent.pod_until(60, "hog", "hog to be evicted", |p| {
        p["status"]["phase"] == "Failed"
    });
    assert_eq!(hog["status"]["reason"], "Evicted", "{hog}");
    let message = hog["status"]["message"].as_str().unwrap();
    assert!(
        message.starts_with(
            "The node was low on resource: memory. Threshold quantity: 1000Ti, available: "
        ),
        "{message}"
    );
    assert!(
        message.contains(". Container hog was using ")
            && message.ends_with(", request is 1Mi, has larger consumption of memory. "),
        "{message}"
    );
    let small = agent.ok(&["get", "pod", "small", "-o", "jsonpath={.status.phase}"]);
    assert_eq!(small, "Running", "small went first");
    let small = agent.pod_until(60, "small", "small to be evicted next", |p| {
        p["status"]["phase"] == "Failed"
    });
    // (small is within its request: no sentence names it)
    let message = small["status"]["message"].as_str().unwrap();
    assert!(!message.contains("Container small"), "{message}");
    let condition = agent.ok(&[
        "get",
        "node",
        NODE,
        "-o",
        "jsonpath={.status.conditions[?(@.type==\"MemoryPressure\")].reason}",
    ]);
    assert_eq!(condition, "KubeletHasInsufficientMemory");
    agent.ok(&["delete", "pod", "hog", "small", "--grace-period=1"]);
}

/// A containerd the test starts itself; on drop the pods it still runs
/// are removed and it is stopped.
struct ExternalContainerd {
    child: std::process::Child,
    socket: PathBuf,
}

impl Drop for ExternalContainerd {
    fn drop(&mut self) {
        remove_pods_left(&self.socket);
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

/// With --container-runtime-endpoint the agent starts no containerd of
/// its own: it runs pods on the one it is given (configured, as such a
/// runtime must be, to read the CNI configuration the agent writes).
#[test]
fn an_existing_containerd_runs_the_pods_through_its_cri_socket() {
    use tug_kubelet::containerd::{Layout, config};
    let dir = tempfile::tempdir().unwrap();
    let layout = Layout {
        dir: dir.path().join("external"),
    };
    std::fs::create_dir_all(&layout.dir).unwrap();
    let conf_dir = dir.path().join("data/agent/cni/net.d");
    let config_file = layout.dir.join("config.toml");
    std::fs::write(
        &config_file,
        config(&layout, &conf_dir, &Default::default()),
    )
    .unwrap();
    let log = std::fs::File::create(layout.dir.join("containerd.log")).unwrap();
    let child = Command::new("containerd")
        .arg("--config")
        .arg(&config_file)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let socket = layout.socket();
    let containerd = ExternalContainerd {
        child,
        socket: socket.clone(),
    };
    until(30, "containerd to listen", || {
        std::os::unix::net::UnixStream::connect(&socket).ok()
    });
    let endpoint = socket.to_str().unwrap();
    let agent = Agent::start_with(dir.path(), &["--container-runtime-endpoint", endpoint]);
    let archive = busybox_archive(dir.path());
    agent.tug(&[
        "images",
        "--container-runtime-endpoint",
        endpoint,
        "import",
        archive.to_str().unwrap(),
    ]);
    agent.ok(&[
        "run",
        "guest",
        &format!("--image={BUSYBOX}"),
        "--image-pull-policy=IfNotPresent",
        "--",
        "sh",
        "-c",
        "echo on loan; exec sleep 3600",
    ]);
    agent.pod_until(60, "guest", "guest to run", ready);
    until(30, "guest's log", || {
        (agent.ok(&["logs", "guest"]) == "on loan\n").then_some(())
    });
    // It runs on the given containerd; the agent started none of its own.
    let on_given = runtime().block_on(async {
        let runtime = tug_kubelet::cri::Runtime::connect(&socket).unwrap();
        runtime.containers(None).await.unwrap().len()
    });
    assert_eq!(on_given, 1);
    assert!(!agent.socket().exists());
    agent.ok(&["delete", "pod", "guest", "--grace-period=1"]);
    drop(agent);
    drop(containerd);
}

fn status_of<'a>(pod: &'a Value, container: &str) -> &'a Value {
    pod["status"]["containerStatuses"]
        .as_array()
        .and_then(|all| all.iter().find(|c| c["name"] == container))
        .unwrap_or(&Value::Null)
}

fn ready(pod: &Value) -> bool {
    pod["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Ready" && c["status"] == "True")
}

const INIT_POD: &str = "apiVersion: v1
kind: Pod
metadata:
  name: staged
spec:
  terminationGracePeriodSeconds: 2
  initContainers:
  - {name: first, image: tug.local/busybox:1, imagePullPolicy: IfNotPresent, command: [sleep, '1']}
  - {name: second, image: tug.local/busybox:1, imagePullPolicy: IfNotPresent, command: ['true']}
  containers:
  - name: main
    image: tug.local/busybox:1
    imagePullPolicy: IfNotPresent
    command: [sleep, '3600']
    env:
    - {name: POD, valueFrom: {fieldRef: {fieldPath: metadata.name}}}
";

#[test]
fn pods_run_on_containerd_and_report_as_kubelet_does() {
    let dir = tempfile::tempdir().unwrap();
    let mut agent = Agent::start(dir.path());
    let archive = busybox_archive(dir.path());
    agent.tug(&["images", "import", archive.to_str().unwrap()]);
    let images = agent.tug(&["images", "list"]);
    assert!(images.contains("tug.local/busybox"), "{images}");
    assert!(images.contains("tug.local/pause"), "{images}");

    let node: Value =
        serde_json::from_str(&agent.ok(&["get", "node", NODE, "-o", "json"])).unwrap();
    let runtime_version = node["status"]["nodeInfo"]["containerRuntimeVersion"]
        .as_str()
        .unwrap();
    assert!(
        runtime_version.starts_with("containerd://"),
        "{runtime_version}"
    );
    assert_eq!(node["metadata"]["labels"]["kubernetes.io/hostname"], NODE);
    assert_eq!(node["metadata"]["labels"]["kubernetes.io/os"], "linux");
    assert!(node["metadata"]["labels"]["kubernetes.io/arch"].is_string());
    for resource in ["cpu", "memory", "ephemeral-storage"] {
        for field in ["capacity", "allocatable"] {
            assert!(
                node["status"][field][resource].is_string(),
                "{field} {resource}: {node}"
            );
        }
    }
    assert_eq!(node["status"]["capacity"]["pods"], "110");
    // Allocatable is capacity less the hard eviction thresholds (the
    // tests' 100Mi of memory and 1Gi of disk).
    let kib = |field: &str, resource: &str| {
        let value = node["status"][field][resource].as_str().unwrap();
        value.strip_suffix("Ki").unwrap().parse::<u64>().unwrap()
    };
    assert_eq!(
        kib("capacity", "memory") - kib("allocatable", "memory"),
        100 * 1024
    );
    assert_eq!(
        kib("capacity", "ephemeral-storage") - kib("allocatable", "ephemeral-storage"),
        1024 * 1024
    );
    let info = &node["status"]["nodeInfo"];
    for field in ["kernelVersion", "osImage", "kubeletVersion"] {
        assert!(!info[field].as_str().unwrap().is_empty(), "{field}: {info}");
    }
    // Its Lease in kube-node-lease, renewed.
    let renewed = || {
        agent.ok(&[
            "get",
            "lease",
            "-n",
            "kube-node-lease",
            NODE,
            "-o",
            "jsonpath={.spec.renewTime}",
        ])
    };
    let first = renewed();
    until(30, "the node's Lease to be renewed", || {
        (renewed() != first).then_some(())
    });
    // Real signals, far from the default thresholds on a test machine.
    let conditions: Vec<(&str, &str, &str)> = node["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["type"].as_str().unwrap(),
                c["status"].as_str().unwrap(),
                c["reason"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        conditions,
        [
            ("MemoryPressure", "False", "KubeletHasSufficientMemory"),
            ("DiskPressure", "False", "KubeletHasNoDiskPressure"),
            ("PIDPressure", "False", "KubeletHasSufficientPID"),
            ("Ready", "True", "KubeletReady"),
        ]
    );
    let cidr = node["spec"]["podCIDR"].as_str().unwrap().to_string();
    let prefix = cidr.trim_end_matches("0/24");

    // A web server: Running and Ready, its address in the node's range,
    // serving from the host.
    agent.ok(&[
        "run",
        "web",
        &format!("--image={BUSYBOX}"),
        "--image-pull-policy=IfNotPresent",
        "--",
        "httpd",
        "-f",
        "-p",
        "8080",
    ]);
    let web = agent.pod_until(60, "web", "web to be Running and Ready", |p| {
        p["status"]["phase"] == "Running" && ready(p)
    });
    let ip = web["status"]["podIP"].as_str().unwrap().to_string();
    assert!(ip.starts_with(prefix), "{ip} is not in {cidr}");
    // The node lists its images, as kubelet does (the scheduler's
    // ImageLocality reads them).
    let listed = until(30, "the node's status to list the busybox image", || {
        let names = agent.ok(&[
            "get",
            "node",
            NODE,
            "-o",
            "jsonpath={.status.images[*].names}",
        ]);
        names.contains(BUSYBOX).then_some(names)
    });
    assert!(listed.contains("tug.local/pause"), "{listed}");
    let main = status_of(&web, "web");
    assert!(
        main["containerID"]
            .as_str()
            .unwrap()
            .starts_with("containerd://")
    );
    assert!(main["state"]["running"]["startedAt"].is_string(), "{main}");
    assert_eq!(main["restartCount"], 0);
    assert!(!main["imageID"].as_str().unwrap().is_empty(), "{main}");
    assert_eq!(web["status"]["podIPs"][0]["ip"], ip.as_str());
    assert_eq!(web["status"]["hostIPs"][0]["ip"], web["status"]["hostIP"]);
    assert_eq!(web["status"]["qosClass"], "BestEffort");
    assert_eq!(main["ready"], true, "{main}");
    assert_eq!(main["started"], true, "{main}");
    assert!(web["status"]["startTime"].is_string(), "{web}");
    for kind in [
        "PodScheduled",
        "PodReadyToStartContainers",
        "Initialized",
        "ContainersReady",
        "Ready",
    ] {
        let set = web["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["type"] == kind && c["status"] == "True");
        assert!(set, "{kind}: {web}");
    }
    let answer = until(30, "the web server to answer on the pod's address", || {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect((ip.as_str(), 8080)).ok()?;
        stream.write_all(b"GET / HTTP/1.0\r\n\r\n").ok()?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer).ok()?;
        Some(answer)
    });
    assert!(
        answer.starts_with("HTTP/1.") && answer.contains(" 404 "),
        "{answer}"
    );
    let described = agent.ok(&["describe", "pod", "web"]);
    for event in [
        "already present on machine",
        "Created container: web",
        "Started container web",
    ] {
        assert!(described.contains(event), "no {event:?} in:\n{described}");
    }

    // A container that fails restarts with back-off.
    agent.ok(&[
        "run",
        "crash",
        &format!("--image={BUSYBOX}"),
        "--image-pull-policy=IfNotPresent",
        "--",
        "sh",
        "-c",
        "echo dying; exit 3",
    ]);
    let crash = agent.pod_until(60, "crash", "crash to loop in back-off", |p| {
        let c = status_of(p, "crash");
        c["state"]["waiting"]["reason"] == "CrashLoopBackOff"
            && c["restartCount"].as_i64().unwrap_or(0) >= 2
    });
    let c = status_of(&crash, "crash");
    assert_eq!(c["lastState"]["terminated"]["exitCode"], 3, "{c}");
    assert_eq!(c["lastState"]["terminated"]["reason"], "Error", "{c}");
    assert!(
        c["state"]["waiting"]["message"]
            .as_str()
            .unwrap()
            .starts_with("back-off "),
        "{c}"
    );
    assert_eq!(crash["status"]["phase"], "Running");
    let listed = agent.ok(&["get", "pod", "crash"]);
    assert!(listed.contains("CrashLoopBackOff"), "{listed}");
    assert_eq!(agent.ok(&["logs", "crash", "--previous"]), "dying\n");
    let described = agent.ok(&["describe", "pod", "crash"]);
    assert!(
        described.contains("Back-off restarting failed container crash"),
        "{described}"
    );

    // Pods that never restart end Succeeded or Failed.
    for (name, command, phase, reason, code) in [
        (
            "done",
            "echo one; echo two; echo bye > /dev/termination-log",
            "Succeeded",
            "Completed",
            0,
        ),
        ("failed", "false", "Failed", "Error", 1),
    ] {
        agent.ok(&[
            "run",
            name,
            "--restart=Never",
            &format!("--image={BUSYBOX}"),
            "--image-pull-policy=IfNotPresent",
            "--",
            "sh",
            "-c",
            command,
        ]);
        let pod = agent.pod_until(60, name, &format!("{name} to be {phase}"), |p| {
            p["status"]["phase"] == phase
        });
        let c = status_of(&pod, name);
        assert_eq!(c["state"]["terminated"]["reason"], reason, "{c}");
        assert_eq!(c["state"]["terminated"]["exitCode"], code, "{c}");
        assert_eq!(c["restartCount"], 0, "{c}");
    }

    // restartPolicy OnFailure: a failure restarts, a success ends.
    for (name, command) in [("retried", "exit 2"), ("succeeded", "true")] {
        agent.ok(&[
            "run",
            name,
            "--restart=OnFailure",
            &format!("--image={BUSYBOX}"),
            "--image-pull-policy=IfNotPresent",
            "--",
            "sh",
            "-c",
            command,
        ]);
    }
    let retried = agent.pod_until(60, "retried", "retried to restart", |p| {
        status_of(p, "retried")["restartCount"]
            .as_i64()
            .unwrap_or(0)
            >= 1
    });
    assert_eq!(retried["status"]["phase"], "Running", "{retried}");
    let succeeded = agent.pod_until(60, "succeeded", "succeeded to succeed", |p| {
        p["status"]["phase"] == "Succeeded"
    });
    assert_eq!(status_of(&succeeded, "succeeded")["restartCount"], 0);

    // Logs, as kubectl reads them through the API server and the agent.
    assert_eq!(agent.ok(&["logs", "done"]), "one\ntwo\n");
    assert_eq!(agent.ok(&["logs", "done", "--tail=1"]), "two\n");
    assert_eq!(agent.ok(&["logs", "done", "--since=1h"]), "one\ntwo\n");
    let future = "--since-time=2999-01-01T00:00:00Z";
    assert_eq!(agent.ok(&["logs", "done", future]), "");
    let stamped = agent.ok(&["logs", "done", "--timestamps"]);
    let first = stamped.lines().next().unwrap();
    assert!(
        first.ends_with("Z one") && first.starts_with("20"),
        "{stamped}"
    );
    let refused = agent.fails(&["logs", "done", "-c", "other"]);
    assert!(
        refused.contains("container other is not valid for pod done"),
        "{refused}"
    );
    let refused = agent.fails(&["logs", "web", "--previous"]);
    assert!(
        refused.contains("previous terminated container \"web\" in pod \"web\" not found"),
        "{refused}"
    );
    // Following ends when the container does, with every line.
    agent.ok(&[
        "run",
        "talk",
        "--restart=Never",
        &format!("--image={BUSYBOX}"),
        "--image-pull-policy=IfNotPresent",
        "--",
        "sh",
        "-c",
        "echo first; sleep 3; echo last",
    ]);
    agent.pod_until(60, "talk", "talk to run", |p| {
        p["status"]["phase"] == "Running"
    });
    assert_eq!(agent.ok(&["logs", "-f", "talk"]), "first\nlast\n");

    // Init containers run in order, each to completion, before the main one.
    agent.apply(INIT_POD);
    let staged = agent.pod_until(60, "staged", "staged to be Running", |p| {
        p["status"]["phase"] == "Running" && ready(p)
    });
    let inits = staged["status"]["initContainerStatuses"]
        .as_array()
        .unwrap();
    assert_eq!(inits.len(), 2);
    for init in inits {
        assert_eq!(init["state"]["terminated"]["reason"], "Completed", "{init}");
    }
    let first_finished = inits[0]["state"]["terminated"]["finishedAt"]
        .as_str()
        .unwrap();
    let second_started = inits[1]["state"]["terminated"]["startedAt"]
        .as_str()
        .unwrap();
    assert!(second_started >= first_finished, "{inits:?}");

    // The agent restarts (the whole server does): running pods are
    // adopted, not restarted.
    let before = status_of(&web, "web")["containerID"].clone();
    agent.restart();
    until(60, "the node to be Ready again", || {
        let output = agent.kubectl(&[
            "get",
            "node",
            NODE,
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
        ]);
        (String::from_utf8_lossy(&output.stdout) == "True").then_some(())
    });
    let web = agent.pod_until(30, "web", "web to be Ready after the restart", ready);
    let after = status_of(&web, "web");
    assert_eq!(after["containerID"], before, "{after}");
    assert_eq!(after["restartCount"], 0, "{after}");
    // A sandbox that dies is made again, and the pod's containers with it.
    let uid = web["metadata"]["uid"].as_str().unwrap().to_string();
    let socket = agent.socket();
    runtime().block_on(async {
        let runtime = tug_kubelet::cri::Runtime::connect(&socket).unwrap();
        for sandbox in runtime.sandboxes(Some(&uid)).await.unwrap() {
            runtime.stop_sandbox(&sandbox.id).await.unwrap();
        }
    });
    agent.pod_until(60, "web", "web to run in a new sandbox", |p| {
        ready(p) && status_of(p, "web")["restartCount"].as_i64() >= Some(1)
    });
    let described = agent.ok(&["describe", "pod", "web"]);
    assert!(
        described.contains("Pod sandbox changed, it will be killed and re-created."),
        "{described}"
    );
    // A finished pod keeps its status, its termination message with it.
    let done = agent.ok(&[
        "get",
        "pod",
        "done",
        "-o",
        "jsonpath={.status.containerStatuses[0].state.terminated.message}",
    ]);
    assert_eq!(done, "bye\n");

    // Deletion stops the containers, then the pod object goes.
    agent.ok(&[
        "delete",
        "pod",
        "web",
        "staged",
        "done",
        "failed",
        "crash",
        "talk",
        "retried",
        "succeeded",
        "--grace-period=2",
    ]);
    let listed = agent.ok(&["get", "pods", "-o", "name"]);
    assert_eq!(listed.trim(), "", "{listed}");
    until(30, "the runtime to hold no container", || {
        (agent.runtime_containers() == 0).then_some(())
    });
}

trait Apply {
    fn apply(&self, manifest: &str);
}

impl Apply for Server {
    fn apply(&self, manifest: &str) {
        let path = self.dir.join(format!("manifest-{}.yaml", manifest.len()));
        std::fs::write(&path, manifest).unwrap();
        self.ok(&["apply", "-f", path.to_str().unwrap()]);
    }
}

const SEED: &str = "apiVersion: v1
kind: ConfigMap
metadata: {name: settings}
data: {greeting: hello, mode: fast}
---
apiVersion: v1
kind: Secret
metadata: {name: creds}
stringData: {password: s3cret}
---
apiVersion: v1
kind: Pod
metadata:
  name: seed
  labels: {app: seed}
spec:
  terminationGracePeriodSeconds: 1
  volumes:
  - {name: shared, emptyDir: {}}
  - {name: scratch, emptyDir: {medium: Memory, sizeLimit: 1Mi}}
  - {name: settings, configMap: {name: settings}}
  - {name: creds, secret: {secretName: creds}}
  - name: info
    downwardAPI:
      items:
      - {path: labels, fieldRef: {fieldPath: metadata.labels}}
  containers:
  - name: web
    image: tug.local/busybox:1
    imagePullPolicy: IfNotPresent
    command: [sh, -c, 'echo \"$GREETING from $POD\" > /www/index.html; exec httpd -f -p 8080 -h /www']
    env:
    - {name: GREETING, valueFrom: {configMapKeyRef: {name: settings, key: greeting}}}
    - {name: POD, valueFrom: {fieldRef: {fieldPath: metadata.name}}}
    volumeMounts:
    - {name: shared, mountPath: /www}
  - name: agent
    image: tug.local/busybox:1
    imagePullPolicy: IfNotPresent
    command:
    - sh
    - -c
    - 'while true; do echo \"$(wget -q -O - http://localhost:8080/) mode=$(cat /etc/settings/mode) pw=$PASSWORD file=$(cat /etc/creds/password) $(cat /etc/info/labels) tmpfs=$(grep -c \" /scratch tmpfs \" /proc/mounts) secret=$(grep -c \" /etc/creds tmpfs \" /proc/mounts) shared=$(cat /shared/index.html) size=$(df -k /scratch | tail -1 | tr -s \" \" | cut -d \" \" -f2)\"; sleep 1; done'
    env:
    - {name: PASSWORD, valueFrom: {secretKeyRef: {name: creds, key: password}}}
    volumeMounts:
    - {name: shared, mountPath: /shared, readOnly: true}
    - {name: settings, mountPath: /etc/settings}
    - {name: creds, mountPath: /etc/creds}
    - {name: info, mountPath: /etc/info}
    - {name: scratch, mountPath: /scratch}
";

#[test]
fn containers_share_volumes_and_localhost_and_see_config_change() {
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::start(dir.path());
    let archive = busybox_archive(dir.path());
    agent.tug(&["images", "import", archive.to_str().unwrap()]);

    // The seed's pod: a web server and an agent sharing an emptyDir and
    // localhost, with settings from a ConfigMap, a Secret and the
    // downward API, as environment and as files.
    agent.apply(SEED);
    agent.pod_until(60, "seed", "seed to be Running and Ready", |p| {
        p["status"]["phase"] == "Running" && ready(p)
    });
    // (the Secret's files on tmpfs; the web server's page read over
    // localhost and from the shared emptyDir; the Memory emptyDir sized
    // by its sizeLimit, 1Mi)
    let expected = "hello from seed mode=fast pw=s3cret file=s3cret app=\"seed\" tmpfs=1 secret=1 shared=hello from seed size=1024";
    until(30, "the agent to read the web server's page", || {
        let logs = agent.kubectl(&["logs", "seed", "-c", "agent", "--tail=1"]);
        (String::from_utf8_lossy(&logs.stdout).trim() == expected).then_some(())
    });
    // A changed ConfigMap reaches the running pod's files.
    agent.ok(&[
        "patch",
        "configmap",
        "settings",
        "-p",
        r#"{"data":{"mode":"slow"}}"#,
    ]);
    let changed = expected.replace("mode=fast", "mode=slow");
    until(60, "the changed setting to reach the pod", || {
        let logs = agent.kubectl(&["logs", "seed", "-c", "agent", "--tail=1"]);
        (String::from_utf8_lossy(&logs.stdout).trim() == changed).then_some(())
    });
    // So does a changed Secret (the environment keeps what it started with).
    agent.ok(&[
        "patch",
        "secret",
        "creds",
        "-p",
        r#"{"stringData":{"password":"n3w"}}"#,
    ]);
    let changed = changed.replace("file=s3cret", "file=n3w");
    until(60, "the changed secret to reach the pod", || {
        let logs = agent.kubectl(&["logs", "seed", "-c", "agent", "--tail=1"]);
        (String::from_utf8_lossy(&logs.stdout).trim() == changed).then_some(())
    });

    // A missing ConfigMap keeps a container from starting, with upstream's
    // reason; the pod starts once it exists.
    agent.ok(&[
        "run",
        "later",
        &format!("--image={BUSYBOX}"),
        "--image-pull-policy=IfNotPresent",
        "--overrides",
        r#"{"spec":{"containers":[{"name":"later","image":"tug.local/busybox:1","imagePullPolicy":"IfNotPresent","command":["sleep","3600"],"env":[{"name":"X","valueFrom":{"configMapKeyRef":{"name":"absent","key":"x"}}}]}]}}"#,
    ]);
    let waiting = agent.pod_until(60, "later", "later to wait for its ConfigMap", |p| {
        status_of(p, "later")["state"]["waiting"]["reason"] == "CreateContainerConfigError"
    });
    assert_eq!(
        status_of(&waiting, "later")["state"]["waiting"]["message"],
        "configmap \"absent\" not found"
    );
    agent.ok(&["create", "configmap", "absent", "--from-literal=x=1"]);
    agent.pod_until(60, "later", "later to run once its ConfigMap exists", |p| {
        p["status"]["phase"] == "Running" && ready(p)
    });

    // A termination message is read from the file the container wrote.
    agent.ok(&[
        "run",
        "bye",
        "--restart=Never",
        &format!("--image={BUSYBOX}"),
        "--image-pull-policy=IfNotPresent",
        "--",
        "sh",
        "-c",
        "echo see you > /dev/termination-log",
    ]);
    let bye = agent.pod_until(60, "bye", "bye to succeed", |p| {
        p["status"]["phase"] == "Succeeded"
    });
    assert_eq!(
        status_of(&bye, "bye")["state"]["terminated"]["message"],
        "see you\n"
    );

    // FallbackToLogsOnError: a failed container without a message file
    // ends with the tail of its log; a terminationMessagePath; envFrom, workingDir and a
    // resourceFieldRef reach the environment.
    agent.apply(&format!(
        "apiVersion: v1
kind: Pod
metadata:
  name: fallback
spec:
  restartPolicy: Never
  containers:
  - name: c
    image: {BUSYBOX}
    imagePullPolicy: IfNotPresent
    command: [sh, -c, 'echo first; echo it broke; exit 2']
    terminationMessagePolicy: FallbackToLogsOnError
---
apiVersion: v1
kind: Pod
metadata:
  name: elsewhere
spec:
  restartPolicy: Never
  containers:
  - name: c
    image: {BUSYBOX}
    imagePullPolicy: IfNotPresent
    command: [sh, -c, 'echo farewell > /tmp/goodbye']
    terminationMessagePath: /tmp/goodbye
---
apiVersion: v1
kind: Pod
metadata:
  name: environ
spec:
  restartPolicy: Never
  containers:
  - name: c
    image: {BUSYBOX}
    imagePullPolicy: IfNotPresent
    workingDir: /tmp
    command: [sh, -c, 'echo $(pwd) $greeting $mode $LIMIT']
    envFrom:
    - configMapRef: {{name: settings}}
    env:
    - name: LIMIT
      valueFrom: {{resourceFieldRef: {{resource: limits.memory, divisor: 1Mi}}}}
    resources:
      limits: {{memory: 64Mi}}
"
    ));
    let fallback = agent.pod_until(60, "fallback", "fallback to fail", |p| {
        p["status"]["phase"] == "Failed"
    });
    let terminated = &status_of(&fallback, "c")["state"]["terminated"];
    assert_eq!(terminated["exitCode"], 2);
    assert_eq!(terminated["message"], "first\nit broke\n");
    // A message file at a path of the container's choosing.
    let elsewhere = agent.pod_until(60, "elsewhere", "elsewhere to succeed", |p| {
        p["status"]["phase"] == "Succeeded"
    });
    assert_eq!(
        status_of(&elsewhere, "c")["state"]["terminated"]["message"],
        "farewell\n"
    );
    agent.pod_until(60, "environ", "environ to succeed", |p| {
        p["status"]["phase"] == "Succeeded"
    });
    assert_eq!(agent.ok(&["logs", "environ"]), "/tmp hello slow 64\n");
    // Every container's log at once.
    let all = agent.ok(&["logs", "seed", "--all-containers", "--tail=1"]);
    assert!(all.contains("mode=slow"), "{all}");

    agent.ok(&[
        "delete",
        "pod",
        "seed",
        "later",
        "bye",
        "fallback",
        "elsewhere",
        "environ",
        "--grace-period=1",
    ]);
    // The pods' volumes are gone from the node, tmpfs mounts included.
    let pods_dir = dir.path().join("data/agent/pods");
    until(30, "the pods' directories to be removed", || {
        let left = std::fs::read_dir(&pods_dir).map_or(0, |d| d.count());
        (left == 0).then_some(())
    });
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
    assert!(!mounts.contains(pods_dir.to_str().unwrap()), "{mounts}");
}

const PROBED: &str = "apiVersion: v1
kind: Pod
metadata:
  name: probed
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: web
    image: tug.local/busybox:1
    imagePullPolicy: IfNotPresent
    command: [sh, -c, 'mkdir /www; httpd -p 8080 -h /www; sleep 2; echo ok > /www/ready; sleep 5; rm /www/ready; sleep 5; echo ok > /www/ready; sleep 3600']
    startupProbe:
      tcpSocket: {port: 8080}
      periodSeconds: 1
    readinessProbe:
      httpGet: {path: /ready, port: 8080}
      periodSeconds: 1
      failureThreshold: 1
---
apiVersion: v1
kind: Pod
metadata:
  name: sick
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    image: tug.local/busybox:1
    imagePullPolicy: IfNotPresent
    command: [sh, -c, 'touch /tmp/alive; sleep 2; rm /tmp/alive; sleep 3600']
    livenessProbe:
      exec: {command: [cat, /tmp/alive]}
      periodSeconds: 1
      failureThreshold: 1
";

#[test]
fn probes_gate_readiness_and_restart_what_fails_its_liveness() {
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::start(dir.path());
    let archive = busybox_archive(dir.path());
    agent.tug(&["images", "import", archive.to_str().unwrap()]);
    agent.apply(PROBED);

    // Readiness follows the HTTP probe: ready, then not, then ready again,
    // the container running throughout.
    for (ready_now, what) in [
        (true, "probed to turn Ready"),
        (false, "probed to turn not Ready when its probe fails"),
        (true, "probed to turn Ready again"),
    ] {
        let pod = agent.pod_until(60, "probed", what, |p| {
            ready(p) == ready_now && status_of(p, "web")["state"]["running"].is_object()
        });
        let web = status_of(&pod, "web");
        assert_eq!(web["ready"], ready_now, "{web}");
        assert_eq!(web["started"], true, "{web}");
        assert_eq!(web["restartCount"], 0, "{web}");
    }
    let described = agent.ok(&["describe", "pod", "probed"]);
    assert!(
        described.contains("Readiness probe failed: HTTP probe failed with statuscode: 404"),
        "{described}"
    );

    // A failing liveness probe restarts the container.
    let sick = agent.pod_until(
        60,
        "sick",
        "sick to be restarted by its liveness probe",
        |p| status_of(p, "app")["restartCount"].as_i64().unwrap_or(0) >= 1,
    );
    assert!(
        status_of(&sick, "app")["lastState"]["terminated"].is_object(),
        "{sick}"
    );
    let described = agent.ok(&["describe", "pod", "sick"]);
    assert!(described.contains("Liveness probe failed"), "{described}");
    assert!(
        described.contains("Container app failed liveness probe, will be restarted"),
        "{described}"
    );
    agent.ok(&["delete", "pod", "probed", "sick", "--grace-period=1"]);
}

#[test]
fn hooks_run_deadlines_end_pods_and_missing_images_back_off() {
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::start(dir.path());
    let archive = busybox_archive(dir.path());
    agent.tug(&["images", "import", archive.to_str().unwrap()]);
    let shared = dir.path().join("hooks");
    std::fs::create_dir_all(&shared).unwrap();
    // SIGTERM is noted and ignored: only SIGKILL ends the container.
    std::fs::write(
        shared.join("run.sh"),
        "trap 'echo term >> /out/log; termed=1' TERM
while true; do
  cat /out/posted 2>/dev/null
  sleep 1
  if [ -n \"$termed\" ]; then echo alive >> /out/log; fi
done
",
    )
    .unwrap();
    agent.apply(&format!(
        "apiVersion: v1
kind: Pod
metadata:
  name: hooked
spec:
  terminationGracePeriodSeconds: 5
  volumes:
  - {{name: out, hostPath: {{path: {}, type: Directory}}}}
  containers:
  - name: app
    image: tug.local/busybox:1
    imagePullPolicy: IfNotPresent
    command: [sh, /out/run.sh]
    volumeMounts:
    - {{name: out, mountPath: /out}}
    lifecycle:
      postStart:
        exec: {{command: [sh, -c, 'echo posted > /out/posted']}}
      preStop:
        exec: {{command: [sh, -c, 'echo stopped >> /out/log']}}
",
        shared.display()
    ));
    agent.pod_until(60, "hooked", "hooked to run", ready);
    assert_eq!(
        std::fs::read_to_string(shared.join("posted")).unwrap(),
        "posted\n"
    );
    // Deletion: preStop, then SIGTERM, then SIGKILL once the grace
    // (5 s) is over, and the pod goes.
    agent.ok(&["delete", "pod", "hooked", "--timeout=60s"]);
    let log = std::fs::read_to_string(shared.join("log")).unwrap();
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines[..2], ["stopped", "term"], "{log}");
    // (it notes it is alive every second: a kill at the 5 s grace leaves
    // about 4 such lines, preStop's time included)
    assert!(
        (2..=7).contains(&(lines.len() - 2)) && lines[2..].iter().all(|l| *l == "alive"),
        "the container ran on after SIGTERM until killed at the grace's end: {log}"
    );

    // httpGet hooks, to a server on the host (by address, and by name):
    // each GET is made with kubelet's user agent, and any answer is a
    // success (the preStop hook's 500 included); a tcpSocket hook is not
    // run by kubelet, and fails.
    let www = dir.path().join("www");
    std::fs::create_dir_all(www.join("cgi-bin")).unwrap();
    std::fs::write(
        www.join("cgi-bin/hook"),
        format!(
            "#!/bin/sh\necho \"$QUERY_STRING $HTTP_USER_AGENT\" >> {}/hits\nprintf 'Status: 500 Internal Server Error\\r\\nContent-Type: text/plain\\r\\n\\r\\nno\\n'\n",
            www.display()
        ),
    )
    .unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            www.join("cgi-bin/hook"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
    }
    let port = free_port();
    let _server = Killed(
        Command::new("busybox")
            .args(["httpd", "-f", "-p", &format!("127.0.0.1:{port}"), "-h"])
            .arg(&www)
            .spawn()
            .unwrap(),
    );
    until(30, "the hooks' server to listen", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).ok()
    });
    agent.apply(&format!(
        "apiVersion: v1
kind: Pod
metadata: {{name: web-hooked}}
spec:
  terminationGracePeriodSeconds: 5
  containers:
  - name: app
    image: {BUSYBOX}
    imagePullPolicy: IfNotPresent
    command: [sleep, '3600']
    lifecycle:
      postStart:
        httpGet: {{host: 127.0.0.1, port: {port}, path: '/cgi-bin/hook?postStart'}}
      preStop:
        httpGet: {{host: localhost, port: {port}, path: '/cgi-bin/hook?preStop'}}
---
apiVersion: v1
kind: Pod
metadata: {{name: tcp-hooked}}
spec:
  restartPolicy: Never
  containers:
  - name: app
    image: {BUSYBOX}
    imagePullPolicy: IfNotPresent
    command: [sleep, '3600']
    lifecycle:
      postStart:
        tcpSocket: {{host: 127.0.0.1, port: {port}}}
"
    ));
    agent.pod_until(60, "web-hooked", "web-hooked to run", ready);
    let hits = || std::fs::read_to_string(www.join("hits")).unwrap_or_default();
    until(10, "the postStart hook's GET", || {
        (hits() == "postStart kube-lifecycle/1.33\n").then_some(())
    });
    agent.ok(&["delete", "pod", "web-hooked", "--timeout=60s"]);
    assert_eq!(
        hits(),
        "postStart kube-lifecycle/1.33\npreStop kube-lifecycle/1.33\n"
    );
    let tcp = agent.pod_until(60, "tcp-hooked", "tcp-hooked's hook to fail", |p| {
        status_of(p, "app")["state"]["terminated"].is_object()
    });
    assert_eq!(tcp["status"]["phase"], "Failed", "{tcp}");
    let described = agent.ok(&["describe", "pod", "tcp-hooked"]);
    assert!(
        described.contains("FailedPostStartHook") && described.contains("invalid handler"),
        "{described}"
    );
    let hooked_events = agent.ok(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=web-hooked",
        "-o",
        "jsonpath={.items[*].reason}",
    ]);
    assert!(!hooked_events.contains("Failed"), "{hooked_events}");
    agent.ok(&["delete", "pod", "tcp-hooked", "--grace-period=1"]);

    // activeDeadlineSeconds ends a pod, Failed with upstream's reason.
    agent.ok(&[
        "run",
        "brief",
        &format!("--image={BUSYBOX}"),
        "--image-pull-policy=IfNotPresent",
        "--overrides",
        r#"{"spec":{"activeDeadlineSeconds":2}}"#,
        "--",
        "sleep",
        "3600",
    ]);
    let brief = agent.pod_until(60, "brief", "brief to pass its deadline", |p| {
        p["status"]["phase"] == "Failed"
    });
    assert_eq!(brief["status"]["reason"], "DeadlineExceeded");
    assert_eq!(
        brief["status"]["message"],
        "Pod was active on the node longer than the specified deadline"
    );

    // An image that cannot be pulled: ErrImagePull, then ImagePullBackOff
    // while the agent waits to try again (the first shows only until the
    // next sync, so the events tell it).
    agent.ok(&["run", "ghost", "--image=127.0.0.1:1/absent:1"]);
    agent.pod_until(90, "ghost", "ghost to back off pulling its image", |p| {
        status_of(p, "ghost")["state"]["waiting"]["reason"] == "ImagePullBackOff"
    });
    let described = agent.ok(&["describe", "pod", "ghost"]);
    for event in [
        "Failed to pull image \"127.0.0.1:1/absent:1\"",
        "Error: ErrImagePull",
        "Back-off pulling image \"127.0.0.1:1/absent:1\"",
    ] {
        assert!(described.contains(event), "no {event:?} in:\n{described}");
    }
    // imagePullPolicy Never with the image absent: never pulled.
    agent.ok(&[
        "run",
        "never",
        "--image=tug.local/absent:1",
        "--image-pull-policy=Never",
    ]);
    let never = agent.pod_until(60, "never", "never to wait for its image", |p| {
        status_of(p, "never")["state"]["waiting"]["reason"] == "ErrImageNeverPull"
    });
    assert_eq!(
        status_of(&never, "never")["state"]["waiting"]["message"],
        "Container image \"tug.local/absent:1\" is not present with pull policy of Never"
    );
    agent.ok(&[
        "delete",
        "pod",
        "brief",
        "ghost",
        "never",
        "--grace-period=1",
    ]);
}

const STREAMED: &str = "apiVersion: v1
kind: Pod
metadata:
  name: streamed
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: web
    image: tug.local/busybox:1
    imagePullPolicy: IfNotPresent
    command: [sh, -c, 'mkdir -p /www && echo hello > /www/index.html && exec httpd -f -p 8080 -h /www']
  - name: echo
    image: tug.local/busybox:1
    imagePullPolicy: IfNotPresent
    command: [sh, -c, 'while read line; do echo \"got $line\"; done; sleep 3600']
    stdin: true
";

impl Agent {
    /// kubectl as a command to adjust: its stdin, environment, a spawn.
    fn kubectl_command(&self, args: &[&str]) -> Command {
        let mut command = Command::new("kubectl");
        command
            .arg(format!("--cache-dir={}", self.dir.join("cache").display()))
            .args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("HOME", &self.dir);
        command
    }

    /// kubectl with `input` on its standard input.
    fn kubectl_input(&self, args: &[&str], env: &[(&str, &str)], input: &[u8]) -> Output {
        use std::io::Write;
        let mut child = self
            .kubectl_command(args)
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let input = input.to_vec();
        let writer = std::thread::spawn(move || {
            let _ = stdin.write_all(&input);
        });
        let output = child.wait_with_output().unwrap();
        writer.join().unwrap();
        output
    }
}

/// A child's standard output, line by line, on a channel.
fn lines_of(child: &mut std::process::Child) -> std::sync::mpsc::Receiver<String> {
    use std::io::BufRead;
    let stdout = child.stdout.take().unwrap();
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if sender.send(line).is_err() {
                return;
            }
        }
    });
    receiver
}

/// Waits up to 30 s for a line containing `wanted`.
fn line_with(lines: &std::sync::mpsc::Receiver<String>, wanted: &str) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) if line.contains(wanted) => return line,
            Ok(_) => continue,
            Err(_) => panic!("no line with {wanted:?} within 30 s"),
        }
    }
}

/// A GET of `/` through 127.0.0.1:`port`; the whole answer.
fn http_get(port: u16) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    stream
        .write_all(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    answer
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn exec_attach_port_forward_and_cp_reach_the_containers() {
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::start(dir.path());
    let archive = busybox_archive(dir.path());
    agent.tug(&["images", "import", archive.to_str().unwrap()]);
    agent.apply(STREAMED);
    agent.pod_until(60, "streamed", "streamed to run", ready);

    // exec in one container reaches the other on localhost.
    let page = agent.ok(&[
        "exec",
        "streamed",
        "-c",
        "echo",
        "--",
        "wget",
        "-qO-",
        "http://localhost:8080/",
    ]);
    assert_eq!(page, "hello\n");

    // stdout and stderr apart, and the command's exit code, over
    // WebSocket (kubectl's default) and over SPDY (its fallback).
    for env in [
        [("KUBECTL_REMOTE_COMMAND_WEBSOCKETS", "true")],
        [("KUBECTL_REMOTE_COMMAND_WEBSOCKETS", "false")],
    ] {
        let failed = agent
            .kubectl_command(&[
                "exec",
                "streamed",
                "-c",
                "web",
                "--",
                "sh",
                "-c",
                "echo out; echo err >&2; exit 3",
            ])
            .envs(env)
            .output()
            .unwrap();
        assert_eq!(failed.status.code(), Some(3), "{env:?}");
        assert_eq!(String::from_utf8_lossy(&failed.stdout), "out\n");
        let stderr = String::from_utf8_lossy(&failed.stderr);
        assert!(stderr.starts_with("err\n"), "{stderr}");
        assert!(
            stderr.contains("command terminated with exit code 3"),
            "{stderr}"
        );

        // stdin reaches the command, and its end ends the command.
        let input: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let counted = agent.kubectl_input(
            &[
                "exec",
                "-i",
                "streamed",
                "-c",
                "web",
                "--",
                "sh",
                "-c",
                "cat | wc -c",
            ],
            &env,
            &input,
        );
        assert!(counted.status.success(), "{counted:?}");
        assert_eq!(String::from_utf8_lossy(&counted.stdout).trim(), "200000");
    }

    // exec -it: the command runs on a terminal.
    let terminal = Command::new("script")
        .args(["-qec"])
        .arg(format!(
            "kubectl --cache-dir={} exec -it streamed -c web -- tty",
            dir.path().join("cache").display()
        ))
        .arg("/dev/null")
        .env("KUBECONFIG", &agent.kubeconfig)
        .env("HOME", dir.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let seen = String::from_utf8_lossy(&terminal.stdout);
    assert!(terminal.status.success(), "{seen}");
    assert!(seen.contains("/dev/pts/"), "{seen}");

    // The agent's port lets in only clients of the cluster's CA with
    // the right to (the API server, system:masters): without a client
    // certificate 401, as kubelet answers; the admin reads logs.
    let raw = |field: &str| {
        let data = agent.ok(&[
            "config",
            "view",
            "--raw",
            "-o",
            &format!("jsonpath={{.users[0].user.{field}}}"),
        ]);
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD
            .decode(data.trim())
            .unwrap()
    };
    let (cert, key) = (dir.path().join("admin.crt"), dir.path().join("admin.key"));
    std::fs::write(&cert, raw("client-certificate-data")).unwrap();
    std::fs::write(&key, raw("client-key-data")).unwrap();
    for (credentials, code) in [
        (vec![], "401"),
        (
            vec![
                "--cert".to_string(),
                cert.display().to_string(),
                "--key".to_string(),
                key.display().to_string(),
            ],
            "200",
        ),
    ] {
        let answer = Command::new("curl")
            .args(["-sk", "-o", "/dev/null", "-w", "%{http_code}"])
            .args(&credentials)
            .arg("https://127.0.0.1:10250/containerLogs/default/streamed/web")
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&answer.stdout), code);
    }

    // A container that does not exist, and a pod that does not.
    let missing = agent.fails(&["exec", "streamed", "-c", "nope", "--", "true"]);
    assert!(
        missing.contains("container nope is not valid for pod streamed"),
        "{missing}"
    );
    let absent = agent.fails(&["exec", "ghost", "--", "true"]);
    assert!(absent.contains("pods \"ghost\" not found"), "{absent}");

    // attach: what is typed reaches the container's stdin, its output
    // comes back; over WebSocket and over SPDY.
    for websockets in ["true", "false"] {
        let mut attached = agent
            .kubectl_command(&["attach", "-i", "streamed", "-c", "echo"])
            .env("KUBECTL_REMOTE_COMMAND_WEBSOCKETS", websockets)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let lines = lines_of(&mut attached);
        {
            use std::io::Write;
            let stdin = attached.stdin.as_mut().unwrap();
            writeln!(stdin, "ping-{websockets}").unwrap();
            stdin.flush().unwrap();
        }
        line_with(&lines, &format!("got ping-{websockets}"));
        let _ = attached.kill();
        let _ = attached.wait();
    }

    // port-forward, over WebSocket and over SPDY: two connections each.
    for websockets in ["true", "false"] {
        let port = free_port();
        let mut forward = agent
            .kubectl_command(&["port-forward", "pod/streamed", &format!("{port}:8080")])
            .env("KUBECTL_PORT_FORWARD_WEBSOCKETS", websockets)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let lines = lines_of(&mut forward);
        line_with(&lines, &format!("127.0.0.1:{port} -> 8080"));
        for _ in 0..2 {
            let answer = http_get(port);
            assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
            assert!(answer.ends_with("\r\n\r\nhello\n"), "{answer}");
        }
        let _ = forward.kill();
        let _ = forward.wait();
    }

    // cp, both ways, of a file larger than a stream's buffers.
    let original: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 256) as u8).collect();
    let local = dir.path().join("original.bin");
    std::fs::write(&local, &original).unwrap();
    agent.ok(&[
        "cp",
        local.to_str().unwrap(),
        "streamed:/www/copy.bin",
        "-c",
        "web",
    ]);
    let size = agent.ok(&[
        "exec",
        "streamed",
        "-c",
        "web",
        "--",
        "wc",
        "-c",
        "/www/copy.bin",
    ]);
    assert_eq!(size.split_whitespace().next(), Some("300000"));
    let back = dir.path().join("back.bin");
    agent.ok(&[
        "cp",
        "streamed:/www/copy.bin",
        back.to_str().unwrap(),
        "-c",
        "web",
    ]);
    assert!(
        std::fs::read(&back).unwrap() == original,
        "cp changed the file"
    );

    agent.ok(&["delete", "pod", "streamed", "--grace-period=1"]);
}

#[test]
fn limits_security_contexts_and_host_ports_apply_to_containers() {
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::start(dir.path());
    let archive = busybox_archive(dir.path());
    agent.tug(&["images", "import", archive.to_str().unwrap()]);
    let host_port = free_port();
    agent.apply(&format!(
        "apiVersion: v1
kind: Pod
metadata:
  name: hog
spec:
  restartPolicy: Never
  containers:
  - name: hog
    image: tug.local/busybox:1
    imagePullPolicy: IfNotPresent
    command: [dd, if=/dev/zero, of=/dev/null, bs=64M, count=1]
    resources:
      limits: {{memory: 16Mi}}
---
apiVersion: v1
kind: Pod
metadata:
  name: besteffort
spec:
  restartPolicy: Never
  containers:
  - name: c
    image: tug.local/busybox:1
    imagePullPolicy: IfNotPresent
    command: [cat, /proc/self/oom_score_adj]
---
apiVersion: v1
kind: Pod
metadata:
  name: guaranteed
spec:
  restartPolicy: Never
  containers:
  - name: c
    image: tug.local/busybox:1
    imagePullPolicy: IfNotPresent
    command:
    - sh
    - -c
    - |
      cat /proc/self/oom_score_adj
      if [ -f /sys/fs/cgroup/cpu.max ]; then
        cat /sys/fs/cgroup/cpu.max /sys/fs/cgroup/memory.max /sys/fs/cgroup/cpu.weight
      else
        cd /sys/fs/cgroup
        echo $(cat cpu/cpu.cfs_quota_us) $(cat cpu/cpu.cfs_period_us)
        cat memory/memory.limit_in_bytes cpu/cpu.shares
      fi
    resources:
      limits: {{memory: 64Mi, cpu: 100m}}
---
apiVersion: v1
kind: Pod
metadata:
  name: rootless
spec:
  restartPolicy: Never
  securityContext: {{runAsNonRoot: true}}
  containers:
  - name: refused
    image: tug.local/busybox:1
    imagePullPolicy: IfNotPresent
    command: [id, -u]
---
apiVersion: v1
kind: Pod
metadata:
  name: user
spec:
  restartPolicy: Never
  securityContext: {{runAsNonRoot: true, runAsUser: 1000}}
  containers:
  - name: c
    image: tug.local/busybox:1
    imagePullPolicy: IfNotPresent
    command: [id, -u]
---
apiVersion: v1
kind: Pod
metadata:
  name: secured
spec:
  restartPolicy: Never
  containers:
  - name: privileged
    image: tug.local/busybox:1
    imagePullPolicy: IfNotPresent
    command: [sh, -c, 'mkdir /m && mount -t tmpfs none /m && echo mounted || echo refused']
    securityContext: {{privileged: true}}
  - name: unprivileged
    image: tug.local/busybox:1
    imagePullPolicy: IfNotPresent
    command: [sh, -c, 'mkdir /m && mount -t tmpfs none /m 2>/dev/null && echo mounted || echo refused']
  - name: added
    image: tug.local/busybox:1
    imagePullPolicy: IfNotPresent
    command: [sh, -c, 'mkdir /m && mount -t tmpfs none /m && echo mounted || echo refused']
    securityContext: {{capabilities: {{add: [SYS_ADMIN]}}}}
  - name: dropped
    image: tug.local/busybox:1
    imagePullPolicy: IfNotPresent
    command: [sh, -c, 'touch /f && chown 1:1 /f 2>/dev/null && echo chowned || echo refused']
    securityContext: {{capabilities: {{drop: [CHOWN]}}}}
  - name: readonly
    image: tug.local/busybox:1
    imagePullPolicy: IfNotPresent
    command: [sh, -c, 'touch /f 2>/dev/null && echo wrote || echo read-only']
    securityContext: {{readOnlyRootFilesystem: true}}
  - name: group
    image: tug.local/busybox:1
    imagePullPolicy: IfNotPresent
    command: [sh, -c, 'echo $(id -u) $(id -g)']
    securityContext: {{runAsUser: 1000, runAsGroup: 2000}}
  - name: contained
    image: tug.local/busybox:1
    imagePullPolicy: IfNotPresent
    command: [sh, -c, 'grep NoNewPrivs /proc/self/status | cut -f2']
    securityContext: {{allowPrivilegeEscalation: false}}
---
apiVersion: v1
kind: Pod
metadata:
  name: published
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: web
    image: tug.local/busybox:1
    imagePullPolicy: IfNotPresent
    command: [sh, -c, 'mkdir -p /www && echo hello > /www/index.html && exec httpd -f -p 8080 -h /www']
    ports:
    - {{containerPort: 8080, hostPort: {host_port}}}
"
    ));

    // Past its memory limit, a container is OOMKilled.
    // (containerd may report the OOM kill a moment after the exit.)
    let hog = agent.pod_until(60, "hog", "hog to be OOMKilled", |p| {
        p["status"]["phase"] == "Failed"
            && status_of(p, "hog")["state"]["terminated"]["reason"] == "OOMKilled"
    });
    let terminated = &status_of(&hog, "hog")["state"]["terminated"];
    assert_eq!(terminated["exitCode"], 137);

    // oom_score_adj by QoS class, as kubelet's (Guaranteed's -997 is 0
    // where the kernel refuses negative values); the limits in the
    // container's cgroup (cgroup v1 or v2): a CPU quota of 10ms per 100ms,
    // 64Mi of memory, and CPU shares of 100m (102 shares, weight 4 in v2).
    for (pod, wanted) in [
        ("besteffort", &["1000"][..]),
        ("guaranteed", &["-997", "0"]),
    ] {
        agent.pod_until(60, pod, "the pod to succeed", |p| {
            p["status"]["phase"] == "Succeeded"
        });
        let said = agent.ok(&["logs", pod]);
        let lines: Vec<&str> = said.lines().collect();
        assert!(wanted.contains(&lines[0]), "{pod}: {said}");
        if pod == "guaranteed" {
            assert_eq!(lines[1..3], ["10000 100000", "67108864"], "{said}");
            assert!(["102", "4"].contains(&lines[3]), "{said}");
        }
    }

    // runAsNonRoot: refused for an image that runs as root, unless a user
    // is given.
    let refused = agent.pod_until(60, "rootless", "rootless to be refused", |p| {
        status_of(p, "refused")["state"]["waiting"]["reason"] == "CreateContainerConfigError"
    });
    let uid = refused["metadata"]["uid"].as_str().unwrap();
    assert_eq!(
        status_of(&refused, "refused")["state"]["waiting"]["message"],
        format!(
            "container has runAsNonRoot and image will run as root (pod: \"rootless_default({uid})\", container: refused)"
        )
    );
    agent.pod_until(60, "user", "user to succeed", |p| {
        p["status"]["phase"] == "Succeeded"
    });
    assert_eq!(agent.ok(&["logs", "user"]), "1000\n");

    // privileged, capabilities, a read-only root, runAsGroup,
    // allowPrivilegeEscalation (no_new_privs).
    agent.pod_until(60, "secured", "secured to succeed", |p| {
        p["status"]["phase"] == "Succeeded"
    });
    for (container, wanted) in [
        ("privileged", "mounted"),
        ("unprivileged", "refused"),
        ("added", "mounted"),
        ("dropped", "refused"),
        ("readonly", "read-only"),
        ("group", "1000 2000"),
        ("contained", "1"),
    ] {
        let said = agent.ok(&["logs", "secured", "-c", container]);
        assert_eq!(said.trim(), wanted, "{container}");
    }

    // A hostPort reaches the container from the node.
    agent.pod_until(60, "published", "published to run", ready);
    let node_ip = agent.ok(&[
        "get",
        "node",
        NODE,
        "-o",
        "jsonpath={.status.addresses[?(@.type==\"InternalIP\")].address}",
    ]);
    let answer = until(30, "the host port to answer", || {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect((node_ip.as_str(), host_port)).ok()?;
        stream
            .set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .ok()?;
        stream.write_all(b"GET / HTTP/1.0\r\n\r\n").ok()?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer).ok()?;
        Some(answer)
    });
    assert!(answer.ends_with("\r\n\r\nhello\n"), "{answer}");

    agent.ok(&[
        "delete",
        "pod",
        "hog",
        "besteffort",
        "guaranteed",
        "rootless",
        "user",
        "secured",
        "published",
        "--grace-period=1",
    ]);
}

/// Debian's docker-registry on loopback, with a login; killed on drop.
struct Registry {
    child: std::process::Child,
    port: u16,
}

impl Registry {
    const USER: &str = "tug";
    const PASSWORD: &str = "s3cret";

    fn start(dir: &Path) -> Registry {
        let htpasswd = Command::new("htpasswd")
            .args(["-Bbn", Self::USER, Self::PASSWORD])
            .output()
            .expect("htpasswd (apache2-utils)");
        assert!(htpasswd.status.success());
        std::fs::write(dir.join("htpasswd"), &htpasswd.stdout).unwrap();
        Registry::serve(
            dir,
            &format!(
                "auth:\n  htpasswd: {{realm: tug-test, path: {}}}\n",
                dir.join("htpasswd").display()
            ),
            "",
        )
    }

    /// A registry without a login, over HTTPS with a self-signed
    /// certificate (for 127.0.0.1 and localhost).
    fn start_tls(dir: &Path) -> Registry {
        let cert = rcgen::generate_simple_self_signed(vec![
            "127.0.0.1".to_string(),
            "localhost".to_string(),
        ])
        .unwrap();
        let (cert_path, key_path) = (dir.join("registry.crt"), dir.join("registry.key"));
        std::fs::write(&cert_path, cert.cert.pem()).unwrap();
        std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();
        Registry::serve(
            dir,
            "",
            &format!(
                ", tls: {{certificate: {}, key: {}}}",
                cert_path.display(),
                key_path.display()
            ),
        )
    }

    /// Serves a registry with `extra` configuration and `http` settings
    /// beside its address, its storage in a directory of its own. A port
    /// another process took first (the registry then exits) is given up
    /// for another.
    fn serve(dir: &Path, extra: &str, http: &str) -> Registry {
        for _ in 0..5 {
            let port = free_port();
            let config = dir.join(format!("registry-{port}.yml"));
            std::fs::write(
                &config,
                format!(
                    "version: 0.1
log: {{level: error}}
storage: {{filesystem: {{rootdirectory: {root}}}}}
http: {{addr: 127.0.0.1:{port}{http}}}
{extra}",
                    root = dir.join(format!("registry-{port}")).display(),
                ),
            )
            .unwrap();
            let child = Command::new("docker-registry")
                .arg("serve")
                .arg(&config)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("docker-registry");
            let mut registry = Registry { child, port };
            let listening = until(30, "the registry to listen or exit", || {
                if registry.child.try_wait().unwrap().is_some() {
                    return Some(false);
                }
                listens_on(registry.child.id(), port).then_some(true)
            });
            if listening {
                return registry;
            }
        }
        panic!("the registry found no free port in 5 tries");
    }

    /// Pushes a Docker archive as `name` (a repository and tag).
    fn push(&self, archive: &Path, name: &str) {
        let output = Command::new("skopeo")
            .args([
                "--insecure-policy",
                "copy",
                "--quiet",
                "--dest-tls-verify=false",
            ])
            .arg(format!("--dest-creds={}:{}", Self::USER, Self::PASSWORD))
            .arg(format!("docker-archive:{}", archive.display()))
            .arg(format!("docker://127.0.0.1:{}/{name}", self.port))
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "skopeo: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

/// Whether process `pid` holds the socket listening on 127.0.0.1:`port`.
fn listens_on(pid: u32, port: u16) -> bool {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    let address = format!("0100007F:{port:04X}");
    let Some(inode) = table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // The local address, the state (0A: listening) and the inode.
        (fields.get(1) == Some(&address.as_str()) && fields.get(3) == Some(&"0A"))
            .then(|| fields.get(9).map(|inode| inode.to_string()))
            .flatten()
    }) else {
        return false;
    };
    let socket = std::path::PathBuf::from(format!("socket:[{inode}]"));
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|fds| {
            fds.filter_map(Result::ok)
                .any(|fd| std::fs::read_link(fd.path()).ok() == Some(socket.clone()))
        })
        .unwrap_or(false)
}

/// A child process killed on drop.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn images_are_pulled_through_mirrors_registry_logins_and_pull_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::start(dir.path());
    let archive = busybox_archive(dir.path());
    registry.push(&archive, "tugtest/busybox:1");
    let port = registry.port;
    let secure = Registry::start_tls(dir.path());
    secure.push(&archive, "tugtest/busybox:1");
    let tls = secure.port;
    // Docker Hub's names go to the local registry, which its login opens;
    // `localhost:PORT` is the same registry under a name without a login.
    let agent_dir = dir.path().join("data/agent");
    std::fs::create_dir_all(&agent_dir).unwrap();
    std::fs::write(
        agent_dir.join("registries.yaml"),
        format!(
            "mirrors:
  docker.io:
    endpoint: [\"http://127.0.0.1:{port}\"]
  \"localhost:{port}\":
    endpoint: [\"http://localhost:{port}\"]
  \"127.0.0.1:{tls}\":
    endpoint: [\"https://127.0.0.1:{tls}\"]
  \"localhost:{tls}\":
    endpoint: [\"https://localhost:{tls}\"]
configs:
  \"127.0.0.1:{port}\":
    auth: {{username: {user}, password: {password}}}
  \"127.0.0.1:{tls}\":
    tls: {{insecure_skip_verify: true}}
",
            user = Registry::USER,
            password = Registry::PASSWORD,
        ),
    )
    .unwrap();
    let agent = Agent::start(dir.path());

    // Through the mirror, with the registry's login: nothing imported.
    agent.ok(&[
        "run",
        "mirrored",
        "--image=tugtest/busybox:1",
        "--",
        "sleep",
        "3600",
    ]);
    agent.pod_until(90, "mirrored", "mirrored to run", ready);
    let described = agent.ok(&["describe", "pod", "mirrored"]);
    for event in [
        "Pulling image \"tugtest/busybox:1\"",
        "Successfully pulled image \"tugtest/busybox:1\"",
    ] {
        assert!(described.contains(event), "{event}: {described}");
    }
    // The image is present now: IfNotPresent uses it, Always pulls again.
    for (name, policy) in [("present", "IfNotPresent"), ("always", "Always")] {
        agent.ok(&[
            "run",
            name,
            "--image=tugtest/busybox:1",
            &format!("--image-pull-policy={policy}"),
            "--",
            "sleep",
            "3600",
        ]);
        agent.pod_until(90, name, "the pod to run", ready);
    }
    let present = agent.ok(&["describe", "pod", "present"]);
    assert!(
        present.contains("Container image \"tugtest/busybox:1\" already present on machine")
            && !present.contains("Pulling image"),
        "{present}"
    );
    let always = agent.ok(&["describe", "pod", "always"]);
    let pulled = always
        .lines()
        .find(|l| l.contains("Successfully pulled image \"tugtest/busybox:1\" in "))
        .unwrap_or_else(|| panic!("{always}"));
    // (kubelet's wording: "... in 313ms (313ms including waiting). Image
    // size: 2154321 bytes.")
    let size = pulled
        .split(". Image size: ")
        .nth(1)
        .and_then(|s| s.trim().strip_suffix(" bytes."))
        .and_then(|n| n.parse::<u64>().ok());
    assert!(size.is_some_and(|n| n > 1_000_000), "{pulled}");
    assert!(pulled.contains(" including waiting)"), "{pulled}");

    // Without a login the registry refuses; a pull secret opens it.
    let image = format!("localhost:{port}/tugtest/busybox:1");
    agent.ok(&[
        "run",
        "refused",
        &format!("--image={image}"),
        "--",
        "sleep",
        "3600",
    ]);
    agent.pod_until(90, "refused", "refused to back off", |p| {
        status_of(p, "refused")["state"]["waiting"]["reason"] == "ImagePullBackOff"
    });
    let described = agent.ok(&["describe", "pod", "refused"]);
    assert!(described.contains("Error: ErrImagePull"), "{described}");
    agent.ok(&[
        "create",
        "secret",
        "docker-registry",
        "regcred",
        &format!("--docker-server=localhost:{port}"),
        &format!("--docker-username={}", Registry::USER),
        &format!("--docker-password={}", Registry::PASSWORD),
    ]);
    agent.ok(&[
        "run",
        "let-in",
        &format!("--image={image}"),
        "--overrides",
        r#"{"spec":{"imagePullSecrets":[{"name":"absent"},{"name":"regcred"}]}}"#,
        "--",
        "sleep",
        "3600",
    ]);
    agent.pod_until(90, "let-in", "let-in to run", ready);
    let described = agent.ok(&["describe", "pod", "let-in"]);
    assert!(
        described.contains(
            "Unable to retrieve some image pull secrets (absent); attempting to pull the image may not succeed."
        ),
        "{described}"
    );

    // An HTTPS registry whose certificate no CA signed: refused, but for
    // the name whose TLS configuration skips the verification. (containerd
    // speaks plain HTTP to a registry on loopback unless a mirror names
    // an https endpoint, hence the mirrors above.)
    agent.ok(&[
        "run",
        "unverified",
        &format!("--image=localhost:{tls}/tugtest/busybox:1"),
        "--",
        "sleep",
        "3600",
    ]);
    agent.ok(&[
        "run",
        "insecure",
        &format!("--image=127.0.0.1:{tls}/tugtest/busybox:1"),
        "--",
        "sleep",
        "3600",
    ]);
    agent.pod_until(90, "insecure", "insecure to run", ready);
    agent.pod_until(90, "unverified", "unverified to back off", |p| {
        status_of(p, "unverified")["state"]["waiting"]["reason"] == "ImagePullBackOff"
    });
    let described = agent.ok(&["describe", "pod", "unverified"]);
    assert!(
        described.contains("x509: certificate signed by unknown authority"),
        "{described}"
    );
    agent.ok(&[
        "delete",
        "pod",
        "mirrored",
        "present",
        "always",
        "refused",
        "let-in",
        "unverified",
        "insecure",
        "--grace-period=1",
    ]);
}

/// `tug agent`, as on another machine, and what it leaves behind removed
/// on drop.
struct JoinedAgent {
    child: std::process::Child,
    data: PathBuf,
}

impl JoinedAgent {
    /// Stops the agent (and its containerd; the containers run on), as
    /// on SIGTERM; SIGKILL after 30 s.
    fn stop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while self.child.try_wait().ok().flatten().is_none() && std::time::Instant::now() < deadline
        {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for JoinedAgent {
    fn drop(&mut self) {
        remove_pods_left(&self.data.join("agent/containerd/containerd.sock"));
        self.stop();
        remove_node_leftovers(&self.data);
        let _ = Command::new("ip").args(["link", "del", BRIDGE]).status();
    }
}

#[test]
fn an_agent_on_another_machine_joins_with_the_node_token() {
    let _turn = ONE_AGENT.lock().unwrap_or_else(|p| p.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(dir.path(), &["--cluster-cidr", "10.244.0.0/16"]);
    let url = server.ok(&[
        "config",
        "view",
        "--minify",
        "-o",
        "jsonpath={.clusters[0].cluster.server}",
    ]);
    let token = std::fs::read_to_string(dir.path().join("data/server/node-token")).unwrap();
    let token = token.trim();
    let data = dir.path().join("remote");
    let port = free_port().to_string();
    let agent = |token: &str| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_tug"));
        command
            .args(["agent", "--server", &url, "--token", token])
            .arg("--data-dir")
            .arg(&data)
            .args(["--node-name", "remote", "--node-ip", "127.0.0.2"])
            .args(["--kubelet-port", &port, "--cni-bridge", BRIDGE])
            .args(["--eviction-hard", EVICTION_HARD]);
        command
    };

    // A wrong secret, and a token of another cluster's CA, are refused
    // with a one-line reason.
    let (hash, _) = tug_api::join::parse(token);
    let wrong = tug_api::join::token(hash.unwrap(), "wrong");
    let refused = agent(&wrong).output().unwrap();
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("refused the token"), "{stderr}");
    let other = tug_api::join::token(&"0".repeat(64), "wrong");
    let mismatch = agent(&other).output().unwrap();
    assert!(!mismatch.status.success());
    let stderr = String::from_utf8_lossy(&mismatch.stderr);
    assert!(
        stderr.contains("does not match the token's hash"),
        "{stderr}"
    );

    // With the node-token, the agent joins: its node registers and runs
    // pods, and logs and exec reach it through its own certificates.
    let log = dir.path().join("agent.log");
    let spawn = || {
        agent(token)
            .stdout(Stdio::null())
            .stderr(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&log)
                    .unwrap(),
            )
            .spawn()
            .unwrap()
    };
    let mut joined = JoinedAgent {
        child: spawn(),
        data: data.clone(),
    };
    until(60, "the remote node to be Ready", || {
        let ready = server.kubectl(&[
            "get",
            "node",
            "remote",
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
        ]);
        (String::from_utf8_lossy(&ready.stdout) == "True").then_some(())
    });
    let node = server.ok(&["get", "node", "remote", "-o", "json"]);
    let node: Value = serde_json::from_str(&node).unwrap();
    assert_eq!(
        node["metadata"]["labels"]["node-role.kubernetes.io/control-plane"],
        Value::Null
    );
    let archive = busybox_archive(dir.path());
    let imported = Command::new(env!("CARGO_BIN_EXE_tug"))
        .args(["images", "import"])
        .arg(&archive)
        .arg("--data-dir")
        .arg(&data)
        .output()
        .unwrap();
    assert!(imported.status.success(), "{imported:?}");
    server.ok(&[
        "run",
        "far",
        &format!("--image={BUSYBOX}"),
        "--image-pull-policy=IfNotPresent",
        "--",
        "sh",
        "-c",
        "echo from afar; exec sleep 3601",
    ]);
    until(60, "far to run on the remote node", || {
        let output = server.kubectl(&["get", "pod", "far", "-o", "json"]);
        let pod: Value = serde_json::from_slice(&output.stdout).ok()?;
        (pod["spec"]["nodeName"] == "remote" && ready(&pod)).then_some(())
    });
    until(30, "far's log", || {
        let logs = server.kubectl(&["logs", "far"]);
        (String::from_utf8_lossy(&logs.stdout) == "from afar\n").then_some(())
    });
    assert_eq!(server.ok(&["exec", "far", "--", "echo", "hi"]), "hi\n");

    // The pod is deleted while its agent is down (at once, forced); the
    // agent, started again, stops and removes what the pod ran.
    let running = || {
        Command::new("pgrep")
            .args(["-fx", "sleep 3601"])
            .output()
            .unwrap()
            .status
            .success()
    };
    joined.stop();
    assert!(running(), "far's container runs on while its agent is down");
    server.ok(&["delete", "pod", "far", "--grace-period=0", "--force"]);
    joined.child = spawn();
    let socket = data.join("agent/containerd/containerd.sock");
    until(90, "far's sandbox and container to be removed", || {
        let left = runtime().block_on(async {
            let runtime = tug_kubelet::cri::Runtime::connect(&socket).ok()?;
            let sandboxes = runtime.sandboxes(None).await.ok()?;
            let containers = runtime.containers(None).await.ok()?;
            Some(sandboxes.len() + containers.len())
        });
        (left == Some(0)).then_some(())
    });
    assert!(!running(), "far's container was stopped");
}

#[test]
fn static_pods_run_from_files_and_show_as_mirror_pods() {
    let dir = tempfile::tempdir().unwrap();
    // The image is imported from the images directory at start
    // (compressed, as k3s takes them too), and the manifest is there
    // already.
    let agent_dir = dir.path().join("data/agent");
    std::fs::create_dir_all(agent_dir.join("images")).unwrap();
    let archive = busybox_archive(dir.path());
    let gzip = Command::new("gzip").arg(&archive).status().unwrap();
    assert!(gzip.success());
    std::fs::rename(
        dir.path().join("busybox.tar.gz"),
        agent_dir.join("images/busybox.tar.gz"),
    )
    .unwrap();
    let manifests = agent_dir.join("pod-manifests");
    std::fs::create_dir_all(&manifests).unwrap();
    std::fs::write(
        manifests.join("web.yaml"),
        "apiVersion: v1
kind: Pod
metadata:
  name: web
  labels: {app: web}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: web
    image: tug.local/busybox:1
    imagePullPolicy: IfNotPresent
    command: [sh, -c, 'mkdir -p /www && echo static > /www/index.html && exec httpd -f -p 8080 -h /www']
",
    )
    .unwrap();
    std::fs::write(manifests.join("notes.txt"), "not a manifest").unwrap();
    // The image collector wants the disk empty: it collects at start,
    // and the imported image, pinned, is spared.
    let agent = Agent::start_with(
        dir.path(),
        &[
            "--image-gc-high-threshold",
            "1",
            "--image-gc-low-threshold",
            "0",
        ],
    );
    let name = format!("web-{NODE}");

    let mirror = agent.pod_until(
        60,
        &name,
        "the mirror pod to show the static pod running",
        ready,
    );
    let annotations = &mirror["metadata"]["annotations"];
    assert_eq!(annotations["kubernetes.io/config.source"], "file");
    assert_eq!(
        annotations["kubernetes.io/config.mirror"],
        annotations["kubernetes.io/config.hash"]
    );
    let owner = &mirror["metadata"]["ownerReferences"][0];
    assert_eq!(
        (owner["kind"].as_str(), owner["name"].as_str()),
        (Some("Node"), Some(NODE))
    );
    let container_id = status_of(&mirror, "web")["containerID"].clone();
    assert!(
        container_id
            .as_str()
            .is_some_and(|id| id.starts_with("containerd://"))
    );
    let ip = mirror["status"]["podIP"].as_str().unwrap().to_string();
    let page = agent.ok(&[
        "exec",
        &name,
        "--",
        "wget",
        "-qO-",
        "http://127.0.0.1:8080/",
    ]);
    assert_eq!(page, "static\n");

    // Deleting the mirror pod only makes it come back: the pod runs on,
    // the same container, never restarted.
    let old_uid = mirror["metadata"]["uid"].clone();
    agent.ok(&["delete", "pod", &name]);
    let back = agent.pod_until(60, &name, "the mirror pod to come back", |p| {
        p["metadata"]["uid"] != old_uid && ready(p)
    });
    assert_eq!(status_of(&back, "web")["containerID"], container_id);
    assert_eq!(status_of(&back, "web")["restartCount"], 0);
    assert_eq!(back["status"]["podIP"], ip.as_str());

    // Removing the file stops the pod and removes its mirror.
    std::fs::remove_file(manifests.join("web.yaml")).unwrap();
    until(60, "the static pod to be gone", || {
        let gone = !agent.kubectl(&["get", "pod", &name]).status.success();
        (gone && agent.runtime_containers() == 0).then_some(())
    });

    // The collector ran and found nothing it may delete: the image stays.
    let events = agent.ok(&[
        "get",
        "events",
        "-A",
        "--field-selector",
        "reason=FreeDiskSpaceFailed",
        "-o",
        "name",
    ]);
    assert!(!events.trim().is_empty(), "no FreeDiskSpaceFailed event");
    let images = agent.tug(&["images", "list"]);
    assert!(images.contains("tug.local/busybox"), "{images}");
}

/// The pods of `app=web`: name, container ID, restart count, readiness.
fn web_pods(agent: &Agent) -> Vec<(String, String, i64, bool)> {
    let output = agent.ok(&["get", "pods", "-l", "app=web", "-o", "json"]);
    let list: Value = serde_json::from_str(&output).unwrap();
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .map(|p| {
            let status = status_of(p, "busybox");
            (
                p["metadata"]["name"].as_str().unwrap().to_string(),
                status["containerID"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                status["restartCount"].as_i64().unwrap_or(0),
                ready(p),
            )
        })
        .collect()
}

#[test]
fn deployments_run_real_containers_that_survive_an_agent_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut agent = Agent::start(dir.path());
    let archive = busybox_archive(dir.path());
    agent.tug(&["images", "import", archive.to_str().unwrap()]);

    agent.ok(&[
        "create",
        "deployment",
        "web",
        &format!("--image={BUSYBOX}"),
        "--replicas=3",
        "--",
        "httpd",
        "-f",
        "-p",
        "8080",
    ]);
    agent.ok(&["rollout", "status", "deployment/web", "--timeout=120s"]);
    agent.ok(&["scale", "deployment/web", "--replicas=20"]);
    agent.ok(&["rollout", "status", "deployment/web", "--timeout=180s"]);
    let before = web_pods(&agent);
    assert_eq!(before.len(), 20, "{before:?}");
    assert!(
        before
            .iter()
            .all(|(_, id, restarts, ready)| !id.is_empty() && *restarts == 0 && *ready)
    );

    // The agent restarts (with the whole server): it adopts the 20 running
    // containers, restarting none.
    // The node's Ready condition is left over from the agent before: only
    // a heartbeat stamped after the restart began is the new agent's.
    let restarted = tug_api::format::timestamp(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64,
    );
    agent.restart();
    until(60, "the new agent to report the node Ready", || {
        let ready = agent.kubectl(&[
            "get",
            "node",
            NODE,
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Ready\")].status} \
             {.status.conditions[?(@.type==\"Ready\")].lastHeartbeatTime}",
        ]);
        let ready = String::from_utf8_lossy(&ready.stdout).into_owned();
        let (status, heartbeat) = ready.split_once(' ')?;
        // The same format throughout, so the text orders as the time does.
        (status == "True" && heartbeat.trim() >= restarted.as_str()).then_some(())
    });
    // A container killed behind the agent's back comes back: the new
    // agent is at work.
    let (victim, victim_id, _, _) = before[0].clone();
    let runc_root = dir.path().join("data/agent/containerd/runc/k8s.io");
    let killed = Command::new("runc")
        .arg("--root")
        .arg(&runc_root)
        .args([
            "kill",
            victim_id.trim_start_matches("containerd://"),
            "KILL",
        ])
        .status()
        .unwrap();
    assert!(killed.success());
    let victim_pod = agent.pod_until(60, &victim, "the killed container to come back", |p| {
        status_of(p, "busybox")["restartCount"] == 1 && ready(p)
    });
    assert_ne!(
        status_of(&victim_pod, "busybox")["containerID"],
        victim_id.as_str()
    );
    let after = web_pods(&agent);
    for (name, id, restarts, ready) in &before[1..] {
        assert!(
            after.contains(&(name.clone(), id.clone(), *restarts, *ready)),
            "{name} changed across the restart: {after:?}"
        );
    }

    // A deleted pod is replaced; scaling down removes the containers.
    agent.ok(&["delete", "pod", &before[1].0, "--grace-period=1"]);
    until(90, "the deleted pod's replacement to run", || {
        let pods = web_pods(&agent);
        (pods.len() == 20 && pods.iter().all(|p| p.3) && !pods.iter().any(|p| p.0 == before[1].0))
            .then_some(())
    });
    // containerd dies: the agent starts it again, the containers run on
    // (their shims outlive it) and the agent goes on driving them.
    let pid_file = dir.path().join("data/agent/containerd/containerd.pid");
    let first = std::fs::read_to_string(&pid_file).unwrap();
    let before = web_pods(&agent);
    let killed = Command::new("kill")
        .args(["-KILL", first.trim()])
        .status()
        .unwrap();
    assert!(killed.success());
    until(30, "containerd to be started again", || {
        let pid = std::fs::read_to_string(&pid_file).ok()?;
        (pid != first && std::path::Path::new(&format!("/proc/{}", pid.trim())).exists())
            .then_some(())
    });
    until(60, "the pods to be as they were", || {
        (web_pods(&agent) == before).then_some(())
    });
    agent.ok(&["scale", "deployment/web", "--replicas=0"]);
    until(120, "the containers to be removed", || {
        (web_pods(&agent).is_empty() && agent.runtime_containers() == 0).then_some(())
    });
}

/// A Docker archive of Debian's etcd (a gRPC server with the standard
/// health service), with the C library it is linked to.
fn etcd_archive(dir: &Path) -> PathBuf {
    use tug_kubelet::images::{Entry, ImageConfig, docker_archive, tar};
    let ldd = Command::new("ldd").arg("/usr/bin/etcd").output().unwrap();
    let mut files: Vec<String> = vec!["/usr/bin/etcd".into()];
    for line in String::from_utf8_lossy(&ldd.stdout).lines() {
        let path = line
            .split("=>")
            .last()
            .and_then(|rest| rest.split_whitespace().next())
            .filter(|p| p.starts_with('/'));
        if let Some(path) = path {
            files.push(path.to_string());
        }
    }
    let contents: Vec<(String, Vec<u8>)> = files
        .iter()
        .map(|f| {
            (
                f.trim_start_matches('/').to_string(),
                std::fs::read(f).unwrap(),
            )
        })
        .collect();
    let mut dirs: Vec<String> = vec!["tmp".into()];
    for (path, _) in &contents {
        let mut parent = Path::new(path).parent();
        while let Some(p) = parent.filter(|p| !p.as_os_str().is_empty()) {
            dirs.push(p.display().to_string());
            parent = p.parent();
        }
    }
    dirs.sort();
    dirs.dedup();
    let mut entries: Vec<Entry> = dirs.iter().map(|d| Entry::Dir { path: d }).collect();
    for (path, data) in &contents {
        entries.push(Entry::File {
            path,
            mode: 0o755,
            data,
        });
    }
    let archive = docker_archive(
        "tug.local/etcd:1",
        &[tar(&entries).unwrap()],
        &ImageConfig {
            cmd: &["/usr/bin/etcd"],
            ..Default::default()
        },
    )
    .unwrap();
    let path = dir.join("etcd.tar");
    std::fs::write(&path, archive).unwrap();
    path
}

#[test]
fn https_and_grpc_probes_reach_real_servers() {
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::start(dir.path());
    let archive = busybox_archive(dir.path());
    let etcd = etcd_archive(dir.path());
    agent.tug(&[
        "images",
        "import",
        archive.to_str().unwrap(),
        etcd.to_str().unwrap(),
    ]);
    // The API server's own HTTPS port (its certificate is not the probe's
    // concern, as with kubelet) answers /readyz.
    let url = agent.ok(&[
        "config",
        "view",
        "--minify",
        "-o",
        "jsonpath={.clusters[0].cluster.server}",
    ]);
    let api_port = url.rsplit(':').next().unwrap().to_string();
    agent.apply(&format!(
        "apiVersion: v1
kind: Pod
metadata:
  name: secure
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: https
    image: tug.local/busybox:1
    imagePullPolicy: IfNotPresent
    command: [sleep, '3600']
    readinessProbe:
      httpGet: {{host: 127.0.0.1, port: {api_port}, path: /readyz, scheme: HTTPS}}
      periodSeconds: 1
  - name: plain
    image: tug.local/busybox:1
    imagePullPolicy: IfNotPresent
    command: [sleep, '3600']
    readinessProbe:
      httpGet: {{host: 127.0.0.1, port: {api_port}, path: /readyz}}
      periodSeconds: 1
---
apiVersion: v1
kind: Pod
metadata:
  name: grpc
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: etcd
    image: tug.local/etcd:1
    imagePullPolicy: IfNotPresent
    command: [/usr/bin/etcd, --data-dir, /tmp/etcd, --listen-client-urls, 'http://0.0.0.0:2379', --advertise-client-urls, 'http://127.0.0.1:2379', --listen-peer-urls, 'http://127.0.0.1:2380']
    readinessProbe:
      grpc: {{port: 2379}}
      periodSeconds: 1
  - name: nothing
    image: tug.local/busybox:1
    imagePullPolicy: IfNotPresent
    command: [sleep, '3600']
    readinessProbe:
      grpc: {{port: 2390}}
      periodSeconds: 1
"
    ));
    let secure = agent.pod_until(60, "secure", "the HTTPS probe to pass", |p| {
        status_of(p, "https")["ready"] == true
    });
    assert_eq!(status_of(&secure, "plain")["ready"], false);
    let grpc = agent.pod_until(60, "grpc", "the gRPC probe to pass", |p| {
        status_of(p, "etcd")["ready"] == true
    });
    assert_eq!(status_of(&grpc, "nothing")["ready"], false);
    let described = agent.ok(&["describe", "pod", "grpc"]);
    assert!(described.contains("Readiness probe failed"), "{described}");
    agent.ok(&["delete", "pod", "secure", "grpc", "--grace-period=1"]);
}

#[test]
fn container_logs_rotate_and_follow_goes_on_across_rotations() {
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::start_with(
        dir.path(),
        &[
            "--container-log-max-size",
            "64Ki",
            "--container-log-max-files",
            "3",
        ],
    );
    let archive = busybox_archive(dir.path());
    agent.tug(&["images", "import", archive.to_str().unwrap()]);
    // About 50 KiB a second in the log, numbered lines.
    agent.ok(&[
        "run",
        "chatty",
        &format!("--image={BUSYBOX}"),
        "--image-pull-policy=IfNotPresent",
        "--",
        "sh",
        "-c",
        "i=0; while true; do j=0; while [ $j -lt 400 ]; do i=$((i+1)); j=$((j+1)); echo \"line $i padded to about one hundred bytes ..........................................\"; done; sleep 1; done",
    ]);
    let pod = agent.pod_until(60, "chatty", "chatty to run", ready);
    let uid = pod["metadata"]["uid"].as_str().unwrap();
    let mut follow = agent
        .kubectl_command(&["logs", "-f", "chatty"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let lines = lines_of(&mut follow);
    let logs = dir
        .path()
        .join(format!("data/agent/logs/pods/default_chatty_{uid}/chatty"));
    // Checked every 10 s: after two rotations, three files at most (the
    // current one and two rotated), the oldest gone, none much past what
    // 10 s of output makes.
    let files = until(90, "the log to rotate twice", || {
        let mut names: Vec<String> = std::fs::read_dir(&logs)
            .ok()?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        (names.len() == 3).then_some(names)
    });
    assert_eq!(files[0], "0.log", "{files:?}");
    assert!(
        files[1..].iter().all(|f| f.starts_with("0.log.")),
        "{files:?}"
    );
    for file in &files {
        let size = std::fs::metadata(logs.join(file)).unwrap().len();
        assert!(size < 1024 * 1024, "{file} is {size} bytes");
    }
    // `logs -f` went on across the rotations: its line numbers run on
    // without a gap.
    let numbered = |line: &str| -> u64 {
        line.split_whitespace()
            .nth(1)
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    let mut last = numbered(
        &lines
            .recv_timeout(std::time::Duration::from_secs(30))
            .unwrap(),
    );
    let target = last + 4000;
    while last < target {
        let line = lines
            .recv_timeout(std::time::Duration::from_secs(30))
            .expect("logs -f goes on");
        let number = numbered(&line);
        assert_eq!(number, last + 1, "a gap in the followed log");
        last = number;
    }
    let _ = follow.kill();
    let _ = follow.wait();
    // Later lines are in the current file, which logs --tail reads (empty
    // for a moment after a rotation).
    let tail = until(30, "the current log's last line", || {
        let tail = agent.ok(&["logs", "chatty", "--tail=1"]);
        (numbered(&tail) > 0).then_some(tail)
    });
    assert!(numbered(&tail) >= target, "{tail}");
    agent.ok(&["delete", "pod", "chatty", "--grace-period=1"]);
}

/// Images come from OCI archives too; a pod mounts a projected
/// volume of every source, hostPaths checked by their type, and claims
/// bound to hostPath and local PersistentVolumes, as kubelet mounts them:
/// an unbound claim or a hostPath of the wrong type is a FailedMount until
/// it is set right.
#[test]
fn oci_images_and_projected_host_path_and_claimed_volumes_mount_as_kubelet_mounts_them() {
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::start(dir.path());
    // An OCI archive, as skopeo writes one (its index names the image
    // with a full reference).
    let docker = busybox_archive(dir.path());
    let oci = dir.path().join("oci.tar");
    let copied = Command::new("skopeo")
        .args(["--insecure-policy", "copy", "--quiet"])
        .arg(format!("docker-archive:{}", docker.display()))
        .arg(format!("oci-archive:{}:tug.local/oci:1", oci.display()))
        .output()
        .unwrap();
    assert!(
        copied.status.success(),
        "skopeo: {}",
        String::from_utf8_lossy(&copied.stderr)
    );
    agent.tug(&["images", "import", oci.to_str().unwrap()]);
    // A Docker archive compressed with zstd.
    let zstd = Command::new("zstd")
        .args(["-q", "--rm"])
        .arg(&docker)
        .status()
        .unwrap();
    assert!(zstd.success());
    let compressed = dir.path().join("busybox.tar.zst");
    agent.tug(&["images", "import", compressed.to_str().unwrap()]);
    let images = agent.tug(&["images", "list"]);
    for image in [["tug.local/oci", "1"], ["tug.local/busybox", "1"]] {
        let listed = images
            .lines()
            .any(|line| line.split_whitespace().take(2).eq(image));
        assert!(listed, "{image:?}: {images}");
    }

    let host = dir.path().join("host");
    std::fs::create_dir_all(host.join("pv-local")).unwrap();
    std::fs::write(host.join("pv-local/seed"), "seeded\n").unwrap();
    let host = host.display();
    agent.apply(&format!(
        "apiVersion: v1
kind: ConfigMap
metadata: {{name: settings}}
data: {{mode: fast}}
---
apiVersion: v1
kind: Secret
metadata: {{name: creds}}
stringData: {{password: hunter2}}
---
apiVersion: v1
kind: PersistentVolume
metadata: {{name: host-pv}}
spec:
  capacity: {{storage: 1Gi}}
  accessModes: [ReadWriteOnce]
  hostPath: {{path: {host}/pv-host, type: DirectoryOrCreate}}
  claimRef: {{namespace: default, name: host-claim}}
---
apiVersion: v1
kind: PersistentVolume
metadata: {{name: local-pv}}
spec:
  capacity: {{storage: 1Gi}}
  accessModes: [ReadWriteOnce]
  local: {{path: {host}/pv-local}}
  claimRef: {{namespace: default, name: local-claim}}
  nodeAffinity:
    required:
      nodeSelectorTerms:
      - matchExpressions:
        - {{key: kubernetes.io/hostname, operator: In, values: [{NODE}]}}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {{name: host-claim}}
spec:
  storageClassName: ''
  volumeName: host-pv
  accessModes: [ReadWriteOnce]
  resources: {{requests: {{storage: 1Gi}}}}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {{name: local-claim}}
spec:
  storageClassName: ''
  volumeName: local-pv
  accessModes: [ReadWriteOnce]
  resources: {{requests: {{storage: 1Gi}}}}
---
apiVersion: v1
kind: Pod
metadata:
  name: mounts
  labels: {{app: mounts}}
spec:
  terminationGracePeriodSeconds: 1
  volumes:
  - name: all
    projected:
      sources:
      - configMap: {{name: settings, items: [{{key: mode, path: config/mode}}]}}
      - secret: {{name: creds}}
      - downwardAPI: {{items: [{{path: labels, fieldRef: {{fieldPath: metadata.labels}}}}]}}
      - serviceAccountToken: {{path: token, expirationSeconds: 3600}}
  - {{name: made, hostPath: {{path: {host}/made/deep, type: DirectoryOrCreate}}}}
  - {{name: touched, hostPath: {{path: {host}/touched.log, type: FileOrCreate}}}}
  - {{name: host-claim, persistentVolumeClaim: {{claimName: host-claim}}}}
  - {{name: local-claim, persistentVolumeClaim: {{claimName: local-claim, readOnly: true}}}}
  containers:
  - name: c
    image: tug.local/oci:1
    imagePullPolicy: Never
    command: [sh, -c, 'echo written > /made/file; echo line >> /touched.log; echo claimed > /host-claim/file; sleep 3600']
    volumeMounts:
    - {{name: all, mountPath: /all}}
    - {{name: made, mountPath: /made}}
    - {{name: touched, mountPath: /touched.log}}
    - {{name: host-claim, mountPath: /host-claim}}
    - {{name: local-claim, mountPath: /local-claim}}
---
apiVersion: v1
kind: Pod
metadata: {{name: strict}}
spec:
  terminationGracePeriodSeconds: 1
  volumes:
  - {{name: config, hostPath: {{path: {host}/config.yaml, type: File}}}}
  containers:
  - name: c
    image: tug.local/oci:1
    imagePullPolicy: Never
    command: [sh, -c, 'cat /config.yaml; sleep 3600']
    volumeMounts:
    - {{name: config, mountPath: /config.yaml}}
"
    ));
    // Neither pod starts: one's claims are not bound yet, the other's
    // file is missing. Each says why, as a FailedMount event.
    let failed_mount = |pod: &str, wanted: &str| {
        until(60, &format!("{pod}'s FailedMount"), || {
            let events = agent.ok(&[
                "get",
                "events",
                "--field-selector",
                &format!("involvedObject.name={pod},reason=FailedMount"),
                "-o",
                "jsonpath={.items[*].message}",
            ]);
            events.contains(wanted).then_some(())
        });
        let pod = agent.pod_until(5, pod, "the pod to wait", |p| {
            p["status"]["phase"] == "Pending"
        });
        assert_eq!(
            status_of(&pod, "c")["state"]["waiting"]["reason"],
            "ContainerCreating",
            "{pod}"
        );
    };
    failed_mount(
        "mounts",
        "error processing PVC default/host-claim: PVC is not bound",
    );
    failed_mount(
        "strict",
        &format!("hostPath type check failed: {host}/config.yaml is not a file"),
    );

    // The binder's part, done by hand: both claims Bound.
    for claim in ["host-claim", "local-claim"] {
        agent.ok(&[
            "patch",
            "pvc",
            claim,
            "--subresource=status",
            "--type=merge",
            "-p",
            r#"{"status":{"phase":"Bound"}}"#,
        ]);
    }
    std::fs::write(dir.path().join("host/config.yaml"), "key: value\n").unwrap();
    for pod in ["mounts", "strict"] {
        agent.pod_until(60, pod, "the pod to run", |p| {
            p["status"]["phase"] == "Running"
        });
    }
    until(30, "strict to read its file", || {
        agent
            .ok(&["logs", "strict"])
            .contains("key: value")
            .then_some(())
    });
    let exec = |command: &str| agent.kubectl(&["exec", "mounts", "--", "sh", "-c", command]);
    let read = |command: &str| {
        let output = exec(command);
        assert!(
            output.status.success(),
            "{command}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    };
    // The projected volume: every source's files, side by side.
    assert_eq!(read("cat /all/config/mode"), "fast");
    assert_eq!(read("cat /all/password"), "hunter2");
    assert_eq!(read("cat /all/labels"), "app=\"mounts\"");
    // The token is the pod's service account's, and the API takes it.
    let token = read("cat /all/token");
    let url = agent.ok(&[
        "config",
        "view",
        "--minify",
        "-o",
        "jsonpath={.clusters[0].cluster.server}",
    ]);
    let whoami = agent.ok(&[
        "--kubeconfig=/dev/null",
        &format!("--server={url}"),
        "--insecure-skip-tls-verify",
        &format!("--token={token}"),
        "auth",
        "whoami",
        "-o",
        "jsonpath={.status.userInfo.username}",
    ]);
    assert_eq!(whoami, "system:serviceaccount:default:default");
    // The hostPaths were made for their types and written through.
    let on_host = |path: &str| {
        std::fs::read_to_string(dir.path().join("host").join(path)).unwrap_or_default()
    };
    until(10, "the pod's writes on the host", || {
        (on_host("made/deep/file") == "written\n"
            && on_host("touched.log") == "line\n"
            && on_host("pv-host/file") == "claimed\n")
            .then_some(())
    });
    // The local volume, claimed read-only: its files are seen, and it
    // cannot be written.
    assert_eq!(read("cat /local-claim/seed"), "seeded\n");
    let refused = exec("touch /local-claim/new");
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("Read-only file system"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    agent.ok(&["delete", "pod", "mounts", "strict", "--grace-period=1"]);
    // The hostPath and local volumes' data outlive the pod.
    assert_eq!(on_host("pv-host/file"), "claimed\n");
    assert_eq!(on_host("pv-local/seed"), "seeded\n");
}
