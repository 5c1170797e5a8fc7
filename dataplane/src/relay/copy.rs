//! Copy path: one direction through a pooled user-space buffer. Used whenever
//! a leg is not cleartext TCP (TLS today; h2/h3 streams later).

use futures_lite::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::{buffers, is_reset, Activity, DirEnd, Moved};
use crate::codec::h1::parse_response;
use crate::message::BodyFraming;

/// Copies `src` → `dst` until EOF, then closes `dst` for writing (TCP
/// shutdown; on TLS close_notify first).
pub async fn direction<R, W>(mut src: R, mut dst: W, activity: &Activity, moved: &Moved) -> DirEnd
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = buffers::take();
    loop {
        let n = match src.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => n,
            // rustls reports a TCP FIN without close_notify as UnexpectedEof:
            // treat it as the FIN it is.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) => return DirEnd::SourceReset(e),
        };
        if let Err(e) = dst.write_all(&buf[..n]).await {
            return DirEnd::DestinationGone(e);
        }
        if let Err(e) = dst.flush().await {
            return DirEnd::DestinationGone(e);
        }
        moved.add(n);
        activity.touch();
    }
    match dst.close().await {
        Err(e) if is_reset(&e) => DirEnd::DestinationGone(e),
        _ => DirEnd::Eof,
    }
}

/// [`direction`], after first writing `first` to `dst`.
pub async fn direction_after<R, W>(
    first: Vec<u8>,
    src: R,
    mut dst: W,
    activity: &Activity,
    moved: &Moved,
) -> DirEnd
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    if !first.is_empty() {
        if let Err(e) = dst.write_all(&first).await {
            return DirEnd::DestinationGone(e);
        }
        moved.add(first.len());
    }
    drop(first);
    direction(src, dst, activity, moved).await
}

/// Most bytes read and dropped after a forwarded request's body, so that
/// closing the connection does not answer a pipelining client with RST and
/// destroy the answer in flight.
const DRAIN_AFTER_BODY: usize = 64 * 1024;

/// Copies the rest of one request body `src` → `dst`, exactly as `framing`
/// delimits it, and leaves `dst` open (the upstream answers after it). A
/// client that closes inside the body, or chunked framing that goes wrong,
/// aborts the request: the upstream must not act on a truncated or
/// ambiguous body. Bytes after the body are read and dropped (bounded).
pub async fn body<R, W>(
    mut framing: BodyFraming,
    mut src: R,
    mut dst: W,
    activity: &Activity,
    moved: &Moved,
) -> DirEnd
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = buffers::take();
    let mut done = framing.is_done();
    while !done {
        let n = match src.read(&mut buf).await {
            Ok(0) => return truncated("client closed inside the request body"),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                return truncated("client closed inside the request body")
            }
            Err(e) => return DirEnd::SourceReset(e),
            Ok(n) => n,
        };
        let (take, finished) = framing.advance(&buf[..n]);
        if framing.is_invalid() {
            return truncated("invalid chunked framing in the request body");
        }
        if let Err(e) = dst.write_all(&buf[..take]).await {
            return DirEnd::DestinationGone(e);
        }
        moved.add(take);
        activity.touch();
        done = finished;
    }
    let mut dropped = 0;
    while dropped < DRAIN_AFTER_BODY {
        match src.read(&mut buf).await {
            Ok(n) if n > 0 => dropped += n,
            _ => break,
        }
    }
    DirEnd::Eof
}

fn truncated(why: &'static str) -> DirEnd {
    DirEnd::SourceReset(std::io::Error::new(std::io::ErrorKind::InvalidData, why))
}

/// Copies one response `src` → `dst` (interim 1xx answers, then the final
/// head and its framed body; a close-delimited body until EOF), then closes
/// `dst`. The relay of a forwarded request ends with its response, whether
/// or not the upstream honours `Connection: close`.
pub async fn response<R, W>(
    (method, alt_svc): (&str, Option<&str>),
    max_head: usize,
    mut src: R,
    mut dst: W,
    activity: &Activity,
    moved: &Moved,
) -> DirEnd
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = buffers::take();
    let mut pending: Vec<u8> = Vec::new();
    let mut framing = loop {
        match parse_response(&pending, max_head) {
            Ok(Some((head, len))) => {
                if head.status == 101 {
                    return truncated("101 to a request that asked for no upgrade");
                }
                let written = match alt_svc.filter(|_| head.status >= 200) {
                    // Before the head's final CRLF.
                    Some(v) => {
                        let mut h = Vec::with_capacity(len + v.len() + 11);
                        h.extend_from_slice(&pending[..len - 2]);
                        h.extend_from_slice(b"Alt-Svc: ");
                        h.extend_from_slice(v.as_bytes());
                        h.extend_from_slice(b"\r\n\r\n");
                        dst.write_all(&h).await
                    }
                    None => dst.write_all(&pending[..len]).await,
                };
                if let Err(e) = written {
                    return DirEnd::DestinationGone(e);
                }
                moved.add(len);
                activity.touch();
                pending.drain(..len);
                if head.status >= 200 {
                    break BodyFraming::of_response(method, &head);
                }
            }
            Ok(None) => {}
            Err(_) => return truncated("upstream answer is not an HTTP/1.1 response"),
        }
        match src.read(&mut buf).await {
            Ok(0) => return truncated("upstream closed before its answer"),
            Ok(n) => pending.extend_from_slice(&buf[..n]),
            Err(e) => return DirEnd::SourceReset(e),
        }
    };
    let mut chunk = std::mem::take(&mut pending);
    loop {
        let (take, done) = framing.advance(&chunk);
        if let Err(e) = dst.write_all(&chunk[..take]).await {
            return DirEnd::DestinationGone(e);
        }
        moved.add(take);
        activity.touch();
        if done {
            break;
        }
        let n = match src.read(&mut buf).await {
            Ok(0) if framing == BodyFraming::UntilClose => break,
            Ok(0) => return truncated("upstream closed inside the response body"),
            Ok(n) => n,
            Err(e) => return DirEnd::SourceReset(e),
        };
        chunk = buf[..n].to_vec();
    }
    match dst.close().await {
        Err(e) if is_reset(&e) => DirEnd::DestinationGone(e),
        _ => DirEnd::Eof,
    }
}
