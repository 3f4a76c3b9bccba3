//! `Storage::list` against a `BTreeMap` model, with proptest: random puts,
//! deletes and lists (every `ListOptions` field) run in an object, several
//! events dispatched at once so that reads go through all three layers
//! (the event's own writes, the pending overlay of writes not yet applied,
//! RocksDB), and every list must equal the model's range.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use proptest::prelude::*;
use proptest::test_runner::{TestCaseError, TestRunner};
use serde::{Deserialize, Serialize};

use super::Harness;
use crate::id::{ObjectId, ObjectKey};
use crate::object::{self, Bindings, Context, DurableObject, HandlerError, ListOptions};

#[derive(Clone, Debug, Serialize, Deserialize)]
enum Op {
    Put(String, String),
    Delete(String),
    List {
        start: Option<String>,
        start_after: Option<String>,
        end: Option<String>,
        prefix: Option<String>,
        reverse: bool,
        limit: Option<usize>,
    },
}

/// What a list returned; `None` for a refused one.
type Listed = Option<Vec<(String, String)>>;

/// Runs the ops of one call in order, returning each list's result.
struct ListModel;

impl DurableObject for ListModel {
    async fn new(_ctx: &mut Context) -> object::Result<Self> {
        Ok(ListModel)
    }

    async fn fetch(
        &mut self,
        _ctx: &mut Context,
        _req: object::Request,
    ) -> object::Result<object::Response> {
        Err(HandlerError::bad_request("not_here", "use call"))
    }

    async fn call(
        &mut self,
        ctx: &mut Context,
        _method: String,
        payload: Bytes,
    ) -> object::Result<Bytes> {
        let ops: Vec<Op> = serde_json::from_slice(&payload).map_err(HandlerError::internal)?;
        let mut out: Vec<Listed> = Vec::new();
        for op in ops {
            match op {
                Op::Put(k, v) => ctx.storage().put(&k, v.into_bytes())?,
                Op::Delete(k) => {
                    ctx.storage().delete(&k)?;
                }
                Op::List {
                    start,
                    start_after,
                    end,
                    prefix,
                    reverse,
                    limit,
                } => {
                    let opts = ListOptions {
                        start,
                        start_after,
                        end,
                        prefix,
                        reverse,
                        limit,
                    };
                    out.push(ctx.storage().list(&opts).ok().map(|entries| {
                        entries
                            .into_iter()
                            .map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned()))
                            .collect()
                    }));
                }
            }
        }
        Ok(serde_json::to_vec(&out)
            .map_err(HandlerError::internal)?
            .into())
    }
}

/// The model's answer to a list.
fn model_list(model: &BTreeMap<String, String>, op: &Op) -> Listed {
    let Op::List {
        start,
        start_after,
        end,
        prefix,
        reverse,
        limit,
    } = op
    else {
        return None;
    };
    if start.is_some() && start_after.is_some() {
        return None;
    }
    let lo = match (start, start_after) {
        (Some(s), _) => Bound::Included(s.clone()),
        (_, Some(s)) => Bound::Excluded(s.clone()),
        _ => Bound::Unbounded,
    };
    let in_range = |k: &String| {
        let above = match &lo {
            Bound::Included(s) => k >= s,
            Bound::Excluded(s) => k > s,
            Bound::Unbounded => true,
        };
        above
            && end.as_ref().is_none_or(|e| k < e)
            && prefix.as_ref().is_none_or(|p| k.starts_with(p.as_str()))
    };
    let mut hits: Vec<(String, String)> = model
        .iter()
        .filter(|(k, _)| in_range(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if *reverse {
        hits.reverse();
    }
    hits.truncate(limit.unwrap_or(usize::MAX));
    Some(hits)
}

fn key() -> impl Strategy<Value = String> {
    // A small alphabet, so that ops collide; `\u{ff}` tests the prefix
    // successor at a byte boundary.
    proptest::string::string_regex("[abc\u{ff}]{1,3}").expect("regex")
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (key(), "[a-z]{0,4}").prop_map(|(k, v)| Op::Put(k, v)),
        1 => key().prop_map(Op::Delete),
        2 => (
            proptest::option::of(key()),
            proptest::option::of(key()),
            proptest::option::of(key()),
            proptest::option::of(key()),
            any::<bool>(),
            proptest::option::of(0usize..5),
        )
            .prop_map(|(start, start_after, end, prefix, reverse, limit)| Op::List {
                start,
                start_after,
                end,
                prefix,
                reverse,
                limit,
            }),
    ]
}

#[test]
fn list_matches_a_btreemap_model() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut h = rt.block_on(Harness::new());
    rt.block_on(h.restart(Bindings::new().bind::<ListModel>("LIST")));
    let case = AtomicU64::new(0);
    let mut runner = TestRunner::new(crate::rpc::test_cases(48));
    let batches = proptest::collection::vec(proptest::collection::vec(op(), 1..8), 1..6);
    let result = runner.run(&batches, |batches| {
        let name = format!("case-{}", case.fetch_add(1, Ordering::Relaxed));
        let key = ObjectKey::new("LIST", ObjectId::from_name("LIST", &name));
        // Dispatched together: each call is one event, run in order.
        let answers = rt.block_on(futures_util::future::join_all(batches.iter().map(|ops| {
            let payload = Bytes::from(serde_json::to_vec(ops).expect("encode"));
            h.runtime.call(key.clone(), "run".into(), payload)
        })));
        let mut model = BTreeMap::new();
        for (ops, answer) in batches.iter().zip(answers) {
            let bytes = answer
                .map_err(|e| TestCaseError::fail(format!("call failed: {e}")))?
                .map_err(|e| TestCaseError::fail(format!("handler failed: {e}")))?;
            let got: Vec<Listed> = serde_json::from_slice(&bytes).expect("decode");
            let mut expected = Vec::new();
            for op in ops {
                match op {
                    Op::Put(k, v) => {
                        model.insert(k.clone(), v.clone());
                    }
                    Op::Delete(k) => {
                        model.remove(k);
                    }
                    Op::List { .. } => expected.push(model_list(&model, op)),
                }
            }
            prop_assert_eq!(got, expected, "ops {:?}", ops);
        }
        Ok(())
    });
    rt.block_on(h.runtime.shutdown());
    if let Err(e) = result {
        panic!("{e}");
    }
}
