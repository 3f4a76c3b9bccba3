//! Starting and stopping the processes the bench drives: `roost dev`, and
//! (through [`spawn`]) cluster nodes, edges and etcd members.
//!
//! Owns: child processes, their log files and temporary data directories.
//! Readiness is a marker line on the child's stdout (or stderr, for etcd),
//! awaited with a deadline (never a fixed sleep). Stopping sends SIGTERM and
//! waits, with SIGKILL as the last resort. It never interprets a server's
//! output beyond its marker lines.

use std::fs::File;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};

/// How long a process may take to print its marker lines.
const START_DEADLINE: Duration = Duration::from_secs(120);
/// How long it may take to exit after SIGTERM before it is killed.
const STOP_DEADLINE: Duration = Duration::from_secs(20);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot create a temporary directory or log file: {0}")]
    TempDir(#[source] std::io::Error),
    #[error("cannot start {bin}: {source}")]
    Spawn { bin: String, source: std::io::Error },
    #[error("{what} did not print `{marker}` within {START_DEADLINE:?}{log}")]
    NotReady {
        what: String,
        marker: String,
        log: String,
    },
    #[error("{what} exited before it was ready ({status}){log}")]
    Exited {
        what: String,
        status: String,
        log: String,
    },
    #[error("waiting for a child process: {0}")]
    Wait(#[source] std::io::Error),
}

/// Which output stream carries a process's marker lines.
#[derive(Clone, Copy)]
pub enum Markers {
    Stdout,
    Stderr,
}

/// A started process; dropping it kills the process.
pub struct Spawned {
    pub child: Child,
    /// For each marker, the word that followed it.
    pub addrs: Vec<String>,
    pub what: String,
}

/// Runs `cmd`, sending the other stream to `log`, and waits until each of
/// `markers` has appeared (in order) on the marker stream.
pub async fn spawn(
    mut cmd: Command,
    what: &str,
    log: &Path,
    stream: Markers,
    markers: &[&str],
) -> Result<Spawned, Error> {
    let file = File::create(log).map_err(Error::TempDir)?;
    cmd.stdin(Stdio::null()).kill_on_drop(true);
    match stream {
        Markers::Stdout => cmd.stdout(Stdio::piped()).stderr(Stdio::from(file)),
        Markers::Stderr => cmd.stderr(Stdio::piped()).stdout(Stdio::from(file)),
    };
    let mut child = cmd.spawn().map_err(|source| Error::Spawn {
        bin: what.to_owned(),
        source,
    })?;
    let out: Box<dyn AsyncRead + Send + Unpin> = match stream {
        Markers::Stdout => match child.stdout.take() {
            Some(s) => Box::new(s),
            None => return Err(Error::Wait(std::io::Error::other("stdout not captured"))),
        },
        Markers::Stderr => match child.stderr.take() {
            Some(s) => Box::new(s),
            None => return Err(Error::Wait(std::io::Error::other("stderr not captured"))),
        },
    };
    let mut lines = BufReader::new(out).lines();
    let mut addrs = Vec::new();
    // Lines seen on the marker stream, for the error message.
    let mut seen = Vec::new();
    let found = tokio::time::timeout(START_DEADLINE, async {
        while addrs.len() < markers.len() {
            let Ok(Some(line)) = lines.next_line().await else {
                return false;
            };
            if let Some(addr) = after_marker(&line, markers[addrs.len()]) {
                addrs.push(addr);
            } else if seen.len() < 200 {
                seen.push(line);
            }
        }
        true
    })
    .await;
    let tail = || {
        let mut t = log_tail(log);
        if !seen.is_empty() {
            let from = seen.len().saturating_sub(20);
            t.push_str(&format!(
                "\n  (marker stream:)\n  {}",
                seen[from..].join("\n  ")
            ));
        }
        t
    };
    match found {
        Ok(true) => {}
        Ok(false) => {
            let status = match tokio::time::timeout(STOP_DEADLINE, child.wait()).await {
                Ok(Ok(s)) => s.to_string(),
                Ok(Err(e)) => e.to_string(),
                Err(_) => "output closed, still running".to_owned(),
            };
            return Err(Error::Exited {
                what: what.to_owned(),
                status,
                log: tail(),
            });
        }
        Err(_) => {
            return Err(Error::NotReady {
                what: what.to_owned(),
                marker: markers[addrs.len()].to_owned(),
                log: tail(),
            });
        }
    }
    // Keep draining, so the child never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok(Spawned {
        child,
        addrs,
        what: what.to_owned(),
    })
}

impl Spawned {
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// SIGTERM, wait up to [`STOP_DEADLINE`], then SIGKILL.
    pub async fn stop(mut self) -> Result<(), Error> {
        if let Some(pid) = self.child.id()
            && signal(pid, "-TERM")
        {
            match tokio::time::timeout(STOP_DEADLINE, self.child.wait()).await {
                Ok(Ok(_)) => return Ok(()),
                Ok(Err(e)) => return Err(Error::Wait(e)),
                Err(_) => eprintln!(
                    "load: {} ignored SIGTERM for {STOP_DEADLINE:?}; killing it",
                    self.what
                ),
            }
        }
        self.child.kill().await.map_err(Error::Wait)
    }

    /// SIGKILL and reap: the process gets no chance to clean up.
    pub async fn kill9(mut self) -> Result<(), Error> {
        self.child.kill().await.map_err(Error::Wait)
    }
}

/// Sends `sig` (e.g. "-TERM") with kill(1); no signal crate is needed.
fn signal(pid: u32, sig: &str) -> bool {
    std::process::Command::new("kill")
        .arg(sig)
        .arg(pid.to_string())
        .status()
        .is_ok_and(|s| s.success())
}

/// The word after `marker` in `line`, if the line contains it.
fn after_marker(line: &str, marker: &str) -> Option<String> {
    let rest = &line[line.find(marker)? + marker.len()..];
    let word: String = rest
        .chars()
        .take_while(|c| !c.is_whitespace() && *c != '"' && *c != ',')
        .collect::<String>()
        .trim_end_matches('/')
        .to_owned();
    Some(word)
}

/// The last lines of a log file, for error messages.
pub fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    if lines.is_empty() {
        return String::new();
    }
    let tail = lines[lines.len().saturating_sub(20)..].join("\n  ");
    format!("; {} ends with:\n  {tail}", path.display())
}

/// A running `roost dev` with its own temporary data directory.
pub struct RoostDev {
    proc: Spawned,
    dir: tempfile::TempDir,
}

/// The per-client limits a public deployment keeps, opened up: the load
/// generator is one client (a few loopback addresses) with thousands of
/// connections and sockets.
pub const OPEN_LIMITS: &[(&str, &str)] = &[
    ("ROOST_HTTP_MAX_CONNECTIONS", "1000000"),
    ("ROOST_HTTP_MAX_CONNECTIONS_PER_IP", "1000000"),
    ("ROOST_WEBSOCKET_MAX_UPGRADES_PER_IP_PER_MINUTE", "0"),
    ("ROOST_LIMITS_CHAT_REQUESTS_PER_MINUTE", "0"),
    ("ROOST_LIMITS_CHAT_MAX_SOCKETS", "1000000"),
    // The cold-activation scenarios store rooms of up to 1 MiB in messages
    // of up to 128 KiB.
    ("ROOST_LIMITS_CHAT_MAX_MESSAGE_BYTES", "131072"),
    ("ROOST_LIMITS_CHAT_HISTORY_MESSAGES", "1000000"),
];

impl RoostDev {
    /// Starts `bin dev` on loopback ports from the OS, with `env` added to
    /// its environment (e.g. `ROOST_OBJECTS_IDLE_TIMEOUT_MS`).
    pub async fn start(bin: &Path, env: &[(&str, String)]) -> Result<RoostDev, Error> {
        let dir = tempfile::Builder::new()
            .prefix("roost-load-")
            .tempdir()
            .map_err(Error::TempDir)?;
        let mut cmd = Command::new(bin);
        cmd.arg("dev")
            .args(["--listen", "127.0.0.1:0"])
            .args(["--grpc-listen", "127.0.0.1:0"])
            .args(["--admin-listen", "127.0.0.1:0"])
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
            );
        for (k, v) in OPEN_LIMITS.iter().copied() {
            cmd.env(k, v);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let proc = spawn(
            cmd,
            "roost dev",
            &dir.path().join("roost.log"),
            Markers::Stdout,
            &["serving http://", "admin on http://"],
        )
        .await?;
        Ok(RoostDev { proc, dir })
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.proc.addrs[0])
    }

    pub fn admin_url(&self) -> String {
        format!("http://{}", self.proc.addrs[1])
    }

    pub fn pid(&self) -> Option<u32> {
        self.proc.pid()
    }

    pub fn temp_dir(&self) -> &Path {
        self.dir.path()
    }

    pub async fn stop(self) -> Result<(), Error> {
        self.proc.stop().await
    }
}
