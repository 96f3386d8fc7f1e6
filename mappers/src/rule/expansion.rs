//! Template expansion as every certificate source uses it: a certificate is
//! needed, and a missing field makes the rule not applicable.

use super::context::MappingInput;
use super::trace::Verdict;
use crate::certificate::CertificateFields;
use crate::template::Template;

/// The input's certificate; a bare key meets only authorized-files rules.
pub(super) fn certificate<'a>(input: &MappingInput<'a>) -> Result<&'a CertificateFields, Verdict> {
    input.certificate.ok_or_else(|| Verdict::NotApplicable {
        reason: "a key without a certificate; only authorized_files rules apply".to_owned(),
    })
}

/// Every value of `template` over `fields`, address fields restricted to
/// `domain`.
pub(super) fn expand(
    template: &Template,
    fields: &CertificateFields,
    domain: Option<&str>,
) -> Result<Vec<String>, Verdict> {
    template.expand(fields, domain).map_err(|missing| {
        let why = match domain {
            Some(domain) if missing.is_address() => format!(" in domain {domain}"),
            _ => String::new(),
        };
        Verdict::NotApplicable {
            reason: format!("the certificate has no {missing}{why}"),
        }
    })
}
