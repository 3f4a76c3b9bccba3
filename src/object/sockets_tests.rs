//! Sockets that follow their object to a new owner: registered in storage
//! when accepted, listed by the next owner before their edges return, and
//! what the object sends them meanwhile waits for them.

use std::time::Duration;

use ::http::{StatusCode, header};

use super::tests::{get, key, serve};
use super::*;
use crate::id::ObjectKey;
use crate::storage::Db;

const WAIT: Duration = Duration::from_secs(5);

/// Every message is broadcast to every socket as `text:count`; a close is
/// broadcast to the others as `closed:code`.
struct Room;

impl DurableObject for Room {
    async fn new(_: &mut Context) -> Result<Self> {
        Ok(Room)
    }

    async fn fetch(&mut self, ctx: &mut Context, _req: Request) -> Result<Response> {
        let ws = ctx.accept_websocket(&["room"])?;
        Ok(ws.accepted())
    }

    async fn websocket_message(
        &mut self,
        ctx: &mut Context,
        _ws: WebSocket,
        msg: Message,
    ) -> Result<()> {
        let Message::Text(text) = msg else {
            return Ok(());
        };
        let all = ctx.websockets(None);
        for ws in &all {
            ws.send(format!("{text}:{}", all.len()));
        }
        Ok(())
    }

    async fn websocket_close(
        &mut self,
        ctx: &mut Context,
        ws: WebSocket,
        code: u16,
        _reason: String,
    ) -> Result<()> {
        for other in ctx.websockets(None) {
            if other.id() != ws.id() {
                other.send(format!("closed:{code}"));
            }
        }
        Ok(())
    }
}

async fn accept(runtime: &Runtime, k: &ObjectKey) -> SocketLink {
    let mut req = get("/");
    req.headers_mut()
        .insert(header::UPGRADE, "websocket".parse().expect("value"));
    req.headers_mut()
        .insert(header::CONNECTION, "Upgrade".parse().expect("value"));
    let outcome = runtime.fetch(k.clone(), req).await.expect("fetch");
    assert_eq!(outcome.response.status(), StatusCode::SWITCHING_PROTOCOLS);
    outcome.socket.expect("an accepted socket")
}

async fn next(link: &mut SocketLink) -> ServerFrame {
    tokio::time::timeout(WAIT, link.outgoing.recv())
        .await
        .expect("a frame in time")
        .expect("the socket is open")
}

async fn registered(db: &Db, runtime: &Runtime, k: &ObjectKey, n: usize) {
    let shard = runtime.shard_of(k);
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let now = db.object_sockets(shard, k, 100).expect("read").len();
        if now == n {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{now} registrations, expected {n}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn back(link: &SocketLink) -> (Option<StableId>, Registration) {
    let registration = Registration {
        tags: link.tags.clone(),
        attachment: None,
    };
    (Some(link.stable), registration)
}

fn opts(return_wait: Duration) -> RuntimeOptions {
    RuntimeOptions {
        socket_return_wait: return_wait,
        ..RuntimeOptions::default()
    }
}

/// Issue 12: a broadcast made while a socket is between owners reaches it
/// once its edge re-attaches it, before anything later; a client's close
/// deletes its registration.
#[tokio::test]
async fn frames_for_a_socket_between_owners_wait_for_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = Db::open(dir.path()).expect("open db");
    let bindings = || Bindings::new().bind::<Room>("ROOM");
    let k = key("ROOM", "moving");
    let (replicas, runtime) = serve(&db, bindings(), opts(Duration::from_secs(60))).await;
    let (a, b) = (accept(&runtime, &k).await, accept(&runtime, &k).await);
    assert_ne!(a.stable, b.stable);
    registered(&db, &runtime, &k, 2).await;
    // The node goes away (its bridges would tell the edges to re-attach).
    runtime.shutdown().await;
    replicas.shutdown().await;

    // The next owner (a new process over the same storage): `a` comes
    // back first and speaks; the object already counts `b`.
    let (replicas, runtime) = serve(&db, bindings(), opts(Duration::from_secs(60))).await;
    let (stable, reg) = back(&a);
    let mut a2 = runtime
        .socket_reattach(&k, stable, reg, None)
        .await
        .expect("re-attach a");
    runtime
        .socket_message(&k, a2.socket, Message::Text("hello".into()))
        .expect("dispatch");
    assert_eq!(
        next(&mut a2).await,
        ServerFrame::message(Message::Text("hello:2".into()))
    );
    // `b` comes back and finds the broadcast it missed, then what follows.
    let (stable, reg) = back(&b);
    let mut b2 = runtime
        .socket_reattach(&k, stable, reg, None)
        .await
        .expect("re-attach b");
    assert_eq!(b2.tags, vec!["room".to_owned()]);
    runtime
        .socket_message(&k, a2.socket, Message::Text("again".into()))
        .expect("dispatch");
    for expected in ["hello:2", "again:2"] {
        assert_eq!(
            next(&mut b2).await,
            ServerFrame::message(Message::Text(expected.into()))
        );
    }
    assert_eq!(
        next(&mut a2).await,
        ServerFrame::message(Message::Text("again:2".into()))
    );
    // Re-attaching it a second time is refused: it is attached here.
    let (stable, reg) = back(&b);
    assert!(
        runtime
            .socket_reattach(&k, stable, reg, None)
            .await
            .is_err()
    );
    // A client's close forgets the registration.
    runtime
        .socket_closed(&k, b2.socket, 1000, String::new())
        .expect("close");
    assert_eq!(
        next(&mut a2).await,
        ServerFrame::message(Message::Text("closed:1000".into()))
    );
    registered(&db, &runtime, &k, 1).await;
    runtime.shutdown().await;
    replicas.shutdown().await;
}

/// A socket that does not come back within the wait is closed as gone:
/// the object gets its close event (1006) and its registration is deleted.
#[tokio::test]
async fn a_socket_that_does_not_come_back_is_closed_as_gone() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = Db::open(dir.path()).expect("open db");
    let bindings = || Bindings::new().bind::<Room>("ROOM");
    let k = key("ROOM", "left-behind");
    let (replicas, runtime) = serve(&db, bindings(), opts(Duration::from_secs(60))).await;
    let a = accept(&runtime, &k).await;
    let _b = accept(&runtime, &k).await;
    registered(&db, &runtime, &k, 2).await;
    runtime.shutdown().await;
    replicas.shutdown().await;

    let wait = Duration::from_millis(300);
    let (replicas, runtime) = serve(&db, bindings(), opts(wait)).await;
    let (stable, reg) = back(&a);
    let mut a2 = runtime
        .socket_reattach(&k, stable, reg, None)
        .await
        .expect("re-attach");
    runtime
        .socket_message(&k, a2.socket, Message::Text("hi".into()))
        .expect("dispatch");
    assert_eq!(
        next(&mut a2).await,
        ServerFrame::message(Message::Text("hi:2".into()))
    );
    assert_eq!(
        next(&mut a2).await,
        ServerFrame::message(Message::Text("closed:1006".into())),
        "b never came back"
    );
    registered(&db, &runtime, &k, 1).await;
    runtime.shutdown().await;
    replicas.shutdown().await;
}

/// Issue 12: frames an owner released (their writes committed) but that
/// died with it before the edge passed them on reach the socket from the
/// next owner, in order and once: the edge names the highest number it
/// passed on, and the new owner re-sends the kept frames after it. The
/// numbering goes on where the old owner stopped.
#[tokio::test]
async fn frames_released_by_a_dead_owner_come_again_from_the_next() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = Db::open(dir.path()).expect("open db");
    let bindings = || Bindings::new().bind::<Room>("ROOM");
    let keeping = || RuntimeOptions {
        socket_replay: 16,
        ..opts(Duration::from_secs(60))
    };
    let k = key("ROOM", "owner-dies");
    let (replicas, runtime) = serve(&db, bindings(), keeping()).await;
    let (mut a, mut b) = (accept(&runtime, &k).await, accept(&runtime, &k).await);
    registered(&db, &runtime, &k, 2).await;
    for text in ["one", "two", "three"] {
        runtime
            .socket_message(&k, a.socket, Message::Text(text.into()))
            .expect("dispatch");
    }
    let numbered = |text: &str, seq| ServerFrame::Message {
        message: Message::Text(text.into()),
        seq,
    };
    for (seq, text) in [(1, "one:2"), (2, "two:2"), (3, "three:2")] {
        assert_eq!(
            next(&mut a).await,
            numbered(text, seq),
            "one number per broadcast"
        );
    }
    // `b`'s edge passed on only the first; the others were released to
    // it when its node died.
    assert_eq!(next(&mut b).await, numbered("one:2", 1));
    runtime.shutdown().await;
    replicas.shutdown().await;

    let (replicas, runtime) = serve(&db, bindings(), keeping()).await;
    let (stable, reg) = back(&a);
    let a2 = runtime
        .socket_reattach(&k, stable, reg, Some(3))
        .await
        .expect("re-attach a");
    assert!(a2.replay.is_empty(), "a's edge missed nothing");
    let (stable, reg) = back(&b);
    let mut b2 = runtime
        .socket_reattach(&k, stable, reg, Some(1))
        .await
        .expect("re-attach b");
    assert_eq!(
        b2.replay,
        vec![numbered("two:2", 2), numbered("three:2", 3)],
        "what b's edge never got, in order"
    );
    runtime
        .socket_message(&k, a2.socket, Message::Text("four".into()))
        .expect("dispatch");
    assert_eq!(next(&mut b2).await, numbered("four:2", 4));
    runtime.shutdown().await;
    replicas.shutdown().await;
}

/// Without kept frames (`roost dev`) nothing is numbered and nothing is
/// re-sent.
#[tokio::test]
async fn a_node_that_keeps_no_frames_numbers_none() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = Db::open(dir.path()).expect("open db");
    let k = key("ROOM", "unkept");
    let bindings = Bindings::new().bind::<Room>("ROOM");
    let (replicas, runtime) = serve(&db, bindings, opts(Duration::from_secs(60))).await;
    let mut a = accept(&runtime, &k).await;
    runtime
        .socket_message(&k, a.socket, Message::Text("x".into()))
        .expect("dispatch");
    assert_eq!(
        next(&mut a).await,
        ServerFrame::message(Message::Text("x:1".into()))
    );
    let shard = runtime.shard_of(&k);
    assert!(db.object_frames(shard, &k, 10).expect("read").is_empty());
    runtime.shutdown().await;
    replicas.shutdown().await;
}
