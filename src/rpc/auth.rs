//! Who may call what on node gRPC: the role a client's certificate names,
//! checked against the service and method it calls, in one tower layer
//! that every server of [`super::tls`] runs.
//!
//! A certificate names its role in a subject alternative name: the URI
//! `spiffe://roost/role/<role>` (what `roost certs` writes) or the DNS name
//! `<role>.role.roost.invalid` (what tools that only write DNS names can
//! make, e.g. Helm's `genSignedCert`; `.invalid` never resolves). Roles:
//! `node`, `edge`, `operator`; a certificate of the CA without a role is a
//! plain `client`.
//!
//! | calls | node | operator | edge | client |
//! |---|---|---|---|---|
//! | `Raft/*`, `Cluster/Join`, `Cluster/Elect`, anything unknown | ✓ | | | |
//! | `Cluster/SetState`, `Cluster/Remove`, `Cluster/Progress`, `Cluster/Status`, `Cluster/Backup` | ✓ | ✓ | | |
//! | `Cluster/Watch` (the read-only cluster view edges route by) | ✓ | ✓ | ✓ | |
//! | `Objects/*`, gRPC health and reflection | ✓ | ✓ | ✓ | ✓ |
//!
//! A call outside its role gets `PERMISSION_DENIED`, a warning in the log
//! and a count in `roost_rpc_denied_total`. Without mutual TLS (`--insecure`)
//! there is no identity and the layer lets everything through.
//!
//! Never: verifies certificates itself (rustls has, against the CA, before
//! the first call), or decides anything but allow and deny.

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use futures_util::future::{Either, Ready, ready};
use tonic::Status;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};

/// The URI prefix of a role SAN.
pub const ROLE_URI_PREFIX: &str = "spiffe://roost/role/";
/// The DNS suffix of a role SAN.
pub const ROLE_DNS_SUFFIX: &str = ".role.roost.invalid";

/// What a certificate lets its holder do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// A cluster node: everything.
    Node,
    /// An operator (`roost node drain`, `undrain`): membership changes.
    Operator,
    /// An edge: the object API and the cluster view.
    Edge,
    /// Any other holder of a certificate of the CA: the object API.
    Client,
}

impl Role {
    /// The role's name, as in SANs and the metric's label.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Node => "node",
            Role::Operator => "operator",
            Role::Edge => "edge",
            Role::Client => "client",
        }
    }

    fn parse(name: &str) -> Option<Role> {
        match name {
            "node" => Some(Role::Node),
            "operator" => Some(Role::Operator),
            "edge" => Some(Role::Edge),
            _ => None,
        }
    }

    /// The role a certificate (DER) names; the most privileged if it names
    /// several, [`Role::Client`] if none (or it does not parse).
    pub fn of_certificate(der: &[u8]) -> Role {
        let der = rustls_pki_types::CertificateDer::from(der);
        let Ok(cert) = webpki::EndEntityCert::try_from(&der) else {
            return Role::Client;
        };
        let from_uri = cert
            .valid_uri_names()
            .filter_map(|uri| uri.strip_prefix(ROLE_URI_PREFIX).and_then(Role::parse));
        let from_dns = cert.valid_dns_names().filter_map(|dns| {
            dns.to_ascii_lowercase()
                .strip_suffix(ROLE_DNS_SUFFIX)
                .and_then(Role::parse)
        });
        from_uri.chain(from_dns).min().unwrap_or(Role::Client)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether `role` may call the gRPC method at `path`
/// (`/package.Service/Method`).
pub fn allowed(role: Role, path: &str) -> bool {
    let (service, method) = path
        .strip_prefix('/')
        .and_then(|p| p.split_once('/'))
        .unwrap_or(("", ""));
    match (service, method) {
        ("roost.v1.Objects", _) | ("grpc.health.v1.Health", _) => true,
        (s, _) if s.starts_with("grpc.reflection.") => true,
        ("roost.v1.Cluster", "Watch") => role != Role::Client,
        ("roost.v1.Cluster", "SetState" | "Remove" | "Progress" | "Status" | "Backup") => {
            matches!(role, Role::Node | Role::Operator)
        }
        _ => role == Role::Node,
    }
}

/// The service name of `path` for the metric's label: one of a fixed set.
fn service_label(path: &str) -> &'static str {
    let service = path
        .strip_prefix('/')
        .and_then(|p| p.split('/').next())
        .unwrap_or("");
    match service {
        "roost.v1.Raft" => "raft",
        "roost.v1.Cluster" => "cluster",
        "roost.v1.Objects" => "objects",
        _ => "other",
    }
}

/// Most certificates whose role [`Roles`] remembers.
const REMEMBERED_ROLES: usize = 16;

/// The roles of the certificates seen last, by their DER bytes: a server
/// hears the same few certificates (its peers', the edges', an operator's)
/// on every call, and parsing one per call was 1% of a cluster's CPU samples
/// (benches/profile.md). Comparing the bytes is what makes an entry match,
/// so a remembered role is always the role of exactly that certificate.
#[derive(Debug, Default)]
struct Roles {
    /// Newest last.
    seen: Vec<(Box<[u8]>, Role)>,
}

impl Roles {
    fn of(&mut self, der: &[u8]) -> Role {
        if let Some((_, role)) = self.seen.iter().find(|(d, _)| **d == *der) {
            return *role;
        }
        let role = Role::of_certificate(der);
        if self.seen.len() >= REMEMBERED_ROLES {
            self.seen.remove(0);
        }
        self.seen.push((der.into(), role));
        role
    }
}

/// The layer: `enforce` is off for plain HTTP/2 (no identities).
#[derive(Clone, Debug)]
pub struct AuthLayer {
    enforce: bool,
    roles: Arc<Mutex<Roles>>,
}

impl AuthLayer {
    /// Checks roles when `enforce` (mutual TLS), else lets every call by.
    pub fn new(enforce: bool) -> AuthLayer {
        AuthLayer {
            enforce,
            roles: Arc::default(),
        }
    }
}

impl<S> tower_layer::Layer<S> for AuthLayer {
    type Service = Auth<S>;

    fn layer(&self, inner: S) -> Auth<S> {
        Auth {
            inner,
            enforce: self.enforce,
            roles: self.roles.clone(),
        }
    }
}

/// The service [`AuthLayer`] wraps around a server's routes.
#[derive(Clone, Debug)]
pub struct Auth<S> {
    inner: S,
    enforce: bool,
    roles: Arc<Mutex<Roles>>,
}

type Reply = http::Response<tonic::body::Body>;

impl<S, B> tower_service::Service<http::Request<B>> for Auth<S>
where
    S: tower_service::Service<http::Request<B>, Response = Reply>,
{
    type Response = Reply;
    type Error = S::Error;
    type Future = Either<Ready<Result<Reply, S::Error>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if !self.enforce {
            return Either::Right(self.inner.call(request));
        }
        let info = request.extensions().get::<TlsConnectInfo<TcpConnectInfo>>();
        // rustls has verified the chain; its first certificate is the
        // client's own.
        let role = info.and_then(|i| i.peer_certs()).and_then(|certs| {
            let mut roles = self.roles.lock().unwrap_or_else(PoisonError::into_inner);
            certs.first().map(|c| roles.of(c))
        });
        let path = request.uri().path();
        match role {
            Some(role) if allowed(role, path) => Either::Right(self.inner.call(request)),
            role => {
                let peer = info.and_then(|i| i.get_ref().remote_addr());
                let role_name = role.map_or("none", Role::as_str);
                crate::telemetry::metrics::rpc_denied(service_label(path), role_name);
                tracing::warn!(
                    peer = ?peer,
                    role = role_name,
                    path,
                    "refused a gRPC call outside the caller's role"
                );
                let status = Status::permission_denied(format!(
                    "a {role_name} certificate may not call {path}"
                ));
                Either::Left(ready(Ok(status.into_http())))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_reach_only_their_services() {
        let raft = "/roost.v1.Raft/AppendEntries";
        let join = "/roost.v1.Cluster/Join";
        let remove = "/roost.v1.Cluster/Remove";
        let watch = "/roost.v1.Cluster/Watch";
        let fetch = "/roost.v1.Objects/Fetch";
        let health = "/grpc.health.v1.Health/Check";
        // `roost backup` (and `roost cluster status`) with an operator's certificate.
        let status = "/roost.v1.Cluster/Status";
        let backup = "/roost.v1.Cluster/Backup";
        let all = [
            raft, join, remove, watch, fetch, health, status, backup, "/x.Y/Z",
        ];
        for path in all.into_iter().chain([""]) {
            assert!(allowed(Role::Node, path), "{path}");
        }
        for (role, may) in [
            (
                Role::Operator,
                &[remove, watch, fetch, health, status, backup][..],
            ),
            (Role::Edge, &[watch, fetch, health][..]),
            (Role::Client, &[fetch, health][..]),
        ] {
            for path in all {
                assert_eq!(allowed(role, path), may.contains(&path), "{role} {path}");
            }
        }
        assert_eq!(service_label(raft), "raft");
        assert_eq!(service_label(watch), "cluster");
        assert_eq!(service_label("/foo"), "other");
    }

    #[test]
    fn garbage_is_a_client() {
        assert_eq!(Role::of_certificate(b"not a certificate"), Role::Client);
        assert_eq!(Role::of_certificate(&[]), Role::Client);
    }

    #[test]
    fn remembered_roles_are_those_of_the_same_bytes() {
        let mut roles = Roles::default();
        assert_eq!(roles.of(b"not a certificate"), Role::Client);
        assert_eq!(roles.seen.len(), 1);
        assert_eq!(roles.of(b"not a certificate"), Role::Client);
        assert_eq!(roles.seen.len(), 1, "found, not parsed again");
        for i in 0..(REMEMBERED_ROLES as u8 + 3) {
            roles.of(&[i]);
        }
        assert_eq!(roles.seen.len(), REMEMBERED_ROLES);
        assert_eq!(
            &*roles.seen[REMEMBERED_ROLES - 1].0,
            &[REMEMBERED_ROLES as u8 + 2]
        );
    }
}
