//! Leader election through a Lease in kube-system, as client-go's: a
//! candidate takes the Lease when it is free or its holder has not renewed
//! it for the lease duration (by the candidate's own clock), the leader
//! renews it every retry period and stops leading when it could not for
//! the renew deadline, and gives it up on shutdown so that another server
//! takes over at once.

use std::future::Future;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, PostParams};
use tokio_util::sync::CancellationToken;

/// Upstream's defaults for kube-scheduler and kube-controller-manager.
const LEASE_DURATION: Duration = Duration::from_secs(15);
const RENEW_DEADLINE: Duration = Duration::from_secs(10);
const RETRY_PERIOD: Duration = Duration::from_secs(2);

pub(crate) struct Election {
    leases: Api<Lease>,
    name: String,
    identity: String,
    /// The holder and renew time last seen, and when they were first seen
    /// so: the Lease expires a lease duration after that, by our clock.
    observed: Option<(Option<String>, Option<MicroTime>, Instant)>,
}

impl Election {
    pub(crate) fn new(client: Client, name: &str, identity: &str) -> Self {
        Election {
            leases: Api::namespaced(client, "kube-system"),
            name: name.to_string(),
            identity: identity.to_string(),
            observed: None,
        }
    }

    fn spec(&self, transitions: i32, acquired: Option<MicroTime>) -> LeaseSpec {
        let now = MicroTime(Timestamp::now());
        LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(LEASE_DURATION.as_secs() as i32),
            acquire_time: Some(acquired.unwrap_or_else(|| now.clone())),
            renew_time: Some(now),
            lease_transitions: Some(transitions),
            ..LeaseSpec::default()
        }
    }

    /// Takes or renews the Lease; answers whether we hold it now.
    async fn try_acquire_or_renew(&mut self) -> kube::Result<bool> {
        let mut lease = match self.leases.get_opt(&self.name).await? {
            Some(lease) => lease,
            None => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.name.clone()),
                        namespace: Some("kube-system".into()),
                        ..ObjectMeta::default()
                    },
                    spec: Some(self.spec(0, None)),
                };
                return match self.leases.create(&PostParams::default(), &lease).await {
                    Ok(_) => Ok(true),
                    Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
                    Err(err) => Err(err),
                };
            }
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
        let now = Instant::now();
        let record = (holder.clone(), spec.renew_time.clone());
        let since = match &self.observed {
            Some((h, r, at)) if (h, r) == (&record.0, &record.1) => *at,
            _ => now,
        };
        self.observed = Some((record.0, record.1, since));
        let ours = holder.as_deref() == Some(self.identity.as_str());
        let duration = spec
            .lease_duration_seconds
            .map_or(LEASE_DURATION, |s| Duration::from_secs(s.max(0) as u64));
        if !ours && holder.is_some() && now.duration_since(since) < duration {
            return Ok(false);
        }
        let transitions = spec.lease_transitions.unwrap_or(0) + i32::from(!ours);
        let acquired = if ours {
            spec.acquire_time.clone()
        } else {
            None
        };
        lease.spec = Some(self.spec(transitions, acquired));
        match self
            .leases
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
            Err(err) => Err(err),
        }
    }

    /// Gives the Lease up if we hold it.
    async fn release(&mut self) {
        let Ok(Some(mut lease)) = self.leases.get_opt(&self.name).await else {
            return;
        };
        let Some(spec) = lease.spec.as_mut() else {
            return;
        };
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        let _ = self
            .leases
            .replace(&self.name, &PostParams::default(), &lease)
            .await;
    }
}

/// Runs `work` whenever this process leads, until `shutdown`. `work` gets
/// a token cancelled when leadership is lost.
pub(crate) async fn run_elected<F, Fut>(
    mut election: Election,
    shutdown: CancellationToken,
    work: F,
) where
    F: Fn(CancellationToken) -> Fut,
    Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    loop {
        // Candidate.
        loop {
            match election.try_acquire_or_renew().await {
                Ok(true) => break,
                Ok(false) => {}
                Err(err) => {
                    tracing::debug!(lease = %election.name, error = %err, "leader election")
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(RETRY_PERIOD) => {}
            }
        }
        tracing::info!(lease = %election.name, identity = %election.identity, "became leader");
        let leading = shutdown.child_token();
        let mut task = tokio::spawn(work(leading.clone()));
        let mut renewed = Instant::now();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => {
                    leading.cancel();
                    let _ = task.await;
                    election.release().await;
                    return;
                }
                result = &mut task => {
                    if let Ok(Err(err)) = result {
                        tracing::error!(lease = %election.name, error = %err, "stopped while leading");
                    }
                    election.release().await;
                    // Try again, once another could have taken over.
                    tokio::time::sleep(RETRY_PERIOD).await;
                    break;
                }
                _ = tokio::time::sleep(RETRY_PERIOD) => {}
            }
            // Another holds it now, or we could not renew for too long.
            let taken = match election.try_acquire_or_renew().await {
                Ok(true) => {
                    renewed = Instant::now();
                    false
                }
                Ok(false) => true,
                Err(err) => {
                    tracing::debug!(lease = %election.name, error = %err, "renewing");
                    false
                }
            };
            if taken || renewed.elapsed() >= RENEW_DEADLINE {
                tracing::warn!(lease = %election.name, "leadership lost");
                leading.cancel();
                let _ = task.await;
                break;
            }
        }
    }
}
