//! tug's Kubernetes API server.
//!
//! A request goes: TLS (the accept loop in [`server`] keeps the client
//! certificate) -> authentication ([`auth`]: the certificate's CN and O, or
//! a bearer token; anonymous requests reach only health and version) ->
//! limits (in-flight requests, watches, body size) -> routing -> the
//! [`auth::Authorizer`] -> [`discovery`] or [`rest`] -> the store.
//! Every error leaves as a Kubernetes `Status` built in [`status`].
//!
//! Start at [`run`]. RBAC and admission are not here yet; see
//! ARCHITECTURE.md.

mod admission;
pub mod allocate;
pub mod auth;
pub mod cache;
pub mod crd;
pub mod discovery;
pub mod join;
pub mod loopback;
mod managed;
pub mod namespaces;
pub mod openapi;
pub mod openapi_v2;
pub mod patch;
pub mod pki;
pub mod protobuf;
pub mod proxy;
pub mod rest;
pub mod server;
pub mod serviceaccount;
pub mod spdy;
pub mod status;
pub mod stream;
pub mod table;
pub mod websocket;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tug_store::{PutOptions, Store};

/// Requests other than watches served at once, as kube-apiserver's
/// `--max-requests-inflight`.
pub const IN_FLIGHT_MAX: usize = 400;
/// Watches served at once.
pub const WATCHES_MAX: usize = 8000;

#[derive(Clone, Debug)]
pub struct Config {
    pub bind_address: IpAddr,
    pub port: u16,
    pub data_dir: PathBuf,
    /// Extra names and addresses for the serving certificate.
    pub tls_sans: Vec<String>,
    /// Where the admin kubeconfig is written, and its mode.
    pub kubeconfig_path: PathBuf,
    pub kubeconfig_mode: u32,
    /// Where Services' cluster IPs come from, e.g. 10.43.0.0/16.
    pub service_cidr: String,
    /// Upstream's static token file (`token,user,uid,"groups"`), if any.
    pub token_auth_file: Option<PathBuf>,
    /// The node-join token; `None` keeps the one in the data dir, made on
    /// first start.
    pub node_token: Option<String>,
    /// The node of this server's own agent, if it runs one: its
    /// credentials (`system:node:<name>`) and serving certificate are
    /// written beside the others.
    pub agent_node: Option<AgentNode>,
}

/// Where the node-join token is kept, as k3s's `server/node-token`.
pub fn node_token_path(data_dir: &std::path::Path) -> PathBuf {
    data_dir.join("server").join("node-token")
}

/// The SHA-256 of the CA certificate's PEM, hex: what a full node-join
/// token pins.
pub fn ca_hash(ca_pem: &str) -> String {
    ring::digest::digest(&ring::digest::SHA256, ca_pem.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The node-join secret: the one given (saved for the next start), else
/// the saved one, else a new random one. The file holds the full token,
/// with the CA's hash, as k3s's `node-token`.
fn node_token(config: &Config, ca: &pki::Ca) -> anyhow::Result<String> {
    let path = node_token_path(&config.data_dir);
    let secret = match &config.node_token {
        Some(token) if tug_api::join::parse(token).1.is_empty() => {
            anyhow::bail!("--token must not be empty")
        }
        Some(token) => tug_api::join::parse(token).1.to_string(),
        None => match std::fs::read_to_string(&path) {
            Ok(saved) if !tug_api::join::parse(&saved).1.is_empty() => {
                tug_api::join::parse(&saved).1.to_string()
            }
            Ok(_) => anyhow::bail!("{} is empty; remove it or pass --token", path.display()),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                let bytes: [u8; 24] = rand::random();
                bytes.iter().map(|b| format!("{b:02x}")).collect()
            }
            Err(err) => {
                return Err(err).with_context(|| format!("reading {}", path.display()));
            }
        },
    };
    let full = tug_api::join::token(&ca_hash(ca.cert_pem()), &secret);
    pki::write_private(&path, format!("{full}\n").as_bytes(), 0o600)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(secret)
}

/// The Kubernetes version tug serves, as `/version` says it.
pub const KUBERNETES_VERSION: &str = "v1.33.0+tug1";

/// What a started API server tells its caller.
#[derive(Clone, Debug)]
pub struct Started {
    pub address: SocketAddr,
    pub kubeconfig_path: PathBuf,
    /// The scheduler's own credentials (`system:kube-scheduler`), in
    /// `<data-dir>/server/cred/scheduler.kubeconfig`.
    pub scheduler_kubeconfig: PathBuf,
    /// The controller-manager's (`system:kube-controller-manager`), in
    /// `<data-dir>/server/cred/controller.kubeconfig`.
    pub controller_kubeconfig: PathBuf,
    /// The node agent's (`system:node:<name>`, group `system:nodes`), in
    /// `<data-dir>/server/cred/agent.kubeconfig`, and its serving
    /// certificate, if it runs.
    pub agent: Option<AgentCredentials>,
    /// For clients in this process: the scheduler and the controller-manager.
    pub loopback: loopback::Loopback,
}

/// The node agent that runs beside the API server.
#[derive(Clone, Debug)]
pub struct AgentNode {
    pub name: String,
    pub address: IpAddr,
}

/// A node agent's credentials, as files.
#[derive(Clone, Debug)]
pub struct AgentCredentials {
    /// `system:node:<name>` in `system:nodes`.
    pub kubeconfig: PathBuf,
    /// Its HTTPS server's certificate and key, naming the node and its address.
    pub serving_cert: PathBuf,
    pub serving_key: PathBuf,
    /// The cluster CA, which signs the API server's client certificate.
    pub client_ca: PathBuf,
}

/// The namespaces every cluster has.
const DEFAULT_NAMESPACES: &[&str] = &["default", "kube-system", "kube-public", "kube-node-lease"];

async fn ensure_default_namespaces(store: &dyn Store) -> anyhow::Result<()> {
    let now = tug_api::format::timestamp(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64),
    );
    for name in DEFAULT_NAMESPACES {
        let namespace = json!({
            "metadata": {
                "name": name,
                "uid": uuid::Uuid::new_v4().to_string(),
                "creationTimestamp": now,
                "labels": {"kubernetes.io/metadata.name": name},
            },
            "spec": {"finalizers": ["kubernetes"]},
            "status": {"phase": "Active"},
        });
        let key = format!("/registry/namespaces/{name}");
        match store
            .create(
                &key,
                serde_json::to_vec(&namespace)?.into(),
                PutOptions::default(),
            )
            .await
        {
            Ok(_) | Err(tug_store::Error::AlreadyExists { .. }) => {}
            Err(err) => return Err(err).context("creating the default namespaces"),
        }
    }
    Ok(())
}

/// The PriorityClasses every cluster has.
async fn ensure_system_priority_classes(store: &dyn Store) -> anyhow::Result<()> {
    let now = tug_api::format::timestamp(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64),
    );
    let classes = tug_api::registry::find("scheduling.k8s.io", "v1", "priorityclasses")
        .expect("priority classes are served");
    for (name, value, description) in [
        (
            "system-node-critical",
            2_000_001_000,
            "Used for system critical pods that must not be moved from their current node.",
        ),
        (
            "system-cluster-critical",
            2_000_000_000,
            "Used for system critical pods that must run in the cluster, but can be moved to another node if necessary.",
        ),
    ] {
        let class = json!({
            "apiVersion": "scheduling.k8s.io/v1",
            "kind": "PriorityClass",
            "metadata": {
                "name": name,
                "uid": uuid::Uuid::new_v4().to_string(),
                "creationTimestamp": now,
            },
            "value": value,
            "description": description,
            "preemptionPolicy": "PreemptLowerPriority",
        });
        let key = format!("{}{name}", tug_api::convert::storage_prefix(classes));
        match store
            .create(
                &key,
                serde_json::to_vec(&class)?.into(),
                PutOptions::default(),
            )
            .await
        {
            Ok(_) | Err(tug_store::Error::AlreadyExists { .. }) => {}
            Err(err) => return Err(err).context("creating the system priority classes"),
        }
    }
    Ok(())
}

/// The `kubernetes` Service in `default`, at the first address of the
/// service range, as every cluster has it.
async fn ensure_kubernetes_service(api: &rest::ApiState, port: u16) -> anyhow::Result<()> {
    let key = "/registry/services/default/kubernetes";
    if api.store.get(key, None).await?.kv.is_some() {
        return Ok(());
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let mut service = json!({
        "metadata": {
            "name": "kubernetes",
            "namespace": "default",
            "uid": uuid::Uuid::new_v4().to_string(),
            "creationTimestamp": tug_api::format::timestamp(now),
            "labels": {"component": "apiserver", "provider": "kubernetes"},
        },
        "spec": {
            "clusterIP": api.service_cidr.kubernetes_ip().to_string(),
            "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": port}],
        },
    });
    tug_api::defaults::apply("", "services", &mut service);
    let claimed = allocate::service(api.store.as_ref(), api.service_cidr, &mut service)
        .await
        .map_err(|e| {
            anyhow::anyhow!("allocating the kubernetes Service's address: {}", e.message)
        })?;
    match api
        .store
        .create(
            key,
            serde_json::to_vec(&service)?.into(),
            PutOptions::default(),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(tug_store::Error::AlreadyExists { .. }) => {
            allocate::release(api.store.as_ref(), &claimed).await;
            Ok(())
        }
        Err(err) => Err(err).context("creating the kubernetes Service"),
    }
}

fn serving_names(config: &Config) -> Vec<String> {
    let mut names: Vec<String> = [
        "localhost",
        "127.0.0.1",
        "::1",
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        "kubernetes.default.svc.cluster.local",
        "10.43.0.1",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if let Ok(hostname) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
        names.push(hostname.trim().to_string());
    }
    if !config.bind_address.is_unspecified() {
        names.push(config.bind_address.to_string());
    }
    names.extend(config.tls_sans.iter().cloned());
    names.retain(|n| !n.is_empty());
    names.dedup();
    names
}

/// Starts serving: creates the PKI and kubeconfig if needed, the default
/// namespaces, then serves until `shutdown`. `started` is called once the
/// server accepts connections.
pub async fn run(
    config: Config,
    store: Arc<dyn Store>,
    shutdown: CancellationToken,
    started: impl FnOnce(Started),
) -> anyhow::Result<()> {
    let ca = pki::Ca::load_or_create(&pki::tls_dir(&config.data_dir))?;
    let serving = ca.serving(&serving_names(&config))?;
    let admin = ca.client("system:admin", &["system:masters"])?;
    let service_cidr = allocate::ServiceCidr::parse(&config.service_cidr)
        .map_err(|e| anyhow::anyhow!("--service-cidr: {e}"))?;
    let mut tokens = auth::Tokens::default();
    if let Some(path) = &config.token_auth_file {
        tokens.load_file(path)?;
    }
    let join_secret = node_token(&config, &ca)?;
    tokens.add_node_join(&join_secret);
    tokens.add_node_join(&tug_api::join::token(&ca_hash(ca.cert_pem()), &join_secret));
    ensure_default_namespaces(store.as_ref()).await?;
    ensure_system_priority_classes(store.as_ref()).await?;

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.cert_der()?.into())?;
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .allow_unauthenticated()
    .build()?;
    let chain = pki::pem_blocks(&serving.cert_pem, "CERTIFICATE")?
        .into_iter()
        .map(rustls::pki_types::CertificateDer::from)
        .collect();
    let key_der = pki::pem_blocks(&serving.key_pem, "PRIVATE KEY")?
        .into_iter()
        .next()
        .context("the serving key is missing")?;
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(key_der.into());
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)?;
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));

    let address = SocketAddr::new(config.bind_address, config.port);
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| format!("listening on {address}"))?;
    let address = listener.local_addr()?;
    // Written once the port is known (port 0 picks a free one).
    let server_url = format!(
        "https://{}:{}",
        match config.bind_address {
            IpAddr::V4(ip) if !ip.is_unspecified() => ip.to_string(),
            _ => "127.0.0.1".to_string(),
        },
        address.port()
    );
    pki::write_private(
        &config.kubeconfig_path,
        pki::kubeconfig(&server_url, ca.cert_pem(), &admin).as_bytes(),
        config.kubeconfig_mode,
    )
    .with_context(|| {
        format!(
            "writing the kubeconfig {}",
            config.kubeconfig_path.display()
        )
    })?;
    let cred = config.data_dir.join("server/cred");
    let component_kubeconfig =
        |file: &str, user: &str, groups: &[&str]| -> anyhow::Result<PathBuf> {
            let path = cred.join(file);
            let identity = ca.client(user, groups)?;
            pki::write_private(
                &path,
                pki::kubeconfig(&server_url, ca.cert_pem(), &identity).as_bytes(),
                0o600,
            )
            .with_context(|| format!("writing {}", path.display()))?;
            Ok(path)
        };
    let scheduler_kubeconfig =
        component_kubeconfig("scheduler.kubeconfig", "system:kube-scheduler", &[])?;
    let controller_kubeconfig = component_kubeconfig(
        "controller.kubeconfig",
        "system:kube-controller-manager",
        &[],
    )?;
    let agent = match &config.agent_node {
        Some(node) => {
            let kubeconfig = component_kubeconfig(
                "agent.kubeconfig",
                &format!("system:node:{}", node.name),
                &["system:nodes"],
            )?;
            let serving = ca.serving_as(
                &format!("system:node:{}", node.name),
                &[
                    node.name.clone(),
                    node.address.to_string(),
                    "127.0.0.1".into(),
                    "localhost".into(),
                ],
            )?;
            let (serving_cert, serving_key) = (
                cred.join("agent-serving.crt"),
                cred.join("agent-serving.key"),
            );
            pki::write_private(&serving_cert, serving.cert_pem.as_bytes(), 0o644)?;
            pki::write_private(&serving_key, serving.key_pem.as_bytes(), 0o600)?;
            Some(AgentCredentials {
                kubeconfig,
                serving_cert,
                serving_key,
                client_ca: pki::tls_dir(&config.data_dir).join("ca.crt"),
            })
        }
        None => None,
    };
    let kubelet_client = Arc::new(proxy::KubeletClient::new(&ca)?);
    let shared = Arc::new(server::Shared {
        api: Arc::new(rest::ApiState {
            store: store.clone(),
            service_cidr,
            watches: Arc::new(tokio::sync::Semaphore::new(WATCHES_MAX)),
            caches: cache::Caches::new(store.clone()),
        }),
        in_flight: Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT_MAX)),
        authn: auth::Authenticator {
            tokens,
            issuer: serviceaccount::Issuer::load_or_create(&pki::tls_dir(&config.data_dir))?,
        },
        authorizer: Arc::new(auth::AllowAuthenticated),
        kubelet: kubelet_client,
        ca: Arc::new(ca),
    });
    ensure_kubernetes_service(&shared.api, address.port()).await?;
    tokio::spawn(crd::run(shared.api.clone(), shutdown.clone()));
    tokio::spawn(namespaces::run(shared.api.clone(), shutdown.clone()));
    let router = server::router(shared);
    started(Started {
        address,
        kubeconfig_path: config.kubeconfig_path.clone(),
        scheduler_kubeconfig,
        controller_kubeconfig,
        agent,
        loopback: loopback::Loopback(router.clone()),
    });
    server::serve(listener, acceptor, router, shutdown).await;
    Ok(())
}
