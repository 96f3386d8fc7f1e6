//! The mapfile source: the key template's values looked up in the file.

use std::path::PathBuf;

use super::context::MappingContext;
use super::expansion::expand;
use super::source_error::SourceError;
use super::trace::{Lookup, Verdict};
use crate::certificate::CertificateFields;
use crate::template::Template;

/// `mapfile` + `key`.
#[derive(Debug, Clone)]
pub(super) struct MapFileSource {
    /// The file (absolute).
    pub(super) path: PathBuf,
    /// The key template.
    pub(super) key: Template,
}

impl MapFileSource {
    /// The users every key maps to; a miss is "no match", never the key.
    pub(super) fn candidates(
        &self,
        fields: &CertificateFields,
        domain: Option<&str>,
        context: &MappingContext<'_>,
        lookups: &mut Vec<Lookup>,
    ) -> Result<Vec<String>, Verdict> {
        let keys = expand(&self.key, fields, domain)?;
        let loaded = context.mapfile(&self.path);
        let map = match loaded.as_ref() {
            Ok(map) => map,
            Err(error) => {
                return Err(Verdict::Error {
                    error: SourceError::MapFile(error.clone()),
                })
            }
        };
        let mut users = Vec::new();
        for key in keys {
            let found = map.get(&key);
            lookups.push(Lookup {
                source: format!("mapfile {}", self.path.display()),
                key: key.clone(),
                result: if found.is_empty() {
                    "miss".to_owned()
                } else {
                    found
                        .iter()
                        .map(|(user, line)| format!("{user} (line {line})"))
                        .collect::<Vec<_>>()
                        .join(", ")
                },
            });
            users.extend(found.iter().map(|(user, _)| (*user).to_owned()));
        }
        if users.is_empty() {
            return Err(Verdict::NoMatch {
                reason: "no key is in the mapfile".to_owned(),
            });
        }
        Ok(users)
    }
}
