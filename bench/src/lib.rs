//! Benchmark crate. The criterion micro-benchmarks are in `benches/`; the
//! side-by-side comparison against direct connections, HAProxy and nginx is
//! `bench/compare.py` (see README "Benchmarks").
#![forbid(unsafe_code)]
