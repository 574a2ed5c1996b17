//! The gateway's certificate authority, run from the CLI where its key lives
//! (the daemon only ever reads the CA certificate and the CRL): ECDSA P-256
//! with rcgen, an index of what it issued, and the CRL `cert revoke` writes.
//!
//! A CA folder holds `ca.key` (0600), `ca.crt`, `crl.pem`, `index.toml` and
//! a lock file; the folder itself is 0700.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, CustomExtension, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose, PublicKeyData,
    RevocationReason, RevokedCertParams, SanType, SerialNumber,
};
use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};

use super::{PkiError, ROLE_OID, SERVICE_USER_URI, normalize_serial, role_der, serial_hex};

/// A CA certificate lives this long (the CLI re-issues leaves, not roots).
const CA_YEARS: i64 = 20;
/// Issued certificates start this far in the past, for clocks a little
/// behind the CA's.
const SKEW: Duration = Duration::minutes(5);
/// The CRL says when the next one is due; the listener does not enforce it
/// (an overdue CRL must not blind the control room), so it is long.
const CRL_DAYS: i64 = 365;

/// One line of the CA's index.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Issued {
    pub serial: String,
    /// `ca`, `server` or `client`.
    pub kind: String,
    /// The service user (client), the first name (server), or the CA's name.
    pub name: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
    /// RFC 3339, UTC.
    pub not_before: String,
    pub not_after: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked: Option<String>,
}

impl Issued {
    /// `valid`, `revoked`, `expired` or `not yet valid` at `now`.
    pub fn status(&self, now: OffsetDateTime) -> &'static str {
        let parse =
            |t: &str| OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok();
        if self.revoked.is_some() {
            "revoked"
        } else if parse(&self.not_after).is_some_and(|t| t < now) {
            "expired"
        } else if parse(&self.not_before).is_some_and(|t| t > now) {
            "not yet valid"
        } else {
            "valid"
        }
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Index {
    crl_number: u64,
    #[serde(default, rename = "certificate")]
    certificates: Vec<Issued>,
}

/// What `cert issue` asks for.
#[derive(Clone, Debug)]
pub struct ClientRequest {
    pub service_user: String,
    /// Normally exactly one; none gives a certificate that authorizes as no
    /// role; more than one gives one the listener refuses (for testing).
    pub roles: Vec<String>,
    pub not_before: Option<OffsetDateTime>,
    pub not_after: OffsetDateTime,
    /// Without it the certificate has no extended key usage at all (which
    /// rustls would accept and the listener refuses).
    pub client_auth: bool,
}

/// Files written by an issuance.
#[derive(Clone, Debug)]
pub struct Written {
    pub issued: Issued,
    pub certificate: PathBuf,
    pub key: PathBuf,
    pub ca_certificate: PathBuf,
}

/// A CA folder, locked for the lifetime of this value.
pub struct Ca {
    dir: PathBuf,
    _lock: nix::fcntl::Flock<File>,
}

fn rfc3339(t: OffsetDateTime) -> String {
    // X.509 times have whole seconds.
    t.replace_nanosecond(0)
        .unwrap_or(t)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

fn generation(e: rcgen::Error) -> PkiError {
    PkiError::Generate(e.to_string())
}

/// Writes a file atomically (temporary file, then rename) with `mode`.
pub fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), PkiError> {
    let err = |error| PkiError::Write {
        path: path.into(),
        error,
    };
    let tmp = path.with_extension(format!(
        "{}.tmp",
        path.extension().and_then(|e| e.to_str()).unwrap_or("")
    ));
    let _ = std::fs::remove_file(&tmp);
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(err)?;
    f.write_all(bytes).map_err(err)?;
    f.sync_all().map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

fn random_serial() -> Result<SerialNumber, PkiError> {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| PkiError::Generate("no randomness for a serial number".into()))?;
    // Positive and of full length: DER integers are signed.
    bytes[0] = (bytes[0] & 0x7f) | 0x10;
    Ok(SerialNumber::from_slice(&bytes))
}

fn new_key() -> Result<KeyPair, PkiError> {
    KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(generation)
}

fn make_dir(dir: &Path, mode: u32) -> Result<(), PkiError> {
    std::fs::create_dir_all(dir).map_err(|error| PkiError::Write {
        path: dir.into(),
        error,
    })?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode)).map_err(|error| {
        PkiError::Write {
            path: dir.into(),
            error,
        }
    })
}

impl Ca {
    fn lock(dir: &Path) -> Result<nix::fcntl::Flock<File>, PkiError> {
        let path = dir.join(".lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(|error| PkiError::Write {
                path: path.clone(),
                error,
            })?;
        nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive).map_err(|(_, e)| {
            PkiError::Write {
                path,
                error: e.into(),
            }
        })
    }

    /// Creates a new CA in `dir` (which must not hold one already).
    pub fn init(dir: &Path, now: OffsetDateTime) -> Result<(Ca, Issued), PkiError> {
        // 0700: the folder holds the CA's private key.
        make_dir(dir, 0o700)?;
        let lock = Ca::lock(dir)?;
        if dir.join("ca.key").exists() {
            return Err(PkiError::Usage(format!(
                "{}: already holds a CA (ca.key); refusing to replace it",
                dir.display()
            )));
        }
        let key = new_key()?;
        let serial = random_serial()?;
        // A name of its own: clients match issuers by name, so two CAs must
        // never share one.
        let name = format!(
            "metergate certificate authority {}",
            &serial_hex(serial.as_ref())[..8]
        );
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, name.clone());
        params
            .distinguished_name
            .push(DnType::OrganizationName, "metergate");
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.not_before = now - SKEW;
        params.not_after = now + Duration::days(365 * CA_YEARS);
        params.serial_number = Some(serial);
        params.key_identifier_method = KeyIdMethod::Sha256;
        let cert = params.self_signed(&key).map_err(generation)?;
        // 0600: the CA key signs every certificate the gateway trusts.
        write_file(&dir.join("ca.key"), key.serialize_pem().as_bytes(), 0o600)?;
        write_file(&dir.join("ca.crt"), cert.pem().as_bytes(), 0o644)?;
        let issued = Issued {
            serial: serial_hex(
                params
                    .serial_number
                    .as_ref()
                    .map(|s| s.as_ref())
                    .unwrap_or(&[]),
            ),
            kind: "ca".into(),
            name,
            roles: Vec::new(),
            not_before: rfc3339(params.not_before),
            not_after: rfc3339(params.not_after),
            revoked: None,
        };
        let ca = Ca {
            dir: dir.into(),
            _lock: lock,
        };
        let mut index = Index {
            crl_number: 0,
            certificates: vec![issued.clone()],
        };
        ca.write_crl(&mut index, now)?;
        ca.save(&index)?;
        Ok((ca, issued))
    }

    /// Opens an existing CA folder.
    pub fn open(dir: &Path) -> Result<Ca, PkiError> {
        if !dir.join("ca.key").exists() || !dir.join("ca.crt").exists() {
            return Err(PkiError::Usage(format!(
                "{}: is not a CA folder (no ca.key and ca.crt); create one with `metergate cert init-ca --ca {}`",
                dir.display(),
                dir.display()
            )));
        }
        let lock = Ca::lock(dir)?;
        Ok(Ca {
            dir: dir.into(),
            _lock: lock,
        })
    }

    pub fn ca_certificate(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }

    pub fn crl(&self) -> PathBuf {
        self.dir.join("crl.pem")
    }

    fn index(&self) -> Result<Index, PkiError> {
        let path = self.dir.join("index.toml");
        let text = std::fs::read_to_string(&path).map_err(|error| PkiError::Read {
            path: path.clone(),
            error,
        })?;
        toml::from_str(&text).map_err(|e| PkiError::Unusable {
            path,
            message: e.to_string(),
        })
    }

    fn save(&self, index: &Index) -> Result<(), PkiError> {
        let text = toml::to_string(index).map_err(|e| PkiError::Generate(e.to_string()))?;
        write_file(&self.dir.join("index.toml"), text.as_bytes(), 0o644)
    }

    fn issuer(&self) -> Result<Issuer<'static, KeyPair>, PkiError> {
        let key_path = self.dir.join("ca.key");
        let key_text = std::fs::read_to_string(&key_path).map_err(|error| PkiError::Read {
            path: key_path.clone(),
            error,
        })?;
        // The error never quotes the key.
        let key = KeyPair::from_pem(&key_text).map_err(|_| PkiError::Unusable {
            path: key_path.clone(),
            message: "not an ECDSA or Ed25519 private key in PEM".into(),
        })?;
        let cert_path = self.ca_certificate();
        let cert = super::read_certificates(&cert_path)?;
        let (_, parsed) = x509_parser::parse_x509_certificate(&cert[0]).map_err(|_| {
            PkiError::BadCertificate {
                path: cert_path.clone(),
            }
        })?;
        if parsed.public_key().raw != key.subject_public_key_info().as_slice() {
            return Err(PkiError::KeyMismatch {
                key: key_path,
                cert: cert_path,
            });
        }
        Issuer::from_ca_cert_der(&cert[0], key).map_err(|e| PkiError::Unusable {
            path: cert_path,
            message: format!("not usable as an issuer: {e}"),
        })
    }

    /// The gateway's own certificate for `names` (IP addresses or DNS
    /// names), written to OUT/server.crt and OUT/server.key with copies of
    /// the CA certificate and the CRL.
    pub fn server(
        &self,
        out: &Path,
        names: &[String],
        days: i64,
        now: OffsetDateTime,
    ) -> Result<Written, PkiError> {
        if names.is_empty() {
            return Err(PkiError::Usage("a server certificate needs a name".into()));
        }
        let mut params = CertificateParams::default();
        params.subject_alt_names = names
            .iter()
            .map(|n| match n.parse::<std::net::IpAddr>() {
                Ok(ip) => Ok(SanType::IpAddress(ip)),
                Err(_) => n.clone().try_into().map(SanType::DnsName).map_err(|_| {
                    PkiError::Usage(format!("`{n}` is not an IP address or DNS name"))
                }),
            })
            .collect::<Result<_, _>>()?;
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, names[0].clone());
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.sign(
            params,
            "server",
            &names[0],
            &[],
            now - SKEW,
            now + Duration::days(days),
            out,
            "server",
        )
    }

    /// A client certificate for a service user with its role.
    pub fn issue(
        &self,
        request: &ClientRequest,
        out: &Path,
        now: OffsetDateTime,
    ) -> Result<Written, PkiError> {
        crate::model::check_name(&request.service_user).map_err(|e| {
            PkiError::Usage(format!("--service-user `{}`: {e}", request.service_user))
        })?;
        let not_before = request.not_before.unwrap_or(now - SKEW);
        if request.not_after <= not_before {
            return Err(PkiError::Usage(
                "the certificate would end before it begins (check --not-before/--not-after/--days)"
                    .into(),
            ));
        }
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, request.service_user.clone());
        params
            .distinguished_name
            .push(DnType::OrganizationName, "metergate service users");
        let uri = format!("{SERVICE_USER_URI}{}", request.service_user);
        params.subject_alt_names =
            vec![SanType::URI(uri.try_into().map_err(|_| {
                PkiError::Usage("the service user name cannot be a URI".into())
            })?)];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        if request.client_auth {
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        }
        for role in &request.roles {
            params
                .custom_extensions
                .push(CustomExtension::from_oid_content(ROLE_OID, role_der(role)));
        }
        self.sign(
            params,
            "client",
            &request.service_user,
            &request.roles,
            not_before,
            request.not_after,
            out,
            &request.service_user,
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn sign(
        &self,
        mut params: CertificateParams,
        kind: &str,
        name: &str,
        roles: &[String],
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
        out: &Path,
        file_stem: &str,
    ) -> Result<Written, PkiError> {
        let issuer = self.issuer()?;
        let serial = random_serial()?;
        params.serial_number = Some(serial.clone());
        params.not_before = not_before;
        params.not_after = not_after;
        params.use_authority_key_identifier_extension = true;
        let key = new_key()?;
        let cert = params.signed_by(&key, &issuer).map_err(generation)?;
        // 0700 for the output folder: it receives a private key.
        make_dir(out, 0o700)?;
        let certificate = out.join(format!("{file_stem}.crt"));
        let key_path = out.join(format!("{file_stem}.key"));
        let ca_certificate = out.join("ca.crt");
        // 0600: the private key authenticates its holder.
        write_file(&key_path, key.serialize_pem().as_bytes(), 0o600)?;
        write_file(&certificate, cert.pem().as_bytes(), 0o644)?;
        let ca_pem = std::fs::read(self.ca_certificate()).map_err(|error| PkiError::Read {
            path: self.ca_certificate(),
            error,
        })?;
        if ca_certificate != self.ca_certificate() {
            write_file(&ca_certificate, &ca_pem, 0o644)?;
        }
        // The gateway's folder also gets the CRL, where `mbaps.crl` looks
        // by default: a gateway never starts without one.
        let crl = out.join("crl.pem");
        if kind == "server" && crl != self.crl() {
            let pem = std::fs::read(self.crl()).map_err(|error| PkiError::Read {
                path: self.crl(),
                error,
            })?;
            write_file(&crl, &pem, 0o644)?;
        }
        let issued = Issued {
            serial: serial_hex(serial.as_ref()),
            kind: kind.into(),
            name: name.into(),
            roles: roles.to_vec(),
            not_before: rfc3339(not_before),
            not_after: rfc3339(not_after),
            revoked: None,
        };
        let mut index = self.index()?;
        index.certificates.push(issued.clone());
        self.save(&index)?;
        Ok(Written {
            issued,
            certificate,
            key: key_path,
            ca_certificate,
        })
    }

    /// Everything the CA issued, oldest first.
    pub fn list(&self) -> Result<Vec<Issued>, PkiError> {
        Ok(self.index()?.certificates)
    }

    /// Revokes a certificate and rewrites the CRL. Returns the entry and
    /// whether it was revoked already.
    pub fn revoke(&self, serial: &str, now: OffsetDateTime) -> Result<(Issued, bool), PkiError> {
        let wanted = normalize_serial(serial).ok_or_else(|| {
            PkiError::Usage(format!(
                "`{serial}` is not a serial number (hex, as `cert list` prints)"
            ))
        })?;
        let mut index = self.index()?;
        let Some(entry) = index.certificates.iter_mut().find(|c| c.serial == wanted) else {
            return Err(PkiError::Usage(format!(
                "no certificate with serial {wanted} in {}",
                self.dir.join("index.toml").display()
            )));
        };
        if entry.kind == "ca" {
            return Err(PkiError::Usage(
                "the CA's own certificate cannot be revoked by its CRL; create a new CA instead"
                    .into(),
            ));
        }
        if entry.revoked.is_some() {
            return Ok((entry.clone(), true));
        }
        entry.revoked = Some(rfc3339(now));
        let issued = entry.clone();
        self.write_crl(&mut index, now)?;
        self.save(&index)?;
        Ok((issued, false))
    }

    fn write_crl(&self, index: &mut Index, now: OffsetDateTime) -> Result<(), PkiError> {
        let issuer = self.issuer()?;
        index.crl_number += 1;
        let revoked_certs = index
            .certificates
            .iter()
            .filter_map(|c| {
                let at = OffsetDateTime::parse(
                    c.revoked.as_deref()?,
                    &time::format_description::well_known::Rfc3339,
                )
                .ok()?;
                Some(RevokedCertParams {
                    serial_number: SerialNumber::from_slice(&hex::decode(pad(&c.serial)).ok()?),
                    revocation_time: at,
                    reason_code: Some(RevocationReason::Unspecified),
                    invalidity_date: None,
                })
            })
            .collect();
        let params = CertificateRevocationListParams {
            this_update: now,
            next_update: now + Duration::days(CRL_DAYS),
            crl_number: SerialNumber::from(index.crl_number),
            issuing_distribution_point: None,
            revoked_certs,
            key_identifier_method: KeyIdMethod::Sha256,
        };
        let crl = params.signed_by(&issuer).map_err(generation)?;
        let pem = crl.pem().map_err(generation)?;
        write_file(&self.crl(), pem.as_bytes(), 0o644)
    }
}

fn pad(hex: &str) -> String {
    if hex.len() % 2 == 1 {
        format!("0{hex}")
    } else {
        hex.to_string()
    }
}
