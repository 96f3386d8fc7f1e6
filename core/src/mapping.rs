//! The environment the mapping rules run in: NSS, trusted files, the
//! directory and the mapping cache, as the login flow and `tessera map` use it.

use std::path::Path;

use tessera_mappers::{
    map_certificate, Account, Accounts, Mapping, MappingContext, MappingInput, OpenError,
};

use crate::config::Config;
use crate::filetrust;

/// Accounts from NSS (`getpwnam_r`), by name only: never by GECOS, which
/// users can edit.
#[derive(Debug, Clone, Copy, Default)]
pub struct NssAccounts;

impl Accounts for NssAccounts {
    fn lookup(&self, name: &str) -> std::io::Result<Option<Account>> {
        nix::unistd::User::from_name(name)
            .map(|found| {
                found.map(|user| Account {
                    name: user.name,
                    uid: user.uid.as_raw(),
                    home: user.dir,
                })
            })
            .map_err(std::io::Error::from)
    }
}

/// Mapfiles must pass the same trust checks as the configuration; the
/// error names the file.
fn open_trusted(path: &Path) -> Result<std::fs::File, OpenError> {
    Ok(filetrust::open_trusted_file(path)?)
}

/// Runs `body` with a mapping context for `config` at Unix time `now`
/// (`None`: no clock, so the mapping cache is neither read nor written).
/// Mapfiles are loaded once per context, however many certificates it maps.
pub fn with_context<R>(
    config: &Config,
    now: Option<u64>,
    body: impl FnOnce(&MappingContext<'_>) -> R,
) -> R {
    let accounts = NssAccounts;
    // The cache is written by root only; screen lockers run as the user.
    let privileged = nix::unistd::geteuid().is_root();
    let context = MappingContext::new(
        &accounts,
        &open_trusted,
        config.ldap.as_ref(),
        now.and(config.mapping_cache.as_ref()),
        privileged,
        now.unwrap_or_default(),
    );
    body(&context)
}

/// Maps one certificate or key with the configured rules, logging the
/// explanation at debug level.
pub fn map(config: &Config, context: &MappingContext<'_>, input: &MappingInput<'_>) -> Mapping {
    let mapping = map_certificate(&config.rules, input, context);
    let what = input
        .certificate
        .map(|fields| fields.subject.clone())
        .or_else(|| {
            input
                .key
                .map(|key| format!("{} key {}", key.kind(), key.fingerprint()))
        })
        .unwrap_or_default();
    for step in &mapping.trace {
        tracing::debug!(id = "auth.mapping.step", subject = %what, "mapping: {step}");
    }
    mapping
}
