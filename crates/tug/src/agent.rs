//! `tug agent`: a node agent on another machine. It joins the server
//! with the node-join token (the server's CA checked against the token's
//! hash, then this node's certificates issued), then runs as the
//! server's own agent does, until SIGINT or SIGTERM (pods keep running).

use anyhow::{Context, bail};
use tokio_util::sync::CancellationToken;

use crate::cli::AgentArgs;
use crate::server::{agent_config, client_from, run_agent, user_agent, wait_for_signal};

pub(crate) async fn run(args: AgentArgs) -> anyhow::Result<()> {
    if !args.data_dir.is_absolute() {
        bail!(
            "--data-dir must be an absolute path, not {}",
            args.data_dir.display()
        );
    }
    let mut config = agent_config(&args.node, &args.data_dir, false)?;
    let joined = tug_kubelet::join::join(
        &args.server,
        &args.token,
        &config.node_name,
        &[config.node_ip],
        &args.data_dir,
    )
    .await
    .context("joining the cluster")?;
    config.tls = Some(joined.tls);
    let client = client_from(&joined.kubeconfig, None, Some(&user_agent("kubelet")))
        .await
        .context("the agent's API client")?;
    println!(
        "tug agent: node {} joined {}",
        config.node_name, args.server
    );
    let shutdown = CancellationToken::new();
    let agent = tokio::spawn(run_agent(client, config, shutdown.clone()));
    let signal = wait_for_signal().await;
    shutdown.cancel();
    let _ = agent.await;
    signal
}
