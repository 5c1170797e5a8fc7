//! Codecs: each HTTP version's wire format ↔ the version-neutral
//! [`crate::message`], server and client side, and nothing else (no I/O, no
//! routing, no policy).
//!
//! | version | server side (downstream) | client side (upstream) |
//! |---|---|---|
//! | HTTP/1.1 | [`h1::parse_request`] | [`h1::encode_request`], [`h1::parse_response`] |
//! | HTTP/2 | [`h2::request_head`] (the `h2` crate does the framing) | [`h2::request`] |
//! | HTTP/3 | `h3` (next): our own sans-IO layer on quinn-proto | `h3` |

pub mod h1;
pub mod h2;
