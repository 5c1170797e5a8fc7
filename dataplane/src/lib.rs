//! Switchyard data plane: a thread-per-core edge that relays HTTP connection
//! upgrades (WebSocket, any `Upgrade:`, Xray-style HTTPUpgrade, CONNECT).
//!
//! The life of a TCP connection, one module per step:
//!
//! ```text
//! listener ─► transport ─────────► downstream::{h1,h2} ─► intent ─► plan ──────► upstream ─► relay
//!  (accept)   (PROXY v1/v2, TLS,    (drivers; the wire    (what was  (route →      (dial,       (splice or
//!              ALPN, h2c sniff)      is codec::{h1,h2})    asked)     access → auth) sessions,   copy)
//!                                                                                  pools)
//! ```
//!
//! Around that line: `message` (the version-neutral head every codec reads
//! into), `policy` (the one header policy), `answer` (the one answer table
//! for refusals), `core` (what a core shares), `resolve` (upstream names,
//! off the cores). `conn` sequences the steps for one connection; `server`
//! runs one glommio executor per core, each with its own listeners
//! (SO_REUSEPORT), tables, buffers and counters. Protocol logic (codecs,
//! `target`, `intent`, `plan`, `auth`, `policy`, `answer`, `guard`) is
//! sans-IO and unit-tested without sockets; all `unsafe` lives in `sys`.
//! HTTP/3 joins as `h3` (the sans-IO frames, settings, capsules, QPACK) +
//! `downstream::h3` on a per-core QUIC endpoint (DESIGN §3).
//!
//! The public face is small: [`config`], [`server`], [`demo`], [`tls`] (the
//! self-signed certificate the demo and tests use). Everything else is this
//! crate's own; the fuzz targets (`cfg(fuzzing)`) and the benchmarks
//! (feature `internals`) reach it there.
#![warn(missing_docs)]
#![deny(unsafe_code)]
#![deny(unsafe_op_in_unsafe_fn)]

pub mod config;
pub mod demo;
pub mod server;
pub mod tls;

/// Declares modules that are public only to the fuzz targets and the
/// benchmarks.
macro_rules! internal {
    ($($(#[$attr:meta])* $name:ident;)*) => {$(
        $(#[$attr])*
        #[cfg(any(fuzzing, feature = "internals"))]
        #[allow(missing_docs)]
        pub mod $name;
        $(#[$attr])*
        #[cfg(not(any(fuzzing, feature = "internals")))]
        mod $name;
    )*};
}

internal! {
    access;
    admin;
    answer;
    auth;
    codec;
    conn;
    control;
    core;
    downstream;
    error;
    guard;
    // The sans-IO HTTP/3 layer names every setting, capsule type and code
    // of its RFCs, and keeps the buffering capsule reader its tests and
    // fuzz targets use; the relay itself needs only some of them.
    #[allow(dead_code)]
    h3;
    http3;
    intent;
    listener;
    logsafe;
    managed;
    message;
    plan;
    policy;
    proxy_protocol;
    quic;
    relay;
    resolve;
    route;
    stats;
    #[allow(unsafe_code)]
    sys;
    target;
    timeout;
    transport;
    tunnel;
    udp;
    upstream;
    websocket;
}

/// The exact answer of an HTTPUpgrade tunnel (Xray-compatible, DESIGN §6).
pub use downstream::h1::exchange::HTTPUPGRADE_101;
/// Early stream resets an HTTP/2 client address may make in a burst before
/// GOAWAY(ENHANCE_YOUR_CALM) (see README, HTTP/2 limits).
pub use guard::RESET_BURST;
