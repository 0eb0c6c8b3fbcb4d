//! exec, attach and port-forward on the agent's server, as kubelet serves
//! them: the container (or the pod's sandbox) is found through CRI, CRI
//! gives a URL of containerd's streaming server, and the API server's
//! upgraded connection is joined to containerd's.
//!
//! `POST /exec/{namespace}/{pod}/{container}?command=..&input=1&output=1&error=1&tty=1`,
//! `POST /attach/{namespace}/{pod}/{container}?input=1&output=1&error=1&tty=1`,
//! `POST /portForward/{namespace}/{pod}`, each with `Upgrade: SPDY/3.1`
//! and the client's `X-Stream-Protocol-Version`s, which containerd chooses
//! from.

use std::collections::HashMap;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use k8s_cri::v1 as cri;

use crate::cri::{CONTAINER_NAME, POD_NAME, POD_NAMESPACE, Runtime};

const PROTOCOL_HEADER: &str = "X-Stream-Protocol-Version";
/// How long containerd's streaming server may take to answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);
/// containerd's error message, read at most.
const ERROR_BYTES_MAX: usize = 64 * 1024;

fn text(code: StatusCode, message: String) -> Response {
    (code, message).into_response()
}

/// What the API server asks for, in kubelet's query names.
#[derive(Debug, Default, PartialEq, Eq)]
struct Options {
    command: Vec<String>,
    stdin: bool,
    stdout: bool,
    stderr: bool,
    tty: bool,
}

impl Options {
    fn parse(query: &str) -> Result<Options, String> {
        let pairs: Vec<(String, String)> =
            serde_urlencoded::from_str(query).map_err(|e| format!("invalid query: {e}"))?;
        let mut options = Options::default();
        for (name, value) in pairs {
            let flag = matches!(value.as_str(), "1" | "true");
            match name.as_str() {
                "command" => options.command.push(value),
                "input" => options.stdin = flag,
                "output" => options.stdout = flag,
                "error" => options.stderr = flag,
                "tty" => options.tty = flag,
                _ => {}
            }
        }
        // A terminal merges stderr into stdout.
        options.stderr &= !options.tty;
        Ok(options)
    }
}

pub async fn exec(
    State(runtime): State<Runtime>,
    Path((namespace, pod, container)): Path<(String, String, String)>,
    request: Request,
) -> Response {
    remote_command(runtime, [namespace, pod, container], request, true).await
}

pub async fn attach(
    State(runtime): State<Runtime>,
    Path((namespace, pod, container)): Path<(String, String, String)>,
    request: Request,
) -> Response {
    remote_command(runtime, [namespace, pod, container], request, false).await
}

/// Exec (a new process) or attach (to the container's own) in the
/// running container `[namespace, pod, container]`.
async fn remote_command(
    runtime: Runtime,
    [namespace, pod, container]: [String; 3],
    request: Request,
    exec: bool,
) -> Response {
    let options = match Options::parse(request.uri().query().unwrap_or_default()) {
        Ok(options) => options,
        Err(message) => return text(StatusCode::BAD_REQUEST, message),
    };
    if exec && options.command.is_empty() {
        return text(
            StatusCode::BAD_REQUEST,
            "you must specify at least one command for the container".into(),
        );
    }
    let id = match running_container(&runtime, &namespace, &pod, &container).await {
        Ok(id) => id,
        Err(response) => return response,
    };
    let mut client = runtime.runtime.clone();
    let url = if exec {
        client
            .exec(cri::ExecRequest {
                container_id: id,
                cmd: options.command,
                tty: options.tty,
                stdin: options.stdin,
                stdout: options.stdout,
                stderr: options.stderr,
            })
            .await
            .map(|answer| answer.into_inner().url)
    } else {
        client
            .attach(cri::AttachRequest {
                container_id: id,
                stdin: options.stdin,
                tty: options.tty,
                stdout: options.stdout,
                stderr: options.stderr,
            })
            .await
            .map(|answer| answer.into_inner().url)
    };
    match url {
        Ok(url) => proxy(&url, request).await,
        Err(status) => text(StatusCode::BAD_REQUEST, status.message().to_string()),
    }
}

pub async fn port_forward(
    State(runtime): State<Runtime>,
    Path((namespace, pod)): Path<(String, String)>,
    request: Request,
) -> Response {
    let filter = cri::PodSandboxFilter {
        state: Some(cri::PodSandboxStateValue {
            state: cri::PodSandboxState::SandboxReady as i32,
        }),
        label_selector: HashMap::from([
            (POD_NAMESPACE.to_string(), namespace.clone()),
            (POD_NAME.to_string(), pod.clone()),
        ]),
        ..Default::default()
    };
    let listed = runtime
        .runtime
        .clone()
        .list_pod_sandbox(cri::ListPodSandboxRequest {
            filter: Some(filter),
        })
        .await;
    let sandbox = match listed {
        Ok(listed) => listed
            .into_inner()
            .items
            .into_iter()
            .max_by_key(|s| s.created_at),
        Err(status) => {
            return text(
                StatusCode::SERVICE_UNAVAILABLE,
                status.message().to_string(),
            );
        }
    };
    let Some(sandbox) = sandbox else {
        return text(
            StatusCode::NOT_FOUND,
            format!("pod not found (\"{pod}_{namespace}\")"),
        );
    };
    let answer = runtime
        .runtime
        .clone()
        .port_forward(cri::PortForwardRequest {
            pod_sandbox_id: sandbox.id,
            port: Vec::new(),
        })
        .await;
    match answer {
        Ok(answer) => proxy(&answer.into_inner().url, request).await,
        Err(status) => text(StatusCode::BAD_REQUEST, status.message().to_string()),
    }
}

/// The running container of that name in the pod, its latest attempt; or
/// kubelet's "container not found".
async fn running_container(
    runtime: &Runtime,
    namespace: &str,
    pod: &str,
    container: &str,
) -> Result<String, Response> {
    let filter = cri::ContainerFilter {
        state: Some(cri::ContainerStateValue {
            state: cri::ContainerState::ContainerRunning as i32,
        }),
        label_selector: HashMap::from([
            (POD_NAMESPACE.to_string(), namespace.to_string()),
            (POD_NAME.to_string(), pod.to_string()),
            (CONTAINER_NAME.to_string(), container.to_string()),
        ]),
        ..Default::default()
    };
    let listed = runtime
        .runtime
        .clone()
        .list_containers(cri::ListContainersRequest {
            filter: Some(filter),
        })
        .await
        .map_err(|status| {
            text(
                StatusCode::SERVICE_UNAVAILABLE,
                status.message().to_string(),
            )
        })?;
    listed
        .into_inner()
        .containers
        .into_iter()
        .max_by_key(|c| (c.metadata.as_ref().map_or(0, |m| m.attempt), c.created_at))
        .map(|c| c.id)
        .ok_or_else(|| {
            text(
                StatusCode::NOT_FOUND,
                format!("container not found ({container:?})"),
            )
        })
}

/// Sends the upgrade request to containerd's streaming server at `url`
/// and, once it switched protocols, joins the two connections.
async fn proxy(url: &str, mut request: Request) -> Response {
    let unavailable = |err: &dyn std::fmt::Display| {
        text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the runtime's streaming server at {url}: {err}"),
        )
    };
    let Ok(uri) = url.parse::<hyper::Uri>() else {
        return unavailable(&"not a URL");
    };
    let Some(authority) = uri.authority().cloned() else {
        return unavailable(&"no address");
    };
    let stream = match tokio::net::TcpStream::connect(authority.as_str()).await {
        Ok(stream) => stream,
        Err(err) => return unavailable(&err),
    };
    let (mut sender, connection) =
        match hyper::client::conn::http1::handshake(TokioIo::new(stream)).await {
            Ok(handshake) => handshake,
            Err(err) => return unavailable(&err),
        };
    tokio::spawn(connection.with_upgrades());
    let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
    let mut upstream = hyper::Request::builder()
        .method(request.method().clone())
        .uri(path)
        .header(header::HOST, authority.as_str());
    for name in [header::CONNECTION, header::UPGRADE] {
        if let Some(value) = request.headers().get(&name) {
            upstream = upstream.header(name, value);
        }
    }
    for value in request.headers().get_all(PROTOCOL_HEADER) {
        upstream = upstream.header(PROTOCOL_HEADER, value);
    }
    let upstream = match upstream.body(Body::empty()) {
        Ok(upstream) => upstream,
        Err(err) => return unavailable(&err),
    };
    let answer = match tokio::time::timeout(ANSWER_TIMEOUT, sender.send_request(upstream)).await {
        Ok(Ok(answer)) => answer,
        Ok(Err(err)) => return unavailable(&err),
        Err(_) => return unavailable(&"timeout awaiting response headers"),
    };
    if answer.status() != StatusCode::SWITCHING_PROTOCOLS {
        let code = answer.status();
        let body = http_body_util::Limited::new(answer.into_body(), ERROR_BYTES_MAX)
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let code = if code.is_client_error() {
            code
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        return text(code, String::from_utf8_lossy(&body).trim().to_string());
    }
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    for name in [header::CONNECTION, header::UPGRADE] {
        if let Some(value) = answer.headers().get(&name) {
            response.headers_mut().insert(name, value.clone());
        }
    }
    if let Some(value) = answer.headers().get(PROTOCOL_HEADER) {
        response
            .headers_mut()
            .insert(PROTOCOL_HEADER, value.clone());
    }
    let theirs = hyper::upgrade::on(answer);
    let ours = hyper::upgrade::on(&mut request);
    tokio::spawn(async move {
        let (Ok(ours), Ok(theirs)) = tokio::join!(ours, theirs) else {
            return;
        };
        let _ =
            tokio::io::copy_bidirectional(&mut TokioIo::new(ours), &mut TokioIo::new(theirs)).await;
    });
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubelets_query_names_are_read() {
        let options =
            Options::parse("command=sh&command=-c&command=echo%20hi&input=1&output=1&tty=1")
                .unwrap();
        assert_eq!(
            options,
            Options {
                command: vec!["sh".into(), "-c".into(), "echo hi".into()],
                stdin: true,
                stdout: true,
                stderr: false,
                tty: true,
            }
        );
    }
}
