//! The CronJob controller: makes a Job for each time the schedule fires
//! (in the CronJob's time zone), within startingDeadlineSeconds, as its
//! concurrencyPolicy allows; follows its Jobs in `status.active`,
//! `lastScheduleTime` and `lastSuccessfulTime`; keeps the history limits.

use std::sync::Arc;
use std::time::Duration;

use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::batch::v1::{CronJob, CronJobStatus, Job};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Api, DeleteParams, PostParams, PropagationPolicy};
use kube::{Client, ResourceExt};

use crate::cron::Schedule;
use crate::events::{self, Recorder};
use crate::informer::{Informer, controller_uid, key_of};
use crate::job::is_finished;
use crate::pods;
use crate::workqueue::WorkQueue;

pub const COMPONENT: &str = "cronjob-controller";
pub const SCHEDULED_AT: &str = "batch.kubernetes.io/cronjob-scheduled-timestamp";
/// Missed start times beyond which the controller warns.
const MISSED_MAX: usize = 100;
/// Start times walked at most when catching up.
const WALK_MAX: usize = 100_000;

/// The latest time the schedule fired in (earliest, now], and how many
/// times it fired there.
pub fn latest_unmet(
    schedule: &Schedule,
    tz: &TimeZone,
    earliest: Timestamp,
    now: Timestamp,
) -> (Option<Timestamp>, usize) {
    let mut latest = None;
    let mut count = 0;
    let mut t = earliest;
    while count < WALK_MAX {
        match schedule.next(t, tz) {
            Some(next) if next <= now => {
                latest = Some(next);
                count += 1;
                t = next;
            }
            _ => break,
        }
    }
    (latest, count)
}

/// The name of the Job for a scheduled time: minutes since the epoch.
pub fn job_name(cronjob: &str, scheduled: Timestamp) -> String {
    format!("{cronjob}-{}", scheduled.as_second().div_euclid(60))
}

fn finished_condition(job: &Job) -> Option<&str> {
    job.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")
        .map(|c| c.type_.as_str())
}

struct Controller {
    client: Client,
    cronjobs: Informer<CronJob>,
    jobs: Informer<Job>,
    queue: WorkQueue,
    recorder: Recorder,
}

impl Controller {
    fn event(&self, cj: &CronJob, type_: &'static str, reason: &'static str, message: String) {
        self.recorder
            .event(events::reference(cj), type_, reason, message);
    }

    async fn delete_job(&self, cj: &CronJob, name: &str) -> anyhow::Result<()> {
        let api: Api<Job> =
            Api::namespaced(self.client.clone(), &cj.namespace().unwrap_or_default());
        let params = DeleteParams {
            propagation_policy: Some(PropagationPolicy::Background),
            ..DeleteParams::default()
        };
        match api.delete(name, &params).await {
            Ok(_) => {
                self.event(
                    cj,
                    events::NORMAL,
                    "SuccessfulDelete",
                    format!("Deleted job {name}"),
                );
                Ok(())
            }
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(err) => Err(err.into()),
        }
    }

    async fn sync(&self, key: &str) -> anyhow::Result<Option<Duration>> {
        let Some(cached) = self.cronjobs.get(key) else {
            return Ok(None);
        };
        let cj = (*cached).clone();
        let uid = cj.metadata.uid.clone().unwrap_or_default();
        let namespace = cj.namespace().unwrap_or_default();
        let mut owned: Vec<Arc<Job>> = self
            .jobs
            .in_namespace(&namespace)
            .into_iter()
            .filter(|j| controller_uid(&j.metadata) == Some(uid.as_str()))
            .collect();
        owned.sort_by(|a, b| {
            a.metadata
                .creation_timestamp
                .cmp(&b.metadata.creation_timestamp)
        });
        let mut status = cj.status.clone().unwrap_or_default();
        let mut active: Vec<ObjectReference> = status.active.clone().unwrap_or_default();
        // What the active list says against what the Jobs say.
        active.retain(|r| {
            let present = owned.iter().any(|j| j.metadata.uid == r.uid);
            if !present {
                self.event(
                    &cj,
                    events::NORMAL,
                    "MissingJob",
                    format!(
                        "Active job went missing: {}",
                        r.name.clone().unwrap_or_default()
                    ),
                );
            }
            present
        });
        for job in &owned {
            let listed = active.iter().any(|r| r.uid == job.metadata.uid);
            match finished_condition(job) {
                Some(condition) => {
                    if listed {
                        active.retain(|r| r.uid != job.metadata.uid);
                        self.event(
                            &cj,
                            events::NORMAL,
                            "SawCompletedJob",
                            format!(
                                "Saw completed job: {}, condition: {condition}",
                                job.name_any()
                            ),
                        );
                    }
                    if condition == "Complete"
                        && let Some(done) =
                            job.status.as_ref().and_then(|s| s.completion_time.clone())
                        && status
                            .last_successful_time
                            .as_ref()
                            .is_none_or(|t| t.0 < done.0)
                    {
                        status.last_successful_time = Some(done);
                    }
                }
                None if !listed => active.push(events::reference(job.as_ref())),
                None => {}
            }
        }
        status.active = (!active.is_empty()).then_some(active);
        let result = self.schedule(&cj, &mut status).await;
        self.cleanup(&cj, &owned).await?;
        if cj.status.as_ref() != Some(&status) {
            let api: Api<CronJob> = Api::namespaced(self.client.clone(), &namespace);
            let mut object = cj.clone();
            object.metadata.managed_fields = None;
            object.status = Some(status);
            api.replace_status(&cj.name_any(), &PostParams::default(), &object)
                .await?;
        }
        result
    }

    /// Starts the Job that is due, if any; answers when the next is.
    async fn schedule(
        &self,
        cj: &CronJob,
        status: &mut CronJobStatus,
    ) -> anyhow::Result<Option<Duration>> {
        let spec = cj.spec.clone().unwrap_or_default();
        if cj.metadata.deletion_timestamp.is_some() || spec.suspend == Some(true) {
            return Ok(None);
        }
        let tz = match spec.time_zone.as_deref() {
            None => TimeZone::system(),
            Some(name) => match TimeZone::get(name) {
                Ok(tz) => tz,
                Err(err) => {
                    self.event(
                        cj,
                        events::WARNING,
                        "UnknownTimeZone",
                        format!("invalid timeZone: {name:?}: {err}"),
                    );
                    return Ok(None);
                }
            },
        };
        let schedule = match Schedule::parse(&spec.schedule) {
            Ok(s) => s,
            Err(err) => {
                self.event(
                    cj,
                    events::WARNING,
                    "UnparseableSchedule",
                    format!("unparseable schedule: {:?} : {err}", spec.schedule),
                );
                return Ok(None);
            }
        };
        let now = Timestamp::now();
        let mut earliest = status
            .last_schedule_time
            .as_ref()
            .or(cj.metadata.creation_timestamp.as_ref())
            .map_or(now, |t| t.0);
        if let Some(deadline) = spec.starting_deadline_seconds
            && let Ok(limit) = now.checked_sub(SignedDuration::from_secs(deadline))
            && limit > earliest
        {
            earliest = limit;
        }
        let (due, missed) = latest_unmet(&schedule, &tz, earliest, now);
        let next_in = |after: Timestamp| {
            schedule.next(after, &tz).map(|next| {
                Duration::from_millis(next.duration_since(now).as_millis().max(0) as u64 + 100)
            })
        };
        let Some(scheduled) = due else {
            return Ok(next_in(now));
        };
        if missed > MISSED_MAX {
            self.event(
                cj,
                events::WARNING,
                "TooManyMissedTimes",
                format!("too many missed start times: {missed}. Set or decrease .spec.startingDeadlineSeconds or check clock skew"),
            );
        }
        if let Some(deadline) = spec.starting_deadline_seconds
            && scheduled
                .checked_add(SignedDuration::from_secs(deadline))
                .is_ok_and(|at| at < now)
        {
            self.event(
                cj,
                events::WARNING,
                "MissSchedule",
                format!("Missed scheduled time to start a job: {scheduled}"),
            );
            return Ok(next_in(now));
        }
        let running = status.active.as_ref().is_some_and(|a| !a.is_empty());
        match spec.concurrency_policy.as_deref() {
            Some("Forbid") if running => {
                self.event(cj, events::NORMAL, "JobAlreadyActive", "Not starting job because prior execution is running and concurrency policy is Forbid".into());
                return Ok(next_in(now));
            }
            Some("Replace") if running => {
                for reference in status.active.take().unwrap_or_default() {
                    self.delete_job(cj, reference.name.as_deref().unwrap_or(""))
                        .await?;
                }
            }
            _ => {}
        }
        let name = job_name(&cj.name_any(), scheduled);
        let template = spec.job_template;
        let template_meta = template.metadata.unwrap_or_default();
        let mut annotations = template_meta.annotations.unwrap_or_default();
        annotations.insert(
            SCHEDULED_AT.into(),
            scheduled
                .to_zoned(tz.clone())
                .strftime("%Y-%m-%dT%H:%M:%S%:z")
                .to_string(),
        );
        let job = Job {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: cj.metadata.namespace.clone(),
                labels: template_meta.labels,
                annotations: Some(annotations),
                owner_references: Some(vec![pods::controller_ref(
                    "batch/v1",
                    "CronJob",
                    &cj.metadata,
                )]),
                ..ObjectMeta::default()
            },
            spec: template.spec,
            status: None,
        };
        let api: Api<Job> =
            Api::namespaced(self.client.clone(), &cj.namespace().unwrap_or_default());
        match api.create(&PostParams::default(), &job).await {
            Ok(created) => {
                self.event(
                    cj,
                    events::NORMAL,
                    "SuccessfulCreate",
                    format!("Created job {name}"),
                );
                status
                    .active
                    .get_or_insert_with(Vec::new)
                    .push(events::reference(&created));
            }
            // Made by an earlier sync the cache has not shown yet.
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(err) => {
                self.event(
                    cj,
                    events::WARNING,
                    "FailedCreate",
                    format!("Error creating job: {err}"),
                );
                return Err(err.into());
            }
        }
        status.last_schedule_time = Some(Time(scheduled));
        Ok(next_in(now))
    }

    /// Deletes finished Jobs beyond the history limits, oldest first.
    async fn cleanup(&self, cj: &CronJob, owned: &[Arc<Job>]) -> anyhow::Result<()> {
        let spec = cj.spec.clone().unwrap_or_default();
        for (wanted, limit) in [
            ("Complete", spec.successful_jobs_history_limit),
            ("Failed", spec.failed_jobs_history_limit),
        ] {
            let Some(limit) = limit else { continue };
            let mut done: Vec<&Arc<Job>> = owned
                .iter()
                .filter(|j| is_finished(j) && finished_condition(j) == Some(wanted))
                .collect();
            done.sort_by(|a, b| {
                let start = |j: &Job| {
                    j.status
                        .as_ref()
                        .and_then(|s| s.start_time.clone())
                        .map(|t| t.0)
                };
                start(a).cmp(&start(b))
            });
            let excess = done.len().saturating_sub(limit.max(0) as usize);
            for job in done.into_iter().take(excess) {
                self.delete_job(cj, &job.name_any()).await?;
            }
        }
        Ok(())
    }
}

pub(crate) fn start(ctx: &crate::Context) -> crate::Running {
    let controller = Arc::new(Controller {
        client: ctx.client.clone(),
        cronjobs: ctx.cronjobs.clone(),
        jobs: ctx.jobs.clone(),
        queue: WorkQueue::default(),
        recorder: ctx.recorder.for_component(COMPONENT),
    });
    let c = controller.clone();
    ctx.cronjobs.subscribe(Box::new(move |old, new| {
        if let Some(cj) = new.or(old) {
            c.queue.add(&key_of(cj.as_ref()));
        }
    }));
    let c = controller.clone();
    let cronjobs = ctx.cronjobs.clone();
    ctx.jobs.subscribe(Box::new(move |old, new| {
        let Some(job) = new.or(old) else { return };
        let Some(reference) = job
            .metadata
            .owner_references
            .iter()
            .flatten()
            .find(|r| r.controller == Some(true))
        else {
            return;
        };
        if reference.kind == "CronJob" {
            let key = format!("{}/{}", job.namespace().unwrap_or_default(), reference.name);
            if cronjobs.get(&key).is_some() {
                c.queue.add(&key);
            }
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

    #[test]
    fn the_latest_missed_time_is_started_and_jobs_are_named_by_minute() {
        let every_minute = Schedule::parse("* * * * *").unwrap();
        let earliest: Timestamp = "2026-11-30T12:00:30Z".parse().unwrap();
        let now: Timestamp = "2026-11-30T12:03:10Z".parse().unwrap();
        let (due, missed) = latest_unmet(&every_minute, &TimeZone::UTC, earliest, now);
        assert_eq!(due, Some("2026-11-30T12:03:00Z".parse().unwrap()));
        assert_eq!(missed, 3);
        assert_eq!(
            latest_unmet(&every_minute, &TimeZone::UTC, now, now).0,
            None
        );
        assert_eq!(
            job_name("tick", "2026-11-30T12:03:00Z".parse().unwrap()),
            "tick-29934003"
        );
    }
}
