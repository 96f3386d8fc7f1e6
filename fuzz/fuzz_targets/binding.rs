//! Session binding records as eventd reads them, the record handed between
//! PAM calls, and the logind session id found in a cgroup file.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use tessera_core::binding::{
    session_id_from_cgroup, validate_session_id, AuthRecord, SessionBinding,
};

fuzz_target!(|data: &[u8]| {
    if let Some(record) = AuthRecord::from_bytes(data) {
        assert_eq!(
            AuthRecord::from_bytes(&record.to_bytes()).as_ref(),
            Some(&record)
        );
    }
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new("/run/tessera/sessions/fuzz.toml");
    if let Ok(binding) = SessionBinding::parse(path, text) {
        // What the module writes for it reads back the same.
        let written = toml::to_string(&binding).unwrap();
        assert_eq!(SessionBinding::parse(path, &written).unwrap(), binding);
    }
    if let Some(id) = session_id_from_cgroup(text) {
        assert!(validate_session_id(&id).is_ok(), "{id:?}");
    }
});
