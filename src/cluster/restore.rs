//! `roost restore`: seeds the data directory of the first node of a new
//! cluster from a backup (`backup.rs`). Every shard in the backup becomes a
//! group with that node as its only voter, holding the shard's copy; the
//! node then starts without `--join` (it bootstraps the cluster) and the
//! nodes that join receive each shard as a Raft snapshot.
//!
//! Refuses, before writing anything: a directory without a manifest, a
//! layout or storage format this build does not know, settings (shards,
//! replication) other than the new cluster's, a file whose size or
//! SHA-256 differs from the manifest, and a data directory that exists.

use std::path::PathBuf;

use super::backup::{self, Error, KIND, LAYOUT_VERSION, MANIFEST, Manifest, io};
use crate::id::ShardId;
use crate::replication::{NodeId, state_machine};
use crate::storage::Db;

/// What `roost restore` is asked for: where the backup is, and the first
/// node of the new cluster.
pub struct RestoreOptions {
    pub from: PathBuf,
    /// The node's data directory (its database goes in `db/` under it).
    pub data_dir: PathBuf,
    pub node_id: NodeId,
    /// The address the node will advertise (its gRPC address).
    pub advertise: String,
    /// The new cluster's settings, checked against the backup's.
    pub shards: u16,
    pub replication: u32,
}

/// Reads and checks `dir`'s manifest against `opts`.
pub fn check_manifest(opts: &RestoreOptions) -> Result<Manifest, Error> {
    let path = opts.from.join(MANIFEST);
    let text = std::fs::read(&path).map_err(io(format!(
        "read {} (a backup directory has one once the backup finished)",
        path.display()
    )))?;
    let m: Manifest = serde_json::from_slice(&text)
        .map_err(|e| Error::Invalid(format!("{}: {e}", path.display())))?;
    if m.kind != KIND || m.layout_version != LAYOUT_VERSION {
        return Err(Error::Invalid(format!(
            "{} is a {:?} of layout {}, this build reads {KIND:?} layout {LAYOUT_VERSION}",
            path.display(),
            m.kind,
            m.layout_version
        )));
    }
    let mut why = Vec::new();
    let s = &m.settings;
    if s.format_version != crate::storage::keys::FORMAT_VERSION {
        why.push(format!(
            "it has storage format version {}, this build {}",
            s.format_version,
            crate::storage::keys::FORMAT_VERSION
        ));
    }
    if s.shards != u32::from(opts.shards) {
        why.push(format!(
            "it has {} shards, the new cluster {} (--shards / node.shards)",
            s.shards, opts.shards
        ));
    }
    if s.replication != opts.replication {
        why.push(format!(
            "it has replication {}, the new cluster {} (--replication)",
            s.replication, opts.replication
        ));
    }
    if !why.is_empty() {
        return Err(Error::Mismatch(why.join("; ")));
    }
    let mut seen = std::collections::BTreeSet::new();
    for e in &m.shards {
        if e.shard >= s.shards || !seen.insert(e.shard) {
            return Err(Error::Invalid(format!(
                "shard {} is listed twice or out of range",
                e.shard
            )));
        }
        if e.file != backup::shard_file(e.shard) {
            return Err(Error::Invalid(format!("unexpected file name {:?}", e.file)));
        }
    }
    Ok(m)
}

/// Reads shard `entry`'s file and checks its size and SHA-256.
fn read_shard(opts: &RestoreOptions, entry: &backup::ShardEntry) -> Result<Vec<u8>, Error> {
    let path = opts.from.join(&entry.file);
    let data = std::fs::read(&path).map_err(io(path.display()))?;
    let sha256 = backup::sha256_hex(&data);
    if data.len() as u64 != entry.bytes || sha256 != entry.sha256 {
        return Err(Error::Mismatch(format!(
            "{} has {} bytes with SHA-256 {sha256}; the manifest says {} bytes with {}",
            path.display(),
            data.len(),
            entry.bytes,
            entry.sha256
        )));
    }
    Ok(data)
}

/// Restores the backup at `opts.from` into a new data directory. Every
/// file is checked before the data directory is created.
pub async fn run(opts: &RestoreOptions) -> Result<Manifest, Error> {
    let manifest = check_manifest(opts)?;
    if opts.data_dir.exists()
        && std::fs::read_dir(&opts.data_dir)
            .map_err(io(opts.data_dir.display()))?
            .next()
            .is_some()
    {
        return Err(Error::Invalid(format!(
            "{} is not empty: restore only into a new data directory",
            opts.data_dir.display()
        )));
    }
    let mut decoded = Vec::with_capacity(manifest.shards.len());
    for entry in &manifest.shards {
        let data = read_shard(opts, entry)?;
        let pairs: Vec<(Vec<u8>, Vec<u8>)> = crate::replication::types::decode(&data)
            .map_err(|e| Error::Invalid(format!("{}: {e}", entry.file)))?;
        decoded.push((entry.shard, pairs));
    }
    let db = Db::open(&opts.data_dir.join("db"))?;
    db.check_shard_count(opts.shards)?;
    for (shard, pairs) in decoded {
        let shard = ShardId::try_from(shard)
            .map_err(|_| Error::Invalid(format!("shard {shard} is out of range")))?;
        let batch = state_machine::seed(&db, shard, opts.node_id, &opts.advertise, &pairs)?;
        db.write_synced(batch).await?;
    }
    db.close(std::time::Duration::from_secs(5)).await;
    Ok(manifest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::backup::{Settings, ShardEntry};

    fn write_backup(dir: &std::path::Path, pairs: &[(Vec<u8>, Vec<u8>)]) -> Manifest {
        let data = crate::replication::types::encode(&pairs.to_vec()).expect("encode");
        std::fs::write(dir.join(backup::shard_file(1)), &data).expect("write");
        let m = Manifest {
            kind: KIND.into(),
            layout_version: LAYOUT_VERSION,
            roost_version: "test".into(),
            started_ms: 0,
            finished_ms: 0,
            settings: Settings {
                shards: 4,
                replication: 3,
                format_version: crate::storage::keys::FORMAT_VERSION,
            },
            shards: vec![ShardEntry {
                shard: 1,
                index: 7,
                term: 2,
                keys: pairs.len() as u64,
                bytes: data.len() as u64,
                sha256: backup::sha256_hex(&data),
                file: backup::shard_file(1),
            }],
        };
        std::fs::write(dir.join(MANIFEST), serde_json::to_vec(&m).expect("json")).expect("write");
        m
    }

    fn opts(from: &std::path::Path, data: &std::path::Path) -> RestoreOptions {
        RestoreOptions {
            from: from.to_owned(),
            data_dir: data.to_owned(),
            node_id: 1,
            advertise: "127.0.0.1:1".into(),
            shards: 4,
            replication: 3,
        }
    }

    #[tokio::test]
    async fn a_restore_seeds_the_shard_and_refuses_what_does_not_match() {
        let from = tempfile::tempdir().expect("dir");
        let data = tempfile::tempdir().expect("dir");
        let key = {
            let mut k = 1u16.to_be_bytes().to_vec();
            k.extend_from_slice(b"\x01some-key");
            k
        };
        write_backup(from.path(), &[(key.clone(), b"v".to_vec())]);

        // Other settings: refused, naming the difference.
        let mut other = opts(from.path(), &data.path().join("a"));
        other.shards = 8;
        other.replication = 5;
        let e = run(&other).await.expect_err("refused").to_string();
        assert!(e.contains("it has 4 shards, the new cluster 8"), "{e}");
        assert!(e.contains("replication 3, the new cluster 5"), "{e}");
        assert!(!data.path().join("a").exists(), "nothing written");

        // A corrupted file: refused.
        let file = from.path().join(backup::shard_file(1));
        let mut bytes = std::fs::read(&file).expect("read");
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&file, &bytes).expect("write");
        let e = run(&opts(from.path(), &data.path().join("b")))
            .await
            .expect_err("refused")
            .to_string();
        assert!(e.contains("SHA-256"), "{e}");
        bytes[last] ^= 1;
        std::fs::write(&file, &bytes).expect("write");

        // Intact: the shard's state is there.
        let dir = data.path().join("c");
        run(&opts(from.path(), &dir)).await.expect("restored");
        let db = Db::open(&dir.join("db")).expect("open");
        assert_eq!(db.get_state(&key).expect("read"), Some(b"v".to_vec()));
        db.check_shard_count(4).expect("4 shards");
        drop(db);

        // Not into a data directory that has data.
        let e = run(&opts(from.path(), &dir))
            .await
            .expect_err("refused")
            .to_string();
        assert!(e.contains("not empty"), "{e}");
    }
}
