//! Which failed object calls an edge may send again to another node:
//! only those that certainly did not run, and requests safe to repeat.

use crate::object::{self, Request};

/// Which failed calls the edge tries again (on the next candidate node).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Retry {
    /// Only calls that certainly did not run ([`not_executed`]).
    NotExecuted,
    /// Also calls whose outcome is unknown because leadership moved or the
    /// connection broke: for requests that are safe to repeat (GET, HEAD,
    /// OPTIONS, as HTTP proxies treat them). Running one twice changes no
    /// stored state, and the one that failed released no output.
    Idempotent,
}

impl Retry {
    /// How a fetch of `req` may be retried: WebSocket upgrades (which may
    /// write, e.g. a chat room's join) and other methods only when they
    /// did not run.
    pub(super) fn for_request(req: &Request) -> Retry {
        let safe = matches!(
            *req.method(),
            http::Method::GET | http::Method::HEAD | http::Method::OPTIONS
        );
        if safe && !object::is_websocket_upgrade(req) {
            Retry::Idempotent
        } else {
            Retry::NotExecuted
        }
    }

    pub(super) fn allows(self, e: &object::Error) -> bool {
        not_executed(e)
            || (self == Retry::Idempotent
                && matches!(
                    e,
                    object::Error::Reset | object::Error::Commit(_) | object::Error::Unavailable(_)
                ))
    }
}

/// Whether a failed call certainly did not run on the object, so trying
/// another node cannot run it twice: the node refused it (not the owner,
/// shutting down) or no connection to it could be made. A connection that
/// broke after the request was sent is not enough: the node may have run
/// the call and committed its writes before it died.
pub(super) fn not_executed(e: &object::Error) -> bool {
    matches!(
        e,
        object::Error::NotOwner { .. }
            | object::Error::ShuttingDown
            | object::Error::Unreachable(_)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(method: &str, upgrade: bool) -> Request {
        let mut req = Request::new(bytes::Bytes::new());
        *req.method_mut() = method.parse().expect("method");
        if upgrade {
            let h = req.headers_mut();
            h.insert(http::header::UPGRADE, "websocket".parse().expect("value"));
            h.insert(http::header::CONNECTION, "Upgrade".parse().expect("value"));
        }
        req
    }

    #[test]
    fn only_safe_requests_are_retried_when_their_outcome_is_unknown() {
        let unknown = [
            object::Error::Reset,
            object::Error::Unavailable("connection closed".into()),
        ];
        let never_ran = [
            object::Error::NotOwner { shard: 3 },
            object::Error::ShuttingDown,
            object::Error::Unreachable("refused".into()),
        ];
        for (method, upgrade, retried) in [
            ("GET", false, true),
            ("HEAD", false, true),
            ("OPTIONS", false, true),
            ("GET", true, false),
            ("POST", false, false),
            ("PUT", false, false),
            ("DELETE", false, false),
        ] {
            let retry = Retry::for_request(&request(method, upgrade));
            for e in &unknown {
                assert_eq!(retry.allows(e), retried, "{method} upgrade={upgrade} {e:?}");
            }
            for e in &never_ran {
                assert!(retry.allows(e), "{method} {e:?}");
            }
            assert!(!retry.allows(&object::Error::Overloaded), "{method}");
        }
    }
}
