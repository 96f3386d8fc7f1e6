//! RFC 7512 token filters (`[pkcs11] token`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use tessera_core::pkcs11_uri::TokenFilter;
use tessera_core::token::TokenIdentity;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(filter) = TokenFilter::parse(text) {
        let _ = filter.to_string();
        // A token with exactly the values the filter names matches it.
        let value = |wanted: &Option<String>| wanted.clone().unwrap_or_default();
        let token = TokenIdentity {
            slot_id: filter.slot_id.unwrap_or_default(),
            slot_description: value(&filter.slot_description),
            label: value(&filter.token),
            manufacturer: value(&filter.manufacturer),
            model: value(&filter.model),
            serial: value(&filter.serial),
            pin_locked: false,
            pin_final_try: false,
            pin_count_low: false,
            protected_authentication_path: false,
            so_pin_locked: false,
            so_pin_final_try: false,
        };
        assert!(filter.matches(&token), "{filter:?}");
    }
});
