//! WebSocket through the edge with third-party clients: tokio-tungstenite and
//! Python `websockets`, over cleartext and TLS, with and without token auth.

mod support;

use futures_util::{SinkExt, StreamExt};
use support::*;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

fn config(ws_origin: std::net::SocketAddr) -> String {
    format!(
        r#"
[edge]
cores = 2
admin = "@ADMIN@"
[[listener]]
addr = "@LISTEN@"
[[listener]]
addr = "@TLS_LISTEN@"
tls = {{ cert = "@CERT@", key = "@KEY@" }}
[[tunnel]]
name = "echo"
hostnames = ["echo.test", "localhost"]
upstream = "{ws_origin}"
[[tunnel]]
name = "auth"
hostnames = ["auth.test"]
upstream = "{ws_origin}"
token_auth = true
tokens = ["t0ken-A", "t0ken-B"]
"#
    )
}

async fn echo_rounds<S>(ws: &mut tokio_tungstenite::WebSocketStream<S>, n: usize)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    for i in 0..n {
        let payload = random_bytes(100 + i * 1000, i as u64);
        ws.send(Message::binary(payload.clone())).await.unwrap();
        let got = ws.next().await.unwrap().unwrap();
        assert_eq!(got.into_data(), payload, "echo {i}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tungstenite_cleartext_and_tls() {
    let (origin, mut heads) = ws_echo_origin().await;
    let edge = Edge::start(&config(origin));

    let mut req = format!("ws://{}/chat?room=1", edge.addr)
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("host", "Echo.Test".parse().unwrap());
    let (mut ws, resp) = tokio_tungstenite::connect_async(req).await.unwrap();
    assert_eq!(resp.status(), 101);
    echo_rounds(&mut ws, 20).await;
    ws.close(None).await.unwrap();
    let h = heads.recv().await.unwrap();
    let get = |n: &str| h.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    assert_eq!(get("x-forwarded-for").as_deref(), Some("127.0.0.1"));
    assert_eq!(get("x-forwarded-proto").as_deref(), Some("http"));
    assert_eq!(get(":path").as_deref(), Some("/chat?room=1"));

    let tls = tls_connect(&edge, "echo.test").await;
    let (mut ws, _) = tokio_tungstenite::client_async("wss://echo.test/chat", tls)
        .await
        .unwrap();
    echo_rounds(&mut ws, 20).await;
    ws.close(None).await.unwrap();
    let h = heads.recv().await.unwrap();
    assert!(h
        .iter()
        .any(|(k, v)| k == "x-forwarded-proto" && v == "https"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_auth_header_and_query_are_checked_and_stripped() {
    let (origin, mut heads) = ws_echo_origin().await;
    let edge = Edge::start(&config(origin));

    let mut req = format!("ws://{}/x", edge.addr)
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("host", "auth.test".parse().unwrap());
    req.headers_mut()
        .insert("authorization", "Bearer t0ken-A".parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    echo_rounds(&mut ws, 2).await;
    let h = heads.recv().await.unwrap();
    assert!(
        !h.iter().any(|(k, _)| k == "authorization"),
        "proof must be stripped: {h:?}"
    );

    let mut req = format!("ws://{}/x?a=1&rstream.token=t0ken-B", edge.addr)
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("host", "auth.test".parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    echo_rounds(&mut ws, 2).await;
    let h = heads.recv().await.unwrap();
    assert!(
        h.iter().any(|(k, v)| k == ":path" && v == "/x?a=1"),
        "{h:?}"
    );

    let mut req = format!("ws://{}/x", edge.addr)
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("host", "auth.test".parse().unwrap());
    match tokio_tungstenite::connect_async(req).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status(), 401);
            assert_eq!(resp.headers()["www-authenticate"], "Bearer");
        }
        other => panic!("expected 401, got {other:?}"),
    }
    assert!(
        heads.try_recv().is_err(),
        "a refused request never reaches the upstream"
    );
    let log = edge.log();
    assert!(
        log.contains("rejected: unauthorized: no token presented"),
        "{log}"
    );
    assert!(
        !log.contains("t0ken-A") && !log.contains("t0ken-B"),
        "tokens never logged"
    );
}

fn run_python(args: &[&str]) -> (i32, String) {
    let out = std::process::Command::new(python())
        .arg(py_script("ws_client.py"))
        .args(args)
        .output()
        .expect("python3 with `websockets` (scripts/test.sh installs it)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_websockets_cleartext_and_tls() {
    let (origin, _heads) = ws_echo_origin().await;
    let edge = Edge::start(&config(origin));
    let plain = format!("ws://localhost:{}/py", edge.addr.port());
    let tls = format!("wss://localhost:{}/py", edge.tls_addr.port());
    let cafile = edge.cert_pem.to_str().unwrap().to_owned();
    let (e1, o1, e2, o2) = tokio::task::spawn_blocking(move || {
        let (e1, o1) = run_python(&[&plain, "--count", "50", "--size", "4096"]);
        let (e2, o2) = run_python(&[
            &tls, "--cafile", &cafile, "--count", "50", "--size", "70000",
        ]);
        (e1, o1, e2, o2)
    })
    .await
    .unwrap();
    assert_eq!((e1, o1.trim()), (0, "ok 50"));
    assert_eq!((e2, o2.trim()), (0, "ok 50"));
}
