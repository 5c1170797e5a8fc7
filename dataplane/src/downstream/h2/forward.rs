//! Ordinary (non-upgrade) requests on an h2 stream, forwarded to the
//! tunnel's upstream over HTTP/1.1 (one request per connection, as on the h1
//! path) or over a pooled h2c connection.
//!
//! The request body is read whole first, up to [`MAX_REQUEST_BODY`] (413
//! beyond): ordinary requests are the side path of a tunnel edge, and a known
//! length keeps the h1 request simple. The response body streams through
//! within the downstream's flow-control window.

use std::rc::Rc;

use bytes::{Bytes, BytesMut};
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use h2::server::SendResponse;
use h2::RecvStream;

use super::{refuse, respond_with, Conn};
use crate::config::UpstreamVersion;
use crate::downstream::h1::{BodyFraming, RequestHead};
use crate::error::Rejection;
use crate::relay::h2::{io_error, send_all};
use crate::route::Tunnel;
use crate::timeout::with_timeout;
use crate::upstream::session::{
    forwardable_fields as end_to_end_fields, is_hop_field, write_h1_fields, Field,
};

/// Largest request body forwarded.
pub const MAX_REQUEST_BODY: usize = 1 << 20;

/// Forwards one request and streams the response back.
pub(super) async fn request(
    conn: &Conn,
    t: &Rc<Tunnel>,
    head: RequestHead,
    parts: http::request::Parts,
    mut body: RecvStream,
    respond: SendResponse<Bytes>,
) {
    let edge = &conn.core.edge;
    let mut collected = BytesMut::new();
    loop {
        match with_timeout(edge.idle_timeout, body.data()).await {
            Some(Some(Ok(b))) => {
                let _ = body.flow_control().release_capacity(b.len());
                if collected.len() + b.len() > MAX_REQUEST_BODY {
                    let rej = Rejection::BodyTooLarge(MAX_REQUEST_BODY);
                    return refuse(conn, respond, rej, Some(&head), Some(t));
                }
                collected.extend_from_slice(&b);
            }
            Some(Some(Err(e))) => {
                tracing::debug!(client = %conn.client, "request body cut short: {e}");
                return;
            }
            Some(None) => break,
            None => return,
        }
    }
    let result = match t.config.http_version {
        UpstreamVersion::Http1 => via_h1(conn, t, &head, &parts, collected.freeze(), respond).await,
        UpstreamVersion::H2c => via_h2c(conn, t, &head, &parts, collected.freeze(), respond).await,
    };
    if let Err((rej, respond)) = result {
        refuse(conn, respond, rej, Some(&head), Some(t));
    }
}

type Failed = (Rejection, SendResponse<Bytes>);

fn path_of(parts: &http::request::Parts) -> String {
    parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "/".into())
}

async fn via_h1(
    conn: &Conn,
    t: &Tunnel,
    head: &RequestHead,
    parts: &http::request::Parts,
    body: Bytes,
    mut respond: SendResponse<Bytes>,
) -> Result<(), Failed> {
    let edge = &conn.core.edge;
    let mut up = match crate::upstream::dial(
        &t.upstream_addrs,
        &t.config.upstream,
        edge.upstream_connect_timeout,
    )
    .await
    {
        Ok(u) => u,
        Err(rej) => return Err((rej, respond)),
    };
    let mut out = format!(
        "{} {} HTTP/1.1\r\nHost: {}\r\n",
        head.method,
        path_of(parts),
        head.host().unwrap_or_default()
    )
    .into_bytes();
    write_h1_fields(&mut out, &end_to_end_fields(head));
    if !body.is_empty() || matches!(head.method.as_str(), "POST" | "PUT" | "PATCH") {
        out.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
    }
    out.extend_from_slice(b"Connection: close\r\n\r\n");
    out.extend_from_slice(&body);
    if let Err(e) = up.write_all(&out).await {
        let rej = Rejection::UpstreamUnreachable {
            addr: t.config.upstream.clone(),
            reason: format!("write failed: {e}"),
        };
        return Err((rej, respond));
    }
    drop(out);
    let answer = match crate::upstream::read_answer(
        &mut up,
        &t.config.upstream,
        edge.max_head_bytes,
        edge.upstream_handshake_timeout,
    )
    .await
    {
        Ok(a) => a,
        Err(rej) => return Err((rej, respond)),
    };
    let fields: Vec<Field> = answer
        .head
        .headers
        .iter()
        .filter(|h| !is_hop_field(&h.name))
        .map(|h| (h.name.to_ascii_lowercase(), h.value.clone()))
        .collect();
    let mut framing = BodyFraming::of_response(&head.method, &answer.head);
    let (take, done) = framing.advance(&answer.raw[answer.head_len..]);
    let first = Bytes::copy_from_slice(&answer.raw[answer.head_len..answer.head_len + take]);
    let mut builder = http::Response::builder().status(answer.head.status);
    for (name, value) in &fields {
        builder = builder.header(name.as_str(), value.as_slice());
    }
    let Ok(response) = builder.body(()) else {
        let rej = Rejection::UpstreamBadAnswer("response fields not valid in h2".into());
        return Err((rej, respond));
    };
    let no_body = done && first.is_empty();
    let mut send = match respond.send_response(response, no_body) {
        Ok(s) => s,
        Err(_) => return Ok(()),
    };
    if no_body {
        return Ok(());
    }
    if send_all(&mut send, first).await.is_err() {
        return Ok(());
    }
    let mut finished = done;
    let mut buf = vec![0u8; 32 * 1024];
    while !finished {
        let n = match with_timeout(edge.idle_timeout, up.read(&mut buf)).await {
            Some(Ok(n)) if n > 0 => n,
            // A close-delimited body ends at EOF; anything else cut short
            // resets the stream so the client does not take it as complete.
            Some(Ok(_)) if framing == BodyFraming::UntilClose => break,
            _ => {
                send.send_reset(h2::Reason::INTERNAL_ERROR);
                return Ok(());
            }
        };
        let (take, end) = framing.advance(&buf[..n]);
        if send_all(&mut send, Bytes::copy_from_slice(&buf[..take]))
            .await
            .is_err()
        {
            return Ok(());
        }
        finished = end;
    }
    let _ = send.send_data(Bytes::new(), true);
    Ok(())
}

async fn via_h2c(
    conn: &Conn,
    t: &Tunnel,
    head: &RequestHead,
    parts: &http::request::Parts,
    body: Bytes,
    respond: SendResponse<Bytes>,
) -> Result<(), Failed> {
    let edge = &conn.core.edge;
    let slot = match conn
        .core
        .h2c
        .slot(
            t,
            edge.upstream_connect_timeout,
            edge.upstream_handshake_timeout,
        )
        .await
    {
        Ok(s) => s,
        Err(rej) => return Err((rej, respond)),
    };
    let mut send = slot.send;
    let uri = format!(
        "http://{}{}",
        head.host().unwrap_or_default(),
        path_of(parts)
    );
    let mut req = http::Request::builder()
        .method(parts.method.clone())
        .uri(uri);
    for (name, value) in end_to_end_fields(head) {
        req = req.header(name.as_str(), value.as_slice());
    }
    let Ok(req) = req.body(()) else {
        return Err((
            Rejection::NotSupported("request not expressible in h2".into()),
            respond,
        ));
    };
    let (response, mut up_send) = match send.send_request(req, body.is_empty()) {
        Ok(x) => x,
        Err(e) => return Err((Rejection::UpstreamBadAnswer(format!("h2c: {e}")), respond)),
    };
    if !body.is_empty() {
        if let Err(e) = send_all(&mut up_send, body).await {
            return Err((Rejection::UpstreamBadAnswer(format!("h2c: {e}")), respond));
        }
        let _ = up_send.send_data(Bytes::new(), true);
    }
    let response = match with_timeout(edge.upstream_handshake_timeout, response).await {
        Some(Ok(r)) => r,
        Some(Err(e)) => return Err((Rejection::UpstreamBadAnswer(format!("h2c: {e}")), respond)),
        None => {
            let rej = Rejection::UpstreamTimeout {
                addr: t.config.upstream.clone(),
                after: edge.upstream_handshake_timeout,
            };
            return Err((rej, respond));
        }
    };
    let (rparts, mut rbody) = response.into_parts();
    let fields: Vec<Field> = rparts
        .headers
        .iter()
        .filter(|(n, _)| !is_hop_field(n.as_str()))
        .map(|(n, v)| (n.as_str().to_owned(), v.as_bytes().to_vec()))
        .collect();
    if rbody.is_end_stream() {
        respond_with(respond, rparts.status.as_u16(), &fields, Vec::new());
        return Ok(());
    }
    let mut builder = http::Response::builder().status(rparts.status);
    for (name, value) in &fields {
        builder = builder.header(name.as_str(), value.as_slice());
    }
    let Ok(answer) = builder.body(()) else {
        return Err((
            Rejection::UpstreamBadAnswer("bad response fields".into()),
            respond,
        ));
    };
    let mut respond = respond;
    let Ok(mut down) = respond.send_response(answer, false) else {
        return Ok(());
    };
    loop {
        match with_timeout(edge.idle_timeout, rbody.data()).await {
            Some(Some(Ok(b))) => {
                let n = b.len();
                if send_all(&mut down, b).await.is_err() {
                    return Ok(());
                }
                let _ = rbody.flow_control().release_capacity(n);
            }
            Some(None) => break,
            Some(Some(Err(e))) => {
                tracing::debug!("h2c response cut short: {}", io_error(e));
                down.send_reset(h2::Reason::INTERNAL_ERROR);
                return Ok(());
            }
            None => {
                down.send_reset(h2::Reason::CANCEL);
                return Ok(());
            }
        }
    }
    let _ = down.send_data(Bytes::new(), true);
    Ok(())
}
