//! Pod volumes, set up on the node as kubelet sets them up, under
//! `<agent>/pods/<uid>/volumes/<plugin>/<name>`, and the files every
//! container gets (the pod's /etc/hosts, its termination-message file).
//!
//! - emptyDir: a directory (medium Memory: a tmpfs, sizeLimit its size);
//! - configMap, secret, downwardAPI, projected: files written atomically
//!   (a timestamped directory, `..data` pointing at it, each entry a link
//!   through `..data`), written again when their sources change, so updates
//!   reach running pods; secrets (and projected volumes) on a tmpfs;
//! - hostPath, with its type checks; persistentVolumeClaim bound to a
//!   hostPath or local PersistentVolume.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use k8s_openapi::api::core::v1::{
    ConfigMap, KeyToPath, PersistentVolume, PersistentVolumeClaim, Pod, Secret, Volume,
};
use kube::Api;
use kube::Client;

use crate::Config;

/// A file to write: its content and mode.
pub type Files = BTreeMap<String, (Vec<u8>, u32)>;

/// Where a pod keeps its node-side state.
pub fn pod_dir(config: &Config, uid: &str) -> PathBuf {
    config.agent_dir().join("pods").join(uid)
}

/// A volume ready to mount: its host path and whether it is read-only by
/// nature (kubelet mounts configMap, secret, downwardAPI and projected
/// volumes read-only).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ready {
    pub path: PathBuf,
    pub read_only: bool,
}

/// Why a volume could not be set up: kubelet's FailedMount message.
#[derive(Debug)]
pub struct MountError {
    pub volume: String,
    pub message: String,
}

impl std::fmt::Display for MountError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "MountVolume.SetUp failed for volume {:?} : {}",
            self.volume, self.message
        )
    }
}

/// Sets up (or refreshes) every volume of `pod`.
pub async fn prepare(
    client: &Client,
    config: &Config,
    pod: &Pod,
) -> Result<BTreeMap<String, Ready>, MountError> {
    let uid = pod.metadata.uid.as_deref().unwrap_or_default();
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let dir = pod_dir(config, uid).join("volumes");
    let mut ready = BTreeMap::new();
    for volume in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
        let fail = |message: String| MountError {
            volume: volume.name.clone(),
            message,
        };
        let prepared = setup(client, config, pod, namespace, &dir, volume)
            .await
            .map_err(fail)?;
        ready.insert(volume.name.clone(), prepared);
    }
    Ok(ready)
}

async fn setup(
    client: &Client,
    config: &Config,
    pod: &Pod,
    namespace: &str,
    dir: &Path,
    volume: &Volume,
) -> Result<Ready, String> {
    let place = |plugin: &str| dir.join(plugin).join(&volume.name);
    if let Some(empty) = &volume.empty_dir {
        let path = place("kubernetes.io~empty-dir");
        create_dir(&path)?;
        if empty.medium.as_deref() == Some("Memory") {
            let size = empty
                .size_limit
                .as_ref()
                .and_then(|q| tug_api::quantity::value(&q.0));
            tmpfs(&path, size)?;
        }
        return Ok(Ready {
            path,
            read_only: false,
        });
    }
    if let Some(host) = &volume.host_path {
        let path = PathBuf::from(&host.path);
        check_host_path(&path, host.type_.as_deref().unwrap_or(""))?;
        return Ok(Ready {
            path,
            read_only: false,
        });
    }
    if let Some(claim) = &volume.persistent_volume_claim {
        let path = claim_path(client, namespace, &claim.claim_name).await?;
        return Ok(Ready {
            path,
            read_only: claim.read_only.unwrap_or(false),
        });
    }
    let (plugin, files, on_tmpfs) = if let Some(source) = &volume.config_map {
        let mode = source.default_mode.unwrap_or(0o644) as u32;
        let optional = source.optional.unwrap_or(false);
        let files = source_files(
            client,
            Source::ConfigMap,
            namespace,
            &source.name,
            source.items.as_deref(),
            mode,
            optional,
        )
        .await?;
        ("kubernetes.io~configmap", files, false)
    } else if let Some(source) = &volume.secret {
        let mode = source.default_mode.unwrap_or(0o644) as u32;
        let name = source.secret_name.clone().unwrap_or_default();
        let optional = source.optional.unwrap_or(false);
        let files = source_files(
            client,
            Source::Secret,
            namespace,
            &name,
            source.items.as_deref(),
            mode,
            optional,
        )
        .await?;
        ("kubernetes.io~secret", files, true)
    } else if let Some(source) = &volume.downward_api {
        let mode = source.default_mode.unwrap_or(0o644) as u32;
        let mut files = Files::new();
        for item in source.items.iter().flatten() {
            let value = downward_value(
                config,
                pod,
                item.field_ref.as_ref().map(|f| f.field_path.as_str()),
                item.resource_field_ref.as_ref(),
            )?;
            files.insert(
                item.path.clone(),
                (value.into_bytes(), item.mode.map_or(mode, |m| m as u32)),
            );
        }
        ("kubernetes.io~downward-api", files, false)
    } else if let Some(source) = &volume.projected {
        let mode = source.default_mode.unwrap_or(0o644) as u32;
        let mut files = Files::new();
        for projection in source.sources.iter().flatten() {
            if let Some(cm) = &projection.config_map {
                files.extend(
                    source_files(
                        client,
                        Source::ConfigMap,
                        namespace,
                        &cm.name,
                        cm.items.as_deref(),
                        mode,
                        cm.optional.unwrap_or(false),
                    )
                    .await?,
                );
            }
            if let Some(secret) = &projection.secret {
                files.extend(
                    source_files(
                        client,
                        Source::Secret,
                        namespace,
                        &secret.name,
                        secret.items.as_deref(),
                        mode,
                        secret.optional.unwrap_or(false),
                    )
                    .await?,
                );
            }
            if let Some(downward) = &projection.downward_api {
                for item in downward.items.iter().flatten() {
                    let value = downward_value(
                        config,
                        pod,
                        item.field_ref.as_ref().map(|f| f.field_path.as_str()),
                        item.resource_field_ref.as_ref(),
                    )?;
                    files.insert(
                        item.path.clone(),
                        (value.into_bytes(), item.mode.map_or(mode, |m| m as u32)),
                    );
                }
            }
            if let Some(token) = &projection.service_account_token {
                let account = pod
                    .spec
                    .as_ref()
                    .and_then(|s| s.service_account_name.clone())
                    .unwrap_or_else(|| "default".into());
                let jwt = service_account_token(
                    client,
                    namespace,
                    &account,
                    pod,
                    token.audience.as_deref(),
                    token.expiration_seconds.unwrap_or(3607),
                )
                .await?;
                files.insert(token.path.clone(), (jwt.into_bytes(), mode));
            }
        }
        ("kubernetes.io~projected", files, true)
    } else {
        return Err("this kind of volume is not supported by tug's node agent yet".into());
    };
    let path = place(plugin);
    create_dir(&path)?;
    if on_tmpfs {
        tmpfs(&path, None)?;
    }
    write_atomic(&path, &files)?;
    Ok(Ready {
        path,
        read_only: true,
    })
}

fn create_dir(path: &Path) -> Result<(), String> {
    std::fs::create_dir_all(path).map_err(|e| format!("creating {}: {e}", path.display()))
}

fn is_mount_point(path: &Path) -> bool {
    let path = path.display().to_string();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .any(|line| line.split(' ').nth(4) == Some(path.as_str()))
}

/// Mounts a tmpfs on `path` unless one is there.
fn tmpfs(path: &Path, size: Option<i128>) -> Result<(), String> {
    if is_mount_point(path) {
        return Ok(());
    }
    let options = match size {
        Some(bytes) if bytes > 0 => format!("size={bytes}"),
        _ => "mode=0755".to_string(),
    };
    let options = std::ffi::CString::new(options).map_err(|e| e.to_string())?;
    rustix::mount::mount(
        "tmpfs",
        path,
        "tmpfs",
        rustix::mount::MountFlags::NOSUID | rustix::mount::MountFlags::NODEV,
        options.as_c_str(),
    )
    .map_err(|e| format!("mounting a tmpfs on {}: {e}", path.display()))
}

/// Unmounts every mount under `dir` (deepest first), then removes it.
pub fn remove_dir(dir: &Path) -> std::io::Result<()> {
    let prefix = format!("{}/", dir.display());
    let mut mounts: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|line| line.split(' ').nth(4).map(str::to_string))
        .filter(|point| point.starts_with(&prefix))
        .collect();
    mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
    for point in mounts {
        rustix::mount::unmount(point.as_str(), rustix::mount::UnmountFlags::DETACH)?;
    }
    match std::fs::remove_dir_all(dir) {
        Err(err) if err.kind() != std::io::ErrorKind::NotFound => Err(err),
        _ => Ok(()),
    }
}

/// A hostPath's type check, as kubelet's.
pub fn check_host_path(path: &Path, kind: &str) -> Result<(), String> {
    use std::os::unix::fs::FileTypeExt;
    let shown = path.display();
    let meta = std::fs::metadata(path);
    let is =
        |check: fn(&std::fs::FileType) -> bool| meta.as_ref().is_ok_and(|m| check(&m.file_type()));
    match kind {
        "" => Ok(()),
        "DirectoryOrCreate" if meta.is_err() => {
            std::fs::create_dir_all(path).map_err(|e| format!("creating {shown}: {e}"))
        }
        "DirectoryOrCreate" | "Directory" if is(|t| t.is_dir()) => Ok(()),
        "DirectoryOrCreate" | "Directory" => Err(format!(
            "hostPath type check failed: {shown} is not a directory"
        )),
        "FileOrCreate" if meta.is_err() => {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)
                    .map_err(|e| format!("creating {}: {e}", parent.display()))?;
            }
            std::fs::File::create(path)
                .map(|_| ())
                .map_err(|e| format!("creating {shown}: {e}"))
        }
        "FileOrCreate" | "File" if is(|t| t.is_file()) => Ok(()),
        "FileOrCreate" | "File" => {
            Err(format!("hostPath type check failed: {shown} is not a file"))
        }
        "Socket" if is(|t| t.is_socket()) => Ok(()),
        "Socket" => Err(format!(
            "hostPath type check failed: {shown} is not a socket file"
        )),
        "CharDevice" if is(|t| t.is_char_device()) => Ok(()),
        "CharDevice" => Err(format!(
            "hostPath type check failed: {shown} is not a character device"
        )),
        "BlockDevice" if is(|t| t.is_block_device()) => Ok(()),
        "BlockDevice" => Err(format!(
            "hostPath type check failed: {shown} is not a block device"
        )),
        other => Err(format!("unknown hostPath type {other:?}")),
    }
}

/// The files of `data` (keys, or `items` only), each with its mode.
pub fn project(
    data: &BTreeMap<String, Vec<u8>>,
    items: Option<&[KeyToPath]>,
    mode: u32,
    what: &str,
) -> Result<Files, String> {
    let mut files = Files::new();
    match items {
        None => {
            for (key, value) in data {
                files.insert(key.clone(), (value.clone(), mode));
            }
        }
        Some(items) => {
            for item in items {
                let value = data
                    .get(&item.key)
                    .ok_or_else(|| format!("{what} has no key {:?}", item.key))?;
                files.insert(
                    item.path.clone(),
                    (value.clone(), item.mode.map_or(mode, |m| m as u32)),
                );
            }
        }
    }
    Ok(files)
}

/// Where a volume or an environment variable takes its data from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    ConfigMap,
    Secret,
}

/// A ConfigMap's (data and binaryData) or a Secret's data; empty when it
/// is missing and `optional`, else upstream's "not found" message.
pub async fn source_data(
    client: &Client,
    source: Source,
    namespace: &str,
    name: &str,
    optional: bool,
) -> Result<BTreeMap<String, Vec<u8>>, String> {
    let (found, kind) = match source {
        Source::ConfigMap => {
            let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
            let map = api.get_opt(name).await.map_err(|e| e.to_string())?;
            let data = map.map(|map| {
                let mut data: BTreeMap<String, Vec<u8>> = map
                    .data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, v.into_bytes()))
                    .collect();
                for (key, value) in map.binary_data.unwrap_or_default() {
                    data.insert(key, value.0);
                }
                data
            });
            (data, "configmap")
        }
        Source::Secret => {
            let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
            let secret = api.get_opt(name).await.map_err(|e| e.to_string())?;
            let data = secret.map(|secret| {
                secret
                    .data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, v.0))
                    .collect()
            });
            (data, "secret")
        }
    };
    match found {
        Some(data) => Ok(data),
        None if optional => Ok(BTreeMap::new()),
        None => Err(format!("{kind} {name:?} not found")),
    }
}

/// The files a configMap or secret volume (or projection) holds.
async fn source_files(
    client: &Client,
    source: Source,
    namespace: &str,
    name: &str,
    items: Option<&[KeyToPath]>,
    mode: u32,
    optional: bool,
) -> Result<Files, String> {
    let data = source_data(client, source, namespace, name, optional).await?;
    if data.is_empty() && optional {
        return Ok(Files::new());
    }
    let what = match source {
        Source::ConfigMap => format!("configmap {name:?}"),
        Source::Secret => format!("secret {name:?}"),
    };
    project(&data, items, mode, &what)
}

/// A downward API value: a fieldRef's, or a resourceFieldRef's.
fn downward_value(
    config: &Config,
    pod: &Pod,
    field: Option<&str>,
    resource: Option<&k8s_openapi::api::core::v1::ResourceFieldSelector>,
) -> Result<String, String> {
    if let Some(path) = field {
        return match path {
            "metadata.labels" | "metadata.annotations" => {
                let map = if path == "metadata.labels" {
                    pod.metadata.labels.clone()
                } else {
                    pod.metadata.annotations.clone()
                };
                // One `key="value"` line per entry, sorted, and no newline
                // after the last, as kubelet writes them.
                Ok(map
                    .unwrap_or_default()
                    .iter()
                    .map(|(k, v)| format!("{k}={v:?}"))
                    .collect::<Vec<_>>()
                    .join("\n"))
            }
            _ => crate::worker::field_value(pod, config, None, path)
                .ok_or_else(|| format!("unsupported fieldPath {path:?}")),
        };
    }
    if let Some(resource) = resource {
        return crate::worker::resource_value(pod, resource);
    }
    Err("a downward API item needs fieldRef or resourceFieldRef".into())
}

async fn service_account_token(
    client: &Client,
    namespace: &str,
    account: &str,
    pod: &Pod,
    audience: Option<&str>,
    seconds: i64,
) -> Result<String, String> {
    let request = serde_json::json!({
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenRequest",
        "spec": {
            "audiences": audience.map(|a| vec![a]).unwrap_or_default(),
            "expirationSeconds": seconds,
            "boundObjectRef": {
                "apiVersion": "v1",
                "kind": "Pod",
                "name": pod.metadata.name,
                "uid": pod.metadata.uid,
            },
        },
    });
    let url = format!("/api/v1/namespaces/{namespace}/serviceaccounts/{account}/token");
    let body = serde_json::to_vec(&request).map_err(|e| e.to_string())?;
    let request = http::Request::post(url)
        .header("content-type", "application/json")
        .body(body)
        .map_err(|e| e.to_string())?;
    let answer: serde_json::Value = client.request(request).await.map_err(|e| e.to_string())?;
    answer["status"]["token"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| "the token request answered no token".into())
}

/// The host directory a claim's volume is: a hostPath or local
/// PersistentVolume bound to it.
async fn claim_path(client: &Client, namespace: &str, claim: &str) -> Result<PathBuf, String> {
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), namespace);
    let pvc = claims
        .get_opt(claim)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("persistentvolumeclaim {claim:?} not found"))?;
    // As kubelet: only a claim the binder has bound is mounted.
    let phase = pvc.status.and_then(|s| s.phase).unwrap_or_default();
    let volume = pvc.spec.and_then(|s| s.volume_name).unwrap_or_default();
    if phase != "Bound" || volume.is_empty() {
        return Err(format!(
            "error processing PVC {namespace}/{claim}: PVC is not bound"
        ));
    }
    let volumes: Api<PersistentVolume> = Api::all(client.clone());
    let pv = volumes
        .get_opt(&volume)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("persistentvolume {volume:?} not found"))?;
    let spec = pv.spec.unwrap_or_default();
    if let Some(host) = spec.host_path {
        let path = PathBuf::from(&host.path);
        check_host_path(&path, host.type_.as_deref().unwrap_or(""))?;
        return Ok(path);
    }
    if let Some(local) = spec.local {
        let path = PathBuf::from(local.path);
        if !path.exists() {
            return Err(format!("path {:?} does not exist", path.display()));
        }
        return Ok(path);
    }
    Err(format!(
        "persistentvolume {volume:?} is neither hostPath nor local, which tug's node agent mounts"
    ))
}

/// A relative path that stays inside its directory.
pub fn safe_relative(path: &str) -> bool {
    !path.is_empty()
        && Path::new(path)
            .components()
            .all(|c| matches!(c, Component::Normal(_)))
}

/// Writes `files` into `dir` as kubelet's atomic writer does, when they
/// differ from what is there: the new set in a fresh `..<time>`
/// directory, `..data` switched to it by a rename, each top-level entry a
/// link through `..data`. Readers see the old set or the new, never a mix.
pub fn write_atomic(dir: &Path, files: &Files) -> Result<bool, String> {
    use std::os::unix::fs::PermissionsExt;
    let err =
        |what: &str, path: &Path, e: std::io::Error| format!("{what} {}: {e}", path.display());
    for name in files.keys() {
        if !safe_relative(name) {
            return Err(format!(
                "invalid path {name:?}: must be relative and without '..'"
            ));
        }
    }
    let data_link = dir.join("..data");
    if let Ok(current) = std::fs::read_link(&data_link) {
        let current = dir.join(current);
        let same = files.iter().all(|(name, (content, mode))| {
            let path = current.join(name);
            std::fs::read(&path).is_ok_and(|c| c == *content)
                && std::fs::metadata(&path).is_ok_and(|m| m.permissions().mode() & 0o7777 == *mode)
        }) && count_files(&current) == files.len();
        if same {
            return Ok(false);
        }
    }
    let stamp = format!(
        "..{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    );
    let fresh = dir.join(&stamp);
    std::fs::create_dir_all(&fresh).map_err(|e| err("creating", &fresh, e))?;
    std::fs::set_permissions(&fresh, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| err("setting the mode of", &fresh, e))?;
    for (name, (content, mode)) in files {
        let path = fresh.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| err("creating", parent, e))?;
        }
        std::fs::write(&path, content).map_err(|e| err("writing", &path, e))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(*mode))
            .map_err(|e| err("setting the mode of", &path, e))?;
    }
    let previous = std::fs::read_link(&data_link).ok();
    let temporary = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&temporary);
    std::os::unix::fs::symlink(&stamp, &temporary).map_err(|e| err("linking", &temporary, e))?;
    std::fs::rename(&temporary, &data_link).map_err(|e| err("renaming", &data_link, e))?;
    let top: std::collections::BTreeSet<String> = files
        .keys()
        .filter_map(|name| name.split('/').next().map(str::to_string))
        .collect();
    for name in &top {
        let link = dir.join(name);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(Path::new("..data").join(name), &link)
                .map_err(|e| err("linking", &link, e))?;
        }
    }
    // Entries of the old set that the new one lacks, and the old set.
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            if !name.starts_with("..") && !top.contains(&name) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
    if let Some(previous) = previous {
        let _ = std::fs::remove_dir_all(dir.join(previous));
    }
    Ok(true)
}

fn count_files(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|entry| {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                count_files(&entry.path())
            } else {
                1
            }
        })
        .sum()
}

/// A Kubernetes-managed /etc/hosts for a pod, as kubelet writes it.
pub fn etc_hosts(pod: &Pod, ip: Option<&str>) -> String {
    let mut hosts = String::from(
        "# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n",
    );
    let spec = pod.spec.as_ref();
    if let Some(ip) = ip {
        let name = spec
            .and_then(|s| s.hostname.clone())
            .or_else(|| pod.metadata.name.clone())
            .unwrap_or_default();
        match spec.and_then(|s| s.subdomain.as_deref()) {
            Some(subdomain) => {
                let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
                hosts.push_str(&format!(
                    "{ip}\t{name}.{subdomain}.{namespace}.svc.cluster.local\t{name}\n"
                ));
            }
            None => hosts.push_str(&format!("{ip}\t{name}\n")),
        }
    }
    for alias in spec
        .and_then(|s| s.host_aliases.as_ref())
        .into_iter()
        .flatten()
    {
        hosts.push_str(&format!(
            "\n# Entries added by HostAliases.\n{}\t{}\n",
            alias.ip,
            alias.hostnames.clone().unwrap_or_default().join("\t")
        ));
    }
    hosts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_atomic_writer_switches_whole_sets_and_drops_what_went() {
        let dir = tempfile::tempdir().unwrap();
        let files = |pairs: &[(&str, &str)]| -> Files {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), (v.as_bytes().to_vec(), 0o644)))
                .collect()
        };
        assert!(write_atomic(dir.path(), &files(&[("a", "1"), ("sub/b", "2")])).unwrap());
        assert_eq!(std::fs::read_to_string(dir.path().join("a")).unwrap(), "1");
        assert_eq!(
            std::fs::read_to_string(dir.path().join("sub/b")).unwrap(),
            "2"
        );
        assert_eq!(
            std::fs::read_link(dir.path().join("a")).unwrap(),
            Path::new("..data/a")
        );
        // The same set again writes nothing.
        assert!(!write_atomic(dir.path(), &files(&[("a", "1"), ("sub/b", "2")])).unwrap());
        assert!(write_atomic(dir.path(), &files(&[("a", "changed")])).unwrap());
        assert_eq!(
            std::fs::read_to_string(dir.path().join("a")).unwrap(),
            "changed"
        );
        assert!(std::fs::symlink_metadata(dir.path().join("sub")).is_err());
        let stamped = std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .filter(|e| {
                let name = e.file_name().to_string_lossy().to_string();
                name.starts_with("..") && name != "..data"
            })
            .count();
        assert_eq!(stamped, 1, "the old set is removed");
        assert!(write_atomic(dir.path(), &files(&[("../escape", "x")])).is_err());
    }

    #[test]
    fn items_pick_keys_to_paths_with_their_modes() {
        let data = BTreeMap::from([
            ("k1".to_string(), b"v1".to_vec()),
            ("k2".to_string(), b"v2".to_vec()),
        ]);
        let all = project(&data, None, 0o644, "configmap \"c\"").unwrap();
        assert_eq!(all.len(), 2);
        let items: Vec<KeyToPath> = serde_json::from_value(serde_json::json!([
            {"key": "k2", "path": "dir/two", "mode": 0o600}
        ]))
        .unwrap();
        let some = project(&data, Some(&items), 0o644, "configmap \"c\"").unwrap();
        assert_eq!(some["dir/two"], (b"v2".to_vec(), 0o600));
        let missing: Vec<KeyToPath> =
            serde_json::from_value(serde_json::json!([{"key": "k3", "path": "x"}])).unwrap();
        assert_eq!(
            project(&data, Some(&missing), 0o644, "configmap \"c\"").unwrap_err(),
            "configmap \"c\" has no key \"k3\""
        );
    }

    #[test]
    fn host_paths_are_checked_by_type() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("made/here");
        check_host_path(&sub, "DirectoryOrCreate").unwrap();
        assert!(sub.is_dir());
        check_host_path(&sub, "Directory").unwrap();
        let file = dir.path().join("f");
        check_host_path(&file, "FileOrCreate").unwrap();
        assert!(file.is_file());
        assert!(
            check_host_path(&file, "Directory")
                .unwrap_err()
                .contains("is not a directory")
        );
        assert!(
            check_host_path(&sub, "Socket")
                .unwrap_err()
                .contains("is not a socket")
        );
        assert!(check_host_path(&dir.path().join("none"), "File").is_err());
    }
}
