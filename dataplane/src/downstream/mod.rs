//! Downstream protocols: how the edge reads a client's request.
//!
//! Each version turns its wire format into the version-neutral
//! [`crate::intent::Intent`] plus a [`h1::RequestHead`]-shaped description of
//! the request, so that routing, auth, upstream dialing and relaying never
//! depend on the downstream version:
//!
//! ```text
//!   h1 (httparse, this module)  ─┐
//!   h2 (h2 crate, ALPN "h2")     ├─► intent ─► route + auth ─► upstream ─► relay
//!   h3 (own sans-IO on quinn)   ─┘
//! ```
//!
//! `h2` plugs in at the ALPN decision in [`crate::tls`], `h3` at the
//! per-core QUIC endpoint ([`crate::quic`], DESIGN §3).

pub mod h1;
pub mod h2;
pub mod h3;
