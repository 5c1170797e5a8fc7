//! The relay's idle timeout: one timer per relay, covering both
//! directions, that ends the relay once no byte moved for `idle`. A moved
//! byte only sets a flag (no clock read on the hot path); the timer looks
//! at it in quarters of the idle period, and is itself polled only when it
//! fired, through a waker of its own.

use std::cell::Cell;
use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use futures_util::task::AtomicWaker;

use super::Ended;

/// Whether a byte moved since the idle timer last looked, shared by both
/// directions of one relay.
#[derive(Debug)]
pub struct Activity(Cell<bool>);

/// The idle timer looks this many times per idle period.
const IDLE_CHECKS: u32 = 4;

impl Activity {
    pub(super) fn new() -> Activity {
        Activity(Cell::new(false))
    }
    /// Records that bytes moved.
    pub fn touch(&self) {
        self.0.set(true);
    }
    /// Ends once `IDLE_CHECKS` checks in a row, `idle / IDLE_CHECKS` apart,
    /// saw no byte move.
    async fn expired(&self, idle: Duration) {
        let mut quiet = 0;
        while quiet < IDLE_CHECKS {
            glommio::timer::sleep(idle / IDLE_CHECKS).await;
            quiet = if self.0.replace(false) { 0 } else { quiet + 1 };
        }
    }
}

/// Runs `work` until it ends, or until no byte moved for `idle` (`None`).
/// The work is pinned by the caller and raced here by reference: an async
/// block that awaited it by value would keep it twice in the state of
/// every idle relay.
///
/// The idle timer is polled only when it woke the relay's task (or on the
/// first poll): the task wakes for every message, and polling a timer costs
/// a clock read and a timer-map lookup each time. The timer gets a waker of
/// its own ([`TimerWake`]) that records its wake before passing it on to
/// the task; a core-wide "some timer fired" count, used before, made every
/// relay poll its timer after any of the core's timers fired (the accept
/// loops' stop checks alone: 20 a second per listener).
pub(super) async fn until_idle<F: Future<Output = Ended>>(
    mut work: std::pin::Pin<&mut F>,
    activity: &Activity,
    idle: Duration,
) -> Option<Ended> {
    let mut timer = pin!(activity.expired(idle));
    let wake = Arc::new(TimerWake {
        fired: AtomicBool::new(true),
        task: AtomicWaker::new(),
    });
    let timer_waker = std::task::Waker::from(wake.clone());
    std::future::poll_fn(|cx| {
        if let Poll::Ready(ended) = work.as_mut().poll(cx) {
            return Poll::Ready(Some(ended));
        }
        if wake.fired.swap(false, Ordering::Relaxed) {
            wake.task.register(cx.waker());
            let mut timer_cx = std::task::Context::from_waker(&timer_waker);
            if timer.as_mut().poll(&mut timer_cx).is_ready() {
                return Poll::Ready(None);
            }
        }
        Poll::Pending
    })
    .await
}

/// The waker an idle timer is polled with: marks that the timer fired,
/// then wakes the relay's task. (`Send + Sync` as `Wake` requires; it only
/// ever runs on the relay's core.)
struct TimerWake {
    fired: AtomicBool,
    task: AtomicWaker,
}

impl std::task::Wake for TimerWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.fired.store(true, Ordering::Relaxed);
        self.task.wake();
    }
}
