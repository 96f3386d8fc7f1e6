//! Certificate-to-user mapping for tessera.
//!
//! [`CertificateFields`] extracts what rules can look at from a DER
//! certificate; [`Rule`]s combine conditions (issuer, subject, EKU, keyUsage,
//! SAN, policies, token, SSSD matchrules) with one source of users (a
//! [`Template`], a [`MapFile`], an LDAP search, the user's authorized files);
//! [`map_certificate`] tries them in order and explains every decision.
//! Everything is pure apart from the LDAP, NSS, file and cache look-ups that
//! the caller hands in through [`MappingContext`].

mod authorized;
mod cache;
mod certificate;
mod conditions;
mod dn;
mod ldap;
mod mapfile;
mod oid;
mod public_key;
mod rule;
mod template;
mod username;

pub use authorized::{
    parse_authorized_keys, read_authorized, Account, AuthorizedFileError, AuthorizedKey,
    FileOutcome, AUTHORIZED_FILES,
};
pub use cache::{CacheError, CacheLookup, MappingCache};
pub use certificate::{
    certificate_der, CertificateError, CertificateFields, KEY_USAGE_NAMES, MAX_CERTIFICATE_SIZE,
    SAN_KINDS,
};
pub use conditions::{Check, ConditionError, MatchRule, TokenInfo};
pub use dn::{Dn, DnError, DnStyle};
pub use ldap::{
    FoundEntry, LdapConfig, LdapConfigError, LdapDirectory, PasswordFileError, SearchAnswer,
    SearchError, ServerError, ServerFailure, LDAP_CLEARTEXT_KEY,
};
pub use mapfile::{MapFile, MapFileError, MAX_LINE_LEN};
pub use oid::parse_oid;
pub use public_key::{KeyError, PublicKey};
pub use rule::{
    map_certificate, Accounts, CacheFallback, Lookup, Mapping, MappingContext, MappingInput,
    OpenError, OpenTrusted, Outcome, Refusal, RefusalReason, Rule, RuleConfig, RuleError,
    RuleTrace, SourceError, TrustBasis, Verdict,
};
pub use template::{escape_filter_value, Template, TemplateError};
pub use username::{validate_username, UsernameError};

/// Deterministic pseudo-random inputs for the parsers' never-panic tests.
#[cfg(test)]
mod fuzz {
    /// `count` strings of up to 63 characters from `alphabet`.
    pub fn strings(seed: u64, count: usize, alphabet: &[char]) -> Vec<String> {
        let mut state = seed;
        let mut next = move || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            state >> 33
        };
        (0..count)
            .map(|_| {
                let length = (next() % 64) as usize;
                (0..length)
                    .map(|_| alphabet[next() as usize % alphabet.len()])
                    .collect()
            })
            .collect()
    }
}
