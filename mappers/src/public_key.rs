//! Public keys compared by their mathematical content, whatever the container:
//! a certificate's SubjectPublicKeyInfo, an OpenSSH `authorized_keys` line, or
//! a PKCS#11 public-key object.

use std::fmt;

use base64ct::{Base64, Base64Unpadded, Encoding};
use const_oid::db::{rfc5912, rfc8410};
use const_oid::ObjectIdentifier;
use der::asn1::UintRef;
use der::{Decode, Sequence};
use x509_cert::spki::SubjectPublicKeyInfoRef;

const SECP256R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
const SECP384R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");

/// A public key of a type tokens sign with.
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum PublicKey {
    /// RSA: modulus and public exponent, big-endian without leading zeros.
    Rsa {
        /// n.
        modulus: Vec<u8>,
        /// e.
        exponent: Vec<u8>,
    },
    /// ECDSA P-256: the uncompressed point (0x04 ‖ x ‖ y).
    P256(Vec<u8>),
    /// ECDSA P-384: the uncompressed point.
    P384(Vec<u8>),
    /// Ed25519: the 32-byte key.
    Ed25519(Vec<u8>),
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({} {})", self.kind(), self.fingerprint())
    }
}

/// Why a key could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// A key type tessera does not log in with.
    #[error("unsupported key type {0}")]
    Unsupported(String),
    /// The encoding is broken.
    #[error("malformed key: {0}")]
    Malformed(String),
}

#[derive(Sequence)]
struct RsaPublicKey<'a> {
    modulus: UintRef<'a>,
    exponent: UintRef<'a>,
}

fn strip_zeros(bytes: &[u8]) -> Vec<u8> {
    let start = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
    bytes[start..].to_vec()
}

fn malformed(error: impl fmt::Display) -> KeyError {
    KeyError::Malformed(error.to_string())
}

impl PublicKey {
    /// Reads a DER SubjectPublicKeyInfo.
    pub fn from_spki_der(der: &[u8]) -> Result<Self, KeyError> {
        let spki = SubjectPublicKeyInfoRef::from_der(der).map_err(malformed)?;
        Self::from_spki(&spki)
    }

    /// Reads a parsed SubjectPublicKeyInfo.
    pub fn from_spki(spki: &SubjectPublicKeyInfoRef<'_>) -> Result<Self, KeyError> {
        let bits = spki
            .subject_public_key
            .as_bytes()
            .ok_or_else(|| malformed("public key is not a whole number of bytes"))?;
        let oid = spki.algorithm.oid;
        if oid == rfc5912::RSA_ENCRYPTION {
            let key = RsaPublicKey::from_der(bits).map_err(malformed)?;
            return Self::rsa(key.modulus.as_bytes(), key.exponent.as_bytes());
        }
        if oid == rfc8410::ID_ED_25519 {
            return Self::ed25519(bits);
        }
        if oid == rfc5912::ID_EC_PUBLIC_KEY {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .ok_or_else(|| malformed("EC key without curve"))?
                .decode_as::<ObjectIdentifier>()
                .map_err(malformed)?;
            return Self::ec(curve, bits);
        }
        Err(KeyError::Unsupported(oid.to_string()))
    }

    /// An RSA key from its components.
    pub fn rsa(modulus: &[u8], exponent: &[u8]) -> Result<Self, KeyError> {
        let modulus = strip_zeros(modulus);
        let exponent = strip_zeros(exponent);
        if modulus.is_empty() || exponent.is_empty() {
            return Err(malformed("RSA key with an empty component"));
        }
        Ok(PublicKey::Rsa { modulus, exponent })
    }

    /// An EC key on curve `curve` (an OID) with an uncompressed point.
    pub fn ec(curve: ObjectIdentifier, point: &[u8]) -> Result<Self, KeyError> {
        let (length, key): (usize, fn(Vec<u8>) -> PublicKey) = if curve == SECP256R1 {
            (65, PublicKey::P256)
        } else if curve == SECP384R1 {
            (97, PublicKey::P384)
        } else {
            return Err(KeyError::Unsupported(format!("EC curve {curve}")));
        };
        if point.len() != length || point.first() != Some(&4) {
            return Err(malformed("EC point is not uncompressed for its curve"));
        }
        Ok(key(point.to_vec()))
    }

    /// An Ed25519 key.
    pub fn ed25519(key: &[u8]) -> Result<Self, KeyError> {
        if key.len() != 32 {
            return Err(malformed("Ed25519 key is not 32 bytes"));
        }
        Ok(PublicKey::Ed25519(key.to_vec()))
    }

    /// Reads the key of a plain OpenSSH `authorized_keys` line: key type,
    /// key, optional comment. `Ok(None)` for key types that tokens do not
    /// hold (e.g. `sk-` keys), and for lines that do not start with a key
    /// type, such as lines with options: `cert-authority` marks a CA key, and
    /// `restrict`, `command=`, `from=`, `expiry-time=` and the others limit
    /// what sshd lets the key do, which a login through tessera cannot honour.
    pub fn from_authorized_keys_line(line: &str) -> Result<Option<Self>, KeyError> {
        // Blanks are spaces and tabs, as sshd reads the line.
        let mut words = line.split([' ', '\t']).filter(|word| !word.is_empty());
        let Some(key_type) = words.next().filter(|word| is_ssh_key_type(word)) else {
            return Ok(None);
        };
        let blob_text = words
            .next()
            .ok_or_else(|| malformed("key type without key"))?;
        let blob = Base64::decode_vec(blob_text).map_err(malformed)?;
        let mut reader = SshReader(&blob);
        let kind = reader.string()?;
        if kind != key_type.as_bytes() {
            return Err(malformed("key type and key blob disagree"));
        }
        let key = match key_type {
            "ssh-rsa" => {
                let exponent = reader.string()?;
                let modulus = reader.string()?;
                Self::rsa(modulus, exponent)?
            }
            "ssh-ed25519" => Self::ed25519(reader.string()?)?,
            "ecdsa-sha2-nistp256" | "ecdsa-sha2-nistp384" => {
                let _curve_name = reader.string()?;
                let point = reader.string()?;
                let curve = if key_type.ends_with("256") {
                    SECP256R1
                } else {
                    SECP384R1
                };
                Self::ec(curve, point)?
            }
            _ => return Ok(None),
        };
        if !reader.0.is_empty() {
            return Err(malformed("trailing bytes in key blob"));
        }
        Ok(Some(key))
    }

    /// A short name of the key type.
    pub fn kind(&self) -> &'static str {
        match self {
            PublicKey::Rsa { .. } => "RSA",
            PublicKey::P256(_) => "ECDSA-P256",
            PublicKey::P384(_) => "ECDSA-P384",
            PublicKey::Ed25519(_) => "ED25519",
        }
    }

    /// The OpenSSH wire encoding of the key.
    pub fn ssh_blob(&self) -> Vec<u8> {
        fn put(out: &mut Vec<u8>, bytes: &[u8]) {
            out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
            out.extend_from_slice(bytes);
        }
        fn mpint(bytes: &[u8]) -> Vec<u8> {
            let mut value = Vec::with_capacity(bytes.len() + 1);
            if bytes.first().is_some_and(|&b| b & 0x80 != 0) {
                value.push(0);
            }
            value.extend_from_slice(bytes);
            value
        }
        let mut out = Vec::new();
        match self {
            PublicKey::Rsa { modulus, exponent } => {
                put(&mut out, b"ssh-rsa");
                put(&mut out, &mpint(exponent));
                put(&mut out, &mpint(modulus));
            }
            PublicKey::P256(point) => {
                put(&mut out, b"ecdsa-sha2-nistp256");
                put(&mut out, b"nistp256");
                put(&mut out, point);
            }
            PublicKey::P384(point) => {
                put(&mut out, b"ecdsa-sha2-nistp384");
                put(&mut out, b"nistp384");
                put(&mut out, point);
            }
            PublicKey::Ed25519(key) => {
                put(&mut out, b"ssh-ed25519");
                put(&mut out, key);
            }
        }
        out
    }

    /// The key as an `authorized_keys` line (without comment).
    pub fn authorized_keys_line(&self) -> String {
        let kind = match self {
            PublicKey::Rsa { .. } => "ssh-rsa",
            PublicKey::P256(_) => "ecdsa-sha2-nistp256",
            PublicKey::P384(_) => "ecdsa-sha2-nistp384",
            PublicKey::Ed25519(_) => "ssh-ed25519",
        };
        format!("{kind} {}", Base64::encode_string(&self.ssh_blob()))
    }

    /// OpenSSH's fingerprint: `SHA256:` and unpadded base64 of the blob's SHA-256.
    pub fn fingerprint(&self) -> String {
        let digest = ring::digest::digest(&ring::digest::SHA256, &self.ssh_blob());
        format!("SHA256:{}", Base64Unpadded::encode_string(digest.as_ref()))
    }
}

/// Whether `word` is an OpenSSH key type (`ssh-…`, `ecdsa-sha2-…`, `sk-…`).
pub(crate) fn is_ssh_key_type(word: &str) -> bool {
    word.starts_with("ssh-") || word.starts_with("ecdsa-sha2-") || word.starts_with("sk-")
}

struct SshReader<'a>(&'a [u8]);

impl<'a> SshReader<'a> {
    fn string(&mut self) -> Result<&'a [u8], KeyError> {
        let (length, rest) = self
            .0
            .split_first_chunk::<4>()
            .ok_or_else(|| malformed("truncated key blob"))?;
        let length = u32::from_be_bytes(*length) as usize;
        if rest.len() < length {
            return Err(malformed("truncated key blob"));
        }
        let (value, rest) = rest.split_at(length);
        self.0 = rest;
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ssh_lines_round_trip_and_lines_with_options_give_no_key() {
        let keys = [
            PublicKey::Ed25519(vec![7; 32]),
            PublicKey::P256([vec![4], vec![1; 64]].concat()),
            PublicKey::Rsa {
                modulus: vec![0xC1; 256],
                exponent: vec![1, 0, 1],
            },
        ];
        for key in keys {
            let line = key.authorized_keys_line();
            assert_eq!(
                PublicKey::from_authorized_keys_line(&format!("{line} me@host")).unwrap(),
                Some(key.clone())
            );
            // A restricted key (or a CA key) is not a login key.
            for options in [
                "from=\"10.0.0.1\",command=\"echo a b\"",
                "cert-authority",
                "restrict",
                "expiry-time=\"20300101\"",
                "command=\"/usr/bin/backup --x\",no-pty",
            ] {
                let with_options = format!("{options} {line} me@host");
                assert_eq!(
                    PublicKey::from_authorized_keys_line(&with_options).unwrap(),
                    None,
                    "{with_options}"
                );
            }
        }
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for line in [
            "ssh-ed25519",
            "ssh-ed25519 !!!",
            "ssh-ed25519 AAAA",
            "ssh-rsa AAAAB3NzaC1lZDI1NTE5AAAAIA==",
        ] {
            assert!(
                PublicKey::from_authorized_keys_line(line).is_err(),
                "{line}"
            );
        }
        assert_eq!(PublicKey::from_authorized_keys_line("# comment"), Ok(None));
    }
}
