//! Switchyard's load generator: every protocol the edge speaks, measured with
//! hdrhistogram, thread-per-core (one glommio executor per CPU) so that the
//! generator is not the bottleneck.
//!
//! ```text
//! main: parse CLI → split connections over cores → progress line every second
//! core: connections as local tasks → session (TCP, PROXY, TLS, handshake) → mode loop
//! end:  merge histograms → text summary, --json, --svg
//! ```
#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod datagrams;
pub mod h2;
pub mod h3;
pub mod h3origin;
pub mod httpupgrade;
pub mod modes;
pub mod net;
pub mod origin;
pub mod report;
pub mod session;
pub mod ws;

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_lite::FutureExt;

/// `Some(output)` if `fut` completes within `dur`.
pub async fn with_timeout<T>(dur: Duration, fut: impl Future<Output = T>) -> Option<T> {
    async { Some(fut.await) }
        .or(async {
            glommio::timer::sleep(dur).await;
            None
        })
        .await
}

/// CPUs this process may use (respects `taskset`).
pub fn allowed_cpus() -> Vec<usize> {
    let mut out = Vec::new();
    if let Ok(s) = std::fs::read_to_string("/proc/self/status") {
        if let Some(list) = s.lines().find_map(|l| l.strip_prefix("Cpus_allowed_list:")) {
            for part in list.trim().split(',') {
                match part.split_once('-') {
                    Some((a, b)) => {
                        if let (Ok(a), Ok(b)) = (a.parse::<usize>(), b.parse::<usize>()) {
                            out.extend(a..=b);
                        }
                    }
                    None => out.extend(part.parse::<usize>().ok()),
                }
            }
        }
    }
    if out.is_empty() {
        out.push(0);
    }
    out
}

/// Runs `plan` (with `connections` total) on `cpus`, printing progress to
/// stderr, and returns the merged report.
pub fn run(
    plan: modes::Plan,
    connections: usize,
    cpus: &[usize],
    head: report::ReportHead,
    progress: bool,
) -> report::Report {
    let n = cpus.len().min(connections.max(1));
    let start = Instant::now();
    let mut handles = Vec::new();
    let mut lives = Vec::new();
    let mut first = 0;
    for (i, &cpu) in cpus.iter().take(n).enumerate() {
        let conns = connections / n + usize::from(i < connections % n);
        let mut p = plan.clone();
        p.conns = conns;
        p.first_conn = first;
        first += conns;
        p.requests = plan
            .requests
            .map(|r| r / n as u64 + u64::from((i as u64) < r % n as u64));
        let live = Arc::new(modes::Live::default());
        lives.push(live.clone());
        let h = glommio::LocalExecutorBuilder::new(glommio::Placement::Fixed(cpu))
            .name(&format!("loadgen{i}"))
            .io_memory(1 << 20)
            .spawn(move || async move { modes::run_core(p, live).await })
            .unwrap_or_else(|e| {
                eprintln!("loadgen: cannot start executor on cpu {cpu}: {e}");
                std::process::exit(1)
            });
        handles.push(h);
    }
    let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let joiners: Vec<_> = handles
        .into_iter()
        .map(|h| {
            let done = done.clone();
            std::thread::spawn(move || {
                let r = h.join();
                done.fetch_add(1, Ordering::Relaxed);
                r
            })
        })
        .collect();
    let (mut last_ops, mut last_bytes, mut last_t) = (0u64, 0u64, Instant::now());
    while done.load(Ordering::Relaxed) < n {
        std::thread::sleep(Duration::from_millis(100));
        if progress && last_t.elapsed() >= Duration::from_secs(1) {
            let ops: u64 = lives.iter().map(|l| l.ops.load(Ordering::Relaxed)).sum();
            let bytes: u64 = lives.iter().map(|l| l.bytes.load(Ordering::Relaxed)).sum();
            let errors: u64 = lives.iter().map(|l| l.errors.load(Ordering::Relaxed)).sum();
            let dt = last_t.elapsed().as_secs_f64();
            eprintln!(
                "[{:>5.1}s] {:>10.0} ops/s  {:>8.3} GB/s  total ops {}  errors {}",
                start.elapsed().as_secs_f64(),
                (ops - last_ops) as f64 / dt,
                (bytes - last_bytes) as f64 / dt / 1e9,
                ops,
                errors
            );
            (last_ops, last_bytes, last_t) = (ops, bytes, Instant::now());
        }
    }
    let results: Vec<modes::CoreResult> = joiners
        .into_iter()
        .filter_map(|j| j.join().ok()?.ok())
        .collect();
    report::Report::merge(head, results, start.elapsed().as_secs_f64())
}
