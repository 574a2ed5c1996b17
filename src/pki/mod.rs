//! Certificates for Modbus/TCP Security: reading PEM files with clear
//! errors, and what a verified client certificate says (service user, role,
//! serial). The certificate authority itself (CLI side) is in `ca`.

pub mod ca;

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use time::OffsetDateTime;
use tokio_rustls::rustls::pki_types::pem::{self, PemObject};
use tokio_rustls::rustls::pki_types::{
    CertificateDer, CertificateRevocationListDer, PrivateKeyDer,
};
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

/// The X.509v3 extension carrying the Modbus/TCP Security role (a DER
/// UTF8String), from the Modbus.org mbaps specification.
pub const ROLE_OID: &[u64] = &[1, 3, 6, 1, 4, 1, 50316, 802, 1];
/// The same OID as text, for comparisons with parsed certificates.
pub const ROLE_OID_TEXT: &str = "1.3.6.1.4.1.50316.802.1";
/// The SAN URI prefix naming a service user (`cert issue` writes it).
pub const SERVICE_USER_URI: &str = "urn:metergate:service-user:";

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("{}: cannot read it: {error}", path.display())]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{}: holds no {wanted} PEM block ({found})", path.display())]
    WrongPemType {
        path: PathBuf,
        wanted: &'static str,
        found: String,
    },
    #[error("{}: bad PEM: {error}", path.display())]
    BadPem { path: PathBuf, error: String },
    #[error("{}: not a valid X.509 certificate", path.display())]
    BadCertificate { path: PathBuf },
    #[error("{}: the certificate expired at {at}", path.display())]
    Expired { path: PathBuf, at: String },
    #[error("{}: the certificate is not valid before {at}", path.display())]
    NotYetValid { path: PathBuf, at: String },
    #[error("{}: the private key does not match the certificate {}", key.display(), cert.display())]
    KeyMismatch { key: PathBuf, cert: PathBuf },
    #[error("{}: {message}", path.display())]
    Unusable { path: PathBuf, message: String },
    #[error("{}: {error}", path.display())]
    Write {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{0}")]
    Usage(String),
    #[error("certificate generation failed: {0}")]
    Generate(String),
}

impl PkiError {
    /// Usage and input problems exit 2; failures to read or write files
    /// that should be there exit 1.
    pub fn exit_code(&self) -> u8 {
        match self {
            PkiError::Write { .. } | PkiError::Generate(_) => 1,
            _ => 2,
        }
    }
}

/// The PEM labels a file holds, for saying what was found instead.
fn labels(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let found: Vec<&str> = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("-----BEGIN "))
        .filter_map(|l| l.strip_suffix("-----"))
        .collect();
    if found.is_empty() {
        "found no PEM block at all".into()
    } else {
        format!("found: {}", found.join(", "))
    }
}

fn pem_error(path: &Path, wanted: &'static str, e: pem::Error) -> PkiError {
    match e {
        pem::Error::Io(error) => PkiError::Read {
            path: path.into(),
            error,
        },
        pem::Error::NoItemsFound => PkiError::WrongPemType {
            path: path.into(),
            wanted,
            found: labels(path),
        },
        other => PkiError::BadPem {
            path: path.into(),
            error: other.to_string(),
        },
    }
}

fn exists(path: &Path) -> Result<(), PkiError> {
    std::fs::metadata(path)
        .map(|_| ())
        .map_err(|error| PkiError::Read {
            path: path.into(),
            error,
        })
}

/// Every certificate in a PEM file (at least one).
pub fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, PkiError> {
    exists(path)?;
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| pem_error(path, "CERTIFICATE", e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(path, "CERTIFICATE", e))?;
    if certs.is_empty() {
        return Err(pem_error(path, "CERTIFICATE", pem::Error::NoItemsFound));
    }
    for c in &certs {
        if X509Certificate::from_der(c).is_err() {
            return Err(PkiError::BadCertificate { path: path.into() });
        }
    }
    Ok(certs)
}

/// The private key in a PEM file (PKCS#8, SEC1 or PKCS#1).
pub fn read_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, PkiError> {
    exists(path)?;
    PrivateKeyDer::from_pem_file(path).map_err(|e| pem_error(path, "PRIVATE KEY", e))
}

/// Every CRL in a PEM file; a file that does not exist is no CRL yet.
pub fn read_crls(path: &Path) -> Result<Vec<CertificateRevocationListDer<'static>>, PkiError> {
    if !path.exists() {
        return Ok(Vec::new());
    }
    let crls = CertificateRevocationListDer::pem_file_iter(path)
        .map_err(|e| pem_error(path, "X509 CRL", e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(path, "X509 CRL", e))?;
    if crls.is_empty() {
        return Err(pem_error(path, "X509 CRL", pem::Error::NoItemsFound));
    }
    Ok(crls)
}

/// The serials (normalized hex) a set of CRLs revokes.
pub fn revoked_serials(
    path: &Path,
    crls: &[CertificateRevocationListDer<'_>],
) -> Result<HashSet<String>, PkiError> {
    let mut out = HashSet::new();
    for crl in crls {
        let (_, parsed) = x509_parser::parse_x509_crl(crl).map_err(|_| PkiError::Unusable {
            path: path.into(),
            message: "not a valid X.509 CRL".into(),
        })?;
        for r in parsed.iter_revoked_certificates() {
            out.insert(serial_hex(r.raw_serial()));
        }
    }
    Ok(out)
}

/// A serial number as lowercase hex without leading zero bytes (the form
/// `cert list` prints and `cert revoke` takes).
pub fn serial_hex(raw: &[u8]) -> String {
    let start = raw.iter().position(|b| *b != 0).unwrap_or(raw.len());
    let hex = hex::encode(&raw[start..]);
    if hex.is_empty() { "0".into() } else { hex }
}

/// A serial as people type it (`0A:1b…`, `0x…`) in the normalized form.
pub fn normalize_serial(text: &str) -> Option<String> {
    let t = text.trim();
    let t = t.strip_prefix("0x").unwrap_or(t);
    let digits: String = t.chars().filter(|c| *c != ':').collect();
    if digits.is_empty() || digits.len() > 40 || !digits.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    let digits = digits.to_ascii_lowercase();
    let padded = if digits.len() % 2 == 1 {
        format!("0{digits}")
    } else {
        digits
    };
    hex::decode(&padded).ok().map(|b| serial_hex(&b))
}

/// Refuses a certificate that is expired or not yet valid at `now`.
pub fn check_validity(
    path: &Path,
    cert: &CertificateDer<'_>,
    now: OffsetDateTime,
) -> Result<(), PkiError> {
    let (_, c) = X509Certificate::from_der(cert)
        .map_err(|_| PkiError::BadCertificate { path: path.into() })?;
    let t = now.unix_timestamp();
    let v = c.validity();
    if t < v.not_before.timestamp() {
        return Err(PkiError::NotYetValid {
            path: path.into(),
            at: v.not_before.to_string(),
        });
    }
    if t > v.not_after.timestamp() {
        return Err(PkiError::Expired {
            path: path.into(),
            at: v.not_after.to_string(),
        });
    }
    Ok(())
}

/// Where a client certificate names its service user.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NameFrom {
    /// The subject's common name.
    #[default]
    SubjectCn,
    /// A SAN URI `urn:metergate:service-user:NAME`.
    SanUri,
}

/// What a verified client certificate says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientIdentity {
    pub serial: String,
    pub subject: String,
    pub service_user: String,
    pub role: Option<String>,
    /// Unix seconds.
    pub not_before: i64,
    pub not_after: i64,
}

/// Why a chain-verified client certificate is still refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("the certificate cannot be parsed")]
    Unparseable,
    #[error("the certificate has no extended key usage clientAuth")]
    NoClientAuth,
    #[error("the certificate carries {0} role extensions (one role per certificate)")]
    SeveralRoles(usize),
    #[error("the role extension is not a DER UTF8String")]
    BadRole,
    #[error("the certificate names no service user ({0})")]
    NoServiceUser(&'static str),
}

/// Serial and subject of a certificate for an event, `?` when unreadable.
pub fn serial_and_subject(der: &[u8]) -> (String, String) {
    match X509Certificate::from_der(der) {
        Ok((_, c)) => (serial_hex(c.raw_serial()), c.subject().to_string()),
        Err(_) => ("?".into(), "?".into()),
    }
}

/// Reads identity, role and serial from a client certificate that rustls
/// has verified. rustls does not look at the role and accepts a certificate
/// without any EKU, so those checks are ours (DESIGN §4).
pub fn client_identity(der: &[u8], name_from: NameFrom) -> Result<ClientIdentity, Refusal> {
    let (_, cert) = X509Certificate::from_der(der).map_err(|_| Refusal::Unparseable)?;
    let serial = serial_hex(cert.raw_serial());
    let subject = cert.subject().to_string();
    match cert.extended_key_usage() {
        Ok(Some(eku)) if eku.value.client_auth => {}
        _ => return Err(Refusal::NoClientAuth),
    }
    let roles: Vec<&[u8]> = cert
        .extensions()
        .iter()
        .filter(|e| e.oid.to_id_string() == ROLE_OID_TEXT)
        .map(|e| e.value)
        .collect();
    let role = match roles.as_slice() {
        [] => None,
        [one] => Some(parse_utf8string(one).ok_or(Refusal::BadRole)?),
        more => return Err(Refusal::SeveralRoles(more.len())),
    };
    let service_user = match name_from {
        NameFrom::SubjectCn => cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .map(str::to_string)
            .ok_or(Refusal::NoServiceUser("no subject common name"))?,
        NameFrom::SanUri => {
            let san = cert
                .subject_alternative_name()
                .ok()
                .flatten()
                .ok_or(Refusal::NoServiceUser("no subject alternative name"))?;
            san.value
                .general_names
                .iter()
                .find_map(|g| match g {
                    GeneralName::URI(u) => u.strip_prefix(SERVICE_USER_URI).map(str::to_string),
                    _ => None,
                })
                .ok_or(Refusal::NoServiceUser(
                    "no SAN URI urn:metergate:service-user:NAME",
                ))?
        }
    };
    if service_user.is_empty() {
        return Err(Refusal::NoServiceUser("an empty name"));
    }
    Ok(ClientIdentity {
        serial,
        subject,
        service_user,
        role,
        not_before: cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
    })
}

/// The content of a DER UTF8String (tag 0x0C), nothing after it.
fn parse_utf8string(der: &[u8]) -> Option<String> {
    use x509_parser::asn1_rs::{FromDer, Utf8String};
    match Utf8String::from_der(der) {
        Ok(([], s)) => Some(s.string()),
        _ => None,
    }
}

/// The DER encoding of a role: a UTF8String.
pub fn role_der(role: &str) -> Vec<u8> {
    use x509_parser::asn1_rs::{ToDer, Utf8String};
    Utf8String::new(role).to_der_vec().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serials_normalize_as_people_type_them() {
        for (typed, expected) in [
            ("0A:1B", Some("0a1b")),
            ("00a1b", Some("0a1b")),
            ("0x7F", Some("7f")),
            ("zz", None),
            ("", None),
        ] {
            assert_eq!(normalize_serial(typed).as_deref(), expected, "{typed}");
        }
        assert_eq!(serial_hex(&[0, 0, 0x12]), "12");
    }

    #[test]
    fn a_client_certificate_names_its_service_user_by_cn_or_san_uri() {
        let dir = tempfile::tempdir().unwrap();
        let now = OffsetDateTime::now_utc();
        let (ca, _) = ca::Ca::init(&dir.path().join("ca"), now).unwrap();
        let issued = ca
            .issue(
                &ca::ClientRequest {
                    service_user: "scada-1".into(),
                    roles: vec!["Operator".into()],
                    not_before: None,
                    not_after: now + time::Duration::days(1),
                    client_auth: true,
                },
                &dir.path().join("out"),
                now,
            )
            .unwrap();
        let der = read_certificates(&issued.certificate).unwrap().remove(0);
        for from in [NameFrom::SubjectCn, NameFrom::SanUri] {
            let id = client_identity(&der, from).unwrap();
            assert_eq!(id.service_user, "scada-1");
            assert_eq!(id.role.as_deref(), Some("Operator"));
            assert_eq!(id.serial, issued.issued.serial);
        }
        // The CA's own certificate has no clientAuth.
        let ca_der = read_certificates(&ca.ca_certificate()).unwrap().remove(0);
        assert_eq!(
            client_identity(&ca_der, NameFrom::SubjectCn),
            Err(Refusal::NoClientAuth)
        );
    }

    #[test]
    fn a_role_round_trips_through_der() {
        for role in ["Operator", "", &"x".repeat(200), &"y".repeat(300)] {
            assert_eq!(parse_utf8string(&role_der(role)).as_deref(), Some(role));
        }
        // A PrintableString (tag 0x13) is not a UTF8String.
        assert_eq!(parse_utf8string(&[0x13, 1, b'a']), None);
        assert_eq!(parse_utf8string(&[0x0c, 5, b'a']), None);
    }
}
