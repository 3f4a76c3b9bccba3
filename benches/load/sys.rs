//! What the bench reads from (or asks of) the operating system: the open
//! file limit, a process's resident memory, the machine description for
//! BENCHMARKS.md, where the `roost` binary is, and a server's Prometheus
//! gauges.
//!
//! Owns: those small system calls and file reads. It never starts servers
//! and never measures latency.

use std::path::{Path, PathBuf};

/// Raises this process's open-file limit (soft, and hard if allowed) to at
/// least `want`; children started afterwards inherit it. Returns the soft
/// limit now in force.
pub fn raise_nofile(want: u64) -> Result<u64, String> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass and nothing else.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(format!(
            "getrlimit(NOFILE): {}",
            std::io::Error::last_os_error()
        ));
    }
    if lim.rlim_cur >= want {
        return Ok(lim.rlim_cur);
    }
    let raised = libc::rlimit {
        rlim_cur: want,
        rlim_max: lim.rlim_max.max(want),
    };
    // SAFETY: setrlimit only reads the struct we pass.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
        return Ok(want);
    }
    // Not allowed to raise the hard limit: take what it permits.
    let capped = libc::rlimit {
        rlim_cur: lim.rlim_max,
        rlim_max: lim.rlim_max,
    };
    // SAFETY: as above.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &capped) } == 0 {
        return Ok(lim.rlim_max);
    }
    Err(format!(
        "setrlimit(NOFILE): {}",
        std::io::Error::last_os_error()
    ))
}

/// Resident set size of `pid` in bytes (VmRSS in /proc/PID/status).
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// `roost`: `--roost-bin`, else the binary Cargo built with this bench,
/// else one next to this executable (or its parent directory, for
/// `target/*/deps/load-*`).
pub fn roost_bin(flag: Option<&Path>) -> Result<PathBuf, String> {
    if let Some(p) = flag {
        return Ok(p.to_owned());
    }
    let built = PathBuf::from(env!("CARGO_BIN_EXE_roost"));
    if built.is_file() {
        return Ok(built);
    }
    let me = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    for dir in me.ancestors().skip(1).take(2) {
        let candidate = dir.join("roost");
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    Err("cannot find the roost binary: pass --roost-bin".into())
}

/// The sum of every sample of Prometheus metric `name` at `admin`/metrics.
pub async fn gauge_sum(http: &reqwest::Client, admin: &str, name: &str) -> Result<f64, String> {
    let text = http
        .get(format!("{admin}/metrics"))
        .send()
        .await
        .map_err(|e| format!("GET {admin}/metrics: {e}"))?
        .text()
        .await
        .map_err(|e| format!("GET {admin}/metrics: {e}"))?;
    let mut sum = 0.0;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        if !(rest.starts_with('{') || rest.starts_with(' ')) {
            continue;
        }
        if let Some(v) = rest.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) {
            sum += v;
        }
    }
    Ok(sum)
}

/// One line describing the machine: cores, memory, kernel.
pub fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            let line = m.lines().find(|l| l.starts_with("MemTotal:"))?.to_owned();
            line.split_whitespace().nth(1)?.parse::<f64>().ok()
        })
        .map_or(0.0, |kib| kib / 1024.0 / 1024.0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_owned();
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_owned())
        })
        .unwrap_or_default();
    format!("{cores} cores ({cpu}), {mem_gib:.1} GiB memory, Linux {kernel}")
}

/// CPU time `pid` used so far (user + system), in seconds.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command (which may hold spaces) start past ')'.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13
    // after the state field that follows ')'.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let ticks = if ticks > 0 { ticks as f64 } else { 100.0 };
    Some((utime + stime) / ticks)
}

/// The CPU time `pids` used so far together, in seconds; `None` if any
/// cannot be read.
pub fn cpu_seconds_of(pids: &[u32]) -> Option<f64> {
    pids.iter().map(|p| cpu_seconds(*p)).sum()
}
