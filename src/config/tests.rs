//! Each layer's precedence, validation, and the documented defaults.

use std::collections::{BTreeSet, HashMap};
use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use super::documented::{self, Field};
use super::*;

/// An environment holding exactly `vars`.
fn env_of(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<OsString> + use<> {
    let vars: HashMap<String, OsString> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), OsString::from(v)))
        .collect();
    move |name| vars.get(name).cloned()
}

/// Builds from a config file holding `file` (none if `None`), `env` and
/// `flags`, with no default file.
fn build(file: Option<&str>, env: &[(&str, &str)], flags: Overrides) -> Result<Config, Error> {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("given.toml");
    if let Some(text) = file {
        std::fs::write(&path, text).expect("write config file");
    }
    let file = file.map(|_| path.as_path());
    let no_default = dir.path().join("absent.toml");
    Config::build_from(file, &no_default, &env_of(env), flags)
}

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("socket address")
}

/// The error and its sources, as `main` prints them.
fn chain(error: &Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(e) = source {
        text.push_str(&format!(": {e}"));
        source = e.source();
    }
    text
}

fn problems(result: Result<Config, Error>) -> Vec<&'static str> {
    match result {
        Err(Error::Invalid(problems)) => problems.iter().map(|p| p.field).collect(),
        other => panic!("expected invalid configuration, got {other:?}"),
    }
}

#[test]
fn documented_defaults_are_the_defaults() {
    let parsed: Config = toml::from_str(DOCUMENTED_DEFAULTS).expect("roost.example.toml parses");
    assert_eq!(parsed, Config::default());
    Config::default().validate().expect("defaults are valid");
}

#[test]
fn template_names_every_field_exactly_once() {
    let mut full = Config::default();
    full.http.trusted_proxy_header = Some("X-Forwarded-For".to_owned());
    full.tls = TlsConfig {
        ca_file: Some(PathBuf::from("/tls/ca.crt")),
        cert_file: Some(PathBuf::from("/tls/tls.crt")),
        key_file: Some(PathBuf::from("/tls/tls.key")),
        server_name: Some("roost-node".to_owned()),
        ..TlsConfig::default()
    };
    let tree = layers::to_table(&full).expect("to table");
    let mut leaves = BTreeSet::new();
    for (key, value) in &tree {
        match value {
            toml::Value::Table(section) => {
                for field in section.keys() {
                    leaves.insert(format!("{key}.{field}"));
                }
            }
            _ => {
                leaves.insert(key.clone());
            }
        }
    }
    let fields = documented::fields();
    let documented: Vec<String> = fields
        .iter()
        .map(|Field { section, key }| match section {
            Some(section) => format!("{section}.{key}"),
            None => key.to_string(),
        })
        .collect();
    let unique: BTreeSet<String> = documented.iter().cloned().collect();
    assert_eq!(
        unique.len(),
        documented.len(),
        "a field is documented twice"
    );
    assert_eq!(unique, leaves);
}

#[test]
fn no_file_no_env_no_flags_gives_defaults() {
    assert_eq!(
        build(None, &[], Overrides::default()).unwrap(),
        Config::default()
    );
}

#[test]
fn default_file_is_read_only_when_present() {
    let dir = tempfile::tempdir().unwrap();
    let default_file = dir.path().join("roost.toml");
    let env = env_of(&[]);
    let absent = Config::build_from(None, &default_file, &env, Overrides::default()).unwrap();
    assert_eq!(absent, Config::default());

    std::fs::write(&default_file, "[node]\nshards = 8\n").unwrap();
    let present = Config::build_from(None, &default_file, &env, Overrides::default()).unwrap();
    assert_eq!(present.node.shards, 8);

    // A file named explicitly replaces the default one.
    let other = dir.path().join("other.toml");
    std::fs::write(&other, "[node]\nshards = 16\n").unwrap();
    let explicit = Config::build_from(Some(&other), &default_file, &env, Overrides::default());
    assert_eq!(explicit.unwrap().node.shards, 16);
}

#[test]
fn explicit_file_must_exist() {
    let missing = Path::new("/nonexistent/roost.toml");
    let err =
        Config::build_from(Some(missing), missing, &env_of(&[]), Overrides::default()).unwrap_err();
    assert!(matches!(err, Error::ReadFile { .. }), "{err:?}");
    assert!(
        chain(&err).contains("/nonexistent/roost.toml"),
        "{}",
        chain(&err)
    );
}

#[test]
fn file_overrides_defaults_and_keeps_the_rest() {
    let file = "shutdown_grace_ms = 5\n[http]\nlisten = \"0.0.0.0:9000\"\n";
    let config = build(Some(file), &[], Overrides::default()).unwrap();
    assert_eq!(config.shutdown_grace_ms, 5);
    assert_eq!(config.http.listen, addr("0.0.0.0:9000"));
    assert_eq!(config.http.max_request_body_bytes, 1024 * 1024);
    assert_eq!(config.node, NodeConfig::default());
}

#[test]
fn env_overrides_file() {
    let file = "[http]\nlisten = \"0.0.0.0:9000\"\n[node]\nshards = 8\n";
    let env = [
        ("ROOST_HTTP_LISTEN", "127.0.0.1:9001"),
        ("ROOST_NODE_DATA_DIR", "/var/lib/roost"),
        ("ROOST_LOG_FORMAT", "json"),
        ("ROOST_SHUTDOWN_GRACE_MS", "1_500"),
        ("ROOST_HTTP_TRUSTED_PROXY_HEADER", "CF-Connecting-IP"),
        ("ROOST_HTTP_TRUSTED_PROXIES", r#"["10.0.0.0/8", "fd00::1"]"#),
    ];
    let config = build(Some(file), &env, Overrides::default()).unwrap();
    assert_eq!(config.http.listen, addr("127.0.0.1:9001"));
    assert_eq!(config.node.data_dir, PathBuf::from("/var/lib/roost"));
    assert_eq!(
        config.node.shards, 8,
        "the file's value where no variable is set"
    );
    assert_eq!(config.log.format, LogFormat::Json);
    assert_eq!(config.http.trusted_proxies, ["10.0.0.0/8", "fd00::1"]);
    assert_eq!(config.shutdown_grace_ms, 1500);
    assert_eq!(
        config.http.trusted_proxy_header.as_deref(),
        Some("CF-Connecting-IP")
    );
}

#[test]
fn flags_override_env_and_file() {
    let file = "[http]\nlisten = \"0.0.0.0:9000\"\n[node]\nshards = 8\n";
    let env = [
        ("ROOST_HTTP_LISTEN", "127.0.0.1:9001"),
        ("ROOST_NODE_SHARDS", "16"),
    ];
    let flags = Overrides {
        listen: Some(addr("127.0.0.1:9002")),
        grpc_listen: Some(addr("127.0.0.1:9003")),
        admin_listen: Some(addr("127.0.0.1:9004")),
        data_dir: Some(PathBuf::from("/tmp/flag")),
        shards: Some(32),
        log_format: Some(LogFormat::Json),
        insecure: false,
    };
    let config = build(Some(file), &env, flags).unwrap();
    assert_eq!(config.http.listen, addr("127.0.0.1:9002"));
    assert_eq!(config.grpc.listen, addr("127.0.0.1:9003"));
    assert_eq!(config.admin.listen, addr("127.0.0.1:9004"));
    assert_eq!(config.node.data_dir, PathBuf::from("/tmp/flag"));
    assert_eq!(config.node.shards, 32);
    assert_eq!(config.log.format, LogFormat::Json);
}

#[test]
fn unknown_keys_are_rejected() {
    for file in [
        "bogus = 1\n",
        "[http]\nlisen = \"0.0.0.0:1\"\n",
        "[nodes]\nid = 2\n",
    ] {
        let err = build(Some(file), &[], Overrides::default()).unwrap_err();
        assert!(matches!(err, Error::ParseFile { .. }), "{file:?}: {err:?}");
        assert!(chain(&err).contains("unknown field"), "{}", chain(&err));
    }
}

#[test]
fn file_type_errors_name_the_file() {
    let err = build(
        Some("[node]\nshards = \"many\"\n"),
        &[],
        Overrides::default(),
    )
    .unwrap_err();
    let text = chain(&err);
    assert!(
        text.contains("given.toml") && text.contains("shards"),
        "{text}"
    );
}

#[test]
fn env_parse_errors_name_the_variable() {
    let cases = [
        ("ROOST_NODE_SHARDS", "many"),
        ("ROOST_NODE_SHARDS", "70000"),
        ("ROOST_NODE_ID", "-1"),
        ("ROOST_HTTP_LISTEN", "localhost"),
        ("ROOST_LOG_FORMAT", "xml"),
        ("ROOST_RAFT_HEARTBEAT_MS", "1.5"),
    ];
    for (var, value) in cases {
        match build(None, &[(var, value)], Overrides::default()) {
            Err(Error::Env {
                var: named,
                message,
            }) => {
                assert_eq!(named, var, "{value:?}: {message}");
            }
            other => panic!("{var}={value:?}: expected an env error, got {other:?}"),
        }
    }
}

#[test]
fn env_values_that_are_not_utf8_are_errors() {
    use std::os::unix::ffi::OsStringExt;
    let env =
        |name: &str| (name == "ROOST_NODE_DATA_DIR").then(|| OsString::from_vec(vec![b'/', 0xff]));
    let no_default = Path::new("/nonexistent/roost.toml");
    match Config::build_from(None, no_default, &env, Overrides::default()) {
        Err(Error::Env { var, .. }) => assert_eq!(var, "ROOST_NODE_DATA_DIR"),
        other => panic!("expected an env error, got {other:?}"),
    }
}

#[test]
fn validation_reports_every_problem() {
    let file = "[node]\nid = 0\nshards = 0\n[limits]\nmax_key_bytes = 0\n";
    let fields = problems(build(Some(file), &[], Overrides::default()));
    assert_eq!(fields, ["node.id", "node.shards", "limits.max_key_bytes"]);
}

#[test]
fn shards_are_bounded() {
    let flags = |shards| Overrides {
        shards: Some(shards),
        ..Overrides::default()
    };
    assert!(build(None, &[], flags(1)).is_ok());
    assert!(build(None, &[], flags(MAX_SHARDS)).is_ok());
    assert_eq!(
        problems(build(None, &[], flags(MAX_SHARDS + 1))),
        ["node.shards"]
    );
}

#[test]
fn election_timeouts_must_be_ordered() {
    let env = [("ROOST_RAFT_ELECTION_TIMEOUT_MIN_MS", "50")];
    let fields = problems(build(None, &env, Overrides::default()));
    assert_eq!(fields, ["raft.election_timeout_min_ms"]);

    let env = [("ROOST_RAFT_ELECTION_TIMEOUT_MAX_MS", "120")];
    let fields = problems(build(None, &env, Overrides::default()));
    assert_eq!(fields, ["raft.election_timeout_max_ms"]);
}

#[test]
fn grpc_and_http_ports_must_differ() {
    let mut config = Config::default();
    config.grpc.listen = addr("0.0.0.0:8787");
    assert_eq!(
        problems(config.validate().map(|()| config.clone())),
        ["grpc.listen"]
    );
    config.grpc.listen = addr("127.0.0.2:8787");
    config.http.listen = addr("127.0.0.1:8787");
    config.validate().expect("different IPs may share a port");
    config.grpc.listen = addr("127.0.0.1:0");
    config.http.listen = addr("127.0.0.1:0");
    config.validate().expect("port 0 never collides");
    let env = [("ROOST_GRPC_LISTEN", "127.0.0.1:7000")];
    let config = build(None, &env, Overrides::default()).unwrap();
    assert_eq!(config.grpc.listen, addr("127.0.0.1:7000"));
}

#[test]
fn trusted_proxy_header_must_be_a_header_name() {
    for bad in ["", "X Forwarded For", "X-Forwarded-For:"] {
        let env = [("ROOST_HTTP_TRUSTED_PROXY_HEADER", bad)];
        let fields = problems(build(None, &env, Overrides::default()));
        assert_eq!(fields, ["http.trusted_proxy_header"], "{bad:?}");
    }
}

#[test]
fn admin_listener_is_apart_from_user_traffic() {
    let env = [
        ("ROOST_HTTP_LISTEN", "127.0.0.1:8000"),
        ("ROOST_ADMIN_LISTEN", "127.0.0.1:8000"),
    ];
    assert_eq!(
        problems(build(None, &env, Overrides::default())),
        ["admin.listen"]
    );
    // Two OS-chosen ports never clash.
    let env = [
        ("ROOST_HTTP_LISTEN", "127.0.0.1:0"),
        ("ROOST_ADMIN_LISTEN", "127.0.0.1:0"),
    ];
    let config = build(None, &env, Overrides::default()).unwrap();
    assert_eq!(config.admin.listen, addr("127.0.0.1:0"));
}

#[test]
fn log_filter_must_parse() {
    let env = [("ROOST_LOG_FILTER", "roost=loud")];
    assert_eq!(
        problems(build(None, &env, Overrides::default())),
        ["log.filter"]
    );
    let env = [("ROOST_LOG_FILTER", "roost=debug,warn")];
    assert!(build(None, &env, Overrides::default()).is_ok());
}

#[test]
fn invalid_message_is_readable() {
    let err = build(Some("[node]\nshards = 0\n"), &[], Overrides::default()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid configuration: node.shards: must be between 1 and 4096, got 0"
    );
}

#[test]
fn documented_toml_round_trips() {
    let mut config = Config {
        shutdown_grace_ms: 1,
        ..Config::default()
    };
    config.node.data_dir = PathBuf::from("/data/with \"quotes\" and \\ slash");
    config.http.listen = addr("[::1]:1234");
    config.http.trusted_proxy_header = Some("CF-Connecting-IP".to_owned());
    config.raft.max_in_flight = 3;
    config.log.format = LogFormat::Json;
    config.tls.ca_file = Some(PathBuf::from("/etc/roost/tls/ca.crt"));
    config.tls.cert_file = Some(PathBuf::from("/etc/roost/tls/tls.crt"));
    config.tls.key_file = Some(PathBuf::from("/etc/roost/tls/tls.key"));

    let text = config.to_documented_toml().unwrap();
    let parsed: Config = toml::from_str(&text).expect("rendered config parses");
    assert_eq!(parsed, config);
    assert!(
        text.contains("\ntrusted_proxy_header = \"CF-Connecting-IP\"\n"),
        "{text}"
    );
    assert!(
        text.contains("# Log entries a shard keeps in flight at once"),
        "docs kept: {text}"
    );

    let defaults = Config::default().to_documented_toml().unwrap();
    assert!(
        defaults.contains("\n# trusted_proxy_header = "),
        "{defaults}"
    );
    assert!(defaults.contains("\n[tls]\n"), "{defaults}");
    assert!(defaults.contains("\n# ca_file = "), "{defaults}");
    assert!(
        text.contains("\nca_file = \"/etc/roost/tls/ca.crt\"\n"),
        "{text}"
    );
    assert_eq!(
        toml::from_str::<Config>(&defaults).unwrap(),
        Config::default()
    );
}

#[test]
fn tls_is_off_by_default_and_set_from_the_environment() {
    assert_eq!(Config::default().tls, TlsConfig::default());
    let env = [
        ("ROOST_TLS_CA_FILE", "/etc/roost/tls/ca.crt"),
        ("ROOST_TLS_CERT_FILE", "/etc/roost/tls/tls.crt"),
        ("ROOST_TLS_KEY_FILE", "/etc/roost/tls/tls.key"),
        ("ROOST_TLS_SERVER_NAME", "roost-node.default.svc"),
    ];
    let config = build(None, &env, Overrides::default()).unwrap();
    assert_eq!(
        config.tls,
        TlsConfig {
            ca_file: Some(PathBuf::from("/etc/roost/tls/ca.crt")),
            cert_file: Some(PathBuf::from("/etc/roost/tls/tls.crt")),
            key_file: Some(PathBuf::from("/etc/roost/tls/tls.key")),
            server_name: Some("roost-node.default.svc".to_owned()),
            mode: TlsMode::Mutual,
        }
    );
    let file = "[tls]\nca_file = \"ca.pem\"\ncert_file = \"c.pem\"\nkey_file = \"k.pem\"\n";
    let config = build(Some(file), &[], Overrides::default()).unwrap();
    assert_eq!(config.tls.key_file, Some(PathBuf::from("k.pem")));
    assert_eq!(config.tls.server_name, None);
}

#[test]
fn clusters_need_tls_or_insecure_said_out_loud() {
    let config = build(None, &[], Overrides::default()).unwrap();
    assert_eq!(config.tls.mode, TlsMode::Mutual);
    let err = config.tls.check_cluster("roost node").unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("--insecure") && text.contains("roost certs"),
        "{text}"
    );

    let insecure = Overrides {
        insecure: true,
        ..Overrides::default()
    };
    let config = build(None, &[], insecure.clone()).unwrap();
    assert_eq!(config.tls.mode, TlsMode::Insecure);
    assert!(config.tls.check_cluster("roost node").is_ok());
    let env = [("ROOST_TLS_MODE", "insecure")];
    let config = build(None, &env, Overrides::default()).unwrap();
    assert!(config.tls.check_cluster("roost edge").is_ok());
    let config = build(
        Some("[tls]\nmode = \"insecure\"\n"),
        &[],
        Overrides::default(),
    )
    .unwrap();
    assert_eq!(config.tls.mode, TlsMode::Insecure);

    let files = [
        ("ROOST_TLS_CA_FILE", "/ca.crt"),
        ("ROOST_TLS_CERT_FILE", "/tls.crt"),
        ("ROOST_TLS_KEY_FILE", "/tls.key"),
    ];
    let config = build(None, &files, Overrides::default()).unwrap();
    assert!(config.tls.check_cluster("roost node").is_ok());
    // Insecure with files is a contradiction.
    assert_eq!(problems(build(None, &files, insecure)), ["tls.mode"]);
    assert!(build(None, &[("ROOST_TLS_MODE", "plain")], Overrides::default()).is_err());
}

#[test]
fn tls_files_go_together() {
    let env = [("ROOST_TLS_CA_FILE", "/ca.crt")];
    assert_eq!(
        problems(build(None, &env, Overrides::default())),
        ["tls.cert_file", "tls.key_file"]
    );
    let env = [
        ("ROOST_TLS_CERT_FILE", "/tls.crt"),
        ("ROOST_TLS_KEY_FILE", ""),
    ];
    assert_eq!(
        problems(build(None, &env, Overrides::default())),
        ["tls.ca_file", "tls.key_file"]
    );
    let env = [("ROOST_TLS_SERVER_NAME", "roost-node")];
    assert_eq!(
        problems(build(None, &env, Overrides::default())),
        ["tls.server_name"]
    );
}

#[test]
fn tls_server_name_must_be_a_name_or_an_address() {
    let files = [
        ("ROOST_TLS_CA_FILE", "/ca.crt"),
        ("ROOST_TLS_CERT_FILE", "/tls.crt"),
        ("ROOST_TLS_KEY_FILE", "/tls.key"),
    ];
    for good in [
        "roost-node",
        "node-0.roost.ns.svc.cluster.local",
        "10.0.0.7",
        "::1",
    ] {
        let mut env = files.to_vec();
        env.push(("ROOST_TLS_SERVER_NAME", good));
        assert!(build(None, &env, Overrides::default()).is_ok(), "{good:?}");
    }
    for bad in [
        "",
        "roost node",
        "node:8789",
        "-node",
        "a..b",
        "https://node",
    ] {
        let mut env = files.to_vec();
        env.push(("ROOST_TLS_SERVER_NAME", bad));
        assert_eq!(
            problems(build(None, &env, Overrides::default())),
            ["tls.server_name"],
            "{bad:?}"
        );
    }
}

#[test]
fn edge_limits_are_checked() {
    let env = [
        ("ROOST_HTTP_TRUSTED_PROXY_HEADER", "X-Forwarded-For"),
        ("ROOST_HTTP_HEADER_READ_TIMEOUT_MS", "0"),
        ("ROOST_HTTP_MAX_CONNECTIONS_PER_IP", "0"),
        ("ROOST_LIMITS_MAX_LIVE_OBJECTS", "0"),
        ("ROOST_LIMITS_CHAT_HISTORY_MESSAGES", "0"),
    ];
    let fields = problems(build(None, &env, Overrides::default()));
    assert_eq!(
        fields,
        [
            "http.header_read_timeout_ms",
            "http.max_connections_per_ip",
            "http.trusted_proxy_header",
            "limits.max_live_objects",
            "limits.chat_history_messages",
        ]
    );
    let env = [("ROOST_HTTP_TRUSTED_PROXIES", r#"["10.0.0.0/33", "nope"]"#)];
    let fields = problems(build(None, &env, Overrides::default()));
    assert_eq!(fields, ["http.trusted_proxies", "http.trusted_proxies"]);
}
