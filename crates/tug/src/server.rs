//! `tug server`: opens the store and runs the control plane until SIGINT
//! or SIGTERM. Later components (API server, scheduler, controllers, node
//! agent) join here, started in order and stopped in reverse.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio_util::sync::CancellationToken;
use tug_store::{etcd, sqlite};

use crate::cli::ServerArgs;

/// A server's validated configuration.
#[derive(Debug)]
pub(crate) struct Config {
    pub(crate) data_dir: PathBuf,
    pub(crate) store: tug_store::Config,
    pub(crate) compaction_interval: Duration,
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
        if args.compaction_interval == 0 {
            bail!("--compaction-interval must be at least 1 second");
        }
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
            data_dir: args.data_dir,
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
    tracing::info!(data_dir = %config.data_dir.display(), "tug server is running");

    wait_for_signal().await?;
    tracing::info!("shutting down");
    shutdown.cancel();
    compactor
        .await
        .context("the compactor stopped abnormally")?;
    drop(store);
    tracing::info!("stopped");
    Ok(())
}

async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    tokio::select! {
        result = tokio::signal::ctrl_c() => result.context("waiting for SIGINT")?,
        _ = terminate.recv() => {}
    }
    Ok(())
}
