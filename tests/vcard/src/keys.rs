//! Key material of the card's slots: private keys loaded from PKCS#8 files,
//! certificates from PEM or DER files, and the raw operations PIV's
//! GENERAL AUTHENTICATE performs with them.

use std::fmt;
use std::path::Path;

use ecdsa::signature::hazmat::PrehashSigner;
use pkcs8::der::Decode;
use pkcs8::{DecodePrivateKey, ObjectIdentifier, PrivateKeyInfo};
use rand_core::OsRng;
use rsa::traits::PublicKeyParts;
use rsa::{BigUint, RsaPrivateKey};

const RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const PRIME256V1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
const SECP384R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");

/// Error while loading key or certificate files.
#[derive(Debug)]
pub struct LoadError(String);

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for LoadError {}

fn load_err(path: &Path, what: impl fmt::Display) -> LoadError {
    LoadError(format!("{}: {what}", path.display()))
}

/// A private key held in a slot.
pub enum SlotKey {
    /// RSA with a 1024-, 2048- or 3072-bit modulus.
    Rsa(Box<RsaPrivateKey>),
    /// ECDSA on NIST P-256.
    P256(p256::ecdsa::SigningKey),
    /// ECDSA on NIST P-384.
    P384(p384::ecdsa::SigningKey),
}

// Private key material stays out of logs: Debug names only the algorithm.
impl fmt::Debug for SlotKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SlotKey({})", self.describe())
    }
}

/// Why GENERAL AUTHENTICATE could not compute a result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OperationError {
    /// The algorithm byte does not match the key in the slot.
    WrongAlgorithm,
    /// The input block has the wrong size or value for the key.
    BadInput,
}

impl SlotKey {
    /// Loads a PKCS#8 private key, PEM (`PRIVATE KEY`) or DER.
    pub fn load(path: &Path) -> Result<SlotKey, LoadError> {
        let bytes = std::fs::read(path).map_err(|e| load_err(path, e))?;
        let der = match pem_block(&bytes) {
            Some(block) => {
                let (label, der) = pkcs8::der::pem::decode_vec(block)
                    .map_err(|e| load_err(path, format!("bad PEM: {e}")))?;
                if label != "PRIVATE KEY" {
                    return Err(load_err(
                        path,
                        format!(
                            "PEM label {label:?} is not PKCS#8 \"PRIVATE KEY\" \
                             (convert with `openssl pkcs8 -topk8 -nocrypt`)"
                        ),
                    ));
                }
                der
            }
            None => bytes,
        };
        SlotKey::from_pkcs8_der(&der).map_err(|e| load_err(path, e))
    }

    /// Parses an unencrypted PKCS#8 DER private key.
    pub fn from_pkcs8_der(der: &[u8]) -> Result<SlotKey, String> {
        let info = PrivateKeyInfo::from_der(der).map_err(|e| format!("not PKCS#8: {e}"))?;
        let alg = info.algorithm;
        if alg.oid == RSA_ENCRYPTION {
            let key =
                RsaPrivateKey::from_pkcs8_der(der).map_err(|e| format!("bad RSA key: {e}"))?;
            match key.size() * 8 {
                1024 | 2048 | 3072 => Ok(SlotKey::Rsa(Box::new(key))),
                bits => Err(format!("RSA-{bits} is not a PIV key size (1024/2048/3072)")),
            }
        } else if alg.oid == EC_PUBLIC_KEY {
            let curve = alg
                .parameters_oid()
                .map_err(|e| format!("EC key without named curve: {e}"))?;
            if curve == PRIME256V1 {
                p256::ecdsa::SigningKey::from_pkcs8_der(der)
                    .map(SlotKey::P256)
                    .map_err(|e| format!("bad P-256 key: {e}"))
            } else if curve == SECP384R1 {
                p384::ecdsa::SigningKey::from_pkcs8_der(der)
                    .map(SlotKey::P384)
                    .map_err(|e| format!("bad P-384 key: {e}"))
            } else {
                Err(format!("EC curve {curve} is not P-256 or P-384"))
            }
        } else {
            Err(format!("key algorithm {} is not RSA or EC", alg.oid))
        }
    }

    /// The PIV algorithm identifier (SP 800-78-4 table 6-2) of this key.
    pub fn piv_algorithm(&self) -> u8 {
        match self {
            SlotKey::Rsa(key) => match key.size() {
                128 => 0x06,
                384 => 0x05,
                _ => 0x07,
            },
            SlotKey::P256(_) => 0x11,
            SlotKey::P384(_) => 0x14,
        }
    }

    /// A short human-readable algorithm name for logs and status lines.
    pub fn describe(&self) -> String {
        match self {
            SlotKey::Rsa(key) => format!("RSA-{}", key.size() * 8),
            SlotKey::P256(_) => "P-256".to_owned(),
            SlotKey::P384(_) => "P-384".to_owned(),
        }
    }

    /// Performs the slot's private-key operation on a GENERAL AUTHENTICATE
    /// challenge: raw RSA (s = m^d mod n) on a full-size padded block, or
    /// ECDSA over a hash, returned DER-encoded.
    pub fn operate(&self, algorithm: u8, input: &[u8]) -> Result<Vec<u8>, OperationError> {
        if algorithm != self.piv_algorithm() {
            return Err(OperationError::WrongAlgorithm);
        }
        match self {
            SlotKey::Rsa(key) => raw_rsa(key, input),
            SlotKey::P256(key) => {
                let z = to_field_size(input, 32);
                let sig: p256::ecdsa::DerSignature =
                    key.sign_prehash(&z).map_err(|_| OperationError::BadInput)?;
                Ok(sig.as_bytes().to_vec())
            }
            SlotKey::P384(key) => {
                let z = to_field_size(input, 48);
                let sig: p384::ecdsa::DerSignature =
                    key.sign_prehash(&z).map_err(|_| OperationError::BadInput)?;
                Ok(sig.as_bytes().to_vec())
            }
        }
    }
}

fn raw_rsa(key: &RsaPrivateKey, input: &[u8]) -> Result<Vec<u8>, OperationError> {
    let k = key.size();
    if input.len() != k {
        return Err(OperationError::BadInput);
    }
    let m = BigUint::from_bytes_be(input);
    // Blinded, and checked by re-encryption against faults.
    let s = rsa::hazmat::rsa_decrypt_and_check(key, Some(&mut OsRng), &m)
        .map_err(|_| OperationError::BadInput)?;
    let bytes = s.to_bytes_be();
    let mut out = vec![0u8; k.saturating_sub(bytes.len())];
    out.extend_from_slice(&bytes);
    Ok(out)
}

/// Left-pads a short hash with zeros or keeps the leftmost bytes of a long
/// one, as card ECDSA implementations do (the leftmost bits of the hash count).
fn to_field_size(hash: &[u8], size: usize) -> Vec<u8> {
    if hash.len() >= size {
        hash.iter().take(size).copied().collect()
    } else {
        let mut out = vec![0u8; size - hash.len()];
        out.extend_from_slice(hash);
        out
    }
}

/// Loads a certificate as DER, from a PEM (`CERTIFICATE`) or DER file.
pub fn load_certificate(path: &Path) -> Result<Vec<u8>, LoadError> {
    let bytes = std::fs::read(path).map_err(|e| load_err(path, e))?;
    let der = match pem_block(&bytes) {
        Some(block) => {
            let (label, der) = pkcs8::der::pem::decode_vec(block)
                .map_err(|e| load_err(path, format!("bad PEM: {e}")))?;
            if label != "CERTIFICATE" {
                return Err(load_err(
                    path,
                    format!("PEM label {label:?} is not CERTIFICATE"),
                ));
            }
            der
        }
        None => bytes,
    };
    // Only a sanity check that this is one DER SEQUENCE: the card must also
    // carry deliberately odd certificates for negative tests.
    match crate::tlv::take(&der) {
        Ok((0x30, _, [])) => Ok(der),
        _ => Err(load_err(path, "not a DER certificate")),
    }
}

/// The first `-----BEGIN` … `-----END …-----` block of a PEM file, so that
/// text before it (as `openssl x509 -text` writes) or after it is ignored.
fn pem_block(bytes: &[u8]) -> Option<&[u8]> {
    let start = find(bytes, b"-----BEGIN ")?;
    let after = bytes.get(start..)?;
    let end_marker = find(after, b"-----END ")?;
    let tail = after.get(end_marker + 9..)?;
    let close = find(tail, b"-----")?;
    after.get(..end_marker + 9 + close + 5)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
pub(crate) mod tests {
    use super::*;
    use ecdsa::signature::hazmat::PrehashVerifier;
    use pkcs8::EncodePrivateKey;
    use rsa::traits::PrivateKeyParts;

    pub(crate) fn rsa_key(bits: usize) -> RsaPrivateKey {
        RsaPrivateKey::new(&mut OsRng, bits).unwrap()
    }

    pub(crate) fn p256_key() -> p256::ecdsa::SigningKey {
        p256::ecdsa::SigningKey::random(&mut OsRng)
    }

    #[test]
    fn loads_pkcs8_der_of_each_kind() {
        let rsa = rsa_key(2048).to_pkcs8_der().unwrap();
        let key = SlotKey::from_pkcs8_der(rsa.as_bytes()).unwrap();
        assert_eq!(key.piv_algorithm(), 0x07);
        let ec = p256_key().to_pkcs8_der().unwrap();
        assert_eq!(
            SlotKey::from_pkcs8_der(ec.as_bytes())
                .unwrap()
                .piv_algorithm(),
            0x11
        );
        let ec = p384::ecdsa::SigningKey::random(&mut OsRng)
            .to_pkcs8_der()
            .unwrap();
        assert_eq!(
            SlotKey::from_pkcs8_der(ec.as_bytes())
                .unwrap()
                .piv_algorithm(),
            0x14
        );
    }

    #[test]
    fn refuses_non_piv_rsa_size() {
        let rsa = rsa_key(1536).to_pkcs8_der().unwrap();
        let err = SlotKey::from_pkcs8_der(rsa.as_bytes()).unwrap_err();
        assert!(err.contains("RSA-1536"), "{err}");
    }

    #[test]
    fn refuses_garbage() {
        assert!(SlotKey::from_pkcs8_der(&[0x30, 0x03, 0x02, 0x01, 0x00]).is_err());
        assert!(SlotKey::from_pkcs8_der(&[]).is_err());
    }

    #[test]
    fn loads_pem_key_with_leading_text() {
        let dir = std::env::temp_dir().join(format!("vcard-keys-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("k.pem");
        let pem = p256_key().to_pkcs8_pem(Default::default()).unwrap();
        std::fs::write(&path, format!("comment\n{}trailer\n", pem.as_str())).unwrap();
        let key = SlotKey::load(&path).unwrap();
        assert_eq!(key.describe(), "P-256");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn raw_rsa_is_the_private_exponentiation() {
        let key = rsa_key(1024);
        let slot = SlotKey::Rsa(Box::new(key.clone()));
        let mut block = vec![0u8; 128];
        block[1] = 1;
        block[127] = 0x42;
        let sig = slot.operate(0x06, &block).unwrap();
        assert_eq!(sig.len(), 128);
        let m = BigUint::from_bytes_be(&block);
        let expected = m.modpow(key.d(), key.n());
        assert_eq!(BigUint::from_bytes_be(&sig), expected);
    }

    #[test]
    fn raw_rsa_checks_size_and_range() {
        let slot = SlotKey::Rsa(Box::new(rsa_key(1024)));
        assert_eq!(slot.operate(0x06, &[1; 127]), Err(OperationError::BadInput));
        assert_eq!(
            slot.operate(0x06, &[0xFF; 128]),
            Err(OperationError::BadInput)
        );
        assert_eq!(
            slot.operate(0x07, &[1; 128]),
            Err(OperationError::WrongAlgorithm)
        );
    }

    #[test]
    fn ecdsa_signature_verifies_over_padded_or_truncated_hash() {
        let key = p256_key();
        let slot = SlotKey::P256(key.clone());
        let verifying = p256::ecdsa::VerifyingKey::from(&key);
        let hash = [0x5A; 32];
        let der = slot.operate(0x11, &hash).unwrap();
        let sig = p256::ecdsa::Signature::from_der(&der).unwrap();
        verifying.verify_prehash(&hash, &sig).unwrap();

        let long = [0x5A; 48];
        let der = slot.operate(0x11, &long).unwrap();
        let sig = p256::ecdsa::Signature::from_der(&der).unwrap();
        verifying.verify_prehash(&long[..32], &sig).unwrap();

        let short = [0x77; 20];
        let der = slot.operate(0x11, &short).unwrap();
        let sig = p256::ecdsa::Signature::from_der(&der).unwrap();
        let mut padded = [0u8; 32];
        padded[12..].copy_from_slice(&short);
        verifying.verify_prehash(&padded, &sig).unwrap();
    }

    #[test]
    fn certificate_must_be_one_der_sequence() {
        let dir = std::env::temp_dir().join(format!("vcard-certs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.der");
        std::fs::write(&path, [0x30, 0x02, 0x05, 0x00]).unwrap();
        assert_eq!(
            load_certificate(&path).unwrap(),
            vec![0x30, 0x02, 0x05, 0x00]
        );
        std::fs::write(&path, [0x30, 0x02, 0x05]).unwrap();
        assert!(load_certificate(&path).is_err());
        let pem = "x\n-----BEGIN CERTIFICATE-----\nMAIFAA==\n-----END CERTIFICATE-----\n";
        std::fs::write(&path, pem).unwrap();
        assert_eq!(
            load_certificate(&path).unwrap(),
            vec![0x30, 0x02, 0x05, 0x00]
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
