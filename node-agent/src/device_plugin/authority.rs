//! Lets any gRPC client talk to the plugin, whatever `:authority` it sends.
//!
//! The HTTP/2 server under tonic (h2) resets every stream whose `:authority` is not a URI
//! authority, and some clients send the socket path there (`/var/lib/kubelet/...sock`,
//! grpcio's default for `unix:` targets). Each accepted connection is therefore relayed
//! through [`relay`]: bytes from the server go back unchanged; from the client, every
//! HEADERS block is decoded ([`super::hpack`]) and written again with an invalid
//! `:authority` replaced by `localhost`. Everything else passes through byte for byte.
//! A block that cannot be decoded is passed on as it came, and the connection stays
//! verbatim from then on: the server judges it, and only that connection can fail.

use std::pin::Pin;

use futures::Stream;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream};
use tokio::net::UnixListener;

use super::hpack::{self, Decoder, Field};

/// What replaces an `:authority` that is not a URI authority (the kubelet sends it).
pub const FALLBACK_AUTHORITY: &str = "localhost";
/// The client connection preface (RFC 9113 3.4).
const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const FRAME_HEADER_LEN: usize = 9;
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;
/// SETTINGS_MAX_FRAME_SIZE's default: the server accepts no larger frame from the client.
const MAX_FRAME: usize = 16_384;
/// The most a header block may decode to (gRPC's own default limit is 8 KiB or 16 KiB).
const MAX_HEADER_LIST: usize = 64 * 1024;
/// Buffer of the in-process pipe between the relay and the server.
const PIPE_BUFFER: usize = 64 * 1024;

/// Accepts connections on `listener` and yields, for each, the server's end of a relay.
pub fn incoming(
    listener: UnixListener,
) -> Pin<Box<dyn Stream<Item = std::io::Result<DuplexStream>> + Send>> {
    Box::pin(futures::stream::unfold(listener, |listener| async move {
        let next = listener.accept().await.map(|(client, _)| {
            let (server_end, relay_end) = tokio::io::duplex(PIPE_BUFFER);
            tokio::spawn(relay(client, relay_end));
            server_end
        });
        Some((next, listener))
    }))
}

/// Copies the server's bytes to the client and the client's (headers rewritten) to the
/// server until either side closes.
pub async fn relay<C, S>(client: C, server: S)
where
    C: AsyncRead + AsyncWrite + Send + 'static,
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (mut client_read, mut client_write) = tokio::io::split(client);
    let (mut server_read, mut server_write) = tokio::io::split(server);
    let to_client = async {
        let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
        let _ = client_write.shutdown().await;
    };
    let to_server = async {
        let _ = client_to_server(&mut client_read, &mut server_write).await;
        let _ = server_write.shutdown().await;
    };
    tokio::pin!(to_client, to_server);
    // The server closing ends the relay; the client closing first still lets the
    // server's last frames through.
    tokio::select! {
        () = &mut to_client => {}
        () = &mut to_server => to_client.await,
    }
}

/// A frame's 9-byte header.
#[derive(Clone, Copy, Debug)]
struct FrameHeader {
    len: usize,
    kind: u8,
    flags: u8,
    stream: u32,
}

impl FrameHeader {
    fn parse(b: &[u8; FRAME_HEADER_LEN]) -> Self {
        Self {
            len: usize::from(b[0]) << 16 | usize::from(b[1]) << 8 | usize::from(b[2]),
            kind: b[3],
            flags: b[4],
            stream: u32::from_be_bytes([b[5], b[6], b[7], b[8]]) & 0x7fff_ffff,
        }
    }

    fn write(&self, out: &mut Vec<u8>) {
        let len = self.len as u32;
        out.extend_from_slice(&len.to_be_bytes()[1..]);
        out.push(self.kind);
        out.push(self.flags);
        out.extend_from_slice(&self.stream.to_be_bytes());
    }
}

/// A header block being collected: HEADERS, then CONTINUATION until END_HEADERS.
struct Block {
    /// The frames as they came, for when the block is passed on unchanged.
    raw: Vec<u8>,
    fragment: Vec<u8>,
    stream: u32,
    flags: u8,
    priority: Option<[u8; 5]>,
}

/// The client → server direction.
async fn client_to_server<R, W>(from: &mut R, to: &mut W) -> std::io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut preface = [0u8; PREFACE.len()];
    from.read_exact(&mut preface).await?;
    to.write_all(&preface).await?;
    if &preface != PREFACE {
        // Not HTTP/2: the server says so.
        tokio::io::copy(from, to).await?;
        return Ok(());
    }
    let mut decoder = Decoder::default();
    let mut block: Option<Block> = None;
    loop {
        let mut head = [0u8; FRAME_HEADER_LEN];
        from.read_exact(&mut head).await?;
        let h = FrameHeader::parse(&head);
        let in_block = matches!(h.kind, HEADERS | CONTINUATION) && h.len <= MAX_FRAME;
        if !in_block {
            // A frame in the middle of a header block is the client's protocol error.
            if let Some(b) = block.take() {
                to.write_all(&b.raw).await?;
            }
            to.write_all(&head).await?;
            tokio::io::copy(&mut from.take(h.len as u64), to).await?;
            continue;
        }
        let mut payload = vec![0u8; h.len];
        from.read_exact(&mut payload).await?;
        let collected = match collect(block.take(), h, &head, payload) {
            Ok(Collected::More(b)) => {
                block = Some(b);
                continue;
            }
            Ok(Collected::Done(b)) => b,
            Err(raw) => return pass_through(&raw, from, to).await,
        };
        match rewrite(&mut decoder, &collected) {
            Some(frames) => to.write_all(&frames).await?,
            None => return pass_through(&collected.raw, from, to).await,
        }
    }
}

/// From here on, the connection is copied verbatim.
async fn pass_through<R, W>(raw: &[u8], from: &mut R, to: &mut W) -> std::io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    to.write_all(raw).await?;
    tokio::io::copy(from, to).await?;
    Ok(())
}

enum Collected {
    More(Block),
    Done(Block),
}

/// Adds one HEADERS or CONTINUATION frame to the block; `Err` with the raw bytes when the
/// frames make no sense (the server will say why).
fn collect(
    block: Option<Block>,
    h: FrameHeader,
    head: &[u8; FRAME_HEADER_LEN],
    payload: Vec<u8>,
) -> Result<Collected, Vec<u8>> {
    let mut raw = block.as_ref().map(|b| b.raw.clone()).unwrap_or_default();
    raw.extend_from_slice(head);
    raw.extend_from_slice(&payload);
    let mut b = match (block, h.kind) {
        (None, HEADERS) => {
            let (priority, fragment) = headers_fragment(h.flags, &payload).ok_or(raw.clone())?;
            Block {
                raw: Vec::new(),
                fragment: fragment.to_vec(),
                stream: h.stream,
                flags: h.flags,
                priority,
            }
        }
        (Some(mut b), CONTINUATION) if b.stream == h.stream => {
            b.fragment.extend_from_slice(&payload);
            b
        }
        _ => return Err(raw),
    };
    if b.fragment.len() > MAX_HEADER_LIST {
        return Err(raw);
    }
    b.raw = raw;
    if h.flags & END_HEADERS != 0 {
        Ok(Collected::Done(b))
    } else {
        Ok(Collected::More(b))
    }
}

/// A HEADERS payload without its padding and priority: (priority, fragment).
fn headers_fragment(flags: u8, payload: &[u8]) -> Option<(Option<[u8; 5]>, &[u8])> {
    let mut body = payload;
    if flags & PADDED != 0 {
        let (&pad, rest) = body.split_first()?;
        body = rest.get(..rest.len().checked_sub(usize::from(pad))?)?;
    }
    let mut priority = None;
    if flags & PRIORITY != 0 {
        let p: [u8; 5] = body.get(..5)?.try_into().ok()?;
        priority = Some(p);
        body = &body[5..];
    }
    Some((priority, body))
}

/// The block's frames, re-encoded with a usable `:authority`; `None` when it does not
/// decode.
fn rewrite(decoder: &mut Decoder, b: &Block) -> Option<Vec<u8>> {
    let fields = decoder.decode(&b.fragment, MAX_HEADER_LIST).ok()?;
    let encoded = hpack::encode(&fix_authority(fields));
    Some(frames(b, &encoded))
}

/// Replaces an `:authority` that is not a URI authority with [`FALLBACK_AUTHORITY`].
pub fn fix_authority(fields: Vec<Field>) -> Vec<Field> {
    fields
        .into_iter()
        .map(|(name, value)| {
            if name == b":authority" && http::uri::Authority::try_from(value.as_slice()).is_err() {
                (name, FALLBACK_AUTHORITY.as_bytes().to_vec())
            } else {
                (name, value)
            }
        })
        .collect()
}

/// One HEADERS frame (no padding) and as many CONTINUATION frames as the block needs.
fn frames(b: &Block, encoded: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(encoded.len() + 64);
    let first_room = MAX_FRAME - if b.priority.is_some() { 5 } else { 0 };
    let (first, mut rest) = encoded.split_at(encoded.len().min(first_room));
    let mut flags = b.flags & (END_STREAM | PRIORITY);
    if rest.is_empty() {
        flags |= END_HEADERS;
    }
    let prio_len = b.priority.map_or(0, |_| 5);
    FrameHeader {
        len: first.len() + prio_len,
        kind: HEADERS,
        flags,
        stream: b.stream,
    }
    .write(&mut out);
    if let Some(p) = b.priority {
        out.extend_from_slice(&p);
    }
    out.extend_from_slice(first);
    while !rest.is_empty() {
        let (chunk, tail) = rest.split_at(rest.len().min(MAX_FRAME));
        rest = tail;
        FrameHeader {
            len: chunk.len(),
            kind: CONTINUATION,
            flags: if rest.is_empty() { END_HEADERS } else { 0 },
            stream: b.stream,
        }
        .write(&mut out);
        out.extend_from_slice(chunk);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(n: &str, v: &str) -> Field {
        (n.as_bytes().to_vec(), v.as_bytes().to_vec())
    }

    #[test]
    fn only_an_invalid_authority_is_replaced() {
        let fixed = fix_authority(vec![
            field(":authority", "/var/lib/kubelet/device-plugins/a.sock"),
            field(":path", "/v1beta1.DevicePlugin/Allocate"),
        ]);
        assert_eq!(fixed[0], field(":authority", "localhost"));
        assert_eq!(fixed[1], field(":path", "/v1beta1.DevicePlugin/Allocate"));
        for kept in ["localhost", "unix.sock:0", "10.0.0.1:80"] {
            assert_eq!(
                fix_authority(vec![field(":authority", kept)]),
                vec![field(":authority", kept)]
            );
        }
    }

    #[test]
    fn a_padded_prioritised_block_in_continuations_is_rewritten_into_valid_frames() {
        let block = hpack::encode(&[
            field(":method", "POST"),
            field(":authority", "/run/x.sock"),
            field("x-big", &"y".repeat(MAX_FRAME)),
        ]);
        // HEADERS (padded, with priority) carrying 100 bytes, then one CONTINUATION.
        let mut payload = vec![3u8];
        payload.extend_from_slice(&[0, 0, 0, 0, 16]);
        payload.extend_from_slice(&block[..100]);
        payload.extend_from_slice(&[0, 0, 0]);
        let h1 = FrameHeader {
            len: payload.len(),
            kind: HEADERS,
            flags: PADDED | PRIORITY | END_STREAM,
            stream: 1,
        };
        let mut head = Vec::new();
        h1.write(&mut head);
        let head: [u8; 9] = head.try_into().expect("9 bytes");
        let Ok(Collected::More(b)) = collect(None, h1, &head, payload) else {
            panic!("HEADERS without END_HEADERS waits for more");
        };
        let h2 = FrameHeader {
            len: block.len() - 100,
            kind: CONTINUATION,
            flags: END_HEADERS,
            stream: 1,
        };
        let Ok(Collected::Done(b)) = collect(Some(b), h2, &head, block[100..].to_vec()) else {
            panic!("END_HEADERS completes it");
        };
        let out = rewrite(&mut Decoder::default(), &b).expect("decodes");
        // Read the frames back: HEADERS(END_STREAM|PRIORITY) then CONTINUATION(END_HEADERS).
        let first = FrameHeader::parse(out[..9].try_into().expect("9"));
        assert_eq!(
            (first.kind, first.flags, first.len),
            (HEADERS, END_STREAM | PRIORITY, MAX_FRAME)
        );
        let second_at = 9 + first.len;
        let second = FrameHeader::parse(out[second_at..second_at + 9].try_into().expect("9"));
        assert_eq!((second.kind, second.flags), (CONTINUATION, END_HEADERS));
        assert_eq!(out.len(), second_at + 9 + second.len);
        let mut fragment = out[9 + 5..second_at].to_vec();
        fragment.extend_from_slice(&out[second_at + 9..]);
        let fields = Decoder::default()
            .decode(&fragment, 1 << 20)
            .expect("valid HPACK");
        assert_eq!(fields[1], field(":authority", "localhost"));
        assert_eq!(fields[2].1.len(), MAX_FRAME);
    }

    #[test]
    fn nonsense_frames_are_handed_on_unchanged() {
        let h = FrameHeader {
            len: 1,
            kind: CONTINUATION,
            flags: END_HEADERS,
            stream: 1,
        };
        let mut head = Vec::new();
        h.write(&mut head);
        let head: [u8; 9] = head.try_into().expect("9 bytes");
        let Err(raw) = collect(None, h, &head, vec![0x82]) else {
            panic!("CONTINUATION without HEADERS");
        };
        assert_eq!(&raw[..9], &head);
        let bad_pad = FrameHeader {
            kind: HEADERS,
            flags: PADDED | END_HEADERS,
            ..h
        };
        assert!(
            collect(None, bad_pad, &head, vec![9, 0x82]).is_err(),
            "padding longer than the frame"
        );
    }
}
