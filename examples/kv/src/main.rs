//! The example class behind Roost's whole command line: `roost-example-kv
//! dev`, `node`, `edge` and the operator commands, exactly as `roost` has
//! them (`--help` lists them), serving the `KV` class and its router. E.g.
//! `cargo run -p roost-example-kv -- dev --listen 127.0.0.1:8788 --data-dir
//! ./kv-data`; on a cluster, the same binary as every `node` and `edge`.

use roost::cli::App;
use roost::config::Config;
use roost::object::Bindings;
use roost_example_kv::{KvWorker, bindings};

/// The example's classes and router.
struct Kv;

impl App for Kv {
    type Worker = KvWorker;

    fn build(&self, _config: &Config) -> (Bindings, KvWorker) {
        (bindings(), KvWorker)
    }
}

fn main() -> std::process::ExitCode {
    roost::cli::main(Kv)
}
