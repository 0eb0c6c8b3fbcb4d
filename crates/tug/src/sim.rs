//! `tug sim-nodes`: simulated nodes (`tug_sim`) from the command line,
//! running until SIGINT or SIGTERM and reporting what they do.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::bail;
use k8s_openapi::api::core::v1::Taint;

use crate::cli::SimNodesArgs;

pub(crate) async fn run(args: SimNodesArgs) -> anyhow::Result<()> {
    let config = config(&args)?;
    let client = crate::server::client_from(
        &args.kubeconfig,
        args.server.as_deref(),
        Some(&crate::server::user_agent("tug-sim-nodes")),
    )
    .await?;
    let count = config.count;
    let sim = tug_sim::SimNodes::start(client, config).await?;
    println!("tug sim-nodes: {count} nodes registered");
    let mut report = tokio::time::interval(Duration::from_millis(args.report_interval_ms.max(10)));
    report.tick().await;
    let signal = crate::server::wait_for_signal();
    tokio::pin!(signal);
    loop {
        tokio::select! {
            result = &mut signal => {
                sim.shutdown().await;
                return result;
            }
            _ = report.tick() => {
                let stats = sim.stats();
                println!(
                    "tug sim-nodes: {} nodes, {} pods ({} running), {} writes ({} failed), cpu {:.1} s, rss {:.1} MiB",
                    stats.nodes,
                    stats.pods,
                    stats.running,
                    stats.writes,
                    stats.write_errors,
                    stats.cpu_seconds,
                    stats.rss_bytes as f64 / (1024.0 * 1024.0),
                );
            }
        }
    }
}

fn config(args: &SimNodesArgs) -> anyhow::Result<tug_sim::Config> {
    if args.count == 0 {
        bail!("--count must be at least 1");
    }
    let mut labels = BTreeMap::new();
    for label in &args.labels {
        let Some((key, value)) = label.split_once('=') else {
            bail!("--labels {label:?}: expected key=value");
        };
        labels.insert(key.to_string(), value.to_string());
    }
    let taints = args
        .taints
        .iter()
        .map(|t| taint(t))
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(tug_sim::Config {
        count: args.count,
        name_prefix: args.name_prefix.clone(),
        cpu: args.cpu.clone(),
        memory: args.memory.clone(),
        pods: args.pods,
        labels,
        zones: args.zones,
        taints,
        start_delay: Duration::from_millis(args.start_delay_ms),
        ready_delay: Duration::from_millis(args.ready_delay_ms),
        writers: args.writers.max(1),
        ..tug_sim::Config::default()
    })
}

/// `key=value:Effect` or `key:Effect`, as kubectl taint writes them.
fn taint(text: &str) -> anyhow::Result<Taint> {
    let Some((key_value, effect)) = text.rsplit_once(':') else {
        bail!("--taints {text:?}: expected key=value:Effect");
    };
    if !matches!(effect, "NoSchedule" | "PreferNoSchedule" | "NoExecute") {
        bail!("--taints {text:?}: the effect must be NoSchedule, PreferNoSchedule or NoExecute");
    }
    let (key, value) = match key_value.split_once('=') {
        Some((key, value)) => (key, Some(value.to_string())),
        None => (key_value, None),
    };
    if key.is_empty() {
        bail!("--taints {text:?}: the key is empty");
    }
    Ok(Taint {
        key: key.to_string(),
        value,
        effect: effect.to_string(),
        time_added: None,
    })
}

#[cfg(test)]
mod tests {
    use super::taint;

    #[test]
    fn taints_read_as_kubectl_writes_them() {
        let full = taint("dedicated=infra:NoSchedule").unwrap();
        assert_eq!(
            (
                full.key.as_str(),
                full.value.as_deref(),
                full.effect.as_str()
            ),
            ("dedicated", Some("infra"), "NoSchedule")
        );
        assert_eq!(taint("gpu:NoExecute").unwrap().value, None);
        assert!(taint("gpu=yes").is_err());
        assert!(taint("gpu=yes:Sometimes").is_err());
    }
}
