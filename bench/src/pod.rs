//! Pod start latency through a real `tug server` with its node agent
//! (containerd, runc, the CNI bridge), beside the floor measured in the
//! same run: the same work through CRI directly (sandbox, then container
//! create and start) on the agent's own containerd.
//!
//! - one after another: create to Running as a watch sees it, p50/p99;
//! - at once: N pods created together, time until all are Running;
//! - the server's RSS (API server, controllers, scheduler and agent in one
//!   process) before the pods and with them.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::Client;
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::watcher;
use serde_json::json;
use tug_kubelet::cri::Runtime;
use tug_kubelet::images::{Entry, ImageConfig, docker_archive, tar};

mod server;
// The etcd helpers serve the other benchmarks.
#[allow(dead_code)]
mod support;

const IMAGE: &str = "tug.local/busybox:1";
const NODE: &str = "tug-bench-node";

#[derive(Parser)]
#[command(about = "Pod start latency on the node agent, beside raw CRI")]
struct Args {
    /// The tug binary.
    #[arg(long, default_value = "target/release/tug")]
    tug: PathBuf,
    /// Pods started one after another.
    #[arg(long, default_value_t = 50)]
    sequential: usize,
    /// Pods started at once.
    #[arg(long, default_value_t = 30)]
    burst: usize,
    /// Write the figures as JSON here too.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// A busybox image from Debian's busybox-static, as the tests build it.
fn busybox_archive(dir: &Path) -> anyhow::Result<PathBuf> {
    let busybox = std::fs::read("/bin/busybox").context("Debian's busybox-static")?;
    let layer = tar(&[
        Entry::Dir { path: "bin" },
        Entry::File {
            path: "bin/busybox",
            mode: 0o755,
            data: &busybox,
        },
        Entry::Symlink {
            path: "bin/sleep",
            target: "busybox",
        },
        Entry::Symlink {
            path: "bin/sh",
            target: "busybox",
        },
    ])?;
    let archive = docker_archive(
        IMAGE,
        &[layer],
        &ImageConfig {
            cmd: &["sh"],
            env: &["PATH=/bin"],
            ..Default::default()
        },
    )?;
    let path = dir.join("busybox.tar");
    std::fs::write(&path, archive)?;
    Ok(path)
}

fn pod(name: &str) -> anyhow::Result<Pod> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"bench": "pods"}},
        "spec": {
            "terminationGracePeriodSeconds": 0,
            "containers": [{
                "name": "app", "image": IMAGE, "imagePullPolicy": "IfNotPresent",
                "command": ["sleep", "3600"],
            }],
        },
    }))?)
}

/// Creates `names` at once; answers each pod's create-to-Running time.
async fn start_pods(client: &Client, names: &[String]) -> anyhow::Result<Vec<Duration>> {
    let api: Api<Pod> = Api::namespaced(client.clone(), "default");
    let config = watcher::Config::default().labels("bench=pods");
    let mut events = watcher(api.clone(), config).boxed();
    // The watch is open (its initial list done) before the creates.
    loop {
        match events.next().await {
            Some(Ok(watcher::Event::InitDone)) => break,
            Some(Ok(_)) => {}
            Some(Err(err)) => bail!("watching pods: {err}"),
            None => bail!("the watch ended"),
        }
    }
    let mut created: HashMap<String, Instant> = HashMap::new();
    let creates = names.iter().map(|name| {
        let api = api.clone();
        async move {
            let started = Instant::now();
            api.create(&PostParams::default(), &pod(name)?).await?;
            Ok::<_, anyhow::Error>((name.clone(), started))
        }
    });
    for result in futures::future::join_all(creates).await {
        let (name, at) = result?;
        created.insert(name, at);
    }
    let mut running: HashMap<String, Duration> = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while running.len() < names.len() {
        let event = tokio::time::timeout_at(deadline.into(), events.next())
            .await
            .context("pods did not all run within 120 s")?;
        if let Some(Ok(watcher::Event::Apply(pod))) = event {
            let name = pod.metadata.name.clone().unwrap_or_default();
            let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
            if phase == Some("Running")
                && let Some(at) = created.get(&name)
            {
                running.entry(name).or_insert_with(|| at.elapsed());
            }
        }
    }
    Ok(names.iter().map(|n| running[n]).collect())
}

/// Deletes the benchmark's pods gracefully (a grace of 0 would remove the
/// objects at once, before the agent stopped their containers) and waits
/// until the agent has removed them.
async fn delete_pods(client: &Client) -> anyhow::Result<()> {
    let api: Api<Pod> = Api::namespaced(client.clone(), "default");
    let params = DeleteParams {
        grace_period_seconds: Some(1),
        ..Default::default()
    };
    api.delete_collection(
        &params,
        &kube::api::ListParams::default().labels("bench=pods"),
    )
    .await?;
    let deadline = Instant::now() + Duration::from_secs(120);
    while !api
        .list(&kube::api::ListParams::default().labels("bench=pods"))
        .await?
        .items
        .is_empty()
    {
        if Instant::now() > deadline {
            bail!("pods were not deleted within 120 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// The floor: a sandbox, then a container created and started, through
/// CRI on the same containerd (with the same pause image, CNI and image),
/// `count` of them, one after another or all at once; then everything is
/// removed. Answers each one's time and the time for all.
async fn raw_cri(
    socket: &Path,
    count: usize,
    at_once: bool,
    log_dir: &Path,
) -> anyhow::Result<(Vec<Duration>, Duration)> {
    let runtime = Runtime::connect(socket)?;
    let begun = Instant::now();
    let mut started = Vec::new();
    if at_once {
        let all = (0..count).map(|i| raw_pod(&runtime, i, log_dir));
        for result in futures::future::join_all(all).await {
            started.push(result?);
        }
    } else {
        for i in 0..count {
            started.push(raw_pod(&runtime, i, log_dir).await?);
        }
    }
    let all = begun.elapsed();
    let mut times = Vec::new();
    for (time, sandbox, container) in started {
        times.push(time);
        runtime.stop_container(&container, 0).await?;
        runtime.remove_container(&container).await?;
        runtime.stop_sandbox(&sandbox).await?;
        runtime.remove_sandbox(&sandbox).await?;
    }
    Ok((times, all))
}

/// One raw pod: its time, sandbox and container.
async fn raw_pod(
    runtime: &Runtime,
    i: usize,
    log_dir: &Path,
) -> anyhow::Result<(Duration, String, String)> {
    use k8s_cri::v1 as cri;
    let uid = format!("raw-cri-{i}-{}", std::process::id());
    std::fs::create_dir_all(log_dir.join(&uid).join("app"))?;
    let sandbox = cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: format!("raw-{i}"),
            uid: uid.clone(),
            namespace: "bench".into(),
            attempt: 0,
        }),
        hostname: format!("raw-{i}"),
        log_directory: log_dir.join(&uid).display().to_string(),
        linux: Some(cri::LinuxPodSandboxConfig::default()),
        ..Default::default()
    };
    let container = cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata {
            name: "app".into(),
            attempt: 0,
        }),
        image: Some(cri::ImageSpec {
            image: IMAGE.into(),
            ..Default::default()
        }),
        command: vec!["sleep".into(), "3600".into()],
        log_path: "app/0.log".into(),
        linux: Some(cri::LinuxContainerConfig::default()),
        ..Default::default()
    };
    let started = Instant::now();
    let id = runtime.run_sandbox(sandbox.clone()).await?;
    let container_id = runtime.create_container(&id, container, sandbox).await?;
    runtime.start_container(&container_id).await?;
    Ok((started.elapsed(), id, container_id))
}

fn sorted(mut times: Vec<Duration>) -> Vec<Duration> {
    times.sort();
    times
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    println!("machine: {}", support::machine());
    let dir = tempfile::tempdir()?;
    let kubelet_port = support::free_port()?.to_string();
    // The server without an agent, and `tug agent` in its own process
    // beside it, so that each one's memory shows apart.
    let server = server::Server::start(
        &args.tug,
        dir.path(),
        None,
        &["--cluster-cidr", "10.233.0.0/16"],
    )
    .await?;
    let agent_data = dir.path().join("agent-data");
    let agent = server::Agent::start(
        &args.tug,
        dir.path(),
        &agent_data,
        &[
            "--node-name",
            NODE,
            "--node-ip",
            "127.0.0.1",
            "--cni-bridge",
            "tugbench0",
            "--kubelet-port",
            &kubelet_port,
        ],
    )?;
    let client = server.client.clone();
    let result = measure(&args, &agent_data, &server, &agent, &client).await;
    let _ = delete_pods(&client).await;
    drop(agent);
    drop(server);
    let _ = std::process::Command::new("ip")
        .args(["link", "del", "tugbench0"])
        .status();
    result
}

async fn measure(
    args: &Args,
    dir: &Path,
    server: &server::Server,
    agent: &server::Agent,
    client: &Client,
) -> anyhow::Result<()> {
    let socket = dir.join("agent/containerd/containerd.sock");
    let nodes: Api<Node> = Api::all(client.clone());
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ready = nodes.get_opt(NODE).await?.is_some_and(|node| {
            node.status
                .and_then(|s| s.conditions)
                .unwrap_or_default()
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
        });
        if ready {
            break;
        }
        if Instant::now() > deadline {
            bail!("the node was not Ready within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let archive = busybox_archive(dir)?;
    tug_kubelet::images::import(&socket, &archive).await?;
    // One pod first, so that the image is unpacked and caches are warm.
    start_pods(client, &["warm".to_string()]).await?;
    delete_pods(client).await?;
    let rss_idle = server.rss_mib();
    let agent_idle = agent.rss_mib();
    println!(
        "tug server: start to /readyz {:.0} ms",
        server.started_to_ready.as_secs_f64() * 1000.0
    );

    let (floor, _) = raw_cri(&socket, args.sequential, false, &dir.join("raw-logs")).await?;
    let floor = sorted(floor);
    let (_, raw_burst) = raw_cri(&socket, args.burst, true, &dir.join("raw-logs")).await?;

    let mut sequential = Vec::new();
    for i in 0..args.sequential {
        sequential.extend(start_pods(client, &[format!("one-{i}")]).await?);
    }
    let sequential = sorted(sequential);
    let rss_pods = server.rss_mib();
    let agent_pods = agent.rss_mib();
    delete_pods(client).await?;

    let names: Vec<String> = (0..args.burst).map(|i| format!("burst-{i}")).collect();
    let burst_started = Instant::now();
    let burst = start_pods(client, &names).await?;
    let burst_all = burst_started.elapsed();
    let burst = sorted(burst);
    delete_pods(client).await?;

    let p = |times: &[Duration], q| support::percentile_ms(times, q);
    println!(
        "raw CRI (sandbox + create + start), {} one after another   p50 {:>6.0} ms, p99 {:>6.0} ms",
        args.sequential,
        p(&floor, 0.5),
        p(&floor, 0.99)
    );
    println!(
        "tug: create to Running (watch), {} one after another       p50 {:>6.0} ms, p99 {:>6.0} ms ({:.2}x / {:.2}x the floor)",
        args.sequential,
        p(&sequential, 0.5),
        p(&sequential, 0.99),
        p(&sequential, 0.5) / p(&floor, 0.5),
        p(&sequential, 0.99) / p(&floor, 0.99),
    );
    println!(
        "raw CRI, {} at once, all started                            {:>6.2} s",
        args.burst,
        raw_burst.as_secs_f64()
    );
    println!(
        "tug: {} pods at once, all Running                          {:>6.2} s (p50 {:.0} ms, p99 {:.0} ms)",
        args.burst,
        burst_all.as_secs_f64(),
        p(&burst, 0.5),
        p(&burst, 0.99)
    );
    println!(
        "tug agent RSS: {agent_idle:.1} MiB idle, {agent_pods:.1} MiB with {} pods",
        args.sequential
    );
    println!(
        "tug server RSS (API server, controllers, scheduler): {rss_idle:.1} MiB idle, {rss_pods:.1} MiB with {} pods",
        args.sequential
    );
    if let Some(path) = &args.json {
        let figures = json!({
            "raw_cri_p50_ms": p(&floor, 0.5), "raw_cri_p99_ms": p(&floor, 0.99),
            "sequential_p50_ms": p(&sequential, 0.5), "sequential_p99_ms": p(&sequential, 0.99),
            "burst": args.burst, "burst_all_running_s": burst_all.as_secs_f64(),
            "raw_cri_burst_s": raw_burst.as_secs_f64(),
            "rss_idle_mib": rss_idle, "rss_with_pods_mib": rss_pods,
            "agent_rss_idle_mib": agent_idle, "agent_rss_with_pods_mib": agent_pods,
        });
        std::fs::write(path, serde_json::to_vec_pretty(&figures)?)?;
    }
    Ok(())
}
