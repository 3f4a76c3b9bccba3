//! `RateLimiter`: a sliding-window limiter (the seed's "Rate Limiter").
//!
//! A request is allowed iff fewer than `limit` allowed requests were recorded
//! in the last `window` ms (an entry at `t` counts while `t >= now - window`,
//! the seed's rule). Denied requests are not recorded. The answer is
//! `{"allowed":bool,"remaining":n,"reset":ms}`, with 429 when denied.
//!
//! Layout: each allowed request is stored under `req:{ms:016}:{seq:020}`,
//! where `ms` never goes backwards and `seq` numbers the recorded requests
//! consecutively. Keys therefore sort by time, never collide (the seed's
//! `req:${now}` did within one ms), and expiry only ever removes a prefix of
//! them, so the entries left form a consecutive run of `seq`. That gives the
//! in-window count without scanning: the newest `seq` + 1 minus the `seq` of
//! the first entry at or after the window start (one seek). Expired entries
//! are deleted from the front, at most [`PRUNE_BUDGET`] per request in chunks
//! of [`PRUNE_CHUNK`] — each entry is deleted once, so the cost per request
//! is amortized O(1) and no request writes an unbounded batch.
//!
//! Idle buckets cost nothing: every allowed request moves the object's
//! alarm to when its entry stops counting (the latest such time of all
//! recorded requests), and the alarm deletes every entry left, so a client
//! that went away leaves no storage behind. The router names one limiter
//! per client address, an IPv6 /64 counting as one ([`bucket_name`]).

use std::net::IpAddr;

use http::StatusCode;
use serde::Serialize;

use super::{IntError, parse_strict_int};
use crate::edge::IpBucket;
use crate::object::{
    self, AlarmInfo, Context, DurableObject, HandlerError, ListOptions, Request, Response, now_ms,
    query_param,
};

/// The name of the limiter object that counts a client: its IPv4 address,
/// or its IPv6 /64.
pub fn bucket_name(ip: IpAddr) -> String {
    IpBucket::of(ip).to_string()
}

const PREFIX: &str = "req:";
/// Keys per `delete_many` (the storage API's per-call limit).
const PRUNE_CHUNK: usize = 128;
/// Most expired entries one request deletes.
const PRUNE_BUDGET: usize = 1024;

const DEFAULT_LIMIT: u64 = 100;
const MAX_LIMIT: u64 = 1_000_000;
const DEFAULT_WINDOW_MS: u64 = 60_000;
const MAX_WINDOW_MS: u64 = 86_400_000;

/// The limiter object.
pub struct RateLimiter {
    /// Time of the newest recorded request; a new one is never earlier.
    last_ms: u64,
    /// `seq` of the next recorded request.
    next_seq: u64,
    /// Every stored key below this one is known to be deleted, so pruning
    /// starts here instead of re-reading RocksDB tombstones from `req:`.
    prune_floor: String,
}

#[derive(Serialize)]
struct Verdict {
    allowed: bool,
    remaining: u64,
    reset: u64,
}

fn entry_key(ms: u64, seq: u64) -> String {
    format!("{PREFIX}{ms:016}:{seq:020}")
}

/// The first key at or after time `ms`.
fn time_key(ms: u64) -> String {
    format!("{PREFIX}{ms:016}:")
}

fn parse_key(key: &str) -> Result<(u64, u64), HandlerError> {
    key.strip_prefix(PREFIX)
        .and_then(|rest| rest.split_once(':'))
        .and_then(|(ms, seq)| Some((ms.parse().ok()?, seq.parse().ok()?)))
        .ok_or_else(|| HandlerError::internal(format!("malformed limiter key {key:?}")))
}

impl DurableObject for RateLimiter {
    async fn new(ctx: &mut Context) -> object::Result<Self> {
        let newest = ctx.storage().list(&ListOptions {
            prefix: Some(PREFIX.to_owned()),
            reverse: true,
            limit: Some(1),
            ..ListOptions::default()
        })?;
        let (last_ms, next_seq) = match newest.first() {
            Some((key, _)) => {
                let (ms, seq) = parse_key(key)?;
                (ms, seq + 1)
            }
            None => (0, 0),
        };
        Ok(RateLimiter {
            last_ms,
            next_seq,
            prune_floor: PREFIX.to_owned(),
        })
    }

    async fn fetch(&mut self, ctx: &mut Context, req: Request) -> object::Result<Response> {
        let limit = param(&req, "limit", DEFAULT_LIMIT, MAX_LIMIT, "invalid_limit")?;
        let window = param(
            &req,
            "window",
            DEFAULT_WINDOW_MS,
            MAX_WINDOW_MS,
            "invalid_window",
        )?;
        let now = now_ms();
        let window_start = time_key(now.saturating_sub(window));
        let floor = self.prune(ctx, &window_start)?;

        let first = ctx.storage().list(&ListOptions {
            start: Some(window_start),
            prefix: Some(PREFIX.to_owned()),
            limit: Some(1),
            ..ListOptions::default()
        })?;
        let (counted, oldest) = match first.first() {
            Some((key, _)) => {
                let (ms, seq) = parse_key(key)?;
                (self.next_seq.saturating_sub(seq), Some(ms))
            }
            None => (0, None),
        };

        if counted >= limit {
            self.prune_floor = floor;
            let reset = oldest.unwrap_or(now).saturating_add(window + 1);
            return Ok(verdict(false, 0, reset));
        }
        let at = now.max(self.last_ms);
        ctx.storage().put_json(&entry_key(at, self.next_seq), &at)?;
        self.expire_at(ctx, at.saturating_add(window + 1))?;
        self.prune_floor = floor;
        self.last_ms = at;
        self.next_seq += 1;
        let reset = oldest.unwrap_or(at).saturating_add(window + 1);
        Ok(verdict(true, limit - counted - 1, reset))
    }

    async fn alarm(&mut self, ctx: &mut Context, _info: AlarmInfo) -> object::Result<()> {
        self.expire_all(ctx)
    }
}

impl RateLimiter {
    /// Moves the alarm to `when` unless it is already later.
    fn expire_at(&self, ctx: &mut Context, when: u64) -> object::Result<()> {
        let current = ctx.storage().get_alarm()?;
        if current.is_none_or(|c| c < when) {
            ctx.storage().set_alarm(when)?;
        }
        Ok(())
    }

    /// The alarm: every recorded request has stopped counting; delete the
    /// entries (within the per-event budget, coming back at once for more).
    fn expire_all(&mut self, ctx: &mut Context) -> object::Result<()> {
        let now = now_ms();
        let end = time_key(now);
        let floor = self.prune(ctx, &end)?;
        let more = floor.as_str() < end.as_str();
        self.prune_floor = floor;
        if more {
            ctx.storage().set_alarm(now + 1)?;
        }
        Ok(())
    }

    /// Deletes expired entries (keys below `window_start`), oldest first, up
    /// to the per-request budget. Returns the new prune floor, to keep once
    /// the request succeeds (if it fails, its deletes are rolled back).
    fn prune(&self, ctx: &mut Context, window_start: &str) -> object::Result<String> {
        let mut floor = self.prune_floor.clone();
        let mut budget = PRUNE_BUDGET;
        while budget > 0 {
            let chunk = ctx.storage().list(&ListOptions {
                start: Some(floor.clone()),
                end: Some(window_start.to_owned()),
                prefix: Some(PREFIX.to_owned()),
                limit: Some(PRUNE_CHUNK.min(budget)),
                ..ListOptions::default()
            })?;
            let keys: Vec<&str> = chunk.iter().map(|(k, _)| k.as_str()).collect();
            ctx.storage().delete_many(&keys)?;
            budget -= keys.len();
            match chunk.last() {
                Some((last, _)) if keys.len() == PRUNE_CHUNK => floor = last.clone(),
                _ => {
                    // Everything below the window start is gone.
                    if window_start > floor.as_str() {
                        floor = window_start.to_owned();
                    }
                    return Ok(floor);
                }
            }
        }
        Ok(floor)
    }
}

fn verdict(allowed: bool, remaining: u64, reset: u64) -> Response {
    let status = if allowed {
        StatusCode::OK
    } else {
        StatusCode::TOO_MANY_REQUESTS
    };
    object::json(
        status,
        &Verdict {
            allowed,
            remaining,
            reset,
        },
    )
}

/// A positive integer query parameter in `1..=max`; `default` when absent
/// or empty (the seed's `parseInt(x || default)`).
fn param(
    req: &Request,
    name: &str,
    default: u64,
    max: u64,
    code: &'static str,
) -> object::Result<u64> {
    let raw = match query_param(req, name) {
        Some(s) if !s.is_empty() => s,
        _ => return Ok(default),
    };
    let value = match parse_strict_int(&raw) {
        Ok(v) => u64::try_from(v).ok().filter(|v| (1..=max).contains(v)),
        Err(IntError::Malformed | IntError::OutOfRange) => None,
    };
    value.ok_or_else(|| {
        HandlerError::bad_request(
            code,
            format!("{name} must be an integer in 1..={max}, got {raw:?}"),
        )
    })
}
