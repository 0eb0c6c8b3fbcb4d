//! The pod network: a CNI configuration for containerd's CRI plugin, from
//! the node's pod CIDR. The bridge plugin gives each pod a veth on the
//! node's bridge (the bridge holds the gateway, so the node reaches its
//! pods), host-local hands out addresses (its state under the agent's data
//! dir), portmap makes hostPorts work.

use std::path::PathBuf;

use anyhow::Context;
use serde_json::json;

use crate::Config;

/// The CNI network's name, in the comments of its iptables rules.
pub const NETWORK: &str = "tug-pod-network";

pub fn conf_dir(config: &Config) -> PathBuf {
    config.agent_dir().join("cni/net.d")
}

/// The conflist for `cidr`.
pub fn conflist(config: &Config, cidr: &str) -> String {
    let ipam_dir = config.agent_dir().join("cni/ipam");
    let conflist = json!({
        "cniVersion": "0.4.0",
        "name": NETWORK,
        "plugins": [
            {
                "type": "bridge",
                "bridge": config.cni_bridge,
                "isGateway": true,
                "ipMasq": true,
                "hairpinMode": true,
                "ipam": {
                    "type": "host-local",
                    "dataDir": ipam_dir,
                    "ranges": [[{"subnet": cidr}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": true}},
        ],
    });
    serde_json::to_string_pretty(&conflist).unwrap_or_default()
}

/// Writes the conflist for `cidr` if it is not there yet (atomically:
/// containerd watches the directory).
pub fn configure(config: &Config, cidr: &str) -> anyhow::Result<()> {
    let dir = conf_dir(config);
    let path = dir.join("10-tug.conflist");
    let wanted = conflist(config, cidr);
    if std::fs::read_to_string(&path).is_ok_and(|current| current == wanted) {
        return Ok(());
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let temporary = dir.join(".10-tug.conflist.tmp");
    std::fs::write(&temporary, &wanted)
        .and_then(|()| std::fs::rename(&temporary, &path))
        .with_context(|| format!("writing {}", path.display()))?;
    tracing::info!(cidr, path = %path.display(), "pod network configured");
    Ok(())
}

/// The bridge plugin's masquerade chains of this network that nothing
/// jumps to any more (a teardown can leave one behind), in the lines of
/// `iptables -t nat -S`.
pub fn orphan_chains(rules: &str) -> Vec<String> {
    let marker = format!("name: \\\"{NETWORK}\\\"");
    let ours: std::collections::BTreeSet<&str> = rules
        .lines()
        .filter(|line| line.contains(&marker))
        .filter_map(|line| line.strip_prefix("-A "))
        .filter_map(|rest| rest.split_whitespace().next())
        .filter(|chain| chain.starts_with("CNI-") && !chain.starts_with("CNI-HOSTPORT"))
        .collect();
    let targets: std::collections::BTreeSet<&str> = rules
        .lines()
        .filter_map(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            let at = words.iter().position(|w| *w == "-j")?;
            words.get(at + 1).copied()
        })
        .collect();
    ours.into_iter()
        .filter(|chain| !targets.contains(chain))
        .map(str::to_string)
        .collect()
}

/// How long a chain must stay an orphan to be removed.
const SWEEP_SETTLE: std::time::Duration = std::time::Duration::from_secs(5);

fn nat_rules() -> String {
    std::process::Command::new("iptables")
        .args(["-w", "-t", "nat", "-S"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// Sweeps [`orphan_chains`] in the background: one sweep at a time, and
/// the requests made while one runs make one more sweep after it, not one
/// each (a node deleting 30 pods at once would otherwise hold 30 threads).
pub fn request_sweep() {
    // (a sweep is running, another is asked for)
    static SWEEP: std::sync::Mutex<(bool, bool)> = std::sync::Mutex::new((false, false));
    let state = || SWEEP.lock().unwrap_or_else(|e| e.into_inner());
    {
        let mut sweep = state();
        if sweep.0 {
            sweep.1 = true;
            return;
        }
        *sweep = (true, false);
    }
    tokio::task::spawn_blocking(move || {
        loop {
            sweep_orphan_chains(SWEEP_SETTLE);
            let mut sweep = state();
            if !sweep.1 {
                sweep.0 = false;
                return;
            }
            sweep.1 = false;
        }
    });
}

/// Removes [`orphan_chains`] that are still orphans after `settle` (a pod
/// being set up has its chain a moment before the jump to it); failures
/// are only logged. Blocks.
pub fn sweep_orphan_chains(settle: std::time::Duration) {
    let first = orphan_chains(&nat_rules());
    if first.is_empty() {
        return;
    }
    std::thread::sleep(settle);
    for chain in orphan_chains(&nat_rules()) {
        if !first.contains(&chain) {
            continue;
        }
        for action in ["-F", "-X"] {
            let done = std::process::Command::new("iptables")
                .args(["-w", "-t", "nat", action, &chain])
                .status();
            if !done.is_ok_and(|s| s.success()) {
                tracing::debug!(%chain, "removing a stale CNI chain failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_chains_of_this_network_that_nothing_jumps_to_are_orphans() {
        let rules = r#"-P POSTROUTING ACCEPT
-N CNI-HOSTPORT-MASQ
-N CNI-aaa
-N CNI-bbb
-N CNI-ccc
-A POSTROUTING -m comment --comment "CNI portfwd requiring masquerade" -j CNI-HOSTPORT-MASQ
-A POSTROUTING -s 10.244.0.2/32 -m comment --comment "name: \"tug-pod-network\" id: \"1\"" -j CNI-aaa
-A CNI-aaa -d 10.244.0.0/24 -m comment --comment "name: \"tug-pod-network\" id: \"1\"" -j ACCEPT
-A CNI-bbb -d 10.244.0.0/24 -m comment --comment "name: \"tug-pod-network\" id: \"2\"" -j ACCEPT
-A CNI-bbb ! -d 224.0.0.0/4 -m comment --comment "name: \"tug-pod-network\" id: \"2\"" -j MASQUERADE
-A CNI-ccc -d 10.88.0.0/16 -m comment --comment "name: \"other\" id: \"3\"" -j ACCEPT
"#;
        assert_eq!(orphan_chains(rules), ["CNI-bbb"]);
    }
}
