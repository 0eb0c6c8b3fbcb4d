//! Periodic compaction, as kube-apiserver runs it against etcd.
//!
//! Every interval, the store is compacted at the revision it had one
//! interval earlier, so that history is kept for at least one interval
//! (watchers that fell behind by less than that can still resume).

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::{Revision, Store};

/// kube-apiserver's default `--etcd-compaction-interval`.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(5 * 60);

/// Compacts `store` every `interval` until `shutdown` is cancelled.
///
/// Cancel safety: cancelling stops between compactions or in the middle of
/// one; a half-done compaction leaves a consistent store and is finished by
/// the next one.
pub async fn run(store: Arc<dyn Store>, interval: Duration, shutdown: CancellationToken) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut previous: Option<Revision> = None;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        if let Some(revision) = previous.filter(|&r| r > 0) {
            match store.compact(revision).await {
                Ok(()) => tracing::debug!(revision, "compacted store"),
                Err(err) => tracing::warn!(revision, error = %err, "compaction failed; will retry"),
            }
        }
        match store.current_revision().await {
            Ok(revision) => previous = Some(revision),
            Err(err) => tracing::warn!(error = %err, "reading the store's revision failed"),
        }
    }
}
