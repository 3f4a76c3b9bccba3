//! `roost backup` of a cluster under load and `roost restore` into a new
//! one: every write acknowledged before the backup began is in the restored
//! cluster (nothing acknowledged after its end is required), the restored
//! cluster serves reads and new writes, and the nodes that joined it hold
//! the restored shards (the seeded node is SIGKILLed and reads go on). A
//! restore with other settings is refused.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{SHARDS, json_of, wait_agreed, wait_converged};
use crate::procs;

const COUNTERS: usize = 24;

/// Acknowledged values per counter, with when each was acknowledged.
type Acked = Arc<Mutex<BTreeMap<usize, Vec<(i64, Instant)>>>>;

fn count(acked: &Acked) -> usize {
    acked.lock().expect("lock").values().map(Vec::len).sum()
}

/// Per counter, the highest value acknowledged before `t`.
fn max_before(acked: &Acked, t: Instant) -> BTreeMap<usize, i64> {
    acked
        .lock()
        .expect("lock")
        .iter()
        .filter_map(|(c, v)| {
            let m = v.iter().filter(|(_, at)| *at < t).map(|(v, _)| *v).max()?;
            Some((*c, m))
        })
        .collect()
}

async fn wait_count(acked: &Acked, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while count(acked) < n {
        assert!(Instant::now() < deadline, "load is acknowledged");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn run(args: Vec<String>) -> std::process::Output {
    tokio::task::spawn_blocking(move || procs::run(&args))
        .await
        .expect("command ran")
}

fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").to_string()
}

/// Reads `counter` through `edge`, retrying while the cluster settles.
async fn read(http: &reqwest::Client, edge: &str, counter: usize) -> i64 {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let resp = http
            .get(format!("{edge}/counter/b-{counter}"))
            .timeout(Duration::from_secs(15))
            .send()
            .await;
        if let Ok(resp) = resp {
            let (s, b) = json_of(resp).await;
            if s == 200 {
                return b["value"].as_i64().expect("a value");
            }
        }
        assert!(Instant::now() < deadline, "counter {counter} is readable");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_under_load_restores_into_a_new_cluster() {
    let _turn = crate::harness::one_at_a_time().await;
    let root = tempfile::tempdir().expect("temp dir");
    let nodes = procs::cluster(&root.path().join("old"), 3, SHARDS);
    let addrs: Vec<String> = nodes.values().map(|p| p.addr.clone()).collect();
    wait_agreed(&addrs, 3, Duration::from_secs(90)).await;
    let edge = procs::edge(&addrs);
    let http = reqwest::Client::new();

    let acked: Acked = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for c in 0..6usize {
        let (http, base, acked, stop) =
            (http.clone(), edge.addr.clone(), acked.clone(), stop.clone());
        clients.push(tokio::spawn(async move {
            let mut i = c;
            while !stop.load(Ordering::Relaxed) {
                let counter = i % COUNTERS;
                i += 6;
                let resp = http
                    .post(format!("{base}/counter/b-{counter}/increment"))
                    .timeout(Duration::from_secs(15))
                    .send()
                    .await;
                let Ok(resp) = resp else { continue };
                if resp.status() != 200 {
                    continue;
                }
                let Ok(body) = resp.json::<Value>().await else {
                    continue;
                };
                if let Some(v) = body["value"].as_i64() {
                    acked
                        .lock()
                        .expect("lock")
                        .entry(counter)
                        .or_default()
                        .push((v, Instant::now()));
                }
            }
        }));
    }
    wait_count(&acked, 200).await;

    // The backup, while the load goes on.
    let dir = root.path().join("backup");
    let began = Instant::now();
    let out = run(vec![
        "backup".into(),
        "--join".into(),
        addrs[1].clone(),
        "--out".into(),
        dir.display().to_string(),
    ])
    .await;
    let ended = Instant::now();
    assert!(
        out.status.success(),
        "roost backup: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&format!("{SHARDS} shards into")),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).expect("manifest"))
            .expect("JSON");
    assert_eq!(manifest["settings"]["shards"], u32::from(SHARDS));
    assert_eq!(manifest["settings"]["replication"], 3);
    assert_eq!(
        manifest["shards"].as_array().expect("shards").len(),
        usize::from(SHARDS)
    );
    let before_backup = max_before(&acked, began);
    // Writes go on after the backup.
    let n = count(&acked);
    wait_count(&acked, n + 100).await;
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        let _ = c.await;
    }
    let at_end = max_before(&acked, ended);
    let last = max_before(&acked, Instant::now());
    assert!(last.values().sum::<i64>() > at_end.values().sum::<i64>());
    drop(edge);
    drop(nodes);

    // Other settings: refused before anything is written.
    let new_root = root.path().join("new");
    let first = free_addr();
    let restore = |shards: u16| {
        vec![
            "restore".into(),
            "--from".into(),
            dir.display().to_string(),
            "--data-dir".into(),
            procs::data_dir(&new_root, 1).display().to_string(),
            "--id".into(),
            "1".into(),
            "--advertise".into(),
            first.clone(),
            "--shards".into(),
            shards.to_string(),
        ]
    };
    let out = run(restore(SHARDS * 2)).await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "a restore with other settings is refused"
    );
    assert!(
        err.contains("does not match") && err.contains("shards"),
        "{err}"
    );
    assert!(!procs::data_dir(&new_root, 1).exists());

    let out = run(restore(SHARDS)).await;
    assert!(
        out.status.success(),
        "roost restore: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The new cluster: the seeded node first, two empty nodes join it.
    let n1 = procs::node(&new_root, 1, &first, &[], SHARDS);
    let seeds = vec![n1.addr.clone()];
    let n2 = procs::node(&new_root, 2, "127.0.0.1:0", &seeds, SHARDS);
    let n3 = procs::node(&new_root, 3, "127.0.0.1:0", &seeds, SHARDS);
    let new_addrs = vec![n1.addr.clone(), n2.addr.clone(), n3.addr.clone()];
    wait_converged(&new_addrs, 3, Duration::from_secs(90)).await;
    let edge = procs::edge(&new_addrs);
    let mut restored = BTreeMap::new();
    for c in 0..COUNTERS {
        let v = read(&http, &edge.addr, c).await;
        let before = before_backup.get(&c).copied().unwrap_or(0);
        let max = last.get(&c).copied().unwrap_or(0);
        assert!(
            v >= before,
            "counter {c}: restored {v} < {before} acknowledged before the backup began"
        );
        assert!(
            v <= max,
            "counter {c}: restored {v} > {max} ever acknowledged"
        );
        restored.insert(c, v);
    }

    // It takes new writes.
    for c in [0, COUNTERS / 2] {
        let (s, b) = json_of(
            http.post(format!("{}/counter/b-{c}/increment", edge.addr))
                .timeout(Duration::from_secs(15))
                .send()
                .await
                .expect("answered"),
        )
        .await;
        assert_eq!(s, 200, "{b}");
        assert_eq!(b["value"].as_i64(), Some(restored[&c] + 1));
        restored.insert(c, restored[&c] + 1);
    }

    // The joined nodes hold the restored shards: without the seeded node,
    // every counter reads the same.
    n1.kill9();
    for c in 0..COUNTERS {
        assert_eq!(
            read(&http, &edge.addr, c).await,
            restored[&c],
            "counter {c}"
        );
    }
    drop(edge);
    drop((n2, n3));
}
