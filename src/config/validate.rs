//! [`Config::validate`]: every rule a field must satisfy, checked at once so
//! that all problems are reported together. The one place a configuration
//! is judged; every path that builds one ends here.

use std::net::SocketAddr;

use super::{Config, Error, MAX_SHARDS, Problem, TlsConfig, TlsMode};

impl Config {
    /// Checks every rule a field must satisfy, and reports all that fail.
    pub fn validate(&self) -> Result<(), Error> {
        let mut problems = Vec::new();
        let mut check = |ok: bool, field: &'static str, message: &str| {
            if !ok {
                problems.push(Problem {
                    field,
                    message: message.to_owned(),
                });
            }
        };
        let at_least_1 = "must be at least 1";

        check(self.node.id >= 1, "node.id", at_least_1);
        check(
            !self.node.data_dir.as_os_str().is_empty(),
            "node.data_dir",
            "must not be empty",
        );
        check(
            (1..=MAX_SHARDS).contains(&self.node.shards),
            "node.shards",
            &format!(
                "must be between 1 and {MAX_SHARDS}, got {}",
                self.node.shards
            ),
        );

        if let Some(header) = &self.http.trusted_proxy_header {
            check(
                is_header_name(header),
                "http.trusted_proxy_header",
                &format!("{header:?} is not an HTTP header name"),
            );
        }
        let http = &self.http;
        check(
            http.max_request_body_bytes >= 1,
            "http.max_request_body_bytes",
            at_least_1,
        );
        self.check_edge_limits(&mut check);

        check(
            !same_port(self.admin.listen, http.listen)
                && !same_port(self.admin.listen, self.grpc.listen),
            "admin.listen",
            &format!(
                "must not use the port of http.listen ({}) or grpc.listen",
                http.listen
            ),
        );

        check(
            !same_port(self.grpc.listen, http.listen),
            "grpc.listen",
            &format!("must not use the port of http.listen ({})", http.listen),
        );

        self.tls.check(&mut check);

        check(
            self.objects.idle_timeout_ms >= 1,
            "objects.idle_timeout_ms",
            at_least_1,
        );

        let objects = &self.objects;
        for spec in &objects.renamed_classes {
            let parsed = crate::object::migrations::parse_rename(spec);
            check(
                parsed.is_ok(),
                "objects.renamed_classes",
                &format!("`{spec}` is not OLD=NEW (class names of 1..=255 bytes)"),
            );
        }
        for name in &objects.deleted_classes {
            check(
                !name.is_empty() && name.len() <= 255,
                "objects.deleted_classes",
                &format!("`{name}` is not a class name (1..=255 bytes)"),
            );
        }

        let limits = &self.limits;
        check(
            limits.max_key_bytes >= 1,
            "limits.max_key_bytes",
            at_least_1,
        );
        check(
            limits.max_value_bytes >= 1,
            "limits.max_value_bytes",
            at_least_1,
        );
        check(
            limits.max_keys_per_call >= 1,
            "limits.max_keys_per_call",
            at_least_1,
        );
        check(
            limits.max_attachment_bytes >= 1,
            "limits.max_attachment_bytes",
            at_least_1,
        );
        self.check_object_limits(&mut check);

        let ws = &self.websocket;
        check(
            ws.max_message_bytes >= 1,
            "websocket.max_message_bytes",
            at_least_1,
        );
        check(
            ws.heartbeat_interval_ms >= 1,
            "websocket.heartbeat_interval_ms",
            at_least_1,
        );
        check(
            ws.heartbeat_timeout_ms >= 1,
            "websocket.heartbeat_timeout_ms",
            at_least_1,
        );
        check(
            ws.max_socket_buffer >= 1,
            "websocket.max_socket_buffer",
            at_least_1,
        );
        check(
            ws.reattach_buffer_frames >= 1,
            "websocket.reattach_buffer_frames",
            at_least_1,
        );
        check(
            ws.reattach_buffer_bytes >= ws.max_message_bytes,
            "websocket.reattach_buffer_bytes",
            &format!(
                "must hold one message of websocket.max_message_bytes ({}), got {}",
                ws.max_message_bytes, ws.reattach_buffer_bytes
            ),
        );
        check(
            ws.reattach_timeout_ms >= 1,
            "websocket.reattach_timeout_ms",
            at_least_1,
        );
        check(
            ws.replay_frames <= usize::from(u16::MAX),
            "websocket.replay_frames",
            &format!("must be at most 65535, got {}", ws.replay_frames),
        );

        let raft = &self.raft;
        check(raft.heartbeat_ms >= 1, "raft.heartbeat_ms", at_least_1);
        check(
            raft.election_timeout_min_ms > raft.heartbeat_ms,
            "raft.election_timeout_min_ms",
            &format!(
                "must exceed raft.heartbeat_ms ({}), got {}",
                raft.heartbeat_ms, raft.election_timeout_min_ms
            ),
        );
        check(
            raft.election_timeout_max_ms > raft.election_timeout_min_ms,
            "raft.election_timeout_max_ms",
            &format!(
                "must exceed raft.election_timeout_min_ms ({}), got {}",
                raft.election_timeout_min_ms, raft.election_timeout_max_ms
            ),
        );
        check(
            raft.snapshot_logs_since_last >= 1,
            "raft.snapshot_logs_since_last",
            at_least_1,
        );
        check(
            raft.max_batch_bytes >= 1,
            "raft.max_batch_bytes",
            at_least_1,
        );
        check(raft.max_in_flight >= 1, "raft.max_in_flight", at_least_1);
        check(
            raft.max_snapshot_bytes >= 1 << 20,
            "raft.max_snapshot_bytes",
            "must be at least 1 MiB",
        );

        if let Err(e) = tracing_subscriber::EnvFilter::builder().parse(&self.log.filter) {
            check(false, "log.filter", &format!("not a tracing filter: {e}"));
        }

        if problems.is_empty() {
            Ok(())
        } else {
            Err(Error::Invalid(problems))
        }
    }
}

impl Config {
    /// `[http]`'s timeouts and connection caps, `trusted_proxies`, and the
    /// admin server's cap.
    fn check_edge_limits(&self, check: &mut impl FnMut(bool, &'static str, &str)) {
        let at_least_1 = "must be at least 1";
        let http = &self.http;
        for (ok, field) in [
            (
                http.header_read_timeout_ms >= 1,
                "http.header_read_timeout_ms",
            ),
            (http.body_read_timeout_ms >= 1, "http.body_read_timeout_ms"),
            (http.idle_timeout_ms >= 1, "http.idle_timeout_ms"),
            (http.max_connections >= 1, "http.max_connections"),
            (
                http.max_connections_per_ip >= 1,
                "http.max_connections_per_ip",
            ),
            (self.admin.max_connections >= 1, "admin.max_connections"),
        ] {
            check(ok, field, at_least_1);
        }
        for net in &http.trusted_proxies {
            let net = net.trim();
            check(
                net.parse::<ipnet::IpNet>().is_ok() || net.parse::<std::net::IpAddr>().is_ok(),
                "http.trusted_proxies",
                &format!("{net:?} is not a CIDR (e.g. 10.0.0.0/8) or an IP address"),
            );
        }
        let header = http.trusted_proxy_header.as_deref().unwrap_or("");
        check(
            header.is_empty() || !is_header_name(header) || !http.trusted_proxies.is_empty(),
            "http.trusted_proxy_header",
            "needs http.trusted_proxies: the networks (CIDRs) of the proxies whose header is believed",
        );
    }

    /// `[limits]`' object caps.
    fn check_object_limits(&self, check: &mut impl FnMut(bool, &'static str, &str)) {
        let at_least_1 = "must be at least 1";
        let l = &self.limits;
        for (ok, field) in [
            (l.max_live_objects >= 1, "limits.max_live_objects"),
            (l.max_mailbox_bytes >= 1, "limits.max_mailbox_bytes"),
            (l.chat_max_sockets >= 1, "limits.chat_max_sockets"),
            (
                l.chat_max_message_bytes >= 1,
                "limits.chat_max_message_bytes",
            ),
            (l.chat_history_messages >= 1, "limits.chat_history_messages"),
        ] {
            check(ok, field, at_least_1);
        }
        check(
            l.chat_requests_per_minute <= 1_000_000,
            "limits.chat_requests_per_minute",
            "must be at most 1000000 (0: no limit)",
        );
    }
}

impl TlsConfig {
    /// The three files are set together, none is empty, and `server_name`
    /// is a name a certificate can hold and comes with them; `insecure`
    /// comes without them.
    fn check(&self, check: &mut impl FnMut(bool, &'static str, &str)) {
        check(
            self.mode == TlsMode::Mutual
                || (self.ca_file.is_none() && self.cert_file.is_none() && self.key_file.is_none()),
            "tls.mode",
            "\"insecure\" turns TLS off: remove the tls files, or use mode = \"mutual\"",
        );
        let files = [
            ("tls.ca_file", &self.ca_file),
            ("tls.cert_file", &self.cert_file),
            ("tls.key_file", &self.key_file),
        ];
        let set = files.iter().filter(|(_, f)| f.is_some()).count();
        for (field, file) in files {
            match file {
                None => check(
                    set == 0,
                    field,
                    "must be set with the other tls files (ca_file, cert_file and key_file go together)",
                ),
                Some(path) => check(!path.as_os_str().is_empty(), field, "must not be empty"),
            }
        }
        if let Some(name) = &self.server_name {
            check(
                set == 3,
                "tls.server_name",
                "needs tls.ca_file, tls.cert_file and tls.key_file",
            );
            check(
                is_server_name(name),
                "tls.server_name",
                &format!("{name:?} is not a DNS name or IP address"),
            );
        }
    }
}

/// Whether `name` can be checked against a certificate: an IP address, or
/// a DNS name (dot-separated labels of letters, digits and `-`).
fn is_server_name(name: &str) -> bool {
    if name.parse::<std::net::IpAddr>().is_ok() {
        return true;
    }
    let name = name.strip_suffix('.').unwrap_or(name);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// Whether two listen addresses would claim the same port (port 0 never
/// does: the OS picks a free one).
fn same_port(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() != 0
        && a.port() == b.port()
        && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

/// Whether `name` is a valid HTTP header name (an RFC 9110 token).
fn is_header_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}
