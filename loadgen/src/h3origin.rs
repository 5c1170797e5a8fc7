//! `loadgen origin h3-echo`: an HTTP/3 origin on UDP, for the edge's h3
//! upstreams (`http_version = "h3"`): an RFC 9220 WebSocket gets 200 and
//! every frame echoed, a plain CONNECT gets 200 and its bytes echoed, any
//! other request a 200 with a short body. Sessions: a WebTransport
//! (draft-02), CONNECT-UDP or CONNECT-IP request gets 200 and its request
//! stream's capsules echoed; every HTTP datagram is echoed as it came (so
//! for CONNECT-UDP it stands in for a MASQUE proxy and a UDP echo behind
//! it), and a WebTransport bidirectional stream's bytes are echoed on it. One QUIC endpoint per core
//! (SO_REUSEPORT), on the edge's own QUIC driver and HTTP/3 layer (glommio
//! has no other QUIC stack). Its certificate is self-signed for
//! `localhost` unless `--cert`/`--key` are given: point the edge's
//! `upstream_tls` at it, or use `insecure = true` in benchmarks.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use dataplane::h3::connection::{self as h3conn, Side};
use dataplane::h3::error::Code;
use dataplane::h3::settings::{id, Settings};
use dataplane::h3::stream::{RequestStream, StreamEvent};
use dataplane::h3::webtransport as wt;
use dataplane::http3::sessions::Sessions;
use dataplane::message::ResponseHead;
use dataplane::quic::{self, RecvStream, SendStream};
use dataplane::relay::h3::H3Stream;
use futures_lite::io::{AsyncReadExt, AsyncWriteExt};

/// The TLS identity of the origin: PEM files, or a fresh self-signed one.
pub fn identity(
    cert: Option<&std::path::Path>,
    key: Option<&std::path::Path>,
) -> std::io::Result<Arc<rustls::ServerConfig>> {
    let (chain, key) = match (cert, key) {
        (Some(c), Some(k)) => {
            let chain =
                rustls_pemfile::certs(&mut std::io::BufReader::new(std::fs::File::open(c)?))
                    .collect::<Result<Vec<_>, _>>()?;
            let key =
                rustls_pemfile::private_key(&mut std::io::BufReader::new(std::fs::File::open(k)?))?
                    .ok_or_else(|| std::io::Error::other("no private key"))?;
            (chain, key)
        }
        _ => {
            let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])
                .map_err(std::io::Error::other)?;
            let key = rustls::pki_types::PrivateKeyDer::Pkcs8(ck.key_pair.serialize_der().into());
            (vec![ck.cert.der().clone()], key)
        }
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(std::io::Error::other)?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(std::io::Error::other)?;
    cfg.alpn_protocols = vec![b"h3".to_vec()];
    Ok(Arc::new(cfg))
}

/// Serves HTTP/3 on `addr` on this core until the process ends.
pub async fn serve(
    addr: SocketAddr,
    tls: Arc<rustls::ServerConfig>,
    keys: quic::Keys,
    core: usize,
) -> std::io::Result<()> {
    let transport = quic::server_transport(1024, 4 << 20, Duration::from_secs(60));
    let server = keys
        .server_config(tls, transport)
        .map_err(std::io::Error::other)?;
    let limits = quic::endpoint::Limits {
        handshakes_before_retry: usize::MAX,
        gso: std::env::var_os("SWITCHYARD_QUIC_NO_GSO").is_none(),
    };
    let ep = quic::Endpoint::bind(
        addr,
        keys.endpoint_config(core, 1452),
        Some(server),
        limits,
        Code::REQUEST_CANCELLED.0,
    )?;
    let admit = |conn: quic::Connection| {
        glommio::spawn_local(connection(conn)).detach();
    };
    ep.run(None, admit, None).await;
    Ok(())
}

async fn connection(conn: quic::Connection) {
    if conn.connected().await.is_err() {
        return;
    }
    let mut local = Settings::default();
    local.set(id::ENABLE_CONNECT_PROTOCOL, 1);
    local.set(id::H3_DATAGRAM, 1);
    local.set(wt::setting::ENABLE_WEBTRANSPORT_DRAFT02, 1);
    let h3 = Rc::new(RefCell::new(h3conn::Connection::new(Side::Server, local)));
    let preface = h3.borrow().control_preface();
    let Ok(_own) = dataplane::http3::own_streams(&conn, preface).await else {
        return;
    };
    let sessions = Sessions::new(Arc::new(dataplane::stats::CoreStats::default()));
    glommio::spawn_local(dataplane::http3::peer_streams(
        conn.clone(),
        h3.clone(),
        sessions.clone(),
        0,
    ))
    .detach();
    glommio::spawn_local(echo_datagrams(conn.clone())).detach();
    while let Ok((send, recv)) = conn.accept_bi().await {
        glommio::spawn_local(request(conn.clone(), sessions.clone(), send, recv)).detach();
    }
}

/// Every HTTP datagram goes back as it came (same quarter stream id).
async fn echo_datagrams(conn: quic::Connection) {
    let mut batch = Vec::new();
    while std::future::poll_fn(|cx| conn.poll_datagrams(cx, &mut batch))
        .await
        .is_ok()
    {
        for d in batch.drain(..) {
            let _ = conn.send_datagram(d);
        }
    }
}

/// A WebTransport bidirectional stream (after its 0x41 signal): the
/// session id, then every byte echoed.
async fn echo_webtransport(mut send: SendStream, mut recv: RecvStream, first: bytes::Bytes) {
    let mut buf = first.to_vec();
    let rest = loop {
        match wt::session_id(&buf) {
            Ok(Some(h)) => break buf.split_off(h.len),
            Ok(None) => {}
            Err(_) => return,
        }
        match recv.chunk(64 * 1024).await {
            Ok(Some(b)) => buf.extend_from_slice(&b),
            _ => return,
        }
    };
    if send.write_all(&rest).await.is_err() {
        return;
    }
    loop {
        match recv.chunk(64 * 1024).await {
            Ok(Some(b)) => {
                if send.write_all(&b).await.is_err() {
                    return;
                }
            }
            Ok(None) => {
                let _ = send.finish();
                return;
            }
            Err(_) => return,
        }
    }
}

async fn request(
    conn: quic::Connection,
    sessions: Rc<Sessions>,
    mut send: SendStream,
    mut recv: RecvStream,
) {
    // The first frame type tells a request from a WebTransport stream (a
    // load generator's first chunk holds it whole).
    let first = match recv.chunk(64 * 1024).await {
        Ok(Some(b)) => b,
        _ => return,
    };
    if let Some((wt::BIDI_SIGNAL, n)) = dataplane::h3::varint::decode(&first) {
        return echo_webtransport(send, recv, first.slice(n..)).await;
    }
    let mut pending = Some(first);
    let mut frames = RequestStream::server(64 * 1024);
    let (fields, rest) = 'head: loop {
        let mut raw = match pending.take() {
            Some(b) => b,
            None => match recv.chunk(64 * 1024).await {
                Ok(Some(b)) => b,
                _ => return,
            },
        };
        while !raw.is_empty() {
            let Ok((used, event)) = frames.read(&raw) else {
                return;
            };
            let head = match event {
                Some(StreamEvent::Head(f)) => Some(f),
                _ => None,
            };
            bytes::Buf::advance(&mut raw, used);
            if let Some(f) = head {
                break 'head (f, raw);
            }
        }
    };
    let Ok(req) = dataplane::codec::h3::request_head(&fields, true) else {
        send.reset(Code::MESSAGE_ERROR.0);
        return;
    };
    let mut out = Vec::new();
    let headers = match req.protocol.as_deref() {
        Some("webtransport") => vec![dataplane::message::Header {
            name: "sec-webtransport-http3-draft".into(),
            value: b"draft02".to_vec(),
        }],
        Some("connect-udp" | "connect-ip") => vec![dataplane::message::Header {
            name: "capsule-protocol".into(),
            value: b"?1".to_vec(),
        }],
        _ => Vec::new(),
    };
    let answer = ResponseHead {
        status: 200,
        reason: String::new(),
        minor_version: 1,
        headers,
    };
    dataplane::codec::h3::encode_response(&answer, &mut out);
    if send.write_all(&out).await.is_err() {
        return;
    }
    let tunnel = req.head.method == "CONNECT";
    let websocket = req.protocol.as_deref() == Some("websocket");
    if !tunnel {
        let _ = dataplane::relay::h3::send_data(&mut send, b"h3 origin\n").await;
        let _ = send.finish();
        return;
    }
    let (mut r, mut w, _reset) = H3Stream {
        conn,
        sessions,
        send,
        recv,
        frames,
        rest,
        capsules: None,
    }
    .split();
    // A session's request stream carries capsules: echoed like CONNECT bytes.
    if websocket {
        let _ = crate::origin::ws_frames(&mut r, &mut w, Vec::new()).await;
    } else {
        let mut buf = vec![0u8; 64 * 1024];
        while let Ok(n) = r.read(&mut buf).await {
            if n == 0 || w.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
    }
    let _ = w.close().await;
}
