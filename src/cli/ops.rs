//! The operator subcommands: `config`, `certs`, `cluster status`, `backup`,
//! `restore`, `node drain` and `node undrain`. Each is one call into the
//! library, with its output printed for a terminal.

use anyhow::Context as _;

use super::args::{
    BackupArgs, CertRole, CertsArgs, DrainArgs, FileArgs, RestoreArgs, StatusArgs, UndrainArgs,
};
use crate::config::{Config, Overrides};

pub(super) async fn drain_node(args: DrainArgs) -> anyhow::Result<()> {
    use crate::cluster::drain;
    let id = args.id;
    let opts = drain::DrainOptions {
        seeds: args.join,
        node: id,
        timeout: std::time::Duration::from_secs(args.timeout),
        remove: !args.keep,
        tls: cluster_tls(&args.file)?,
    };
    println!("roost node drain: marking node {id} draining");
    drain::drain(&opts, |progress| {
        if progress.done() {
            println!("roost node drain: node {id} holds no replicas");
        } else {
            println!("roost node drain: node {id}: {progress}");
        }
    })
    .await
    .context("drain")?;
    if args.keep {
        println!("roost node drain: node {id} drained (kept in the directory)");
    } else {
        println!("roost node drain: node {id} removed; stop its process");
    }
    Ok(())
}

/// How an operator command reaches the cluster's gRPC: plain, or mutual
/// TLS with the `[tls]` files of the configuration (file and ROOST_TLS_*).
fn cluster_tls(file: &FileArgs) -> anyhow::Result<crate::rpc::tls::Tls> {
    let config = Config::build(file.config.as_deref(), Overrides::default())
        .context("load configuration")?;
    crate::node::rpc_tls(&config).context("load TLS files")
}

pub(super) async fn cluster_status(args: StatusArgs) -> anyhow::Result<()> {
    let tls = cluster_tls(&args.file)?;
    let status = crate::cluster::status::gather(&args.join, &tls)
        .await
        .map_err(anyhow::Error::msg)
        .context("cluster status")?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        print!("{}", status.table());
    }
    Ok(())
}

pub(super) async fn backup(args: BackupArgs) -> anyhow::Result<()> {
    let tls = cluster_tls(&args.file)?;
    let out = match (args.out, args.under) {
        (Some(out), _) => out,
        (None, Some(under)) => {
            let t = time::OffsetDateTime::now_utc();
            under.join(format!(
                "backup-{:04}{:02}{:02}T{:02}{:02}{:02}Z",
                t.year(),
                u8::from(t.month()),
                t.day(),
                t.hour(),
                t.minute(),
                t.second()
            ))
        }
        (None, None) => anyhow::bail!("--out or --under is required"),
    };
    let opts = crate::cluster::backup::BackupOptions {
        seeds: args.join,
        out,
        shards: args.shards,
        timeout: std::time::Duration::from_secs(args.timeout),
    };
    let manifest = crate::cluster::backup::run(&opts, &tls)
        .await
        .context("backup")?;
    println!(
        "roost backup: {} shards into {}",
        manifest.shards.len(),
        opts.out.display()
    );
    Ok(())
}

pub(super) async fn restore(args: RestoreArgs) -> anyhow::Result<()> {
    let flags = Overrides {
        data_dir: args.data_dir,
        shards: args.shards,
        ..Overrides::default()
    };
    let mut config =
        Config::build(args.file.config.as_deref(), flags).context("load configuration")?;
    if let Some(id) = args.id {
        config.node.id = id;
    }
    let opts = crate::cluster::restore::RestoreOptions {
        from: args.from,
        data_dir: config.node.data_dir.clone(),
        node_id: config.node.id,
        advertise: args.advertise,
        shards: config.node.shards,
        replication: args.replication,
    };
    let manifest = crate::cluster::restore::run(&opts)
        .await
        .context("restore")?;
    println!(
        "roost restore: {} shards into {}; start node {} there without --join",
        manifest.shards.len(),
        opts.data_dir.display(),
        opts.node_id
    );
    Ok(())
}

pub(super) async fn undrain_node(args: UndrainArgs) -> anyhow::Result<()> {
    crate::cluster::drain::set_state(
        &args.join,
        args.id,
        false,
        std::time::Duration::from_secs(60),
        &cluster_tls(&args.file)?,
    )
    .await
    .context("undrain")?;
    println!("roost node undrain: node {} is active", args.id);
    Ok(())
}

/// `roost certs`.
pub(super) fn certs(args: CertsArgs) -> anyhow::Result<()> {
    use crate::rpc::auth::Role;
    let roles = args
        .roles
        .iter()
        .map(|r| match r {
            CertRole::Node => Role::Node,
            CertRole::Edge => Role::Edge,
            CertRole::Operator => Role::Operator,
        })
        .collect();
    let written = crate::rpc::certs::issue(&crate::rpc::certs::CertsRequest {
        dir: args.out,
        roles,
        dns: args.dns,
        ips: args.ip,
        days: args.days,
    })
    .context("roost certs")?;
    for path in written {
        println!("roost certs: wrote {}", path.display());
    }
    Ok(())
}

pub(super) fn print_config(args: FileArgs) -> anyhow::Result<()> {
    let config = Config::build(args.config.as_deref(), Overrides::default())
        .context("load configuration")?;
    print!("{}", config.to_documented_toml()?);
    Ok(())
}
