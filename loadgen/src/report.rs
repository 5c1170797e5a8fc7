//! Results: merged across cores, printed as text, written as JSON and as an
//! SVG latency-percentile plot.
//!
//! The SVG is drawn by hand (a polyline on log-scaled percentile axes, as
//! HdrHistogram's plotter does): plotting crates would pull in font and
//! raster stacks for one line chart.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::modes::CoreResult;

/// Latency percentiles in µs.
#[derive(Debug, Serialize)]
pub struct Latency {
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Largest sample.
    pub max: u64,
    /// Mean.
    pub mean: f64,
    /// Number of samples.
    pub samples: u64,
}

/// The whole run.
#[derive(Debug, Serialize)]
pub struct Report {
    /// Mode name.
    pub mode: String,
    /// Handshake.
    pub via: String,
    /// Target address.
    pub target: String,
    /// TLS used.
    pub tls: bool,
    /// Connections requested.
    pub connections: usize,
    /// Connections that completed the handshake.
    pub established: u64,
    /// Wall time in seconds.
    pub elapsed_s: f64,
    /// Completed operations.
    pub ops: u64,
    /// Operations per second.
    pub ops_per_s: f64,
    /// Payload bytes received.
    pub bytes: u64,
    /// Received payload throughput in GB/s (10^9 bytes).
    pub gbytes_per_s: f64,
    /// Failures by kind.
    pub errors: BTreeMap<String, u64>,
    /// Latency (µs).
    pub latency_us: Latency,
    #[serde(skip)]
    hist: Option<Histogram<u64>>,
}

impl Report {
    /// Merges per-core results.
    pub fn merge(head: ReportHead, cores: Vec<CoreResult>, elapsed_s: f64) -> Report {
        let mut hist: Histogram<u64> = Histogram::new_with_bounds(1, 120_000_000, 3)
            .unwrap_or_else(|_| unreachable!("static bounds"));
        let (mut ops, mut bytes, mut established) = (0, 0, 0);
        let mut errors = BTreeMap::new();
        for c in cores {
            let _ = hist.add(&c.hist);
            ops += c.ops;
            bytes += c.bytes;
            established += c.established;
            for (k, v) in c.errors {
                *errors.entry(k).or_default() += v;
            }
        }
        let q = |p: f64| {
            if hist.is_empty() {
                0
            } else {
                hist.value_at_quantile(p)
            }
        };
        Report {
            mode: head.mode,
            via: head.via,
            target: head.target,
            tls: head.tls,
            connections: head.connections,
            established,
            elapsed_s,
            ops,
            ops_per_s: ops as f64 / elapsed_s.max(1e-9),
            bytes,
            gbytes_per_s: bytes as f64 / elapsed_s.max(1e-9) / 1e9,
            errors,
            latency_us: Latency {
                p50: q(0.5),
                p90: q(0.9),
                p99: q(0.99),
                p999: q(0.999),
                max: hist.max(),
                mean: hist.mean(),
                samples: hist.len(),
            },
            hist: Some(hist),
        }
    }

    /// Human-readable summary.
    pub fn text(&self) -> String {
        let l = &self.latency_us;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "mode {} via {} → {}{}",
            self.mode,
            self.via,
            self.target,
            if self.tls { " (TLS)" } else { "" }
        );
        let _ = writeln!(
            s,
            "connections {} established {}  elapsed {:.2}s",
            self.connections, self.established, self.elapsed_s
        );
        let _ = writeln!(
            s,
            "ops {} ({:.0}/s)  received {:.1} MB ({:.3} GB/s)",
            self.ops,
            self.ops_per_s,
            self.bytes as f64 / 1e6,
            self.gbytes_per_s
        );
        let _ = writeln!(
            s,
            "latency µs: p50 {}  p90 {}  p99 {}  p99.9 {}  max {}  mean {:.1}  (n={})",
            l.p50, l.p90, l.p99, l.p999, l.max, l.mean, l.samples
        );
        if self.errors.is_empty() {
            let _ = writeln!(s, "errors: none");
        } else {
            for (k, v) in &self.errors {
                let _ = writeln!(s, "errors: {v} × {k}");
            }
        }
        s
    }

    /// Latency percentile distribution as SVG.
    pub fn svg(&self) -> String {
        let w = 800.0;
        let h = 480.0;
        let (left, right, top, bottom) = (70.0, 20.0, 40.0, 50.0);
        let max_x = 5.0; // up to 99.999%
        let mut points: Vec<(f64, f64)> = Vec::new();
        if let Some(hist) = &self.hist {
            if !hist.is_empty() {
                for i in 0..=200 {
                    let x = max_x * i as f64 / 200.0;
                    let q = 1.0 - 10f64.powf(-x);
                    points.push((x, hist.value_at_quantile(q) as f64));
                }
            }
        }
        let max_y = points.iter().map(|p| p.1).fold(1.0, f64::max) * 1.1;
        let px = |x: f64| left + x / max_x * (w - left - right);
        let py = |y: f64| h - bottom - y / max_y * (h - top - bottom);
        let mut s = format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
        );
        let _ = writeln!(
            s,
            "<text x=\"{}\" y=\"22\" text-anchor=\"middle\" font-size=\"15\">Latency by percentile — {} via {} ({} ops)</text>",
            w / 2.0,
            self.mode,
            self.via,
            self.ops
        );
        for (x, label) in [
            (0.0, "0%"),
            (1.0, "90%"),
            (2.0, "99%"),
            (3.0, "99.9%"),
            (4.0, "99.99%"),
            (5.0, "99.999%"),
        ] {
            let _ = writeln!(
                s,
                "<line x1=\"{0}\" y1=\"{1}\" x2=\"{0}\" y2=\"{2}\" stroke=\"#ddd\"/><text x=\"{0}\" y=\"{3}\" text-anchor=\"middle\">{label}</text>",
                px(x),
                top,
                h - bottom,
                h - bottom + 18.0
            );
        }
        for i in 0..=5 {
            let y = max_y * i as f64 / 5.0;
            let _ = writeln!(
                s,
                "<line x1=\"{left}\" y1=\"{0}\" x2=\"{1}\" y2=\"{0}\" stroke=\"#eee\"/><text x=\"{2}\" y=\"{3}\" text-anchor=\"end\">{4:.0}</text>",
                py(y),
                w - right,
                left - 6.0,
                py(y) + 4.0,
                y
            );
        }
        let _ = writeln!(
            s,
            "<text x=\"16\" y=\"{}\" transform=\"rotate(-90 16 {})\" text-anchor=\"middle\">latency (µs)</text>",
            h / 2.0,
            h / 2.0
        );
        let _ = writeln!(
            s,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">percentile</text>",
            w / 2.0,
            h - 10.0
        );
        let path: Vec<String> = points
            .iter()
            .map(|(x, y)| format!("{:.1},{:.1}", px(*x), py(*y)))
            .collect();
        let _ = writeln!(
            s,
            "<polyline fill=\"none\" stroke=\"#1f77b4\" stroke-width=\"2\" points=\"{}\"/>",
            path.join(" ")
        );
        s.push_str("</svg>\n");
        s
    }
}

/// Run identity for the report.
#[derive(Debug, Clone)]
pub struct ReportHead {
    /// Mode name.
    pub mode: String,
    /// Handshake.
    pub via: String,
    /// Target.
    pub target: String,
    /// TLS.
    pub tls: bool,
    /// Connections.
    pub connections: usize,
}
