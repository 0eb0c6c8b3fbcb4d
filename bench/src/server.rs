//! A real `tug server` for the API-level benchmarks, started from a binary
//! and reached through the kube crate's client with the admin kubeconfig.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use kube::Client;

/// A running `tug server`.
pub(crate) struct Server {
    child: Child,
    pub(crate) client: Client,
    pub(crate) started_to_ready: Duration,
}

impl Drop for Server {
    /// SIGTERM first, so that a node agent stops its containerd; SIGKILL
    /// after 15 s.
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    #[allow(dead_code)]
    pub(crate) async fn start(
        tug: &Path,
        dir: &Path,
        datastore: Option<&str>,
        extra: &[&str],
    ) -> anyhow::Result<Self> {
        Self::launch(tug, dir, datastore, extra, false).await
    }

    /// A server that runs its node agent too (its own containerd).
    #[allow(dead_code)]
    pub(crate) async fn start_with_agent(
        tug: &Path,
        dir: &Path,
        extra: &[&str],
    ) -> anyhow::Result<Self> {
        Self::launch(tug, dir, None, extra, true).await
    }

    async fn launch(
        tug: &Path,
        dir: &Path,
        datastore: Option<&str>,
        extra: &[&str],
        agent: bool,
    ) -> anyhow::Result<Self> {
        let port = crate::support::free_port()?;
        let kubeconfig = kubeconfig_path(dir);
        let mut command = Command::new(tug);
        command.args(["server", "--bind-address", "127.0.0.1"]);
        if !agent {
            command.arg("--disable-agent");
        }
        command
            .args(extra)
            .arg(format!("--https-listen-port={port}"))
            .arg("--data-dir")
            .arg(dir.join("data"))
            .arg("--write-kubeconfig")
            .arg(&kubeconfig)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(endpoint) = datastore {
            command.arg(format!("--datastore-endpoint={endpoint}"));
        }
        let begun = Instant::now();
        let child = command
            .spawn()
            .with_context(|| format!("starting {}", tug.display()))?;
        // /readyz answers anonymous clients: a raw TLS-less probe would not
        // do, so wait for the kubeconfig and ask through the client.
        let deadline = begun + Duration::from_secs(30);
        let client = loop {
            if Instant::now() > deadline {
                bail!("tug server was not ready within 30 s");
            }
            if let Ok(config) = kube::config::Kubeconfig::read_from(&kubeconfig)
                && let Ok(config) = kube::Config::from_custom_kubeconfig(
                    config,
                    &kube::config::KubeConfigOptions::default(),
                )
                .await
                && let Ok(client) = Client::try_from(config)
                && get(&client, "/readyz").await.is_ok()
            {
                break client;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        };
        Ok(Self {
            started_to_ready: begun.elapsed(),
            child,
            client,
        })
    }

    pub(crate) fn rss_mib(&self) -> f64 {
        rss_mib(self.child.id())
    }
}

/// A process's resident memory, MiB.
pub(crate) fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0)
}

/// A `tug agent` joined to a server, in its own process; SIGTERM on drop
/// (it stops its containerd), SIGKILL after 15 s.
#[allow(dead_code)]
pub(crate) struct Agent {
    child: Child,
}

#[allow(dead_code)]
impl Agent {
    /// Joins the server of `server_dir` with its node token; `extra` are
    /// the agent's flags.
    pub(crate) fn start(
        tug: &Path,
        server_dir: &Path,
        data: &Path,
        extra: &[&str],
    ) -> anyhow::Result<Agent> {
        let kubeconfig = kube::config::Kubeconfig::read_from(kubeconfig_path(server_dir))?;
        let url = kubeconfig
            .clusters
            .first()
            .and_then(|c| c.cluster.as_ref())
            .and_then(|c| c.server.clone())
            .context("the kubeconfig names no server")?;
        let token = std::fs::read_to_string(server_dir.join("data/server/node-token"))
            .context("reading the node token")?;
        let child = Command::new(tug)
            .args(["agent", "--server", &url, "--token", token.trim()])
            .arg("--data-dir")
            .arg(data)
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {} agent", tug.display()))?;
        Ok(Agent { child })
    }

    pub(crate) fn rss_mib(&self) -> f64 {
        rss_mib(self.child.id())
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// GET `path` through the client, answering the body.
pub(crate) async fn get(client: &Client, path: &str) -> anyhow::Result<String> {
    let request = http::Request::get(path).body(Vec::new())?;
    Ok(client.request_text(request).await?)
}

/// Where the server started in `dir` writes its admin kubeconfig.
pub(crate) fn kubeconfig_path(dir: &Path) -> std::path::PathBuf {
    dir.join("kubeconfig.yaml")
}
