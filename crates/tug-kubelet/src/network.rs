//! The pod network: a CNI configuration for containerd's CRI plugin, from
//! the node's pod CIDR. The bridge plugin gives each pod a veth on the
//! node's bridge (the bridge holds the gateway, so the node reaches its
//! pods), host-local hands out addresses (its state under the agent's data
//! dir), portmap makes hostPorts work.

use std::path::PathBuf;

use anyhow::Context;
use serde_json::json;

use crate::Config;

pub fn conf_dir(config: &Config) -> PathBuf {
    config.agent_dir().join("cni/net.d")
}

/// The conflist for `cidr`.
pub fn conflist(config: &Config, cidr: &str) -> String {
    let ipam_dir = config.agent_dir().join("cni/ipam");
    let conflist = json!({
        "cniVersion": "0.4.0",
        "name": "tug-pod-network",
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
