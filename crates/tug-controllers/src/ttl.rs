//! The TTL-after-finished controller: a finished Job with
//! `ttlSecondsAfterFinished` is deleted (in the foreground, with its
//! pods) that long after it finished.

use std::sync::Arc;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::batch::v1::Job;
use kube::api::{Api, DeleteParams, Preconditions, PropagationPolicy};
use kube::{Client, ResourceExt};

use crate::informer::{Informer, key_of};
use crate::workqueue::WorkQueue;

pub const COMPONENT: &str = "ttl-after-finished-controller";

/// When the Job finished: its Complete or Failed condition's transition.
pub fn finished_at(job: &Job) -> Option<Timestamp> {
    job.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")?
        .last_transition_time
        .as_ref()
        .map(|t| t.0)
}

/// How long until the Job is due to go (zero: now); `None` if never.
pub fn due_in(job: &Job, now: Timestamp) -> Option<Duration> {
    let ttl = job.spec.as_ref()?.ttl_seconds_after_finished?;
    let at = finished_at(job)?
        .checked_add(SignedDuration::from_secs(ttl.into()))
        .ok()?;
    let left = at.duration_since(now);
    Some(if left.is_negative() {
        Duration::ZERO
    } else {
        Duration::from_millis(left.as_millis() as u64)
    })
}

struct Controller {
    client: Client,
    jobs: Informer<Job>,
    queue: WorkQueue,
}

impl Controller {
    async fn sync(&self, key: &str) -> anyhow::Result<Option<Duration>> {
        let Some(job) = self.jobs.get(key) else {
            return Ok(None);
        };
        if job.metadata.deletion_timestamp.is_some() {
            return Ok(None);
        }
        match due_in(&job, Timestamp::now()) {
            None => Ok(None),
            Some(left) if !left.is_zero() => Ok(Some(left)),
            Some(_) => {
                let api: Api<Job> =
                    Api::namespaced(self.client.clone(), &job.namespace().unwrap_or_default());
                // Read past the cache: the TTL may have changed meanwhile.
                let Some(fresh) = api.get_opt(&job.name_any()).await? else {
                    return Ok(None);
                };
                match due_in(&fresh, Timestamp::now()) {
                    Some(left) if left.is_zero() => {}
                    Some(left) => return Ok(Some(left)),
                    None => return Ok(None),
                }
                let params = DeleteParams {
                    propagation_policy: Some(PropagationPolicy::Foreground),
                    preconditions: Some(Preconditions {
                        resource_version: fresh.metadata.resource_version.clone(),
                        uid: None,
                    }),
                    ..DeleteParams::default()
                };
                match api.delete(&job.name_any(), &params).await {
                    Ok(_) => Ok(None),
                    Err(kube::Error::Api(s)) if s.code == 404 => Ok(None),
                    Err(err) => Err(err.into()),
                }
            }
        }
    }
}

pub(crate) fn start(ctx: &crate::Context) -> crate::Running {
    let controller = Arc::new(Controller {
        client: ctx.client.clone(),
        jobs: ctx.jobs.clone(),
        queue: WorkQueue::default(),
    });
    let c = controller.clone();
    ctx.jobs.subscribe(Box::new(move |_, new| {
        if let Some(job) = new
            && job
                .spec
                .as_ref()
                .is_some_and(|s| s.ttl_seconds_after_finished.is_some())
            && finished_at(job).is_some()
        {
            c.queue.add(&key_of(job.as_ref()));
        }
    }));
    crate::Running::workers(COMPONENT, controller.queue.clone(), 5, move |key| {
        let c = controller.clone();
        async move { c.sync(&key).await }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_finished_job_is_due_its_ttl_after_it_finished() {
        let job = |ttl: Option<i32>, condition: &str| -> Job {
            serde_json::from_value(json!({"metadata": {"name": "j"},
                "spec": {"ttlSecondsAfterFinished": ttl, "template": {"spec": {"containers": []}}},
                "status": {"conditions": [{"type": condition, "status": "True", "lastTransitionTime": "2026-11-30T12:00:00Z"}]}}))
            .unwrap()
        };
        let now: Timestamp = "2026-11-30T12:00:30Z".parse().unwrap();
        assert_eq!(
            due_in(&job(Some(100), "Complete"), now),
            Some(Duration::from_secs(70))
        );
        assert_eq!(due_in(&job(Some(10), "Failed"), now), Some(Duration::ZERO));
        assert_eq!(due_in(&job(None, "Complete"), now), None);
        assert_eq!(due_in(&job(Some(10), "Suspended"), now), None);
    }
}
