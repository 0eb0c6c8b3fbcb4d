//! HTTPS: the accept loop (so the client certificate reaches the handlers),
//! authentication, limits, and routing a request to discovery or REST.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Router};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;
use tug_api::registry;

use crate::auth::{
    Attributes, Authenticator, Authorizer, Decision, ResourceAttributes, User,
    user_from_certificate,
};
use crate::rest::{ApiState, BODY_BYTES_MAX, Target, method_allowed};
use crate::status::ApiError;
use crate::{auth, discovery, join, openapi, openapi_v2};

/// How long a client has to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The user a connection's client certificate names; `None` when it
/// presented none.
#[derive(Clone, Debug, Default)]
pub struct Identity(pub Option<User>);

pub struct Shared {
    pub api: Arc<ApiState>,
    /// Requests other than watches served at once at most; beyond, 429.
    pub in_flight: Arc<tokio::sync::Semaphore>,
    pub authn: Authenticator,
    pub authorizer: Arc<dyn Authorizer>,
    /// The API server's client of node agents.
    pub kubelet: Arc<crate::proxy::KubeletClient>,
    /// The cluster CA, which signs joining agents' certificates.
    pub ca: Arc<crate::pki::Ca>,
}

pub fn router(shared: Arc<Shared>) -> Router {
    Router::new().fallback(dispatch).with_state(shared)
}

/// Serves `router` on `listener` until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    router: Router,
    shutdown: CancellationToken,
) {
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    tracing::warn!(error = %err, "accepting a connection failed");
                    continue;
                }
            },
        };
        let acceptor = acceptor.clone();
        let router = router.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            if let Err(err) = serve_connection(stream, peer, acceptor, router, shutdown).await {
                tracing::debug!(%peer, error = %err, "connection ended");
            }
        });
    }
}

async fn serve_connection(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    acceptor: TlsAcceptor,
    router: Router,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let tls = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await??;
    let identity = Identity(
        tls.get_ref()
            .1
            .peer_certificates()
            .and_then(|chain| chain.first())
            .and_then(|cert| user_from_certificate(cert.as_ref())),
    );
    tracing::trace!(%peer, user = ?identity.0, "connection");
    let service =
        hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
            let mut request = request.map(Body::new);
            request.extensions_mut().insert(identity.clone());
            router.clone().oneshot(request)
        });
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    let connection = builder.serve_connection_with_upgrades(TokioIo::new(tls), service);
    tokio::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => result.map_err(|e| anyhow::anyhow!(e))?,
        _ = shutdown.cancelled() => {
            connection.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(Duration::from_secs(5), connection).await;
        }
    }
    Ok(())
}

/// Bytes of an oversized body read and thrown away at most, so that the
/// client sees the 413 instead of a reset stream; a larger one is reset.
const DRAIN_BYTES_MAX: usize = 64 * 1024 * 1024;
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Reads a request body of at most [`BODY_BYTES_MAX`]; past that, drains
/// (a bounded amount of) the rest and answers 413.
async fn read_body(body: Body) -> Result<bytes::Bytes, ApiError> {
    use futures::StreamExt;
    let mut stream = body.into_data_stream();
    let mut collected = bytes::BytesMut::new();
    let mut seen = 0usize;
    let drain = async {
        while let Some(chunk) = stream.next().await {
            let Ok(chunk) = chunk else { break };
            seen += chunk.len();
            if seen <= BODY_BYTES_MAX {
                collected.extend_from_slice(&chunk);
            } else if seen > DRAIN_BYTES_MAX {
                break;
            }
        }
    };
    let finished = tokio::time::timeout(DRAIN_TIMEOUT, drain).await.is_ok();
    if seen > BODY_BYTES_MAX {
        return Err(ApiError::too_large(BODY_BYTES_MAX));
    }
    if !finished {
        return Err(ApiError::bad_request(format!(
            "the request body did not arrive within {DRAIN_TIMEOUT:?}"
        )));
    }
    Ok(collected.freeze())
}

fn text(code: StatusCode, body: &'static str) -> Response {
    let mut response = (code, body).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

fn version() -> Response {
    let body = serde_json::json!({
        "major": "1",
        "minor": "33",
        "emulationMajor": "1",
        "emulationMinor": "33",
        "minCompatibilityMajor": "1",
        "minCompatibilityMinor": "32",
        "gitVersion": crate::KUBERNETES_VERSION,
        "gitCommit": "",
        "gitTreeState": "clean",
        "buildDate": "",
        "goVersion": "",
        "compiler": "rustc",
        "platform": format!("linux/{}", if cfg!(target_arch = "aarch64") { "arm64" } else { "amd64" }),
    });
    json(body)
}

fn json(body: serde_json::Value) -> Response {
    crate::rest::json_response(StatusCode::OK, &body)
}

/// A JSON document already encoded, shared between requests.
fn json_bytes(body: bytes::Bytes) -> Response {
    let mut response = Response::new(Body::from(body));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn not_found() -> ApiError {
    ApiError {
        code: StatusCode::NOT_FOUND,
        reason: "NotFound",
        message: "the server could not find the requested resource".into(),
        details: None,
    }
}

async fn dispatch(
    State(shared): State<Arc<Shared>>,
    Extension(identity): Extension<Identity>,
    request: Request,
) -> Response {
    let path = request.uri().path().to_string();
    match path.as_str() {
        "/healthz" | "/livez" | "/readyz" => return text(StatusCode::OK, "ok"),
        "/version" => return version(),
        join::CACERTS_PATH => return join::cacerts(&shared.ca),
        _ => {}
    }
    // As upstream's union: the certificate first, then a bearer token.
    let user = match identity.0 {
        Some(user) => user,
        None => {
            let token = auth::bearer_token(request.headers()).map(str::to_string);
            let user = match token {
                Some(token) => shared.authn.token(shared.api.store.as_ref(), &token).await,
                None => None,
            };
            match user {
                Some(user) => user,
                None => return ApiError::unauthorized().into_response(),
            }
        }
    };
    let Ok(_permit) = shared.in_flight.clone().try_acquire_owned() else {
        return ApiError::too_many_requests().into_response();
    };
    if path == join::CREDENTIALS_PATH {
        if request.method() != Method::POST {
            return ApiError::method_not_allowed("only POST").into_response();
        }
        let answer = match read_body(request.into_body()).await {
            Ok(body) => join::node_credentials(&shared.ca, &user, &body),
            Err(err) => Err(err),
        };
        return answer.unwrap_or_else(|err| err.into_response());
    }
    match route(&shared, request, &path, &user).await {
        Ok(response) => response,
        Err(err) => err.into_response(),
    }
}

async fn route(
    shared: &Arc<Shared>,
    request: Request,
    path: &str,
    user: &User,
) -> Result<Response, ApiError> {
    let headers = request.headers().clone();
    let method = request.method().clone();
    let segments: Vec<&str> = path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let is_resource_request = matches!(
        segments.as_slice(),
        ["api", _, _, ..] | ["apis", _, _, _, ..]
    );
    if !is_resource_request {
        let attributes = Attributes {
            verb: auth::verb(&method, false, false).into(),
            resource: None,
            path: path.to_string(),
        };
        authorize(shared, user, &attributes)?;
    }
    let (group, version, rest) = match segments.as_slice() {
        ["openapi", "v2"] => {
            let protobuf = headers
                .get(header::ACCEPT)
                .and_then(|accept| accept.to_str().ok())
                .is_some_and(|accept| accept.contains("protobuf"));
            let body = openapi_v2::document(protobuf);
            let content_type = if protobuf {
                openapi_v2::PROTOBUF
            } else {
                "application/json"
            };
            let mut response = Response::new(Body::from(body));
            response
                .headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
            return Ok(response);
        }
        ["openapi", "v3"] => return Ok(json(openapi::root())),
        ["openapi", "v3", "api", version] => {
            return openapi::group_version("", version)
                .map(json_bytes)
                .ok_or_else(not_found);
        }
        ["openapi", "v3", "apis", group, version] => {
            return openapi::group_version(group, version)
                .map(json_bytes)
                .ok_or_else(not_found);
        }
        ["api"] => return Ok(discovery::core_versions(&headers)),
        ["apis"] => return Ok(discovery::group_list(&headers)),
        ["apis", group] => return discovery::group(group).ok_or_else(not_found),
        ["api", version, rest @ ..] => ("", *version, rest),
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        _ => return Err(not_found()),
    };
    if rest.is_empty() {
        return discovery::resource_list(group, version).ok_or_else(not_found);
    }
    let find = |plural: &str| registry::find(group, version, plural);
    let target = match rest {
        ["namespaces", namespace, plural, more @ ..]
            if find(plural).is_some_and(|r| r.namespaced) =>
        {
            Target {
                resource: find(plural).expect("checked above"),
                namespace: Some(namespace.to_string()),
                name: more.first().map(|s| s.to_string()),
                subresource: more.get(1).map(|s| s.to_string()),
            }
        }
        [plural, more @ ..] if more.len() <= 2 => {
            let resource = find(plural).ok_or_else(not_found)?;
            if resource.namespaced && !more.is_empty() {
                return Err(not_found());
            }
            Target {
                resource,
                namespace: None,
                name: more.first().map(|s| s.to_string()),
                subresource: more.get(1).map(|s| s.to_string()),
            }
        }
        _ => return Err(not_found()),
    };
    if let Some(sub) = &target.subresource
        && !target.resource.subresources.contains(&sub.as_str())
    {
        return Err(not_found());
    }
    if let Some(sub) = target.subresource.as_deref()
        && registry::Resource::streaming(sub)
    {
        if method != Method::GET && method != Method::POST {
            return Err(ApiError::method_not_allowed(
                "the server does not allow this method on the requested resource",
            ));
        }
        // A WebSocket's GET needs `create` too, as upstream authorizes it.
        let attributes = Attributes {
            verb: "create".into(),
            resource: Some(ResourceAttributes {
                group: group.into(),
                version: version.into(),
                resource: target.resource.plural.into(),
                subresource: sub.into(),
                namespace: target.namespace.clone().unwrap_or_default(),
                name: target.name.clone().unwrap_or_default(),
            }),
            path: path.to_string(),
        };
        authorize(shared, user, &attributes)?;
        return crate::stream::connect(&shared.api, &shared.kubelet, &target, request).await;
    }
    let collection = target.name.is_none();
    let create_only = target
        .subresource
        .as_deref()
        .is_some_and(registry::Resource::create_only);
    let created = create_only && method == Method::POST;
    let read_only = target.subresource.as_deref() == Some("log");
    if create_only != created
        || (read_only && method != Method::GET)
        || (!create_only && !method_allowed(target.resource, &method, collection))
    {
        return Err(ApiError::method_not_allowed(
            "the server does not allow this method on the requested resource",
        ));
    }
    if collection
        && method == Method::POST
        && target.resource.namespaced
        && target.namespace.is_none()
    {
        return Err(not_found());
    }
    let query: HashMap<String, String> = Query::try_from_uri(request.uri())
        .map(|Query(query)| query)
        .map_err(|e| ApiError::bad_request(format!("invalid query: {e}")))?;
    let watch = query.get("watch").is_some_and(|w| w == "true" || w == "1");
    let attributes = Attributes {
        verb: auth::verb(&method, collection, watch).into(),
        resource: Some(ResourceAttributes {
            group: group.into(),
            version: version.into(),
            resource: target.resource.plural.into(),
            subresource: target.subresource.clone().unwrap_or_default(),
            namespace: target.namespace.clone().unwrap_or_default(),
            name: target.name.clone().unwrap_or_default(),
        }),
        path: path.to_string(),
    };
    authorize(shared, user, &attributes)?;
    let body = read_body(request.into_body()).await?;
    let api = &shared.api;
    match (method, collection) {
        (Method::GET, true) if watch => api.clone().watch(&target, &headers, &query).await,
        (Method::GET, true) => api.list(&target, &headers, &query).await,
        (Method::POST, false) if created && target.subresource.as_deref() == Some("token") => {
            api.token_request(&target, &shared.authn.issuer, &headers, &body)
                .await
        }
        (Method::POST, false) if created => {
            api.pod_subresource(&target, &query, &headers, &body).await
        }
        (Method::POST, true) if !target.resource.stored => {
            api.review(
                &target,
                user,
                shared.authorizer.as_ref(),
                &shared.authn,
                &headers,
                &body,
            )
            .await
        }
        (Method::POST, true) => api.create(&target, &query, &headers, &body).await,
        (Method::GET, false) if target.subresource.as_deref() == Some("log") => {
            crate::proxy::pod_log(api, &shared.kubelet, &target, &query).await
        }
        (Method::GET, false) => api.get(&target, &headers, &query).await,
        (Method::PUT, false) => api.update(&target, &query, &headers, &body).await,
        (Method::PATCH, false) => api.patch(&target, &query, &headers, &body).await,
        (Method::DELETE, false) => api.delete(&target, &query, &body).await,
        (Method::DELETE, true) => api.delete_collection(&target, &query, &body).await,
        _ => Err(ApiError::method_not_allowed("method not allowed")),
    }
}

/// Asks the authorizer; a denial is a 403 in upstream's words.
fn authorize(shared: &Shared, user: &User, attributes: &Attributes) -> Result<(), ApiError> {
    match shared.authorizer.authorize(user, attributes) {
        Decision::Allow => Ok(()),
        Decision::Deny(reason) => {
            let reason = auth::forbidden_reason(user, attributes, &reason);
            Err(match &attributes.resource {
                Some(r) => ApiError::forbidden(&r.resource, &r.group, &r.name, &reason),
                None => ApiError::forbidden("", "", "", &reason),
            })
        }
    }
}
