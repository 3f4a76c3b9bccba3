//! `id.name` and renamed classes through the public gRPC object API of a
//! dev node: an object reached by name sees its name, by id only with the
//! right `id_name`; a class renamed in `[objects]` keeps the ids its names
//! had, and its old name is NOT_FOUND.

mod grpc_common;

use bytes::Bytes;
use grpc_common::{by_name, client, config, fetch, json_body};
use http::StatusCode;
use roost::app::SeedApp;
use roost::id::ObjectId;
use roost::node::DevNode;
use roost::object::{self, Bindings, Context, DurableObject, Request, Response};
use roost::rpc::pb::{self, object_ref};
use serde_json::json;
use tonic::Code;

/// Answers its id and the name the runtime knows for it.
struct Named;

impl Named {
    fn whoami(ctx: &Context) -> serde_json::Value {
        json!({ "id": ctx.id().to_string(), "name": ctx.name() })
    }
}

impl DurableObject for Named {
    async fn new(_: &mut Context) -> object::Result<Self> {
        Ok(Named)
    }

    async fn fetch(&mut self, ctx: &mut Context, _req: Request) -> object::Result<Response> {
        Ok(object::json(StatusCode::OK, &Self::whoami(ctx)))
    }

    async fn call(
        &mut self,
        ctx: &mut Context,
        _method: String,
        _payload: Bytes,
    ) -> object::Result<Bytes> {
        Ok(Bytes::from(Self::whoami(ctx).to_string()))
    }
}

fn by_id(namespace: &str, id: ObjectId, id_name: Option<&str>) -> Option<pb::ObjectRef> {
    Some(pb::ObjectRef {
        namespace: namespace.into(),
        target: Some(object_ref::Target::Id(id.to_string())),
        id_name: id_name.map(str::to_owned),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_see_the_name_callers_made_their_id_from() {
    let dir = tempfile::tempdir().expect("temp dir");
    let bindings = Bindings::new().bind::<Named>("NAMED");
    let node = DevNode::start_with(config(dir.path()), bindings, SeedApp)
        .await
        .expect("node starts");
    let mut grpc = client(&node).await;

    // By id without a name, then with a wrong one: no name.
    let bob = ObjectId::from_name("NAMED", "bob");
    for id_name in [None, Some("mallory")] {
        let resp = grpc
            .fetch(fetch(by_id("NAMED", bob, id_name), "GET", "/"))
            .await
            .expect("fetch")
            .into_inner();
        assert_eq!(
            json_body(&resp),
            json!({"id": bob.to_string(), "name": null}),
            "{id_name:?}"
        );
    }
    // By id with its name, and by name (Fetch and Call).
    let resp = grpc
        .fetch(fetch(by_id("NAMED", bob, Some("bob")), "GET", "/"))
        .await
        .expect("fetch")
        .into_inner();
    assert_eq!(json_body(&resp)["name"], "bob");
    let resp = grpc
        .call(pb::CallRequest {
            object: by_name("NAMED", "alice"),
            method: "whoami".into(),
            payload: Vec::new(),
        })
        .await
        .expect("call")
        .into_inner();
    let alice: serde_json::Value = serde_json::from_slice(&resp.payload).expect("json");
    assert_eq!(
        alice,
        json!({"id": ObjectId::from_name("NAMED", "alice").to_string(), "name": "alice"})
    );
    node.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_class_renamed_in_config_keeps_its_ids_and_drops_its_old_name() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = config(dir.path());
    config.objects.renamed_classes = vec!["OLD_NAMED=NAMED".into()];
    let bindings = Bindings::new().bind::<Named>("NAMED");
    let node = DevNode::start_with(config, bindings, SeedApp)
        .await
        .expect("node starts");
    let mut grpc = client(&node).await;

    let resp = grpc
        .fetch(fetch(by_name("NAMED", "alice"), "GET", "/"))
        .await
        .expect("fetch")
        .into_inner();
    assert_eq!(
        json_body(&resp),
        json!({"id": ObjectId::from_name("OLD_NAMED", "alice").to_string(), "name": "alice"})
    );
    let err = grpc
        .fetch(fetch(by_name("OLD_NAMED", "alice"), "GET", "/"))
        .await
        .expect_err("the old name is not served");
    assert_eq!(err.code(), Code::NotFound);
    node.shutdown().await.expect("shutdown");
}
