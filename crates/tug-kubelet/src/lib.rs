//! The node agent, tug's kubelet: registers its Node, runs the pods bound
//! to it on containerd through CRI, and reports their truth back.
//!
//! - [`containerd`]: the agent's own containerd, supervised.
//! - [`images`]: tar and Docker archives, tug's pause image, imports.
//! - [`cri`]: the CRI client.
//! - [`node`]: the Node, its Lease and conditions.
//! - [`network`]: the pod network's CNI configuration.
//! - [`pod`]: pure planning and status of one pod.
//! - [`worker`]: the pod workers: observe, plan, act, report.
//! - [`server`] and [`logs`]: the HTTPS port the API server reads logs from.
//! - [`volumes`]: the pods' volumes on the node.
//! - [`probes`]: startup, liveness and readiness probes.

pub mod containerd;
pub mod cri;
pub mod images;
pub mod join;
pub mod logs;
pub mod network;
pub mod node;
pub mod oom;
pub mod pod;
pub mod pressure;
pub mod probes;
pub mod registries;
pub mod rotation;
pub mod server;
pub mod static_pods;
pub mod streaming;
pub mod tls;
pub mod volumes;
pub mod worker;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use kube::Client;
use tokio_util::sync::CancellationToken;

/// How a node agent runs.
#[derive(Clone, Debug)]
pub struct Config {
    pub node_name: String,
    pub node_ip: IpAddr,
    /// tug's data dir; the agent keeps its state in `<data_dir>/agent`.
    pub data_dir: PathBuf,
    /// An existing CRI socket; `None` starts and supervises containerd.
    pub runtime_endpoint: Option<PathBuf>,
    /// The Linux bridge of the pod network.
    pub cni_bridge: String,
    /// Labels the Node gets besides the usual ones.
    pub labels: BTreeMap<String, String>,
    /// Whether this node runs the control plane (its role label).
    pub control_plane: bool,
    /// The agent's HTTPS port (logs for the API server).
    pub port: u16,
    /// Its certificate and the CA of its clients; without, it serves nothing.
    pub tls: Option<server::Tls>,
    /// When containers' logs are rotated.
    pub log_limits: rotation::Limits,
    /// The hard eviction thresholds that put the node under pressure.
    pub eviction_hard: Vec<pressure::Threshold>,
    /// How long a pressure condition stays after its threshold was met.
    pub eviction_pressure_transition: std::time::Duration,
    /// When unused images are collected.
    pub image_gc: pressure::ImageGcPolicy,
}

impl Config {
    pub fn agent_dir(&self) -> PathBuf {
        self.data_dir.join("agent")
    }

    /// The registries' mirrors and logins, in k3s's `registries.yaml`.
    pub fn registries_file(&self) -> PathBuf {
        self.agent_dir().join("registries.yaml")
    }

    /// Where containerd's socket is, the agent's own or the given one.
    pub fn runtime_socket(&self) -> PathBuf {
        self.runtime_endpoint
            .clone()
            .unwrap_or_else(|| containerd::Layout::new(&self.agent_dir()).socket())
    }

    /// Where pods' logs go: `<dir>/<namespace>_<name>_<uid>/<container>/<attempt>.log`.
    pub fn log_dir(&self) -> PathBuf {
        self.agent_dir().join("logs/pods")
    }

    /// Image archives imported at start.
    pub fn images_dir(&self) -> PathBuf {
        self.agent_dir().join("images")
    }
}

/// Runs the agent until `shutdown`: containerd (unless an endpoint is
/// given), the pause image and the archives of the images directory, the
/// Node and its Lease, then the pods.
pub async fn run(
    client: Client,
    config: Config,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let agent_dir = config.agent_dir();
    std::fs::create_dir_all(&agent_dir)
        .with_context(|| format!("creating {}", agent_dir.display()))?;
    let supervisor = match config.runtime_endpoint {
        None => Some(
            containerd::start(
                containerd::Layout::new(&agent_dir),
                &network::conf_dir(&config),
                &registries::Registries::read(&config.registries_file())?,
                shutdown.clone(),
            )
            .await?,
        ),
        Some(_) => None,
    };
    let socket = config.runtime_socket();
    let runtime = cri::Runtime::connect(&socket)?;
    // CRI answers "not initialized" while containerd recovers its
    // containers (after a restart, with pods running): wait for it.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(120);
    let version = loop {
        match runtime.version().await {
            Ok(version) => break version,
            Err(err) if tokio::time::Instant::now() < deadline => {
                tracing::debug!(error = %format!("{err:#}"), "waiting for the container runtime");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            Err(err) => {
                return Err(err)
                    .with_context(|| format!("the container runtime at {}", socket.display()));
            }
        }
    };
    let pinned = import_images(&config, &socket).await?;
    network::request_sweep();
    if let Some(tls) = &config.tls {
        server::serve(config.port, tls, runtime.clone(), shutdown.clone()).await?;
    }
    let machine = node::Machine::read(&config.data_dir);
    let registered = node::register(&client, &node::object(&config, &machine, &version)).await?;
    tracing::info!(node = %config.node_name, runtime = %version, "node agent registered its node");
    let node_uid = registered.metadata.uid.unwrap_or_default();
    tokio::spawn(node::lease_loop(
        client.clone(),
        config.node_name.clone(),
        node_uid,
        shutdown.clone(),
    ));
    let recorder =
        tug_controllers::events::Recorder::start(client.clone(), config.node_name.clone())
            .for_component("kubelet");
    recorder.event(
        pressure::node_reference(&config.node_name),
        tug_controllers::events::NORMAL,
        "Starting",
        "Starting kubelet.".into(),
    );
    let node_pressure = Arc::new(pressure::NodePressure::default());
    tokio::spawn(pressure::run(
        config.clone(),
        runtime.clone(),
        recorder.clone(),
        node_pressure.clone(),
        pinned,
        shutdown.clone(),
    ));
    tokio::spawn(node::status_loop(
        client.clone(),
        config.clone(),
        runtime.clone(),
        recorder,
        node_pressure.clone(),
        shutdown.clone(),
    ));
    tokio::spawn(rotation::run(
        runtime.clone(),
        config.log_limits,
        shutdown.clone(),
    ));
    let result = worker::run(client, config, runtime, node_pressure, shutdown).await;
    if let Some(supervisor) = supervisor {
        let _ = supervisor.await;
    }
    result
}

/// The pause image, then every archive in the images directory; answers
/// the names of the images imported from there, which the agent pins.
async fn import_images(
    config: &Config,
    socket: &std::path::Path,
) -> anyhow::Result<std::collections::HashSet<String>> {
    let dir = config.images_dir();
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let pause = config.agent_dir().join("pause.tar");
    std::fs::write(&pause, images::pause_archive()?)
        .with_context(|| format!("writing {}", pause.display()))?;
    images::import(socket, &pause)
        .await
        .context("importing the pause image")?;
    let mut archives: Vec<PathBuf> = std::fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| images::archive_kind(path).is_some())
        .collect();
    archives.sort();
    let mut pinned = std::collections::HashSet::new();
    for archive in archives {
        match images::import(socket, &archive).await {
            Ok(names) => {
                tracing::info!(archive = %archive.display(), images = ?names, "images imported and pinned");
                pinned.extend(names);
            }
            Err(err) => tracing::warn!(error = %format!("{err:#}"), "image not imported"),
        }
    }
    Ok(pinned)
}

/// Stops and removes every pod sandbox and container of the runtime at
/// `socket` (what a node's teardown does; tests clean up with it).
pub async fn remove_all_pods(socket: &std::path::Path) -> anyhow::Result<()> {
    let runtime = cri::Runtime::connect(socket)?;
    // Everything is tried; the first failure is answered.
    let mut failure = None;
    let mut note = |result: anyhow::Result<()>| {
        if let Err(err) = result {
            failure.get_or_insert(err);
        }
    };
    for container in runtime.containers(None).await? {
        note(runtime.stop_container(&container.id, 0).await);
        note(runtime.remove_container(&container.id).await);
    }
    for sandbox in runtime.sandboxes(None).await? {
        note(runtime.stop_sandbox(&sandbox.id).await);
        note(runtime.remove_sandbox(&sandbox.id).await);
    }
    // Nothing else sets up pods here.
    network::sweep_orphan_chains(std::time::Duration::ZERO);
    failure.map_or(Ok(()), Err)
}
