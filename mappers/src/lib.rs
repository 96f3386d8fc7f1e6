//! Certificate-to-user mapping for tessera.
//!
//! Pure code: [`CertificateFields`] extracts what rules can look at from a DER
//! certificate, [`Template`] expands user-name templates such as `{cn}`, and
//! [`Rule`]/[`map_certificate`] try the configured rules in order and explain
//! what each one saw.

mod certificate;
mod rule;
mod template;
mod username;

pub use certificate::{CertificateError, CertificateFields, MAX_CERTIFICATE_SIZE};
pub use rule::{map_certificate, Mapping, Rule, RuleConfig, RuleError, RuleTrace, RuleVerdict};
pub use template::{Field, Template, TemplateError};
pub use username::{validate_username, UsernameError};
