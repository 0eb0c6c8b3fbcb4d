//! The agent's own containerd: its configuration written under the agent's
//! data dir, the process started and restarted when it dies. Containers
//! outlive it (their shims are their parents), so a restart of containerd
//! or of the agent leaves pods running.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;

use crate::images::PAUSE_IMAGE;
use crate::registries::Registries;

/// Where one containerd keeps everything.
#[derive(Clone, Debug)]
pub struct Layout {
    pub dir: PathBuf,
}

impl Layout {
    pub fn new(agent_dir: &Path) -> Layout {
        Layout {
            dir: agent_dir.join("containerd"),
        }
    }
    pub fn socket(&self) -> PathBuf {
        self.dir.join("containerd.sock")
    }
    fn config(&self) -> PathBuf {
        self.dir.join("config.toml")
    }
    fn log(&self) -> PathBuf {
        self.dir.join("containerd.log")
    }
    fn pid_file(&self) -> PathBuf {
        self.dir.join("containerd.pid")
    }
}

fn signal(pid: u32, signal: rustix::process::Signal) {
    if let Some(pid) = rustix::process::Pid::from_raw(pid as i32) {
        let _ = rustix::process::kill_process(pid, signal);
    }
}

/// Stops a containerd that an earlier agent on this data dir started and
/// left behind (the agent was killed): two on one root would fight.
async fn stop_leftover(layout: &Layout) {
    let Ok(pid) = std::fs::read_to_string(layout.pid_file()) else {
        return;
    };
    let Ok(pid) = pid.trim().parse::<u32>() else {
        return;
    };
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let config = layout.config().display().to_string();
    let ours = String::from_utf8_lossy(&cmdline)
        .split('\0')
        .any(|arg| arg == config);
    if !ours {
        return;
    }
    tracing::info!(pid, "stopping the containerd an earlier agent left running");
    signal(pid, rustix::process::Signal::TERM);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while std::path::Path::new(&format!("/proc/{pid}")).exists() {
        if tokio::time::Instant::now() > deadline {
            signal(pid, rustix::process::Signal::KILL);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// containerd's configuration: everything under `layout`, CRI with tug's
/// pause image, CNI from `cni_conf_dir`, and the one setting these
/// machines need (no negative oom_score_adj), and the registries'
/// mirrors, logins and TLS settings.
pub fn config(layout: &Layout, cni_conf_dir: &Path, registries: &Registries) -> String {
    let dir = layout.dir.display();
    let mut config = format!(
        r#"version = 2
root = "{dir}/root"
state = "{dir}/state"
[grpc]
  address = "{dir}/containerd.sock"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{cni}"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
    Root = "{dir}/runc"
"#,
        cni = cni_conf_dir.display()
    );
    config.push_str(&registries.containerd_toml());
    config
}

/// Starts containerd and keeps it running until `shutdown`, then stops it
/// (SIGTERM; the containers go on). Returns once its socket accepts, with
/// the supervisor, which ends once containerd has stopped.
pub async fn start(
    layout: Layout,
    cni_conf_dir: &Path,
    registries: &Registries,
    shutdown: CancellationToken,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    std::fs::create_dir_all(&layout.dir)
        .with_context(|| format!("creating {}", layout.dir.display()))?;
    std::fs::write(layout.config(), config(&layout, cni_conf_dir, registries))
        .with_context(|| format!("writing {}", layout.config().display()))?;
    stop_leftover(&layout).await;
    let child = spawn(&layout)?;
    wait_for_socket(&layout.socket()).await?;
    Ok(tokio::spawn(supervise(layout, child, shutdown)))
}

fn spawn(layout: &Layout) -> anyhow::Result<Child> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(layout.log())
        .with_context(|| format!("opening {}", layout.log().display()))?;
    let _ = std::fs::remove_file(layout.socket());
    let child = Command::new("containerd")
        .arg("--config")
        .arg(layout.config())
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .context("starting containerd (is the containerd package installed?)")?;
    if let Some(pid) = child.id() {
        std::fs::write(layout.pid_file(), pid.to_string())
            .with_context(|| format!("writing {}", layout.pid_file().display()))?;
    }
    Ok(child)
}

async fn wait_for_socket(socket: &Path) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if tokio::net::UnixStream::connect(socket).await.is_ok() {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            anyhow::bail!("containerd did not open {} in 30 s", socket.display());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn supervise(layout: Layout, mut child: Child, shutdown: CancellationToken) {
    let mut delay = Duration::from_secs(1);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => {
                stop(&mut child).await;
                return;
            }
            status = child.wait() => {
                tracing::warn!(status = ?status, log = %layout.log().display(), "containerd exited; restarting it");
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
        match spawn(&layout) {
            Ok(next) => {
                child = next;
                delay = Duration::from_secs(1);
            }
            Err(err) => {
                tracing::error!(error = %format!("{err:#}"), "restarting containerd");
                delay = (delay * 2).min(Duration::from_secs(30));
            }
        }
    }
}

/// SIGTERM, then SIGKILL after 10 s.
async fn stop(child: &mut Child) {
    if let Some(pid) = child.id() {
        signal(pid, rustix::process::Signal::TERM);
    }
    if tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .is_err()
    {
        let _ = child.kill().await;
    }
}
