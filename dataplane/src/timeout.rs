//! Timeouts as a race against a glommio timer.

use std::future::Future;
use std::time::{Duration, Instant};

use futures_lite::FutureExt;

/// `Some(output)` if `fut` finishes within `dur`, else `None` (and `fut` is dropped,
/// which cancels its in-flight io_uring operations).
pub async fn with_timeout<T>(dur: Duration, fut: impl Future<Output = T>) -> Option<T> {
    async { Some(fut.await) }
        .or(async {
            glommio::timer::sleep(dur).await;
            None
        })
        .await
}

/// Like [`with_timeout`] with an absolute deadline.
pub async fn until<T>(deadline: Instant, fut: impl Future<Output = T>) -> Option<T> {
    with_timeout(deadline.saturating_duration_since(Instant::now()), fut).await
}
