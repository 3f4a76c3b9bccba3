//! `roost certs`: a CA and one certificate per role for a cluster's mutual
//! TLS (crate `rcgen`, ECDSA P-256 keys).
//!
//! Each certificate names its role the way [`super::auth`] reads it (the
//! SAN URI `spiffe://roost/role/<role>`), names the hosts it serves as
//! (`localhost`, `127.0.0.1`, `::1` and what the caller adds), and may be
//! used as server and as client. The CA's key stays in its directory: a
//! second run with the same directory keeps the CA and issues new
//! certificates under it (e.g. with more names).
//!
//! Never: decides where certificates are used; the `[tls]` section names
//! the files.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};

use super::auth::{ROLE_URI_PREFIX, Role};

/// The CA's subject; a CA made by an earlier run is recognised by its key
/// and this name.
const CA_NAME: &str = "Roost cluster CA";

/// What to issue.
#[derive(Debug, Clone)]
pub struct CertsRequest {
    /// Where the files go (created if missing): `ca.crt`, `ca.key`, and
    /// `<role>.crt`, `<role>.key` per role.
    pub dir: PathBuf,
    /// The roles to issue a certificate for.
    pub roles: Vec<Role>,
    /// DNS names every certificate serves as, besides `localhost`.
    pub dns: Vec<String>,
    /// IP addresses every certificate serves as, besides the loopback ones.
    pub ips: Vec<IpAddr>,
    /// Validity of the certificates (and of a new CA), in days.
    pub days: u32,
}

/// Errors of `roost certs`.
#[derive(Debug, thiserror::Error)]
pub enum CertsError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{what}: {source}")]
    Rcgen {
        what: String,
        #[source]
        source: rcgen::Error,
    },
    #[error("{}: {message}", path.display())]
    Ca { path: PathBuf, message: String },
}

/// The files written, in order.
pub fn issue(request: &CertsRequest) -> Result<Vec<PathBuf>, CertsError> {
    let dir = &request.dir;
    std::fs::create_dir_all(dir).map_err(|source| CertsError::Io {
        path: dir.clone(),
        source,
    })?;
    let mut written = Vec::new();
    let (ca_params, ca_key) = ca(request, &mut written)?;
    let issuer = Issuer::new(ca_params, ca_key);
    for role in &request.roles {
        let key = KeyPair::generate().map_err(rcgen_error(format!("{role} key")))?;
        let cert = leaf_params(request, *role)?
            .signed_by(&key, &issuer)
            .map_err(rcgen_error(format!("sign the {role} certificate")))?;
        let crt = dir.join(format!("{role}.crt"));
        let key_file = dir.join(format!("{role}.key"));
        write(&crt, &cert.pem(), false)?;
        write(&key_file, &key.serialize_pem(), true)?;
        written.extend([crt, key_file]);
    }
    Ok(written)
}

/// The CA: the one in `dir` if there is one (its key, and the subject
/// every run gives it), else a new one written there.
fn ca(
    request: &CertsRequest,
    written: &mut Vec<PathBuf>,
) -> Result<(CertificateParams, KeyPair), CertsError> {
    let (crt, key_file) = (request.dir.join("ca.crt"), request.dir.join("ca.key"));
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, CA_NAME.to_owned());
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    match (crt.exists(), key_file.exists()) {
        (true, true) => {
            check_ours(&crt)?;
            let pem = std::fs::read_to_string(&key_file).map_err(|source| CertsError::Io {
                path: key_file.clone(),
                source,
            })?;
            let key = KeyPair::from_pem(&pem).map_err(|e| CertsError::Ca {
                path: key_file.clone(),
                message: format!("not a key rcgen reads: {e}"),
            })?;
            Ok((params, key))
        }
        (false, false) => {
            validity(&mut params, request.days.saturating_mul(2));
            let key = KeyPair::generate().map_err(rcgen_error("CA key".to_owned()))?;
            let cert = params
                .self_signed(&key)
                .map_err(rcgen_error("self-sign the CA".to_owned()))?;
            write(&crt, &cert.pem(), false)?;
            write(&key_file, &key.serialize_pem(), true)?;
            written.extend([crt, key_file]);
            Ok((params, key))
        }
        _ => Err(CertsError::Ca {
            path: request.dir.clone(),
            message: "has one of ca.crt and ca.key but not the other".to_owned(),
        }),
    }
}

/// An existing CA is reused with the subject this module gives every CA
/// (rcgen cannot read another one's without a certificate parser), so it
/// must be one `roost certs` made.
fn check_ours(crt: &Path) -> Result<(), CertsError> {
    use rustls_pki_types::pem::PemObject as _;
    let ca_error = |message: String| CertsError::Ca {
        path: crt.to_owned(),
        message,
    };
    let der = rustls_pki_types::CertificateDer::from_pem_file(crt)
        .map_err(|e| ca_error(format!("not a PEM certificate: {e}")))?;
    let cert = webpki::EndEntityCert::try_from(&der)
        .map_err(|e| ca_error(format!("not a certificate: {e}")))?;
    let ours = cert
        .subject()
        .windows(CA_NAME.len())
        .any(|w| w == CA_NAME.as_bytes());
    if !ours {
        return Err(ca_error(format!(
            "not a CA made by `roost certs` (its subject is not {CA_NAME:?}); use another directory"
        )));
    }
    Ok(())
}

fn leaf_params(request: &CertsRequest, role: Role) -> Result<CertificateParams, CertsError> {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, format!("roost {role}"));
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    validity(&mut params, request.days);
    let uri = format!("{ROLE_URI_PREFIX}{role}");
    let mut sans = vec![SanType::URI(
        uri.clone().try_into().map_err(rcgen_error(uri))?,
    )];
    let names = std::iter::once("localhost").chain(request.dns.iter().map(String::as_str));
    for name in names {
        let dns = name
            .to_owned()
            .try_into()
            .map_err(rcgen_error(format!("DNS name {name:?}")))?;
        sans.push(SanType::DnsName(dns));
    }
    let loopback: [IpAddr; 2] = [[127, 0, 0, 1].into(), std::net::Ipv6Addr::LOCALHOST.into()];
    for ip in loopback.into_iter().chain(request.ips.iter().copied()) {
        sans.push(SanType::IpAddress(ip));
    }
    params.subject_alt_names = sans;
    Ok(params)
}

/// Valid from an hour ago (clocks differ) for `days`.
fn validity(params: &mut CertificateParams, days: u32) {
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(i64::from(days));
}

fn rcgen_error(what: String) -> impl FnOnce(rcgen::Error) -> CertsError {
    move |source| CertsError::Rcgen { what, source }
}

/// Writes `text` to `path`; a key is readable by its owner only.
fn write(path: &Path, text: &str, secret: bool) -> Result<(), CertsError> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let io_error = |source| CertsError::Io {
        path: path.to_owned(),
        source,
    };
    // A key file is replaced, never written through an existing one with
    // wider permissions.
    if secret {
        let _ = std::fs::remove_file(path);
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(if secret { 0o600 } else { 0o644 })
        .open(path)
        .map_err(io_error)?;
    file.write_all(text.as_bytes()).map_err(io_error)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rpc::tls::{Tls, TlsFiles};

    fn der_of(path: &Path) -> Vec<u8> {
        use rustls_pki_types::pem::PemObject as _;
        rustls_pki_types::CertificateDer::from_pem_file(path)
            .expect("a PEM certificate")
            .to_vec()
    }

    #[test]
    fn certificates_carry_their_roles_and_load() {
        let dir = tempfile::tempdir().expect("temp dir");
        let request = CertsRequest {
            dir: dir.path().to_owned(),
            roles: vec![Role::Node, Role::Edge, Role::Operator],
            dns: vec!["roost-edge-grpc".into()],
            ips: vec![],
            days: 2,
        };
        let written = issue(&request).expect("issued");
        assert_eq!(written.len(), 8, "{written:?}");
        for role in [Role::Node, Role::Edge, Role::Operator] {
            let crt = dir.path().join(format!("{role}.crt"));
            assert_eq!(Role::of_certificate(&der_of(&crt)), role);
            let files = TlsFiles {
                ca_file: dir.path().join("ca.crt"),
                cert_file: crt,
                key_file: dir.path().join(format!("{role}.key")),
                server_name: None,
            };
            Tls::load(&files).expect("loads");
        }
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(dir.path().join("node.key"))
            .expect("key")
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "{mode:o}");

        // A second run keeps the CA.
        let ca = std::fs::read(dir.path().join("ca.crt")).expect("ca");
        let again = issue(&CertsRequest {
            roles: vec![Role::Edge],
            ..request
        })
        .expect("issued again");
        assert_eq!(again.len(), 2);
        assert_eq!(std::fs::read(dir.path().join("ca.crt")).expect("ca"), ca);
    }
}
