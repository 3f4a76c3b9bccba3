//! Plain HTTP/2 or mutual TLS on node gRPC: the one place that decides.
//!
//! Owns: loading the PEM files a process is configured with (`[tls]`: the
//! CA, this process's certificate and its key), and building every gRPC
//! server ([`Tls::server`]) and every client endpoint ([`Tls::endpoint`])
//! of node gRPC — the Raft transport, the object API, the cluster service —
//! so that the plain and the TLS paths differ only here.
//!
//! With mutual TLS, a server accepts only clients presenting a certificate
//! signed by the CA, and a client presents its certificate and accepts a
//! server only if its certificate is signed by the CA and names the host of
//! the address it dialled (or `server_name`, when set). One certificate
//! serves both ends, so it needs both the server-auth and client-auth uses
//! (or no extended key usage at all).
//!
//! Every server checks each call's role ([`super::auth`]) when it runs
//! mutual TLS, and caps the streams one connection may have open.
//!
//! Never: reads the configuration or the environment (the node hands it the
//! file paths), chooses addresses, or trusts any root but the configured CA.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity, Server, ServerTlsConfig};

use super::Error;
use super::auth::AuthLayer;

/// Streams a client may reset before the server has accepted them.
const MAX_PENDING_RESETS: usize = 4096;

/// Calls open at once on one connection. An edge bridges each client
/// WebSocket over one long call on its one connection to the node that
/// leads the object, so this is also the most sockets one edge can hold on
/// one node; every shard's Raft traffic to a peer shares one connection too.
pub const MAX_CONCURRENT_STREAMS: u32 = 65_536;

/// HTTP/2 flow-control windows of every gRPC connection, both ways: what
/// one connection (and one call) may have in flight unread. Fixed, not
/// adaptive: h2 (0.4.20) also caps the bytes of small DATA frames received
/// but not yet read at half the connection window and closes the whole
/// connection (GOAWAY `too_many_data_frames`) past it. Raft heartbeats and
/// replies, and WebSocket frames, are all small DATA frames; with an
/// adaptive window on loopback (64 KiB, about 160 frames) a burst of them
/// to a busy process tore down every shard's traffic to a peer at once,
/// seen as lease lapses and election storms at 256 shards.
pub const CONNECTION_WINDOW: u32 = 8 << 20;
pub const STREAM_WINDOW: u32 = 2 << 20;

/// A gRPC server builder as [`Tls::server`] makes it: with the role check.
pub type GrpcServer = Server<tower_layer::Stack<AuthLayer, tower_layer::Identity>>;

/// How long a TLS handshake may take, on either end, before the
/// connection is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// The files of a process's mutual TLS, all PEM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// The CA that signs every node's and edge's certificate: the only root
    /// a server trusts for clients and a client trusts for servers.
    pub ca_file: PathBuf,
    /// This process's certificate (chain), presented as a server and as a
    /// client.
    pub cert_file: PathBuf,
    /// The private key of `cert_file` (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// The name a client verifies in every server's certificate instead of
    /// the host of the address it dials.
    pub server_name: Option<String>,
}

/// Plain or mutual TLS, for every server and client of a process. Cheap to
/// clone; the default is plain.
#[derive(Clone, Default)]
pub struct Tls {
    mutual: Option<Arc<Mutual>>,
}

struct Mutual {
    ca: Certificate,
    identity: Identity,
    server_name: Option<String>,
    /// Where the material came from, for logs.
    files: TlsFiles,
}

impl fmt::Debug for Tls {
    // Never prints the key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.mutual {
            None => f.write_str("Tls::Plain"),
            Some(m) => f
                .debug_struct("Tls::Mutual")
                .field("ca_file", &m.files.ca_file)
                .field("cert_file", &m.files.cert_file)
                .field("server_name", &m.server_name)
                .finish(),
        }
    }
}

impl Tls {
    /// Plain HTTP/2: no certificates anywhere.
    pub fn plain() -> Tls {
        Tls::default()
    }

    /// Mutual TLS with the material in `files`. Reads the files now and
    /// builds a server and a client configuration from them once, so that a
    /// missing file, a malformed PEM or a key that does not parse fails
    /// here, at startup, rather than at the first connection.
    pub fn load(files: &TlsFiles) -> Result<Tls, Error> {
        let ca = read_pem(&files.ca_file, "CA file", "CERTIFICATE-----")?;
        let cert = read_pem(&files.cert_file, "certificate file", "CERTIFICATE-----")?;
        let key = read_pem(&files.key_file, "key file", "PRIVATE KEY-----")?;
        let tls = Tls {
            mutual: Some(Arc::new(Mutual {
                ca: Certificate::from_pem(ca),
                identity: Identity::from_pem(cert, key),
                server_name: files.server_name.clone(),
                files: files.clone(),
            })),
        };
        tls.server()?;
        tls.endpoint("roost.invalid:1")?;
        Ok(tls)
    }

    /// Whether servers and clients use mutual TLS.
    pub fn is_mutual(&self) -> bool {
        self.mutual.is_some()
    }

    /// The URI scheme of node gRPC: `https` with TLS, else `http`.
    pub fn scheme(&self) -> &'static str {
        if self.is_mutual() { "https" } else { "http" }
    }

    /// A gRPC server builder: with mutual TLS, it requires every client to
    /// present a certificate signed by the CA, and lets each call through
    /// only if the certificate's role may make it ([`super::auth`]).
    pub fn server(&self) -> Result<GrpcServer, Error> {
        // An edge cancels calls by the thousand when its clients go away
        // (e.g. sockets opening while a load balancer drains); h2's default
        // of 20 pending resets would drop the whole connection, and every
        // other call on it.
        let builder = Server::builder()
            .http2_max_pending_accept_reset_streams(Some(MAX_PENDING_RESETS))
            .max_concurrent_streams(Some(MAX_CONCURRENT_STREAMS))
            .initial_connection_window_size(Some(CONNECTION_WINDOW))
            .initial_stream_window_size(Some(STREAM_WINDOW))
            .layer(AuthLayer::new(self.is_mutual()));
        let Some(m) = &self.mutual else {
            return Ok(builder);
        };
        let config = ServerTlsConfig::new()
            .identity(m.identity.clone())
            .client_ca_root(m.ca.clone())
            .timeout(HANDSHAKE_TIMEOUT);
        builder.tls_config(config).map_err(|e| Error::Tls {
            what: "server",
            message: chain(&e),
        })
    }

    /// The endpoint of the node gRPC server at `addr`: `host:port`, dialled
    /// with this process's scheme. An address with a scheme (`http://…`) is
    /// taken as it is, except that mutual TLS refuses a plain one.
    pub fn endpoint(&self, addr: &str) -> Result<Endpoint, Error> {
        let uri = match addr.split_once("://") {
            None => format!("{}://{addr}", self.scheme()),
            Some((scheme, _)) if self.is_mutual() && scheme != "https" => {
                return Err(Error::Tls {
                    what: "client",
                    message: format!("{addr}: mutual TLS is configured, so only https"),
                });
            }
            Some(_) => addr.to_owned(),
        };
        let endpoint = Endpoint::from_shared(uri)
            .map_err(|source| Error::Address {
                addr: addr.to_owned(),
                source,
            })?
            .initial_connection_window_size(CONNECTION_WINDOW)
            .initial_stream_window_size(STREAM_WINDOW);
        let Some(m) = &self.mutual else {
            return Ok(endpoint);
        };
        let mut config = ClientTlsConfig::new()
            .ca_certificate(m.ca.clone())
            .identity(m.identity.clone())
            .timeout(HANDSHAKE_TIMEOUT);
        if let Some(name) = &m.server_name {
            config = config.domain_name(name.clone());
        }
        endpoint.tls_config(config).map_err(|e| Error::Tls {
            what: "client",
            message: chain(&e),
        })
    }

    /// A line for the startup log.
    pub fn describe(&self) -> String {
        match &self.mutual {
            None => "plain (no TLS)".to_owned(),
            Some(m) => format!(
                "mutual TLS (CA {}, certificate {}{})",
                m.files.ca_file.display(),
                m.files.cert_file.display(),
                m.server_name
                    .as_ref()
                    .map(|n| format!(", servers verified as {n}"))
                    .unwrap_or_default()
            ),
        }
    }
}

/// The contents of a PEM file that must hold a block whose header ends in
/// `marker` (e.g. `CERTIFICATE-----`).
fn read_pem(path: &Path, what: &'static str, marker: &str) -> Result<Vec<u8>, Error> {
    let file_error = |message: String| Error::TlsFile {
        what,
        path: path.to_owned(),
        message,
    };
    let bytes = std::fs::read(path).map_err(|e| file_error(e.to_string()))?;
    let text = String::from_utf8_lossy(&bytes);
    let has_block = text
        .lines()
        .any(|l| l.starts_with("-----BEGIN ") && l.trim_end().ends_with(marker));
    if !has_block {
        return Err(file_error(format!("no PEM block `-----BEGIN …{marker}`")));
    }
    Ok(bytes)
}

/// An error and its sources on one line (tonic's own message is only
/// "transport error").
pub(crate) fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_endpoints_are_http() {
        let tls = Tls::plain();
        assert!(!tls.is_mutual());
        let e = tls.endpoint("127.0.0.1:8789").expect("endpoint");
        assert_eq!(e.uri().to_string(), "http://127.0.0.1:8789/");
        let e = tls.endpoint("http://node-0.svc:8789").expect("endpoint");
        assert_eq!(e.uri().host(), Some("node-0.svc"));
        assert!(tls.server().is_ok());
        assert_eq!(format!("{tls:?}"), "Tls::Plain");
    }

    #[test]
    fn missing_or_malformed_files_fail_at_load() {
        let dir = tempfile::tempdir().expect("temp dir");
        let not_pem = dir.path().join("not.pem");
        std::fs::write(&not_pem, "hello").expect("write");
        let files = |ca: &Path| TlsFiles {
            ca_file: ca.to_owned(),
            cert_file: not_pem.clone(),
            key_file: not_pem.clone(),
            server_name: None,
        };
        let err = Tls::load(&files(&dir.path().join("absent.pem"))).unwrap_err();
        assert!(
            matches!(
                err,
                Error::TlsFile {
                    what: "CA file",
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("absent.pem"), "{err}");
        let err = Tls::load(&files(&not_pem)).unwrap_err();
        assert!(err.to_string().contains("no PEM block"), "{err}");

        // PEM-shaped, but not a certificate or key a TLS library accepts.
        let fake_cert = dir.path().join("fake.crt");
        std::fs::write(
            &fake_cert,
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .expect("write");
        let fake_key = dir.path().join("fake.key");
        std::fs::write(
            &fake_key,
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        )
        .expect("write");
        let err = Tls::load(&TlsFiles {
            ca_file: fake_cert.clone(),
            cert_file: fake_cert,
            key_file: fake_key,
            server_name: None,
        })
        .unwrap_err();
        assert!(matches!(err, Error::Tls { .. }), "{err}");
    }
}
