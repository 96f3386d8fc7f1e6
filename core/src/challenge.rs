//! The proof of possession: the token signs a fresh random challenge and the
//! signature is verified with the validated certificate's public key.

use const_oid::db::{rfc5912, rfc8410};
use const_oid::ObjectIdentifier;
use cryptoki::mechanism::eddsa::{EddsaParams, EddsaSignatureScheme};
use cryptoki::mechanism::Mechanism;
use der::asn1::UintRef;
use der::{Decode, Encode, Sequence};
use rustls_pki_types::SignatureVerificationAlgorithm;
use tessera_mappers::PublicKey;
use x509_cert::Certificate;

/// Challenge length in bytes; never less than 32.
pub const CHALLENGE_LEN: usize = 32;

/// A fresh challenge from the operating system's CSPRNG (never from the token).
#[derive(Debug)]
pub struct Challenge([u8; CHALLENGE_LEN]);

impl Challenge {
    /// Draws a new challenge.
    pub fn generate() -> Result<Self, getrandom::Error> {
        let mut bytes = [0u8; CHALLENGE_LEN];
        getrandom::fill(&mut bytes)?;
        Ok(Self(bytes))
    }

    /// The challenge bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

/// The certificate key types we can ask a token to sign with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyAlgorithm {
    /// RSA, signed with CKM_SHA256_RSA_PKCS.
    Rsa,
    /// ECDSA on P-256, host SHA-256 then CKM_ECDSA.
    EcdsaP256,
    /// ECDSA on P-384, host SHA-384 then CKM_ECDSA.
    EcdsaP384,
    /// Ed25519 with CKM_EDDSA.
    Ed25519,
}

/// Why the challenge step failed.
#[derive(Debug, thiserror::Error)]
pub enum ChallengeError {
    /// The certificate's key type is not one we sign with.
    #[error("unsupported public key algorithm {0}")]
    UnsupportedKey(String),
    /// The certificate could not be parsed.
    #[error("certificate is malformed: {0}")]
    Malformed(#[from] der::Error),
    /// The token returned a signature of an impossible length.
    #[error("token returned a {got}-byte ECDSA signature, expected {expected}")]
    BadSignatureLength {
        /// Length returned.
        got: usize,
        /// Length expected for the curve.
        expected: usize,
    },
    /// The signature does not verify with the certificate's public key.
    #[error("the token's signature does not match the certificate's public key")]
    Mismatch,
}

const SECP256R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
const SECP384R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");

impl KeyAlgorithm {
    /// The key algorithm of a DER certificate's SubjectPublicKeyInfo.
    pub fn of_certificate(der: &[u8]) -> Result<Self, ChallengeError> {
        let certificate = Certificate::from_der(der)?;
        let algorithm = &certificate
            .tbs_certificate
            .subject_public_key_info
            .algorithm;
        if algorithm.oid == rfc5912::RSA_ENCRYPTION {
            return Ok(KeyAlgorithm::Rsa);
        }
        if algorithm.oid == rfc8410::ID_ED_25519 {
            return Ok(KeyAlgorithm::Ed25519);
        }
        if algorithm.oid == rfc5912::ID_EC_PUBLIC_KEY {
            let curve = algorithm
                .parameters
                .as_ref()
                .map(|parameters| parameters.decode_as::<ObjectIdentifier>())
                .transpose()?;
            return match curve {
                Some(curve) if curve == SECP256R1 => Ok(KeyAlgorithm::EcdsaP256),
                Some(curve) if curve == SECP384R1 => Ok(KeyAlgorithm::EcdsaP384),
                Some(curve) => Err(ChallengeError::UnsupportedKey(format!("EC curve {curve}"))),
                None => Err(ChallengeError::UnsupportedKey(
                    "EC key without a named curve".into(),
                )),
            };
        }
        Err(ChallengeError::UnsupportedKey(algorithm.oid.to_string()))
    }

    /// The algorithm of a bare public key (a token key without a certificate).
    pub fn of_public_key(key: &PublicKey) -> Self {
        match key {
            PublicKey::Rsa { .. } => KeyAlgorithm::Rsa,
            PublicKey::P256(_) => KeyAlgorithm::EcdsaP256,
            PublicKey::P384(_) => KeyAlgorithm::EcdsaP384,
            PublicKey::Ed25519(_) => KeyAlgorithm::Ed25519,
        }
    }

    /// Verifies the token's `signature` over `challenge` with a bare public
    /// key (one listed in the user's authorized files), with ring's
    /// verifiers. ECDSA signatures are taken as PKCS#11's raw r‖s.
    pub fn verify_with_key(
        self,
        key: &PublicKey,
        challenge: &Challenge,
        signature: &[u8],
    ) -> Result<(), ChallengeError> {
        use ring::signature;
        let message = challenge.as_bytes();
        let verified = match (self, key) {
            (KeyAlgorithm::Rsa, PublicKey::Rsa { modulus, exponent }) => {
                signature::RsaPublicKeyComponents {
                    n: modulus,
                    e: exponent,
                }
                .verify(&signature::RSA_PKCS1_2048_8192_SHA256, message, signature)
            }
            (KeyAlgorithm::EcdsaP256, PublicKey::P256(point)) => {
                signature::UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point)
                    .verify(message, signature)
            }
            (KeyAlgorithm::EcdsaP384, PublicKey::P384(point)) => {
                signature::UnparsedPublicKey::new(&signature::ECDSA_P384_SHA384_FIXED, point)
                    .verify(message, signature)
            }
            (KeyAlgorithm::Ed25519, PublicKey::Ed25519(raw)) => {
                signature::UnparsedPublicKey::new(&signature::ED25519, raw)
                    .verify(message, signature)
            }
            _ => {
                return Err(ChallengeError::UnsupportedKey(format!(
                    "{} key with {self:?}",
                    key.kind()
                )))
            }
        };
        verified.map_err(|_| ChallengeError::Mismatch)
    }

    /// The PKCS#11 mechanism and the bytes to hand to C_Sign for `challenge`.
    pub fn signing_input(self, challenge: &Challenge) -> (Mechanism<'static>, Vec<u8>) {
        let message = challenge.as_bytes();
        match self {
            KeyAlgorithm::Rsa => (Mechanism::Sha256RsaPkcs, message.to_vec()),
            // Many tokens (SoftHSM among them) lack CKM_ECDSA_SHA256: hash here.
            KeyAlgorithm::EcdsaP256 => (
                Mechanism::Ecdsa,
                ring::digest::digest(&ring::digest::SHA256, message)
                    .as_ref()
                    .to_vec(),
            ),
            KeyAlgorithm::EcdsaP384 => (
                Mechanism::Ecdsa,
                ring::digest::digest(&ring::digest::SHA384, message)
                    .as_ref()
                    .to_vec(),
            ),
            KeyAlgorithm::Ed25519 => (
                Mechanism::Eddsa(EddsaParams::new(EddsaSignatureScheme::Ed25519)),
                message.to_vec(),
            ),
        }
    }

    fn verification_algorithm(self) -> &'static dyn SignatureVerificationAlgorithm {
        match self {
            KeyAlgorithm::Rsa => webpki::ring::RSA_PKCS1_2048_8192_SHA256,
            KeyAlgorithm::EcdsaP256 => webpki::ring::ECDSA_P256_SHA256,
            KeyAlgorithm::EcdsaP384 => webpki::ring::ECDSA_P384_SHA384,
            KeyAlgorithm::Ed25519 => webpki::ring::ED25519,
        }
    }

    /// Verifies the token's `signature` over `challenge` with the validated
    /// certificate's public key. ECDSA signatures arrive from PKCS#11 as raw
    /// r‖s and are converted to DER first.
    pub fn verify(
        self,
        certificate: &webpki::EndEntityCert<'_>,
        challenge: &Challenge,
        signature: &[u8],
    ) -> Result<(), ChallengeError> {
        let der_signature;
        let signature = match self {
            KeyAlgorithm::EcdsaP256 => {
                der_signature = ecdsa_raw_to_der(signature, 32)?;
                der_signature.as_slice()
            }
            KeyAlgorithm::EcdsaP384 => {
                der_signature = ecdsa_raw_to_der(signature, 48)?;
                der_signature.as_slice()
            }
            KeyAlgorithm::Rsa | KeyAlgorithm::Ed25519 => signature,
        };
        certificate
            .verify_signature(
                self.verification_algorithm(),
                challenge.as_bytes(),
                signature,
            )
            .map_err(|_| ChallengeError::Mismatch)
    }
}

#[derive(Sequence)]
struct EcdsaSignature<'a> {
    r: UintRef<'a>,
    s: UintRef<'a>,
}

/// PKCS#11 returns ECDSA signatures as r‖s, each `field_len` bytes; webpki wants DER.
fn ecdsa_raw_to_der(raw: &[u8], field_len: usize) -> Result<Vec<u8>, ChallengeError> {
    if raw.len() != 2 * field_len {
        return Err(ChallengeError::BadSignatureLength {
            got: raw.len(),
            expected: 2 * field_len,
        });
    }
    let (r, s) = raw.split_at(field_len);
    let signature = EcdsaSignature {
        r: UintRef::new(r)?,
        s: UintRef::new(s)?,
    };
    Ok(signature.to_der()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_are_fresh() {
        let first = Challenge::generate().unwrap();
        let second = Challenge::generate().unwrap();
        assert_ne!(first.as_bytes(), second.as_bytes());
        assert!(first.as_bytes().len() >= 32);
    }

    #[test]
    fn raw_ecdsa_becomes_der_with_sign_padding_and_stripped_zeros() {
        let mut raw = vec![0u8; 64];
        raw[0] = 0x80; // high bit set: DER needs a leading zero
        raw[63] = 0x01; // s = 1 after stripping leading zeros
        let der = ecdsa_raw_to_der(&raw, 32).unwrap();
        assert_eq!(&der[..4], &[0x30, 0x26, 0x02, 0x21]);
        assert_eq!(der[4], 0x00);
        assert_eq!(&der[der.len() - 3..], &[0x02, 0x01, 0x01]);
    }

    #[test]
    fn raw_key_verification_accepts_the_right_key_only() {
        use ring::signature::{Ed25519KeyPair, KeyPair};
        let rng = ring::rand::SystemRandom::new();
        let document = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        let pair = Ed25519KeyPair::from_pkcs8(document.as_ref()).unwrap();
        let key = PublicKey::ed25519(pair.public_key().as_ref()).unwrap();
        let challenge = Challenge::generate().unwrap();
        let signature = pair.sign(challenge.as_bytes());
        let algorithm = KeyAlgorithm::of_public_key(&key);
        assert!(algorithm
            .verify_with_key(&key, &challenge, signature.as_ref())
            .is_ok());
        let other = Challenge::generate().unwrap();
        assert!(matches!(
            algorithm.verify_with_key(&key, &other, signature.as_ref()),
            Err(ChallengeError::Mismatch)
        ));
    }

    #[test]
    fn wrong_length_ecdsa_signature_is_refused() {
        assert!(matches!(
            ecdsa_raw_to_der(&[1u8; 63], 32),
            Err(ChallengeError::BadSignatureLength {
                got: 63,
                expected: 64
            })
        ));
    }
}
