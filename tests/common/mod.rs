//! Test helpers: the real `roost` binary as a child process on port 0 with
//! a temp data dir, and waiting on conditions with deadlines.
#![allow(dead_code)]

use std::future::Future;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// A running `roost dev` process.
pub struct Roost {
    pub child: Child,
    pub addr: SocketAddr,
    /// The admin server (`/metrics`).
    pub admin: SocketAddr,
}

impl Roost {
    /// Starts `roost dev` on an OS-chosen port with `data_dir`, and waits
    /// for it to print the address it serves.
    pub fn start(data_dir: &Path, extra: &[&str]) -> Roost {
        Self::spawn(data_dir, extra, &[])
    }

    /// Like [`start`](Self::start), with extra environment variables.
    pub fn start_with_env(data_dir: &Path, env: &[(&str, &str)]) -> Roost {
        Self::spawn(data_dir, &[], env)
    }

    fn spawn(data_dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> Roost {
        let mut child = Command::new(env!("CARGO_BIN_EXE_roost"))
            .args(["dev", "--listen", "127.0.0.1:0"])
            .args(["--grpc-listen", "127.0.0.1:0"])
            .args(["--admin-listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .args(extra)
            .envs(env.iter().copied())
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("roost binary starts");
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                for marker in ["serving http://", "admin on http://"] {
                    if let Some(rest) = line.split(marker).nth(1) {
                        let addr = rest
                            .split_whitespace()
                            .next()
                            .unwrap_or_default()
                            .to_owned();
                        let _ = tx.send(addr);
                    }
                }
            }
        });
        let next = || -> SocketAddr {
            rx.recv_timeout(Duration::from_secs(60))
                .expect("roost prints its addresses within 60 s")
                .parse()
                .expect("a socket address")
        };
        let addr = next();
        let admin = next();
        Roost { child, addr, admin }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn ws_url(&self, path: &str) -> String {
        format!("ws://{}{}", self.addr, path)
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then wait for a clean exit; returns the exit status code.
    pub fn terminate(mut self) -> Option<i32> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        self.child.wait().ok().and_then(|s| s.code())
    }
}

impl Drop for Roost {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `check` until it returns true or `timeout` passes.
pub async fn wait_until<F, Fut>(timeout: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
