//! A pod as kubelet sees it, in pure functions: what the runtime holds for
//! it ([`Observed`]), what to do next ([`plan`], after kubelet's
//! computePodActions) and the status to report ([`status`], after its
//! generateAPIPodStatus and getPhase). No I/O here: the worker observes,
//! plans, acts and reports.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::{Container, Pod};
use serde_json::{Value, json};

/// Nanoseconds since the epoch, as CRI counts.
pub type Nanos = i64;
const SECOND: Nanos = 1_000_000_000;

/// Crash-loop back-off: 10 s doubling to 5 min, as kubelet's.
pub const BACKOFF_INITIAL: Nanos = 10 * SECOND;
pub const BACKOFF_MAX: Nanos = 300 * SECOND;
/// A container that ran this long before exiting starts its back-off over.
const BACKOFF_RESET: Nanos = 600 * SECOND;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Created,
    Running,
    Exited,
    Unknown,
}

#[derive(Clone, Debug)]
pub struct Sandbox {
    pub id: String,
    pub attempt: u32,
    pub ready: bool,
    pub created_at: Nanos,
    pub ip: Option<String>,
}

#[derive(Clone, Debug)]
pub struct RuntimeContainer {
    pub id: String,
    pub sandbox_id: String,
    pub name: String,
    pub attempt: u32,
    pub state: State,
    pub created_at: Nanos,
    pub started_at: Nanos,
    pub finished_at: Nanos,
    pub exit_code: i32,
    pub reason: String,
    pub message: String,
    pub image_ref: String,
    /// Its probes' results: `Some(false)` while a startup (readiness)
    /// probe has not succeeded, `None` without one.
    pub started: Option<bool>,
    pub ready: Option<bool>,
    /// A liveness or startup probe failed: it is to be restarted.
    pub probe_failed: bool,
}

/// Everything the runtime holds for one pod, newest first.
#[derive(Clone, Debug, Default)]
pub struct Observed {
    pub sandboxes: Vec<Sandbox>,
    pub containers: Vec<RuntimeContainer>,
}

impl Observed {
    /// Sorts sandboxes and containers newest first.
    pub fn sort(&mut self) {
        self.sandboxes
            .sort_by_key(|s| std::cmp::Reverse((s.attempt, s.created_at)));
        self.containers
            .sort_by_key(|c| std::cmp::Reverse((c.attempt, c.created_at)));
    }

    pub fn sandbox(&self) -> Option<&Sandbox> {
        self.sandboxes.first()
    }

    /// The newest container named `name`, then the one before it.
    fn attempts(&self, name: &str) -> (Option<&RuntimeContainer>, Option<&RuntimeContainer>) {
        let mut named = self.containers.iter().filter(|c| c.name == name);
        (named.next(), named.next())
    }

    /// The newest container named `name` in the current sandbox.
    fn current(&self, name: &str) -> Option<&RuntimeContainer> {
        let sandbox = self.sandbox()?;
        self.containers
            .iter()
            .find(|c| c.name == name && c.sandbox_id == sandbox.id)
    }

    pub fn any_running(&self) -> bool {
        self.containers
            .iter()
            .any(|c| matches!(c.state, State::Running | State::Created | State::Unknown))
    }
}

/// Restart back-off of one container (or one image pull): when it may
/// start again and how long the next wait is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Backoff {
    /// The wait after the next failure (0: none, the first restart is
    /// at once).
    pub delay: Nanos,
    /// The last failure (image pulls count from it).
    pub since: Nanos,
}

impl Backoff {
    /// When a restart after a failure at `failed` may go ahead (`None`:
    /// at once).
    pub fn until(&self, failed: Nanos) -> Option<Nanos> {
        (self.delay > 0).then_some(failed + self.delay)
    }

    /// Records a restart after a failure at `failed` of a container that
    /// had run for `ran`: the next wait doubles, or starts over.
    pub fn restarted(&mut self, failed: Nanos, ran: Nanos) {
        self.delay = if ran >= BACKOFF_RESET || self.delay == 0 {
            BACKOFF_INITIAL
        } else {
            (self.delay * 2).min(BACKOFF_MAX)
        };
        self.since = failed;
    }

    /// Records a failure at `now` (an image pull): wait 10 s doubling.
    pub fn failed(&mut self, now: Nanos) {
        self.delay = if self.delay == 0 {
            BACKOFF_INITIAL
        } else {
            (self.delay * 2).min(BACKOFF_MAX)
        };
        self.since = now;
    }
}

/// Why a container could not be started (its image could not be pulled,
/// its environment not resolved): the reason and message its status
/// shows, the back-off, and whether it was reported yet (an ErrImagePull
/// turns ImagePullBackOff while waiting, once reported).
#[derive(Clone, Debug, Default)]
pub struct PullError {
    /// ErrImagePull, ErrImageNeverPull or CreateContainerConfigError.
    pub reason: &'static str,
    pub message: String,
    pub backoff: Backoff,
    pub fresh: bool,
}

/// The agent's memory of a pod between syncs.
#[derive(Clone, Debug, Default)]
pub struct Memory {
    /// Per container name.
    pub backoff: HashMap<String, Backoff>,
    /// Image pull failures per container name.
    pub pull_errors: HashMap<String, PullError>,
    /// When the agent first ran the pod (its status' startTime).
    pub start_time: Option<Nanos>,
    /// Whether the pod was admitted (or refused) already.
    pub admitted: bool,
    /// Why the agent ended the pod, if it did (evicted or refused).
    pub ending: Option<Ending>,
}

/// A pod the agent ends Failed: evicted under node pressure, or refused
/// at admission (kubelet's `Evicted`).
#[derive(Clone, Debug, PartialEq)]
pub struct Ending {
    pub reason: &'static str,
    pub message: String,
    /// Evictions mark the pod with a DisruptionTarget condition.
    pub disruption: bool,
    /// The grace its containers get.
    pub grace: i64,
}

/// kubelet's eviction admission: under node pressure a new pod is refused
/// (the message why), but for critical pods, and for pods that are not
/// BestEffort, or tolerate the memory-pressure taint, when memory is the
/// only pressure.
pub fn refused_under_pressure(
    pod: &Pod,
    conditions: &std::collections::BTreeSet<&str>,
    critical: bool,
) -> Option<String> {
    if conditions.is_empty() || critical {
        return None;
    }
    if conditions.len() == 1 && conditions.contains("MemoryPressure") {
        let best_effort = pod
            .status
            .as_ref()
            .and_then(|s| s.qos_class.as_deref())
            .is_none_or(|q| q == "BestEffort");
        let tolerates = pod
            .spec
            .as_ref()
            .and_then(|s| s.tolerations.as_ref())
            .into_iter()
            .flatten()
            .any(|t| {
                let key = t.key.as_deref().unwrap_or_default();
                let exists = t.operator.as_deref() == Some("Exists");
                let effect = t.effect.as_deref().unwrap_or_default();
                (key == "node.kubernetes.io/memory-pressure" || key.is_empty() && exists)
                    && (effect.is_empty() || effect == "NoSchedule")
                    && (exists || t.value.as_deref().unwrap_or_default().is_empty())
            });
        if !best_effort || tolerates {
            return None;
        }
    }
    let listed: Vec<&str> = conditions.iter().copied().collect();
    Some(format!("The node had condition: [{}]. ", listed.join(" ")))
}

fn push_condition(status: &mut Value, condition: Value) {
    if let Some(conditions) = status["conditions"].as_array_mut() {
        conditions.retain(|c| c["type"] != condition["type"]);
        conditions.push(condition);
    }
}

/// When the pod's activeDeadlineSeconds runs out, if it has one and has
/// started.
fn deadline(pod: &Pod, memory: &Memory) -> Option<Nanos> {
    let seconds = pod.spec.as_ref()?.active_deadline_seconds?;
    Some(memory.start_time? + seconds * SECOND)
}

const DEADLINE_MESSAGE: &str = "Pod was active on the node longer than the specified deadline";

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Stops every container (with the grace period) and the sandbox.
    KillPod {
        grace: i64,
    },
    /// Removes every container and sandbox, then the pod object.
    RemovePod,
    CreateSandbox {
        attempt: u32,
    },
    /// Starts init container `index` (of spec.initContainers), or regular
    /// container `index`, as attempt `attempt`.
    StartInit {
        index: usize,
        attempt: u32,
    },
    Start {
        index: usize,
        attempt: u32,
    },
    KillContainer {
        id: String,
        grace: i64,
    },
    RemoveContainer {
        id: String,
    },
}

/// The plan of one sync: actions and, if something is to happen later
/// (a back-off ending), when to sync again.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub actions: Vec<Action>,
    pub wake_at: Option<Nanos>,
}

fn restart_policy(pod: &Pod) -> &str {
    pod.spec
        .as_ref()
        .and_then(|s| s.restart_policy.as_deref())
        .unwrap_or("Always")
}

fn containers(pod: &Pod) -> &[Container] {
    pod.spec.as_ref().map_or(&[], |s| &s.containers)
}

fn init_containers(pod: &Pod) -> &[Container] {
    pod.spec
        .as_ref()
        .and_then(|s| s.init_containers.as_deref())
        .unwrap_or(&[])
}

/// kubelet's oom_score_adj for a container of a pod: Guaranteed and
/// critical pods -997, BestEffort 1000, Burstable by its share of the
/// node's memory (3 to 999); never below `floor` (0 where the kernel
/// refuses negative values, as on these machines).
pub fn oom_score_adj(
    qos: &str,
    critical: bool,
    memory_request: u64,
    memory_capacity: u64,
    floor: i64,
) -> i64 {
    let score = if critical || qos == "Guaranteed" {
        -997
    } else if qos == "BestEffort" {
        1000
    } else {
        let share = (1000 * u128::from(memory_request)) / u128::from(memory_capacity.max(1));
        (1000 - share.min(1000) as i64).clamp(3, 999)
    };
    score.max(floor)
}

/// The image's user as CRI reports it: a uid, or a name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImageUser {
    pub uid: Option<i64>,
    pub name: String,
}

/// Whether the container must not run as root (its own setting, else the
/// pod's).
pub fn run_as_non_root(pod: &Pod, container: &Container) -> bool {
    let shared = pod.spec.as_ref().and_then(|s| s.security_context.as_ref());
    container
        .security_context
        .as_ref()
        .and_then(|s| s.run_as_non_root)
        .or_else(|| shared.and_then(|s| s.run_as_non_root))
        .unwrap_or(false)
}

/// kubelet's runAsNonRoot check, with its messages: an explicit
/// runAsUser must not be 0; else the image's user must be a non-zero uid
/// (an image without a user runs as root).
pub fn verify_non_root(pod: &Pod, container: &Container, image: &ImageUser) -> Result<(), String> {
    if !run_as_non_root(pod, container) {
        return Ok(());
    }
    let own = container.security_context.as_ref();
    let shared = pod.spec.as_ref().and_then(|s| s.security_context.as_ref());
    let meta = &pod.metadata;
    let who = format!(
        "{}_{}({})",
        meta.name.as_deref().unwrap_or_default(),
        meta.namespace.as_deref().unwrap_or_default(),
        meta.uid.as_deref().unwrap_or_default()
    );
    let name = &container.name;
    let user = own
        .and_then(|s| s.run_as_user)
        .or_else(|| shared.and_then(|s| s.run_as_user));
    match (user, image.uid, image.name.as_str()) {
        (Some(0), _, _) => Err(format!(
            "container's runAsUser breaks non-root policy (pod: {who:?}, container: {name})"
        )),
        (Some(_), _, _) => Ok(()),
        (None, Some(0), _) | (None, None, "") => Err(format!(
            "container has runAsNonRoot and image will run as root (pod: {who:?}, container: {name})"
        )),
        (None, None, user) => Err(format!(
            "container has runAsNonRoot and image has non-numeric user ({user}), cannot verify user is non-root (pod: {who:?}, container: {name})"
        )),
        (None, Some(_), _) => Ok(()),
    }
}

pub fn grace_period(pod: &Pod) -> i64 {
    pod.metadata
        .deletion_grace_period_seconds
        .or_else(|| {
            pod.spec
                .as_ref()
                .and_then(|s| s.termination_grace_period_seconds)
        })
        .unwrap_or(30)
        .max(0)
}

/// Whether an exited container should run again under the pod's policy.
fn should_restart(policy: &str, exit_code: i32) -> bool {
    match policy {
        "Never" => false,
        "OnFailure" => exit_code != 0,
        _ => true,
    }
}

/// Where the init containers stand in the current sandbox.
enum Init {
    Done,
    /// Init container `index` is running (or being created).
    Running,
    /// Init container `index` must start (first time, or after failing).
    Start(usize),
    /// Init container failed and the pod's policy says never again.
    Failed,
}

fn init_progress(pod: &Pod, observed: &Observed) -> (Init, Option<usize>) {
    let policy = restart_policy(pod);
    for (index, container) in init_containers(pod).iter().enumerate() {
        match observed.current(&container.name) {
            None => return (Init::Start(index), Some(index)),
            Some(c) if c.state != State::Exited => return (Init::Running, Some(index)),
            Some(c) if c.exit_code == 0 => continue,
            Some(_) if policy == "Never" => return (Init::Failed, Some(index)),
            Some(_) => return (Init::Start(index), Some(index)),
        }
    }
    (Init::Done, None)
}

/// The phase the containers put the pod in, as upstream's getPhase; also
/// whether it is final (no container will run again).
pub fn phase(pod: &Pod, observed: &Observed) -> &'static str {
    let policy = restart_policy(pod);
    if observed.sandbox().is_none() && observed.containers.is_empty() {
        return "Pending";
    }
    match init_progress(pod, observed).0 {
        Init::Failed => return "Failed",
        Init::Done => {}
        _ => {
            // A pod whose regular containers ran before (a new sandbox
            // re-runs init containers) stays Running meanwhile.
            let ran = containers(pod)
                .iter()
                .any(|c| observed.attempts(&c.name).0.is_some());
            return if ran { "Running" } else { "Pending" };
        }
    }
    let (mut waiting, mut running, mut stopped, mut succeeded) = (0, 0, 0, 0);
    for container in containers(pod) {
        match observed.attempts(&container.name).0 {
            None => waiting += 1,
            Some(c) => match c.state {
                State::Running => running += 1,
                State::Exited => {
                    stopped += 1;
                    if c.exit_code == 0 {
                        succeeded += 1;
                    }
                }
                State::Created | State::Unknown => {
                    if c.attempt > 0 {
                        stopped += 1;
                    } else {
                        waiting += 1;
                    }
                }
            },
        }
    }
    if waiting > 0 {
        return "Pending";
    }
    if running > 0 {
        return "Running";
    }
    if stopped == 0 {
        return "Pending";
    }
    match policy {
        "Always" => "Running",
        "OnFailure" if stopped == succeeded => "Succeeded",
        "OnFailure" => "Running",
        _ if stopped == succeeded => "Succeeded",
        _ => "Failed",
    }
}

/// What to do for `pod` given what the runtime holds. `reported_phase` is
/// the phase last reported: a pod once Succeeded or Failed stays so.
pub fn plan(
    pod: &Pod,
    observed: &Observed,
    memory: &Memory,
    reported_phase: &str,
    now: Nanos,
) -> Plan {
    let mut plan = Plan::default();
    let sandbox_up = observed.sandbox().is_some_and(|s| s.ready);
    if pod.metadata.deletion_timestamp.is_some() {
        if observed.any_running() || sandbox_up {
            plan.actions.push(Action::KillPod {
                grace: grace_period(pod),
            });
        } else {
            plan.actions.push(Action::RemovePod);
        }
        return plan;
    }
    let out_of_time = deadline(pod, memory).is_some_and(|at| at <= now);
    let terminal = matches!(reported_phase, "Succeeded" | "Failed")
        || matches!(phase(pod, observed), "Succeeded" | "Failed")
        || out_of_time
        || memory.ending.is_some();
    if terminal {
        if observed.any_running() || sandbox_up {
            plan.actions.push(Action::KillPod {
                grace: memory
                    .ending
                    .as_ref()
                    .map_or_else(|| grace_period(pod), |e| e.grace),
            });
        }
        return plan;
    }
    plan.wake_at = deadline(pod, memory);
    let policy = restart_policy(pod);
    if !sandbox_up {
        // A pod that never restarts does not get a new sandbox once its
        // containers have run: it is over.
        if policy == "Never" && !observed.containers.is_empty() {
            return plan;
        }
        if observed.any_running() {
            plan.actions.push(Action::KillPod { grace: 0 });
        }
        let attempt = observed.sandbox().map_or(0, |s| s.attempt + 1);
        plan.actions.push(Action::CreateSandbox { attempt });
        return plan;
    }
    match init_progress(pod, observed).0 {
        Init::Done => {}
        Init::Running | Init::Failed => return plan,
        Init::Start(index) => {
            let name = &init_containers(pod)[index].name;
            let (newest, _) = observed.attempts(name);
            let attempt = newest.map_or(0, |c| c.attempt + 1);
            let current = observed.current(name);
            match current {
                Some(failed) => {
                    // Restarting a failed init container, with back-off.
                    let backoff = memory.backoff.get(name).copied().unwrap_or_default();
                    if let Some(until) = backoff.until(failed.finished_at).filter(|u| *u > now) {
                        plan.wake_at = Some(until);
                        return plan;
                    }
                    plan.actions.push(Action::StartInit { index, attempt });
                }
                None => {
                    if let Some(wait) = pull_wait(memory, name, now) {
                        plan.wake_at = Some(wait);
                        return plan;
                    }
                    plan.actions.push(Action::StartInit { index, attempt });
                }
            }
            return plan;
        }
    }
    for (index, container) in containers(pod).iter().enumerate() {
        let (newest, older) = observed.attempts(&container.name);
        let current = observed.current(&container.name);
        match current {
            None => {
                if let Some(wait) = pull_wait(memory, &container.name, now) {
                    plan.wake_at = min_some(plan.wake_at, Some(wait));
                    continue;
                }
                let attempt = newest.map_or(0, |c| c.attempt + 1);
                plan.actions.push(Action::Start { index, attempt });
            }
            Some(c) if c.state == State::Running && c.probe_failed => {
                plan.actions.push(Action::KillContainer {
                    id: c.id.clone(),
                    grace: probe_grace(pod, &container.name, c.started != Some(true)),
                });
            }
            Some(c) if c.state != State::Exited => {}
            Some(c) => {
                if !should_restart(policy, c.exit_code) {
                    continue;
                }
                let backoff = memory
                    .backoff
                    .get(&container.name)
                    .copied()
                    .unwrap_or_default();
                if let Some(until) = backoff.until(c.finished_at).filter(|u| *u > now) {
                    plan.wake_at = min_some(plan.wake_at, Some(until));
                    continue;
                }
                if let Some(wait) = pull_wait(memory, &container.name, now) {
                    plan.wake_at = min_some(plan.wake_at, Some(wait));
                    continue;
                }
                // Only the newest dead container is kept (for --previous).
                if let Some(old) = older {
                    plan.actions
                        .push(Action::RemoveContainer { id: old.id.clone() });
                }
                plan.actions.push(Action::Start {
                    index,
                    attempt: c.attempt + 1,
                });
            }
        }
    }
    plan
}

/// The grace a container killed by its probe gets: the failed probe's
/// own terminationGracePeriodSeconds (the startup probe's while the
/// container has not started), else the pod's.
fn probe_grace(pod: &Pod, name: &str, starting: bool) -> i64 {
    containers(pod)
        .iter()
        .find(|c| c.name == name)
        .and_then(|c| {
            let probe = match &c.startup_probe {
                Some(startup) if starting => Some(startup),
                _ => c.liveness_probe.as_ref(),
            };
            probe.and_then(|p| p.termination_grace_period_seconds)
        })
        .unwrap_or_else(|| grace_period(pod))
}

/// When an image pull that failed may be tried again, if not yet.
fn pull_wait(memory: &Memory, name: &str, now: Nanos) -> Option<Nanos> {
    let backoff = memory.pull_errors.get(name)?.backoff;
    let until = backoff.since + backoff.delay;
    (until > now).then_some(until)
}

fn min_some(a: Option<Nanos>, b: Option<Nanos>) -> Option<Nanos> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// A duration as Go prints one truncated to milliseconds, as kubelet's
/// messages show them: `523ms`, `1.661s`, `2m3.5s`, `0s`.
pub fn go_duration(duration: std::time::Duration) -> String {
    let ms = duration.as_millis();
    if ms == 0 {
        return "0s".into();
    }
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let (hours, minutes) = (ms / 3_600_000, ms / 60_000 % 60);
    let (seconds, fraction) = (ms / 1000 % 60, ms % 1000);
    let mut text = String::new();
    if hours > 0 {
        text.push_str(&format!("{hours}h"));
    }
    if hours > 0 || minutes > 0 {
        text.push_str(&format!("{minutes}m"));
    }
    text.push_str(&seconds.to_string());
    if fraction > 0 {
        let digits = format!("{fraction:03}");
        text.push('.');
        text.push_str(digits.trim_end_matches('0'));
    }
    text.push('s');
    text
}

/// RFC 3339 seconds of a CRI time.
pub fn time(nanos: Nanos) -> String {
    tug_api::format::timestamp(nanos / SECOND)
}

/// What the node knows that goes into a pod's status.
pub struct Context<'a> {
    pub node_ip: &'a str,
    pub now: Nanos,
}

fn terminated(c: &RuntimeContainer) -> Value {
    let reason = if !c.reason.is_empty() {
        c.reason.as_str()
    } else if c.exit_code == 0 {
        "Completed"
    } else {
        "Error"
    };
    let mut state = json!({
        "exitCode": c.exit_code,
        "reason": reason,
        "startedAt": (c.started_at > 0).then(|| time(c.started_at)),
        "finishedAt": (c.finished_at > 0).then(|| time(c.finished_at)),
        "containerID": format!("containerd://{}", c.id),
    });
    if !c.message.is_empty() {
        state["message"] = json!(c.message);
    }
    json!({"terminated": state})
}

/// One container's status, `initializing` when init containers have not
/// finished (so it waits with PodInitializing).
fn container_status(
    pod: &Pod,
    spec: &Container,
    observed: &Observed,
    memory: &Memory,
    initializing: bool,
    will_restart: bool,
    now: Nanos,
) -> Value {
    let (newest, older) = observed.attempts(&spec.name);
    let pod_name = pod.metadata.name.as_deref().unwrap_or_default();
    let namespace = pod.metadata.namespace.as_deref().unwrap_or_default();
    let uid = pod.metadata.uid.as_deref().unwrap_or_default();
    let waiting = |reason: &str, message: Option<String>| {
        let mut waiting = json!({"reason": reason});
        if let Some(message) = message {
            waiting["message"] = json!(message);
        }
        json!({"waiting": waiting})
    };
    let pull_error = memory.pull_errors.get(&spec.name).map(|error| {
        let backoff = error.backoff;
        if error.reason != "ErrImagePull" {
            waiting(error.reason, Some(error.message.clone()))
        } else if !error.fresh && backoff.since + backoff.delay > now {
            waiting(
                "ImagePullBackOff",
                Some(format!(
                    "Back-off pulling image \"{}\": {}",
                    image(spec),
                    error.message
                )),
            )
        } else {
            waiting("ErrImagePull", Some(error.message.clone()))
        }
    });
    let mut status = json!({
        "name": spec.name,
        "image": image(spec),
        "imageID": "",
        "ready": false,
        "started": false,
        "restartCount": newest.map_or(0, |c| c.attempt),
    });
    let (state, last) = match newest {
        None => (
            pull_error.unwrap_or_else(|| {
                waiting(
                    if initializing {
                        "PodInitializing"
                    } else {
                        "ContainerCreating"
                    },
                    None,
                )
            }),
            None,
        ),
        Some(c) => {
            status["imageID"] = json!(c.image_ref);
            status["containerID"] = json!(format!("containerd://{}", c.id));
            let last = older.map(terminated);
            match c.state {
                State::Running => {
                    let started = c.started.unwrap_or(true);
                    status["ready"] = json!(started && c.ready.unwrap_or(true));
                    status["started"] = json!(started);
                    (json!({"running": {"startedAt": time(c.started_at)}}), last)
                }
                State::Created | State::Unknown => (waiting("ContainerCreating", None), last),
                State::Exited if will_restart => {
                    let backoff = memory.backoff.get(&spec.name).copied().unwrap_or_default();
                    let state = match (pull_error, backoff.until(c.finished_at)) {
                        (Some(pull), _) => pull,
                        (None, Some(until)) if until > now => waiting(
                            "CrashLoopBackOff",
                            Some(format!(
                                "back-off {} restarting failed container={} pod={pod_name}_{namespace}({uid})",
                                go_duration(std::time::Duration::from_nanos(
                                    backoff.delay.max(0) as u64
                                )),
                                spec.name
                            )),
                        ),
                        (None, _) => terminated(c),
                    };
                    if state.get("terminated").is_some() {
                        (state, last)
                    } else {
                        (state, Some(terminated(c)))
                    }
                }
                State::Exited => (terminated(c), last),
            }
        }
    };
    status["state"] = state;
    status["lastState"] = last.unwrap_or_else(|| json!({}));
    status
}

/// A back-off as kubelet prints it: `10s`, `1m20s`, `5m0s`.
fn image(spec: &Container) -> String {
    spec.image.clone().unwrap_or_default()
}

/// The status to report: containers', conditions, phase, addresses.
/// `previous` is the status now in the API (times of unchanged conditions
/// and the start time are kept).
pub fn status(
    pod: &Pod,
    observed: &Observed,
    memory: &Memory,
    previous: &Value,
    context: &Context<'_>,
) -> Value {
    let reported = previous["phase"].as_str().unwrap_or("Pending");
    let mut phase = phase(pod, observed);
    let out_of_time = deadline(pod, memory).is_some_and(|at| at <= context.now);
    if (out_of_time || memory.ending.is_some()) && !matches!(reported, "Succeeded" | "Failed") {
        phase = "Failed";
    }
    if matches!(reported, "Succeeded" | "Failed") {
        phase = if reported == "Succeeded" {
            "Succeeded"
        } else {
            "Failed"
        };
    }
    let terminal = matches!(phase, "Succeeded" | "Failed");
    let policy = restart_policy(pod);
    let (init, init_at) = init_progress(pod, observed);
    let initializing = !matches!(init, Init::Done);
    let init_statuses: Vec<Value> = init_containers(pod)
        .iter()
        .enumerate()
        .map(|(i, spec)| {
            let restarting = !terminal && policy != "Never" && init_at == Some(i);
            let mut status =
                container_status(pod, spec, observed, memory, false, restarting, context.now);
            // An init container that finished is not "ready" but done.
            if status["state"].get("terminated").is_some() {
                status["ready"] = json!(status["state"]["terminated"]["exitCode"] == 0);
            }
            status["started"] = json!(status["state"].get("running").is_some());
            status
        })
        .collect();
    let statuses: Vec<Value> = containers(pod)
        .iter()
        .map(|spec| {
            let restarting = !terminal
                && observed
                    .attempts(&spec.name)
                    .0
                    .is_some_and(|c| should_restart(policy, c.exit_code));
            container_status(
                pod,
                spec,
                observed,
                memory,
                initializing,
                restarting,
                context.now,
            )
        })
        .collect();
    let sandbox_ready = observed.sandbox().is_some_and(|s| s.ready) && !terminal;
    let unready: Vec<&str> = statuses
        .iter()
        .filter(|s| s["ready"] != true)
        .filter_map(|s| s["name"].as_str())
        .collect();
    let uninitialized: Vec<&str> = init_statuses
        .iter()
        .filter(|s| s["state"]["terminated"]["exitCode"] != 0)
        .filter_map(|s| s["name"].as_str())
        .collect();
    let now = time(context.now);
    let condition = |kind: &str, ok: bool, reason: Option<&str>, message: Option<String>| {
        let status = if ok { "True" } else { "False" };
        let unchanged = previous["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["type"] == kind && c["status"] == status);
        let since = unchanged
            .and_then(|c| c["lastTransitionTime"].as_str())
            .map_or(now.clone(), str::to_string);
        let mut condition = json!({
            "type": kind,
            "status": status,
            "lastProbeTime": null,
            "lastTransitionTime": since,
        });
        if let Some(reason) = reason {
            condition["reason"] = json!(reason);
        }
        if let Some(message) = message {
            condition["message"] = json!(message);
        }
        condition
    };
    let list = |names: &[&str]| format!("[{}]", names.join(" "));
    let (ready_reason, ready_message) = if terminal {
        (Some("PodCompleted"), None)
    } else if unready.is_empty() {
        (None, None)
    } else {
        (
            Some("ContainersNotReady"),
            Some(format!(
                "containers with unready status: {}",
                list(&unready)
            )),
        )
    };
    let initialized = !initializing || terminal && uninitialized.is_empty();
    let mut conditions = vec![
        condition("PodReadyToStartContainers", sandbox_ready, None, None),
        if initialized {
            condition(
                "Initialized",
                true,
                terminal
                    .then_some("PodCompleted")
                    .filter(|_| !init_statuses.is_empty()),
                None,
            )
        } else {
            condition(
                "Initialized",
                false,
                Some("ContainersNotInitialized"),
                Some(format!(
                    "containers with incomplete status: {}",
                    list(&uninitialized)
                )),
            )
        },
    ];
    let ready = !terminal && unready.is_empty() && !initializing;
    conditions.push(condition(
        "Ready",
        ready,
        ready_reason,
        ready_message.clone(),
    ));
    conditions.push(condition(
        "ContainersReady",
        ready,
        ready_reason,
        ready_message,
    ));
    if let Some(scheduled) = previous["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == "PodScheduled")
    {
        conditions.push(scheduled.clone());
    }
    let mut status = json!({
        "phase": phase,
        "conditions": conditions,
        "hostIP": context.node_ip,
        "hostIPs": [{"ip": context.node_ip}],
        "startTime": previous.get("startTime").cloned().unwrap_or(json!(now)),
        "containerStatuses": statuses,
        "qosClass": previous.get("qosClass").cloned().unwrap_or(Value::Null),
    });
    if !init_statuses.is_empty() {
        status["initContainerStatuses"] = json!(init_statuses);
    }
    if previous["reason"] == "DeadlineExceeded" || out_of_time && reported != "Succeeded" {
        status["reason"] = json!("DeadlineExceeded");
        status["message"] = json!(DEADLINE_MESSAGE);
    }
    // An eviction or refusal stays what the pod ended with.
    if previous["reason"] == "Evicted" {
        status["reason"] = previous["reason"].clone();
        status["message"] = previous["message"].clone();
        if let Some(disruption) = previous["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["type"] == "DisruptionTarget")
        {
            push_condition(&mut status, disruption.clone());
        }
    } else if let Some(ending) = &memory.ending
        && reported != "Succeeded"
    {
        status["reason"] = json!(ending.reason);
        status["message"] = json!(ending.message);
        if ending.disruption {
            push_condition(
                &mut status,
                json!({
                    "type": "DisruptionTarget", "status": "True",
                    "reason": "TerminationByKubelet", "message": ending.message,
                    "lastProbeTime": null, "lastTransitionTime": now,
                }),
            );
        }
    }
    let host_network = pod
        .spec
        .as_ref()
        .and_then(|s| s.host_network)
        .unwrap_or(false);
    let ip = if host_network {
        Some(context.node_ip.to_string())
    } else {
        observed
            .sandboxes
            .iter()
            .find_map(|s| s.ip.clone().filter(|_| s.ready))
            .or_else(|| previous["podIP"].as_str().map(str::to_string))
    };
    if let Some(ip) = ip {
        status["podIP"] = json!(ip);
        status["podIPs"] = json!([{"ip": ip}]);
    }
    status
}

#[cfg(test)]
mod tests;
