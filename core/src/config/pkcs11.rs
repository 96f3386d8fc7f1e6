//! `[pkcs11]`: which module to load, which tokens to use, and the whole
//! environment of the helper that loads it.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;
use toml::Spanned;

use super::error::{ConfigError, ConfigText};
use crate::pkcs11_uri::TokenFilter;

/// `[pkcs11]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Pkcs11Section {
    module: Option<Spanned<PathBuf>>,
    token: Option<Spanned<String>>,
    environment: Option<Spanned<BTreeMap<String, String>>>,
}

/// The module and the helper's environment, checked.
pub(super) struct Pkcs11Module {
    pub(super) path: PathBuf,
    pub(super) environment: BTreeMap<String, String>,
}

/// p11-kit's proxy module: every module the system registered, no config needed.
/// Packagers can point elsewhere at build time with `TESSERA_DEFAULT_PKCS11_MODULE`.
pub fn default_pkcs11_module() -> PathBuf {
    if let Some(path) = option_env!("TESSERA_DEFAULT_PKCS11_MODULE") {
        return PathBuf::from(path);
    }
    let multiarch = format!(
        "/usr/lib/{}-linux-gnu/p11-kit-proxy.so",
        std::env::consts::ARCH
    );
    [
        multiarch.as_str(),
        "/usr/lib64/p11-kit-proxy.so",
        "/usr/lib/p11-kit-proxy.so",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|candidate| candidate.exists())
    .unwrap_or_else(|| PathBuf::from(multiarch))
}

impl Pkcs11Section {
    /// Checks the environment's names and values and the module path.
    pub(super) fn module(&self, config: ConfigText<'_>) -> Result<Pkcs11Module, ConfigError> {
        let environment = match &self.environment {
            None => BTreeMap::new(),
            Some(environment) => {
                for (name, value) in environment.get_ref() {
                    let bad_name = name.is_empty()
                        || !name.chars().all(|c| c == '_' || c.is_ascii_alphanumeric())
                        || name.starts_with(|c: char| c.is_ascii_digit());
                    if bad_name {
                        return Err(config.error(
                            Some(environment.span()),
                            format!("pkcs11.environment: {name:?} is not a variable name (letters, digits and _)"),
                        ));
                    }
                    if value.contains('\0') {
                        return Err(config.error(
                            Some(environment.span()),
                            format!(
                                "pkcs11.environment.{name}: the value contains a NUL character"
                            ),
                        ));
                    }
                }
                environment.get_ref().clone()
            }
        };
        let path = match &self.module {
            Some(module) => config.absolute_path(module, "pkcs11.module")?,
            None => default_pkcs11_module(),
        };
        Ok(Pkcs11Module { path, environment })
    }

    /// The `token` URI, parsed.
    pub(super) fn token_filter(
        &self,
        config: ConfigText<'_>,
    ) -> Result<Option<TokenFilter>, ConfigError> {
        self.token
            .as_ref()
            .map(|uri| {
                TokenFilter::parse(uri.get_ref()).map_err(|error| {
                    config.error(Some(uri.span()), format!("pkcs11.token: {error}"))
                })
            })
            .transpose()
    }
}
