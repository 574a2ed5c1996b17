//! Any bytes as a client certificate or a CRL: what the gateway reads from
//! a chain-verified certificate (names, role extension, EKU, serial) and the
//! serials of a CRL. None of it may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use metergate::pki::{self, NameFrom};
use tokio_rustls::rustls::pki_types::CertificateRevocationListDer;

fuzz_target!(|data: &[u8]| {
    for from in [NameFrom::SubjectCn, NameFrom::SanUri] {
        if let Ok(id) = pki::client_identity(data, from) {
            assert!(!id.service_user.is_empty());
            assert!(!id.serial.is_empty());
        }
    }
    let _ = pki::serial_and_subject(data);
    let crl = CertificateRevocationListDer::from(data.to_vec());
    let _ = pki::revoked_serials(std::path::Path::new("fuzz"), &[crl]);
});
