//! What the API server passes on to node agents, as kube-apiserver does:
//! `pods/log` goes to the agent of the pod's node (its InternalIP and
//! kubelet port from the Node), over TLS verified against the cluster CA,
//! with the API server's client certificate; the answer streams back.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{StatusCode, header};
use axum::response::Response;
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tug_api::registry;

use crate::pki::{self, Ca};
use crate::rest::{ApiState, Target};
use crate::status::ApiError;

/// The client certificate's name, as kubeadm names kube-apiserver's.
pub const CLIENT_NAME: &str = "kube-apiserver-kubelet-client";
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the agent may take to start answering.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);
/// An agent's error message, read at most.
const ERROR_BYTES_MAX: usize = 64 * 1024;
/// The header that names a streaming protocol's version.
pub const PROTOCOL_HEADER: &str = "X-Stream-Protocol-Version";

pub struct KubeletClient {
    tls: tokio_rustls::TlsConnector,
}

impl KubeletClient {
    pub fn new(ca: &Ca) -> anyhow::Result<KubeletClient> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.cert_der()?.into())?;
        let identity = ca.client(CLIENT_NAME, &["system:masters"])?;
        let chain = pki::pem_blocks(&identity.cert_pem, "CERTIFICATE")?
            .into_iter()
            .map(rustls::pki_types::CertificateDer::from)
            .collect();
        let key = pki::pem_blocks(&identity.key_pem, "PRIVATE KEY")?
            .into_iter()
            .next()
            .ok_or_else(|| anyhow::anyhow!("the client key is missing"))?;
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, rustls::pki_types::PrivateKeyDer::Pkcs8(key.into()))?;
        Ok(KubeletClient {
            tls: tokio_rustls::TlsConnector::from(Arc::new(config)),
        })
    }

    /// An HTTP/1.1 connection to the agent at `address:port`, verified
    /// against the cluster CA; `what` names the request in errors.
    async fn connect(
        &self,
        address: IpAddr,
        port: u16,
        what: &str,
    ) -> Result<hyper::client::conn::http1::SendRequest<Body>, ApiError> {
        let unreachable = |err: &dyn std::fmt::Display| {
            ApiError::unavailable(format!("{what} \"https://{address}:{port}\": {err}"))
        };
        let stream = tokio::time::timeout(
            CONNECT_TIMEOUT,
            tokio::net::TcpStream::connect((address, port)),
        )
        .await
        .map_err(|_| unreachable(&"dial tcp: i/o timeout"))?
        .map_err(|e| unreachable(&e))?;
        let name = rustls::pki_types::ServerName::IpAddress(address.into());
        let tls = self
            .tls
            .connect(name, stream)
            .await
            .map_err(|e| unreachable(&e))?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| unreachable(&e))?;
        tokio::spawn(connection.with_upgrades());
        Ok(sender)
    }

    /// Sends `request` to the agent; its answer once its head arrived, or
    /// its error as a Status with its code.
    async fn send(
        &self,
        address: IpAddr,
        port: u16,
        request: hyper::Request<Body>,
    ) -> Result<hyper::Response<hyper::body::Incoming>, ApiError> {
        let what = if request.method() == hyper::Method::GET {
            "Get"
        } else {
            "Post"
        };
        let path = request.uri().to_string();
        let mut sender = self.connect(address, port, what).await?;
        let unreachable = |err: &dyn std::fmt::Display| {
            ApiError::unavailable(format!("{what} \"https://{address}:{port}{path}\": {err}"))
        };
        let answer = tokio::time::timeout(ANSWER_TIMEOUT, sender.send_request(request))
            .await
            .map_err(|_| unreachable(&"timeout awaiting response headers"))?
            .map_err(|e| unreachable(&e))?;
        let code = answer.status();
        if code.is_success() || code == StatusCode::SWITCHING_PROTOCOLS {
            return Ok(answer);
        }
        let body = http_body_util::Limited::new(answer.into_body(), ERROR_BYTES_MAX)
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let message = String::from_utf8_lossy(&body).trim().to_string();
        Err(match code {
            StatusCode::BAD_REQUEST | StatusCode::NOT_FOUND => ApiError::bad_request(message),
            _ => ApiError::unavailable(message),
        })
    }

    /// GET `path_and_query` on the agent at `address:port`; its answer,
    /// streaming, or its error as a Status with its code.
    async fn get(
        &self,
        address: IpAddr,
        port: u16,
        path_and_query: &str,
    ) -> Result<Response, ApiError> {
        let request = hyper::Request::get(path_and_query)
            .header(header::HOST, format!("{address}:{port}"))
            .body(Body::empty())
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        let answer = self.send(address, port, request).await?;
        let mut response = Response::new(Body::new(answer.into_body()));
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("text/plain"),
        );
        Ok(response)
    }

    /// Asks the agent at `address:port` to upgrade a POST of
    /// `path_and_query` to SPDY/3.1 with one of `protocols`; the connection
    /// and the protocol the agent chose.
    pub async fn upgrade(
        &self,
        address: IpAddr,
        port: u16,
        path_and_query: &str,
        protocols: &[String],
    ) -> Result<(hyper::upgrade::Upgraded, String), ApiError> {
        let mut request = hyper::Request::post(path_and_query)
            .header(header::HOST, format!("{address}:{port}"))
            .header(header::CONNECTION, "Upgrade")
            .header(header::UPGRADE, "SPDY/3.1");
        for protocol in protocols {
            request = request.header(PROTOCOL_HEADER, protocol);
        }
        let request = request
            .body(Body::empty())
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        let answer = self.send(address, port, request).await?;
        if answer.status() != StatusCode::SWITCHING_PROTOCOLS {
            return Err(ApiError::unavailable(format!(
                "the node agent did not upgrade the connection: {}",
                answer.status()
            )));
        }
        let chosen = answer
            .headers()
            .get(PROTOCOL_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let upgraded = hyper::upgrade::on(answer)
            .await
            .map_err(|e| ApiError::unavailable(format!("upgrading to the node agent: {e}")))?;
        Ok((upgraded, chosen))
    }
}

/// The names of a pod's containers of one kind, as `[a b]`.
fn names(pod: &Value, field: &str) -> Vec<String> {
    pod["spec"][field]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["name"].as_str().map(str::to_string))
        .collect()
}

/// The container a log request is for, or upstream's complaint.
pub fn container_for(pod: &Value, asked: Option<&str>) -> Result<String, String> {
    let name = pod["metadata"]["name"].as_str().unwrap_or_default();
    let containers = names(pod, "containers");
    let init = names(pod, "initContainers");
    let ephemeral = names(pod, "ephemeralContainers");
    let all = || containers.iter().chain(&init).chain(&ephemeral);
    match asked.filter(|c| !c.is_empty()) {
        Some(container) if all().any(|c| c == container) => Ok(container.to_string()),
        Some(container) => Err(format!("container {container} is not valid for pod {name}")),
        None if containers.len() == 1 => Ok(containers[0].clone()),
        None => {
            let mut message = format!(
                "a container name must be specified for pod {name}, choose one of: [{}]",
                containers.join(" ")
            );
            if !init.is_empty() {
                message.push_str(&format!(
                    " or one of the init containers: [{}]",
                    init.join(" ")
                ));
            }
            if !ephemeral.is_empty() {
                message.push_str(&format!(
                    " or one of the ephemeral containers: [{}]",
                    ephemeral.join(" ")
                ));
            }
            Err(message)
        }
    }
}

/// Why the container has no log to give yet, if so (as upstream's
/// LogLocation says: waiting to start, or no previous run).
fn not_started(pod: &Value, container: &str, previous: bool) -> Option<String> {
    let name = pod["metadata"]["name"].as_str().unwrap_or_default();
    let status = [
        "containerStatuses",
        "initContainerStatuses",
        "ephemeralContainerStatuses",
    ]
    .iter()
    .flat_map(|field| pod["status"][field].as_array().into_iter().flatten())
    .find(|s| s["name"] == container);
    let Some(status) = status else {
        return Some(format!(
            "container {container:?} in pod {name:?} is waiting to start: ContainerCreating"
        ));
    };
    if previous {
        return status["lastState"]["terminated"].is_null().then(|| {
            format!("previous terminated container {container:?} in pod {name:?} not found")
        });
    }
    let waiting = &status["state"]["waiting"];
    let ran = !status["lastState"]["terminated"].is_null();
    (!waiting.is_null() && !ran).then(|| {
        format!(
            "container {container:?} in pod {name:?} is waiting to start: {}",
            waiting["reason"].as_str().unwrap_or("ContainerCreating")
        )
    })
}

/// GET pods/{name}/log.
pub async fn pod_log(
    api: &ApiState,
    kubelet: &KubeletClient,
    target: &Target,
    query: &HashMap<String, String>,
) -> Result<Response, ApiError> {
    let pod = api.object(target).await?;
    let name = pod["metadata"]["name"].as_str().unwrap_or_default();
    let container = container_for(&pod, query.get("container").map(String::as_str))
        .map_err(ApiError::bad_request)?;
    let Some(node) = pod["spec"]["nodeName"].as_str().filter(|n| !n.is_empty()) else {
        return Err(ApiError::bad_request(format!(
            "pod {name} does not have a host assigned"
        )));
    };
    let previous = query.get("previous").is_some_and(|p| p == "true");
    if let Some(message) = not_started(&pod, &container, previous) {
        return Err(ApiError::bad_request(message));
    }
    let (address, port) = node_endpoint(api, node).await?;
    let mut forwarded: Vec<String> = Vec::new();
    for option in [
        "follow",
        "previous",
        "timestamps",
        "sinceSeconds",
        "sinceTime",
        "tailLines",
        "limitBytes",
    ] {
        if let Some(value) = query.get(option) {
            forwarded.push(format!("{option}={}", encode(value)));
        }
    }
    let namespace = target.namespace.as_deref().unwrap_or("default");
    let path = format!(
        "/containerLogs/{namespace}/{name}/{container}{}{}",
        if forwarded.is_empty() { "" } else { "?" },
        forwarded.join("&")
    );
    kubelet.get(address, port, &path).await
}

/// Where the agent of `node` answers: its InternalIP and kubelet port.
pub async fn node_endpoint(api: &ApiState, node: &str) -> Result<(IpAddr, u16), ApiError> {
    let nodes = registry::find("", "v1", "nodes").expect("nodes are a built-in resource");
    let node_object = api
        .object(&Target {
            resource: nodes,
            namespace: None,
            name: Some(node.to_string()),
            subresource: None,
        })
        .await?;
    let address = node_object["status"]["addresses"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|a| a["type"] == "InternalIP")
        .find_map(|a| a["address"].as_str()?.parse::<IpAddr>().ok())
        .ok_or_else(|| ApiError::unavailable(format!("node {node:?} has no InternalIP address")))?;
    let port = node_object["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"]
        .as_u64()
        .and_then(|p| u16::try_from(p).ok())
        .filter(|p| *p > 0)
        .unwrap_or(10250);
    Ok((address, port))
}

/// Percent-encodes what a query value may not carry as is.
pub fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(byte as char)
            }
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_log_container_is_chosen_or_refused_as_upstream_does() {
        let pod = json!({
            "metadata": {"name": "web"},
            "spec": {"containers": [{"name": "a"}, {"name": "b"}], "initContainers": [{"name": "i"}]},
        });
        assert_eq!(container_for(&pod, Some("b")), Ok("b".into()));
        assert_eq!(container_for(&pod, Some("i")), Ok("i".into()));
        assert_eq!(
            container_for(&pod, Some("x")),
            Err("container x is not valid for pod web".into())
        );
        assert_eq!(
            container_for(&pod, None),
            Err("a container name must be specified for pod web, choose one of: [a b] or one of the init containers: [i]".into())
        );
        let single = json!({"metadata": {"name": "one"}, "spec": {"containers": [{"name": "c"}]}});
        assert_eq!(container_for(&single, None), Ok("c".into()));
    }

    #[test]
    fn a_container_that_never_ran_has_no_log_yet() {
        let pod = |state: Value, last: Value| {
            json!({
                "metadata": {"name": "web"},
                "status": {"containerStatuses": [{"name": "c", "state": state, "lastState": last}]},
            })
        };
        let creating = pod(
            json!({"waiting": {"reason": "ContainerCreating"}}),
            json!({}),
        );
        assert_eq!(
            not_started(&creating, "c", false).unwrap(),
            "container \"c\" in pod \"web\" is waiting to start: ContainerCreating"
        );
        let looping = pod(
            json!({"waiting": {"reason": "CrashLoopBackOff"}}),
            json!({"terminated": {"exitCode": 1}}),
        );
        assert_eq!(not_started(&looping, "c", false), None);
        assert_eq!(not_started(&looping, "c", true), None);
        let running = pod(json!({"running": {}}), json!({}));
        assert_eq!(
            not_started(&running, "c", true).unwrap(),
            "previous terminated container \"c\" in pod \"web\" not found"
        );
    }
}
