//! A private network for a cluster test, made with plain iproute2: one
//! network namespace per node, each joined by a veth pair to a bridge in
//! the root namespace, on a /24 of its own (`10.213.X.0/24`: the bridge is
//! `.1`, node `k` is `.(10 + k)`). The test, its clients and the edge stay
//! in the root namespace and reach every node through the bridge.
//!
//! [`Net::isolate`] cuts one node off from its peers only: blackhole
//! routes to each peer inside its namespace and to it inside each peer's
//! (so no packet crosses in either direction, established connections
//! included), while the root namespace still reaches it. [`Net::heal`]
//! deletes those routes.
//!
//! Every name carries the test process's id (`roostp<pid>…`); dropping a
//! [`Net`] removes its namespaces, veths and bridge, and [`Net::new`] first
//! removes those left by a process that no longer runs (a killed test),
//! killing what still runs inside their namespaces.
//! Needs root and `ip netns`; [`Net::new`] panics saying so otherwise.
//! Never: touches interfaces, routes or namespaces it did not name.

use std::collections::BTreeSet;
use std::process::Command;

/// What every name made here starts with, and the name every test binary
/// of that family starts with: `roostp` for `cluster-<hash>`, `roostn` for
/// the nemesis (`tests/nemesis` builds its network here too). Apart, so
/// one binary never takes the other's running network for a killed test's
/// leftovers (they may run at once on a shared machine).
fn family() -> (&'static str, &'static str) {
    let exe = std::env::current_exe().unwrap_or_default();
    let name = exe.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    if name.starts_with("nemesis") {
        ("roostn", "nemesis")
    } else {
        ("roostp", "cluster")
    }
}

/// The namespaces, veths and bridge of one test's network.
pub struct Net {
    tag: String,
    subnet: String,
    nodes: u64,
    /// `(namespace, blackholed address)` routes in place.
    cuts: BTreeSet<(String, String)>,
}

impl Net {
    /// Builds a network for nodes `1..=nodes`.
    pub fn new(nodes: u64) -> Net {
        preflight();
        remove_stale();
        let tag = format!("{}{}", family().0, std::process::id());
        let subnet = free_subnet();
        // Made before anything it names, so a failing step below (a panic)
        // still drops it and removes what was made.
        let net = Net {
            tag,
            subnet,
            nodes,
            cuts: BTreeSet::new(),
        };
        let br = net.bridge();
        ip(&["link", "add", &br, "type", "bridge"]);
        ip(&["addr", "add", &format!("{}.1/24", net.subnet), "dev", &br]);
        ip(&["link", "set", &br, "up"]);
        for k in 1..=nodes {
            let (ns, host, inner) = (net.ns(k), net.veth(k), format!("{}p{k}", net.tag));
            ip(&["netns", "add", &ns]);
            ip(&["link", "add", &host, "type", "veth", "peer", "name", &inner]);
            ip(&["link", "set", &inner, "netns", &ns]);
            ip(&["link", "set", &host, "master", &br]);
            ip(&["link", "set", &host, "up"]);
            let cidr = format!("{}/24", net.ip(k));
            ip(&["-n", &ns, "addr", "add", &cidr, "dev", &inner]);
            ip(&["-n", &ns, "link", "set", &inner, "up"]);
            ip(&["-n", &ns, "link", "set", "lo", "up"]);
        }
        net
    }

    /// The namespace of node `k`.
    pub fn ns(&self, k: u64) -> String {
        format!("{}n{k}", self.tag)
    }

    /// The address of node `k`.
    pub fn ip(&self, k: u64) -> String {
        format!("{}.{}", self.subnet, 10 + k)
    }

    /// What runs a command inside node `k`'s namespace.
    pub fn exec_prefix(&self, k: u64) -> Vec<String> {
        vec!["ip".into(), "netns".into(), "exec".into(), self.ns(k)]
    }

    fn bridge(&self) -> String {
        format!("{}b", self.tag)
    }

    fn veth(&self, k: u64) -> String {
        format!("{}v{k}", self.tag)
    }

    /// Cuts node `k` off from every other node, both ways.
    pub fn isolate(&mut self, k: u64) {
        for peer in (1..=self.nodes).filter(|p| *p != k) {
            for (ns, to) in [(self.ns(k), self.ip(peer)), (self.ns(peer), self.ip(k))] {
                ip(&["-n", &ns, "route", "add", "blackhole", &format!("{to}/32")]);
                self.cuts.insert((ns, to));
            }
        }
    }

    /// Removes every cut.
    pub fn heal(&mut self) {
        for (ns, to) in std::mem::take(&mut self.cuts) {
            ip(&["-n", &ns, "route", "del", "blackhole", &format!("{to}/32")]);
        }
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        remove_tagged(&self.tag);
    }
}

/// Runs `ip ARGS`; panics with its stderr if it fails.
fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run `ip {}`: {e}", args.join(" ")));
    assert!(
        out.status.success(),
        "`ip {}` failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

/// `ip ARGS`'s stdout, or empty if it fails (for cleanup and listing).
fn ip_out(args: &[&str]) -> String {
    Command::new("ip")
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// Panics with what is missing unless we are root with `ip netns`.
fn preflight() {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1).map(str::to_owned));
    assert!(
        uid.as_deref() == Some("0"),
        "the partition test needs root (effective uid 0, found {uid:?}) to create network \
         namespaces, veth pairs and a bridge; run it as root, e.g. in a privileged container"
    );
    let ok = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "the partition test needs iproute2's `ip netns` (package iproute2) on the PATH"
    );
}

/// The first `10.213.X` with no address or route on this host, starting
/// from one picked by the process id.
fn free_subnet() -> String {
    let used = format!(
        "{}{}",
        ip_out(&["-4", "-o", "addr"]),
        ip_out(&["-4", "route"])
    );
    let start = std::process::id() % 256;
    (0..256)
        .map(|i| format!("10.213.{}", (start + i) % 256))
        .find(|s| !used.contains(&format!("{s}.")))
        .expect("a free 10.213.X.0/24")
}

/// The `roostp<pid>` tag of `name`, if it is one of ours.
fn tag_of(name: &str) -> Option<&str> {
    let prefix = family().0;
    let digits = name.strip_prefix(prefix)?;
    let len = digits.chars().take_while(char::is_ascii_digit).count();
    (len > 0).then(|| &name[..prefix.len() + len])
}

/// Whether the process that made `tag` is gone.
fn stale(tag: &str) -> bool {
    let (prefix, binary) = family();
    let pid = &tag[prefix.len()..];
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    // A reused pid runs something else; a test binary is `cluster-<hash>`.
    !comm.starts_with(binary)
}

/// Namespaces and links (by first word of `ip` listings) carrying a tag.
fn names() -> (Vec<String>, Vec<String>) {
    let namespaces = ip_out(&["netns", "list"])
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .filter(|n| tag_of(n).is_some())
        .collect();
    let links = ip_out(&["-o", "link", "show"])
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_owned())
        .filter(|n| tag_of(n).is_some())
        .collect();
    (namespaces, links)
}

/// Removes what a test process that no longer runs left behind.
fn remove_stale() {
    let (namespaces, links) = names();
    let tags: BTreeSet<&str> = namespaces
        .iter()
        .chain(&links)
        .filter_map(|n| tag_of(n))
        .filter(|t| stale(t))
        .collect();
    for tag in tags {
        eprintln!("removing the network a killed test left behind: {tag}*");
        remove_tagged(tag);
    }
}

/// Kills what runs in `tag`'s namespaces, deletes them and its links.
fn remove_tagged(tag: &str) {
    let (namespaces, links) = names();
    for ns in namespaces.iter().filter(|n| tag_of(n) == Some(tag)) {
        for pid in ip_out(&["netns", "pids", ns]).split_whitespace() {
            let _ = Command::new("kill").args(["-KILL", pid]).status();
        }
        let _ = ip_out(&["netns", "delete", ns]);
    }
    // Deleting a veth's host end deletes its peer; the bridge last.
    let mut links: Vec<&String> = links.iter().filter(|n| tag_of(n) == Some(tag)).collect();
    links.sort_by_key(|n| n.ends_with('b'));
    for link in links {
        let _ = ip_out(&["link", "delete", link]);
    }
}
