//! `pods/exec`, `pods/attach` and `pods/portforward`: a stream between the
//! client and a container (or a pod's ports) through the pod's node
//! agent, as kube-apiserver makes it.
//!
//! kubectl speaks WebSocket (`v5.channel.k8s.io` for exec and attach, and
//! `SPDY/3.1+portforward.k8s.io`, SPDY frames inside WebSocket messages,
//! for port-forward) and falls back to SPDY/3.1 on the raw connection. The
//! agent, like containerd behind it, speaks SPDY/3.1 only. So a SPDY
//! client's connection is spliced to the agent's; a WebSocket client's is
//! translated: its channels become SPDY streams for exec and attach, and
//! its messages' payload is the SPDY connection for port-forward.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{Mutex, Notify, Semaphore};

use crate::proxy::{self, KubeletClient, PROTOCOL_HEADER};
use crate::rest::{ApiState, Target};
use crate::spdy::{self, Frame};
use crate::status::ApiError;
use crate::websocket::{self, Message};

/// Streams open at once at most; beyond, 429.
const SESSIONS_MAX: usize = 256;
static SESSIONS: Semaphore = Semaphore::const_new(SESSIONS_MAX);
/// A stream with no traffic either way for this long is closed (kubelet's
/// default streaming idle timeout).
const IDLE_TIMEOUT: Duration = Duration::from_secs(4 * 3600);
/// How long the agent may take to accept the streams.
const REPLY_TIMEOUT: Duration = Duration::from_secs(30);
/// A WebSocket message from the client, at most.
const MESSAGE_MAX: usize = 4 * 1024 * 1024;
const CHUNK: usize = 32 * 1024;
/// How long a client has to answer a close frame.
const CLOSE_WAIT: Duration = Duration::from_secs(5);

const V5: &str = "v5.channel.k8s.io";
const V4: &str = "v4.channel.k8s.io";
const PORT_FORWARD: &str = "portforward.k8s.io";
const PORT_FORWARD_TUNNEL: &str = "SPDY/3.1+portforward.k8s.io";

/// WebSocket channels of the remote-command protocol.
const STDIN: u8 = 0;
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const ERROR: u8 = 3;
const RESIZE: u8 = 4;
/// v5: the client closed one of its channels (the next byte).
const CLOSE: u8 = 255;

/// What a remote command asks for, from the query.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Options {
    pub container: Option<String>,
    pub command: Vec<String>,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

impl Options {
    pub fn parse(query: &str) -> Result<Options, ApiError> {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query)
            .map_err(|e| ApiError::bad_request(format!("invalid query: {e}")))?;
        let mut options = Options::default();
        for (name, value) in pairs {
            let flag = matches!(value.as_str(), "true" | "1");
            match name.as_str() {
                "container" => options.container = Some(value),
                "command" => options.command.push(value),
                "stdin" => options.stdin = flag,
                "stdout" => options.stdout = flag,
                "stderr" => options.stderr = flag,
                "tty" => options.tty = flag,
                _ => {}
            }
        }
        // A terminal merges stderr into stdout (kubelet drops it too).
        options.stderr &= !options.tty;
        Ok(options)
    }

    /// The agent's query: kubelet's names for the streams.
    fn agent_query(&self) -> String {
        let mut query: Vec<String> = self
            .command
            .iter()
            .map(|c| format!("command={}", proxy::encode(c)))
            .collect();
        for (name, on) in [
            ("input", self.stdin),
            ("output", self.stdout),
            ("error", self.stderr),
            ("tty", self.tty),
        ] {
            if on {
                query.push(format!("{name}=1"));
            }
        }
        query.join("&")
    }
}

/// How the client wants to talk.
#[derive(Debug, PartialEq, Eq)]
enum Client {
    /// WebSocket with this subprotocol.
    WebSocket { key: String, protocol: &'static str },
    /// SPDY/3.1 with these protocol versions, the client's preference first.
    Spdy { protocols: Vec<String> },
}

fn client_protocol(headers: &HeaderMap, port_forward: bool) -> Result<Client, ApiError> {
    let upgrade = headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    if upgrade == "websocket" {
        let key = headers
            .get("sec-websocket-key")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| ApiError::bad_request("the WebSocket key is missing"))?
            .to_string();
        let offered: Vec<String> = headers
            .get_all("sec-websocket-protocol")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|p| p.trim().to_string())
            .collect();
        let supported: &[&'static str] = if port_forward {
            &[PORT_FORWARD_TUNNEL]
        } else {
            &[V5, V4]
        };
        let protocol = supported
            .iter()
            .find(|p| offered.iter().any(|o| o == *p))
            .ok_or_else(|| {
                ApiError::bad_request(format!(
                    "unable to upgrade: none of the requested subprotocols {offered:?} is supported ({supported:?})"
                ))
            })?;
        return Ok(Client::WebSocket { key, protocol });
    }
    if upgrade.starts_with("spdy/3.1") {
        let protocols = headers
            .get_all(PROTOCOL_HEADER)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|p| p.trim().to_string())
            .filter(|p| !p.is_empty())
            .collect();
        return Ok(Client::Spdy { protocols });
    }
    Err(ApiError::bad_request("Upgrade request required"))
}

/// GET or POST pods/{name}/{exec,attach,portforward}.
pub async fn connect(
    api: &ApiState,
    kubelet: &KubeletClient,
    target: &Target,
    mut request: Request,
) -> Result<Response, ApiError> {
    let subresource = target.subresource.as_deref().unwrap_or_default();
    let port_forward = subresource == "portforward";
    let options = Options::parse(request.uri().query().unwrap_or_default())?;
    if subresource == "exec" && options.command.is_empty() {
        return Err(ApiError::bad_request(
            "you must specify at least one command for the container",
        ));
    }
    if !(port_forward || options.stdin || options.stdout || options.stderr) {
        return Err(ApiError::bad_request(
            "you must specify at least 1 of stdin, stdout, stderr",
        ));
    }
    let pod = api.object(target).await?;
    let name = pod["metadata"]["name"].as_str().unwrap_or_default();
    let namespace = target.namespace.as_deref().unwrap_or("default");
    let Some(node) = pod["spec"]["nodeName"].as_str().filter(|n| !n.is_empty()) else {
        return Err(ApiError::bad_request(format!(
            "pod {name} does not have a host assigned"
        )));
    };
    let path = if port_forward {
        format!("/portForward/{namespace}/{name}")
    } else {
        let container = proxy::container_for(&pod, options.container.as_deref())
            .map_err(ApiError::bad_request)?;
        format!(
            "/{subresource}/{namespace}/{name}/{container}?{}",
            options.agent_query()
        )
    };
    let client = client_protocol(request.headers(), port_forward)?;
    let Ok(permit) = SESSIONS.try_acquire() else {
        return Err(ApiError::too_many_requests());
    };
    let (address, port) = proxy::node_endpoint(api, node).await?;
    let wanted = match &client {
        Client::WebSocket { .. } if port_forward => vec![PORT_FORWARD.to_string()],
        Client::WebSocket { .. } => vec![V4.to_string()],
        Client::Spdy { protocols } => protocols.clone(),
    };
    let (agent, chosen) = kubelet.upgrade(address, port, &path, &wanted).await?;
    let upgrade = hyper::upgrade::on(&mut request);
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    match client {
        Client::WebSocket { key, protocol } => {
            headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
            let accept = HeaderValue::from_str(&websocket::accept_key(&key))
                .map_err(|e| ApiError::bad_request(e.to_string()))?;
            headers.insert("sec-websocket-accept", accept);
            headers.insert("sec-websocket-protocol", HeaderValue::from_static(protocol));
            let streams = Streams::of(&options);
            let v5 = protocol == V5;
            tokio::spawn(async move {
                let _permit = permit;
                let Ok(client) = upgrade.await else { return };
                if port_forward {
                    tunnel(TokioIo::new(client), TokioIo::new(agent)).await;
                } else {
                    translate(TokioIo::new(client), TokioIo::new(agent), streams, v5).await;
                }
            });
        }
        Client::Spdy { .. } => {
            headers.insert(header::UPGRADE, HeaderValue::from_static("SPDY/3.1"));
            if let Ok(chosen) = HeaderValue::from_str(&chosen) {
                headers.insert(PROTOCOL_HEADER, chosen);
            }
            tokio::spawn(async move {
                let _permit = permit;
                let Ok(client) = upgrade.await else { return };
                splice(TokioIo::new(client), TokioIo::new(agent)).await;
            });
        }
    }
    Ok(response)
}

/// When traffic last passed, for the idle timeout.
struct Activity {
    start: Instant,
    last: AtomicU64,
}

impl Activity {
    fn new() -> Arc<Activity> {
        Arc::new(Activity {
            start: Instant::now(),
            last: AtomicU64::new(0),
        })
    }

    fn touch(&self) {
        let now = self.start.elapsed().as_secs();
        self.last.store(now, Ordering::Relaxed);
    }

    /// Ends once nothing passed for [`IDLE_TIMEOUT`].
    async fn idle(&self) {
        loop {
            let last = Duration::from_secs(self.last.load(Ordering::Relaxed));
            let quiet = self.start.elapsed().saturating_sub(last);
            if quiet >= IDLE_TIMEOUT {
                return;
            }
            tokio::time::sleep(IDLE_TIMEOUT - quiet).await;
        }
    }
}

/// Copies one way until the end, then shuts the writer down.
async fn pump(
    mut from: impl AsyncRead + Unpin,
    mut to: impl AsyncWrite + Unpin,
    activity: &Activity,
) {
    let mut buffer = vec![0u8; CHUNK];
    loop {
        match from.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                activity.touch();
                if to.write_all(&buffer[..n]).await.is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown().await;
}

/// A SPDY client's connection joined to the agent's.
async fn splice<C, A>(client: C, agent: A)
where
    C: AsyncRead + AsyncWrite + Unpin,
    A: AsyncRead + AsyncWrite + Unpin,
{
    let activity = Activity::new();
    let (client_read, client_write) = tokio::io::split(client);
    let (agent_read, agent_write) = tokio::io::split(agent);
    tokio::select! {
        _ = async {
            tokio::join!(
                pump(client_read, agent_write, &activity),
                pump(agent_read, client_write, &activity),
            )
        } => {}
        _ = activity.idle() => {}
    }
}

/// Port-forward over WebSocket: the client's messages carry the SPDY
/// connection, which goes to the agent as is; the agent's bytes go back
/// as binary messages.
async fn tunnel<C, A>(client: C, agent: A)
where
    C: AsyncRead + AsyncWrite + Unpin,
    A: AsyncRead + AsyncWrite + Unpin,
{
    let activity = Activity::new();
    let (client_read, client_write) = tokio::io::split(client);
    let (mut agent_read, mut agent_write) = tokio::io::split(agent);
    let client = ClientWriter::new(client_write);
    let inbound = async {
        let mut reader = websocket::Reader::new(client_read, MESSAGE_MAX);
        while let Some(message) = client.next(&mut reader).await {
            activity.touch();
            match message {
                Message::Data(bytes) => {
                    if agent_write.write_all(&bytes).await.is_err() {
                        return;
                    }
                }
                Message::Ping(payload) => {
                    let _ = client
                        .send(websocket::frame(websocket::OP_PONG, &payload))
                        .await;
                }
                Message::Close(_) => {
                    client.close(websocket::CLOSE_NORMAL, "").await;
                    return;
                }
            }
        }
    };
    let outbound = async {
        let mut buffer = vec![0u8; CHUNK];
        loop {
            match agent_read.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    activity.touch();
                    let frame = websocket::frame(websocket::OP_BINARY, &buffer[..n]);
                    if client.send(frame).await.is_err() {
                        return;
                    }
                }
            }
        }
        client.close(websocket::CLOSE_NORMAL, "").await;
    };
    session(inbound, outbound, &activity, &client).await;
}

async fn send<W: AsyncWrite + Unpin>(writer: &Mutex<W>, bytes: Vec<u8>) -> std::io::Result<()> {
    let mut writer = writer.lock().await;
    writer.write_all(&bytes).await?;
    writer.flush().await
}

/// The WebSocket client's side: frames written one at a time, and the
/// close frame once.
struct ClientWriter<W> {
    writer: Mutex<W>,
    closed: AtomicBool,
}

impl<W: AsyncWrite + Unpin> ClientWriter<W> {
    fn new(writer: W) -> ClientWriter<W> {
        ClientWriter {
            writer: Mutex::new(writer),
            closed: AtomicBool::new(false),
        }
    }

    async fn send(&self, frame: Vec<u8>) -> std::io::Result<()> {
        send(&self.writer, frame).await
    }

    /// The client's next message; `None` once it ended or broke the
    /// protocol (then closed with the code that says how).
    async fn next<R: AsyncRead + Unpin>(
        &self,
        reader: &mut websocket::Reader<R>,
    ) -> Option<Message> {
        match reader.next().await {
            Ok(Ok(message)) => message,
            Ok(Err(err)) => {
                self.close(err.code, err.message).await;
                None
            }
            Err(_) => None,
        }
    }

    async fn close(&self, code: u16, reason: &str) {
        if !self.closed.swap(true, Ordering::SeqCst) {
            let _ = self.send(websocket::close_frame(code, reason)).await;
        }
    }
}

/// Runs a WebSocket session's two directions. When the agent's side ends
/// first, the client has [`CLOSE_WAIT`] to answer the close frame, so
/// that nothing it sent is left unread (which would reset the
/// connection); then the connection is shut down.
async fn session<W: AsyncWrite + Unpin>(
    inbound: impl Future<Output = ()>,
    outbound: impl Future<Output = ()>,
    activity: &Activity,
    client: &ClientWriter<W>,
) {
    tokio::pin!(inbound);
    tokio::select! {
        _ = &mut inbound => {}
        _ = outbound => {
            let _ = tokio::time::timeout(CLOSE_WAIT, &mut inbound).await;
        }
        _ = activity.idle() => client.close(websocket::CLOSE_NORMAL, "idle").await,
    }
    let _ = client.writer.lock().await.shutdown().await;
}

/// The SPDY streams of a remote command, by id (0: not opened).
#[derive(Clone, Copy, Debug, Default)]
struct Streams {
    error: u32,
    stdin: u32,
    stdout: u32,
    stderr: u32,
    resize: u32,
}

impl Streams {
    /// Odd ids from 1, in the order kubectl opens them.
    fn of(options: &Options) -> Streams {
        let mut next = 1;
        let mut take = |on: bool| {
            if !on {
                return 0;
            }
            let id = next;
            next += 2;
            id
        };
        Streams {
            error: take(true),
            stdin: take(options.stdin),
            stdout: take(options.stdout),
            stderr: take(options.stderr),
            resize: take(options.tty),
        }
    }

    fn opened(&self) -> Vec<(u32, &'static str)> {
        [
            (self.error, "error"),
            (self.stdin, "stdin"),
            (self.stdout, "stdout"),
            (self.stderr, "stderr"),
            (self.resize, "resize"),
        ]
        .into_iter()
        .filter(|(id, _)| *id != 0)
        .collect()
    }
}

/// Exec and attach for a WebSocket client: channels to and from the
/// agent's SPDY streams (v4 toward the agent, which the client's v5 and
/// v4 both map onto; v5's close of stdin becomes the stream's FIN).
async fn translate<C, A>(client: C, agent: A, streams: Streams, v5: bool)
where
    C: AsyncRead + AsyncWrite + Unpin,
    A: AsyncRead + AsyncWrite + Unpin,
{
    let activity = Activity::new();
    let (client_read, client_write) = tokio::io::split(client);
    let (mut agent_read, agent_write) = tokio::io::split(agent);
    let client = ClientWriter::new(client_write);
    let agent_write = Mutex::new(agent_write);
    let ready = Notify::new();

    let mut opening = Vec::new();
    let mut headers = spdy::Writer::default();
    for (id, kind) in streams.opened() {
        opening.extend(headers.syn_stream(id, &[("streamtype", kind)], false));
    }
    if send(&agent_write, opening).await.is_err() {
        return;
    }

    let inbound = async {
        ready.notified().await;
        let mut reader = websocket::Reader::new(client_read, MESSAGE_MAX);
        while let Some(message) = client.next(&mut reader).await {
            activity.touch();
            let frame = match message {
                Message::Data(bytes) => match bytes.split_first() {
                    Some((&STDIN, data)) if streams.stdin != 0 && !data.is_empty() => {
                        spdy::data(streams.stdin, data, false)
                    }
                    Some((&RESIZE, data)) if streams.resize != 0 => {
                        spdy::data(streams.resize, data, false)
                    }
                    Some((&CLOSE, [STDIN, ..])) if v5 && streams.stdin != 0 => {
                        spdy::data(streams.stdin, &[], true)
                    }
                    _ => continue,
                },
                Message::Ping(payload) => {
                    let _ = client
                        .send(websocket::frame(websocket::OP_PONG, &payload))
                        .await;
                    continue;
                }
                Message::Close(_) => {
                    client.close(websocket::CLOSE_NORMAL, "").await;
                    return;
                }
            };
            if send(&agent_write, frame).await.is_err() {
                return;
            }
        }
    };

    let outbound = async {
        let replies_due = streams.opened().len();
        let mut replied = 0;
        let deadline = tokio::time::Instant::now() + REPLY_TIMEOUT;
        // The streams the agent writes to, until each ends.
        let mut open: Vec<u32> = [streams.error, streams.stdout, streams.stderr]
            .into_iter()
            .filter(|id| *id != 0)
            .collect();
        let mut error: Vec<u8> = Vec::new();
        let mut error_sent = false;
        let failure = loop {
            let frame = if replied < replies_due {
                match tokio::time::timeout_at(deadline, spdy::read_frame(&mut agent_read)).await {
                    Ok(frame) => frame,
                    Err(_) => break Some("the node agent did not accept the streams in time"),
                }
            } else {
                spdy::read_frame(&mut agent_read).await
            };
            let Ok(Some(frame)) = frame else { break None };
            activity.touch();
            let mut ended = None;
            match frame {
                Frame::Data { stream, fin, data } => {
                    let channel = if stream == streams.stdout {
                        Some(STDOUT)
                    } else if stream == streams.stderr {
                        Some(STDERR)
                    } else {
                        None
                    };
                    if let Some(channel) = channel.filter(|_| !data.is_empty()) {
                        if client
                            .send(websocket::channel_frame(channel, &data))
                            .await
                            .is_err()
                        {
                            return;
                        }
                    } else if stream == streams.error && error.len() < MESSAGE_MAX {
                        error.extend_from_slice(&data);
                    }
                    if fin {
                        ended = Some(stream);
                    }
                }
                Frame::Control {
                    kind,
                    flags,
                    payload,
                } => {
                    let id = Frame::control_id(&payload);
                    match kind {
                        spdy::SYN_REPLY => {
                            replied += 1;
                            if replied == replies_due {
                                ready.notify_one();
                            }
                            if flags & spdy::FLAG_FIN != 0 {
                                ended = id;
                            }
                        }
                        spdy::RST_STREAM => ended = id,
                        spdy::PING => {
                            let _ = send(&agent_write, spdy::ping(id.unwrap_or_default())).await;
                        }
                        spdy::GOAWAY => break None,
                        _ => {}
                    }
                }
            }
            if let Some(stream) = ended {
                open.retain(|id| *id != stream);
                if stream == streams.error && !error_sent {
                    error_sent = true;
                    if !error.is_empty() {
                        let _ = client.send(websocket::channel_frame(ERROR, &error)).await;
                    }
                }
                if open.is_empty() {
                    break None;
                }
            }
        };
        if let Some(message) = failure {
            error = failure_status(message);
        }
        if !error_sent && !error.is_empty() {
            let _ = client.send(websocket::channel_frame(ERROR, &error)).await;
        }
        let _ = send(&agent_write, spdy::goaway(0)).await;
        // The client may wait for the streams no longer.
        ready.notify_one();
        client.close(websocket::CLOSE_NORMAL, "").await;
    };
    session(inbound, outbound, &activity, &client).await;
}

/// The error channel's Status for a stream that failed before its command ran.
fn failure_status(message: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": "InternalError",
        "code": 500,
    }))
    .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn bytes(data: &[u8]) -> Bytes {
        Bytes::copy_from_slice(data)
    }

    #[test]
    fn options_keep_every_command_word_and_map_to_kubelets_names() {
        let options = Options::parse(
            "command=sh&command=-c&command=echo+%22a+b%22&container=web&stdin=true&stdout=true&stderr=false&tty=1",
        )
        .unwrap();
        assert_eq!(options.command, ["sh", "-c", "echo \"a b\""]);
        assert_eq!(options.container.as_deref(), Some("web"));
        assert!(options.stdin && options.stdout && !options.stderr && options.tty);
        assert_eq!(
            options.agent_query(),
            "command=sh&command=-c&command=echo%20%22a%20b%22&input=1&output=1&tty=1"
        );
        let streams = Streams::of(&options);
        assert_eq!(
            streams.opened(),
            [(1, "error"), (3, "stdin"), (5, "stdout"), (7, "resize")]
        );
    }

    #[test]
    fn the_client_protocol_is_websocket_or_spdy_as_asked() {
        let mut headers = HeaderMap::new();
        assert!(client_protocol(&headers, false).is_err());
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        headers.insert("sec-websocket-key", HeaderValue::from_static("k"));
        headers.insert(
            "sec-websocket-protocol",
            HeaderValue::from_static("v4.channel.k8s.io, v5.channel.k8s.io"),
        );
        assert_eq!(
            client_protocol(&headers, false).unwrap(),
            Client::WebSocket {
                key: "k".into(),
                protocol: V5
            }
        );
        assert!(client_protocol(&headers, true).is_err());
        let mut spdy = HeaderMap::new();
        spdy.insert(header::UPGRADE, HeaderValue::from_static("SPDY/3.1"));
        spdy.append(
            PROTOCOL_HEADER,
            HeaderValue::from_static("v4.channel.k8s.io"),
        );
        spdy.append(
            PROTOCOL_HEADER,
            HeaderValue::from_static("v3.channel.k8s.io"),
        );
        assert_eq!(
            client_protocol(&spdy, false).unwrap(),
            Client::Spdy {
                protocols: vec!["v4.channel.k8s.io".into(), "v3.channel.k8s.io".into()]
            }
        );
    }

    /// A client's masked binary message.
    fn client_message(payload: &[u8]) -> Vec<u8> {
        let mut out = vec![0x82, 0x80 | payload.len() as u8, 0, 0, 0, 0];
        out.extend_from_slice(payload);
        out
    }

    #[tokio::test]
    async fn channels_become_streams_and_the_status_ends_the_session() {
        let (client, mut kubectl) = tokio::io::duplex(64 * 1024);
        let (agent, mut containerd) = tokio::io::duplex(64 * 1024);
        let options = Options {
            stdin: true,
            stdout: true,
            stderr: true,
            ..Default::default()
        };
        let session = tokio::spawn(translate(client, agent, Streams::of(&options), true));
        // The agent sees the four streams opened, and accepts them.
        let mut opened = Vec::new();
        for _ in 0..4 {
            match spdy::read_frame(&mut containerd).await.unwrap().unwrap() {
                Frame::Control {
                    kind: spdy::SYN_STREAM,
                    payload,
                    ..
                } => opened.push(Frame::control_id(&payload).unwrap()),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(opened, [1, 3, 5, 7]);
        let mut replies = Vec::new();
        for id in opened {
            let mut payload = id.to_be_bytes().to_vec();
            payload.extend_from_slice(&[0x78, 0x01, 0x00, 4, 0, !4, 0xFF, 0, 0, 0, 0]);
            replies.extend(reply(&payload));
        }
        containerd.write_all(&replies).await.unwrap();
        // stdin from the client, then its close, reach the stdin stream.
        kubectl.write_all(&client_message(b"\x00hi")).await.unwrap();
        kubectl
            .write_all(&client_message(b"\xff\x00"))
            .await
            .unwrap();
        assert_eq!(
            spdy::read_frame(&mut containerd).await.unwrap().unwrap(),
            Frame::Data {
                stream: 3,
                fin: false,
                data: bytes(b"hi")
            }
        );
        assert_eq!(
            spdy::read_frame(&mut containerd).await.unwrap().unwrap(),
            Frame::Data {
                stream: 3,
                fin: true,
                data: bytes(b"")
            }
        );
        // Output and the status come back as channels, then a normal close.
        let status = br#"{"metadata":{},"status":"Success"}"#;
        let mut out = spdy::data(5, b"out", true);
        out.extend(spdy::data(7, b"err", true));
        out.extend(spdy::data(1, status, true));
        containerd.write_all(&out).await.unwrap();
        let mut expected = websocket::channel_frame(STDOUT, b"out");
        expected.extend(websocket::channel_frame(STDERR, b"err"));
        expected.extend(websocket::channel_frame(ERROR, status));
        expected.extend(websocket::close_frame(websocket::CLOSE_NORMAL, ""));
        let mut received = vec![0u8; expected.len()];
        kubectl.read_exact(&mut received).await.unwrap();
        assert_eq!(received, expected);
        // The client answers the close; the connection ends.
        kubectl
            .write_all(&[0x88, 0x82, 0, 0, 0, 0, 0x03, 0xE8])
            .await
            .unwrap();
        session.await.unwrap();
        let mut rest = Vec::new();
        kubectl.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty(), "{rest:?}");
    }

    fn reply(payload: &[u8]) -> Vec<u8> {
        let mut out = vec![0x80, 0x03, 0x00, spdy::SYN_REPLY as u8, 0];
        out.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
        out.extend_from_slice(payload);
        out
    }
}
