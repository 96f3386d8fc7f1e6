//! `[session]`: where pam_tessera writes the session bindings eventd reads.

use std::path::PathBuf;

use serde::Deserialize;
use toml::Spanned;

use super::error::{ConfigError, ConfigText};
use crate::binding::SESSIONS_DIR;
use crate::policy::SessionPolicy;

/// `[session]` as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SessionSection {
    bindings_dir: Option<PathBuf>,
}

/// The checked section (absent: the defaults).
pub(super) fn session_policy(
    section: Option<&Spanned<SessionSection>>,
    config: ConfigText<'_>,
) -> Result<SessionPolicy, ConfigError> {
    let bindings_dir = section
        .and_then(|section| section.get_ref().bindings_dir.clone())
        .unwrap_or_else(|| PathBuf::from(SESSIONS_DIR));
    if !bindings_dir.is_absolute() {
        // At the table: the key's own span is not kept.
        return Err(config.error(
            section.map(Spanned::span),
            format!("session.bindings_dir: path {bindings_dir:?} must be absolute"),
        ));
    }
    Ok(SessionPolicy { bindings_dir })
}
