//! Any path an SFTP client can send: resolved lexically into a meter and a
//! path inside its store. None of it may panic, and whatever resolves is
//! made of plain names only (no `.`, `..`, `/` or NUL), so the store's
//! openat2 never sees anything but names beneath its root.
#![no_main]

use libfuzzer_sys::fuzz_target;
use metergate::doors::ssh::sftp::{Target, resolve};

fuzz_target!(|data: &[u8]| {
    let path = String::from_utf8_lossy(data);
    if let Ok(Target::Meter { meter, rel }) = resolve(&path) {
        for name in std::iter::once(&meter).chain(rel.names()) {
            assert!(!name.is_empty() && name != "." && name != "..");
            assert!(!name.contains('/') && !name.contains('\0'));
        }
        // Resolving the resolved path again changes nothing.
        let again = format!("/{meter}/{}", rel.text());
        assert_eq!(
            resolve(&again).ok(),
            Some(Target::Meter { meter, rel }),
            "{again}"
        );
    }
});
