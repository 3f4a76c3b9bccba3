//! Typed RPC on top of an object's `call`: a [`Method`] names a method and
//! its request and response types; a caller uses [`Stub::rpc`], the class
//! decodes with [`decode`] and answers with [`reply`] inside its `call`
//! handler. The wire format is JSON (serde), carried as `call`'s payload, so
//! the gRPC object API (`Objects.Call`) and untyped callers see the same
//! bytes.
//!
//! ```
//! use roost::object::rpc::{self, Method};
//! use roost::object::{Context, DurableObject, HandlerError, Request, Response, Result};
//!
//! /// `add(n)`: adds `n`, answers the new total.
//! pub struct Add;
//! impl Method for Add {
//!     const NAME: &'static str = "add";
//!     type Request = i64;
//!     type Response = i64;
//! }
//!
//! pub struct Total(i64);
//!
//! impl DurableObject for Total {
//!     async fn new(ctx: &mut Context) -> Result<Self> {
//!         Ok(Total(ctx.storage().get_json("total")?.unwrap_or(0)))
//!     }
//!     async fn fetch(&mut self, _: &mut Context, _: Request) -> Result<Response> {
//!         Err(HandlerError::bad_request("rpc_only", "call me with rpc"))
//!     }
//!     async fn call(&mut self, ctx: &mut Context, method: String, payload: bytes::Bytes) -> Result<bytes::Bytes> {
//!         match method.as_str() {
//!             Add::NAME => {
//!                 let n = rpc::decode::<Add>(&payload)?;
//!                 self.0 += n;
//!                 ctx.storage().put_json("total", &self.0)?;
//!                 rpc::reply::<Add>(&self.0)
//!             }
//!             other => Err(rpc::unknown_method(other)),
//!         }
//!     }
//! }
//! // A caller: `let total = stub.rpc::<Add>(&5).await?;`
//! ```
//!
//! Errors, by where they happen: the call could not reach or run the object
//! ([`RpcError::Call`], the object layer's [`Error`]); the method answered an
//! error of its own, or the class does not know the method (404
//! `unknown_method`) or could not decode the request (400
//! `invalid_request`) ([`RpcError::Handler`]); the answer did not decode as
//! the method's response type ([`RpcError::Decode`]: caller and class
//! disagree on the type).

use bytes::Bytes;
use http::StatusCode;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::http::HandlerError;
use super::worker::Stub;
use super::{Error, Result};

/// A typed method of a Durable Object class.
pub trait Method {
    /// The method's name, as `call` receives it.
    const NAME: &'static str;
    /// What the caller sends.
    type Request: Serialize + DeserializeOwned + Send + Sync;
    /// What the method answers.
    type Response: Serialize + DeserializeOwned + Send;
}

/// Why a typed call failed.
#[derive(Debug, thiserror::Error)]
pub enum RpcError {
    /// The call did not reach the object, or its outcome is unknown (the
    /// object layer's error: not the owner, overloaded, reset, …).
    #[error(transparent)]
    Call(#[from] Error),
    /// The object answered with an error: the method's own, or
    /// `unknown_method` (404), `invalid_request` (400).
    #[error("{}: {} ({})", .0.status, .0.message, .0.code)]
    Handler(HandlerError),
    /// The answer is not the method's response type.
    #[error("the answer of `{method}` does not decode: {message}")]
    Decode {
        method: &'static str,
        message: String,
    },
    /// The request could not be encoded (a serializer error).
    #[error("the request of `{method}` does not encode: {message}")]
    Encode {
        method: &'static str,
        message: String,
    },
}

/// A failed call made inside a handler becomes the handler's own error, as
/// a thrown error propagates in Workers: the callee's error as it answered,
/// the object layer's as [`HandlerError::from`] maps it, and a type
/// mismatch between caller and callee as a 500.
impl From<RpcError> for HandlerError {
    fn from(e: RpcError) -> HandlerError {
        match e {
            RpcError::Call(e) => HandlerError::from(e),
            RpcError::Handler(h) => h,
            e @ (RpcError::Decode { .. } | RpcError::Encode { .. }) => {
                HandlerError::internal(e.to_string())
            }
        }
    }
}

impl Stub {
    /// Calls method `M` of the object with `req` and decodes its answer.
    pub async fn rpc<M: Method>(
        &self,
        req: &M::Request,
    ) -> std::result::Result<M::Response, RpcError> {
        let payload = serde_json::to_vec(req).map_err(|e| RpcError::Encode {
            method: M::NAME,
            message: e.to_string(),
        })?;
        let answer = self
            .call(M::NAME, Bytes::from(payload))
            .await?
            .map_err(RpcError::Handler)?;
        serde_json::from_slice(&answer).map_err(|e| RpcError::Decode {
            method: M::NAME,
            message: e.to_string(),
        })
    }
}

/// Decodes `payload` as `M`'s request; a payload that does not decode is
/// the caller's error: 400 `invalid_request`.
pub fn decode<M: Method>(payload: &[u8]) -> Result<M::Request> {
    serde_json::from_slice(payload).map_err(|e| {
        HandlerError::bad_request(
            "invalid_request",
            format!("the request of `{}` does not decode: {e}", M::NAME),
        )
    })
}

/// Encodes `resp` as `M`'s answer.
pub fn reply<M: Method>(resp: &M::Response) -> Result<Bytes> {
    serde_json::to_vec(resp).map(Bytes::from).map_err(|e| {
        HandlerError::internal(format!("the answer of `{}` does not encode: {e}", M::NAME))
    })
}

/// The error for a method the class does not have: 404 `unknown_method`.
pub fn unknown_method(method: &str) -> HandlerError {
    HandlerError::new(
        StatusCode::NOT_FOUND,
        "unknown_method",
        format!("this object has no method `{method}`"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_call_becomes_the_handlers_own_error() {
        let callee = HandlerError::bad_request("no_such_entry", "entry 7");
        let passed = HandlerError::from(RpcError::Handler(callee.clone()));
        assert_eq!(
            (passed.status, &*passed.code, passed.message.as_str()),
            (http::StatusCode::BAD_REQUEST, "no_such_entry", "entry 7")
        );
        let mismatch = HandlerError::from(RpcError::Decode {
            method: "append",
            message: "expected u64".into(),
        });
        assert_eq!(mismatch.status, http::StatusCode::INTERNAL_SERVER_ERROR);
        let timeout = HandlerError::from(RpcError::Call(Error::CallTimeout {
            object: "LOG/x".into(),
            after: std::time::Duration::from_secs(30),
        }));
        assert_eq!(timeout.status, http::StatusCode::GATEWAY_TIMEOUT);
    }
}
