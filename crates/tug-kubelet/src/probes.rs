//! Probes, as kubelet's prober runs them: one task per probe of a running
//! container, after its initialDelaySeconds, every periodSeconds, each try
//! bounded by timeoutSeconds; a result turns after successThreshold
//! successes or failureThreshold failures in a row. Liveness and readiness
//! wait for the startup probe to succeed. Results go in a shared table
//! that the pod's worker reads (readiness clears Ready, a failed liveness
//! or startup probe has the container killed and restarted); every change
//! wakes the worker.
//!
//! Kinds: exec (CRI ExecSync), httpGet (HTTP or HTTPS, the certificate
//! not checked, as kubelet; 200 to 399 succeed), tcpSocket (a
//! connection), grpc (the standard health service's Check over h2c;
//! SERVING succeeds).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio_util::sync::CancellationToken;

use crate::cri::Runtime;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    Startup,
    Liveness,
    Readiness,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Startup => "Startup",
            Kind::Liveness => "Liveness",
            Kind::Readiness => "Readiness",
        }
    }

    pub fn of(self, container: &Container) -> Option<&Probe> {
        match self {
            Kind::Startup => container.startup_probe.as_ref(),
            Kind::Liveness => container.liveness_probe.as_ref(),
            Kind::Readiness => container.readiness_probe.as_ref(),
        }
    }
}

/// What the probes of one container have found so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct State {
    /// `None` until the startup probe has a result (or without one).
    pub started: Option<bool>,
    pub ready: Option<bool>,
    /// The liveness (or startup) probe failed: kill and restart.
    pub failed: bool,
}

/// Results by container ID.
#[derive(Default)]
pub struct Results {
    states: Mutex<HashMap<String, State>>,
}

impl Results {
    pub fn get(&self, container_id: &str) -> State {
        self.lock().get(container_id).copied().unwrap_or_default()
    }

    fn update(&self, container_id: &str, change: impl FnOnce(&mut State)) -> bool {
        let mut states = self.lock();
        let state = states.entry(container_id.to_string()).or_default();
        let before = *state;
        change(state);
        before != *state
    }

    pub fn forget(&self, container_id: &str) {
        self.lock().remove(container_id);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, State>> {
        self.states.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The probe's settings with upstream's defaults.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    pub initial_delay: Duration,
    pub period: Duration,
    pub timeout: Duration,
    pub success_threshold: u32,
    pub failure_threshold: u32,
}

impl Timing {
    pub fn of(probe: &Probe) -> Timing {
        let seconds = |value: Option<i32>, default: i32| {
            Duration::from_secs(value.unwrap_or(default).max(0) as u64)
        };
        Timing {
            initial_delay: seconds(probe.initial_delay_seconds, 0),
            period: seconds(probe.period_seconds, 10).max(Duration::from_secs(1)),
            timeout: seconds(probe.timeout_seconds, 1).max(Duration::from_secs(1)),
            success_threshold: probe.success_threshold.unwrap_or(1).max(1) as u32,
            failure_threshold: probe.failure_threshold.unwrap_or(3).max(1) as u32,
        }
    }
}

/// Where a probe's requests go.
#[derive(Clone, Debug)]
pub struct Target {
    pub container_id: String,
    pub pod_ip: Option<IpAddr>,
}

/// One try: `Ok` on success, `Err` with upstream's failure message.
pub async fn try_once(
    runtime: &Runtime,
    probe: &Probe,
    container: &Container,
    target: &Target,
    timeout: Duration,
) -> Result<(), String> {
    if let Some(exec) = &probe.exec {
        let command = exec.command.clone().unwrap_or_default();
        let answer = runtime
            .runtime
            .clone()
            .exec_sync(k8s_cri::v1::ExecSyncRequest {
                container_id: target.container_id.clone(),
                cmd: command,
                timeout: timeout.as_secs() as i64,
            })
            .await
            .map_err(|status| status.message().to_string())?
            .into_inner();
        if answer.exit_code == 0 {
            return Ok(());
        }
        let mut output = String::from_utf8_lossy(&answer.stdout).into_owned();
        output.push_str(&String::from_utf8_lossy(&answer.stderr));
        return Err(output.trim_end().to_string());
    }
    if let Some(http) = &probe.http_get {
        let code = get(http, container, target, timeout, "kube-probe/1.33").await?;
        return if (200..400).contains(&code) {
            Ok(())
        } else {
            Err(format!("HTTP probe failed with statuscode: {code}"))
        };
    }
    if let Some(tcp) = &probe.tcp_socket {
        let host = address(tcp.host.as_deref(), target).await?;
        let port = port(&tcp.port, container)?;
        return match tokio::time::timeout(timeout, tokio::net::TcpStream::connect((host, port)))
            .await
        {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(err)) => Err(format!("dial tcp {host}:{port}: connect: {err}")),
            Err(_) => Err(format!("dial tcp {host}:{port}: i/o timeout")),
        };
    }
    if let Some(grpc) = &probe.grpc {
        let host = target.pod_ip.ok_or("the pod has no IP address yet")?;
        let port =
            u16::try_from(grpc.port).map_err(|_| format!("invalid port number {}", grpc.port))?;
        let service = grpc.service.clone().unwrap_or_default();
        return match tokio::time::timeout(timeout, grpc_check(host, port, &service)).await {
            Ok(result) => result,
            Err(_) => Err(format!(
                "timeout: health rpc did not complete within {}s",
                timeout.as_secs()
            )),
        };
    }
    Err("the probe has no handler".into())
}

/// Runs a lifecycle hook (postStart, preStop) as kubelet does: exec as a
/// probe's; httpGet succeeds on any answer, whatever its status; sleep.
/// kubelet runs no other handler (tcpSocket is accepted by the API, but
/// fails when run).
pub async fn hook(
    runtime: &Runtime,
    handler: &k8s_openapi::api::core::v1::LifecycleHandler,
    container: &Container,
    target: &Target,
    timeout: Duration,
) -> Result<(), String> {
    let run = async {
        if let Some(sleep) = &handler.sleep {
            tokio::time::sleep(Duration::from_secs(sleep.seconds.max(0) as u64)).await;
            Ok(())
        } else if let Some(http) = &handler.http_get {
            get(http, container, target, timeout, "kube-lifecycle/1.33")
                .await
                .map(|_| ())
        } else if handler.exec.is_some() {
            let probe = Probe {
                exec: handler.exec.clone(),
                ..Default::default()
            };
            try_once(runtime, &probe, container, target, timeout).await
        } else {
            Err("Cannot run handler: invalid handler: only exec, httpGet and sleep run as lifecycle hooks".into())
        }
    };
    match tokio::time::timeout(timeout, run).await {
        Ok(result) => result,
        Err(_) => Err(format!("timed out after {}s", timeout.as_secs())),
    }
}

/// An httpGet action's GET (of a probe or a hook): the status code.
async fn get(
    http: &k8s_openapi::api::core::v1::HTTPGetAction,
    container: &Container,
    target: &Target,
    timeout: Duration,
    user_agent: &str,
) -> Result<u16, String> {
    let host = address(http.host.as_deref(), target).await?;
    let port = port(&http.port, container)?;
    let https = http.scheme.as_deref() == Some("HTTPS");
    let scheme = if https { "https" } else { "http" };
    let path = http.path.clone().unwrap_or_else(|| "/".into());
    let mut headers = vec![
        ("User-Agent".to_string(), user_agent.to_string()),
        ("Accept".to_string(), "*/*".to_string()),
    ];
    for header in http.http_headers.iter().flatten() {
        // A header of the action's replaces the default of that name
        // (as kubelet lets User-Agent and Accept be set).
        headers.retain(|(name, _)| !name.eq_ignore_ascii_case(&header.name));
        headers.push((header.name.clone(), header.value.clone()));
    }
    tokio::time::timeout(timeout, http_get(https, host, port, &path, &headers))
        .await
        .map_err(|_| {
            format!(
                "Get \"{scheme}://{host}:{port}{path}\": context deadline exceeded (Client.Timeout exceeded while awaiting headers)"
            )
        })?
}

/// The address a probe or hook reaches: its host (an address, or a name
/// resolved as the node resolves it), or the pod's IP.
async fn address(host: Option<&str>, target: &Target) -> Result<IpAddr, String> {
    let Some(host) = host.filter(|h| !h.is_empty()) else {
        return target
            .pod_ip
            .ok_or_else(|| "the pod has no IP address yet".to_string());
    };
    if let Ok(ip) = host.parse() {
        return Ok(ip);
    }
    let found: Vec<IpAddr> = tokio::net::lookup_host((host, 0))
        .await
        .map_err(|e| format!("dial tcp: lookup {host}: {e}"))?
        .map(|a| a.ip())
        .collect();
    // IPv4 first, as pods' addresses here are.
    found
        .iter()
        .find(|ip| ip.is_ipv4())
        .or(found.first())
        .copied()
        .ok_or_else(|| format!("dial tcp: lookup {host}: no such host"))
}

/// A probe's port: a number, or the name of one of the container's ports.
pub fn port(port: &IntOrString, container: &Container) -> Result<u16, String> {
    match port {
        IntOrString::Int(number) => {
            u16::try_from(*number).map_err(|_| format!("invalid port number {number}"))
        }
        IntOrString::String(name) => container
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(name.as_str()))
            .and_then(|p| u16::try_from(p.container_port).ok())
            .ok_or_else(|| format!("couldn't find port {name:?} in the container")),
    }
}

/// GET over HTTP/1.1 (in TLS for HTTPS, any certificate accepted, as
/// kubelet's prober); the status code.
async fn http_get(
    https: bool,
    host: IpAddr,
    port: u16,
    path: &str,
    headers: &[(String, String)],
) -> Result<u16, String> {
    let scheme = if https { "https" } else { "http" };
    let url = format!("{scheme}://{host}:{port}{path}");
    let stream = tokio::net::TcpStream::connect((host, port))
        .await
        .map_err(|e| format!("Get \"{url}\": dial tcp {host}:{port}: connect: {e}"))?;
    let mut request = format!("GET {path} HTTP/1.1\r\nConnection: close\r\n");
    if !headers
        .iter()
        .any(|(name, _)| name.eq_ignore_ascii_case("host"))
    {
        request.push_str(&format!("Host: {host}:{port}\r\n"));
    }
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    let head = if https {
        let tls = tokio_rustls::TlsConnector::from(Arc::new(crate::tls::any_server_client()))
            .connect(
                rustls::pki_types::ServerName::IpAddress(host.into()),
                stream,
            )
            .await
            .map_err(|e| format!("Get \"{url}\": {e}"))?;
        status_line(tls, &request).await
    } else {
        status_line(stream, &request).await
    }
    .map_err(|e| format!("Get \"{url}\": {e}"))?;
    let line = String::from_utf8_lossy(&head);
    line.split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| format!("Get \"{url}\": malformed HTTP response"))
}

/// Sends `request` and reads the answer up to its status line's end.
async fn status_line<S>(mut stream: S, request: &str) -> std::io::Result<Vec<u8>>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream.write_all(request.as_bytes()).await?;
    let mut head = Vec::new();
    let mut buffer = [0u8; 512];
    while !head.windows(2).any(|w| w == b"\r\n") {
        let n = stream.read(&mut buffer).await?;
        if n == 0 || head.len() > 8192 {
            break;
        }
        head.extend_from_slice(&buffer[..n]);
    }
    Ok(head)
}

/// gRPC's health service statuses, by number.
const GRPC_STATUSES: [&str; 4] = ["UNKNOWN", "SERVING", "NOT_SERVING", "SERVICE_UNKNOWN"];

/// `grpc.health.v1.Health/Check` for `service` over HTTP/2 without TLS,
/// as kubelet's gRPC probe: SERVING succeeds.
async fn grpc_check(host: IpAddr, port: u16, service: &str) -> Result<(), String> {
    use http_body_util::BodyExt;
    let target = format!("{host}:{port}");
    let stream = tokio::net::TcpStream::connect((host, port))
        .await
        .map_err(|e| format!("timeout: failed to connect service {target:?}: {e}"))?;
    let (mut sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .map_err(|e| format!("failed to connect service {target:?}: {e}"))?;
    tokio::spawn(connection);
    let request = hyper::Request::post(format!("http://{target}/grpc.health.v1.Health/Check"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("user-agent", "kube-probe/1.33")
        .body(http_body_util::Full::new(bytes_of(&grpc_frame(
            &health_request(service),
        ))))
        .map_err(|e| e.to_string())?;
    let answer = sender
        .send_request(request)
        .await
        .map_err(|e| format!("health rpc failed: {e}"))?;
    let (parts, body) = answer.into_parts();
    let collected = body
        .collect()
        .await
        .map_err(|e| format!("health rpc failed: {e}"))?;
    let trailers = collected.trailers().cloned().unwrap_or_default();
    let grpc_status = |headers: &hyper::HeaderMap| {
        headers
            .get("grpc-status")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let status = grpc_status(&trailers).or_else(|| grpc_status(&parts.headers));
    if status.as_deref().is_some_and(|s| s != "0") {
        let message = trailers
            .get("grpc-message")
            .or_else(|| parts.headers.get("grpc-message"))
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        return Err(format!(
            "health rpc probe failed: rpc error: code = {} desc = {message}",
            status.unwrap_or_default()
        ));
    }
    let body = collected.to_bytes();
    let serving = health_status(body.get(5..).unwrap_or_default());
    if serving == 1 {
        Ok(())
    } else {
        let name = GRPC_STATUSES
            .get(serving as usize)
            .copied()
            .unwrap_or("UNKNOWN");
        Err(format!("service unhealthy (responded with {name:?})"))
    }
}

fn bytes_of(data: &[u8]) -> hyper::body::Bytes {
    hyper::body::Bytes::copy_from_slice(data)
}

/// HealthCheckRequest { service = 1 } in protobuf.
fn health_request(service: &str) -> Vec<u8> {
    if service.is_empty() {
        return Vec::new();
    }
    let mut out = vec![0x0A];
    let mut length = service.len();
    while length >= 0x80 {
        out.push((length as u8 & 0x7F) | 0x80);
        length >>= 7;
    }
    out.push(length as u8);
    out.extend_from_slice(service.as_bytes());
    out
}

/// A gRPC message frame: not compressed, length, message.
fn grpc_frame(message: &[u8]) -> Vec<u8> {
    let mut out = vec![0];
    out.extend_from_slice(&(message.len() as u32).to_be_bytes());
    out.extend_from_slice(message);
    out
}

/// HealthCheckResponse's status (field 1, a varint); 0 when absent.
fn health_status(message: &[u8]) -> u64 {
    let mut at = 0;
    let varint = |at: &mut usize| -> Option<u64> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = *message.get(*at)?;
            *at += 1;
            value |= u64::from(byte & 0x7F) << shift;
            if byte & 0x80 == 0 {
                return Some(value);
            }
        }
        None
    };
    while at < message.len() {
        let Some(key) = varint(&mut at) else { return 0 };
        match (key >> 3, key & 7) {
            (1, 0) => return varint(&mut at).unwrap_or(0),
            (_, 0) => {
                varint(&mut at);
            }
            (_, 2) => {
                let Some(length) = varint(&mut at) else {
                    return 0;
                };
                at += length as usize;
            }
            (_, 5) => at += 4,
            (_, 1) => at += 8,
            _ => return 0,
        }
    }
    0
}

/// Runs one probe of a container until `stop`; `changed` is called with
/// the failure message (if any) whenever its result turns.
#[allow(clippy::too_many_arguments)]
pub async fn run(
    runtime: Runtime,
    results: Arc<Results>,
    kind: Kind,
    probe: Probe,
    container: Container,
    target: Target,
    stop: CancellationToken,
    changed: impl Fn(Option<String>) + Send + 'static,
) {
    let timing = Timing::of(&probe);
    let id = target.container_id.clone();
    tokio::select! {
        _ = stop.cancelled() => return,
        _ = tokio::time::sleep(timing.initial_delay) => {}
    }
    let (mut successes, mut failures) = (0u32, 0u32);
    loop {
        let gated = kind != Kind::Startup && results.get(&id).started == Some(false);
        if !gated {
            let outcome = try_once(&runtime, &probe, &container, &target, timing.timeout).await;
            match &outcome {
                Ok(()) => {
                    successes += 1;
                    failures = 0;
                }
                Err(_) => {
                    failures += 1;
                    successes = 0;
                }
            }
            let turned = if successes >= timing.success_threshold {
                results.update(&id, |state| match kind {
                    Kind::Startup => state.started = Some(true),
                    Kind::Readiness => state.ready = Some(true),
                    Kind::Liveness => state.failed = false,
                })
            } else if failures >= timing.failure_threshold {
                results.update(&id, |state| match kind {
                    Kind::Startup => state.failed = true,
                    Kind::Readiness => state.ready = Some(false),
                    Kind::Liveness => state.failed = true,
                })
            } else {
                false
            };
            if let Err(message) = &outcome {
                changed(Some(message.clone()));
            } else if turned {
                changed(None);
            }
            // A started container's startup probe is done.
            if kind == Kind::Startup && results.get(&id).started == Some(true) {
                return;
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(timing.period) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_messages_are_encoded_and_read_as_grpc_does() {
        assert_eq!(health_request(""), Vec::<u8>::new());
        assert_eq!(health_request("db"), vec![0x0A, 2, b'd', b'b']);
        assert_eq!(grpc_frame(&[0x08, 1]), vec![0, 0, 0, 0, 2, 0x08, 1]);
        assert_eq!(health_status(&[0x08, 1]), 1);
        assert_eq!(health_status(&[0x08, 2]), 2);
        assert_eq!(health_status(&[]), 0);
        // Unknown fields before the status are skipped.
        assert_eq!(health_status(&[0x12, 1, b'x', 0x08, 1]), 1);
    }

    #[test]
    fn timing_defaults_are_upstreams() {
        let probe = Probe::default();
        assert_eq!(
            Timing::of(&probe),
            Timing {
                initial_delay: Duration::ZERO,
                period: Duration::from_secs(10),
                timeout: Duration::from_secs(1),
                success_threshold: 1,
                failure_threshold: 3,
            }
        );
    }

    #[test]
    fn named_ports_are_the_containers() {
        let container: Container = serde_json::from_value(serde_json::json!({
            "name": "web", "ports": [{"name": "http", "containerPort": 8080}],
        }))
        .unwrap();
        assert_eq!(
            port(&IntOrString::String("http".into()), &container),
            Ok(8080)
        );
        assert_eq!(port(&IntOrString::Int(81), &container), Ok(81));
        assert!(port(&IntOrString::String("nope".into()), &container).is_err());
    }
}
