//! Copy path: one direction through a pooled user-space buffer. Used whenever
//! a leg is not cleartext TCP (TLS today; h2/h3 streams later).

use futures_lite::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::{buffers, is_reset, Activity, DirEnd, Moved};

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
