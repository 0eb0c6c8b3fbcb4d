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

    /// How often history older than one interval is compacted away, in
    /// seconds (kube-apiserver's --etcd-compaction-interval).
    #[arg(long, default_value_t = 300, value_name = "SECONDS")]
    pub(crate) compaction_interval: u64,
}
