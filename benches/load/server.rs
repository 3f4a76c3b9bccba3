//! Starting and stopping a local `roost dev` for the bench to drive.
//!
//! Owns: the child process, its temporary data directory and its log file.
//! Readiness is the `serving http://ADDR` line on the child's stdout, awaited
//! with a deadline (never a fixed sleep). Stopping sends SIGTERM and waits,
//! with SIGKILL as the last resort. It never interprets the server's output
//! beyond that one line.

use std::fs::File;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// How long `roost dev` may take to print its `serving` line.
const START_DEADLINE: Duration = Duration::from_secs(60);
/// How long it may take to exit after SIGTERM before it is killed.
const STOP_DEADLINE: Duration = Duration::from_secs(20);
/// The readiness marker on the child's stdout.
const READY_MARKER: &str = "serving http://";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot create a temporary directory: {0}")]
    TempDir(#[source] std::io::Error),
    #[error("cannot start {bin}: {source}")]
    Spawn { bin: String, source: std::io::Error },
    #[error("roost dev did not print `{READY_MARKER}ADDR` within {START_DEADLINE:?}{log}")]
    NotReady { log: String },
    #[error("roost dev exited before it was ready ({status}){log}")]
    Exited { status: String, log: String },
    #[error("reading roost dev's stdout: {0}")]
    Stdout(#[source] std::io::Error),
    #[error("waiting for roost dev to exit: {0}")]
    Wait(#[source] std::io::Error),
}

/// A running `roost dev`; call [`RoostDev::stop`] when done (dropping it
/// kills the process as a fallback).
pub struct RoostDev {
    child: Child,
    addr: String,
    dir: tempfile::TempDir,
}

impl RoostDev {
    /// Start `bin dev --listen 127.0.0.1:0 --data-dir <tempdir>` and wait
    /// until it announces its address.
    pub async fn start(bin: &str) -> Result<RoostDev, Error> {
        let dir = tempfile::Builder::new()
            .prefix("roost-load-")
            .tempdir()
            .map_err(Error::TempDir)?;
        let data_dir = dir.path().join("data");
        let log_path = dir.path().join("roost.log");
        let log = File::create(&log_path).map_err(Error::TempDir)?;
        let mut child = Command::new(bin)
            .arg("dev")
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--data-dir")
            .arg(&data_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| Error::Spawn {
                bin: bin.to_owned(),
                source,
            })?;
        let Some(stdout) = child.stdout.take() else {
            return Err(Error::Stdout(std::io::Error::other(
                "stdout was not captured",
            )));
        };
        let mut lines = BufReader::new(stdout).lines();
        let found = tokio::time::timeout(START_DEADLINE, async {
            while let Some(line) = lines.next_line().await.map_err(Error::Stdout)? {
                if let Some(addr) = parse_ready_line(&line) {
                    return Ok(Some(addr));
                }
            }
            Ok(None)
        })
        .await;
        let addr = match found {
            Ok(Ok(Some(addr))) => addr,
            Ok(Ok(None)) => {
                // stdout closed: the process is exiting or has exited.
                let status = match tokio::time::timeout(STOP_DEADLINE, child.wait()).await {
                    Ok(Ok(s)) => s.to_string(),
                    Ok(Err(e)) => e.to_string(),
                    Err(_) => "stdout closed, still running".to_owned(),
                };
                return Err(Error::Exited {
                    status,
                    log: log_tail(&log_path),
                });
            }
            Ok(Err(e)) => return Err(e),
            Err(_) => {
                return Err(Error::NotReady {
                    log: log_tail(&log_path),
                });
            }
        };
        // Keep draining stdout so the server never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(RoostDev { child, addr, dir })
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn temp_dir(&self) -> &Path {
        self.dir.path()
    }

    /// SIGTERM, wait up to [`STOP_DEADLINE`], then SIGKILL.
    pub async fn stop(mut self) -> Result<(), Error> {
        if let Some(pid) = self.child.id() {
            // No signal crate among the dependencies: use kill(1).
            let sent = std::process::Command::new("kill")
                .arg("-TERM")
                .arg(pid.to_string())
                .status()
                .is_ok_and(|s| s.success());
            if sent {
                match tokio::time::timeout(STOP_DEADLINE, self.child.wait()).await {
                    Ok(Ok(status)) => {
                        if !status.success() {
                            eprintln!("load: roost dev exited with {status} after SIGTERM");
                        }
                        return Ok(());
                    }
                    Ok(Err(e)) => return Err(Error::Wait(e)),
                    Err(_) => eprintln!(
                        "load: roost dev ignored SIGTERM for {STOP_DEADLINE:?}; killing it"
                    ),
                }
            }
        }
        self.child.kill().await.map_err(Error::Wait)
    }
}

/// The address in a line containing `serving http://ADDR`, if any.
fn parse_ready_line(line: &str) -> Option<String> {
    let rest = &line[line.find(READY_MARKER)? + READY_MARKER.len()..];
    let addr: String = rest
        .chars()
        .take_while(|c| !c.is_whitespace())
        .collect::<String>()
        .trim_end_matches('/')
        .to_owned();
    (!addr.is_empty()).then_some(addr)
}

/// The last lines of the server's log, for error messages.
fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    if lines.is_empty() {
        return String::new();
    }
    let tail = lines[lines.len().saturating_sub(20)..].join("\n  ");
    format!("; its stderr ends with:\n  {tail}")
}
