//! Control-plane benchmarks at scale with simulated nodes (`tug sim-nodes`,
//! a process of its own, so that its CPU and memory stand apart): a real
//! `tug server` (SQLite, then etcd) and KWOK's CI workload.
//!
//! `cargo build --release -p tug -p tug-bench && target/release/cluster-bench`
//!
//! Per backend: N nodes registered and Ready; M pods created (bound
//! round-robin to the nodes, as KWOK's workload does) until all are
//! Running; all deleted (grace period 1 s, so the simulated kubelet
//! finishes each) until none is left; the server's RSS idle, with the
//! nodes, and with the pods. Then scheduling end to end: M pods without a
//! node, from the first create until the scheduler has bound them all.
//! Then density: M pods through 100 Deployments, from the first create
//! until all are Running (controllers, scheduler and simulated kubelets
//! together), and their deletion until the garbage collector has taken
//! every ReplicaSet's pods. Scheduling with anti-affinity or topology
//! spread needs plugins still to come and is reported as not yet possible.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use kube::Client;
use kube::api::{Api, DeleteParams, ListParams, PostParams};

mod server;
mod support;

/// What `tug sim-nodes` last reported: (nodes, pods, running).
type Counts = Arc<std::sync::Mutex<Option<(usize, usize, usize)>>>;

/// A running `tug sim-nodes`, reporting its counts every 50 ms.
struct Simulator {
    child: std::process::Child,
    counts: Counts,
}

impl Simulator {
    /// Starts it and returns once its nodes are registered.
    fn start(args: &Args, kubeconfig: &std::path::Path) -> anyhow::Result<Self> {
        use std::io::BufRead;
        let mut child = std::process::Command::new(&args.tug)
            .args(["sim-nodes", "--report-interval-ms", "50"])
            .arg(format!("--count={}", args.nodes))
            .arg(format!("--zones={ZONES}"))
            .arg(format!("--writers={}", args.clients))
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .context("starting tug sim-nodes")?;
        let mut lines = std::io::BufReader::new(child.stdout.take().expect("piped")).lines();
        match lines.next() {
            Some(Ok(line)) if line.ends_with("nodes registered") => {}
            other => bail!("tug sim-nodes did not register its nodes: {other:?}"),
        }
        let counts: Counts = Arc::default();
        let shared = counts.clone();
        // "tug sim-nodes: N nodes, P pods (R running), ..."
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                let numbers: Vec<usize> = line
                    .split(|c: char| !c.is_ascii_digit())
                    .filter_map(|n| n.parse().ok())
                    .take(3)
                    .collect();
                if let [nodes, pods, running] = numbers[..] {
                    *shared.lock().expect("counts lock") = Some((nodes, pods, running));
                }
            }
        });
        Ok(Self { child, counts })
    }

    fn counts(&self) -> (usize, usize, usize) {
        self.counts.lock().expect("counts lock").unwrap_or_default()
    }

    /// CPU seconds so far and peak resident MiB, from /proc.
    fn usage(&self) -> (f64, f64) {
        let pid = self.child.id();
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
        let fields: Vec<&str> = after.split_whitespace().collect();
        let ticks = |i: usize| {
            fields
                .get(i)
                .and_then(|f| f.parse::<u64>().ok())
                .unwrap_or(0)
        };
        let cpu = (ticks(11) + ticks(12)) as f64 / 100.0;
        let peak = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map_or(0.0, |kib| kib / 1024.0);
        (cpu, peak)
    }
}

impl Drop for Simulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

use server::Server;

#[derive(Parser)]
struct Args {
    /// The tug binary to start.
    #[arg(long, default_value = "target/release/tug")]
    tug: PathBuf,
    /// Simulated nodes.
    #[arg(long, default_value_t = 5_000)]
    nodes: usize,
    /// Pods.
    #[arg(long, default_value_t = 10_000)]
    pods: usize,
    /// Concurrent clients creating and deleting.
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// Backends to run: sqlite, etcd.
    #[arg(long, value_delimiter = ',', default_value = "sqlite,etcd")]
    backends: Vec<String>,
    /// Where to write the results as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Run the server without its scheduler (a baseline for what the
    /// scheduler costs); skips the scheduling figure.
    #[arg(long)]
    without_scheduler: bool,
    /// Run the server without its controller-manager (a baseline for what
    /// the controllers cost); skips the density figure.
    #[arg(long)]
    without_controllers: bool,
    /// Scheduling cases to run: plain, anti-affinity, topology-spread.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "plain,anti-affinity,topology-spread"
    )]
    cases: Vec<String>,
}

/// The namespace the workload's pods live in.
const NAMESPACE: &str = "bench";
/// How long any phase may take before the run is declared failed.
const PHASE_LIMIT: Duration = Duration::from_secs(600);

/// Zones the simulated nodes are spread over (scheduler_perf labels its
/// nodes over three).
const ZONES: usize = 3;

/// Deployments the density phase spreads its pods over.
const DEPLOYMENTS: usize = 100;

/// A Deployment of small pods, with a one-second grace period.
fn deployment(name: &str, replicas: usize) -> Deployment {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "terminationGracePeriodSeconds": 1,
                    "containers": [{"name": "fake-container", "image": "fake-image"}],
                },
            },
        },
    }))
    .expect("a valid deployment")
}

/// A small pod, as KWOK's benchmark creates.
fn pod(name: &str, node: &str) -> Pod {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "labels": {"app": "fake-pod"}},
        "spec": {
            "nodeName": node,
            "containers": [{"name": "fake-container", "image": "fake-image"}],
        },
    }))
    .expect("a valid pod")
}

/// The scheduling cases, after scheduler_perf's: plain pods, pods with
/// required anti-affinity per host, pods spread over zones.
const CASES: [&str; 3] = ["plain", "anti-affinity", "topology-spread"];

/// Pod `i` of a scheduling case, with no node, asking 100m CPU and
/// 500Mi as scheduler_perf's do. Anti-affinity: scheduler_perf's term
/// (its own label, per host); since one group of such pods fits only as
/// many pods as nodes, the pods form groups of at most half the nodes.
/// Spread: maxSkew 5 over zones, DoNotSchedule.
fn pending_pod(case: &str, i: usize, args: &Args) -> Pod {
    let mut pod = serde_json::json!({
        "metadata": {"name": format!("pending-pod-{i}"), "labels": {"app": "fake-pod"}},
        "spec": {"containers": [{
            "name": "fake-container", "image": "fake-image",
            "resources": {"requests": {"cpu": "100m", "memory": "500Mi"}},
        }]},
    });
    match case {
        "anti-affinity" => {
            let groups = (2 * args.pods).div_ceil(args.nodes).max(1);
            let color = format!("green-{}", i % groups);
            pod["metadata"]["labels"]["color"] = color.clone().into();
            pod["spec"]["affinity"] = serde_json::json!({"podAntiAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": [{
                    "labelSelector": {"matchLabels": {"color": color}},
                    "topologyKey": "kubernetes.io/hostname",
                }],
            }});
        }
        "topology-spread" => {
            pod["metadata"]["labels"]["color"] = "blue".into();
            pod["spec"]["topologySpreadConstraints"] = serde_json::json!([{
                "maxSkew": 5,
                "topologyKey": "topology.kubernetes.io/zone",
                "whenUnsatisfiable": "DoNotSchedule",
                "labelSelector": {"matchLabels": {"color": "blue"}},
            }]);
        }
        _ => {}
    }
    serde_json::from_value(pod).expect("a valid pod")
}

struct Figures {
    backend: String,
    started_to_ready: Duration,
    create_p50_ms: f64,
    create_p99_ms: f64,
    nodes_ready: Duration,
    pods_running: Duration,
    pods_deleted: Duration,
    /// Per case: creating the pods until all are bound.
    pods_scheduled: Vec<(&'static str, Duration)>,
    /// Through Deployments: all Running, then all gone.
    density: Option<(Duration, Duration)>,
    rss_idle: f64,
    rss_nodes: f64,
    rss_pods: f64,
    sim_cpu: f64,
    sim_rss: f64,
}

impl Figures {
    fn total(&self) -> Duration {
        self.nodes_ready + self.pods_running + self.pods_deleted
    }
}

/// Polls `done` every 20 ms until it holds, or fails after the phase limit.
async fn until<F, Fut>(what: &str, mut done: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<bool>>,
{
    let deadline = Instant::now() + PHASE_LIMIT;
    while !done().await? {
        if Instant::now() > deadline {
            bail!("{what} did not happen within {PHASE_LIMIT:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// How many of the listed objects satisfy `count`, reading in pages.
async fn count_nodes_ready(client: &Client) -> anyhow::Result<usize> {
    let nodes: Api<Node> = Api::all(client.clone());
    let mut ready = 0;
    let mut params = ListParams::default().labels("type=sim").limit(5_000);
    loop {
        let page = nodes.list(&params).await?;
        ready += page
            .items
            .iter()
            .filter(|n| {
                n.status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
            })
            .count();
        match page.metadata.continue_ {
            Some(token) if !token.is_empty() => params = params.continue_token(&token),
            _ => return Ok(ready),
        }
    }
}

async fn count_pods(client: &Client, field_selector: Option<&str>) -> anyhow::Result<usize> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), NAMESPACE);
    let mut params = ListParams::default().limit(5_000);
    if let Some(selector) = field_selector {
        params = params.fields(selector);
    }
    let mut count = 0;
    loop {
        let page = pods.list_metadata(&params).await?;
        count += page.items.len();
        match page.metadata.continue_ {
            Some(token) if !token.is_empty() => params = params.continue_token(&token),
            _ => return Ok(count),
        }
    }
}

/// A phase's start on stderr, so that a profiler can be pointed at it.
fn progress(backend: &str, phase: &str) {
    eprintln!("cluster-bench: {backend}: {phase}");
}

async fn run_backend(args: &Args, backend: &str) -> anyhow::Result<Figures> {
    let dir = tempfile::tempdir()?;
    let etcd = match backend {
        "sqlite" => None,
        "etcd" => Some(support::start_etcd(&dir.path().join("etcd")).await?),
        other => bail!("unknown backend {other:?}"),
    };
    let mut extra = Vec::new();
    if args.without_scheduler {
        extra.push("--disable-scheduler");
    }
    if args.without_controllers {
        extra.push("--disable-controller-manager");
    }
    let server = Server::start(
        &args.tug,
        dir.path(),
        etcd.as_ref().map(|e| e.url.as_str()),
        &extra,
    )
    .await?;
    let client = server.client.clone();
    let started_to_ready = server.started_to_ready;
    let rss_idle = server.rss_mib();

    // KWOK's workload, 1: the nodes, Ready.
    let begun = Instant::now();
    progress(backend, "nodes");
    let sim = Simulator::start(args, &server::kubeconfig_path(dir.path()))?;
    // The simulator's own counts say when to look; the API says when it is so.
    until("all nodes Ready", || async {
        Ok(count_nodes_ready(&client).await? == args.nodes)
    })
    .await?;
    let nodes_ready = begun.elapsed();
    let rss_nodes = server.rss_mib();

    // 2: the pods, Running.
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let namespace: Namespace =
        serde_json::from_value(serde_json::json!({"metadata": {"name": NAMESPACE}}))?;
    namespaces
        .create(&PostParams::default(), &namespace)
        .await?;
    let names: Vec<String> = (0..args.nodes).map(|i| format!("sim-{i}")).collect();
    let pods: Api<Pod> = Api::namespaced(client.clone(), NAMESPACE);
    let failures = Arc::new(AtomicUsize::new(0));
    let begun = Instant::now();
    progress(backend, "pods running");
    let mut latencies: Vec<Duration> = futures::stream::iter(0..args.pods)
        .map(|i| {
            let (pods, failures) = (pods.clone(), failures.clone());
            let pod = pod(&format!("fake-pod-{i}"), &names[i % names.len()]);
            async move {
                let sent = Instant::now();
                if pods.create(&PostParams::default(), &pod).await.is_err() {
                    failures.fetch_add(1, Ordering::Relaxed);
                }
                sent.elapsed()
            }
        })
        .buffer_unordered(args.clients)
        .collect()
        .await;
    latencies.sort();
    if failures.load(Ordering::Relaxed) > 0 {
        bail!("{} pod creates failed", failures.load(Ordering::Relaxed));
    }
    until("the simulator to run every pod", || async {
        Ok(sim.counts().2 >= args.pods)
    })
    .await?;
    until("all pods Running", || async {
        Ok(count_pods(&client, Some("status.phase=Running")).await? == args.pods)
    })
    .await?;
    let pods_running = begun.elapsed();
    let rss_pods = server.rss_mib();

    // 3: every pod deleted, each finished by its simulated kubelet.
    let begun = Instant::now();
    progress(backend, "pods deleted");
    pods.delete_collection(
        &DeleteParams::default().grace_period(1),
        &ListParams::default(),
    )
    .await?;
    until("the simulator to see every pod go", || async {
        Ok(sim.counts().1 == 0)
    })
    .await?;
    until("all pods gone", || async {
        Ok(count_pods(&client, None).await? == 0)
    })
    .await?;
    let pods_deleted = begun.elapsed();

    // 4: scheduling, end to end, for each case: as many pods again, with
    // no node; the scheduler binds each (the simulator seeing it bound is
    // the finish).
    let mut pods_scheduled = Vec::new();
    for case in CASES {
        if args.without_scheduler {
            break;
        }
        if !args.cases.iter().any(|c| c == case) {
            continue;
        }
        let begun = Instant::now();
        progress(backend, &format!("scheduling {case}"));
        let creates = futures::stream::iter(0..args.pods)
            .map(|i| {
                let (pods, failures) = (pods.clone(), failures.clone());
                let pod = pending_pod(case, i, args);
                async move {
                    if pods.create(&PostParams::default(), &pod).await.is_err() {
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
            .buffer_unordered(args.clients)
            .collect::<Vec<()>>();
        creates.await;
        if failures.load(Ordering::Relaxed) > 0 {
            bail!("{} pod creates failed", failures.load(Ordering::Relaxed));
        }
        until(
            &format!("the scheduler to bind every pod ({case})"),
            || async { Ok(sim.counts().1 >= args.pods) },
        )
        .await?;
        pods_scheduled.push((case, begun.elapsed()));
        pods.delete_collection(
            &DeleteParams::default().grace_period(0),
            &ListParams::default(),
        )
        .await?;
        until("all pods gone", || async {
            Ok(count_pods(&client, None).await? == 0 && sim.counts().1 == 0)
        })
        .await?;
    }

    // 5: density, through the controllers.
    let density = if args.without_scheduler || args.without_controllers {
        None
    } else {
        let deployments: Api<Deployment> = Api::namespaced(client.clone(), NAMESPACE);
        let per = args.pods.div_ceil(DEPLOYMENTS);
        let begun = Instant::now();
        progress(backend, "density");
        for i in 0..DEPLOYMENTS {
            let replicas = per.min(args.pods - (i * per).min(args.pods));
            deployments
                .create(
                    &PostParams::default(),
                    &deployment(&format!("density-{i}"), replicas),
                )
                .await?;
        }
        until("every Deployment's pods Running", || async {
            Ok(sim.counts().2 >= args.pods)
        })
        .await?;
        let running = begun.elapsed();
        let begun = Instant::now();
        progress(backend, "density deleted");
        deployments
            .delete_collection(&DeleteParams::default(), &ListParams::default())
            .await?;
        until("every Deployment's pods gone", || async {
            Ok(count_pods(&client, None).await? == 0)
        })
        .await?;
        Some((running, begun.elapsed()))
    };

    let (sim_cpu, sim_rss) = sim.usage();
    drop(sim);
    drop(server);
    drop(etcd);
    Ok(Figures {
        backend: backend.to_string(),
        started_to_ready,
        create_p50_ms: support::percentile_ms(&latencies, 0.5),
        create_p99_ms: support::percentile_ms(&latencies, 0.99),
        nodes_ready,
        pods_running,
        pods_deleted,
        pods_scheduled,
        density,
        rss_idle,
        rss_nodes,
        rss_pods,
        sim_cpu,
        sim_rss,
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(unknown) = args.cases.iter().find(|c| !CASES.contains(&c.as_str())) {
        bail!("--cases {unknown:?}: expected some of {}", CASES.join(", "));
    }
    println!(
        "machine: {}; {} simulated nodes, {} pods",
        support::machine(),
        args.nodes,
        args.pods
    );
    let mut all = Vec::new();
    for backend in &args.backends {
        let f = run_backend(&args, backend).await?;
        let b = &f.backend;
        println!(
            "{b:<8} start to /readyz                          {:>8.0} ms",
            f.started_to_ready.as_secs_f64() * 1000.0
        );
        println!(
            "{b:<8} pod creates, {} clients                  p50 {:.2} ms, p99 {:.2} ms",
            args.clients, f.create_p50_ms, f.create_p99_ms
        );
        println!(
            "{b:<8} nodes registered and Ready               {:>8.2} s",
            f.nodes_ready.as_secs_f64()
        );
        println!(
            "{b:<8} pods Running                             {:>8.2} s ({:.0} pods/s)",
            f.pods_running.as_secs_f64(),
            args.pods as f64 / f.pods_running.as_secs_f64()
        );
        println!(
            "{b:<8} pods deleted (grace 1 s)                 {:>8.2} s",
            f.pods_deleted.as_secs_f64()
        );
        println!(
            "{b:<8} KWOK workload in all                     {:>8.2} s",
            f.total().as_secs_f64()
        );
        for (case, scheduled) in &f.pods_scheduled {
            println!(
                "{b:<8} pods created and scheduled ({case:<15}) {:>8.2} s ({:.0} pods/s)",
                scheduled.as_secs_f64(),
                args.pods as f64 / scheduled.as_secs_f64()
            );
        }
        if let Some((running, gone)) = f.density {
            println!(
                "{b:<8} density: {} pods through {DEPLOYMENTS} Deployments Running {:>6.2} s, deleted with them {:.2} s",
                args.pods,
                running.as_secs_f64(),
                gone.as_secs_f64()
            );
        }
        println!(
            "{b:<8} server RSS idle / with nodes / with pods {:>6.1} / {:.1} / {:.1} MiB ({:.1} MiB per 1,000 pods)",
            f.rss_idle,
            f.rss_nodes,
            f.rss_pods,
            (f.rss_pods - f.rss_nodes) / (args.pods as f64 / 1000.0)
        );
        println!(
            "{b:<8} simulator's CPU / peak RSS                {:>8.1} s / {:.1} MiB",
            f.sim_cpu, f.sim_rss
        );
        all.push(f);
    }
    if let Some(path) = &args.json {
        let results: Vec<serde_json::Value> = all
            .iter()
            .map(|f| {
                serde_json::json!({
                    "backend": f.backend,
                    "start_to_readyz_ms": f.started_to_ready.as_secs_f64() * 1000.0,
                    "create_p50_ms": f.create_p50_ms,
                    "create_p99_ms": f.create_p99_ms,
                    "nodes": args.nodes,
                    "pods": args.pods,
                    "nodes_ready_s": f.nodes_ready.as_secs_f64(),
                    "pods_running_s": f.pods_running.as_secs_f64(),
                    "pods_deleted_s": f.pods_deleted.as_secs_f64(),
                    "total_s": f.total().as_secs_f64(),
                    "scheduling": f.pods_scheduled.iter().map(|(case, d)| serde_json::json!({
                        "case": case,
                        "seconds": d.as_secs_f64(),
                        "pods_per_s": args.pods as f64 / d.as_secs_f64(),
                    })).collect::<Vec<_>>(),
                    "density_running_s": f.density.map(|d| d.0.as_secs_f64()),
                    "density_deleted_s": f.density.map(|d| d.1.as_secs_f64()),
                    "server_rss_idle_mib": f.rss_idle,
                    "server_rss_nodes_mib": f.rss_nodes,
                    "server_rss_pods_mib": f.rss_pods,
                    "sim_cpu_s": f.sim_cpu,
                    "sim_rss_mib": f.sim_rss,
                })
            })
            .collect();
        std::fs::write(path, serde_json::to_string_pretty(&results)?)?;
    }
    Ok(())
}
