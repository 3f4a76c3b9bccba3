//! `ChatRoom`: a WebSocket chat room with stored history (the seed's
//! "Chat Room with WebSockets"), written hibernation-style.
//!
//! Nothing a connection needs lives only in the object: sockets stay in the
//! runtime's hub, each socket's user name is its attachment, messages are in
//! storage, and the id clock is restored from the newest stored message in
//! `new`. The room can therefore be evicted (or the node restarted) without
//! losing a conversation's state.
//!
//! Protocol (the seed's): on connect the client gets
//! `{"type":"history","messages":[...]}` (the last 50, oldest first) and
//! everyone, the newcomer included, gets `{"type":"join",...}`. A frame
//! `{"type":"message","text":"..."}` is stored as `message:<ms>` and
//! broadcast as `{"type":"message",id,name,text,timestamp}`. A closed socket
//! makes the others get `{"type":"leave",...}`. `GET /history` returns the
//! last 100 messages, newest first. Bad frames get an error frame on their
//! own socket only: `{"type":"error","error":code,"message":...}`.
//!
//! Bounded (not in the seed; [`super::AppOptions`]): a room keeps only its
//! newest `chat_history_messages` (older ones are deleted as new ones
//! arrive, a chunk per message at most), takes at most `chat_max_sockets`
//! sockets (503 `room_full`), and refuses texts over
//! `chat_max_message_bytes` with an error frame `message_too_large`.

use http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::object::{
    self, Context, DurableObject, HandlerError, ListOptions, Message, Request, Response,
    StorageError, WebSocket, error_response, is_websocket_upgrade, now_ms, query_param,
};

const PREFIX: &str = "message:";
/// Messages a new connection gets.
const JOIN_HISTORY: usize = 50;
/// Messages `GET /history` returns.
const HTTP_HISTORY: usize = 100;
/// Longest user name, in characters.
const MAX_NAME_CHARS: usize = 64;
const DEFAULT_NAME: &str = "Anonymous";
/// Ids are `message:<ms>` with 13 decimal digits (the seed's format), which
/// sort as numbers only while they all have the same width. Clamping the id
/// clock to at least 10^12 keeps that true until the year 2286 even with a
/// broken wall clock.
const MIN_ID_MS: u64 = 1_000_000_000_000;

/// A stored chat message (the seed's `Message`).
#[derive(Serialize, Deserialize, Debug, Clone)]
struct ChatMessage {
    id: String,
    name: String,
    text: String,
    timestamp: u64,
}

/// The broadcast of a message: `{"type":"message",id,name,text,timestamp}`.
#[derive(Serialize)]
struct MessageFrame<'a> {
    r#type: &'static str,
    #[serde(flatten)]
    message: &'a ChatMessage,
}

/// What each socket carries across evictions.
#[derive(Serialize, Deserialize)]
struct Session {
    name: String,
}

/// Most old messages deleted per new message.
const TRIM_CHUNK: usize = 32;
/// Most stored messages counted when a room starts (a room stored before
/// trimming existed may hold more; it is trimmed a chunk at a time).
const COUNT_AT_MOST: usize = 100_000;

/// The room object.
pub struct ChatRoom {
    /// The last id time handed out (the seed's `lastTimestamp`).
    last_id_ms: u64,
    /// Messages in storage (counted at start, up to [`COUNT_AT_MOST`]).
    stored: usize,
}

impl DurableObject for ChatRoom {
    async fn new(ctx: &mut Context) -> object::Result<Self> {
        let newest = ctx.storage().list(&ListOptions {
            prefix: Some(PREFIX.to_owned()),
            reverse: true,
            limit: Some(1),
            ..ListOptions::default()
        })?;
        let last_id_ms = match newest.first() {
            Some((key, _)) => key
                .strip_prefix(PREFIX)
                .and_then(|ms| ms.parse::<u64>().ok())
                .ok_or_else(|| HandlerError::internal(format!("malformed message key {key:?}")))?,
            None => 0,
        };
        let stored = count_messages(ctx)?;
        Ok(ChatRoom { last_id_ms, stored })
    }

    async fn fetch(&mut self, ctx: &mut Context, req: Request) -> object::Result<Response> {
        if is_websocket_upgrade(&req) {
            return join(ctx, &req);
        }
        if req.uri().path() == "/history" {
            let newest_first = history(ctx, HTTP_HISTORY)?;
            return Ok(object::json(StatusCode::OK, &newest_first));
        }
        Ok(error_response(
            StatusCode::BAD_REQUEST,
            "expected_websocket",
            "Expected WebSocket",
        ))
    }

    async fn websocket_message(
        &mut self,
        ctx: &mut Context,
        ws: WebSocket,
        msg: Message,
    ) -> object::Result<()> {
        let text = match parse_frame(&msg) {
            Ok(text) => text,
            Err((code, message)) => return send_error(&ws, code, &message),
        };
        let max = super::options().chat_max_message_bytes;
        if text.len() > max {
            return send_error(
                &ws,
                "message_too_large",
                &format!("message text is over {max} bytes"),
            );
        }
        let now = now_ms();
        let id_ms = now.max(self.last_id_ms.saturating_add(1)).max(MIN_ID_MS);
        let message = ChatMessage {
            id: format!("{PREFIX}{id_ms}"),
            name: session_name(&ws)?,
            text,
            timestamp: now,
        };
        match ctx.storage().put_json(&message.id, &message) {
            Ok(()) => {}
            Err(e @ (StorageError::ValueTooLarge { .. } | StorageError::EventTooLarge { .. })) => {
                return send_error(&ws, "message_too_large", &e.to_string());
            }
            Err(e) => return Err(e.into()),
        }
        self.last_id_ms = id_ms;
        self.stored += 1;
        self.trim(ctx)?;
        broadcast(
            ctx,
            &MessageFrame {
                r#type: "message",
                message: &message,
            },
        )
    }

    async fn websocket_close(
        &mut self,
        ctx: &mut Context,
        ws: WebSocket,
        _code: u16,
        _reason: String,
    ) -> object::Result<()> {
        // The closed socket is no longer among `ctx.websockets`.
        let name = session_name(&ws)?;
        broadcast(
            ctx,
            &json!({ "type": "leave", "name": name, "timestamp": now_ms() }),
        )
    }
}

impl ChatRoom {
    /// Deletes the oldest messages over `chat_history_messages`, at most
    /// [`TRIM_CHUNK`] at a time.
    fn trim(&mut self, ctx: &mut Context) -> object::Result<()> {
        let keep = super::options().chat_history_messages;
        let excess = self.stored.saturating_sub(keep).min(TRIM_CHUNK);
        if excess == 0 {
            return Ok(());
        }
        let oldest = ctx.storage().list(&ListOptions {
            prefix: Some(PREFIX.to_owned()),
            limit: Some(excess),
            ..ListOptions::default()
        })?;
        let keys: Vec<&str> = oldest.iter().map(|(k, _)| k.as_str()).collect();
        ctx.storage().delete_many(&keys)?;
        self.stored -= keys.len();
        if keys.len() < excess {
            // Fewer stored than counted: recount next time.
            self.stored = count_messages(ctx)?;
        }
        Ok(())
    }
}

/// Messages stored, up to [`COUNT_AT_MOST`].
fn count_messages(ctx: &mut Context) -> object::Result<usize> {
    const PAGE: usize = 1000;
    let mut count = 0;
    let mut after: Option<String> = None;
    while count < COUNT_AT_MOST {
        let page = ctx.storage().list(&ListOptions {
            prefix: Some(PREFIX.to_owned()),
            start_after: after.clone(),
            limit: Some(PAGE),
            ..ListOptions::default()
        })?;
        count += page.len();
        match page.last() {
            Some((last, _)) if page.len() == PAGE => after = Some(last.clone()),
            _ => break,
        }
    }
    Ok(count)
}

/// Accepts an upgrade: stores the name with the socket, sends it the
/// history and announces it to everyone.
fn join(ctx: &mut Context, req: &Request) -> object::Result<Response> {
    let name = query_param(req, "name")
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| DEFAULT_NAME.to_owned());
    if name.chars().count() > MAX_NAME_CHARS {
        return Err(HandlerError::bad_request(
            "invalid_name",
            format!("name must be at most {MAX_NAME_CHARS} characters"),
        ));
    }
    let max = super::options().chat_max_sockets;
    if ctx.websockets(None).len() >= max {
        return Err(HandlerError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "room_full",
            format!("the room has {max} sockets, its most"),
        ));
    }
    let ws = ctx.accept_websocket(&[])?;
    ws.serialize_attachment(&Session { name: name.clone() })?;
    let mut messages = history(ctx, JOIN_HISTORY)?;
    messages.reverse();
    ws.send_json(&json!({ "type": "history", "messages": messages }))?;
    broadcast(
        ctx,
        &json!({ "type": "join", "name": name, "timestamp": now_ms() }),
    )?;
    Ok(ws.accepted())
}

/// The newest `n` messages, newest first.
fn history(ctx: &mut Context, n: usize) -> object::Result<Vec<ChatMessage>> {
    let entries = ctx.storage().list_json::<ChatMessage>(&ListOptions {
        prefix: Some(PREFIX.to_owned()),
        reverse: true,
        limit: Some(n),
        ..ListOptions::default()
    })?;
    Ok(entries.into_iter().map(|(_, m)| m).collect())
}

/// The `text` of a well-formed `{"type":"message","text":...}` frame, or an
/// error code and message for the sender.
fn parse_frame(msg: &Message) -> Result<String, (&'static str, String)> {
    let raw = match msg {
        Message::Text(t) => t,
        Message::Binary(_) => {
            return Err((
                "binary_not_supported",
                "send messages as JSON text frames".to_owned(),
            ));
        }
    };
    let value: Value =
        serde_json::from_str(raw).map_err(|e| ("invalid_json", format!("invalid JSON: {e}")))?;
    let Value::Object(mut fields) = value else {
        return Err(("invalid_message", "expected a JSON object".to_owned()));
    };
    match fields.get("type") {
        Some(Value::String(t)) if t == "message" => {}
        Some(Value::String(t)) => {
            return Err((
                "unknown_type",
                format!("unknown message type {t:?}; expected \"message\""),
            ));
        }
        _ => {
            return Err(("invalid_message", "`type` must be a string".to_owned()));
        }
    }
    match fields.remove("text") {
        Some(Value::String(text)) => Ok(text),
        _ => Err(("invalid_message", "`text` must be a string".to_owned())),
    }
}

fn send_error(ws: &WebSocket, code: &str, message: &str) -> object::Result<()> {
    ws.send_json(&json!({ "type": "error", "error": code, "message": message }))
}

fn session_name(ws: &WebSocket) -> object::Result<String> {
    Ok(ws
        .deserialize_attachment::<Session>()?
        .map_or_else(|| DEFAULT_NAME.to_owned(), |s| s.name))
}

/// Sends `value` as JSON to every open socket of the room.
fn broadcast<T: Serialize + ?Sized>(ctx: &Context, value: &T) -> object::Result<()> {
    let text = serde_json::to_string(value).map_err(HandlerError::internal)?;
    for ws in ctx.websockets(None) {
        ws.send(Message::Text(text.clone()));
    }
    Ok(())
}
