//! The built-in app: the seed's Workers + Durable Objects example, ported to
//! Roost's object SDK. Three classes and a router:
//!
//! - [`ChatRoom`] (`CHAT_ROOM`): a WebSocket chat room with stored history,
//!   written hibernation-style (sockets, names and the id clock survive the
//!   object's eviction and restart).
//! - [`RateLimiter`] (`RATE_LIMITER`): a sliding-window request limiter.
//! - [`Counter`] (`COUNTER`): a named integer counter.
//! - [`SeedApp`]: the stateless router (the seed's Hono app plus the peer's
//!   `GET /api/ping`).
//!
//! The contract is the seed's observable HTTP/WebSocket behaviour: routes,
//! methods, status codes, JSON shapes and headers are kept. Never: touches
//! storage or sockets except through the object SDK, or decides which client
//! IP to trust (the edge sets [`object::ClientIp`]).
//!
//! # Differences from the seed
//!
//! Each is a bug fix or Roost's one error format; `docs/seed-differences.md`
//! has the full table with the seed's behaviour and the reasons.
//!
//! - **Unknown routes** answer 404 `{"error":"not_found","message":...}`,
//!   not Hono's text `404 Not Found`; a failed object call answers with the
//!   object error's status and JSON body.
//! - **Room path stripping** removes the raw (percent-encoded) segment, so
//!   `/room/a%20b/history` reaches the room as `/history`.
//! - **Client IP** comes from the edge's [`object::ClientIp`] (socket peer,
//!   or a proxy header only from trusted proxies, read from the right), not
//!   from a client-supplied `CF-Connecting-IP`; an IPv6 client's limiter is
//!   its /64.
//! - **`/room/*` is rate limited** like `/api/*` (counted apart).
//! - **Bounded state**: a chat room keeps its newest
//!   [`AppOptions::chat_history_messages`], takes at most `chat_max_sockets`
//!   (503 `room_full`) and texts up to `chat_max_message_bytes` (error frame
//!   `message_too_large`); limiter entries are deleted by an alarm once
//!   they stop counting.
//! - **HEAD `/counter/:name`** reaches the counter as GET (200, no body);
//!   the seed forwarded HEAD and got 404.
//! - **Counter `amount`** must be a strict integer (optional sign, digits):
//!   else 400 `invalid_amount` (the seed's `parseInt` took `5abc` as 5 and
//!   stored `NaN` for `abc`). A result outside i64 is 400
//!   `value_out_of_range`, nothing stored. Unknown actions are a JSON 404.
//! - **RateLimiter `limit`/`window`** are strict (1..=1,000,000 and
//!   1..=86,400,000 ms), else 400 `invalid_limit`/`invalid_window`; `reset`
//!   is when the oldest counted request stops counting (the seed: `now`);
//!   requests in the same millisecond are each counted (the seed's
//!   `req:${now}` key overwrote them); no request scans every entry.
//! - **ChatRoom bad frames** (not JSON, not an object, missing or non-string
//!   `type`/`text`, unknown `type`, binary, too large to store) get an error
//!   frame `{"type":"error","error":code,"message":...}` on that socket,
//!   which stays open (the seed threw, stored `undefined`, or ignored them).
//! - **ChatRoom requests**: names over 64 characters are 400
//!   `invalid_name`; a non-upgrade request other than `/history` is 400
//!   `expected_websocket` as JSON; the `Upgrade` value is case-insensitive.
//! - **ChatRoom ids** keep the seed's `message:<ms>` format, but the id
//!   clock is restored from storage when the room starts (so ids never
//!   collide with or sort before stored ones) and never goes below 10^12.
//! - **Hibernation**: sockets and names outlive the room object, which is
//!   evicted when idle (not observable by clients).

mod chat_room;
mod counter;
mod rate_limiter;
mod router;

#[cfg(test)]
mod tests;

pub use chat_room::ChatRoom;
pub use counter::Counter;
pub use rate_limiter::RateLimiter;
pub use router::SeedApp;

use std::sync::RwLock;

use crate::object;

/// The built-in app's limits (`[limits]`'s `chat_*` fields).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AppOptions {
    /// Most sockets in one chat room.
    pub chat_max_sockets: usize,
    /// Longest chat message text, in bytes.
    pub chat_max_message_bytes: usize,
    /// Messages a room keeps (the newest).
    pub chat_history_messages: usize,
    /// `/room/*` requests per client a minute (0: no limit).
    pub chat_requests_per_minute: u64,
}

impl AppOptions {
    pub const DEFAULT: AppOptions = AppOptions {
        chat_max_sockets: 1000,
        chat_max_message_bytes: 4096,
        chat_history_messages: 1000,
        chat_requests_per_minute: 100,
    };
}

impl Default for AppOptions {
    fn default() -> Self {
        AppOptions::DEFAULT
    }
}

/// The options in force: object classes are built by the runtime with no
/// arguments, so the process's options live here, set once at startup.
static OPTIONS: RwLock<AppOptions> = RwLock::new(AppOptions::DEFAULT);

/// Sets the built-in app's options for this process (the node does, from
/// its config, before serving).
pub fn configure(opts: AppOptions) {
    *OPTIONS.write().unwrap_or_else(|p| p.into_inner()) = opts;
}

fn options() -> AppOptions {
    *OPTIONS.read().unwrap_or_else(|p| p.into_inner())
}

/// The seed's bindings: `CHAT_ROOM`, `RATE_LIMITER` and `COUNTER`.
pub fn bindings() -> object::Bindings {
    object::Bindings::new()
        .bind::<ChatRoom>("CHAT_ROOM")
        .bind::<RateLimiter>("RATE_LIMITER")
        .bind::<Counter>("COUNTER")
}

/// Why a query parameter is not an acceptable integer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IntError {
    /// Not an optional sign followed by one or more ASCII digits.
    Malformed,
    /// Well-formed, but does not fit in an i64.
    OutOfRange,
}

/// Parses a strict decimal integer: an optional `+`/`-` and ASCII digits,
/// nothing else (no spaces, fractions, exponents or trailing text).
pub(crate) fn parse_strict_int(s: &str) -> Result<i64, IntError> {
    let digits = s.strip_prefix(['+', '-']).unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(IntError::Malformed);
    }
    s.parse::<i64>().map_err(|_| IntError::OutOfRange)
}

#[cfg(test)]
mod parse_tests {
    use super::*;

    #[test]
    fn strict_ints() {
        assert_eq!(parse_strict_int("5"), Ok(5));
        assert_eq!(parse_strict_int("+5"), Ok(5));
        assert_eq!(parse_strict_int("-0"), Ok(0));
        assert_eq!(parse_strict_int("-9223372036854775808"), Ok(i64::MIN));
        for bad in [
            "", "+", "-", "5abc", "1.5", " 5", "5 ", "1e3", "0x10", "--1", "NaN",
        ] {
            assert_eq!(parse_strict_int(bad), Err(IntError::Malformed), "{bad:?}");
        }
        assert_eq!(
            parse_strict_int("9223372036854775808"),
            Err(IntError::OutOfRange)
        );
    }
}
