//! HTTP/3 as a sans-IO layer (RFC 9114, RFC 9204, RFC 9297): bytes and
//! events in, bytes and events out; no sockets, no clock. quinn-proto
//! carries the streams and datagrams; this layer gives them HTTP meaning.
//!
//! Why by hand: the released `h3` crate (0.0.8) accepts only `webtransport`
//! and `connect-udp` as `:protocol`, has no capsules, and loses header order
//! and duplicates through `http::HeaderMap`; a relay needs all three. The
//! pieces where a well-kept crate fits are taken from one (Huffman coding
//! for QPACK).
//!
//! | module | what |
//! |---|---|
//! | [`varint`] | QUIC variable-length integers |
//! | [`frame`] | frames: a reader for a stream's bytes, encoders |
//! | [`settings`] | SETTINGS, in wire order, with the receipt checks |
//! | [`qpack`] | field sections: static table, literals, Huffman; capacity 0 |
//! | [`capsule`] | the Capsule Protocol of extended CONNECT streams |
//! | [`stream`] | one request stream: head, body, trailers, in the allowed order |
//! | [`connection`] | unidirectional streams: control (SETTINGS, GOAWAY), QPACK, pushes, unknown |
//! | [`error`] | every HTTP/3, QPACK and datagram error code |
//! | [`webtransport`] | WebTransport stream headers, HTTP datagram quarter ids, draft settings |

pub mod capsule;
pub mod connection;
pub mod error;
pub mod frame;
pub mod qpack;
pub mod settings;
pub mod stream;
pub mod varint;
pub mod webtransport;
