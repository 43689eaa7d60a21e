use std::sync::Arc;
use std::time::Duration;

use corral_api::{serve, ApiState};
use corral_model::{Identity, NodeIds, Store};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[tokio::test]
async fn serves_until_shutdown() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let identity = Arc::new(Identity::new(NodeIds {
        mesos_id: "agent-S0".into(),
        ..NodeIds::default()
    }));
    let state = ApiState::new(Arc::new(Store::new()), identity);
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve(listener, state, async {
        let _ = rx.await;
    }));

    // Keep-alive connection, left open across the shutdown: graceful shutdown must close it
    // once its request is answered rather than wait for the client.
    let mut conn = TcpStream::connect(addr).await.unwrap();
    conn.write_all(b"GET /v0/containers HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    while !buf.ends_with(b"\r\n\r\n[]") {
        let n = tokio::time::timeout(Duration::from_secs(10), conn.read(&mut chunk))
            .await
            .unwrap()
            .unwrap();
        assert!(
            n > 0,
            "connection closed early: {}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&chunk[..n]);
    }
    let text = String::from_utf8(buf).unwrap().to_ascii_lowercase();
    assert!(text.starts_with("http/1.1 200 ok\r\n"), "{text}");
    assert!(
        text.contains("content-type: application/json\r\n"),
        "{text}"
    );

    tx.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("serve returns after shutdown")
        .unwrap()
        .unwrap();
    // The server side of the connection is closed.
    let n = tokio::time::timeout(Duration::from_secs(10), conn.read(&mut chunk))
        .await
        .unwrap()
        .unwrap_or(0);
    assert_eq!(n, 0);
}
