//! Switchyard data plane: a thread-per-core edge that relays HTTP connection
//! upgrades (WebSocket, any `Upgrade:`, Xray-style HTTPUpgrade, CONNECT).
//!
//! The life of a TCP connection, one module per step:
//!
//! ```text
//! listener ─► proxy_protocol ─► tls ─► downstream::h1 ─► intent ─► route + auth ─► upstream ─► relay
//!  (accept)     (PROXY v1/v2)   (rustls,   (head,         (what was   (tunnel,       (dial,      (splice or
//!                                ALPN)      sans-IO)       asked)      token)         answer)     copy)
//! ```
//!
//! `conn` sequences the steps for one connection; `server` runs one glommio
//! executor per core, each with its own listeners (SO_REUSEPORT), tables,
//! buffers and counters. Protocol logic (`proxy_protocol`, `downstream::h1`,
//! `intent`, `route`, `auth`) is sans-IO and unit-tested without sockets; all
//! `unsafe` lives in `sys`. HTTP/2 joins at the ALPN decision in `tls`, and
//! HTTP/3 as `downstream::h3` on a per-core QUIC endpoint (DESIGN §3).
#![warn(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]

pub mod admin;
pub mod answer;
pub mod auth;
pub mod codec;
pub mod config;
pub mod conn;
pub mod control;
pub mod core;
pub mod demo;
pub mod downstream;
pub mod error;
pub mod guard;
pub mod intent;
pub mod listener;
pub mod logsafe;
pub mod managed;
pub mod message;
pub mod plan;
pub mod policy;
pub mod proxy_protocol;
pub mod relay;
pub mod resolve;
pub mod route;
pub mod server;
pub mod stats;
pub mod sys;
pub mod target;
pub mod timeout;
pub mod tls;
pub mod transport;
pub mod tunnel;
pub mod upstream;
pub mod websocket;
