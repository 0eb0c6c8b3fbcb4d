//! The agent's HTTPS server (kubelet's port, 10250): what the API server
//! passes on to a node. Its certificate is signed by the cluster CA, and
//! only the API server's client certificate (CN
//! `kube-apiserver-kubelet-client`, or group `system:masters`) is served.
//!
//! `GET /containerLogs/{namespace}/{pod}/{container}`: a container's log
//! with kubectl's options, followed until the container stops; exec,
//! attach and port-forward in [`crate::streaming`].

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::cri::{CONTAINER_NAME, POD_NAME, POD_NAMESPACE, Runtime};
use crate::logs::{self, Options};
use crate::streaming;

/// The client the agent serves.
const API_SERVER_CLIENT: &str = "kube-apiserver-kubelet-client";
/// How often a followed log is read again.
const FOLLOW_POLL: Duration = Duration::from_millis(100);
/// How long a TLS handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Bytes read from a log file at once.
const CHUNK: usize = 64 * 1024;

/// The serving certificate and the CA that signs clients.
#[derive(Clone, Debug)]
pub struct Tls {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: PathBuf,
}

fn tls_config(tls: &Tls) -> anyhow::Result<rustls::ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(&tls.client_ca)
        .with_context(|| format!("reading {}", tls.client_ca.display()))?
    {
        roots.add(cert?)?;
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    // (a client without a certificate is answered 401, not cut off)
    .allow_unauthenticated()
    .build()?;
    let chain = CertificateDer::pem_file_iter(&tls.cert)
        .with_context(|| format!("reading {}", tls.cert.display()))?
        .collect::<Result<Vec<_>, _>>()?;
    let key = PrivateKeyDer::from_pem_file(&tls.key)
        .with_context(|| format!("reading {}", tls.key.display()))?;
    Ok(rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)?)
}

/// Whether a client certificate is the API server's.
fn is_api_server(cert: &[u8]) -> bool {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(cert) else {
        return false;
    };
    let subject = cert.subject();
    let common_name = subject
        .iter_common_name()
        .any(|cn| cn.as_str() == Ok(API_SERVER_CLIENT));
    let masters = subject
        .iter_organization()
        .any(|o| o.as_str() == Ok("system:masters"));
    common_name || masters
}

/// Serves on `port` until `shutdown`.
pub async fn serve(
    port: u16,
    tls: &Tls,
    runtime: Runtime,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls_config(tls)?));
    let listener = tokio::net::TcpListener::bind(("0.0.0.0", port))
        .await
        .with_context(|| format!("listening on port {port}"))?;
    let router = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/containerLogs/{namespace}/{pod}/{container}",
            get(container_logs),
        )
        .route(
            "/exec/{namespace}/{pod}/{container}",
            get(streaming::exec).post(streaming::exec),
        )
        .route(
            "/attach/{namespace}/{pod}/{container}",
            get(streaming::attach).post(streaming::attach),
        )
        .route(
            "/portForward/{namespace}/{pod}",
            get(streaming::port_forward).post(streaming::port_forward),
        )
        .with_state(runtime);
    tokio::spawn(async move {
        loop {
            let (stream, _) = tokio::select! {
                _ = shutdown.cancelled() => return,
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(err) => {
                        tracing::warn!(error = %err, "the agent's server: accepting");
                        continue;
                    }
                },
            };
            let (acceptor, router) = (acceptor.clone(), router.clone());
            tokio::spawn(async move {
                let Ok(Ok(tls)) =
                    tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await
                else {
                    return;
                };
                // Only the API server is let in: a client without a
                // certificate is not authenticated (401), another is not
                // authorized (403), as kubelet answers them.
                let peer = tls
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|chain| chain.first())
                    .map(|cert| is_api_server(cert.as_ref()));
                let allowed = peer == Some(true);
                let refusal = if peer.is_none() {
                    (StatusCode::UNAUTHORIZED, "Unauthorized")
                } else {
                    (StatusCode::FORBIDDEN, "Forbidden")
                };
                let service = hyper::service::service_fn(
                    move |request: hyper::Request<hyper::body::Incoming>| {
                        let request = request.map(Body::new);
                        let router = router.clone();
                        async move {
                            if allowed {
                                router.oneshot(request).await
                            } else {
                                Ok(refusal.into_response())
                            }
                        }
                    },
                );
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection_with_upgrades(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    Ok(())
}

fn text(code: StatusCode, message: String) -> Response {
    (code, message).into_response()
}

async fn container_logs(
    State(runtime): State<Runtime>,
    Path((namespace, pod, container)): Path<(String, String, String)>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let options = match Options::parse(&query) {
        Ok(options) => options,
        Err(message) => return text(StatusCode::BAD_REQUEST, message),
    };
    let filter = k8s_cri::v1::ContainerFilter {
        label_selector: HashMap::from([
            (POD_NAMESPACE.to_string(), namespace.clone()),
            (POD_NAME.to_string(), pod.clone()),
            (CONTAINER_NAME.to_string(), container.clone()),
        ]),
        ..Default::default()
    };
    let listed = runtime
        .runtime
        .clone()
        .list_containers(k8s_cri::v1::ListContainersRequest {
            filter: Some(filter),
        })
        .await;
    let mut containers = match listed {
        Ok(response) => response.into_inner().containers,
        Err(status) => {
            return text(
                StatusCode::SERVICE_UNAVAILABLE,
                status.message().to_string(),
            );
        }
    };
    containers.sort_by_key(|c| {
        std::cmp::Reverse((c.metadata.as_ref().map_or(0, |m| m.attempt), c.created_at))
    });
    let chosen = containers.get(usize::from(options.previous));
    let Some(chosen) = chosen else {
        let message = if options.previous {
            format!("previous terminated container {container:?} in pod {pod:?} not found")
        } else {
            format!("container {container:?} in pod {pod:?} is not available")
        };
        return text(StatusCode::BAD_REQUEST, message);
    };
    let status = match runtime.container_status(&chosen.id).await {
        Ok(Some(status)) => status,
        Ok(None) => return text(StatusCode::NOT_FOUND, "container not found".into()),
        Err(err) => return text(StatusCode::SERVICE_UNAVAILABLE, format!("{err:#}")),
    };
    let path = PathBuf::from(&status.log_path);
    let (sender, receiver) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(16);
    let follow = options.follow && !options.previous;
    tokio::spawn(stream_log(
        runtime,
        chosen.id.clone(),
        path,
        options,
        follow,
        sender,
    ));
    let stream = futures::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|item| (item, receiver))
    });
    let mut response = Response::new(Body::from_stream(stream));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain"),
    );
    response
}

/// Whether `path` now names another file than `open` (the log rotated).
async fn rotated(open: &tokio::fs::File, path: &std::path::Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let (Ok(open), Ok(now)) = (open.metadata().await, tokio::fs::metadata(path).await) else {
        return false;
    };
    open.ino() != now.ino() || open.dev() != now.dev()
}

/// Sends the log's lines as `options` select them, then, when following,
/// what the container writes until it stops.
async fn stream_log(
    runtime: Runtime,
    id: String,
    path: PathBuf,
    options: Options,
    follow: bool,
    sender: tokio::sync::mpsc::Sender<Result<Vec<u8>, std::io::Error>>,
) {
    use tokio::io::{AsyncReadExt, AsyncSeekExt};
    let mut budget = options.limit_bytes.unwrap_or(usize::MAX);
    let mut send = async |mut bytes: Vec<u8>| -> bool {
        if bytes.is_empty() {
            return true;
        }
        bytes.truncate(budget);
        budget -= bytes.len();
        sender.send(Ok(bytes)).await.is_ok() && budget > 0
    };
    let data = tokio::fs::read(&path).await.unwrap_or_default();
    let (out, used) = logs::render(&data, &options);
    if !send(out).await || !follow {
        return;
    }
    // Following: the lines from here on, whatever the tail asked.
    let later = Options {
        tail_lines: None,
        since: None,
        ..options
    };
    // The file stays open: when it is rotated (renamed, a new one in its
    // place), what is left of it is read before the new one.
    let mut offset = used as u64;
    let mut file: Option<tokio::fs::File> = None;
    let mut pending: Vec<u8> = Vec::new();
    let mut polls = 0u32;
    let mut stopping = false;
    loop {
        if file.is_none()
            && let Ok(mut opened) = tokio::fs::File::open(&path).await
            && opened.seek(std::io::SeekFrom::Start(offset)).await.is_ok()
        {
            file = Some(opened);
        }
        let mut grew = false;
        if let Some(open) = file.as_mut() {
            let mut chunk = vec![0; CHUNK];
            while let Ok(n) = open.read(&mut chunk).await {
                if n == 0 {
                    break;
                }
                grew = true;
                offset += n as u64;
                pending.extend_from_slice(&chunk[..n]);
            }
            if !grew && rotated(open, &path).await {
                file = None;
                offset = 0;
                continue;
            }
        }
        if grew {
            let (out, used) = logs::render(&pending, &later);
            pending.drain(..used);
            if !send(out).await {
                return;
            }
            continue;
        }
        // The container stopped and its last lines are out.
        if stopping {
            return;
        }
        polls += 1;
        // Every second, whether the container still runs.
        if polls.is_multiple_of(10) {
            let running = matches!(
                runtime.container_status(&id).await,
                Ok(Some(status)) if status.state == k8s_cri::v1::ContainerState::ContainerRunning as i32
            );
            if !running {
                stopping = true;
                continue;
            }
        }
        if sender.is_closed() {
            return;
        }
        tokio::time::sleep(FOLLOW_POLL).await;
    }
}
