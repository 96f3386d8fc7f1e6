//! Mapfiles (`<key> <user>` lines) and look-ups in them. The first line's
//! first word is also looked up.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use tessera_mappers::MapFile;

fuzz_target!(|data: &[u8]| {
    let Ok(map) = MapFile::read(Path::new("/etc/tessera/map"), data) else {
        return;
    };
    let first = String::from_utf8_lossy(data);
    let key = first.split_whitespace().next().unwrap_or_default();
    for (user, line) in map.get(key) {
        assert!(line >= 1, "lines count from 1");
        assert!(!user.is_empty());
    }
    let _ = map.get("");
});
