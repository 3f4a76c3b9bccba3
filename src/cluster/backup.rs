//! Online backups: `Cluster.Backup` on a shard's leader (a fence of its
//! term, then the shard's state read at one point in time), and `roost
//! backup`, which asks every shard's leader for its copy and writes the
//! copies and a manifest (cluster settings, and per shard its log
//! position, size and SHA-256) into a directory. `restore.rs` reads it back.
//!
//! Consistency: each shard's copy is taken after a fence the leader
//! proposed once the backup had started, so it holds every write
//! acknowledged before `roost backup` began (an acknowledged write is
//! committed, and the fence is applied after everything committed before
//! it). Writes made while the backup runs may or may not be in it, shard
//! by shard: the copies are not one cluster-wide point in time.

use std::collections::BTreeMap;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tonic::Status;

use super::control::Control;
use super::{service, status};
use crate::id::ShardId;
use crate::replication::state_machine;
use crate::rpc::pb;
use crate::rpc::tls::Tls;
use crate::storage::Db;

/// The manifest's file name in a backup directory (written last: a
/// directory without one is an incomplete backup).
pub const MANIFEST: &str = "manifest.json";
/// What the manifest's `kind` says.
pub const KIND: &str = "roost-backup";
/// The version of the backup layout this build writes and reads.
pub const LAYOUT_VERSION: u32 = 1;
/// The data of one `BackupChunk`.
const CHUNK: usize = 1 << 20;
/// How long a shard's leader may take for its fence.
const FENCE_TIMEOUT: Duration = Duration::from_secs(10);

/// Errors of a backup or a restore.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Cluster(String),
    #[error("{0}: {1}")]
    Io(String, #[source] std::io::Error),
    #[error("the backup is unusable: {0}")]
    Invalid(String),
    #[error("the backup does not match: {0}")]
    Mismatch(String),
    #[error("storage: {0}")]
    Storage(#[from] crate::storage::Error),
}

pub(crate) fn io(what: impl std::fmt::Display) -> impl FnOnce(std::io::Error) -> Error {
    move |e| Error::Io(what.to_string(), e)
}

/// The cluster-wide settings a backup was taken with; a cluster restored
/// from it must have the same.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settings {
    pub shards: u32,
    pub replication: u32,
    pub format_version: u32,
}

/// One shard's copy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardEntry {
    pub shard: u32,
    /// The log position (of the old cluster) the copy was read at.
    pub index: u64,
    pub term: u64,
    pub keys: u64,
    pub bytes: u64,
    /// SHA-256 of the file, hex.
    pub sha256: String,
    /// The file, relative to the backup directory.
    pub file: String,
}

/// `manifest.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub kind: String,
    pub layout_version: u32,
    pub roost_version: String,
    /// When the backup began and ended (ms since the Unix epoch).
    pub started_ms: u64,
    pub finished_ms: u64,
    pub settings: Settings,
    pub shards: Vec<ShardEntry>,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The file name of `shard`'s copy.
pub fn shard_file(shard: u32) -> String {
    format!("shard-{shard:05}.bin")
}

/// SHA-256 of `data`, hex.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// Serves `Cluster.Backup` for `shard` on this node: refused unless it
/// leads the shard; a fence of its leadership epoch, then the state read
/// at once.
pub async fn serve(
    control: &Control,
    db: &Db,
    shard: ShardId,
) -> Result<Vec<pb::BackupChunk>, Status> {
    let handle = control
        .groups()
        .into_iter()
        .find(|g| g.id() == shard)
        .ok_or_else(|| Status::invalid_argument("no such shard"))?;
    let me = control.node_id();
    let not_leader =
        || Status::failed_precondition(format!("node {me} does not lead shard {shard}"));
    let epoch = handle.serving_epoch().ok_or_else(not_leader)?;
    let fenced = async { handle.fence(epoch).await?.await };
    match tokio::time::timeout(FENCE_TIMEOUT, fenced).await {
        Ok(Ok(())) => {}
        Ok(Err(crate::replication::Error::NotLeader { .. })) => return Err(not_leader()),
        Ok(Err(e)) => return Err(Status::unavailable(format!("shard {shard}: {e}"))),
        Err(_) => {
            return Err(Status::unavailable(format!(
                "shard {shard}: fence timed out"
            )));
        }
    }
    let db = db.clone();
    let export = tokio::task::spawn_blocking(move || state_machine::export(&db, shard))
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(|e| Status::internal(format!("read shard {shard}: {e}")))?;
    let data = crate::replication::types::encode(&export.pairs)
        .map_err(|e| Status::internal(format!("encode shard {shard}: {e}")))?;
    tracing::info!(
        shard,
        index = export.index,
        keys = export.pairs.len(),
        bytes = data.len(),
        "backup of a shard"
    );
    let header = pb::BackupHeader {
        shard: u32::from(shard),
        index: export.index,
        term: export.term,
        keys: export.pairs.len() as u64,
        bytes: data.len() as u64,
        sha256: sha256_hex(&data),
    };
    let mut chunks = vec![pb::BackupChunk {
        header: Some(header),
        data: Vec::new(),
    }];
    chunks.extend(data.chunks(CHUNK).map(|c| pb::BackupChunk {
        header: None,
        data: c.to_vec(),
    }));
    Ok(chunks)
}

/// What `roost backup` is asked for.
pub struct BackupOptions {
    pub seeds: Vec<String>,
    pub out: PathBuf,
    /// Only these shards (all of them if `None`).
    pub shards: Option<RangeInclusive<u32>>,
    /// Give up on a shard whose leader has not answered after this long.
    pub timeout: Duration,
}

/// Parses a shard range: `N` or `A-B` (inclusive).
pub fn parse_range(s: &str) -> Result<RangeInclusive<u32>, String> {
    let num = |t: &str| {
        t.trim()
            .parse::<u32>()
            .map_err(|_| format!("`{s}` is not a shard range (N or A-B)"))
    };
    let range = match s.split_once('-') {
        Some((a, b)) => num(a)?..=num(b)?,
        None => num(s)?..=num(s)?,
    };
    if range.is_empty() {
        return Err(format!("`{s}` is an empty shard range"));
    }
    Ok(range)
}

/// Takes a backup of the cluster reached through `opts.seeds` into
/// `opts.out` (created; refused if it already holds a manifest).
pub async fn run(opts: &BackupOptions, tls: &Tls) -> Result<Manifest, Error> {
    let started_ms = now_ms();
    if opts.out.join(MANIFEST).exists() {
        return Err(Error::Invalid(format!(
            "{} already holds a backup; choose a new directory",
            opts.out.display()
        )));
    }
    std::fs::create_dir_all(&opts.out).map_err(io(opts.out.display()))?;
    let mut cluster = status::gather(&opts.seeds, tls)
        .await
        .map_err(Error::Cluster)?;
    let settings = Settings {
        shards: cluster.shards,
        replication: cluster.replication,
        format_version: crate::storage::keys::FORMAT_VERSION,
    };
    let all = 0..=cluster.shards.saturating_sub(1);
    let wanted = opts.shards.clone().unwrap_or(all.clone());
    if wanted.end() >= &cluster.shards {
        return Err(Error::Cluster(format!(
            "the cluster has shards 0-{}; {}-{} is outside",
            all.end(),
            wanted.start(),
            wanted.end()
        )));
    }
    let mut entries = Vec::new();
    for shard in wanted {
        let deadline = tokio::time::Instant::now() + opts.timeout;
        let mut last = String::from("no leader known");
        let entry = loop {
            if let Some(addr) = leader_addr(&cluster, shard) {
                match fetch(&addr, shard, tls, &opts.out).await {
                    Ok(entry) => break entry,
                    Err(e) => last = format!("{addr}: {e}"),
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::Cluster(format!("shard {shard}: {last}")));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            if let Ok(fresh) = status::gather(&opts.seeds, tls).await {
                cluster = fresh;
            }
        };
        entries.push(entry);
    }
    let manifest = Manifest {
        kind: KIND.to_owned(),
        layout_version: LAYOUT_VERSION,
        roost_version: env!("CARGO_PKG_VERSION").to_owned(),
        started_ms,
        finished_ms: now_ms(),
        settings,
        shards: entries,
    };
    let text = serde_json::to_vec_pretty(&manifest)
        .map_err(|e| Error::Invalid(format!("encode manifest: {e}")))?;
    let tmp = opts.out.join(format!("{MANIFEST}.tmp"));
    write_synced(&tmp, &text)?;
    std::fs::rename(&tmp, opts.out.join(MANIFEST)).map_err(io("rename manifest"))?;
    Ok(manifest)
}

fn leader_addr(cluster: &status::ClusterStatus, shard: u32) -> Option<String> {
    let leader = cluster
        .groups
        .iter()
        .find(|g| g.shard == Some(shard))?
        .leader?;
    let nodes: BTreeMap<_, _> = cluster.nodes.iter().map(|n| (n.id, &n.addr)).collect();
    nodes.get(&leader).map(|a| (*a).clone())
}

fn write_synced(path: &Path, data: &[u8]) -> Result<(), Error> {
    use std::io::Write;
    let mut f = std::fs::File::create(path).map_err(io(path.display()))?;
    f.write_all(data).map_err(io(path.display()))?;
    f.sync_all().map_err(io(path.display()))
}

/// Asks `addr` for `shard`'s copy, checks it against its header and
/// writes it into `out`.
async fn fetch(addr: &str, shard: u32, tls: &Tls, out: &Path) -> Result<ShardEntry, String> {
    let mut client = service::connect(addr, tls)
        .await
        .map_err(|e| e.to_string())?;
    let mut stream = client
        .backup(pb::BackupRequest { shard })
        .await
        .map_err(|s| s.message().to_owned())?
        .into_inner();
    let first = stream
        .message()
        .await
        .map_err(|s| s.message().to_owned())?
        .ok_or("the stream ended before its header")?;
    let header = first.header.ok_or("the first message has no header")?;
    if header.shard != shard {
        return Err(format!("asked for shard {shard}, got {}", header.shard));
    }
    let size = usize::try_from(header.bytes).map_err(|_| "too large")?;
    let mut data = Vec::with_capacity(size.min(64 << 20));
    while let Some(chunk) = stream.message().await.map_err(|s| s.message().to_owned())? {
        data.extend_from_slice(&chunk.data);
        if data.len() > size {
            return Err(format!("more than the {size} bytes announced"));
        }
    }
    let sha256 = sha256_hex(&data);
    if data.len() != size || sha256 != header.sha256 {
        return Err(format!(
            "received {} bytes with SHA-256 {sha256}; the leader announced {size} with {}",
            data.len(),
            header.sha256
        ));
    }
    let file = shard_file(shard);
    write_synced(&out.join(&file), &data).map_err(|e| e.to_string())?;
    Ok(ShardEntry {
        shard,
        index: header.index,
        term: header.term,
        keys: header.keys,
        bytes: header.bytes,
        sha256,
        file,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_ranges_parse() {
        assert_eq!(parse_range("3"), Ok(3..=3));
        assert_eq!(parse_range("0-15"), Ok(0..=15));
        assert!(parse_range("5-2").is_err());
        assert!(parse_range("x").is_err());
    }
}
