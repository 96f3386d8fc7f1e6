//! The authorized-files source: the token's key, looked for in the requested
//! user's `authorized_keys` and `authorized_certificates`.

use super::context::{MappingContext, MappingInput};
use super::trace::{Lookup, Verdict};
use crate::authorized::{read_authorized, FileOutcome};

/// The requested user, when one of their files lists the key.
pub(super) fn candidates(
    input: &MappingInput<'_>,
    context: &MappingContext<'_>,
    lookups: &mut Vec<Lookup>,
) -> Result<Vec<String>, Verdict> {
    let Some(user) = input.requested_user else {
        return Err(Verdict::NotApplicable {
            reason: "authorized files need the user name (none was given)".to_owned(),
        });
    };
    let Some(key) = input.key else {
        return Err(Verdict::NotApplicable {
            reason: "no public key of a supported type".to_owned(),
        });
    };
    let account = match context.accounts.lookup(user) {
        Ok(Some(account)) => account,
        Ok(None) => {
            return Err(Verdict::NoMatch {
                reason: format!("no user {user} in NSS"),
            })
        }
        Err(error) => {
            return Err(Verdict::NoMatch {
                reason: format!("user look-up failed: {error}"),
            })
        }
    };
    let mut matched = false;
    for outcome in read_authorized(&account) {
        let (path, result) = match outcome {
            FileOutcome::Absent(path) => (path, "absent".to_owned()),
            FileOutcome::Refused(path, reason) => (path, format!("refused: {reason}")),
            FileOutcome::Read(path, keys) => {
                let hit = keys.iter().find(|listed| listed.key == *key);
                matched |= hit.is_some();
                let result = match hit {
                    Some(listed) => format!("listed at line {}", listed.line),
                    None => format!("not among {} key(s)", keys.len()),
                };
                (path, result)
            }
        };
        lookups.push(Lookup {
            source: path.display().to_string(),
            key: format!("{} {}", key.kind(), key.fingerprint()),
            result,
        });
    }
    if matched {
        Ok(vec![user.to_owned()])
    } else {
        Err(Verdict::NoMatch {
            reason: format!("the key is not in {user}'s authorized files"),
        })
    }
}
