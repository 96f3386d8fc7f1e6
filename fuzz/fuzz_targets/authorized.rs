//! A user's `~/.ssh/authorized_keys` (read by the module with the user's
//! content), and each line as a public key.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use tessera_mappers::{parse_authorized_keys, PublicKey};

fuzz_target!(|data: &[u8]| {
    let _ = parse_authorized_keys(Path::new("/home/alice/.ssh/authorized_keys"), data);
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for line in text.lines() {
        if let Ok(Some(key)) = PublicKey::from_authorized_keys_line(line) {
            // A key written back as a line reads back as the same key.
            let written = key.authorized_keys_line();
            let again = PublicKey::from_authorized_keys_line(&written);
            assert_eq!(
                again.ok().flatten().map(|key| key.fingerprint()),
                Some(key.fingerprint()),
                "{written}"
            );
        }
    }
});
