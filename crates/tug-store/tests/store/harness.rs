//! Starts the backends the suite runs against: an SQLite file in a temp
//! dir, or a real etcd process on free loopback ports.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tug_store::{Config, Store, etcd, sqlite};

/// One backend under test, with what it needs to be restarted.
pub(crate) struct Backend {
    pub(crate) name: &'static str,
    pub(crate) dir: tempfile::TempDir,
    pub(crate) etcd: Option<EtcdProcess>,
}

impl Backend {
    pub(crate) fn sqlite() -> Self {
        Self {
            name: "sqlite",
            dir: tempfile::tempdir().expect("temp dir"),
            etcd: None,
        }
    }

    pub(crate) async fn etcd() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let etcd = EtcdProcess::start(&dir.path().join("etcd")).await;
        Self {
            name: "etcd",
            dir,
            etcd: Some(etcd),
        }
    }

    pub(crate) fn sqlite_path(&self) -> PathBuf {
        self.dir.path().join("state.db")
    }

    pub(crate) fn config(&self) -> Config {
        match &self.etcd {
            Some(etcd) => Config::Etcd(etcd::Config::from_endpoints(&etcd.url()).unwrap()),
            None => Config::Sqlite(sqlite::Config {
                path: self.sqlite_path(),
            }),
        }
    }

    /// Opens a new handle on the store.
    pub(crate) async fn open(&self) -> Arc<dyn Store> {
        tug_store::open(self.config())
            .await
            .unwrap_or_else(|e| panic!("opening the {} store: {e}", self.name))
    }
}

/// A real etcd (Debian's etcd-server), killed when dropped.
pub(crate) struct EtcdProcess {
    child: Option<Child>,
    data_dir: PathBuf,
    client_port: u16,
    peer_port: u16,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

impl EtcdProcess {
    pub(crate) async fn start(data_dir: &Path) -> Self {
        let mut process = Self {
            child: None,
            data_dir: data_dir.to_path_buf(),
            client_port: free_port(),
            peer_port: free_port(),
        };
        process.spawn().await;
        process
    }

    pub(crate) fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    async fn spawn(&mut self) {
        let client = self.url();
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let child = Command::new("etcd")
            .arg("--name=tug-test")
            .arg(format!("--data-dir={}", self.data_dir.display()))
            .arg(format!("--listen-client-urls={client}"))
            .arg(format!("--advertise-client-urls={client}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=tug-test={peer}"))
            .arg("--log-level=error")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("etcd is installed (Debian's etcd-server; run scripts/setup)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let config = Config::Etcd(etcd::Config::from_endpoints(&client).unwrap());
            match tug_store::open(config).await {
                Ok(_) => return,
                Err(err) if Instant::now() > deadline => {
                    panic!("etcd at {client} did not come up in 30 s: {err}")
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    /// Kills etcd with SIGKILL, as a crash would.
    pub(crate) fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub(crate) async fn restart(&mut self) {
        self.kill();
        self.spawn().await;
    }
}

impl Drop for EtcdProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Polls `check` until it answers `Some`, or fails saying what was awaited.
pub(crate) async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
