//! The router's own answers: unknown routes and failed object calls.

use std::sync::Arc;

use http::{Method, StatusCode};

use super::{Harness, assert_error, request};
use crate::app::SeedApp;
use crate::object::{Env, Worker};

#[tokio::test]
async fn unknown_routes_are_json_404() {
    let h = Harness::new().await;
    let cases = [
        (Method::GET, "/"),
        (Method::GET, "/nope"),
        (Method::GET, "/room"),
        (Method::GET, "/room/"),
        (Method::GET, "/room//history"),
        (Method::GET, "/counter"),
        (Method::POST, "/counter//increment"),
        (Method::POST, "/counter/a/increment/more"),
        (Method::PUT, "/counter/a/increment"),
        (Method::DELETE, "/api/ping"),
    ];
    for (method, uri) in cases {
        let resp = h.call(method.clone(), uri).await;
        assert_error(&resp, StatusCode::NOT_FOUND, "not_found");
    }
}

#[tokio::test]
async fn failed_object_calls_answer_with_the_error_body() {
    let h = Harness::new().await;
    // A worker whose env lacks every binding.
    let env = Env::new(Arc::new(h.runtime.clone()), Vec::new());
    for (method, uri) in [
        (Method::GET, "/counter/x"),
        (Method::POST, "/counter/x/increment"),
        (Method::GET, "/room/x/history"),
        (Method::GET, "/api/ping"),
    ] {
        let resp = SeedApp.fetch(request(method, uri), &env).await;
        assert_error(
            &resp,
            StatusCode::INTERNAL_SERVER_ERROR,
            "unknown_namespace",
        );
    }
    // A runtime that is shutting down.
    h.runtime.shutdown().await;
    let resp = h.get("/counter/x").await;
    assert_error(&resp, StatusCode::SERVICE_UNAVAILABLE, "shutting_down");
}
