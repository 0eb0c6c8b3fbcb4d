//! The node under pressure, as kubelet's eviction manager and image
//! garbage collector see it.
//!
//! Every 10 s the agent observes the signals kubelet observes
//! (memory.available, nodefs.available and inodesFree, imagefs.available
//! and inodesFree, pid.available) against the hard eviction thresholds
//! (`--eviction-hard`, upstream's defaults). A threshold met puts the
//! node under MemoryPressure, DiskPressure or PIDPressure, until it has
//! not been met for `--eviction-pressure-transition-period`; under disk
//! pressure the agent deletes every image no container uses (a Warning
//! `EvictionThresholdMet` on the Node first). Every 5 minutes, and at
//! start, images are also collected while the image filesystem is fuller
//! than `--image-gc-high-threshold` percent, the least recently used
//! first, down to `--image-gc-low-threshold`. Images first seen less
//! than `--minimum-image-ttl-duration` ago are spared (those found at
//! start are not). Images imported from the images directory at start
//! are pinned, as k3s pins them: never collected while their archive
//! stays there. Pods are not evicted.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_cri::v1 as cri;
use k8s_openapi::api::core::v1::ObjectReference;
use tokio_util::sync::CancellationToken;
use tug_controllers::events::{self, Recorder};

use crate::Config;
use crate::cri::Runtime;

/// How often the signals are observed (kubelet's evictionMonitoringPeriod).
const MONITORING: Duration = Duration::from_secs(10);
/// How often images are collected by the thresholds (kubelet's ImageGCPeriod).
const IMAGE_GC_PERIOD: Duration = Duration::from_secs(300);

/// What kubelet measures to decide pressure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Signal {
    MemoryAvailable,
    NodefsAvailable,
    NodefsInodesFree,
    ImagefsAvailable,
    ImagefsInodesFree,
    PidAvailable,
}

const SIGNALS: [(Signal, &str); 6] = [
    (Signal::MemoryAvailable, "memory.available"),
    (Signal::NodefsAvailable, "nodefs.available"),
    (Signal::NodefsInodesFree, "nodefs.inodesFree"),
    (Signal::ImagefsAvailable, "imagefs.available"),
    (Signal::ImagefsInodesFree, "imagefs.inodesFree"),
    (Signal::PidAvailable, "pid.available"),
];

/// kubelet's default hard eviction thresholds on Linux.
pub const DEFAULT_EVICTION_HARD: &str = "memory.available<100Mi,nodefs.available<10%,nodefs.inodesFree<5%,imagefs.available<15%,imagefs.inodesFree<5%";

impl Signal {
    /// The node condition a met threshold of this signal sets.
    pub fn condition(self) -> &'static str {
        match self {
            Signal::MemoryAvailable => "MemoryPressure",
            Signal::PidAvailable => "PIDPressure",
            _ => "DiskPressure",
        }
    }

    /// The resource kubelet says it reclaims for this signal.
    pub fn resource(self) -> &'static str {
        match self {
            Signal::MemoryAvailable => "memory",
            Signal::PidAvailable => "pids",
            _ => "ephemeral-storage",
        }
    }

    fn is_disk(self) -> bool {
        self.condition() == "DiskPressure"
    }
}

/// A threshold's level: an amount (bytes, inodes or PIDs) or a share of
/// the capacity.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Level {
    Amount(u64),
    Percent(f64),
}

/// Met when the signal's available amount is below `level`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Threshold {
    pub signal: Signal,
    pub level: Level,
}

/// `--eviction-hard`: `signal<level` pairs, comma-separated, e.g.
/// `memory.available<100Mi,nodefs.available<10%`.
pub fn parse_thresholds(flag: &str) -> Result<Vec<Threshold>, String> {
    let mut thresholds: Vec<Threshold> = Vec::new();
    for item in flag.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let Some((name, level)) = item.split_once('<') else {
            return Err(format!(
                "invalid eviction threshold {item:?}: expected <signal><<level>"
            ));
        };
        let Some(&(signal, _)) = SIGNALS.iter().find(|(_, n)| *n == name.trim()) else {
            return Err(format!("unknown eviction signal {:?}", name.trim()));
        };
        let level = level.trim();
        let level = match level.strip_suffix('%') {
            Some(percent) => match percent.parse::<f64>() {
                Ok(p) if p > 0.0 && p <= 100.0 => Level::Percent(p),
                _ => {
                    return Err(format!(
                        "eviction threshold {name}: {level:?} is not a percentage in (0%, 100%]"
                    ));
                }
            },
            None => match tug_api::quantity::value(level) {
                Some(amount) if amount >= 0 => Level::Amount(amount as u64),
                _ => {
                    return Err(format!(
                        "eviction threshold {name}: {level:?} is not a quantity"
                    ));
                }
            },
        };
        if thresholds.iter().any(|t| t.signal == signal) {
            return Err(format!("duplicate eviction threshold for signal {name}"));
        }
        thresholds.push(Threshold { signal, level });
    }
    Ok(thresholds)
}

/// What a signal measured: the amount available out of a capacity.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Observed {
    pub available: u64,
    pub capacity: u64,
}

impl Threshold {
    /// The threshold as an amount of a capacity.
    pub fn amount(&self, capacity: u64) -> u64 {
        match self.level {
            Level::Amount(amount) => amount,
            Level::Percent(percent) => (capacity as f64 * percent / 100.0) as u64,
        }
    }

    pub fn met(&self, observed: Observed) -> bool {
        observed.available < self.amount(observed.capacity)
    }
}

fn met_after(
    thresholds: &[Threshold],
    observed: &HashMap<Signal, Observed>,
    signal: Signal,
) -> bool {
    met(thresholds, observed).contains(&signal)
}

/// The signals whose thresholds are met (signals not observed are not).
pub fn met(thresholds: &[Threshold], observed: &HashMap<Signal, Observed>) -> BTreeSet<Signal> {
    thresholds
        .iter()
        .filter(|t| observed.get(&t.signal).is_some_and(|o| t.met(*o)))
        .map(|t| t.signal)
        .collect()
}

/// The conditions under pressure: each stays so until its thresholds
/// have not been met for the transition period.
pub struct Conditions {
    transition: Duration,
    last_met: HashMap<&'static str, Instant>,
}

impl Conditions {
    pub fn new(transition: Duration) -> Conditions {
        Conditions {
            transition,
            last_met: HashMap::new(),
        }
    }

    pub fn observe(&mut self, met: &BTreeSet<Signal>, now: Instant) -> BTreeSet<&'static str> {
        for signal in met {
            self.last_met.insert(signal.condition(), now);
        }
        let transition = self.transition;
        self.last_met
            .retain(|_, at| now.saturating_duration_since(*at) <= transition);
        self.last_met.keys().copied().collect()
    }
}

/// The image garbage collector's policy.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ImageGcPolicy {
    /// Collect once the image filesystem is this full (percent; 100: never).
    pub high: u8,
    /// Down to this.
    pub low: u8,
    /// Images first seen more recently are spared.
    pub min_age: Duration,
}

impl Default for ImageGcPolicy {
    fn default() -> Self {
        ImageGcPolicy {
            high: 85,
            low: 80,
            min_age: Duration::from_secs(120),
        }
    }
}

struct Record {
    /// `None` for images found when the agent started.
    first_detected: Option<Instant>,
    last_used: Option<Instant>,
    size: u64,
}

/// The images the agent has seen: when first, when last used.
#[derive(Default)]
pub struct Images {
    records: HashMap<String, Record>,
}

impl Images {
    /// Notes the runtime's images; `at_start` marks those found when the
    /// agent started, which no minimum age protects.
    pub fn detect(
        &mut self,
        images: &[cri::Image],
        in_use: &HashSet<String>,
        now: Instant,
        at_start: bool,
    ) {
        let present: HashSet<&str> = images.iter().map(|i| i.id.as_str()).collect();
        self.records.retain(|id, _| present.contains(id.as_str()));
        for image in images {
            let record = self.records.entry(image.id.clone()).or_insert(Record {
                first_detected: (!at_start).then_some(now),
                last_used: None,
                size: image.size,
            });
            record.size = image.size;
            if in_use.contains(&image.id) {
                record.last_used = Some(now);
            }
        }
    }

    /// The unused images to delete to free `bytes`, the least recently
    /// used first, and how much they free.
    pub fn victims(
        &self,
        in_use: &HashSet<String>,
        bytes: u64,
        min_age: Duration,
        now: Instant,
    ) -> (Vec<String>, u64) {
        let mut candidates: Vec<(&String, &Record)> = self
            .records
            .iter()
            .filter(|(id, _)| !in_use.contains(*id))
            .filter(|(_, r)| {
                r.first_detected
                    .is_none_or(|at| now.saturating_duration_since(at) >= min_age)
            })
            .collect();
        candidates.sort_by_key(|(id, r)| (r.last_used, r.first_detected, *id));
        let mut freed = 0u64;
        let mut victims = Vec::new();
        for (id, record) in candidates {
            if freed >= bytes {
                break;
            }
            victims.push(id.clone());
            freed = freed.saturating_add(record.size);
        }
        (victims, freed)
    }
}

/// The images no container uses and the agent must keep: those of
/// containers (running or not), pinned ones (by the runtime, or by name
/// in `pinned`) and the pause image.
pub fn in_use(
    images: &[cri::Image],
    containers: &[cri::Container],
    pinned: &HashSet<String>,
) -> HashSet<String> {
    let used: HashSet<&str> = containers.iter().map(|c| c.image_ref.as_str()).collect();
    images
        .iter()
        .filter(|image| {
            image.pinned
                || used.contains(image.id.as_str())
                || image
                    .repo_tags
                    .iter()
                    .any(|t| t == crate::images::PAUSE_IMAGE || pinned.contains(t))
                || image
                    .repo_tags
                    .iter()
                    .chain(&image.repo_digests)
                    .any(|name| used.contains(name.as_str()))
        })
        .map(|image| image.id.clone())
        .collect()
}

/// Bytes to free so that a filesystem this full gets down to `low`
/// percent, once it is `high` percent full or more.
pub fn bytes_to_free(fs: Observed, policy: &ImageGcPolicy) -> u64 {
    if fs.capacity == 0 || policy.high >= 100 {
        return 0;
    }
    let used = fs.capacity.saturating_sub(fs.available);
    let percent = used as f64 * 100.0 / fs.capacity as f64;
    if percent < f64::from(policy.high) {
        return 0;
    }
    let wanted_available = fs.capacity as f64 * f64::from(100 - policy.low.min(100)) / 100.0;
    (wanted_available - fs.available as f64).max(0.0) as u64
}

/// A Go duration: `5m0s`, `2m`, `1h30m`, `10s`, `500ms`, `0`.
pub fn parse_duration(text: &str) -> Option<Duration> {
    if text == "0" {
        return Some(Duration::ZERO);
    }
    let mut total = 0f64;
    let mut rest = text;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number: f64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        total += number * scale;
        rest = &rest[unit..];
    }
    Some(Duration::from_secs_f64(total))
}

/// A resource the node is short of after node-level reclaim: a pod is
/// to be evicted for it.
#[derive(Clone, Debug, PartialEq)]
pub struct Starved {
    pub signal: Signal,
    /// The threshold as an amount, and what is available.
    pub threshold: u64,
    pub available: u64,
}

impl Starved {
    /// kubelet's eviction message, before its per-container sentences.
    pub fn message(&self) -> String {
        let quantity = |amount: u64| {
            if self.signal == Signal::PidAvailable
                || matches!(
                    self.signal,
                    Signal::NodefsInodesFree | Signal::ImagefsInodesFree
                )
            {
                amount.to_string()
            } else {
                tug_api::quantity::format(i128::from(amount) * 1000, true)
            }
        };
        format!(
            "The node was low on resource: {}. Threshold quantity: {}, available: {}. ",
            self.signal.resource(),
            quantity(self.threshold),
            quantity(self.available)
        )
    }
}

/// kubelet's sentences after an eviction message: one for each of the
/// pod's containers using more of the starved `resource` than it
/// requests (`usage` in bytes, by container name).
pub fn container_sentences(
    pod: &k8s_openapi::api::core::v1::Pod,
    resource: &str,
    usage: &HashMap<String, u64>,
) -> String {
    let mut sentences = String::new();
    for container in pod.spec.iter().flat_map(|s| &s.containers) {
        let Some(used) = usage.get(&container.name) else {
            continue;
        };
        let request = container
            .resources
            .as_ref()
            .and_then(|r| r.requests.as_ref())
            .and_then(|r| r.get(resource));
        let requested = request
            .and_then(|q| tug_api::quantity::milli(&q.0))
            .unwrap_or(0);
        if i128::from(*used) * 1000 <= requested {
            continue;
        }
        let binary = request.is_none_or(|q| tug_api::quantity::is_binary(&q.0));
        sentences.push_str(&format!(
            "Container {} was using {}, request is {}, has larger consumption of {resource}. ",
            container.name,
            tug_api::quantity::format(i128::from(*used) * 1000, true),
            tug_api::quantity::format(requested, binary),
        ));
    }
    sentences
}

/// What a running pod uses of the node's disk: each disk emptyDir's
/// bytes, and each container's (its writable layer and its logs).
#[derive(Debug, Default)]
pub struct LocalUsage {
    pub empty_dirs: HashMap<String, u64>,
    pub containers: HashMap<String, u64>,
}

/// kubelet's local storage eviction: the message evicting a pod whose
/// disk emptyDir is over its sizeLimit, whose use is over the sum of its
/// containers' ephemeral-storage limits, or one of whose containers is
/// over its own; checked in that order.
pub fn over_local_limits(
    pod: &k8s_openapi::api::core::v1::Pod,
    usage: &LocalUsage,
) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    for volume in spec.volumes.iter().flatten() {
        let Some(empty) = &volume.empty_dir else {
            continue;
        };
        let Some(limit) = &empty.size_limit else {
            continue;
        };
        if empty.medium.as_deref() == Some("Memory") {
            continue;
        }
        let used = usage.empty_dirs.get(&volume.name).copied().unwrap_or(0);
        let bytes = tug_api::quantity::value(&limit.0).unwrap_or(i128::MAX);
        if i128::from(used) > bytes {
            return Some(format!(
                "Usage of EmptyDir volume {:?} exceeds the limit {:?}. ",
                volume.name, limit.0
            ));
        }
    }
    let limit_of = |c: &k8s_openapi::api::core::v1::Container| {
        c.resources
            .as_ref()?
            .limits
            .as_ref()?
            .get("ephemeral-storage")
            .cloned()
    };
    let limits: Vec<(&str, String)> = spec
        .containers
        .iter()
        .filter_map(|c| Some((c.name.as_str(), limit_of(c)?.0)))
        .collect();
    let pod_limit: i128 = limits
        .iter()
        .filter_map(|(_, q)| tug_api::quantity::milli(q))
        .sum();
    if pod_limit > 0 {
        // (a Memory emptyDir is memory, not the node's disk)
        let on_disk: u64 = spec
            .volumes
            .iter()
            .flatten()
            .filter(|v| {
                v.empty_dir
                    .as_ref()
                    .is_some_and(|e| e.medium.as_deref() != Some("Memory"))
            })
            .filter_map(|v| usage.empty_dirs.get(&v.name))
            .sum();
        let used = on_disk + usage.containers.values().sum::<u64>();
        if i128::from(used) * 1000 > pod_limit {
            let binary = limits.iter().all(|(_, q)| tug_api::quantity::is_binary(q));
            return Some(format!(
                "Pod ephemeral local storage usage exceeds the total limit of containers {}. ",
                tug_api::quantity::format(pod_limit, binary)
            ));
        }
    }
    for (name, limit) in &limits {
        let used = usage.containers.get(*name).copied().unwrap_or(0);
        let bytes = tug_api::quantity::value(limit).unwrap_or(i128::MAX);
        if i128::from(used) > bytes {
            return Some(format!(
                "Container {name} exceeded its local ephemeral storage limit {limit:?}. "
            ));
        }
    }
    None
}

/// What the node's status reports: the conditions under pressure, and a
/// wake-up for the status loop when they change; and the resource to
/// reclaim by evicting pods, with a wake-up for the evictor each time.
#[derive(Default)]
pub struct NodePressure {
    conditions: Mutex<BTreeSet<&'static str>>,
    pub changed: tokio::sync::Notify,
    starved: Mutex<Option<Starved>>,
    pub evict: tokio::sync::Notify,
}

impl NodePressure {
    pub fn starved(&self) -> Option<Starved> {
        self.starved
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn set_starved(&self, starved: Option<Starved>) {
        let some = starved.is_some();
        *self.starved.lock().unwrap_or_else(|e| e.into_inner()) = starved;
        if some {
            self.evict.notify_one();
        }
    }

    pub fn conditions(&self) -> BTreeSet<&'static str> {
        self.conditions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn set(&self, conditions: BTreeSet<&'static str>) {
        let mut current = self.conditions.lock().unwrap_or_else(|e| e.into_inner());
        if *current != conditions {
            *current = conditions;
            self.changed.notify_one();
        }
    }
}

/// kubelet's reference to its Node in events (the name as UID, as
/// `kubectl describe node` looks them up).
pub fn node_reference(name: &str) -> ObjectReference {
    ObjectReference {
        kind: Some("Node".into()),
        name: Some(name.into()),
        uid: Some(name.into()),
        ..Default::default()
    }
}

fn filesystem(path: &Path) -> Option<(Observed, Observed)> {
    let stat = rustix::fs::statvfs(path).ok()?;
    let block = stat.f_frsize.max(1);
    Some((
        Observed {
            available: stat.f_bavail.saturating_mul(block),
            capacity: stat.f_blocks.saturating_mul(block),
        },
        Observed {
            available: stat.f_ffree,
            capacity: stat.f_files,
        },
    ))
}

/// memory.available as kubelet computes it: capacity less the working
/// set (usage less inactive file pages), that is free plus inactive file.
fn memory() -> Option<Observed> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let field = |name: &str| {
        meminfo.lines().find_map(|line| {
            let value = line.strip_prefix(name)?.strip_prefix(':')?;
            let kib: u64 = value.trim().trim_end_matches("kB").trim().parse().ok()?;
            Some(kib * 1024)
        })
    };
    Some(Observed {
        available: field("MemFree")? + field("Inactive(file)").unwrap_or(0),
        capacity: field("MemTotal")?,
    })
}

/// pid.available: the most PIDs the kernel gives less the processes.
fn pids() -> Option<Observed> {
    let read =
        |path: &str| -> Option<u64> { std::fs::read_to_string(path).ok()?.trim().parse().ok() };
    let max = read("/proc/sys/kernel/pid_max")?.min(read("/proc/sys/kernel/threads-max")?);
    let loadavg = std::fs::read_to_string("/proc/loadavg").ok()?;
    let running: u64 = loadavg
        .split_whitespace()
        .nth(3)?
        .split_once('/')?
        .1
        .parse()
        .ok()?;
    Some(Observed {
        available: max.saturating_sub(running),
        capacity: max,
    })
}

async fn observe(config: &Config, image_fs: Option<&Path>) -> HashMap<Signal, Observed> {
    let mut observed = HashMap::new();
    if let Some(memory) = memory() {
        observed.insert(Signal::MemoryAvailable, memory);
    }
    if let Some(pids) = pids() {
        observed.insert(Signal::PidAvailable, pids);
    }
    if let Some((bytes, inodes)) = filesystem(&config.data_dir) {
        observed.insert(Signal::NodefsAvailable, bytes);
        observed.insert(Signal::NodefsInodesFree, inodes);
    }
    if let Some((bytes, inodes)) = filesystem(image_fs.unwrap_or(&config.data_dir)) {
        observed.insert(Signal::ImagefsAvailable, bytes);
        observed.insert(Signal::ImagefsInodesFree, inodes);
    }
    observed
}

/// Deletes the images `victims`; answers the bytes freed.
async fn delete(runtime: &Runtime, images: &[cri::Image], victims: &[String]) -> u64 {
    let mut freed = 0;
    for id in victims {
        match runtime.remove_image(id).await {
            Ok(()) => {
                let size = images.iter().find(|i| &i.id == id).map_or(0, |i| i.size);
                tracing::info!(image = %id, size, "unused image removed");
                freed += size;
            }
            Err(err) => tracing::warn!(error = %format!("{err:#}"), "removing an unused image"),
        }
    }
    freed
}

/// Observes the node every 10 s and collects images, sparing those named
/// in `pinned`, until `shutdown`.
pub async fn run(
    config: Config,
    runtime: Runtime,
    recorder: Recorder,
    pressure: Arc<NodePressure>,
    pinned: HashSet<String>,
    shutdown: CancellationToken,
) {
    let node = node_reference(&config.node_name);
    let mut conditions = Conditions::new(config.eviction_pressure_transition);
    let mut records = Images::default();
    let mut at_start = true;
    let mut next_gc = Instant::now();
    loop {
        let image_fs = runtime.image_fs().await.unwrap_or_else(|err| {
            tracing::debug!(error = %format!("{err:#}"), "the image filesystem");
            None
        });
        let observed = observe(&config, image_fs.as_deref()).await;
        let now = Instant::now();
        let met = met(&config.eviction_hard, &observed);
        pressure.set(conditions.observe(&met, now));
        match tokio::try_join!(runtime.list_images(), runtime.containers(None)) {
            Ok((images, containers)) => {
                let in_use = in_use(&images, &containers, &pinned);
                records.detect(&images, &in_use, now, at_start);
                at_start = false;
                let policy = config.image_gc;
                // kubelet's order: memory first, then disk, then PIDs.
                let mut starved = met.iter().next().copied();
                if let Some(signal) = starved {
                    recorder.event(
                        node.clone(),
                        events::WARNING,
                        "EvictionThresholdMet",
                        format!("Attempting to reclaim {}", signal.resource()),
                    );
                }
                let mut observed = observed.clone();
                if let Some(signal) = starved.filter(|s| s.is_disk()) {
                    // Node-level reclaim first: if deleting unused images
                    // is enough, no pod is evicted.
                    let (victims, _) = records.victims(&in_use, u64::MAX, policy.min_age, now);
                    if delete(&runtime, &images, &victims).await > 0 {
                        observed = observe(&config, image_fs.as_deref()).await;
                        let still = met_after(&config.eviction_hard, &observed, signal);
                        starved = still.then_some(signal);
                    }
                }
                pressure.set_starved(starved.and_then(|signal| {
                    let threshold = config.eviction_hard.iter().find(|t| t.signal == signal)?;
                    let seen = observed.get(&signal)?;
                    Some(Starved {
                        signal,
                        threshold: threshold.amount(seen.capacity),
                        available: seen.available,
                    })
                }));
                if now >= next_gc {
                    next_gc = now + IMAGE_GC_PERIOD;
                    let fs = observed
                        .get(&Signal::ImagefsAvailable)
                        .copied()
                        .unwrap_or_default();
                    let wanted = bytes_to_free(fs, &policy);
                    if wanted > 0 {
                        let (victims, eligible) =
                            records.victims(&in_use, wanted, policy.min_age, now);
                        let freed = delete(&runtime, &images, &victims).await;
                        if freed < wanted {
                            recorder.event(
                                node.clone(),
                                events::WARNING,
                                "FreeDiskSpaceFailed",
                                format!(
                                    "Failed to garbage collect required amount of images. Attempted to free {wanted} bytes, but only found {} bytes eligible to free.",
                                    eligible.min(freed)
                                ),
                            );
                        }
                    }
                }
            }
            Err(err) => {
                tracing::debug!(error = %format!("{err:#}"), "listing images and containers");
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(MONITORING) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eviction_messages_name_the_containers_over_their_requests() {
        let pod: k8s_openapi::api::core::v1::Pod = serde_json::from_value(serde_json::json!({
            "spec": {"containers": [
                {"name": "hog"},
                {"name": "small", "resources": {"requests": {"memory": "10Mi"}}},
                {"name": "big", "resources": {"requests": {"memory": "100M"}}},
            ]}
        }))
        .unwrap();
        let usage: HashMap<String, u64> = [
            ("hog", 50u64 << 20),
            ("small", 1 << 20),
            ("big", 100_000_001),
        ]
        .into_iter()
        .map(|(n, b)| (n.to_string(), b))
        .collect();
        assert_eq!(
            container_sentences(&pod, "memory", &usage),
            "Container hog was using 50Mi, request is 0, has larger consumption of memory. \
             Container big was using 100000001, request is 100M, has larger consumption of memory. "
        );
    }

    #[test]
    fn local_storage_limits_evict_as_kubelet_words_it() {
        let pod: k8s_openapi::api::core::v1::Pod = serde_json::from_value(serde_json::json!({
            "spec": {
                "volumes": [
                    {"name": "data", "emptyDir": {"sizeLimit": "10Mi"}},
                    {"name": "ram", "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}},
                ],
                "containers": [
                    {"name": "a", "resources": {"limits": {"ephemeral-storage": "20Mi"}}},
                    {"name": "b", "resources": {"limits": {"ephemeral-storage": "10Mi"}}},
                    {"name": "c"},
                ],
            }
        }))
        .unwrap();
        let mib = 1 << 20;
        let usage = |dirs: &[(&str, u64)], containers: &[(&str, u64)]| LocalUsage {
            empty_dirs: dirs.iter().map(|(n, b)| (n.to_string(), *b)).collect(),
            containers: containers
                .iter()
                .map(|(n, b)| (n.to_string(), *b))
                .collect(),
        };
        for (used, expected) in [
            (
                usage(&[("data", 5 * mib), ("ram", 50 * mib)], &[("a", mib)]),
                None,
            ),
            (
                usage(&[("data", 11 * mib)], &[]),
                Some("Usage of EmptyDir volume \"data\" exceeds the limit \"10Mi\". "),
            ),
            (
                usage(&[("data", 9 * mib)], &[("a", 19 * mib), ("c", 5 * mib)]),
                Some(
                    "Pod ephemeral local storage usage exceeds the total limit of containers 30Mi. ",
                ),
            ),
            (
                usage(&[], &[("a", mib), ("b", 11 * mib)]),
                Some("Container b exceeded its local ephemeral storage limit \"10Mi\". "),
            ),
        ] {
            assert_eq!(
                over_local_limits(&pod, &used).as_deref(),
                expected,
                "{used:?}"
            );
        }
    }

    #[test]
    fn eviction_thresholds_parse_as_kubelets_flag() {
        let defaults = parse_thresholds(DEFAULT_EVICTION_HARD).unwrap();
        assert_eq!(defaults.len(), 5);
        assert_eq!(
            defaults[0],
            Threshold {
                signal: Signal::MemoryAvailable,
                level: Level::Amount(100 * 1024 * 1024)
            }
        );
        assert_eq!(defaults[1].level, Level::Percent(10.0));
        assert_eq!(parse_thresholds("").unwrap(), vec![]);
        for (bad, error) in [
            ("memory.available>1Gi", "invalid eviction threshold"),
            ("disk.available<1Gi", "unknown eviction signal"),
            ("nodefs.available<150%", "not a percentage"),
            ("nodefs.available<lots", "not a quantity"),
            ("pid.available<10,pid.available<20", "duplicate"),
        ] {
            let err = parse_thresholds(bad).unwrap_err();
            assert!(err.contains(error), "{bad}: {err}");
        }
    }

    #[test]
    fn thresholds_are_met_below_their_level_and_set_their_condition() {
        let thresholds = parse_thresholds("memory.available<100Mi,imagefs.available<15%").unwrap();
        let observed = |memory: u64, disk: u64| {
            HashMap::from([
                (
                    Signal::MemoryAvailable,
                    Observed {
                        available: memory << 20,
                        capacity: 1 << 40,
                    },
                ),
                (
                    Signal::ImagefsAvailable,
                    Observed {
                        available: disk,
                        capacity: 100,
                    },
                ),
            ])
        };
        assert!(met(&thresholds, &observed(100, 15)).is_empty());
        assert_eq!(
            met(&thresholds, &observed(99, 14)),
            BTreeSet::from([Signal::MemoryAvailable, Signal::ImagefsAvailable])
        );
        assert_eq!(Signal::ImagefsAvailable.condition(), "DiskPressure");
        assert_eq!(Signal::ImagefsAvailable.resource(), "ephemeral-storage");
        assert_eq!(Signal::PidAvailable.condition(), "PIDPressure");
    }

    #[test]
    fn pressure_lasts_the_transition_period_after_the_last_threshold_met() {
        let start = Instant::now();
        let mut conditions = Conditions::new(Duration::from_secs(300));
        let disk = BTreeSet::from([Signal::NodefsAvailable]);
        assert_eq!(
            conditions.observe(&disk, start),
            BTreeSet::from(["DiskPressure"])
        );
        let later = |s| start + Duration::from_secs(s);
        assert_eq!(
            conditions.observe(&BTreeSet::new(), later(300)),
            BTreeSet::from(["DiskPressure"])
        );
        assert!(conditions.observe(&BTreeSet::new(), later(301)).is_empty());
    }

    fn image(id: &str, size: u64) -> cri::Image {
        cri::Image {
            id: id.into(),
            size,
            ..Default::default()
        }
    }

    #[test]
    fn unused_images_go_least_recently_used_first_sparing_young_ones() {
        let start = Instant::now();
        let at = |s| start + Duration::from_secs(s);
        let images = vec![image("old", 10), image("used", 20)];
        let mut records = Images::default();
        let used = HashSet::from(["used".to_string()]);
        records.detect(&images, &used, at(0), true);
        // "used" stops being used at 10 s; "young" appears at 100 s.
        let images = vec![image("old", 10), image("used", 20), image("young", 30)];
        records.detect(&images, &HashSet::new(), at(100), false);
        let none = HashSet::new();
        let min_age = Duration::from_secs(120);
        // Found at start: no minimum age; never used: first.
        assert_eq!(
            records.victims(&none, 5, min_age, at(110)),
            (vec!["old".to_string()], 10)
        );
        assert_eq!(
            records.victims(&none, u64::MAX, min_age, at(110)),
            (vec!["old".to_string(), "used".to_string()], 30)
        );
        assert_eq!(records.victims(&none, u64::MAX, min_age, at(220)).1, 60);
        assert_eq!(records.victims(&used, u64::MAX, min_age, at(220)).1, 40);
    }

    #[test]
    fn in_use_images_are_those_of_containers_pinned_ones_and_pause() {
        let mut pause = image("sha256:p", 1);
        pause.repo_tags = vec![crate::images::PAUSE_IMAGE.into()];
        let mut pinned = image("sha256:pin", 1);
        pinned.pinned = true;
        let mut imported = image("sha256:imp", 1);
        imported.repo_tags = vec!["tug.local/imported:1".into()];
        let images = vec![
            pause,
            pinned,
            imported,
            image("sha256:a", 1),
            image("sha256:b", 1),
        ];
        let containers = vec![cri::Container {
            image_ref: "sha256:a".into(),
            ..Default::default()
        }];
        let names = HashSet::from(["tug.local/imported:1".to_string()]);
        let mut used: Vec<String> = in_use(&images, &containers, &names).into_iter().collect();
        used.sort();
        assert_eq!(used, ["sha256:a", "sha256:imp", "sha256:p", "sha256:pin"]);
        assert!(!in_use(&images, &containers, &HashSet::new()).contains("sha256:imp"));
    }

    #[test]
    fn the_collector_frees_down_to_the_low_threshold_once_past_the_high_one() {
        let policy = ImageGcPolicy::default();
        let fs = |available| Observed {
            available,
            capacity: 1000,
        };
        assert_eq!(bytes_to_free(fs(151), &policy), 0);
        assert_eq!(bytes_to_free(fs(150), &policy), 50);
        assert_eq!(bytes_to_free(fs(0), &policy), 200);
        let never = ImageGcPolicy {
            high: 100,
            ..policy
        };
        assert_eq!(bytes_to_free(fs(0), &never), 0);
    }

    #[test]
    fn go_durations_parse() {
        assert_eq!(parse_duration("5m0s"), Some(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("0"), Some(Duration::ZERO));
        assert_eq!(parse_duration("0s"), Some(Duration::ZERO));
        for bad in ["", "5", "m", "5x", "-1s"] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }
}
