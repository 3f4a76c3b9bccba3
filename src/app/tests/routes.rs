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

/// Any method on any path (percent-escapes, queries, odd segments) gets an
/// answer the contract allows, and every non-2xx answer is a JSON error
/// body: the router and its decoders never panic or leak a bare error.
#[test]
fn any_request_gets_an_allowed_json_answer() {
    use proptest::prelude::*;
    use proptest::test_runner::{TestCaseError, TestRunner};

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let h = rt.block_on(Harness::new());
    let methods = proptest::sample::select(vec![
        Method::GET,
        Method::HEAD,
        Method::POST,
        Method::PUT,
        Method::DELETE,
        Method::OPTIONS,
        Method::PATCH,
    ]);
    let path = proptest::string::string_regex(
        "(/(room|api|counter|ping|history|increment|reset|[a-zA-Z0-9._~+-]{0,5}|%[0-9A-Fa-f]{2}|%[g-z]?)){0,4}/?(\\?[a-z0-9=&%+]{0,12})?",
    )
    .expect("regex");
    let mut runner = TestRunner::new(crate::rpc::test_cases(128));
    let result = runner.run(&(methods, path), |(method, path)| {
        let uri = if path.starts_with('/') {
            path
        } else {
            format!("/{path}")
        };
        let Ok(req) = http::Request::builder()
            .method(method.clone())
            .uri(&uri)
            .body(bytes::Bytes::new())
        else {
            return Ok(()); // Not a URI http accepts: never reaches the router.
        };
        let resp = rt.block_on(h.send(req));
        let status = resp.status();
        prop_assert!(
            [200u16, 400, 404, 429, 503].contains(&status.as_u16()),
            "{method} {uri}: {status}"
        );
        if !status.is_success() && method != Method::HEAD {
            let body: serde_json::Value = serde_json::from_slice(resp.body())
                .map_err(|e| TestCaseError::fail(format!("{method} {uri}: not JSON: {e}")))?;
            prop_assert!(body.get("error").is_some(), "{method} {uri}: {body}");
        }
        Ok(())
    });
    rt.block_on(h.runtime.shutdown());
    if let Err(e) = result {
        panic!("{e}");
    }
}
