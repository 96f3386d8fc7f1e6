//! `parse_duration` (`wait_for_card`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use tessera_core::policy::{parse_duration, MAX_WAIT_FOR_CARD};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(duration) = parse_duration(text) {
        assert!(duration <= MAX_WAIT_FOR_CARD, "{text:?}: {duration:?}");
    }
});
