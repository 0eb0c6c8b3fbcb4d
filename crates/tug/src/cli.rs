//! The command line as typed: flags in k3s's manner, parsed but not yet
//! validated (that is [`crate::server::Config`]'s job).

use std::path::PathBuf;

#[derive(clap::Parser, Debug)]
#[command(
    name = "tug",
    version,
    about = "Kubernetes, built again in Rust as one binary"
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(clap::Subcommand, Debug)]
pub(crate) enum Command {
    /// Run a server: the control plane and its store.
    Server(Box<ServerArgs>),
    /// Run a node agent that joins a server on another machine.
    Agent(Box<AgentArgs>),
    /// Register simulated nodes and play kubelet for their pods, through
    /// the API only (to test and measure the control plane at scale).
    SimNodes(SimNodesArgs),
    /// The node agent's images: import archives, list what is there.
    Images(ImagesArgs),
}

#[derive(clap::Args, Debug)]
pub(crate) struct AgentArgs {
    /// The server to join, e.g. https://10.0.0.1:6443.
    #[arg(long, env = "TUG_URL", value_name = "URL")]
    pub(crate) server: String,

    /// The server's node-join token (its <data-dir>/server/node-token).
    #[arg(long, env = "TUG_TOKEN", value_name = "TOKEN", hide_env_values = true)]
    pub(crate) token: String,

    /// Where the agent keeps its state (containerd, pods, credentials).
    #[arg(long, default_value = "/var/lib/tug", value_name = "DIR")]
    pub(crate) data_dir: PathBuf,

    #[command(flatten)]
    pub(crate) node: NodeArgs,
}

/// The node agent's flags, the same for `tug server` and `tug agent`.
#[derive(clap::Args, Debug)]
pub(crate) struct NodeArgs {
    /// The name of this machine's node (default: its hostname).
    #[arg(long, value_name = "NAME")]
    pub(crate) node_name: Option<String>,

    /// The node's address (default: the address of the route out, or
    /// 127.0.0.1 without one).
    #[arg(long, value_name = "IP")]
    pub(crate) node_ip: Option<String>,

    /// Use this CRI socket instead of starting containerd.
    #[arg(long, value_name = "SOCKET")]
    pub(crate) container_runtime_endpoint: Option<PathBuf>,

    /// The node agent's HTTPS port (logs, exec, attach and port-forward
    /// for the API server).
    #[arg(long, default_value_t = 10250, value_name = "PORT")]
    pub(crate) kubelet_port: u16,

    /// The Linux bridge the pods' network hangs from.
    #[arg(long, default_value = "cni0", value_name = "NAME", hide = true)]
    pub(crate) cni_bridge: String,

    /// A container's log is rotated past this size (kubelet's
    /// containerLogMaxSize).
    #[arg(long, default_value = "10Mi", value_name = "QUANTITY")]
    pub(crate) container_log_max_size: String,

    /// Log files kept per container, the current one included (kubelet's
    /// containerLogMaxFiles).
    #[arg(long, default_value_t = 5, value_name = "N")]
    pub(crate) container_log_max_files: usize,

    /// Hard eviction thresholds: the node is under memory, disk or PID
    /// pressure while one is met (kubelet's signals and defaults; given,
    /// it replaces them all).
    #[arg(long, default_value = tug_kubelet::pressure::DEFAULT_EVICTION_HARD, value_name = "SIGNAL<LEVEL,...")]
    pub(crate) eviction_hard: String,

    /// How long a pressure condition stays after its threshold was last met.
    #[arg(long, default_value = "5m0s", value_name = "DURATION")]
    pub(crate) eviction_pressure_transition_period: String,

    /// Unused images are collected once the image filesystem is this full
    /// (percent; 100 never)...
    #[arg(long, default_value_t = 85, value_name = "PERCENT")]
    pub(crate) image_gc_high_threshold: u8,

    /// ...down to this.
    #[arg(long, default_value_t = 80, value_name = "PERCENT")]
    pub(crate) image_gc_low_threshold: u8,

    /// Images first seen more recently are not collected.
    #[arg(long, default_value = "2m0s", value_name = "DURATION")]
    pub(crate) minimum_image_ttl_duration: String,
}

#[derive(clap::Args, Debug)]
pub(crate) struct ImagesArgs {
    /// The data dir of the server or agent whose containerd holds the images.
    #[arg(
        long,
        default_value = "/var/lib/tug",
        value_name = "DIR",
        global = true
    )]
    pub(crate) data_dir: PathBuf,

    /// A CRI socket to use instead of the agent's own containerd.
    #[arg(long, value_name = "SOCKET", global = true)]
    pub(crate) container_runtime_endpoint: Option<PathBuf>,

    #[command(subcommand)]
    pub(crate) command: ImagesCommand,
}

#[derive(clap::Subcommand, Debug)]
pub(crate) enum ImagesCommand {
    /// Import image archives (docker save's format, or OCI archives; plain, or compressed with gzip or zstd).
    Import {
        /// The archives.
        #[arg(required = true, value_name = "FILE.tar")]
        files: Vec<PathBuf>,
    },
    /// List the images, as crictl images does.
    #[command(alias = "ls")]
    List,
}

#[derive(clap::Args, Debug)]
pub(crate) struct SimNodesArgs {
    /// The API server, e.g. https://127.0.0.1:6443 (default: the kubeconfig's).
    #[arg(long, value_name = "URL")]
    pub(crate) server: Option<String>,

    /// The kubeconfig to authenticate with.
    #[arg(long, env = "KUBECONFIG", value_name = "FILE")]
    pub(crate) kubeconfig: PathBuf,

    /// How many nodes (at most 16384).
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub(crate) count: usize,

    /// Each node's CPU capacity.
    #[arg(long, default_value = "32", value_name = "CPUS")]
    pub(crate) cpu: String,

    /// Each node's memory capacity.
    #[arg(long, default_value = "256Gi", value_name = "QUANTITY")]
    pub(crate) memory: String,

    /// Each node's pod capacity.
    #[arg(long, default_value_t = 110, value_name = "N")]
    pub(crate) pods: u32,

    /// A label for every node, key=value (repeatable).
    #[arg(long = "labels", value_name = "KEY=VALUE", value_delimiter = ',')]
    pub(crate) labels: Vec<String>,

    /// Spread the nodes over this many zones: node i gets
    /// `topology.kubernetes.io/zone=zone-(i mod N)`.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub(crate) zones: usize,

    /// A taint for every node, key=value:Effect or key:Effect (repeatable).
    #[arg(long = "taints", value_name = "TAINT", value_delimiter = ',')]
    pub(crate) taints: Vec<String>,

    /// The nodes' name prefix; they are named <prefix>0, <prefix>1, ...
    #[arg(long, default_value = "sim-", value_name = "PREFIX")]
    pub(crate) name_prefix: String,

    /// Milliseconds from a pod's binding to its running.
    #[arg(long, default_value_t = 0, value_name = "MS")]
    pub(crate) start_delay_ms: u64,

    /// Milliseconds from a pod's running to its readiness.
    #[arg(long, default_value_t = 0, value_name = "MS")]
    pub(crate) ready_delay_ms: u64,

    /// API writes in flight at once.
    #[arg(long, default_value_t = 32, value_name = "N")]
    pub(crate) writers: usize,

    /// Milliseconds between reports of the nodes, pods and own usage.
    #[arg(long, default_value_t = 10_000, value_name = "MS")]
    pub(crate) report_interval_ms: u64,
}

#[derive(clap::Args, Debug)]
pub(crate) struct ServerArgs {
    /// Where tug keeps its state.
    #[arg(long, default_value = "/var/lib/tug", value_name = "DIR")]
    pub(crate) data_dir: PathBuf,

    /// Use etcd instead of the embedded SQLite store:
    /// http(s)://HOST:2379, comma-separated for several members.
    #[arg(long, value_name = "URLS")]
    pub(crate) datastore_endpoint: Option<String>,

    /// CA certificate (PEM) that signed the etcd servers' certificates.
    #[arg(long, value_name = "FILE", requires = "datastore_endpoint")]
    pub(crate) datastore_cafile: Option<PathBuf>,

    /// Client certificate (PEM) for etcd.
    #[arg(long, value_name = "FILE", requires_all = ["datastore_endpoint", "datastore_keyfile"])]
    pub(crate) datastore_certfile: Option<PathBuf>,

    /// Client key (PEM) for etcd.
    #[arg(long, value_name = "FILE", requires_all = ["datastore_endpoint", "datastore_certfile"])]
    pub(crate) datastore_keyfile: Option<PathBuf>,

    /// The port the API server listens on.
    #[arg(long, default_value_t = 6443, value_name = "PORT")]
    pub(crate) https_listen_port: u16,

    /// The address the API server listens on.
    #[arg(long, default_value = "0.0.0.0", value_name = "IP")]
    pub(crate) bind_address: String,

    /// Another name or address for the API server's certificate (repeatable).
    #[arg(long, value_name = "NAME")]
    pub(crate) tls_san: Vec<String>,

    /// Where the admin kubeconfig is written.
    #[arg(long, default_value = "/etc/tug/tug.yaml", value_name = "FILE")]
    pub(crate) write_kubeconfig: PathBuf,

    /// The admin kubeconfig's file mode, in octal.
    #[arg(long, default_value = "600", value_name = "MODE")]
    pub(crate) write_kubeconfig_mode: String,

    /// Pod addresses: each node without a pod CIDR gets a /24 of it.
    #[arg(long, default_value = "10.42.0.0/16", value_name = "CIDR")]
    pub(crate) cluster_cidr: String,

    /// Service addresses.
    #[arg(long, default_value = "10.43.0.0/16", value_name = "CIDR")]
    pub(crate) service_cidr: String,

    /// The secret that node agents join with; kept in
    /// <data-dir>/server/node-token (made on first start when not given).
    #[arg(long, env = "TUG_TOKEN", value_name = "TOKEN", hide_env_values = true)]
    pub(crate) token: Option<String>,

    /// Bearer tokens the API accepts, as kube-apiserver's
    /// --token-auth-file: lines of token,user,uid[,"group1,group2"].
    #[arg(long, value_name = "FILE")]
    pub(crate) token_auth_file: Option<PathBuf>,

    /// Do not run a node agent on this machine: the server's own node
    /// runs no pods.
    #[arg(long)]
    pub(crate) disable_agent: bool,

    #[command(flatten)]
    pub(crate) node: NodeArgs,

    /// Do not run the scheduler (k3s's flag): pods stay Pending unless
    /// another scheduler binds them.
    #[arg(long)]
    pub(crate) disable_scheduler: bool,

    /// Run no controller-manager: no controller makes ReplicaSets' pods
    /// (for tests and benchmarks of the API alone).
    #[arg(long)]
    pub(crate) disable_controller_manager: bool,

    /// Seconds a node may go without renewing its Lease or posting its
    /// status before it is marked Unknown and tainted unreachable
    /// (kube-controller-manager's --node-monitor-grace-period).
    #[arg(long, default_value_t = 50, value_name = "SECONDS")]
    pub(crate) node_monitor_grace_period: u64,

    /// How often history older than one interval is compacted away, in
    /// seconds (kube-apiserver's --etcd-compaction-interval).
    #[arg(long, default_value_t = 300, value_name = "SECONDS")]
    pub(crate) compaction_interval: u64,
}
