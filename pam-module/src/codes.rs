//! PAM return codes for each class of failure (docs/design.md, "PAM
//! return codes"): never PAM_SUCCESS or PAM_IGNORE on an error path.

use pamsm::PamError;
use tessera_ipc::client::HelperError;
use tessera_ipc::{CardRequirement, FailureKind};

/// The PAM code for each class of failure (docs/design.md, "PAM return codes").
/// Never PAM_SUCCESS or PAM_IGNORE.
pub(crate) fn failure_code(kind: FailureKind, card: CardRequirement) -> PamError {
    match kind {
        FailureKind::NoModule
        | FailureKind::NoToken
        | FailureKind::NoMatchingCertificate
        | FailureKind::MappingUnavailable
        | FailureKind::TokenUnavailable => match card {
            // No fallback to a password where the card is required.
            CardRequirement::Required => PamError::AUTH_ERR,
            CardRequirement::Optional | CardRequirement::Disabled => PamError::AUTHINFO_UNAVAIL,
        },
        FailureKind::CertificateRejected
        | FailureKind::WrongPin
        | FailureKind::InvalidChoice
        | FailureKind::MissingAuthtok
        | FailureKind::ProofFailed
        | FailureKind::NewPinRejected => PamError::AUTH_ERR,
        FailureKind::PinLocked => PamError::MAXTRIES,
        FailureKind::Conversation => PamError::CONV_ERR,
        FailureKind::Config | FailureKind::Internal => PamError::SERVICE_ERR,
    }
}

/// The PAM code of a failed PIN change (pam_sm_chauthtok); never
/// PAM_SUCCESS or PAM_IGNORE.
pub(crate) fn chauthtok_failure_code(kind: FailureKind) -> PamError {
    match kind {
        FailureKind::NoModule
        | FailureKind::NoToken
        | FailureKind::NoMatchingCertificate
        | FailureKind::MappingUnavailable
        | FailureKind::TokenUnavailable => PamError::AUTHINFO_UNAVAIL,
        FailureKind::WrongPin | FailureKind::InvalidChoice | FailureKind::MissingAuthtok => {
            PamError::AUTH_ERR
        }
        FailureKind::PinLocked => PamError::MAXTRIES,
        FailureKind::NewPinRejected
        | FailureKind::CertificateRejected
        | FailureKind::ProofFailed => PamError::AUTHTOK_ERR,
        FailureKind::Conversation => PamError::CONV_ERR,
        FailureKind::Config | FailureKind::Internal => PamError::SERVICE_ERR,
    }
}

/// The class of failure of a helper that gave no verdict. One that could
/// not be started (missing, or not root's) is an installation fault; one
/// that died, hung or broke the protocol is a token that did not answer.
pub(crate) fn helper_failure_kind(error: &HelperError) -> FailureKind {
    match error {
        HelperError::Untrusted(_) | HelperError::Spawn(_) | HelperError::Version { .. } => {
            FailureKind::Internal
        }
        HelperError::Died | HelperError::TimedOut(_) | HelperError::Protocol(_) => {
            FailureKind::TokenUnavailable
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const KINDS: [FailureKind; 15] = [
        FailureKind::NoModule,
        FailureKind::NoToken,
        FailureKind::NoMatchingCertificate,
        FailureKind::MappingUnavailable,
        FailureKind::CertificateRejected,
        FailureKind::WrongPin,
        FailureKind::PinLocked,
        FailureKind::ProofFailed,
        FailureKind::TokenUnavailable,
        FailureKind::Conversation,
        FailureKind::Config,
        FailureKind::Internal,
        FailureKind::NewPinRejected,
        FailureKind::InvalidChoice,
        FailureKind::MissingAuthtok,
    ];

    #[test]
    fn no_failure_maps_to_success_or_ignore() {
        for kind in KINDS {
            let code = chauthtok_failure_code(kind);
            assert!(
                code != PamError::SUCCESS && code != PamError::IGNORE,
                "{kind:?}"
            );
        }
        for card in [
            CardRequirement::Optional,
            CardRequirement::Required,
            CardRequirement::Disabled,
        ] {
            for kind in KINDS {
                let code = failure_code(kind, card);
                assert!(
                    code != PamError::SUCCESS && code != PamError::IGNORE,
                    "{kind:?} with {card:?} -> {code:?}"
                );
            }
        }
    }

    #[test]
    fn a_helper_that_died_hung_or_misspoke_is_a_token_that_did_not_answer() {
        for error in [
            HelperError::Died,
            HelperError::TimedOut(Duration::from_secs(30)),
            HelperError::Protocol("junk".into()),
        ] {
            let kind = helper_failure_kind(&error);
            assert_eq!(kind, FailureKind::TokenUnavailable, "{error}");
            assert_eq!(
                failure_code(kind, CardRequirement::Optional),
                PamError::AUTHINFO_UNAVAIL
            );
        }
        let missing = HelperError::Spawn(nix::errno::Errno::ENOENT);
        assert_eq!(
            failure_code(helper_failure_kind(&missing), CardRequirement::Optional),
            PamError::SERVICE_ERR
        );
    }

    #[test]
    fn a_required_card_turns_every_unavailable_into_auth_err() {
        for kind in [
            FailureKind::NoModule,
            FailureKind::NoToken,
            FailureKind::NoMatchingCertificate,
            FailureKind::MappingUnavailable,
            FailureKind::TokenUnavailable,
        ] {
            assert_eq!(
                failure_code(kind, CardRequirement::Required),
                PamError::AUTH_ERR
            );
            assert_eq!(
                failure_code(kind, CardRequirement::Optional),
                PamError::AUTHINFO_UNAVAIL
            );
        }
    }
}
