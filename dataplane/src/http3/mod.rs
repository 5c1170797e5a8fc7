//! HTTP/3 connections over the core's QUIC, the I/O half both sides share:
//! opening this side's control stream (SETTINGS) and QPACK streams, and
//! reading every unidirectional stream the peer opens into the sans-IO
//! [`crate::h3::connection::Connection`]. The downstream server
//! (`downstream::h3`) and the upstream client (`upstream::h3`) both use it.
//! [`sessions`] carries what extended CONNECT sessions add: datagrams and
//! WebTransport streams.

pub mod sessions;

use std::cell::RefCell;
use std::rc::Rc;

use bytes::Bytes;

use crate::h3::connection::{self as h3conn, Event};
use crate::h3::error::{Code, H3Error};
use crate::quic::{self, RecvStream, SendStream, StreamError};
use sessions::{Sessions, WtStream};

/// Opens this side's control stream (with SETTINGS) and QPACK encoder and
/// decoder streams (dynamic table capacity 0: they stay empty).
pub async fn own_streams(quic: &quic::Connection, preface: Vec<u8>) -> Result<Vec<SendStream>, StreamError> {
    let lost = |e| StreamError::ConnectionLost(e);
    let mut control = quic.open_uni().await.map_err(lost)?;
    control.write_all(&preface).await?;
    let mut encoder = quic.open_uni().await.map_err(lost)?;
    encoder.write_all(&[h3conn::stream_type::QPACK_ENCODER as u8]).await?;
    let mut decoder = quic.open_uni().await.map_err(lost)?;
    decoder.write_all(&[h3conn::stream_type::QPACK_DECODER as u8]).await?;
    Ok(vec![control, encoder, decoder])
}

/// Reads every unidirectional stream the peer opens into the connection
/// state; a connection error closes the connection with its code.
pub async fn peer_streams(quic: quic::Connection, h3: Rc<RefCell<h3conn::Connection>>, sessions: Rc<Sessions>, core: usize) {
    while let Ok(recv) = quic.accept_uni().await {
        glommio::spawn_local(peer_stream(quic.clone(), h3.clone(), sessions.clone(), recv, core)).detach();
    }
}

async fn peer_stream(quic: quic::Connection, h3: Rc<RefCell<h3conn::Connection>>, sessions: Rc<Sessions>, mut recv: RecvStream, core: usize) {
    let id = recv.id();
    loop {
        let (data, fin) = match recv.chunk(16 * 1024).await {
            Ok(Some(d)) => (d, false),
            Ok(None) => (Bytes::new(), true),
            Err(StreamError::Reset(_)) => {
                if let Err(e) = h3.borrow_mut().reset_uni(id) {
                    close_for(&quic, &e, core);
                }
                return;
            }
            Err(_) => return,
        };
        let handled = h3.borrow_mut().handle_uni(id, &data, fin);
        if let Err(e) = handled {
            close_for(&quic, &e, core);
            return;
        }
        let mut stop = None;
        let mut webtransport = None;
        while let Some(ev) = h3.borrow_mut().poll_event() {
            match ev {
                Event::Settings(s) => {
                    tracing::trace!(core, settings = ?s.pairs(), "h3 peer settings");
                    if s.h3_datagram() && quic.max_datagram_size().is_none() {
                        // RFC 9297 §2.1.1: H3_DATAGRAM needs QUIC datagrams.
                        let e = H3Error::connection(Code::SETTINGS_ERROR, "H3_DATAGRAM without the max_datagram_frame_size transport parameter");
                        close_for(&quic, &e, core);
                        return;
                    }
                }
                Event::Goaway(g) => {
                    tracing::debug!(core, id = g, "h3 peer GOAWAY");
                    sessions.peer_goaway();
                }
                Event::Unknown { stream_id, .. } if stream_id == id => stop = Some(Code::STREAM_CREATION_ERROR),
                Event::WebTransport { stream_id, rest } if stream_id == id => webtransport = Some(rest),

                _ => {}
            }
        }
        if let Some(code) = stop {
            recv.stop(code.0);
            return;
        }
        if let Some(first) = webtransport {
            // The stream is the session's from here on (its type is read).
            sessions::accept_stream(quic, sessions, WtStream::Uni(recv), Bytes::from(first)).await;
            return;
        }
        if fin {
            return;
        }
    }
}

/// Reads a stream's first varint (its frame or stream type): the value
/// and the bytes after it (`None`: the stream ended or failed first).
pub async fn first_varint(recv: &mut RecvStream) -> Option<(u64, Bytes)> {
    let mut buf = Vec::new();
    loop {
        if let Some((v, n)) = crate::h3::varint::decode(&buf) {
            return Some((v, Bytes::copy_from_slice(&buf[n..])));
        }
        match recv.chunk(64 * 1024).await {
            Ok(Some(b)) if buf.is_empty() => {
                if let Some((v, n)) = crate::h3::varint::decode(&b) {
                    return Some((v, b.slice(n..)));
                }
                buf.extend_from_slice(&b);
            }
            Ok(Some(b)) => buf.extend_from_slice(&b),
            _ => return None,
        }
    }
}

fn close_for(quic: &quic::Connection, e: &H3Error, core: usize) {
    tracing::info!(core, client = %quic.remote_address(), code = %e.code, "h3 connection closed: {}", e.reason);
    quic.close(e.code.0, e.reason.as_bytes());
}

