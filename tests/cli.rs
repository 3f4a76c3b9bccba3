//! The `roost` binary as a user runs it: help, `roost config`, and
//! `roost dev` starting and stopping on SIGTERM.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use roost::config::{Config, LogFormat};

/// `roost` run in `dir`, with no `ROOST_*` or `RUST_LOG` from the caller.
fn roost(dir: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_roost"));
    command.current_dir(dir).env_remove("RUST_LOG");
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("ROOST_") {
            command.env_remove(name);
        }
    }
    command
}

fn run(command: &mut Command) -> Output {
    command.output().expect("run roost")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn help_documents_every_command_and_flag() {
    let dir = tempfile::tempdir().unwrap();
    let top = run(roost(dir.path()).arg("--help"));
    assert!(top.status.success());
    let top = text(&top.stdout);
    for expected in ["dev", "config", "Durable Objects", "roost.example.toml"] {
        assert!(top.contains(expected), "{expected} missing from:\n{top}");
    }

    let dev = run(roost(dir.path()).args(["dev", "--help"]));
    assert!(dev.status.success());
    let dev = text(&dev.stdout);
    for expected in [
        "--listen <ADDR>",
        "--grpc-listen <ADDR>",
        "--admin-listen <ADDR>",
        "--data-dir <DIR>",
        "--shards <N>",
        "--config <PATH>",
        "--log-format <FORMAT>",
        "ROOST_CONFIG",
        "ROOST_HTTP_LISTEN",
        "ROOST_GRPC_LISTEN",
        "ROOST_ADMIN_LISTEN",
        "ROOST_NODE_DATA_DIR",
        "ROOST_NODE_SHARDS",
        "ROOST_LOG_FORMAT",
        "json",
    ] {
        assert!(dev.contains(expected), "{expected} missing from:\n{dev}");
    }
}

#[test]
fn config_prints_the_effective_configuration() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("roost.toml"), "[node]\nshards = 8\n").unwrap();
    let output = run(roost(dir.path())
        .arg("config")
        .env("ROOST_HTTP_LISTEN", "127.0.0.1:9999")
        .env("ROOST_LOG_FORMAT", "json"));
    assert!(output.status.success(), "{}", text(&output.stderr));

    let printed: Config = toml::from_str(&text(&output.stdout)).expect("valid TOML");
    let mut expected = Config::default();
    expected.node.shards = 8;
    expected.http.listen = "127.0.0.1:9999".parse().unwrap();
    expected.log.format = LogFormat::Json;
    assert_eq!(printed, expected);
}

#[test]
fn config_reads_the_file_named_by_roost_config() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("elsewhere.toml");
    std::fs::write(&file, "shutdown_grace_ms = 7\n").unwrap();
    let output = run(roost(dir.path()).arg("config").env("ROOST_CONFIG", &file));
    assert!(output.status.success(), "{}", text(&output.stderr));
    let printed: Config = toml::from_str(&text(&output.stdout)).expect("valid TOML");
    assert_eq!(printed.shutdown_grace_ms, 7);
}

#[test]
fn bad_settings_fail_with_a_message_naming_them() {
    let dir = tempfile::tempdir().unwrap();
    let output = run(roost(dir.path())
        .arg("config")
        .env("ROOST_NODE_SHARDS", "many"));
    assert!(!output.status.success());
    let stderr = text(&output.stderr);
    assert!(stderr.contains("ROOST_NODE_SHARDS"), "{stderr}");

    let output = run(roost(dir.path()).args(["dev", "--shards", "0"]));
    assert!(!output.status.success());
    let stderr = text(&output.stderr);
    assert!(stderr.contains("node.shards"), "{stderr}");

    let output = run(roost(dir.path()).args(["config", "--config", "missing.toml"]));
    assert!(!output.status.success());
    let stderr = text(&output.stderr);
    assert!(stderr.contains("missing.toml"), "{stderr}");
}

/// Kills the child if the test ends before it exits.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn dev_serves_until_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let child = roost(dir.path())
        .args(["dev", "--listen", "127.0.0.1:0"])
        .args(["--grpc-listen", "127.0.0.1:0"])
        .args(["--admin-listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data_dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start roost dev");
    let mut running = Running(child);

    let stdout = running.0.stdout.take().expect("piped stdout");
    let (lines_tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let line = lines
        .recv_timeout(Duration::from_secs(120))
        .expect("roost dev prints its serving line");
    let expected = format!("(data in {})", data_dir.display());
    assert!(
        line.starts_with("roost dev: serving http://127.0.0.1:"),
        "{line}"
    );
    assert!(line.ends_with(&expected), "{line}");
    assert!(
        !line.contains("127.0.0.1:0 "),
        "the bound port is shown: {line}"
    );
    let grpc = lines
        .recv_timeout(Duration::from_secs(10))
        .expect("roost dev prints its gRPC line");
    let grpc_addr = grpc
        .strip_prefix("roost dev: grpc on ")
        .unwrap_or_else(|| panic!("unexpected line: {grpc}"));
    let grpc_addr: std::net::SocketAddr = grpc_addr.parse().expect("a socket address");
    assert_ne!(grpc_addr.port(), 0, "the bound port is shown: {grpc}");
    let admin = lines
        .recv_timeout(Duration::from_secs(10))
        .expect("roost dev prints its admin line");
    assert!(
        admin.starts_with("roost dev: admin on http://127.0.0.1:") && !admin.ends_with(":0"),
        "{admin}"
    );

    let pid = running.0.id().to_string();
    let killed = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(killed.success());

    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = running.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "roost dev did not exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "exit status {status}");
}
