//! Serves the example class with Roost's server builder:
//! `cargo run -p roost-example-kv -- [LISTEN_ADDR] [DATA_DIR]`.

use roost::config::Config;
use roost::node::DevNode;
use roost_example_kv::{KvWorker, bindings};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let mut config = Config::default();
    if let Some(listen) = args.next() {
        config.http.listen = listen.parse()?;
    }
    config.node.data_dir = args.next().unwrap_or_else(|| "./kv-data".into()).into();
    // Any free port, so that the example runs next to `roost dev`.
    config.grpc.listen = "127.0.0.1:0".parse()?;
    config.admin.listen = "127.0.0.1:0".parse()?;
    let node = DevNode::start_with(config, bindings(), KvWorker).await?;
    println!(
        "kv example: serving http://{} (gRPC on {})",
        node.http_addr(),
        node.grpc_addr()
    );
    tokio::signal::ctrl_c().await?;
    node.shutdown().await?;
    Ok(())
}
