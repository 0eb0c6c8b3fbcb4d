//! WebSocket (RFC 6455), the server's side, as much as exec, attach and
//! port-forward need: the handshake's accept key, frames read from a
//! client (masked, possibly fragmented) and frames written to it.

use base64::Engine as _;
use tokio::io::{AsyncRead, AsyncReadExt};

const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

pub const OP_CONTINUATION: u8 = 0x0;
pub const OP_TEXT: u8 = 0x1;
pub const OP_BINARY: u8 = 0x2;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
pub const OP_PONG: u8 = 0xA;

/// Close codes used here.
pub const CLOSE_NORMAL: u16 = 1000;
pub const CLOSE_PROTOCOL_ERROR: u16 = 1002;
pub const CLOSE_TOO_BIG: u16 = 1009;

/// `Sec-WebSocket-Accept` for a client's `Sec-WebSocket-Key`.
pub fn accept_key(key: &str) -> String {
    let digest = ring::digest::digest(
        &ring::digest::SHA1_FOR_LEGACY_USE_ONLY,
        format!("{}{GUID}", key.trim()).as_bytes(),
    );
    base64::engine::general_purpose::STANDARD.encode(digest.as_ref())
}

/// A whole message from the client.
#[derive(Debug, PartialEq, Eq)]
pub enum Message {
    /// Text or binary: this protocol treats both as bytes.
    Data(Vec<u8>),
    Ping(Vec<u8>),
    /// The client closes, with its code if it gave one.
    Close(Option<u16>),
}

/// What made the client's frames unreadable, with the code to close with.
#[derive(Debug)]
pub struct ProtocolError {
    pub code: u16,
    pub message: &'static str,
}

/// Reads the client's messages; a message may be `max` bytes at most.
pub struct Reader<R> {
    inner: R,
    max: usize,
    /// A fragmented message being put together.
    partial: Option<Vec<u8>>,
}

impl<R: AsyncRead + Unpin> Reader<R> {
    pub fn new(inner: R, max: usize) -> Reader<R> {
        Reader {
            inner,
            max,
            partial: None,
        }
    }

    /// The next message; `Ok(None)` when the connection ended.
    pub async fn next(&mut self) -> std::io::Result<Result<Option<Message>, ProtocolError>> {
        loop {
            let mut head = [0u8; 2];
            match self.inner.read_exact(&mut head).await {
                Ok(_) => {}
                Err(err) if err.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(Ok(None)),
                Err(err) => return Err(err),
            }
            let fin = head[0] & 0x80 != 0;
            let opcode = head[0] & 0x0F;
            if head[0] & 0x70 != 0 {
                return Ok(Err(protocol("reserved bits set")));
            }
            if head[1] & 0x80 == 0 {
                return Ok(Err(protocol("a client's frame must be masked")));
            }
            let length = match head[1] & 0x7F {
                126 => u64::from(self.inner.read_u16().await?),
                127 => self.inner.read_u64().await?,
                n => u64::from(n),
            };
            let control = opcode & 0x8 != 0;
            if control && (!fin || length > 125) {
                return Ok(Err(protocol("a control frame must be whole and short")));
            }
            let held = self.partial.as_ref().map_or(0, Vec::len) as u64;
            if length + held > self.max as u64 {
                return Ok(Err(ProtocolError {
                    code: CLOSE_TOO_BIG,
                    message: "message too big",
                }));
            }
            let mut mask = [0u8; 4];
            self.inner.read_exact(&mut mask).await?;
            let mut payload = vec![0u8; length as usize];
            self.inner.read_exact(&mut payload).await?;
            for (i, byte) in payload.iter_mut().enumerate() {
                *byte ^= mask[i % 4];
            }
            match opcode {
                OP_CLOSE => {
                    let code =
                        (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]]));
                    return Ok(Ok(Some(Message::Close(code))));
                }
                OP_PING => return Ok(Ok(Some(Message::Ping(payload)))),
                OP_PONG => continue,
                OP_TEXT | OP_BINARY if self.partial.is_some() => {
                    return Ok(Err(protocol("a new message inside a fragmented one")));
                }
                OP_TEXT | OP_BINARY if fin => return Ok(Ok(Some(Message::Data(payload)))),
                OP_TEXT | OP_BINARY => self.partial = Some(payload),
                OP_CONTINUATION => {
                    let Some(mut partial) = self.partial.take() else {
                        return Ok(Err(protocol("a continuation without a message")));
                    };
                    partial.extend_from_slice(&payload);
                    if fin {
                        return Ok(Ok(Some(Message::Data(partial))));
                    }
                    self.partial = Some(partial);
                }
                _ => return Ok(Err(protocol("unknown opcode"))),
            }
        }
    }
}

fn protocol(message: &'static str) -> ProtocolError {
    ProtocolError {
        code: CLOSE_PROTOCOL_ERROR,
        message,
    }
}

/// One unmasked frame, as a server sends it.
pub fn frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 10);
    out.push(0x80 | opcode);
    match payload.len() {
        n if n < 126 => out.push(n as u8),
        n if n <= usize::from(u16::MAX) => {
            out.push(126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(payload);
    out
}

/// A binary message whose first byte is `channel`.
pub fn channel_frame(channel: u8, data: &[u8]) -> Vec<u8> {
    let mut payload = Vec::with_capacity(data.len() + 1);
    payload.push(channel);
    payload.extend_from_slice(data);
    frame(OP_BINARY, &payload)
}

pub fn close_frame(code: u16, reason: &str) -> Vec<u8> {
    let mut payload = code.to_be_bytes().to_vec();
    payload.extend_from_slice(&reason.as_bytes()[..reason.len().min(123)]);
    frame(OP_CLOSE, &payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A frame as a client sends it: masked.
    fn masked(first: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [0x12, 0x34, 0x56, 0x78];
        let mut out = vec![first];
        match payload.len() {
            n if n < 126 => out.push(0x80 | n as u8),
            n => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
        }
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        out
    }

    async fn read_all(bytes: Vec<u8>, max: usize) -> Vec<Result<Message, u16>> {
        let mut reader = Reader::new(std::io::Cursor::new(bytes), max);
        let mut out = Vec::new();
        loop {
            match reader.next().await {
                Ok(Ok(Some(message))) => out.push(Ok(message)),
                Ok(Ok(None)) => return out,
                Ok(Err(err)) => {
                    out.push(Err(err.code));
                    return out;
                }
                Err(_) => return out,
            }
        }
    }

    #[test]
    fn the_accept_key_is_the_rfcs_example() {
        assert_eq!(
            accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[tokio::test]
    async fn masked_and_fragmented_messages_are_put_together() {
        let long = vec![7u8; 300];
        let mut bytes = masked(0x82, b"\x00hello");
        bytes.extend(masked(0x02, b"\x01par"));
        bytes.extend(masked(0x89, b"ping"));
        bytes.extend(masked(0x80, b"ts"));
        bytes.extend(masked(0x82, &long));
        bytes.extend(masked(0x88, &1000u16.to_be_bytes()));
        assert_eq!(
            read_all(bytes, 1024).await,
            vec![
                Ok(Message::Data(b"\x00hello".to_vec())),
                Ok(Message::Ping(b"ping".to_vec())),
                Ok(Message::Data(b"\x01parts".to_vec())),
                Ok(Message::Data(long)),
                Ok(Message::Close(Some(1000))),
            ]
        );
    }

    #[tokio::test]
    async fn unmasked_oversized_and_stray_frames_are_refused() {
        assert_eq!(
            read_all(vec![0x82, 0x01, 0x00], 1024).await,
            vec![Err(CLOSE_PROTOCOL_ERROR)]
        );
        assert_eq!(
            read_all(masked(0x82, &[0; 200]), 100).await,
            vec![Err(CLOSE_TOO_BIG)]
        );
        assert_eq!(
            read_all(masked(0x80, b"x"), 100).await,
            vec![Err(CLOSE_PROTOCOL_ERROR)]
        );
    }

    #[test]
    fn frames_carry_their_length_in_the_shortest_form() {
        assert_eq!(frame(OP_BINARY, b"ab"), vec![0x82, 2, b'a', b'b']);
        let medium = frame(OP_BINARY, &[0; 200]);
        assert_eq!(&medium[..4], &[0x82, 126, 0, 200]);
        let large = frame(OP_BINARY, &[0; 70_000]);
        assert_eq!(&large[..2], &[0x82, 127]);
        assert_eq!(large.len(), 70_000 + 10);
        assert_eq!(channel_frame(3, b"{}"), vec![0x82, 3, 3, b'{', b'}']);
        assert_eq!(close_frame(1000, ""), vec![0x88, 2, 0x03, 0xE8]);
    }
}
