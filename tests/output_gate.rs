//! The output gate, end to end: a response leaves only after its write is
//! durable. SIGKILL the process while increments are in flight, restart on
//! the same data dir, and every acknowledged increment must be there.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::Roost;
use serde_json::Value;

const COUNTERS: usize = 4;
const CLIENTS: usize = 16;

async fn value(client: &reqwest::Client, url: String) -> i64 {
    let body: Value = client
        .get(url)
        .send()
        .await
        .expect("GET is answered")
        .json()
        .await
        .expect("JSON body");
    body["value"].as_i64().expect("value is an integer")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_increments_survive_sigkill() {
    let dir = tempfile::tempdir().expect("temp dir");
    let roost = Roost::start(dir.path(), &[]);
    let base = roost.url("");
    let client = reqwest::Client::new();
    // Acknowledged values per counter.
    let acked: Arc<Mutex<BTreeMap<usize, Vec<i64>>>> = Arc::default();

    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let (client, base, acked) = (client.clone(), base.clone(), acked.clone());
        tasks.push(tokio::spawn(async move {
            for i in 0..10_000usize {
                let counter = (c + i) % COUNTERS;
                let url = format!("{base}/counter/gate-{counter}/increment");
                let Ok(resp) = client.post(url).send().await else {
                    return;
                };
                if resp.status() != 200 {
                    return;
                }
                let Ok(body) = resp.json::<Value>().await else {
                    return;
                };
                let Some(v) = body["value"].as_i64() else {
                    return;
                };
                acked
                    .lock()
                    .expect("lock")
                    .entry(counter)
                    .or_default()
                    .push(v);
            }
        }));
    }
    let enough = common::wait_until(Duration::from_secs(60), || {
        let acked = acked.clone();
        async move {
            acked
                .lock()
                .expect("lock")
                .values()
                .map(Vec::len)
                .sum::<usize>()
                >= 400
        }
    })
    .await;
    assert!(enough, "increments are acknowledged");
    roost.kill9();
    for t in tasks {
        let _ = t.await;
    }

    let roost = Roost::start(dir.path(), &[]);
    let acked = acked.lock().expect("lock").clone();
    for (counter, values) in &acked {
        let mut sorted = values.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), values.len(), "acknowledged values are unique");
        let max = *sorted.last().expect("at least one value");
        let after = value(&client, roost.url(&format!("/counter/gate-{counter}"))).await;
        assert!(
            after >= max,
            "counter {counter}: {after} after restart, but {max} was acknowledged"
        );
    }
    roost.terminate();
}
