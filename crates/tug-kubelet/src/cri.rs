//! The CRI v1 client: containerd's runtime and image services over its
//! unix socket, with the calls the agent makes and their label filters.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use hyper_util::rt::TokioIo;
use k8s_cri::v1 as cri;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use tonic::transport::{Channel, Endpoint, Uri};

/// Labels every sandbox and container of a pod carries, as kubelet's.
pub const POD_NAME: &str = "io.kubernetes.pod.name";
pub const POD_NAMESPACE: &str = "io.kubernetes.pod.namespace";
pub const POD_UID: &str = "io.kubernetes.pod.uid";
pub const CONTAINER_NAME: &str = "io.kubernetes.container.name";

/// A container's use of the node, in bytes: its writable layer on disk
/// and its memory working set.
#[derive(Clone, Copy, Debug, Default)]
pub struct ContainerUse {
    pub writable_layer: u64,
    pub working_set: u64,
}

/// How long one CRI call may take, but for pulls and stops.
const CALL_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Clone)]
pub struct Runtime {
    pub runtime: RuntimeServiceClient<Channel>,
    pub images: ImageServiceClient<Channel>,
    pub socket: PathBuf,
    channel: Channel,
}

/// containerd's events API (containerd.services.events.v1), as much of
/// it as the agent reads: which topic, in which namespace.
#[derive(Clone, PartialEq, prost::Message)]
struct SubscribeRequest {
    #[prost(string, repeated, tag = "1")]
    filters: Vec<String>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Envelope {
    #[prost(string, tag = "2")]
    namespace: String,
    #[prost(string, tag = "3")]
    topic: String,
}

impl Runtime {
    /// A client of the CRI server at `socket` (connects lazily, again
    /// after containerd restarts).
    pub fn connect(socket: &Path) -> anyhow::Result<Runtime> {
        let path = socket.to_path_buf();
        let channel = Endpoint::try_from("http://[::]:0")?
            .timeout(CALL_TIMEOUT)
            .connect_with_connector_lazy(tower::service_fn(move |_: Uri| {
                let path = path.clone();
                async move {
                    Ok::<_, std::io::Error>(TokioIo::new(
                        tokio::net::UnixStream::connect(path).await?,
                    ))
                }
            }));
        Ok(Runtime {
            runtime: RuntimeServiceClient::new(channel.clone()),
            images: ImageServiceClient::new(channel.clone()),
            socket: socket.to_path_buf(),
            channel,
        })
    }

    /// Calls `changed` for every task event of CRI's containers (a
    /// process started, exited, was OOM-killed...), from containerd's
    /// events API on the same socket, until the stream ends or fails.
    /// CRI v1 of containerd 1.6 has no event stream of its own.
    pub async fn task_events(&self, mut changed: impl FnMut()) -> anyhow::Result<()> {
        let mut grpc = tonic::client::Grpc::new(self.channel.clone());
        grpc.ready().await.context("containerd events")?;
        let path = tonic::codegen::http::uri::PathAndQuery::from_static(
            "/containerd.services.events.v1.Events/Subscribe",
        );
        let request = tonic::Request::new(SubscribeRequest {
            filters: vec![r#"namespace==k8s.io,topic~="^/tasks/""#.to_string()],
        });
        let mut stream = grpc
            .server_streaming(
                request,
                path,
                tonic_prost::ProstCodec::<SubscribeRequest, Envelope>::default(),
            )
            .await
            .context("containerd events: Subscribe")?
            .into_inner();
        while let Some(envelope) = stream.message().await.context("containerd events")? {
            if envelope.namespace == "k8s.io" && envelope.topic.starts_with("/tasks/") {
                tracing::trace!(topic = %envelope.topic, "runtime event");
                changed();
            }
        }
        Ok(())
    }

    /// The runtime's name and version, e.g. `containerd://1.6.20`.
    pub async fn version(&self) -> anyhow::Result<String> {
        let version = self
            .runtime
            .clone()
            .version(cri::VersionRequest::default())
            .await
            .context("CRI Version")?
            .into_inner();
        Ok(format!(
            "{}://{}",
            version.runtime_name, version.runtime_version
        ))
    }

    /// The runtime's conditions (RuntimeReady, NetworkReady): `None` when
    /// all are true, or the first false one's reason and message.
    pub async fn not_ready(&self) -> anyhow::Result<Option<String>> {
        let status = self
            .runtime
            .clone()
            .status(cri::StatusRequest::default())
            .await
            .context("CRI Status")?
            .into_inner();
        let conditions = status.status.map(|s| s.conditions).unwrap_or_default();
        Ok(conditions.into_iter().find(|c| !c.status).map(|c| {
            format!(
                "container runtime {} not ready: {}=false reason:{} message:{}",
                if c.r#type == "NetworkReady" {
                    "network"
                } else {
                    "status"
                },
                c.r#type,
                c.reason,
                c.message
            )
        }))
    }

    /// The sandboxes of every pod, or of the pod with `uid`.
    pub async fn sandboxes(&self, uid: Option<&str>) -> anyhow::Result<Vec<cri::PodSandbox>> {
        let filter = uid.map(|uid| cri::PodSandboxFilter {
            label_selector: HashMap::from([(POD_UID.to_string(), uid.to_string())]),
            ..Default::default()
        });
        Ok(self
            .runtime
            .clone()
            .list_pod_sandbox(cri::ListPodSandboxRequest { filter })
            .await
            .context("CRI ListPodSandbox")?
            .into_inner()
            .items)
    }

    /// The containers of every pod, or of the pod with `uid`.
    pub async fn containers(&self, uid: Option<&str>) -> anyhow::Result<Vec<cri::Container>> {
        let filter = uid.map(|uid| cri::ContainerFilter {
            label_selector: HashMap::from([(POD_UID.to_string(), uid.to_string())]),
            ..Default::default()
        });
        Ok(self
            .runtime
            .clone()
            .list_containers(cri::ListContainersRequest { filter })
            .await
            .context("CRI ListContainers")?
            .into_inner()
            .containers)
    }

    /// What each container uses, by container ID, as the runtime last
    /// measured it.
    pub async fn container_use(&self) -> anyhow::Result<HashMap<String, ContainerUse>> {
        let stats = self
            .runtime
            .clone()
            .list_container_stats(cri::ListContainerStatsRequest { filter: None })
            .await
            .context("CRI ListContainerStats")?
            .into_inner()
            .stats;
        Ok(stats
            .into_iter()
            .filter_map(|s| {
                let layer = s.writable_layer.and_then(|w| w.used_bytes).map(|u| u.value);
                let memory = s.memory.and_then(|m| m.working_set_bytes).map(|u| u.value);
                Some((
                    s.attributes?.id,
                    ContainerUse {
                        writable_layer: layer.unwrap_or(0),
                        working_set: memory.unwrap_or(0),
                    },
                ))
            })
            .collect())
    }

    pub async fn container_status(&self, id: &str) -> anyhow::Result<Option<cri::ContainerStatus>> {
        match self
            .runtime
            .clone()
            .container_status(cri::ContainerStatusRequest {
                container_id: id.to_string(),
                verbose: false,
            })
            .await
        {
            Ok(response) => Ok(response.into_inner().status),
            Err(status) if status.code() == tonic::Code::NotFound => Ok(None),
            Err(status) => Err(status).context("CRI ContainerStatus"),
        }
    }

    pub async fn sandbox_status(&self, id: &str) -> anyhow::Result<Option<cri::PodSandboxStatus>> {
        match self
            .runtime
            .clone()
            .pod_sandbox_status(cri::PodSandboxStatusRequest {
                pod_sandbox_id: id.to_string(),
                verbose: false,
            })
            .await
        {
            Ok(response) => Ok(response.into_inner().status),
            Err(status) if status.code() == tonic::Code::NotFound => Ok(None),
            Err(status) => Err(status).context("CRI PodSandboxStatus"),
        }
    }

    pub async fn run_sandbox(&self, config: cri::PodSandboxConfig) -> anyhow::Result<String> {
        Ok(self
            .runtime
            .clone()
            .run_pod_sandbox(cri::RunPodSandboxRequest {
                config: Some(config),
                runtime_handler: String::new(),
            })
            .await
            .map_err(status_error)?
            .into_inner()
            .pod_sandbox_id)
    }

    pub async fn stop_sandbox(&self, id: &str) -> anyhow::Result<()> {
        self.runtime
            .clone()
            .stop_pod_sandbox(cri::StopPodSandboxRequest {
                pod_sandbox_id: id.to_string(),
            })
            .await
            .map_err(status_error)?;
        Ok(())
    }

    pub async fn remove_sandbox(&self, id: &str) -> anyhow::Result<()> {
        self.runtime
            .clone()
            .remove_pod_sandbox(cri::RemovePodSandboxRequest {
                pod_sandbox_id: id.to_string(),
            })
            .await
            .map_err(status_error)?;
        Ok(())
    }

    pub async fn create_container(
        &self,
        sandbox_id: &str,
        config: cri::ContainerConfig,
        sandbox: cri::PodSandboxConfig,
    ) -> anyhow::Result<String> {
        Ok(self
            .runtime
            .clone()
            .create_container(cri::CreateContainerRequest {
                pod_sandbox_id: sandbox_id.to_string(),
                config: Some(config),
                sandbox_config: Some(sandbox),
            })
            .await
            .map_err(status_error)?
            .into_inner()
            .container_id)
    }

    pub async fn start_container(&self, id: &str) -> anyhow::Result<()> {
        self.runtime
            .clone()
            .start_container(cri::StartContainerRequest {
                container_id: id.to_string(),
            })
            .await
            .map_err(status_error)?;
        Ok(())
    }

    /// SIGTERM (or the image's stop signal), SIGKILL after `grace_seconds`.
    pub async fn stop_container(&self, id: &str, grace_seconds: i64) -> anyhow::Result<()> {
        let mut request = tonic::Request::new(cri::StopContainerRequest {
            container_id: id.to_string(),
            timeout: grace_seconds,
        });
        request.set_timeout(Duration::from_secs(grace_seconds.max(0) as u64) + CALL_TIMEOUT);
        match self.runtime.clone().stop_container(request).await {
            Ok(_) => Ok(()),
            Err(status) if status.code() == tonic::Code::NotFound => Ok(()),
            Err(status) => Err(status_error(status)),
        }
    }

    pub async fn remove_container(&self, id: &str) -> anyhow::Result<()> {
        match self
            .runtime
            .clone()
            .remove_container(cri::RemoveContainerRequest {
                container_id: id.to_string(),
            })
            .await
        {
            Ok(_) => Ok(()),
            Err(status) if status.code() == tonic::Code::NotFound => Ok(()),
            Err(status) => Err(status_error(status)),
        }
    }

    /// The image as the runtime has it, if present.
    async fn image_status(&self, image: &str) -> anyhow::Result<Option<cri::Image>> {
        Ok(self
            .images
            .clone()
            .image_status(cri::ImageStatusRequest {
                image: Some(image_spec(image)),
                verbose: false,
            })
            .await
            .context("CRI ImageStatus")?
            .into_inner()
            .image)
    }

    /// The image's ID (`sha256:...`) if present.
    pub async fn image_id(&self, image: &str) -> anyhow::Result<Option<String>> {
        Ok(self.image_status(image).await?.map(|image| image.id))
    }

    /// The image's size in bytes, as the runtime reports it.
    pub async fn image_size(&self, image: &str) -> anyhow::Result<Option<u64>> {
        Ok(self.image_status(image).await?.map(|image| image.size))
    }

    /// The user the image runs as.
    pub async fn image_user(&self, image: &str) -> anyhow::Result<crate::pod::ImageUser> {
        Ok(self
            .image_status(image)
            .await?
            .map(|image| crate::pod::ImageUser {
                uid: image.uid.map(|u| u.value),
                name: image.username,
            })
            .unwrap_or_default())
    }

    /// Pulls `image` (with a registry login), returning its reference (ID).
    pub async fn pull(
        &self,
        image: &str,
        login: Option<&crate::registries::Credential>,
    ) -> anyhow::Result<String> {
        let mut request = tonic::Request::new(cri::PullImageRequest {
            image: Some(image_spec(image)),
            auth: login.map(|login| cri::AuthConfig {
                username: login.username.clone(),
                password: login.password.clone(),
                ..Default::default()
            }),
            sandbox_config: None,
        });
        request.set_timeout(Duration::from_secs(600));
        Ok(self
            .images
            .clone()
            .pull_image(request)
            .await
            .map_err(status_error)?
            .into_inner()
            .image_ref)
    }

    pub async fn list_images(&self) -> anyhow::Result<Vec<cri::Image>> {
        Ok(self
            .images
            .clone()
            .list_images(cri::ListImagesRequest { filter: None })
            .await
            .context("CRI ListImages")?
            .into_inner()
            .images)
    }

    /// Removes an image (by ID, all its names with it).
    pub async fn remove_image(&self, id: &str) -> anyhow::Result<()> {
        self.images
            .clone()
            .remove_image(cri::RemoveImageRequest {
                image: Some(image_spec(id)),
            })
            .await
            .with_context(|| format!("CRI RemoveImage {id}"))?;
        Ok(())
    }

    /// The mount point of the filesystem that holds the images.
    pub async fn image_fs(&self) -> anyhow::Result<Option<PathBuf>> {
        let info = self
            .images
            .clone()
            .image_fs_info(cri::ImageFsInfoRequest {})
            .await
            .context("CRI ImageFsInfo")?
            .into_inner();
        Ok(info
            .image_filesystems
            .into_iter()
            .find_map(|fs| fs.fs_id)
            .map(|id| PathBuf::from(id.mountpoint))
            .filter(|path| !path.as_os_str().is_empty()))
    }
}

pub fn image_spec(image: &str) -> cri::ImageSpec {
    cri::ImageSpec {
        image: image.to_string(),
        ..Default::default()
    }
}

/// A CRI error as the runtime said it (its message is what users see).
fn status_error(status: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{}", status.message())
}
