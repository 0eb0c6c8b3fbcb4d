//! Image registries: the agent's `registries.yaml` (k3s's format: mirrors
//! and per-registry auth and TLS, for containerd's CRI plugin) and the
//! credentials of a pod's imagePullSecrets, matched to an image as
//! kubelet's keyring matches them.
//!
//! ```yaml
//! mirrors:
//!   docker.io:
//!     endpoint: ["http://127.0.0.1:5000"]
//! configs:
//!   "127.0.0.1:5000":
//!     auth: {username: u, password: p}
//!     tls: {insecure_skip_verify: true}
//! ```

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context;
use base64::Engine as _;
use serde::Deserialize;
use serde_json::Value;

#[derive(Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Registries {
    #[serde(default)]
    pub mirrors: BTreeMap<String, Mirror>,
    #[serde(default)]
    pub configs: BTreeMap<String, RegistryConfig>,
}

#[derive(Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Mirror {
    #[serde(default)]
    pub endpoint: Vec<String>,
}

#[derive(Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RegistryConfig {
    pub auth: Option<Auth>,
    pub tls: Option<Tls>,
}

#[derive(Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Auth {
    pub username: Option<String>,
    pub password: Option<String>,
    pub auth: Option<String>,
    pub identitytoken: Option<String>,
}

#[derive(Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Tls {
    pub cert_file: Option<String>,
    pub key_file: Option<String>,
    pub ca_file: Option<String>,
    #[serde(default)]
    pub insecure_skip_verify: bool,
}

impl Registries {
    /// The file at `path`, or nothing configured when there is none.
    pub fn read(path: &Path) -> anyhow::Result<Registries> {
        match std::fs::read_to_string(path) {
            Ok(text) if text.trim().is_empty() => Ok(Registries::default()),
            Ok(text) => {
                serde_saphyr::from_str(&text).with_context(|| format!("reading {}", path.display()))
            }
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(Registries::default()),
            Err(err) => Err(err).with_context(|| format!("reading {}", path.display())),
        }
    }

    /// containerd's CRI registry settings for these registries.
    pub fn containerd_toml(&self) -> String {
        const SECTION: &str = r#"[plugins."io.containerd.grpc.v1.cri".registry"#;
        let quote = |s: &str| serde_json::to_string(s).unwrap_or_default();
        let mut out = String::new();
        for (host, mirror) in &self.mirrors {
            let endpoints: Vec<String> = mirror.endpoint.iter().map(|e| quote(e)).collect();
            out.push_str(&format!(
                "{SECTION}.mirrors.{}]\n  endpoint = [{}]\n",
                quote(host),
                endpoints.join(", ")
            ));
        }
        for (host, config) in &self.configs {
            if let Some(auth) = &config.auth {
                out.push_str(&format!("{SECTION}.configs.{}.auth]\n", quote(host)));
                for (key, value) in [
                    ("username", &auth.username),
                    ("password", &auth.password),
                    ("auth", &auth.auth),
                    ("identitytoken", &auth.identitytoken),
                ] {
                    if let Some(value) = value {
                        out.push_str(&format!("  {key} = {}\n", quote(value)));
                    }
                }
            }
            if let Some(tls) = &config.tls {
                out.push_str(&format!("{SECTION}.configs.{}.tls]\n", quote(host)));
                out.push_str(&format!(
                    "  insecure_skip_verify = {}\n",
                    tls.insecure_skip_verify
                ));
                for (key, value) in [
                    ("cert_file", &tls.cert_file),
                    ("key_file", &tls.key_file),
                    ("ca_file", &tls.ca_file),
                ] {
                    if let Some(value) = value {
                        out.push_str(&format!("  {key} = {}\n", quote(value)));
                    }
                }
            }
        }
        out
    }
}

/// A registry login from a pull secret.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Credential {
    pub username: String,
    pub password: String,
}

/// The registry host and repository path of an image reference, as
/// Docker names them (`busybox` is `docker.io` `library/busybox`).
pub fn registry_of(image: &str) -> (String, String) {
    let name = image.split('@').next().unwrap_or(image);
    // A tag follows the last colon after the last slash.
    let name = match (name.rfind(':'), name.rfind('/')) {
        (Some(colon), Some(slash)) if colon > slash => &name[..colon],
        (Some(colon), None) => &name[..colon],
        _ => name,
    };
    match name.split_once('/') {
        Some((first, rest))
            if first.contains('.') || first.contains(':') || first == "localhost" =>
        {
            (normal_host(first), rest.to_string())
        }
        Some(_) => ("docker.io".into(), name.to_string()),
        None => ("docker.io".into(), format!("library/{name}")),
    }
}

fn normal_host(host: &str) -> String {
    match host {
        "index.docker.io" | "registry-1.docker.io" => "docker.io".into(),
        host => host.to_string(),
    }
}

/// The logins of a pull secret's data (`.dockerconfigjson`, or the older
/// `.dockercfg`), by the registry key they name.
pub fn secret_logins(data: &BTreeMap<String, Vec<u8>>) -> Vec<(String, Credential)> {
    let parsed = |key: &str| -> Option<Value> { serde_json::from_slice(data.get(key)?).ok() };
    let auths = match parsed(".dockerconfigjson") {
        Some(config) => config.get("auths").cloned().unwrap_or_default(),
        None => parsed(".dockercfg").unwrap_or_default(),
    };
    let Some(auths) = auths.as_object() else {
        return Vec::new();
    };
    auths
        .iter()
        .filter_map(|(key, entry)| {
            let text = |field: &str| entry[field].as_str().unwrap_or_default().to_string();
            let (mut username, mut password) = (text("username"), text("password"));
            if username.is_empty()
                && let Ok(decoded) =
                    base64::engine::general_purpose::STANDARD.decode(text("auth").trim())
                && let Some((user, pass)) = String::from_utf8_lossy(&decoded).split_once(':')
            {
                username = user.to_string();
                password = pass.to_string();
            }
            (!username.is_empty()).then(|| (key.clone(), Credential { username, password }))
        })
        .collect()
}

/// The logins whose key matches `image` (same host; the key's path, if
/// any, a prefix of the repository's), the most specific first.
pub fn matching(image: &str, logins: &[(String, Credential)]) -> Vec<Credential> {
    let (host, path) = registry_of(image);
    let mut found: Vec<(usize, Credential)> = logins
        .iter()
        .filter_map(|(key, credential)| {
            let key = key
                .trim_start_matches("https://")
                .trim_start_matches("http://")
                .trim_end_matches('/');
            let (key_host, key_path) = key.split_once('/').unwrap_or((key, ""));
            // Docker Hub's old keys carry an API version, not a path.
            let key_path = match key_path {
                "v1" | "v2" => "",
                path => path,
            };
            let path_matches = key_path.is_empty()
                || path == key_path
                || path.starts_with(&format!("{key_path}/"));
            (normal_host(key_host) == host && path_matches).then(|| (key.len(), credential.clone()))
        })
        .collect();
    found.sort_by_key(|(length, _)| std::cmp::Reverse(*length));
    found.into_iter().map(|(_, c)| c).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_references_name_their_registry_as_docker_does() {
        for (image, host, path) in [
            ("busybox", "docker.io", "library/busybox"),
            ("busybox:1.36", "docker.io", "library/busybox"),
            ("team/app:v1", "docker.io", "team/app"),
            ("127.0.0.1:5000/busybox:1", "127.0.0.1:5000", "busybox"),
            ("localhost/a/b@sha256:abc", "localhost", "a/b"),
            ("registry.example/x/y", "registry.example", "x/y"),
            (
                "index.docker.io/library/nginx",
                "docker.io",
                "library/nginx",
            ),
        ] {
            assert_eq!(registry_of(image), (host.into(), path.into()), "{image}");
        }
    }

    #[test]
    fn pull_secret_logins_match_by_host_and_path() {
        let config = serde_json::json!({"auths": {
            "https://index.docker.io/v1/": {"auth": base64::engine::general_purpose::STANDARD.encode("hub:pw")},
            "127.0.0.1:5000": {"username": "u", "password": "p"},
            "127.0.0.1:5000/team": {"username": "t", "password": "q"},
        }});
        let data = BTreeMap::from([(
            ".dockerconfigjson".to_string(),
            serde_json::to_vec(&config).unwrap(),
        )]);
        let logins = secret_logins(&data);
        assert_eq!(logins.len(), 3);
        let login = |u: &str, p: &str| Credential {
            username: u.into(),
            password: p.into(),
        };
        assert_eq!(matching("busybox", &logins), [login("hub", "pw")]);
        assert_eq!(
            matching("127.0.0.1:5000/team/app:1", &logins),
            [login("t", "q"), login("u", "p")]
        );
        assert_eq!(
            matching("127.0.0.1:5000/teamx:1", &logins),
            [login("u", "p")]
        );
        assert!(matching("quay.io/a/b", &logins).is_empty());
        let old = BTreeMap::from([(
            ".dockercfg".to_string(),
            br#"{"quay.io": {"username": "q", "password": "r"}}"#.to_vec(),
        )]);
        assert_eq!(
            matching("quay.io/a/b", &secret_logins(&old)),
            [login("q", "r")]
        );
    }

    #[test]
    fn registries_yaml_becomes_containerds_registry_settings() {
        let registries: Registries = serde_saphyr::from_str(
            r#"
mirrors:
  docker.io:
    endpoint: ["http://127.0.0.1:5000"]
configs:
  "127.0.0.1:5000":
    auth: {username: u, password: "p\"q"}
    tls: {insecure_skip_verify: true}
"#,
        )
        .unwrap();
        assert_eq!(
            registries.containerd_toml(),
            r#"[plugins."io.containerd.grpc.v1.cri".registry.mirrors."docker.io"]
  endpoint = ["http://127.0.0.1:5000"]
[plugins."io.containerd.grpc.v1.cri".registry.configs."127.0.0.1:5000".auth]
  username = "u"
  password = "p\"q"
[plugins."io.containerd.grpc.v1.cri".registry.configs."127.0.0.1:5000".tls]
  insecure_skip_verify = true
"#
        );
        let wrong: Result<Registries, _> =
            serde_saphyr::from_str("mirrors:\n  x:\n    endpoints: []\n");
        assert!(wrong.is_err());
    }
}
