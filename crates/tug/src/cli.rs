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
    Server(ServerArgs),
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

    /// Pod addresses, one /24 per node (used by the node agent, to come).
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

    /// Do not run a node agent on this machine (there is none yet).
    #[arg(long)]
    pub(crate) disable_agent: bool,

    /// How often history older than one interval is compacted away, in
    /// seconds (kube-apiserver's --etcd-compaction-interval).
    #[arg(long, default_value_t = 300, value_name = "SECONDS")]
    pub(crate) compaction_interval: u64,
}
