//! Tests of [`super::RemoteClient`]: what a caller learns when a node
//! cannot be reached, breaks a call, or does not know `FetchMany`.

use super::*;
use crate::id::ObjectId;
use tokio::io::AsyncReadExt;

fn key() -> ObjectKey {
    ObjectKey::new("COUNTERS", ObjectId::new_unique())
}

fn get() -> Request {
    let mut req = Request::new(Bytes::new());
    *req.uri_mut() = "/counter/a".parse().expect("static uri");
    req
}

#[tokio::test]
async fn a_node_nothing_listens_on_is_unreachable() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    let client = RemoteClient::connect_lazy(addr, RemoteOptions::default()).expect("client");
    let Err(err) = client.fetch(key(), get()).await else {
        panic!("a fetch with no server succeeded");
    };
    assert!(matches!(err, object::Error::Unreachable(_)), "{err:?}");
    let Err(err) = client.call(key(), "m".into(), Bytes::new()).await else {
        panic!("a call with no server succeeded");
    };
    assert!(matches!(err, object::Error::Unreachable(_)), "{err:?}");
}

/// A listener on a loopback port of its own.
async fn listen() -> (tokio::net::TcpListener, std::net::SocketAddr) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    (listener, addr)
}

/// The first connection `listener` accepts, as an HTTP/2 server.
async fn accept_h2(
    listener: &tokio::net::TcpListener,
) -> Option<h2::server::Connection<tokio::net::TcpStream, bytes::Bytes>> {
    let (conn, _) = listener.accept().await.ok()?;
    h2::server::handshake(conn).await.ok()
}

/// A server that accepts connections, reads what the client sends,
/// and hangs up.
async fn hanging_up_server() -> std::net::SocketAddr {
    let (listener, addr) = listen().await;
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let mut buf = [0u8; 1024];
            let _ = conn.read(&mut buf).await;
        }
    });
    addr
}

#[tokio::test]
async fn a_connection_that_breaks_after_sending_is_not_unreachable() {
    // A unary call was written before the connection broke.
    let client = RemoteClient::connect_lazy(hanging_up_server().await, RemoteOptions::default())
        .expect("client");
    let Err(err) = client.call(key(), "m".into(), Bytes::new()).await else {
        panic!("a call the server hung up on succeeded");
    };
    assert!(matches!(err, object::Error::Unavailable(_)), "{err:?}");

    // A fetch goes over a FetchMany stream, and is written only once the
    // stream is open: here it never was, so the fetch was never sent.
    let client = RemoteClient::connect_lazy(hanging_up_server().await, RemoteOptions::default())
        .expect("client");
    let Err(err) = client.fetch(key(), get()).await else {
        panic!("a fetch the server hung up on succeeded");
    };
    assert!(matches!(err, object::Error::Unreachable(_)), "{err:?}");
}

/// An HTTP/2 server that opens every stream as a gRPC answer, reads
/// the first data the client sends on it, and drops the connection.
async fn breaking_stream_server() -> std::net::SocketAddr {
    let (listener, addr) = listen().await;
    tokio::spawn(async move {
        let Some(mut h2) = accept_h2(&listener).await else {
            return;
        };
        let Some(Ok((request, mut respond))) = h2.accept().await else {
            return;
        };
        let response = http::Response::builder()
            .header("content-type", "application/grpc")
            .body(())
            .expect("static response");
        let Ok(_send) = respond.send_response(response, false) else {
            return;
        };
        let mut body = request.into_body();
        tokio::select! {
            _ = body.data() => {}
            _ = std::future::poll_fn(|cx| h2.poll_closed(cx)) => {}
        }
        // Dropping `h2` here closes the connection.
    });
    addr
}

#[tokio::test]
async fn a_stream_that_breaks_after_a_fetch_was_written_leaves_it_unknown() {
    let client =
        RemoteClient::connect_lazy(breaking_stream_server().await, RemoteOptions::default())
            .expect("client");
    let Err(err) = client.fetch(key(), get()).await else {
        panic!("a fetch on a broken stream succeeded");
    };
    assert!(matches!(err, object::Error::Unavailable(_)), "{err:?}");
}

#[tokio::test]
async fn a_node_without_fetch_many_is_sent_unary_fetches() {
    // A gRPC server that knows no Objects method at all: FetchMany and
    // Fetch both answer UNIMPLEMENTED.
    let (listener, addr) = listen().await;
    let incoming = tonic::transport::server::TcpIncoming::from(listener);
    let health = super::super::introspect::health(&[]).await;
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(health)
            .serve_with_incoming(incoming),
    );
    let client = RemoteClient::connect_lazy(addr, RemoteOptions::default()).expect("client");
    assert!(client.inner.mux.usable());
    let Err(err) = client.fetch(key(), get()).await else {
        panic!("a fetch to a server without Objects succeeded");
    };
    // The unary Fetch was sent after the stream was refused, and its
    // own UNIMPLEMENTED is the answer; the stream is not tried again
    // for a while.
    assert!(
        matches!(&err, object::Error::Unavailable(m) if m.contains("Unimplemented")),
        "{err:?}"
    );
    assert!(!client.inner.mux.usable());
}

/// An HTTP/2 server that resets every stream it is sent with `reason`.
async fn resetting_server(reason: h2::Reason) -> std::net::SocketAddr {
    let (listener, addr) = listen().await;
    tokio::spawn(async move {
        let Some(mut h2) = accept_h2(&listener).await else {
            return;
        };
        while let Some(Ok((_request, mut respond))) = h2.accept().await {
            respond.send_reset(reason);
        }
    });
    addr
}

#[tokio::test]
async fn a_stream_the_node_refused_was_never_sent_and_other_resets_are_unknown() {
    let refused = resetting_server(h2::Reason::REFUSED_STREAM).await;
    let client = RemoteClient::connect_lazy(refused, RemoteOptions::default()).expect("client");
    let Err(err) = client.fetch(key(), get()).await else {
        panic!("a refused fetch succeeded");
    };
    assert!(matches!(err, object::Error::Unreachable(_)), "{err:?}");

    // A unary call's stream reset for any other reason may have been
    // processed.
    let reset = resetting_server(h2::Reason::INTERNAL_ERROR).await;
    let client = RemoteClient::connect_lazy(reset, RemoteOptions::default()).expect("client");
    let Err(err) = client.call(key(), "m".into(), Bytes::new()).await else {
        panic!("a reset call succeeded");
    };
    assert!(matches!(err, object::Error::Unavailable(_)), "{err:?}");
    // A fetch is written only on a FetchMany stream that opened: one
    // reset before it opened carried no fetch.
    let Err(err) = client.fetch(key(), get()).await else {
        panic!("a reset fetch succeeded");
    };
    assert!(matches!(err, object::Error::Unreachable(_)), "{err:?}");
}
