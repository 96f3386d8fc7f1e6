//! The outcome types both sides of the helper protocol name: classes of
//! failure, the card requirement that turns them into PAM codes, and the
//! record a successful authentication leaves for the session calls.

use serde::{Deserialize, Serialize};

/// Classes of failure; the PAM module maps each to one PAM return code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FailureKind {
    /// The PKCS#11 module file does not exist or cannot be loaded.
    NoModule,
    /// No token is present.
    NoToken,
    /// Tokens are present, but no valid certificate on them maps to the user.
    NoMatchingCertificate,
    /// A mapping source (the directory) is unreachable and nothing is cached.
    MappingUnavailable,
    /// The user's certificate is expired, untrusted or otherwise rejected.
    CertificateRejected,
    /// The PIN was empty or wrong.
    WrongPin,
    /// The PIN is locked on the token.
    PinLocked,
    /// Login succeeded but the proof of possession failed.
    ProofFailed,
    /// The token disappeared or failed before the PIN was asked, or did
    /// not answer within the helper's deadline.
    TokenUnavailable,
    /// The conversation with the user failed.
    Conversation,
    /// The configuration or the trust anchors are unusable.
    Config,
    /// Anything else that should not happen.
    Internal,
    /// A new PIN was refused: the two entries differ, its length is outside
    /// the token's limits, or the token would not set it.
    NewPinRejected,
    /// The answer to "choose a certificate" was not one of the choices.
    InvalidChoice,
    /// `use_first_pass` without a password from an earlier module.
    MissingAuthtok,
}

/// What happens when no usable card is present.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CardRequirement {
    /// No card, or no certificate for the user: PAM_AUTHINFO_UNAVAIL, so the
    /// stack may fall back to a password.
    Optional,
    /// No card: PAM_AUTH_ERR; no fallback is possible.
    Required,
    /// The module does not take part for this service (PAM_IGNORE).
    Disabled,
}

/// The token a session was opened with, as eventd matches it on removal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BoundToken {
    /// Token label.
    pub label: String,
    /// Token manufacturer.
    pub manufacturer: String,
    /// Token model.
    pub model: String,
    /// Token serial number.
    pub serial: String,
    /// Slot description; for PC/SC-backed modules, the reader name.
    pub slot_description: String,
}

/// What `pam_sm_authenticate` hands to the later PAM calls of the same
/// transaction (through pam_set_data): enough to write the session binding
/// and to re-check the certificate's validity in `pam_sm_acct_mgmt`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthRecord {
    /// The authenticated user.
    pub user: String,
    /// The token that signed the challenge.
    pub token: BoundToken,
    /// SHA-256 of the certificate.
    pub certificate_sha256: String,
    /// notBefore, seconds since the epoch.
    pub not_before: u64,
    /// notAfter, seconds since the epoch.
    pub not_after: u64,
}

/// What `pam_sm_acct_mgmt` decides for a user this module authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccountCheck {
    /// Same user, certificate within its validity period: PAM_SUCCESS.
    Valid,
    /// PAM_USER is no longer the authenticated user: PAM_PERM_DENIED.
    UserChanged,
    /// The certificate is outside its validity period at `now`: PAM_PERM_DENIED.
    CertificateNotValid,
}

impl AuthRecord {
    /// Re-checks the account for `current_user` (PAM_USER now) at `now`,
    /// seconds since the epoch. Needs no token, file or parser: it runs in
    /// the PAM module.
    pub fn recheck(&self, current_user: Option<&str>, now: u64) -> AccountCheck {
        if current_user != Some(self.user.as_str()) {
            AccountCheck::UserChanged
        } else if now < self.not_before || now > self.not_after {
            AccountCheck::CertificateNotValid
        } else {
            AccountCheck::Valid
        }
    }

    /// Serialised form for pam_set_data.
    pub fn to_bytes(&self) -> Vec<u8> {
        to_transaction_bytes(self)
    }

    /// Parses what [`AuthRecord::to_bytes`] produced.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        from_transaction_bytes(bytes)
    }
}

/// What `pam_sm_open_session` had the helper bind, so that
/// `pam_sm_close_session` of the same transaction removes that record and
/// nothing else.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BoundSession {
    /// The logind session id (XDG_SESSION_ID).
    pub session_id: String,
    /// The PID of the PAM application that opened it.
    pub host_pid: u32,
}

impl BoundSession {
    /// Serialised form for pam_set_data.
    pub fn to_bytes(&self) -> Vec<u8> {
        to_transaction_bytes(self)
    }

    /// Parses what [`BoundSession::to_bytes`] produced.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        from_transaction_bytes(bytes)
    }
}

fn to_transaction_bytes<T: Serialize>(value: &T) -> Vec<u8> {
    // Only a writer's failure could fail this, and a Vec's does not; an
    // empty result would be refused by the reader anyway.
    postcard::to_allocvec(value).unwrap_or_default()
}

/// The whole of `bytes` as one `T`; anything else (garbage, trailing
/// bytes) is `None`.
fn from_transaction_bytes<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Option<T> {
    match postcard::take_from_bytes(bytes) {
        Ok((value, [])) => Some(value),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_records_round_trip_and_garbage_is_refused() {
        let record = AuthRecord {
            user: "alice".into(),
            token: BoundToken {
                label: "a".into(),
                manufacturer: "m".into(),
                model: "x".into(),
                serial: "1".into(),
                slot_description: "r".into(),
            },
            certificate_sha256: "00".into(),
            not_before: 1,
            not_after: 2,
        };
        let bytes = record.to_bytes();
        assert_eq!(AuthRecord::from_bytes(&bytes), Some(record));
        assert_eq!(AuthRecord::from_bytes(b"garbage"), None);
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(AuthRecord::from_bytes(&longer), None, "trailing bytes");
    }

    #[test]
    fn the_account_holds_while_the_user_and_the_certificate_validity_do() {
        let record = AuthRecord {
            user: "alice".into(),
            token: BoundToken {
                label: "a".into(),
                manufacturer: "m".into(),
                model: "x".into(),
                serial: "1".into(),
                slot_description: "r".into(),
            },
            certificate_sha256: "00".into(),
            not_before: 1_000,
            not_after: 2_000,
        };
        let check = |user, now| record.recheck(user, now);
        assert_eq!(check(Some("alice"), 1_000), AccountCheck::Valid);
        assert_eq!(check(Some("alice"), 2_000), AccountCheck::Valid);
        assert_eq!(
            check(Some("alice"), 2_001),
            AccountCheck::CertificateNotValid
        );
        assert_eq!(check(Some("alice"), 999), AccountCheck::CertificateNotValid);
        assert_eq!(check(Some("root"), 1_500), AccountCheck::UserChanged);
        assert_eq!(check(None, 1_500), AccountCheck::UserChanged);
    }

    #[test]
    fn bound_sessions_round_trip_and_garbage_is_refused() {
        let bound = BoundSession {
            session_id: "c7".into(),
            host_pid: 4242,
        };
        let bytes = bound.to_bytes();
        assert_eq!(BoundSession::from_bytes(&bytes), Some(bound));
        assert_eq!(BoundSession::from_bytes(b""), None);
        assert_eq!(
            BoundSession::from_bytes(b"c7\n4242"),
            None,
            "the old text form"
        );
    }
}
