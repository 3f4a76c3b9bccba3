//! `Counter`: a named i64 counter (the seed's "Distributed Counter").
//!
//! The value is stored as JSON under `value` and cached in the object after
//! `new` loads it. `GET` (any path) reads it; `POST /increment` and
//! `/decrement` take `?amount=` (default 1; an empty value also means 1, as
//! the seed's `parseInt(x || '1')` did); `POST /reset` sets it to 0.

use http::{Method, StatusCode};
use serde_json::json;

use super::{IntError, parse_strict_int};
use crate::object::{
    self, Context, DurableObject, HandlerError, Request, Response, error_response, query_param,
};

const VALUE_KEY: &str = "value";

/// The counter object.
pub struct Counter {
    /// The stored value, read once at activation.
    value: i64,
}

impl DurableObject for Counter {
    async fn new(ctx: &mut Context) -> object::Result<Self> {
        let value = ctx.storage().get_json::<i64>(VALUE_KEY)?.unwrap_or(0);
        Ok(Counter { value })
    }

    async fn fetch(&mut self, ctx: &mut Context, req: Request) -> object::Result<Response> {
        if req.method() == Method::GET {
            return Ok(value_response(self.value));
        }
        if req.method() != Method::POST {
            return Ok(not_found(&req));
        }
        let next = match req.uri().path() {
            "/increment" => self.value.checked_add(amount(&req)?),
            "/decrement" => self.value.checked_sub(amount(&req)?),
            "/reset" => Some(0),
            _ => return Ok(not_found(&req)),
        };
        let next = next.ok_or_else(|| {
            HandlerError::bad_request(
                "value_out_of_range",
                "the result does not fit in a 64-bit signed integer",
            )
        })?;
        ctx.storage().put_json(VALUE_KEY, &next)?;
        self.value = next;
        Ok(value_response(next))
    }
}

fn value_response(value: i64) -> Response {
    object::json(StatusCode::OK, &json!({ "value": value }))
}

fn not_found(req: &Request) -> Response {
    error_response(
        StatusCode::NOT_FOUND,
        "not_found",
        &format!(
            "no counter action {} {}; use GET, or POST /increment, /decrement or /reset",
            req.method(),
            req.uri().path()
        ),
    )
}

/// The `amount` query parameter: default 1, else a strict integer.
fn amount(req: &Request) -> Result<i64, HandlerError> {
    let raw = match query_param(req, "amount") {
        Some(s) if !s.is_empty() => s,
        _ => return Ok(1),
    };
    parse_strict_int(&raw).map_err(|e| match e {
        IntError::Malformed => HandlerError::bad_request(
            "invalid_amount",
            format!("amount must be an integer (digits with an optional sign), got {raw:?}"),
        ),
        IntError::OutOfRange => HandlerError::bad_request(
            "value_out_of_range",
            format!("amount {raw} does not fit in a 64-bit signed integer"),
        ),
    })
}
