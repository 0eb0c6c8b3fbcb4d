//! API server benchmarks: a real `tug server` (SQLite, then etcd), driven
//! over HTTPS with the admin client certificate through the kube crate's
//! client, as a controller or kubectl would.
//!
//! `cargo build --release -p tug -p tug-bench && target/release/api-bench [--pods 10000]`
//!
//! Per backend: start to /readyz, RSS idle; creates of ~3 KiB pods with 1,
//! 16 and 64 clients; latency at a steady 2,000 creates/s; gets; a list of
//! every pod (no limit, and in pages of 500 as kubectl asks); watch fan-out
//! to 1,000 watchers; RSS with the pods stored.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::bail;
use clap::Parser;
use futures::AsyncBufReadExt;
use kube::Client;

mod server;
mod support;

use server::{Server, get};

#[derive(Parser)]
struct Args {
    /// The tug binary to start.
    #[arg(long, default_value = "target/release/tug")]
    tug: PathBuf,
    /// Seconds each throughput case runs.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Pods stored before the list and RSS cases.
    #[arg(long, default_value_t = 10_000)]
    pods: usize,
    /// Watchers in the fan-out case.
    #[arg(long, default_value_t = 1000)]
    watchers: usize,
    /// Backends to run: sqlite, etcd.
    #[arg(long, value_delimiter = ',', default_value = "sqlite,etcd")]
    backends: Vec<String>,
    /// Where to write the results as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// A pod of realistic size (~3 KiB as JSON): labels, annotations, two
/// containers with env, resources, probes and mounts.
fn pod(name: &str) -> Vec<u8> {
    let env: Vec<serde_json::Value> = (0..12)
        .map(|i| serde_json::json!({"name": format!("SETTING_{i}"), "value": format!("value-{i}-of-the-benchmark")}))
        .collect();
    serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "labels": {"app": "bench", "tier": "web", "release": "stable", "pod-template-hash": "6d4cf56db6"},
            "annotations": {"bench.tug.dev/description": "a pod the size of a typical Deployment's pod, for the API benchmark"},
        },
        "spec": {
            "containers": [
                {
                    "name": "web",
                    "image": "registry.local/bench/web:1.2.3",
                    "command": ["httpd", "-f", "-p", "8080"],
                    "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}],
                    "env": env,
                    "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"cpu": "500m", "memory": "128Mi"}},
                    "readinessProbe": {"httpGet": {"path": "/healthz", "port": 8080}, "periodSeconds": 5},
                    "livenessProbe": {"tcpSocket": {"port": 8080}, "initialDelaySeconds": 10},
                    "volumeMounts": [{"name": "data", "mountPath": "/data"}, {"name": "config", "mountPath": "/etc/web"}],
                },
                {
                    "name": "log-agent",
                    "image": "registry.local/bench/agent:0.9",
                    "args": ["--follow", "/data/access.log", "--format", "json"],
                    "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}},
                    "volumeMounts": [{"name": "data", "mountPath": "/data", "readOnly": true}],
                },
            ],
            "volumes": [{"name": "data", "emptyDir": {}}, {"name": "config", "configMap": {"name": "web-config"}}],
            "nodeName": "bench-node",
            "terminationGracePeriodSeconds": 30,
        },
    })
    .to_string()
    .into_bytes()
}

/// Where the stored pods are listed and read.
const PODS: &str = "/api/v1/namespaces/default/pods";
/// Where the throughput cases create theirs, apart from the listed ones.
const LOAD_PODS: &str = "/api/v1/namespaces/load/pods";

struct Load {
    requests: u64,
    per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
}

impl Load {
    fn figure(&self) -> String {
        format!(
            "{:.0}/s p50 {:.2} ms p99 {:.2} ms",
            self.per_second, self.p50_ms, self.p99_ms
        )
    }

    fn json(&self) -> String {
        format!(
            r#""per_second":{:.0},"p50_ms":{:.3},"p99_ms":{:.3}"#,
            self.per_second, self.p50_ms, self.p99_ms
        )
    }
}

/// `clients` concurrent clients, each sending requests back to back for
/// `seconds` (or until `total` requests in all), or, with `rate`, all of
/// them together at that many requests per second.
async fn load(
    client: &Client,
    clients: usize,
    seconds: u64,
    total: Option<u64>,
    rate: Option<f64>,
    request: impl Fn(u64) -> http::Request<Vec<u8>> + Send + Sync + 'static,
) -> anyhow::Result<Load> {
    let request = Arc::new(request);
    let stop = Arc::new(AtomicBool::new(false));
    let next = Arc::new(AtomicU64::new(0));
    let begun = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (client, request, stop, next) =
            (client.clone(), request.clone(), stop.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if total.is_some_and(|t| n >= t) {
                    break;
                }
                if let Some(rate) = rate {
                    let due = begun + Duration::from_secs_f64(n as f64 / rate);
                    tokio::time::sleep_until(due.into()).await;
                }
                let sent = Instant::now();
                client.request_text(request(n)).await?;
                latencies.push(sent.elapsed());
            }
            anyhow::Ok(latencies)
        }));
    }
    if total.is_none() {
        tokio::time::sleep(Duration::from_secs(seconds)).await;
        stop.store(true, Ordering::Relaxed);
    }
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await??);
    }
    let elapsed = begun.elapsed().as_secs_f64();
    latencies.sort_unstable();
    Ok(Load {
        requests: latencies.len() as u64,
        per_second: latencies.len() as f64 / elapsed,
        p50_ms: support::percentile_ms(&latencies, 0.50),
        p99_ms: support::percentile_ms(&latencies, 0.99),
    })
}

fn create_pod(prefix: String) -> impl Fn(u64) -> http::Request<Vec<u8>> + Send + Sync {
    let path = if prefix == "fill" { PODS } else { LOAD_PODS };
    move |n| {
        http::Request::post(path)
            .header("Content-Type", "application/json")
            .body(pod(&format!("{prefix}-{n}")))
            .expect("a valid request")
    }
}

/// Milliseconds of the fastest of `runs` lists, and the items listed.
async fn time_list(
    client: &Client,
    limit: Option<usize>,
    runs: usize,
) -> anyhow::Result<(f64, usize)> {
    let mut best = f64::MAX;
    let mut count = 0;
    for _ in 0..runs {
        // Time until each page's bytes are in, not the client's parsing.
        let mut begun = Instant::now();
        let mut elapsed = Duration::ZERO;
        count = 0;
        let mut token = String::new();
        loop {
            let mut path = format!("{PODS}?");
            if let Some(limit) = limit {
                path.push_str(&format!("limit={limit}&"));
            }
            if !token.is_empty() {
                path.push_str(&format!("continue={token}"));
            }
            let text = get(client, &path).await?;
            elapsed += begun.elapsed();
            let list: serde_json::Value = serde_json::from_str(&text)?;
            begun = Instant::now();
            count += list["items"].as_array().map_or(0, Vec::len);
            match list["metadata"]["continue"].as_str() {
                Some(next) if !next.is_empty() => token = next.to_string(),
                _ => break,
            }
        }
        best = best.min(elapsed.as_secs_f64() * 1000.0);
    }
    Ok((best, count))
}

struct FanOut {
    events_per_second: f64,
    creates_alone: f64,
    creates_watched: f64,
    delivered: u64,
    expected: u64,
}

/// `watchers` watches of pods while 16 clients create them: with
/// `per_node`, each watches its own node's pods (as kubelets do) and each
/// pod reaches one watcher; without, every pod reaches every watcher.
async fn fan_out(
    client: &Client,
    watchers: usize,
    seconds: u64,
    per_node: bool,
) -> anyhow::Result<FanOut> {
    let tag = if per_node { "node" } else { "all" };
    let alone = load(
        client,
        16,
        seconds,
        None,
        None,
        create_pod(format!("alone-{tag}")),
    )
    .await?;
    let list: serde_json::Value =
        serde_json::from_str(&get(client, &format!("{LOAD_PODS}?limit=1")).await?)?;
    let from = list["metadata"]["resourceVersion"]
        .as_str()
        .unwrap_or("0")
        .to_string();
    let delivered = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for w in 0..watchers {
        let selector = if per_node {
            format!("fieldSelector=spec.nodeName%3Dnode-{w}")
        } else {
            "labelSelector=phase%3Dwatched".to_string()
        };
        let path = format!("{LOAD_PODS}?watch=true&resourceVersion={from}&{selector}");
        let request = http::Request::get(path).body(Vec::new())?;
        let mut stream = client.request_stream(request).await?;
        let delivered = delivered.clone();
        tasks.push(tokio::spawn(async move {
            let mut line = String::new();
            loop {
                line.clear();
                match stream.read_line(&mut line).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {
                        delivered.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    let begun = Instant::now();
    let watched = load(client, 16, seconds, None, None, move |n| {
        let name = format!("watched-{tag}-{n}");
        let mut pod: serde_json::Value = serde_json::from_slice(&pod(&name)).expect("json");
        pod["metadata"]["labels"]["phase"] = "watched".into();
        pod["spec"]["nodeName"] = format!("node-{}", n % watchers as u64).into();
        http::Request::post(LOAD_PODS)
            .header("Content-Type", "application/json")
            .body(pod.to_string().into_bytes())
            .expect("a valid request")
    })
    .await?;
    let expected = if per_node {
        watched.requests
    } else {
        watched.requests * watchers as u64
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while delivered.load(Ordering::Relaxed) < expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = begun.elapsed().as_secs_f64();
    for task in &tasks {
        task.abort();
    }
    let delivered = delivered.load(Ordering::Relaxed);
    Ok(FanOut {
        events_per_second: delivered as f64 / elapsed,
        creates_alone: alone.per_second,
        creates_watched: watched.per_second,
        delivered,
        expected,
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    println!(
        "machine: {}; {} s per throughput case, {} pods stored",
        support::machine(),
        args.seconds,
        args.pods
    );
    let mut json = Vec::new();
    let mut report = |backend: &str, case: &str, figure: String, value: String| {
        println!("{backend:<8} {case:<44} {figure}");
        json.push(format!(
            r#"{{"backend":"{backend}","case":"{case}",{value}}}"#
        ));
    };
    for backend in &args.backends {
        let temp = tempfile::tempdir()?;
        let etcd = match backend.as_str() {
            "sqlite" => None,
            "etcd" => Some(support::start_etcd(&temp.path().join("etcd")).await?),
            other => bail!("unknown backend {other:?}: sqlite or etcd"),
        };
        let server = Server::start(
            &args.tug,
            temp.path(),
            etcd.as_ref().map(|e| e.url.as_str()),
            // The API alone: no scheduler writing about pods it cannot
            // place, no controllers watching every kind.
            &["--disable-scheduler", "--disable-controller-manager"],
        )
        .await?;
        let client = server.client.clone();
        let ms = server.started_to_ready.as_secs_f64() * 1000.0;
        report(
            backend,
            "start to /readyz",
            format!("{ms:.0} ms"),
            format!(r#""ms":{ms:.1}"#),
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
        let idle = server.rss_mib();
        let namespace =
            br#"{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"load"}}"#.to_vec();
        let request = http::Request::post("/api/v1/namespaces")
            .header("Content-Type", "application/json")
            .body(namespace)?;
        client.request_text(request).await?;
        report(
            backend,
            "RSS idle",
            format!("{idle:.1} MiB"),
            format!(r#""mib":{idle:.1}"#),
        );

        for clients in [1, 16, 64] {
            let r = load(
                &client,
                clients,
                args.seconds,
                None,
                None,
                create_pod(format!("c{clients}")),
            )
            .await?;
            report(
                backend,
                &format!("create pod, {clients} clients"),
                r.figure(),
                r.json(),
            );
        }
        let rate = 2000.0;
        let r = load(
            &client,
            64,
            args.seconds,
            Some((rate * args.seconds as f64) as u64),
            Some(rate),
            create_pod("steady".into()),
        )
        .await?;
        report(
            backend,
            "create pod at 2,000/s offered",
            r.figure(),
            r.json(),
        );

        // Top up to the stored pod count, then read.
        let (_, mut have) = time_list(&client, None, 1).await?;
        if have < args.pods {
            load(
                &client,
                64,
                0,
                Some((args.pods - have) as u64),
                None,
                create_pod("fill".into()),
            )
            .await?;
            have = args.pods;
        }
        let r = load(&client, 16, args.seconds, None, None, |n| {
            http::Request::get(format!("{PODS}/fill-{}", n % 1000))
                .body(Vec::new())
                .expect("a valid request")
        })
        .await;
        if let Ok(r) = r {
            report(backend, "get pod, 16 clients", r.figure(), r.json());
        }
        let (ms, count) = time_list(&client, None, 5).await?;
        report(
            backend,
            &format!("list all {count} pods"),
            format!("{ms:.0} ms"),
            format!(r#""ms":{ms:.1},"items":{count}"#),
        );
        let (ms, count) = time_list(&client, Some(500), 3).await?;
        report(
            backend,
            &format!("list {count} pods in pages of 500"),
            format!("{ms:.0} ms"),
            format!(r#""ms":{ms:.1},"items":{count}"#),
        );
        let rss = server.rss_mib();
        // Every pod stored counts, the throughput cases' too.
        let all: serde_json::Value =
            serde_json::from_str(&get(&client, "/api/v1/pods?resourceVersion=0").await?)?;
        let stored = all["items"].as_array().map_or(have, Vec::len);
        let per_1k = (rss - idle) * 1000.0 / stored as f64;
        report(
            backend,
            &format!("RSS with {stored} pods stored"),
            format!("{rss:.1} MiB ({per_1k:.1} MiB per 1,000 pods over idle)"),
            format!(r#""mib":{rss:.1},"pods":{stored},"mib_per_1k":{per_1k:.2}"#),
        );

        for per_node in [true, false] {
            let f = fan_out(&client, args.watchers, args.seconds, per_node).await?;
            let slowdown = 100.0 * (1.0 - f.creates_watched / f.creates_alone);
            let case = if per_node {
                format!("watch fan-out, {} node watchers", args.watchers)
            } else {
                format!("watch fan-out, {} watchers of all", args.watchers)
            };
            report(
                backend,
                &case,
                format!(
                    "{:.0} events/s delivered ({}/{}), creates {:.0}/s alone, {:.0}/s watched ({slowdown:.1}% slower)",
                    f.events_per_second,
                    f.delivered,
                    f.expected,
                    f.creates_alone,
                    f.creates_watched
                ),
                format!(
                    r#""events_per_second":{:.0},"delivered":{},"expected":{},"creates_alone":{:.0},"creates_watched":{:.0}"#,
                    f.events_per_second,
                    f.delivered,
                    f.expected,
                    f.creates_alone,
                    f.creates_watched
                ),
            );
        }
        drop(server);
        drop(etcd);
    }
    if let Some(path) = &args.json {
        std::fs::write(path, format!("[{}]\n", json.join(",\n")))?;
    }
    Ok(())
}
