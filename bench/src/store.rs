//! Store benchmarks: durable writes and watch fan-out, on tug's SQLite
//! backend, tug's etcd backend, and raw etcd (etcd-client straight to
//! etcd) as the baseline, all in one run on this machine.
//!
//! `cargo run --release -p tug-bench --bin store-bench -- [--seconds 5] [--json FILE]`

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

mod support;

use anyhow::bail;
use bytes::Bytes;
use clap::Parser;
use support::start_etcd;
use tokio_util::sync::CancellationToken;
use tug_store::{Config, PutOptions, Store, WatchMessage, WatchOptions, etcd, sqlite};

#[derive(Parser)]
struct Args {
    /// How long each case writes.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Concurrent writers, one case each.
    #[arg(long, value_delimiter = ',', default_value = "1,16,256")]
    writers: Vec<usize>,
    /// Bytes per value.
    #[arg(long, default_value_t = 1024)]
    value_bytes: usize,
    /// Watchers in the fan-out case.
    #[arg(long, default_value_t = 1000)]
    watchers: usize,
    /// Where to write the results as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Where the SQLite file and etcd's data go (a temp dir by default).
    #[arg(long)]
    dir: Option<PathBuf>,
}

/// Writes one value under a fresh key: what each backend is asked to do.
#[derive(Clone)]
enum Target {
    Tug(Arc<dyn Store>),
    RawEtcd(Box<etcd_client::Client>),
}

impl Target {
    async fn write(&self, key: String, value: Bytes) -> anyhow::Result<()> {
        match self {
            Target::Tug(store) => {
                store.create(&key, value, PutOptions::default()).await?;
            }
            Target::RawEtcd(client) => {
                client.kv_client().put(key, value.to_vec(), None).await?;
            }
        }
        Ok(())
    }
}

struct WriteResult {
    writes: u64,
    per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
}

async fn write_load(
    target: &Target,
    writers: usize,
    seconds: u64,
    value: &Bytes,
    tag: &str,
) -> anyhow::Result<WriteResult> {
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..writers {
        let target = target.clone();
        let stop = stop.clone();
        let value = value.clone();
        let tag = tag.to_string();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let key = format!("/bench/{tag}/{w}/{n}");
                let begun = Instant::now();
                target.write(key, value.clone()).await?;
                latencies.push(begun.elapsed());
                n += 1;
            }
            anyhow::Ok(latencies)
        }));
    }
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await??);
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort_unstable();
    Ok(WriteResult {
        writes: latencies.len() as u64,
        per_second: latencies.len() as f64 / elapsed,
        p50_ms: support::percentile_ms(&latencies, 0.50),
        p99_ms: support::percentile_ms(&latencies, 0.99),
    })
}

struct FanOut {
    events_per_second: f64,
    writes_per_second_alone: f64,
    writes_per_second_watched: f64,
}

async fn fan_out(
    store: &Arc<dyn Store>,
    watchers: usize,
    seconds: u64,
    value: &Bytes,
    tag: &str,
) -> anyhow::Result<FanOut> {
    let target = Target::Tug(store.clone());
    let alone = write_load(&target, 16, seconds, value, &format!("{tag}-alone")).await?;
    let prefix = format!("/bench/{tag}-watched/");
    let from = store.current_revision().await?;
    let delivered = Arc::new(AtomicU64::new(0));
    let stop = CancellationToken::new();
    let mut tasks = Vec::new();
    for _ in 0..watchers {
        let mut watch = store.watch(&prefix, from, WatchOptions::default()).await?;
        let delivered = delivered.clone();
        let stop = stop.clone();
        let store = store.clone();
        let prefix = prefix.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                let message = tokio::select! {
                    message = watch.next() => message,
                    _ = stop.cancelled() => return anyhow::Ok(()),
                };
                match message {
                    Some(Ok(WatchMessage::Events(events))) => {
                        delivered.fetch_add(events.len() as u64, Ordering::Relaxed);
                    }
                    Some(Ok(WatchMessage::Progress(_))) => {}
                    Some(Err(tug_store::Error::WatchTooSlow { last_revision })) => {
                        watch = store
                            .watch(&prefix, last_revision, WatchOptions::default())
                            .await?;
                    }
                    other => bail!("watch ended: {other:?}"),
                }
            }
        }));
    }
    let started = Instant::now();
    let watched = write_load(&target, 16, seconds, value, &format!("{tag}-watched")).await?;
    // Let the watchers drain what was written, up to a bound.
    let expected = watched.writes * watchers as u64;
    let deadline = Instant::now() + Duration::from_secs(30);
    while delivered.load(Ordering::Relaxed) < expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    stop.cancel();
    for task in tasks {
        task.await??;
    }
    Ok(FanOut {
        events_per_second: delivered.load(Ordering::Relaxed) as f64 / elapsed,
        writes_per_second_alone: alone.per_second,
        writes_per_second_watched: watched.per_second,
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let temp = tempfile::tempdir()?;
    let dir = args
        .dir
        .clone()
        .unwrap_or_else(|| temp.path().to_path_buf());
    std::fs::create_dir_all(&dir)?;
    let value = Bytes::from(vec![b'v'; args.value_bytes]);
    println!(
        "machine: {}; {} s per case, {} B values",
        support::machine(),
        args.seconds,
        args.value_bytes
    );

    let etcd = start_etcd(&dir.join("etcd")).await?;
    let sqlite_store: Arc<dyn Store> = tug_store::open(Config::Sqlite(sqlite::Config {
        path: dir.join("bench.db"),
    }))
    .await?;
    let etcd_store: Arc<dyn Store> =
        tug_store::open(Config::Etcd(etcd::Config::from_endpoints(&etcd.url)?)).await?;
    let raw = etcd_client::Client::connect([&etcd.url], None).await?;
    let targets = [
        ("tug sqlite", Target::Tug(sqlite_store.clone())),
        ("tug etcd", Target::Tug(etcd_store.clone())),
        ("raw etcd (baseline)", Target::RawEtcd(Box::new(raw))),
    ];

    let mut json = Vec::new();
    println!(
        "\n{:<22} {:>8} {:>12} {:>10} {:>10}",
        "durable writes", "writers", "writes/s", "p50 ms", "p99 ms"
    );
    for &writers in &args.writers {
        for (name, target) in &targets {
            let tag = format!("{}-{writers}", name.split(' ').nth(1).unwrap_or("x"));
            let r = write_load(target, writers, args.seconds, &value, &tag).await?;
            println!(
                "{name:<22} {writers:>8} {:>12.0} {:>10.2} {:>10.2}",
                r.per_second, r.p50_ms, r.p99_ms
            );
            json.push(format!(
                r#"{{"case":"writes","backend":"{name}","writers":{writers},"writes":{},"per_second":{:.0},"p50_ms":{:.3},"p99_ms":{:.3}}}"#,
                r.writes, r.per_second, r.p50_ms, r.p99_ms
            ));
        }
    }

    println!(
        "\n{:<22} {:>9} {:>14} {:>14} {:>14} {:>9}",
        "watch fan-out", "watchers", "events/s", "writes/s alone", "writes/s watched", "slowdown"
    );
    for (name, store) in [("tug sqlite", &sqlite_store), ("tug etcd", &etcd_store)] {
        let tag = format!("fan-{}", name.split(' ').nth(1).unwrap_or("x"));
        let r = fan_out(store, args.watchers, args.seconds, &value, &tag).await?;
        let slowdown = (1.0 - r.writes_per_second_watched / r.writes_per_second_alone) * 100.0;
        println!(
            "{name:<22} {:>9} {:>14.0} {:>14.0} {:>14.0} {:>8.1}%",
            args.watchers,
            r.events_per_second,
            r.writes_per_second_alone,
            r.writes_per_second_watched,
            slowdown
        );
        json.push(format!(
            r#"{{"case":"fan-out","backend":"{name}","watchers":{},"events_per_second":{:.0},"writes_per_second_alone":{:.0},"writes_per_second_watched":{:.0},"slowdown_percent":{:.1}}}"#,
            args.watchers, r.events_per_second, r.writes_per_second_alone, r.writes_per_second_watched, slowdown
        ));
    }
    if let Some(path) = &args.json {
        std::fs::write(path, format!("[\n{}\n]\n", json.join(",\n")))?;
        println!("\nwrote {}", path.display());
    }
    drop(etcd);
    Ok(())
}
