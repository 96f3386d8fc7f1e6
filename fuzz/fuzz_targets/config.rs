//! `Config::parse`: the whole configuration file, and its error positions.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use tessera_core::config::{Config, ConfigError};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Config::parse(Path::new("/etc/tessera/tessera.toml"), text) {
        Ok(config) => assert!(!config.rules.is_empty() && !config.ca_paths.is_empty()),
        Err(ConfigError::At { line, column, .. }) => {
            // The position is inside the text (or just past its end).
            let lines = text.split('\n').count();
            assert!((1..=lines).contains(&line), "line {line} of {lines}");
            assert!(column >= 1);
        }
        Err(other) => panic!("parse cannot fail with {other}"),
    }
});
