//! The names of extended key usages and keyUsage bits that conditions and
//! SSSD matchrules accept.

use const_oid::ObjectIdentifier;

use super::error::ConditionError;
use crate::certificate::KEY_USAGE_NAMES;

/// EKU names accepted in place of their OIDs; several name one OID.
const EKU_NAMES: &[(&str, &str)] = &[
    ("clientAuth", "1.3.6.1.5.5.7.3.2"),
    ("serverAuth", "1.3.6.1.5.5.7.3.1"),
    ("codeSigning", "1.3.6.1.5.5.7.3.3"),
    ("emailProtection", "1.3.6.1.5.5.7.3.4"),
    ("timeStamping", "1.3.6.1.5.5.7.3.8"),
    ("OCSPSigning", "1.3.6.1.5.5.7.3.9"),
    ("msScLogin", "1.3.6.1.4.1.311.20.2.2"),
    ("smartcardLogon", "1.3.6.1.4.1.311.20.2.2"),
    ("pkinit", "1.3.6.1.5.2.3.4"),
    ("KPClientAuth", "1.3.6.1.5.2.3.4"),
    ("pkinitKDC", "1.3.6.1.5.2.3.5"),
];

/// The OID of an EKU given by name or dotted OID.
pub(super) fn eku_oid(key: &'static str, name: &str) -> Result<ObjectIdentifier, ConditionError> {
    let dotted = EKU_NAMES
        .iter()
        .find(|(known, _)| known.eq_ignore_ascii_case(name))
        .map(|(_, oid)| *oid)
        .unwrap_or(name);
    crate::oid::parse_oid(dotted).ok_or_else(|| ConditionError::Unknown {
        key,
        value: name.to_owned(),
        known: format!(
            "{} or a dotted OID",
            EKU_NAMES
                .iter()
                .map(|(n, _)| *n)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    })
}

/// An EKU's name if it has one, else its dotted OID.
pub(super) fn oid_name(oid: &ObjectIdentifier) -> String {
    let dotted = oid.to_string();
    EKU_NAMES
        .iter()
        .find(|(_, known)| *known == dotted)
        .map(|(name, _)| (*name).to_owned())
        .unwrap_or(dotted)
}

/// The canonical name of a keyUsage bit, matched case-insensitively.
pub(super) fn key_usage_name(
    key: &'static str,
    name: &str,
) -> Result<&'static str, ConditionError> {
    KEY_USAGE_NAMES
        .iter()
        .find(|known| known.eq_ignore_ascii_case(name))
        .copied()
        .ok_or_else(|| ConditionError::Unknown {
            key,
            value: name.to_owned(),
            known: KEY_USAGE_NAMES.join(", "),
        })
}
