//! Joining a cluster from another machine (`tug agent --server URL --token
//! TOKEN`): the server's CA is fetched and checked against the token's
//! hash, then the token buys this node its credentials (a client
//! certificate for `system:node:<name>` and a serving certificate for the
//! agent's port), written under `<data-dir>/agent/cred`.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use axum::body::Body;
use http_body_util::BodyExt;
use hyper::StatusCode;
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{Value, json};

use crate::server::Tls;

const TIMEOUT: Duration = Duration::from_secs(30);
/// An answer from the server, read at most.
const ANSWER_BYTES_MAX: usize = 1024 * 1024;

/// What joining gives: the agent's kubeconfig and its server's TLS files.
#[derive(Clone, Debug)]
pub struct Joined {
    pub kubeconfig: PathBuf,
    pub tls: Tls,
}

/// Asks `server` (`https://host:port`) for this node's credentials with
/// the node-join `token`, and writes them under `data_dir/agent/cred`.
pub async fn join(
    server: &str,
    token: &str,
    node_name: &str,
    addresses: &[IpAddr],
    data_dir: &Path,
) -> anyhow::Result<Joined> {
    let uri: hyper::Uri = server
        .parse()
        .with_context(|| format!("--server {server:?} is not a URL"))?;
    if uri.scheme_str() != Some("https") {
        bail!("--server {server:?} must be an https:// URL");
    }
    let host = uri
        .host()
        .with_context(|| format!("--server {server:?} names no host"))?
        .trim_matches(|c| c == '[' || c == ']')
        .to_string();
    let port = uri.port_u16().unwrap_or(443);
    let (pinned, secret) = tug_api::join::parse(token);
    if secret.is_empty() {
        bail!("--token must not be empty");
    }

    // The CA is fetched unverified, then checked against the token.
    let unverified = crate::tls::any_server_client();
    let (code, ca_pem) = request(&host, port, unverified, "GET", "/cacerts", None, None).await?;
    if code != StatusCode::OK {
        bail!("{server}/cacerts answered {code}");
    }
    let ca_pem = String::from_utf8(ca_pem).context("the server's CA is not text")?;
    let hash: String = ring::digest::digest(&ring::digest::SHA256, ca_pem.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    match pinned {
        Some(pinned) if pinned != hash => bail!(
            "the server's CA does not match the token's hash (K10{pinned}...): is {server} the cluster the token is from?"
        ),
        Some(_) => {}
        None => tracing::warn!(
            "the token carries no CA hash: trusting the CA {server} shows (use the full token of <data-dir>/server/node-token)"
        ),
    }

    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.context("the server's CA")?)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verified = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let body = json!({
        "nodeName": node_name,
        "addresses": addresses.iter().map(ToString::to_string).collect::<Vec<_>>(),
    });
    let (code, answer) = request(
        &host,
        port,
        verified,
        "POST",
        "/v1-tug/node-credentials",
        Some(secret),
        Some(body.to_string()),
    )
    .await?;
    let answer: Value = serde_json::from_slice(&answer).unwrap_or_default();
    match code {
        StatusCode::OK => {}
        StatusCode::UNAUTHORIZED => bail!("{server} refused the token (401 Unauthorized)"),
        code => bail!(
            "{server} refused this node's credentials ({code}): {}",
            answer["message"].as_str().unwrap_or_default()
        ),
    }
    let field = |name: &str| -> anyhow::Result<&str> {
        answer[name]
            .as_str()
            .with_context(|| format!("the server's answer has no {name}"))
    };
    let dir = data_dir.join("agent/cred");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let write = |file: &str, contents: &str, mode: u32| -> anyhow::Result<PathBuf> {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let path = dir.join(file);
        let partial = dir.join(format!(".{file}.partial"));
        let mut out = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&partial)
            .with_context(|| format!("writing {}", partial.display()))?;
        out.write_all(contents.as_bytes())?;
        out.sync_all()?;
        std::fs::rename(&partial, &path).with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    };
    let ca = write("ca.crt", field("ca")?, 0o644)?;
    let kubeconfig = write(
        "agent.kubeconfig",
        &tug_api::join::kubeconfig(
            server,
            field("ca")?,
            field("clientCert")?,
            field("clientKey")?,
        ),
        0o600,
    )?;
    let cert = write("serving.crt", field("servingCert")?, 0o644)?;
    let key = write("serving.key", field("servingKey")?, 0o600)?;
    Ok(Joined {
        kubeconfig,
        tls: Tls {
            cert,
            key,
            client_ca: ca,
        },
    })
}

/// One HTTPS request; the answer's code and body.
async fn request(
    host: &str,
    port: u16,
    tls: rustls::ClientConfig,
    method: &str,
    path: &str,
    bearer: Option<&str>,
    body: Option<String>,
) -> anyhow::Result<(StatusCode, Vec<u8>)> {
    let what = format!("{method} https://{host}:{port}{path}");
    let exchange = async {
        let stream = tokio::net::TcpStream::connect((host, port)).await?;
        let name = match host.parse::<IpAddr>() {
            Ok(ip) => ServerName::IpAddress(ip.into()),
            Err(_) => ServerName::try_from(host.to_string())?,
        };
        let stream = tokio_rustls::TlsConnector::from(Arc::new(tls))
            .connect(name, stream)
            .await?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(connection);
        let mut request = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, format!("{host}:{port}"));
        if let Some(token) = bearer {
            request = request.header(hyper::header::AUTHORIZATION, format!("Bearer {token}"));
        }
        if body.is_some() {
            request = request.header(hyper::header::CONTENT_TYPE, "application/json");
        }
        let request = request.body(body.map(Body::from).unwrap_or_else(Body::empty))?;
        let answer = sender.send_request(request).await?;
        let code = answer.status();
        let bytes = http_body_util::Limited::new(answer.into_body(), ANSWER_BYTES_MAX)
            .collect()
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .to_bytes();
        Ok::<_, anyhow::Error>((code, bytes.to_vec()))
    };
    tokio::time::timeout(TIMEOUT, exchange)
        .await
        .map_err(|_| anyhow::anyhow!("{what}: no answer within {TIMEOUT:?}"))?
        .with_context(|| what)
}
