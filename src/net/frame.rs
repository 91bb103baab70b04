//! Message framing on a byte stream: every message is
//!
//! ```text
//! u32 body_len (little-endian, ≤ the connection's limit, checked before anything is allocated;
//!              the body buffer then grows as its bytes arrive, one 1 MiB step at a time)
//! u32 CRC-32 of the body
//! body
//! ```
//!
//! A length over the limit, a checksum mismatch or a connection that ends mid-frame is an
//! error that closes the connection; nothing of such a frame reaches the layer above.

use crate::limits::FRAME_READ_STEP_BYTES;
use crate::storage::checksum::checksum;
use crate::{Error, Result};
use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Bytes of a frame header.
pub const FRAME_HEADER_BYTES: usize = 8;

fn proto(detail: impl Into<String>) -> Error {
    Error::Protocol(detail.into())
}

/// Reads one frame's body. `Ok(None)` when the peer closed the connection cleanly between
/// frames.
pub async fn read_frame<R: AsyncRead + Unpin>(
    r: &mut R,
    max_body_bytes: usize,
) -> Result<Option<Bytes>> {
    match read_frame_header(r, max_body_bytes).await? {
        None => Ok(None),
        Some(head) => read_frame_body(r, head).await.map(Some),
    }
}

/// A frame's header, read and checked against the limit before its body is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// Body length in bytes (at most the limit it was read with).
    pub body_bytes: usize,
    crc: u32,
}

/// Reads one frame's header (the body length is checked against `max_body_bytes`, nothing is
/// allocated). `Ok(None)` when the peer closed the connection cleanly between frames. A
/// caller that must make room for the body first (a pipelining server) reads the header,
/// waits, then calls [`read_frame_body`].
pub async fn read_frame_header<R: AsyncRead + Unpin>(
    r: &mut R,
    max_body_bytes: usize,
) -> Result<Option<FrameHeader>> {
    let mut head = [0u8; FRAME_HEADER_BYTES];
    // A clean close shows as EOF before the first header byte.
    let n = r.read(&mut head).await.map_err(|e| io_err(e, "read"))?;
    if n == 0 {
        return Ok(None);
    }
    r.read_exact(&mut head[n..])
        .await
        .map_err(|e| io_err(e, "read frame header"))?;
    let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
    let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
    if len > max_body_bytes {
        return Err(proto(format!(
            "frame of {len} bytes exceeds the limit of {max_body_bytes}"
        )));
    }
    Ok(Some(FrameHeader {
        body_bytes: len,
        crc,
    }))
}

/// Reads the body of the frame whose header was `head`, and checks its checksum.
pub async fn read_frame_body<R: AsyncRead + Unpin>(r: &mut R, head: FrameHeader) -> Result<Bytes> {
    // Grown as the bytes arrive, never more than one step ahead of them: the header's length
    // alone allocates nothing large.
    let mut body = BytesMut::with_capacity(head.body_bytes.min(FRAME_READ_STEP_BYTES));
    while body.len() < head.body_bytes {
        let start = body.len();
        let step = (head.body_bytes - start).min(FRAME_READ_STEP_BYTES);
        body.resize(start + step, 0);
        r.read_exact(&mut body[start..])
            .await
            .map_err(|e| io_err(e, "read frame body"))?;
    }
    debug_assert_eq!(body.len(), head.body_bytes);
    if checksum(&body) != head.crc {
        return Err(proto("frame checksum mismatch"));
    }
    Ok(body.freeze())
}

/// Writes one frame (header and body in one buffered write).
pub async fn write_frame<W: AsyncWrite + Unpin>(w: &mut W, body: &[u8]) -> Result<()> {
    let len = u32::try_from(body.len()).map_err(|_| proto("message too large to frame"))?;
    let mut head = [0u8; FRAME_HEADER_BYTES];
    head[..4].copy_from_slice(&len.to_le_bytes());
    head[4..].copy_from_slice(&checksum(body).to_le_bytes());
    if body.len() <= COALESCE_MAX_BODY_BYTES {
        // One write for header and body. Written apart, a body that does not fit the
        // connection's write buffer with the header makes the buffer flush the 8-byte header
        // alone: a packet of its own (TCP_NODELAY) and, over TLS, a record of its own with
        // its own encryption, tag and syscall. Copying up to 256 KiB costs far less.
        let mut frame = Vec::with_capacity(FRAME_HEADER_BYTES + body.len());
        frame.extend_from_slice(&head);
        frame.extend_from_slice(body);
        w.write_all(&frame).await.map_err(|e| io_err(e, "write"))?;
    } else {
        w.write_all(&head).await.map_err(|e| io_err(e, "write"))?;
        w.write_all(body).await.map_err(|e| io_err(e, "write"))?;
    }
    w.flush().await.map_err(|e| io_err(e, "flush"))
}

/// Largest body written in one piece with its header (see [`write_frame`]); a larger one is
/// written after the header, which it amortizes.
const COALESCE_MAX_BODY_BYTES: usize = 256 << 10;

fn io_err(e: std::io::Error, what: &str) -> Error {
    Error::Io {
        path: format!("<network {what}>").into(),
        source: e,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn round_trip_and_rejections() {
        let mut buf = Vec::new();
        write_frame(&mut buf, b"hello").await.unwrap();
        write_frame(&mut buf, b"").await.unwrap();
        let mut r = &buf[..];
        assert_eq!(
            read_frame(&mut r, 16).await.unwrap().unwrap(),
            &b"hello"[..]
        );
        assert_eq!(read_frame(&mut r, 16).await.unwrap().unwrap(), &b""[..]);
        assert!(read_frame(&mut r, 16).await.unwrap().is_none(), "clean end");

        // Over the limit: refused before reading (or allocating) the body.
        let mut r = &buf[..];
        assert!(matches!(
            read_frame(&mut r, 4).await,
            Err(Error::Protocol(_))
        ));

        // A flipped body bit.
        let mut bad = buf.clone();
        bad[FRAME_HEADER_BYTES] ^= 1;
        let mut r = &bad[..];
        assert!(matches!(
            read_frame(&mut r, 16).await,
            Err(Error::Protocol(_))
        ));

        // Cut mid-frame.
        for cut in 1..FRAME_HEADER_BYTES + 5 {
            let mut r = &buf[..cut];
            assert!(read_frame(&mut r, 16).await.is_err(), "cut at {cut}");
        }

        // A length field of u32::MAX never allocates 4 GiB.
        let mut huge = vec![0xff; 4];
        huge.extend_from_slice(&[0; 4]);
        let mut r = &huge[..];
        assert!(matches!(
            read_frame(&mut r, 1 << 20).await,
            Err(Error::Protocol(_))
        ));
    }

    #[tokio::test]
    async fn a_large_body_is_read_in_steps_as_it_arrives() {
        // 3.5 steps of body: read whole, checksum checked.
        let body: Vec<u8> = (0..FRAME_READ_STEP_BYTES * 7 / 2)
            .map(|i| i as u8)
            .collect();
        let mut buf = Vec::new();
        write_frame(&mut buf, &body).await.unwrap();
        let mut r = &buf[..];
        let got = read_frame(&mut r, body.len()).await.unwrap().unwrap();
        assert_eq!(&got[..], &body[..]);
        // A header announcing 64 MiB followed by a few bytes: an error at the end of the
        // input, after at most one step was allocated (the cut input is all there is).
        let mut cut = (64u32 << 20).to_le_bytes().to_vec();
        cut.extend_from_slice(&[0; 4]);
        cut.extend_from_slice(b"short");
        let mut r = &cut[..];
        assert!(read_frame(&mut r, 72 << 20).await.is_err());
    }
}
