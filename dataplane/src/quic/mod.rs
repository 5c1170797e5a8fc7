//! QUIC per core: one `quinn-proto` endpoint per core and UDP socket, driven
//! by hand on the core's glommio executor (no locks, nothing crosses cores).
//!
//! quinn-proto is the protocol (packets, loss recovery, streams, TLS via
//! rustls); this module is the I/O around it, the way `quinn` drives it on
//! tokio, made for one thread:
//!
//! ```text
//! UDP socket ──recv (GRO)──► Endpoint::handle ─┬─ new connection → admit (limits, Retry) → spawn driver
//!                                              ├─ datagram of a connection → its queue, wake its driver
//!                                              └─ stateless answer → send
//! driver (one task per connection): events in → timers → transmits (GSO) → endpoint events → app events
//!                                   (wakes the stream readers/writers) → sleep until woken or the next timer
//! ```
//!
//! | module | what |
//! |---|---|
//! | [`cid`] | connection ids that carry the core, masked, validated strictly |
//! | [`endpoint`] | the per-core endpoint: receive loop, admission, sending |
//! | [`steer`] | the kernel steers each datagram to its connection's core (reuseport BPF) |
//! | [`handover`] | datagrams that reached the wrong core anyway go to their owner |
//! | [`connection`] | one connection: its driver task and the state streams share |
//! | [`stream`] | send and receive halves of a stream, as async calls |
//!
//! Why by hand: `quinn` itself needs tokio or async-std and moves work
//! between threads; the product pins every connection to one core.

pub mod cid;
pub mod connection;
pub mod endpoint;
pub mod handover;
pub mod steer;
pub mod stream;

pub use connection::Connection;
pub use endpoint::Endpoint;
pub use stream::{RecvStream, SendStream, StreamError};

use std::sync::Arc;
use std::time::Duration;

use quinn_proto::{EndpointConfig, IdleTimeout, ServerConfig, TransportConfig, VarInt};
use ring::{hkdf, hmac};

/// The secrets every core shares, so that any core's packets are valid for
/// the connection they belong to: the stateless reset key, the key of
/// Retry and address-validation tokens, and the connection-id key.
#[derive(Clone)]
pub struct Keys {
    reset: Arc<hmac::Key>,
    token: Arc<hkdf::Prk>,
    cid: cid::CidKey,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Keys(..)")
    }
}

impl Keys {
    /// Fresh random keys (per process: a restart ends every connection).
    pub fn random() -> Keys {
        let mut reset = [0u8; 64];
        let mut token = [0u8; 64];
        // getrandom fails only without a kernel RNG: nothing would work then.
        getrandom::getrandom(&mut reset).expect("kernel random numbers");
        getrandom::getrandom(&mut token).expect("kernel random numbers");
        Keys {
            reset: Arc::new(hmac::Key::new(hmac::HMAC_SHA256, &reset)),
            token: Arc::new(hkdf::Salt::new(hkdf::HKDF_SHA256, &[]).extract(&token)),
            cid: cid::CidKey::random(),
        }
    }

    /// The endpoint config of `core`: its connection ids, the shared reset
    /// key, the largest UDP payload accepted.
    pub fn endpoint_config(&self, core: usize, max_udp_payload: u16) -> Arc<EndpointConfig> {
        let mut cfg = EndpointConfig::new(self.reset.clone());
        // quinn accepts 1472 by default: never less than that.
        let _ = cfg.max_udp_payload_size(max_udp_payload.max(1472));
        let key = self.cid.clone();
        let core = u8::try_from(core).unwrap_or(u8::MAX);
        cfg.cid_generator(move || Box::new(cid::CoreCids::new(key.clone(), core)));
        Arc::new(cfg)
    }

    /// The key that reads a connection id's core (for the handover).
    pub fn cid_key(&self) -> cid::CidKey {
        self.cid.clone()
    }

    /// A server config over `tls` (TLS 1.3, ALPN h3) with the shared token key.
    pub fn server_config(&self, tls: Arc<rustls::ServerConfig>, transport: TransportConfig) -> Result<Arc<ServerConfig>, String> {
        let crypto = quinn_proto::crypto::rustls::QuicServerConfig::try_from(tls).map_err(|e| e.to_string())?;
        let mut cfg = ServerConfig::new(Arc::new(crypto), self.token.clone());
        cfg.transport_config(Arc::new(transport));
        Ok(Arc::new(cfg))
    }
}

/// Unidirectional streams a peer may have open at once: HTTP/3's control
/// and QPACK streams, and WebTransport's.
pub const MAX_UNI_STREAMS: u32 = 100;
/// Bytes of QUIC datagrams (RFC 9221) held for the connection's datagram
/// task before the oldest are dropped; it also turns on the
/// max_datagram_frame_size transport parameter (HTTP datagrams need it).
pub const DATAGRAM_RECEIVE_BUFFER: usize = 256 * 1024;

/// Path MTU discovery up to `max_udp_payload` (quinn's default is 1452).
pub fn probe_mtu_up_to(t: &mut TransportConfig, max_udp_payload: u16) {
    let mut m = quinn_proto::MtuDiscoveryConfig::default();
    m.upper_bound(max_udp_payload);
    t.mtu_discovery_config(Some(m));
}

/// Transport limits of a server connection: `streams` concurrent request
/// streams, `window` bytes of receive credit per stream, idle for `idle`
/// closes the connection. The connection's own credit starts at the
/// protocol minimum: the caller raises it with what the core's receive
/// budget grants (`Connection::set_receive_window`), so what clients may
/// make one core buffer stays bounded however many connect.
pub fn server_transport(streams: u32, window: u32, idle: Duration) -> TransportConfig {
    let mut t = TransportConfig::default();
    t.max_concurrent_bidi_streams(VarInt::from_u32(streams))
        .max_concurrent_uni_streams(VarInt::from_u32(MAX_UNI_STREAMS))
        .stream_receive_window(VarInt::from_u32(window))
        .receive_window(VarInt::from_u32(crate::guard::PROTOCOL_MIN_WINDOW))
        .max_idle_timeout(IdleTimeout::try_from(idle).ok())
        .datagram_receive_buffer_size(Some(DATAGRAM_RECEIVE_BUFFER));
    t
}
