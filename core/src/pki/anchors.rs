//! The trust anchors: CA certificates from root-owned files and directories.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use const_oid::db::rfc5912;
use der::Decode;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, TrustAnchor};
use x509_cert::ext::pkix::BasicConstraints;
use x509_cert::Certificate;

use super::x509::extension;
use crate::filetrust::{self, TrustError};

/// A CA file larger than this is refused (bundles of a few hundred CAs fit).
const MAX_CA_FILE_SIZE: u64 = 4 * 1024 * 1024;

/// File name extensions read from a CA directory.
const CA_FILE_EXTENSIONS: [&str; 4] = ["pem", "crt", "cer", "der"];

/// Why the trust anchors could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum AnchorError {
    /// The file or directory is not protected from non-root writers.
    #[error("refusing CA file: {0}")]
    Untrusted(#[from] TrustError),
    /// The file or directory cannot be read.
    #[error("{path}: cannot read: {source}")]
    Io {
        /// Path.
        path: PathBuf,
        /// Underlying error.
        source: std::io::Error,
    },
    /// Too large to be a CA file.
    #[error("{0}: larger than {MAX_CA_FILE_SIZE} bytes")]
    TooLarge(PathBuf),
    /// Not PEM or DER certificates.
    #[error("{path}: not a PEM or DER certificate: {reason}")]
    Malformed {
        /// Path.
        path: PathBuf,
        /// Parser message.
        reason: String,
    },
    /// A certificate that is not a CA.
    #[error("{path}: certificate {subject} is not a CA (basicConstraints cA is not set)")]
    NotCa {
        /// Path.
        path: PathBuf,
        /// Its subject.
        subject: String,
    },
    /// No certificate at all in the configured paths.
    #[error("no CA certificate found in {0}")]
    Empty(String),
}

/// The configured trust anchors.
#[derive(Debug)]
pub struct TrustStore {
    pub(super) anchors: Vec<TrustAnchor<'static>>,
    /// The anchors' certificates, same order: OCSP needs the issuer's
    /// name and key as encoded in its certificate.
    pub(super) certificates: Vec<CertificateDer<'static>>,
}

impl TrustStore {
    /// Loads CA certificates from files (PEM bundles or DER) and directories of them.
    pub fn load(paths: &[PathBuf]) -> Result<Self, AnchorError> {
        let mut ders: Vec<CertificateDer<'static>> = Vec::new();
        for path in paths {
            let metadata = fs::metadata(path).map_err(|source| AnchorError::Io {
                path: path.clone(),
                source,
            })?;
            if metadata.is_dir() {
                filetrust::check_trusted_path(path)?;
                let mut files = Vec::new();
                let entries = fs::read_dir(path).map_err(|source| AnchorError::Io {
                    path: path.clone(),
                    source,
                })?;
                for entry in entries {
                    let entry = entry.map_err(|source| AnchorError::Io {
                        path: path.clone(),
                        source,
                    })?;
                    let file = entry.path();
                    let wanted = file
                        .extension()
                        .and_then(|extension| extension.to_str())
                        .is_some_and(|extension| {
                            CA_FILE_EXTENSIONS.contains(&extension.to_ascii_lowercase().as_str())
                        });
                    if wanted && file.is_file() {
                        files.push(file);
                    }
                }
                files.sort();
                for file in files {
                    ders.extend(read_ca_file(&file)?);
                }
            } else {
                ders.extend(read_ca_file(path)?);
            }
        }
        if ders.is_empty() {
            let listed: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
            return Err(AnchorError::Empty(listed.join(", ")));
        }
        Self::from_certificates(ders).map_err(|error| AnchorError::Malformed {
            path: paths.first().cloned().unwrap_or_default(),
            reason: error.to_string(),
        })
    }

    /// Anchors from CA certificates already read and checked, as [`TrustStore::load`]
    /// reads them; tests build stores from certificates they make.
    pub fn from_certificates(
        mut ders: Vec<CertificateDer<'static>>,
    ) -> Result<Self, webpki::Error> {
        // Keep the first of duplicates, wherever they are in the list.
        let mut seen = std::collections::HashSet::new();
        ders.retain(|der| seen.insert(der.clone()));
        let anchors = ders
            .iter()
            .map(|der| webpki::anchor_from_trusted_cert(der).map(|anchor| anchor.to_owned()))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            anchors,
            certificates: ders,
        })
    }

    /// Number of anchors loaded.
    pub fn len(&self) -> usize {
        self.anchors.len()
    }

    /// Whether no anchor is loaded (never true for a store from [`TrustStore::load`]).
    pub fn is_empty(&self) -> bool {
        self.anchors.is_empty()
    }
}

fn read_ca_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, AnchorError> {
    let file = filetrust::open_trusted_file(path)?;
    let mut bytes = Vec::new();
    file.take(MAX_CA_FILE_SIZE + 1)
        .read_to_end(&mut bytes)
        .map_err(|source| AnchorError::Io {
            path: path.to_owned(),
            source,
        })?;
    if bytes.len() as u64 > MAX_CA_FILE_SIZE {
        return Err(AnchorError::TooLarge(path.to_owned()));
    }
    let malformed = |reason: String| AnchorError::Malformed {
        path: path.to_owned(),
        reason,
    };
    let ders: Vec<CertificateDer<'static>> = if bytes.trim_ascii_start().starts_with(b"-----BEGIN")
    {
        CertificateDer::pem_slice_iter(&bytes)
            .collect::<Result<_, _>>()
            .map_err(|error| malformed(error.to_string()))?
    } else {
        vec![CertificateDer::from(bytes)]
    };
    if ders.is_empty() {
        return Err(malformed("no CERTIFICATE block".to_owned()));
    }
    for der in &ders {
        let certificate =
            Certificate::from_der(der).map_err(|error| malformed(error.to_string()))?;
        let is_ca = extension::<BasicConstraints>(&certificate, rfc5912::ID_CE_BASIC_CONSTRAINTS)
            .map_err(|error| malformed(error.to_string()))?
            .is_some_and(|constraints| constraints.ca);
        if !is_ca {
            return Err(AnchorError::NotCa {
                path: path.to_owned(),
                subject: certificate.tbs_certificate.subject.to_string(),
            });
        }
    }
    Ok(ders)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[ignore = "needs root: CA files must be root-owned"]
    fn a_ca_file_over_4_mib_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bundle.pem");
        std::fs::write(&path, vec![b'\n'; MAX_CA_FILE_SIZE as usize + 1]).unwrap();
        let error = TrustStore::load(std::slice::from_ref(&path)).unwrap_err();
        assert!(matches!(error, AnchorError::TooLarge(_)), "{error}");
        assert!(
            error.to_string().ends_with("larger than 4194304 bytes"),
            "{error}"
        );
    }
}
