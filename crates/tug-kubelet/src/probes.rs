//! Probes, as kubelet's prober runs them: one task per probe of a running
//! container, after its initialDelaySeconds, every periodSeconds, each try
//! bounded by timeoutSeconds; a result turns after successThreshold
//! successes or failureThreshold failures in a row. Liveness and readiness
//! wait for the startup probe to succeed. Results go in a shared table
//! that the pod's worker reads (readiness clears Ready, a failed liveness
//! or startup probe has the container killed and restarted); every change
//! wakes the worker.
//!
//! Kinds: exec (CRI ExecSync), httpGet (HTTP; 200 to 399 succeed),
//! tcpSocket (a connection), grpc (not yet: reported failed).

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
        let host = match http.host.as_deref().filter(|h| !h.is_empty()) {
            Some(host) => host
                .parse::<IpAddr>()
                .map_err(|_| format!("probe host {host:?} is not an IP address"))?,
            None => target.pod_ip.ok_or("the pod has no IP address yet")?,
        };
        let port = port(&http.port, container)?;
        if http.scheme.as_deref() == Some("HTTPS") {
            return Err("HTTPS probes are not supported by tug's node agent yet".into());
        }
        let path = http.path.clone().unwrap_or_else(|| "/".into());
        let headers: Vec<(String, String)> = http
            .http_headers
            .iter()
            .flatten()
            .map(|h| (h.name.clone(), h.value.clone()))
            .collect();
        let code = tokio::time::timeout(timeout, http_get(host, port, &path, &headers))
            .await
            .map_err(|_| {
                format!(
                    "Get \"http://{host}:{port}{path}\": context deadline exceeded (Client.Timeout exceeded while awaiting headers)"
                )
            })??;
        return if (200..400).contains(&code) {
            Ok(())
        } else {
            Err(format!("HTTP probe failed with statuscode: {code}"))
        };
    }
    if let Some(tcp) = &probe.tcp_socket {
        let host = match tcp.host.as_deref().filter(|h| !h.is_empty()) {
            Some(host) => host
                .parse::<IpAddr>()
                .map_err(|_| format!("probe host {host:?} is not an IP address"))?,
            None => target.pod_ip.ok_or("the pod has no IP address yet")?,
        };
        let port = port(&tcp.port, container)?;
        return match tokio::time::timeout(timeout, tokio::net::TcpStream::connect((host, port)))
            .await
        {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(err)) => Err(format!("dial tcp {host}:{port}: connect: {err}")),
            Err(_) => Err(format!("dial tcp {host}:{port}: i/o timeout")),
        };
    }
    if probe.grpc.is_some() {
        return Err("gRPC probes are not supported by tug's node agent yet".into());
    }
    Err("the probe has no handler".into())
}

/// Runs a lifecycle hook (postStart, preStop): exec, httpGet, tcpSocket
/// as a probe's, or sleep.
pub async fn hook(
    runtime: &Runtime,
    handler: &k8s_openapi::api::core::v1::LifecycleHandler,
    container: &Container,
    target: &Target,
    timeout: Duration,
) -> Result<(), String> {
    if let Some(sleep) = &handler.sleep {
        tokio::time::sleep(Duration::from_secs(sleep.seconds.max(0) as u64)).await;
        return Ok(());
    }
    let probe = Probe {
        exec: handler.exec.clone(),
        http_get: handler.http_get.clone(),
        tcp_socket: handler.tcp_socket.clone(),
        ..Default::default()
    };
    match tokio::time::timeout(
        timeout,
        try_once(runtime, &probe, container, target, timeout),
    )
    .await
    {
        Ok(result) => result,
        Err(_) => Err(format!("timed out after {}s", timeout.as_secs())),
    }
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

/// GET over HTTP/1.1; the status code.
async fn http_get(
    host: IpAddr,
    port: u16,
    path: &str,
    headers: &[(String, String)],
) -> Result<u16, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect((host, port))
        .await
        .map_err(|e| {
            format!("Get \"http://{host}:{port}{path}\": dial tcp {host}:{port}: connect: {e}")
        })?;
    let mut request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: kube-probe/1.33\r\nAccept: */*\r\nConnection: close\r\n"
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut head = Vec::new();
    let mut buffer = [0u8; 512];
    while !head.windows(2).any(|w| w == b"\r\n") {
        let n = stream.read(&mut buffer).await.map_err(|e| e.to_string())?;
        if n == 0 || head.len() > 8192 {
            break;
        }
        head.extend_from_slice(&buffer[..n]);
    }
    let line = String::from_utf8_lossy(&head);
    line.split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| format!("Get \"http://{host}:{port}{path}\": malformed HTTP response"))
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
