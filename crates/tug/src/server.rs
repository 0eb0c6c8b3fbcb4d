//! `tug server`: opens the store and runs the control plane until SIGINT
//! or SIGTERM. Later components (API server, scheduler, controllers, node
//! agent) join here, started in order and stopped in reverse.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio_util::sync::CancellationToken;
use tug_store::{etcd, sqlite};

use crate::cli::{NodeArgs, ServerArgs};

/// A server's validated configuration.
#[derive(Debug)]
pub(crate) struct Config {
    pub(crate) data_dir: PathBuf,
    pub(crate) store: tug_store::Config,
    pub(crate) compaction_interval: Duration,
    pub(crate) api: tug_apiserver::Config,
    pub(crate) disable_scheduler: bool,
    pub(crate) disable_controller_manager: bool,
    pub(crate) controllers: tug_controllers::Config,
    /// The node agent's configuration, unless --disable-agent.
    pub(crate) agent: Option<tug_kubelet::Config>,
}

fn check_cidr(flag: &str, value: &str) -> anyhow::Result<()> {
    let valid = value.split_once('/').is_some_and(|(ip, bits)| {
        ip.parse::<std::net::IpAddr>().is_ok() && bits.parse::<u8>().is_ok_and(|b| b <= 128)
    });
    if !valid {
        bail!("{flag} must be a CIDR such as 10.42.0.0/16, not {value:?}");
    }
    Ok(())
}

/// The node name as Kubernetes wants it: the hostname, lowercased.
pub(crate) fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_lowercase())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "tug".into())
}

/// The node agent's configuration from its flags (`tug server`'s and
/// `tug agent`'s).
pub(crate) fn agent_config(
    flags: &NodeArgs,
    data_dir: &std::path::Path,
    control_plane: bool,
) -> anyhow::Result<tug_kubelet::Config> {
    let node_name = flags.node_name.clone().unwrap_or_else(hostname);
    let valid_name = !node_name.is_empty()
        && node_name.len() <= 253
        && node_name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
    if !valid_name {
        bail!(
            "--node-name must be a DNS subdomain (lowercase letters, digits, '-' and '.'), not {node_name:?}"
        );
    }
    let node_ip = match &flags.node_ip {
        Some(ip) => ip
            .parse()
            .map_err(|_| anyhow::anyhow!("--node-ip must be an IP address, not {ip:?}"))?,
        None => tug_kubelet::node::default_ip(),
    };
    let max_size = tug_api::quantity::value(&flags.container_log_max_size)
        .filter(|bytes| *bytes >= 1024)
        .ok_or_else(|| {
            anyhow::anyhow!(
                "--container-log-max-size must be a quantity of at least 1Ki, not {:?}",
                flags.container_log_max_size
            )
        })?;
    if flags.container_log_max_files < 2 {
        bail!("--container-log-max-files must be at least 2");
    }
    let eviction_hard = tug_kubelet::pressure::parse_thresholds(&flags.eviction_hard)
        .map_err(|err| anyhow::anyhow!("--eviction-hard: {err}"))?;
    let duration = |flag: &str, value: &str| {
        tug_kubelet::pressure::parse_duration(value).ok_or_else(|| {
            anyhow::anyhow!("--{flag} must be a duration such as 5m0s or 30s, not {value:?}")
        })
    };
    let (high, low) = (flags.image_gc_high_threshold, flags.image_gc_low_threshold);
    if high > 100 || low > high {
        bail!(
            "--image-gc-high-threshold must be at most 100 and --image-gc-low-threshold at most it, not {high} and {low}"
        );
    }
    Ok(tug_kubelet::Config {
        node_name,
        node_ip,
        data_dir: data_dir.to_path_buf(),
        runtime_endpoint: flags.container_runtime_endpoint.clone(),
        cni_bridge: flags.cni_bridge.clone(),
        labels: Default::default(),
        control_plane,
        port: flags.kubelet_port,
        // Issued by the API server (at its start, or when the agent joins).
        tls: None,
        log_limits: tug_kubelet::rotation::Limits {
            max_size: u64::try_from(max_size).unwrap_or(u64::MAX),
            max_files: flags.container_log_max_files,
        },
        eviction_hard,
        eviction_pressure_transition: duration(
            "eviction-pressure-transition-period",
            &flags.eviction_pressure_transition_period,
        )?,
        image_gc: tug_kubelet::pressure::ImageGcPolicy {
            high,
            low,
            min_age: duration(
                "minimum-image-ttl-duration",
                &flags.minimum_image_ttl_duration,
            )?,
        },
    })
}

impl TryFrom<ServerArgs> for Config {
    type Error = anyhow::Error;

    fn try_from(args: ServerArgs) -> anyhow::Result<Self> {
        if !args.data_dir.is_absolute() {
            bail!(
                "--data-dir must be an absolute path, not {}",
                args.data_dir.display()
            );
        }
        if args.node_monitor_grace_period == 0 {
            bail!("--node-monitor-grace-period must be at least 1 second");
        }
        if args.compaction_interval == 0 {
            bail!("--compaction-interval must be at least 1 second");
        }
        let bind_address = args.bind_address.parse().map_err(|_| {
            anyhow::anyhow!(
                "--bind-address must be an IP address, not {:?}",
                args.bind_address
            )
        })?;
        let kubeconfig_mode = u32::from_str_radix(&args.write_kubeconfig_mode, 8)
            .ok()
            .filter(|mode| *mode <= 0o777)
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "--write-kubeconfig-mode must be an octal file mode such as 600, not {:?}",
                    args.write_kubeconfig_mode
                )
            })?;
        check_cidr("--cluster-cidr", &args.cluster_cidr)?;
        check_cidr("--service-cidr", &args.service_cidr)?;
        let agent = if args.disable_agent {
            None
        } else {
            Some(agent_config(&args.node, &args.data_dir, true)?)
        };
        let store = match args.datastore_endpoint {
            Some(endpoints) => tug_store::Config::Etcd(etcd::Config {
                ca_file: args.datastore_cafile,
                cert_file: args.datastore_certfile,
                key_file: args.datastore_keyfile,
                ..etcd::Config::from_endpoints(&endpoints)?
            }),
            None => tug_store::Config::Sqlite(sqlite::Config {
                path: args.data_dir.join("server/db/state.db"),
            }),
        };
        Ok(Self {
            api: tug_apiserver::Config {
                bind_address,
                port: args.https_listen_port,
                data_dir: args.data_dir.clone(),
                tls_sans: args.tls_san,
                kubeconfig_path: args.write_kubeconfig,
                kubeconfig_mode,
                service_cidr: args.service_cidr.clone(),
                token_auth_file: args.token_auth_file,
                node_token: args.token,
                agent_node: agent.as_ref().map(|a| tug_apiserver::AgentNode {
                    name: a.node_name.clone(),
                    address: a.node_ip,
                }),
            },
            agent,
            data_dir: args.data_dir,
            disable_scheduler: args.disable_scheduler,
            disable_controller_manager: args.disable_controller_manager,
            controllers: tug_controllers::Config {
                cluster_cidr: args.cluster_cidr.clone(),
                nodes: tug_controllers::nodelifecycle::Config {
                    grace_period: Duration::from_secs(args.node_monitor_grace_period),
                    ..Default::default()
                },
            },
            store,
            compaction_interval: Duration::from_secs(args.compaction_interval),
        })
    }
}

pub(crate) async fn run(config: Config) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    let store = tug_store::open(config.store.clone())
        .await
        .context("opening the store")?;
    match &config.store {
        tug_store::Config::Sqlite(sqlite) => {
            tracing::info!(path = %sqlite.path.display(), "store: SQLite");
        }
        tug_store::Config::Etcd(etcd) => {
            tracing::info!(endpoints = %etcd.endpoints.join(","), "store: etcd");
        }
    }
    let compactor = tokio::spawn(tug_store::compactor::run(
        store.clone(),
        config.compaction_interval,
        shutdown.clone(),
    ));
    let data_dir = config.data_dir.clone();
    let (started_tx, started_rx) = tokio::sync::oneshot::channel();
    let api = tokio::spawn(tug_apiserver::run(
        config.api.clone(),
        store.clone(),
        shutdown.clone(),
        move |started| {
            let _ = started_tx.send(started.clone());
            println!("kubeconfig: {}", started.kubeconfig_path.display());
            tracing::info!(
                address = %started.address,
                kubeconfig = %started.kubeconfig_path.display(),
                data_dir = %data_dir.display(),
                "tug server is running"
            );
        },
    ));
    let components = tokio::spawn(run_components(
        started_rx,
        Components {
            scheduler: !config.disable_scheduler,
            controller_manager: (!config.disable_controller_manager)
                .then(|| config.controllers.clone()),
            agent: config.agent.clone(),
        },
        shutdown.clone(),
    ));

    let api_ended = tokio::select! {
        result = wait_for_signal() => { result?; None }
        result = api => Some(result),
    };
    shutdown.cancel();
    if let Some(result) = api_ended {
        let _ = compactor.await;
        return match result {
            Ok(Ok(())) => Err(anyhow::anyhow!("the API server stopped")),
            Ok(Err(err)) => Err(err.context("the API server failed")),
            Err(err) => Err(anyhow::anyhow!("the API server stopped abnormally: {err}")),
        };
    }
    tracing::info!("shutting down");
    let _ = components.await;
    compactor
        .await
        .context("the compactor stopped abnormally")?;
    drop(store);
    tracing::info!("stopped");
    Ok(())
}

/// Which control-plane components run beside the API server.
struct Components {
    scheduler: bool,
    /// The controllers' configuration, if they run.
    controller_manager: Option<tug_controllers::Config>,
    agent: Option<tug_kubelet::Config>,
}

/// The scheduler and the controller-manager, each leader-elected, once
/// the API serves.
async fn run_components(
    started: tokio::sync::oneshot::Receiver<tug_apiserver::Started>,
    components: Components,
    shutdown: CancellationToken,
) {
    let Ok(started) = started.await else {
        return;
    };
    let host = hostname();
    let identity = format!("{host}_{}", uuid::Uuid::new_v4());
    let mut tasks = tokio::task::JoinSet::new();
    if components.scheduler {
        let client = loopback_client(&started.loopback, "system:kube-scheduler", "kube-scheduler");
        let election = crate::leader::Election::new(client.clone(), "kube-scheduler", &identity);
        let config = tug_scheduler::Config {
            instance: format!("{}-{host}", tug_scheduler::DEFAULT_SCHEDULER),
            ..tug_scheduler::Config::default()
        };
        tasks.spawn(crate::leader::run_elected(
            election,
            shutdown.clone(),
            move |leading| tug_scheduler::run(client.clone(), config.clone(), leading),
        ));
    }
    if let Some(config) = components.controller_manager {
        let client = loopback_client(
            &started.loopback,
            "system:kube-controller-manager",
            "kube-controller-manager",
        );
        let election =
            crate::leader::Election::new(client.clone(), "kube-controller-manager", &identity);
        tasks.spawn(crate::leader::run_elected(
            election,
            shutdown.clone(),
            move |leading| tug_controllers::run(client.clone(), config.clone(), leading),
        ));
    }
    if let (Some(mut config), Some(credentials)) = (components.agent, &started.agent) {
        let Some(client) = component_client(&credentials.kubeconfig, "kubelet").await else {
            return;
        };
        config.tls = Some(tug_kubelet::server::Tls {
            cert: credentials.serving_cert.clone(),
            key: credentials.serving_key.clone(),
            client_ca: credentials.client_ca.clone(),
        });
        tasks.spawn(run_agent(client, config, shutdown.clone()));
    }
    while tasks.join_next().await.is_some() {}
}

/// Runs the node agent until `shutdown`, again with back-off when it
/// fails: containerd may be missing or slow, and the rest serves meanwhile.
pub(crate) async fn run_agent(
    client: kube::Client,
    config: tug_kubelet::Config,
    shutdown: CancellationToken,
) {
    let mut delay = Duration::from_secs(2);
    loop {
        // What a failed attempt started (containerd) stops with it.
        let attempt = shutdown.child_token();
        let result = tug_kubelet::run(client.clone(), config.clone(), attempt.clone()).await;
        attempt.cancel();
        match result {
            Ok(()) => return,
            Err(err) => tracing::error!(
                error = %format!("{err:#}"),
                "the node agent failed; retrying in {}s",
                delay.as_secs()
            ),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(60));
    }
}

/// A client for a component, which names itself in its User-Agent as
/// upstream's do (field managers come from it).
async fn component_client(kubeconfig: &std::path::Path, what: &str) -> Option<kube::Client> {
    match client_from(kubeconfig, None, Some(&user_agent(what))).await {
        Ok(client) => Some(client),
        Err(err) => {
            tracing::error!(error = %format!("{err:#}"), "the {what} cannot reach the API");
            None
        }
    }
}

/// A client for a component in this process, as `user`: its requests go
/// straight to the API server's router (no TCP, TLS or HTTP framing).
fn loopback_client(
    loopback: &tug_apiserver::loopback::Loopback,
    user: &str,
    what: &str,
) -> kube::Client {
    let agent = http::HeaderValue::from_str(&user_agent(what)).expect("a User-Agent is ASCII");
    kube::Client::new(loopback.service(user, Vec::new(), agent), "default")
}

/// A component's User-Agent, as upstream's components name themselves.
pub(crate) fn user_agent(what: &str) -> String {
    format!(
        "{what}/{} ({}/{}) kubernetes/tug",
        tug_apiserver::KUBERNETES_VERSION,
        std::env::consts::OS,
        match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            other => other,
        }
    )
}

/// A client with the credentials of a kubeconfig file, at `server` if
/// given instead of the kubeconfig's.
pub(crate) async fn client_from(
    path: &std::path::Path,
    server: Option<&str>,
    user_agent: Option<&str>,
) -> anyhow::Result<kube::Client> {
    use kube::config::{KubeConfigOptions, Kubeconfig};
    let kubeconfig =
        Kubeconfig::read_from(path).with_context(|| format!("reading {}", path.display()))?;
    let mut config =
        kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .context("the kubeconfig")?;
    if let Some(server) = server {
        config.cluster_url = server
            .parse()
            .with_context(|| format!("--server {server:?} is not a URL"))?;
    }
    if let Some(agent) = user_agent {
        config.headers.push((
            http::header::USER_AGENT,
            http::HeaderValue::from_str(agent).context("the User-Agent")?,
        ));
    }
    kube::Client::try_from(config).context("the API client")
}

pub(crate) async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    tokio::select! {
        result = tokio::signal::ctrl_c() => result.context("waiting for SIGINT")?,
        _ = terminate.recv() => {}
    }
    Ok(())
}
