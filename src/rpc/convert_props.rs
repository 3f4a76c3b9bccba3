//! Property tests of the protobuf → domain conversions (`convert.rs`):
//! arbitrary messages never panic and are either refused with
//! `INVALID_ARGUMENT`/`RESOURCE_EXHAUSTED` or converted faithfully, and
//! what Roost sends converts back to what it was.
//!
//! `make test` runs a few dozen cases of each; `make fuzz` many more
//! (`PROPTEST_CASES`).

use proptest::prelude::*;
use tonic::Code;

use super::convert::{
    message_from_pb, message_to_pb, object_key, request_from_pb, request_to_pb, response_from_pb,
    response_to_pb,
};
use super::pb;
use crate::object::{ClientIp, Message, Namespaces};

/// Cases per property: `PROPTEST_CASES` when set, else `default`.
pub(crate) fn cases(default: u32) -> ProptestConfig {
    let mut config = ProptestConfig::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = default;
    }
    config.failure_persistence = None;
    config
}

fn any_text() -> impl Strategy<Value = String> {
    prop_oneof![
        // Mostly printable ASCII, where the interesting parsers live...
        proptest::string::string_regex("[ -~]{0,24}").expect("regex"),
        // ...and anything at all.
        any::<String>(),
    ]
}

fn any_header() -> impl Strategy<Value = pb::Header> {
    (any_text(), proptest::collection::vec(any::<u8>(), 0..16))
        .prop_map(|(name, value)| pb::Header { name, value })
}

fn any_object() -> impl Strategy<Value = Option<pb::ObjectRef>> {
    let target = prop_oneof![
        Just(None),
        any_text().prop_map(|n| Some(pb::object_ref::Target::Name(n))),
        any_text().prop_map(|i| Some(pb::object_ref::Target::Id(i))),
        "[0-9a-f]{64}".prop_map(|i| Some(pb::object_ref::Target::Id(i))),
    ];
    proptest::option::of(
        (any_text(), target).prop_map(|(namespace, target)| pb::ObjectRef {
            namespace,
            target,
            id_name: None,
        }),
    )
}

fn any_fetch() -> impl Strategy<Value = pb::FetchRequest> {
    (
        any_object(),
        prop_oneof![Just(String::new()), Just("GET".to_owned()), any_text()],
        prop_oneof![Just("/".to_owned()), "/[a-z%?=&/]{0,20}", any_text()],
        proptest::collection::vec(any_header(), 0..4),
        proptest::collection::vec(any::<u8>(), 0..64),
        prop_oneof![
            Just(String::new()),
            Just("203.0.113.7".to_owned()),
            any_text()
        ],
    )
        .prop_map(
            |(object, method, path, headers, body, client_ip)| pb::FetchRequest {
                object,
                method,
                path,
                headers,
                body,
                client_ip,
            },
        )
}

proptest! {
    #![proptest_config(cases(256))]

    #[test]
    fn fetch_requests_convert_or_are_refused(req in any_fetch(), max_body in 0usize..80) {
        let body_len = req.body.len();
        match request_from_pb(req.clone(), max_body, &Namespaces::default()) {
            Ok((key, converted)) => {
                prop_assert!(body_len <= max_body);
                prop_assert_eq!(converted.body().len(), body_len);
                prop_assert!(converted.uri().path().starts_with('/'));
                // What Roost would send on converts back to the same request.
                let again = request_to_pb(&key, converted);
                let (key2, back) = request_from_pb(again, max_body, &Namespaces::default())
                    .map_err(|s| TestCaseError::fail(format!("round trip refused: {s:?}")))?;
                prop_assert_eq!(key2, key);
                prop_assert_eq!(back.body().len(), body_len);
                prop_assert_eq!(
                    back.extensions().get::<ClientIp>().map(|c| c.0),
                    req.client_ip.parse().ok()
                );
            }
            Err(status) => prop_assert!(
                matches!(status.code(), Code::InvalidArgument | Code::ResourceExhausted),
                "{status:?}"
            ),
        }
    }

    #[test]
    fn object_refs_name_a_key_or_are_refused(object in any_object()) {
        match object_key(object.clone(), &Namespaces::default()) {
            Ok(key) => {
                let object = object.expect("a key needs an object");
                prop_assert_eq!(&*key.namespace, object.namespace.as_str());
            }
            Err(status) => prop_assert_eq!(status.code(), Code::InvalidArgument),
        }
    }

    #[test]
    fn responses_convert_or_are_refused(
        status in prop_oneof![100u32..600, any::<u32>()],
        headers in proptest::collection::vec(any_header(), 0..4),
        body in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let resp = pb::FetchResponse { status, headers, body: body.clone() };
        if let Ok(converted) = response_from_pb(resp) {
            prop_assert_eq!(u32::from(converted.status().as_u16()), status);
            let again = response_to_pb(converted);
            prop_assert_eq!(again.status, status);
            prop_assert_eq!(&again.body, &body);
            let back = response_from_pb(again)
                .map_err(|e| TestCaseError::fail(format!("round trip refused: {e}")))?;
            prop_assert_eq!(back.body().as_ref(), body.as_slice());
        }
    }

    #[test]
    fn socket_messages_round_trip(text in any::<String>(), binary in proptest::collection::vec(any::<u8>(), 0..64)) {
        for msg in [Message::Text(text.clone()), Message::Binary(binary.clone().into())] {
            let back = message_from_pb(message_to_pb(msg.clone(), 0));
            prop_assert_eq!(back, Some(msg));
        }
        prop_assert_eq!(message_from_pb(pb::SocketMessage { data: None, seq: 0 }), None);
    }
}
