//! SPDY/3.1 framing, as much as the API server needs to speak the
//! remote-command protocol to a node agent for a WebSocket client: streams
//! opened with headers, data with FIN, pings echoed. Flow control is not
//! spoken (nor by kubectl's or containerd's SPDY).
//!
//! Header blocks are one zlib stream per direction. The blocks written here
//! are stored (uncompressed) deflate blocks, which every inflater reads,
//! so no compressor or dictionary is needed; the blocks read are skipped.

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt};

const VERSION: u16 = 3;

pub const SYN_STREAM: u16 = 1;
pub const SYN_REPLY: u16 = 2;
pub const RST_STREAM: u16 = 3;
pub const PING: u16 = 6;
pub const GOAWAY: u16 = 7;

pub const FLAG_FIN: u8 = 0x01;

/// A frame's length field is 24 bits.
const LENGTH_MAX: usize = 0xFF_FFFF;

#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    Data {
        stream: u32,
        fin: bool,
        data: Bytes,
    },
    Control {
        kind: u16,
        flags: u8,
        payload: Bytes,
    },
}

impl Frame {
    /// The stream a control frame is about (SYN_STREAM, SYN_REPLY,
    /// RST_STREAM and HEADERS start with it); PING's id for a ping.
    pub fn control_id(payload: &[u8]) -> Option<u32> {
        let bytes: [u8; 4] = payload.get(..4)?.try_into().ok()?;
        Some(u32::from_be_bytes(bytes) & 0x7FFF_FFFF)
    }
}

/// Reads one frame; `Ok(None)` at the end of the connection between frames.
pub async fn read_frame<R: AsyncRead + Unpin>(reader: &mut R) -> std::io::Result<Option<Frame>> {
    let mut head = [0u8; 8];
    match reader.read_exact(&mut head).await {
        Ok(_) => {}
        Err(err) if err.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(err) => return Err(err),
    }
    let flags = head[4];
    let length = u32::from_be_bytes([0, head[5], head[6], head[7]]) as usize;
    let mut payload = vec![0u8; length];
    reader.read_exact(&mut payload).await?;
    let payload = Bytes::from(payload);
    if head[0] & 0x80 != 0 {
        let version = u16::from_be_bytes([head[0] & 0x7F, head[1]]);
        if version != VERSION {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("SPDY version {version}, not 3"),
            ));
        }
        Ok(Some(Frame::Control {
            kind: u16::from_be_bytes([head[2], head[3]]),
            flags,
            payload,
        }))
    } else {
        Ok(Some(Frame::Data {
            stream: u32::from_be_bytes([head[0], head[1], head[2], head[3]]),
            fin: flags & FLAG_FIN != 0,
            data: payload,
        }))
    }
}

fn control(kind: u16, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 8);
    out.extend_from_slice(&(0x8000 | VERSION).to_be_bytes());
    out.extend_from_slice(&kind.to_be_bytes());
    out.push(flags);
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
    out.extend_from_slice(payload);
    out
}

/// DATA frames for `data` on `stream`, split at the frame's size limit;
/// one empty frame when `data` is empty (to carry a FIN).
pub fn data(stream: u32, data: &[u8], fin: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 8);
    let mut chunks: Vec<&[u8]> = data.chunks(LENGTH_MAX).collect();
    if chunks.is_empty() {
        chunks.push(&[]);
    }
    let last = chunks.len() - 1;
    for (i, chunk) in chunks.into_iter().enumerate() {
        out.extend_from_slice(&(stream & 0x7FFF_FFFF).to_be_bytes());
        out.push(if fin && i == last { FLAG_FIN } else { 0 });
        out.extend_from_slice(&(chunk.len() as u32).to_be_bytes()[1..]);
        out.extend_from_slice(chunk);
    }
    out
}

pub fn ping(id: u32) -> Vec<u8> {
    control(PING, 0, &id.to_be_bytes())
}

pub fn goaway(last_stream: u32) -> Vec<u8> {
    let mut payload = last_stream.to_be_bytes().to_vec();
    payload.extend_from_slice(&0u32.to_be_bytes());
    control(GOAWAY, 0, &payload)
}

/// Writes the frames that carry header blocks: the one zlib stream of
/// this direction.
#[derive(Default)]
pub struct Writer {
    started: bool,
}

impl Writer {
    /// SYN_STREAM opening `stream` with `headers` (names lower case).
    pub fn syn_stream(&mut self, stream: u32, headers: &[(&str, &str)], fin: bool) -> Vec<u8> {
        let mut payload = Vec::new();
        payload.extend_from_slice(&(stream & 0x7FFF_FFFF).to_be_bytes());
        payload.extend_from_slice(&0u32.to_be_bytes()); // associated stream
        payload.extend_from_slice(&[0, 0]); // priority, slot
        payload.extend_from_slice(&self.header_block(headers));
        control(SYN_STREAM, if fin { FLAG_FIN } else { 0 }, &payload)
    }

    /// The zlib form of a header block: the stream's header first, then
    /// stored deflate blocks, never final (the stream goes on), ended by a
    /// sync flush.
    fn header_block(&mut self, headers: &[(&str, &str)]) -> Vec<u8> {
        let mut raw = Vec::new();
        raw.extend_from_slice(&(headers.len() as u32).to_be_bytes());
        for (name, value) in headers {
            for part in [name, value] {
                raw.extend_from_slice(&(part.len() as u32).to_be_bytes());
                raw.extend_from_slice(part.as_bytes());
            }
        }
        let mut out = Vec::with_capacity(raw.len() + 16);
        if !self.started {
            // CMF: deflate, 32 KiB window; FLG: no dictionary, check bits.
            out.extend_from_slice(&[0x78, 0x01]);
            self.started = true;
        }
        for chunk in raw.chunks(usize::from(u16::MAX)) {
            let length = chunk.len() as u16;
            out.push(0x00); // not final, stored; the rest of the byte is padding
            out.extend_from_slice(&length.to_le_bytes());
            out.extend_from_slice(&(!length).to_le_bytes());
            out.extend_from_slice(chunk);
        }
        // A sync flush's empty stored block: an inflater hands out what
        // it holds on reaching it (Go's waits for the next block).
        out.extend_from_slice(&[0x00, 0x00, 0x00, 0xFF, 0xFF]);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_read_back_as_written() {
        let mut writer = Writer::default();
        let mut bytes = writer.syn_stream(1, &[("streamtype", "error")], false);
        bytes.extend(data(3, b"hello", true));
        bytes.extend(ping(2));
        let mut reader = std::io::Cursor::new(bytes);
        let Some(Frame::Control {
            kind,
            flags,
            payload,
        }) = read_frame(&mut reader).await.unwrap()
        else {
            panic!("a control frame");
        };
        assert_eq!((kind, flags), (SYN_STREAM, 0));
        assert_eq!(Frame::control_id(&payload), Some(1));
        assert_eq!(
            read_frame(&mut reader).await.unwrap(),
            Some(Frame::Data {
                stream: 3,
                fin: true,
                data: Bytes::from_static(b"hello")
            })
        );
        let Some(Frame::Control { kind, payload, .. }) = read_frame(&mut reader).await.unwrap()
        else {
            panic!("a ping");
        };
        assert_eq!((kind, Frame::control_id(&payload)), (PING, Some(2)));
        assert_eq!(read_frame(&mut reader).await.unwrap(), None);
    }

    #[test]
    fn header_blocks_are_one_zlib_stream_of_stored_blocks() {
        let mut writer = Writer::default();
        let first = writer.header_block(&[("a", "bc")]);
        let raw = [0, 0, 0, 1, 0, 0, 0, 1, b'a', 0, 0, 0, 2, b'b', b'c'];
        let mut expected = vec![0x78, 0x01, 0x00, 15, 0, !15u8, 0xFF];
        expected.extend_from_slice(&raw);
        expected.extend_from_slice(&[0x00, 0x00, 0x00, 0xFF, 0xFF]);
        assert_eq!(first, expected);
        // The zlib header's check bits: CMF*256 + FLG is a multiple of 31.
        assert_eq!((0x78u32 * 256 + 0x01) % 31, 0);
        // Later blocks continue the stream: no second zlib header.
        let second = writer.header_block(&[("a", "bc")]);
        assert_eq!(second, expected[2..]);
    }

    #[test]
    fn an_empty_fin_is_one_empty_data_frame() {
        assert_eq!(data(5, b"", true), vec![0, 0, 0, 5, FLAG_FIN, 0, 0, 0]);
    }
}
