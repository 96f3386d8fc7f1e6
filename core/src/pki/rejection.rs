//! Why a certificate was rejected: the verdict of every validation step.

/// Why a certificate was rejected, in words for the log and the user.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// Not a parseable certificate.
    #[error("certificate is malformed: {0}")]
    Malformed(String),
    /// Past notAfter.
    #[error("certificate expired on {0}")]
    Expired(String),
    /// Before notBefore.
    #[error("certificate is not valid before {0}")]
    NotYetValid(String),
    /// A CA certificate of the path is outside its validity period.
    #[error("an issuing CA certificate is not valid on this date (valid until or from {0})")]
    CaNotValid(String),
    /// No path to a configured anchor.
    #[error("issuer not trusted")]
    UntrustedIssuer,
    /// EKU present but without an allowed purpose.
    #[error(
        "certificate is not for client authentication or smart-card logon (extended key usage)"
    )]
    WrongExtendedKeyUsage,
    /// `require_eku` and no EKU extension.
    #[error("certificate has no extended key usage, and pki.require_eku is set")]
    MissingExtendedKeyUsage,
    /// keyUsage present without digitalSignature.
    #[error("certificate key usage does not allow digital signatures")]
    NoDigitalSignatureUsage,
    /// A signature in the chain does not verify: typically a rogue CA that
    /// copied the name of a trusted one.
    #[error("issuer not trusted (a signature in the chain does not verify against the trusted CA of that name)")]
    BadSignature,
    /// A signature algorithm outside `pki.signature_algorithms`.
    #[error("certificate chain uses a signature algorithm that is not allowed (pki.signature_algorithms)")]
    DisallowedAlgorithm,
    /// More intermediates than `pki.max_chain_depth`.
    #[error("certificate chain has {depth} intermediate CA certificates; at most {max} are allowed (pki.max_chain_depth)")]
    ChainTooLong {
        /// Intermediates in the path.
        depth: usize,
        /// The configured maximum.
        max: usize,
    },
    /// Revoked according to a CRL or an OCSP responder.
    #[error("{who} revoked ({reason}) on {since}; source: {origin}")]
    Revoked {
        /// "certificate" or the issuing CA.
        who: String,
        /// RFC 5280 reason name.
        reason: String,
        /// Revocation time.
        since: String,
        /// The CRL or responder that said so.
        origin: String,
    },
    /// No source could tell, and policy says deny.
    #[error("revocation status of the {who} is unknown: {why}")]
    RevocationUnknown {
        /// "certificate" or the issuing CA.
        who: String,
        /// What each source said.
        why: String,
    },
    /// A source answered with something that must not be believed, or
    /// with "unknown".
    #[error("revocation check failed: {0}")]
    RevocationFailed(String),
    /// Anything else webpki refuses, with its own words.
    #[error("certificate rejected: {0}")]
    Other(String),
}
