//! Container log rotation, as kubelet's log manager: every 10 s, a running
//! container's log past the maximum size is renamed `<file>.<timestamp>`
//! and containerd is asked to reopen it (CRI ReopenContainerLog); of the
//! rotated files, the newest `max files - 1` are kept.

use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_cri::v1 as cri;
use tokio_util::sync::CancellationToken;

use crate::cri::Runtime;

/// kubelet's containerLogMonitorInterval.
const CHECK_EVERY: Duration = Duration::from_secs(10);

/// How logs are rotated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Bytes a log may grow to before it is rotated.
    pub max_size: u64,
    /// Files kept per container, the current one included.
    pub max_files: usize,
}

impl Default for Limits {
    /// kubelet's defaults: 10Mi, 5 files.
    fn default() -> Limits {
        Limits {
            max_size: 10 * 1024 * 1024,
            max_files: 5,
        }
    }
}

/// The rotated files of `log` to remove so that, with the one about to be
/// rotated and the current one, at most `max_files` remain: the oldest.
pub fn excess(log: &Path, existing: &[PathBuf], max_files: usize) -> Vec<PathBuf> {
    let prefix = format!("{}.", log.file_name().unwrap_or_default().to_string_lossy());
    let mut rotated: Vec<&PathBuf> = existing
        .iter()
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(&prefix))
        })
        .collect();
    // The timestamp suffix sorts as time does.
    rotated.sort();
    let keep = max_files.saturating_sub(2);
    let remove = rotated.len().saturating_sub(keep);
    rotated.into_iter().take(remove).cloned().collect()
}

/// Checks the running containers' logs every 10 s until `shutdown`.
pub async fn run(runtime: Runtime, limits: Limits, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(CHECK_EVERY) => {}
        }
        if let Err(err) = check(&runtime, limits).await {
            tracing::debug!(error = %format!("{err:#}"), "rotating container logs");
        }
    }
}

async fn check(runtime: &Runtime, limits: Limits) -> anyhow::Result<()> {
    for container in runtime.containers(None).await? {
        if container.state != cri::ContainerState::ContainerRunning as i32 {
            continue;
        }
        let Some(status) = runtime.container_status(&container.id).await? else {
            continue;
        };
        let log = PathBuf::from(&status.log_path);
        let size = tokio::fs::metadata(&log).await.map_or(0, |m| m.len());
        if status.log_path.is_empty() || size <= limits.max_size {
            continue;
        }
        if let Err(err) = rotate(runtime, &container.id, &log, limits.max_files).await {
            tracing::warn!(container = %container.id, error = %format!("{err:#}"), "rotating a container's log");
        }
    }
    Ok(())
}

async fn rotate(runtime: &Runtime, id: &str, log: &Path, max_files: usize) -> anyhow::Result<()> {
    let dir = log.parent().unwrap_or(Path::new("/"));
    let mut existing = Vec::new();
    let mut entries = tokio::fs::read_dir(dir).await?;
    while let Some(entry) = entries.next_entry().await? {
        existing.push(entry.path());
    }
    for old in excess(log, &existing, max_files) {
        let _ = tokio::fs::remove_file(old).await;
    }
    let now = jiff::Timestamp::now();
    let stamp = format!(
        "{}.{:06}",
        now.strftime("%Y%m%d-%H%M%S"),
        now.subsec_microsecond()
    );
    let rotated = PathBuf::from(format!("{}.{stamp}", log.display()));
    tokio::fs::rename(log, &rotated).await?;
    let reopened = runtime
        .runtime
        .clone()
        .reopen_container_log(cri::ReopenContainerLogRequest {
            container_id: id.to_string(),
        })
        .await;
    if let Err(status) = reopened {
        // Put it back: the container still writes to it.
        let _ = tokio::fs::rename(&rotated, log).await;
        anyhow::bail!("CRI ReopenContainerLog: {}", status.message());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_rotated_logs_go_first() {
        let log = Path::new("/logs/c/0.log");
        let files: Vec<PathBuf> = [
            "0.log",
            "0.log.20261201-100003.000000",
            "0.log.20261201-100001.000000",
            "0.log.20261201-100002.000000",
            "1.log",
        ]
        .iter()
        .map(|f| Path::new("/logs/c").join(f))
        .collect();
        // 5 files: the current, the one rotated now, and 3 kept.
        assert!(excess(log, &files, 5).is_empty());
        assert_eq!(
            excess(log, &files, 3),
            [
                Path::new("/logs/c/0.log.20261201-100001.000000"),
                Path::new("/logs/c/0.log.20261201-100002.000000")
            ]
        );
        assert_eq!(excess(log, &files, 2).len(), 3);
    }
}
