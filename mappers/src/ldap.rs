//! LDAP and Active Directory look-ups (ldap3, synchronous, rustls).
//!
//! Several URIs are tried in order until one answers; each connection and
//! each operation has a timeout; replies are bounded in entries and bytes.
//! Servers are reached over TLS (`ldaps://` or StartTLS): a cleartext
//! directory is refused unless the config says, in a key nobody sets by
//! accident, that anyone on the network may read the bind password and
//! answer the searches that map cards to users.

use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ldap3::{LdapConn, LdapConnSettings, Scope, SearchEntry, SearchOptions};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use serde::Deserialize;
use zeroize::Zeroizing;

/// The `[ldap]` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LdapConfig {
    /// Server URIs (`ldap://` or `ldaps://`), tried in order. `ldap://` needs
    /// `starttls`: cleartext is refused unless
    /// `allow_cleartext_i_understand_anyone_on_the_network_can_map_users`.
    pub uri: Vec<String>,
    /// Search base.
    pub base: String,
    /// `sub` (default), `one` or `base`.
    #[serde(default = "default_scope")]
    pub scope: String,
    /// Upgrade `ldap://` connections with StartTLS.
    #[serde(default)]
    pub starttls: bool,
    /// CA certificates (PEM) that sign the servers' TLS certificates; needed
    /// for `ldaps://` and StartTLS.
    pub tls_ca: Option<PathBuf>,
    /// DN to bind as; anonymous when absent.
    pub bind_dn: Option<String>,
    /// File holding the bind password: root-owned, mode 0600 or stricter.
    pub bind_password_file: Option<PathBuf>,
    /// Seconds to wait for a connection (default 3).
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: f64,
    /// Seconds to wait for the bind and for the search (default 5).
    #[serde(default = "default_search_timeout")]
    pub search_timeout: f64,
    /// Attribute holding the user name (default `uid`; AD: `sAMAccountName`).
    #[serde(default = "default_user_attribute")]
    pub user_attribute: String,
    /// Most entries one search may return (default 16).
    #[serde(default = "default_max_entries")]
    pub max_entries: usize,
    /// Most bytes of attribute values one search may return (default 1 MiB).
    #[serde(default = "default_max_reply_bytes")]
    pub max_reply_bytes: usize,
    /// Accept `ldap://` without StartTLS, and a simple bind over it: anyone
    /// on the network path can then read the bind password, and answer the
    /// search to map any valid card to any user, root included. For test
    /// directories on 127.0.0.1; named so that nobody sets it by accident.
    #[serde(default)]
    pub allow_cleartext_i_understand_anyone_on_the_network_can_map_users: bool,
}

/// The `[ldap]` key that accepts cleartext LDAP.
pub const LDAP_CLEARTEXT_KEY: &str =
    "allow_cleartext_i_understand_anyone_on_the_network_can_map_users";

fn default_scope() -> String {
    "sub".to_owned()
}
fn default_connect_timeout() -> f64 {
    3.0
}
fn default_search_timeout() -> f64 {
    5.0
}
fn default_user_attribute() -> String {
    "uid".to_owned()
}
fn default_max_entries() -> usize {
    16
}
fn default_max_reply_bytes() -> usize {
    1024 * 1024
}

/// A configured directory.
#[derive(Debug, Clone)]
pub struct LdapDirectory {
    config: LdapConfig,
    scope: Scope,
    tls: Option<Arc<rustls::ClientConfig>>,
}

/// Why the `[ldap]` section is unusable.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LdapConfigError {
    /// `uri` is empty.
    #[error("ldap.uri names no server")]
    NoServer,
    /// A URI that is neither `ldap://` nor `ldaps://`.
    #[error("ldap.uri {uri:?}: only ldap:// and ldaps:// are supported")]
    UnsupportedScheme {
        /// The URI.
        uri: String,
    },
    /// An `ldap://` URI without StartTLS, and no explicit consent to cleartext.
    #[error(
        "ldap.uri {uri:?} is cleartext (not ldaps://, and starttls is off): \
         anyone on the network path can {} any valid card to any user, \
         root included; use ldaps:// or starttls = true with tls_ca, or, for a \
         test directory, set {LDAP_CLEARTEXT_KEY} = true",
        match bind_dn {
            Some(dn) => format!("read the bind password of {dn}, and answer the search to map"),
            None => "answer the search and map".to_owned(),
        }
    )]
    Cleartext {
        /// The cleartext URI.
        uri: String,
        /// Whose password would cross the network in clear, if anyone's.
        bind_dn: Option<String>,
    },
    /// `scope` is not sub, one or base.
    #[error("ldap.scope {scope:?}: use sub, one or base")]
    Scope {
        /// The value given.
        scope: String,
    },
    /// A timeout outside (0, 120] seconds.
    #[error("ldap.{key} must be between 0 and 120 seconds")]
    Timeout {
        /// `connect_timeout` or `search_timeout`.
        key: &'static str,
    },
    /// `bind_dn` without `bind_password_file`, or the reverse.
    #[error("ldap.bind_dn and ldap.bind_password_file go together")]
    BindPairing,
    /// `max_entries` or `max_reply_bytes` is zero.
    #[error("ldap.max_entries and ldap.max_reply_bytes must be positive")]
    ZeroBound,
    /// TLS is used but no CA is configured.
    #[error("ldaps:// and starttls need ldap.tls_ca, the CA that signs the servers")]
    TlsCaRequired,
    /// The `tls_ca` file is unreadable or not PEM.
    #[error("ldap.tls_ca {}: {source}", path.display())]
    TlsCaPem {
        /// The file.
        path: PathBuf,
        /// What the PEM reader said.
        source: Arc<rustls_pki_types::pem::Error>,
    },
    /// rustls refused a certificate of `tls_ca`, or its settings.
    #[error("ldap.tls_ca {}: {source}", path.display())]
    TlsCaRejected {
        /// The file.
        path: PathBuf,
        /// What rustls said.
        source: rustls::Error,
    },
    /// The `tls_ca` file holds no certificate.
    #[error("ldap.tls_ca {}: no certificate", path.display())]
    TlsCaEmpty {
        /// The file.
        path: PathBuf,
    },
}

/// Why the bind password could not be read.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PasswordFileError {
    /// Opening or reading failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The failure.
        source: Arc<std::io::Error>,
    },
    /// Not root-owned, or readable or writable by others.
    #[error("{}: must be owned by root with mode 0600 or stricter", path.display())]
    NotPrivate {
        /// The file.
        path: PathBuf,
    },
}

/// Why one server did not answer a search.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ServerError {
    /// No connection, or the connection broke or timed out during the bind
    /// or the search: the server is down as far as we can tell.
    #[error("{0}")]
    Unreachable(Arc<ldap3::LdapError>),
    /// The bind password file is unusable.
    #[error(transparent)]
    Password(#[from] PasswordFileError),
    /// The server refused the bind.
    #[error("{0}")]
    BindRefused(Arc<ldap3::LdapError>),
    /// The server ended the search with an error result.
    #[error("{0}")]
    SearchRefused(Arc<ldap3::LdapError>),
    /// More entries or bytes than the configuration allows.
    #[error(
        "reply exceeds ldap.max_entries ({max_entries}) or ldap.max_reply_bytes ({max_reply_bytes})"
    )]
    ReplyTooLarge {
        /// `ldap.max_entries`.
        max_entries: usize,
        /// `ldap.max_reply_bytes`.
        max_reply_bytes: usize,
    },
}

impl ServerError {
    /// Whether the server could not be reached or did not answer in time, so
    /// that the next server may be asked (a refusal is an answer).
    pub fn is_unreachable(&self) -> bool {
        matches!(self, ServerError::Unreachable(_))
    }
}

/// A server that was tried and did not answer.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{uri}: {error}")]
pub struct ServerFailure {
    /// The server's URI.
    pub uri: String,
    /// What went wrong there.
    pub error: ServerError,
}

/// An entry found: its DN and the user attribute's values.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FoundEntry {
    /// The entry's DN.
    pub dn: String,
    /// Values of the user attribute.
    pub users: Vec<String>,
}

/// A search that was answered.
#[derive(Debug, Clone)]
pub struct SearchAnswer {
    /// Servers tried before, none of which could be reached.
    pub unreachable: Vec<ServerFailure>,
    /// The server that answered.
    pub uri: String,
    /// Entries found.
    pub entries: Vec<FoundEntry>,
}

/// A search that no server answered, or that one refused.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SearchError {
    /// No server could be reached or none answered in time (the mapping
    /// cache may stand in).
    #[error("no LDAP server answered")]
    Unreachable {
        /// Every server, in the order tried.
        failures: Vec<ServerFailure>,
    },
    /// A server answered with an error or broke a bound. It is not "down",
    /// so no other server is asked: one that says something else could hide
    /// the refusal.
    #[error("{refusal}")]
    Refused {
        /// Servers tried before, none of which could be reached.
        unreachable: Vec<ServerFailure>,
        /// The server that refused, and why.
        refusal: ServerFailure,
    },
}

fn secs(value: f64, key: &'static str) -> Result<Duration, LdapConfigError> {
    if !(value > 0.0 && value <= 120.0) {
        return Err(LdapConfigError::Timeout { key });
    }
    Ok(Duration::from_secs_f64(value))
}

impl LdapDirectory {
    /// Checks the section and loads the TLS anchors.
    pub fn new(config: LdapConfig) -> Result<Self, LdapConfigError> {
        if config.uri.is_empty() {
            return Err(LdapConfigError::NoServer);
        }
        let mut needs_tls = config.starttls;
        for uri in &config.uri {
            if uri.starts_with("ldaps://") {
                needs_tls = true;
            } else if !uri.starts_with("ldap://") {
                return Err(LdapConfigError::UnsupportedScheme { uri: uri.clone() });
            }
        }
        if !config.allow_cleartext_i_understand_anyone_on_the_network_can_map_users {
            if let Some(uri) = config
                .uri
                .iter()
                .find(|uri| uri.starts_with("ldap://") && !config.starttls)
            {
                return Err(LdapConfigError::Cleartext {
                    uri: uri.clone(),
                    bind_dn: config.bind_dn.clone(),
                });
            }
        }
        let scope = match config.scope.as_str() {
            "sub" => Scope::Subtree,
            "one" => Scope::OneLevel,
            "base" => Scope::Base,
            other => {
                return Err(LdapConfigError::Scope {
                    scope: other.to_owned(),
                })
            }
        };
        secs(config.connect_timeout, "connect_timeout")?;
        secs(config.search_timeout, "search_timeout")?;
        if config.bind_dn.is_some() != config.bind_password_file.is_some() {
            return Err(LdapConfigError::BindPairing);
        }
        if config.max_entries == 0 || config.max_reply_bytes == 0 {
            return Err(LdapConfigError::ZeroBound);
        }
        let tls = match (&config.tls_ca, needs_tls) {
            (Some(path), _) => Some(tls_config(path)?),
            (None, true) => return Err(LdapConfigError::TlsCaRequired),
            (None, false) => None,
        };
        Ok(Self { config, scope, tls })
    }

    /// The configuration.
    pub fn config(&self) -> &LdapConfig {
        &self.config
    }

    /// Searches with `filter` on each server in turn until one answers.
    pub fn search(&self, filter: &str, attribute: &str) -> Result<SearchAnswer, SearchError> {
        let mut unreachable = Vec::new();
        for uri in &self.config.uri {
            match self.search_one(uri, filter, attribute) {
                Ok(entries) => {
                    return Ok(SearchAnswer {
                        unreachable,
                        uri: uri.clone(),
                        entries,
                    })
                }
                Err(error) => {
                    tracing::info!(id = "auth.mapping.ldap_server_failed", %uri, "LDAP server failed: {error}");
                    let failure = ServerFailure {
                        uri: uri.clone(),
                        error,
                    };
                    if !failure.error.is_unreachable() {
                        return Err(SearchError::Refused {
                            unreachable,
                            refusal: failure,
                        });
                    }
                    unreachable.push(failure);
                }
            }
        }
        Err(SearchError::Unreachable {
            failures: unreachable,
        })
    }

    fn bind_password(&self) -> Result<Option<Zeroizing<String>>, PasswordFileError> {
        let Some(path) = &self.config.bind_password_file else {
            return Ok(None);
        };
        read_password(path).map(Some)
    }

    /// One server.
    fn search_one(
        &self,
        uri: &str,
        filter: &str,
        attribute: &str,
    ) -> Result<Vec<FoundEntry>, ServerError> {
        let connect_timeout = Duration::from_secs_f64(self.config.connect_timeout);
        let operation_timeout = Duration::from_secs_f64(self.config.search_timeout);
        let mut settings = LdapConnSettings::new()
            .set_conn_timeout(connect_timeout)
            .set_starttls(self.config.starttls && uri.starts_with("ldap://"));
        if let Some(tls) = &self.tls {
            settings = settings.set_config(tls.clone());
        }
        // ldap3 fails the call itself on I/O errors and timeouts, and the
        // returned result on an answer that says no.
        let unreachable = |error: ldap3::LdapError| ServerError::Unreachable(Arc::new(error));
        let mut connection = LdapConn::with_settings(settings, uri).map_err(unreachable)?;
        if let Some(dn) = &self.config.bind_dn {
            let password = self.bind_password()?;
            let password = password.as_ref().map(|p| p.as_str()).unwrap_or_default();
            connection
                .with_timeout(operation_timeout)
                .simple_bind(dn, password)
                .map_err(unreachable)?
                .success()
                .map_err(|error| ServerError::BindRefused(Arc::new(error)))?;
        }
        let limit = i32::try_from(self.config.max_entries + 1).unwrap_or(i32::MAX);
        let seconds = self.config.search_timeout.ceil() as i32;
        let mut stream = connection
            .with_search_options(SearchOptions::new().sizelimit(limit).timelimit(seconds))
            .with_timeout(operation_timeout)
            .streaming_search(&self.config.base, self.scope, filter, vec![attribute])
            .map_err(unreachable)?;
        let mut entries = Vec::new();
        let mut bytes = 0usize;
        while let Some(entry) = stream.next().map_err(unreachable)? {
            if entry.is_ref() || entry.is_intermediate() {
                continue;
            }
            let entry = SearchEntry::construct(entry);
            bytes += entry.dn.len();
            let users: Vec<String> = entry
                .attrs
                .iter()
                .filter(|(name, _)| name.eq_ignore_ascii_case(attribute))
                .flat_map(|(_, values)| values.clone())
                .collect();
            bytes += users.iter().map(String::len).sum::<usize>();
            entries.push(FoundEntry {
                dn: entry.dn,
                users,
            });
            if entries.len() > self.config.max_entries || bytes > self.config.max_reply_bytes {
                // Dropping the stream and the connection abandons the search.
                return Err(ServerError::ReplyTooLarge {
                    max_entries: self.config.max_entries,
                    max_reply_bytes: self.config.max_reply_bytes,
                });
            }
        }
        stream
            .result()
            .success()
            .map_err(|error| ServerError::SearchRefused(Arc::new(error)))?;
        let _ = connection.unbind();
        Ok(entries)
    }
}

fn tls_config(path: &Path) -> Result<Arc<rustls::ClientConfig>, LdapConfigError> {
    let pem = |source| LdapConfigError::TlsCaPem {
        path: path.to_owned(),
        source: Arc::new(source),
    };
    let rejected = |source| LdapConfigError::TlsCaRejected {
        path: path.to_owned(),
        source,
    };
    let mut roots = rustls::RootCertStore::empty();
    let certificates = CertificateDer::pem_file_iter(path)
        .map_err(pem)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(pem)?;
    for certificate in certificates {
        roots.add(certificate).map_err(rejected)?;
    }
    if roots.is_empty() {
        return Err(LdapConfigError::TlsCaEmpty {
            path: path.to_owned(),
        });
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(rejected)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Reads the bind password: the file must be root-owned and private.
fn read_password(path: &Path) -> Result<Zeroizing<String>, PasswordFileError> {
    let io = |source| PasswordFileError::Io {
        path: path.to_owned(),
        source: Arc::new(source),
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let metadata = file.metadata().map_err(io)?;
    if metadata.uid() != 0 || metadata.mode() & 0o077 != 0 {
        return Err(PasswordFileError::NotPrivate {
            path: path.to_owned(),
        });
    }
    let mut text = Zeroizing::new(String::new());
    file.take(4096).read_to_string(&mut text).map_err(io)?;
    Ok(Zeroizing::new(
        text.trim_end_matches(['\n', '\r']).to_owned(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const INSECURE: &str = LDAP_CLEARTEXT_KEY;

    fn config(keys: &str) -> LdapConfig {
        toml::from_str(&format!("base = \"dc=example,dc=test\"\n{keys}\n")).unwrap()
    }

    /// A PEM CA file, for the configurations that use TLS.
    fn ca_file(dir: &Path) -> PathBuf {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let certificate = params.self_signed(&key).unwrap();
        let path = dir.join("ldap-ca.pem");
        std::fs::write(&path, certificate.pem()).unwrap();
        path
    }

    fn refusal(keys: &str) -> LdapConfigError {
        LdapDirectory::new(config(keys)).unwrap_err()
    }

    #[test]
    fn cleartext_ldap_is_refused_saying_why() {
        let error = refusal("uri = [\"ldap://dc1.example.test\"]");
        assert!(
            matches!(&error, LdapConfigError::Cleartext { uri, bind_dn: None } if uri == "ldap://dc1.example.test"),
            "{error:?}"
        );
        let message = error.to_string();
        assert!(
            message.starts_with(
                "ldap.uri \"ldap://dc1.example.test\" is cleartext (not ldaps://, and starttls is off): "
            ),
            "{message}"
        );
        assert!(
            message.contains("answer the search and map any valid card to any user, root included"),
            "{message}"
        );
        assert!(
            message.contains("use ldaps:// or starttls = true with tls_ca"),
            "{message}"
        );
        assert!(message.contains(&format!("{INSECURE} = true")), "{message}");
        // One cleartext server among TLS ones is enough to be refused.
        let dir = tempfile::tempdir().unwrap();
        let ca = ca_file(dir.path());
        let error = refusal(&format!(
            "uri = [\"ldaps://dc1.example.test\", \"ldap://dc2.example.test\"]\ntls_ca = {ca:?}"
        ));
        assert!(
            matches!(&error, LdapConfigError::Cleartext { uri, .. } if uri == "ldap://dc2.example.test"),
            "{error:?}"
        );
        // Saying no is not saying yes.
        let error = refusal(&format!(
            "uri = [\"ldap://dc1.example.test\"]\n{INSECURE} = false"
        ));
        assert!(
            matches!(error, LdapConfigError::Cleartext { .. }),
            "{error:?}"
        );
    }

    #[test]
    fn a_simple_bind_without_tls_is_refused_naming_the_password() {
        let error = refusal(
            "uri = [\"ldap://dc1.example.test\"]\nbind_dn = \"cn=reader,dc=example,dc=test\"\nbind_password_file = \"/etc/tessera/ldap-password\"",
        );
        assert!(
            matches!(&error, LdapConfigError::Cleartext { bind_dn: Some(dn), .. } if dn == "cn=reader,dc=example,dc=test"),
            "{error:?}"
        );
        let message = error.to_string();
        assert!(
            message.contains("read the bind password of cn=reader,dc=example,dc=test"),
            "{message}"
        );
        assert!(message.contains(&format!("{INSECURE} = true")), "{message}");
    }

    #[test]
    fn each_broken_section_is_refused_by_its_own_variant() {
        let refused_as = |keys: &str, expected: fn(&LdapConfigError) -> bool| {
            let error = refusal(keys);
            assert!(expected(&error), "{keys}: {error:?}");
        };
        let cleartext = format!("uri = [\"ldap://h\"]\n{INSECURE} = true");
        refused_as("uri = []", |e| matches!(e, LdapConfigError::NoServer));
        refused_as("uri = [\"ldapi:///run/slapd\"]", |e| {
            matches!(e, LdapConfigError::UnsupportedScheme { .. })
        });
        refused_as(
            &format!("{cleartext}\nscope = \"tree\""),
            |e| matches!(e, LdapConfigError::Scope { scope } if scope == "tree"),
        );
        refused_as(
            &format!("{cleartext}\nsearch_timeout = 0.0"),
            |e| matches!(e, LdapConfigError::Timeout { key } if *key == "search_timeout"),
        );
        refused_as(&format!("{cleartext}\nbind_dn = \"cn=x\""), |e| {
            matches!(e, LdapConfigError::BindPairing)
        });
        refused_as(&format!("{cleartext}\nmax_entries = 0"), |e| {
            matches!(e, LdapConfigError::ZeroBound)
        });
        refused_as("uri = [\"ldaps://h\"]", |e| {
            matches!(e, LdapConfigError::TlsCaRequired)
        });
    }

    #[test]
    fn tls_or_the_explicit_insecure_key_is_accepted() {
        let dir = tempfile::tempdir().unwrap();
        let ca = ca_file(dir.path());
        let bind = "bind_dn = \"cn=reader,dc=example,dc=test\"\nbind_password_file = \"/etc/tessera/ldap-password\"";
        for keys in [
            format!("uri = [\"ldaps://dc1.example.test\"]\ntls_ca = {ca:?}\n{bind}"),
            format!("uri = [\"ldap://dc1.example.test\", \"ldaps://dc2.example.test\"]\nstarttls = true\ntls_ca = {ca:?}\n{bind}"),
            format!("uri = [\"ldap://127.0.0.1:389\"]\n{INSECURE} = true"),
            format!("uri = [\"ldap://127.0.0.1:389\"]\n{INSECURE} = true\n{bind}"),
        ] {
            let directory = LdapDirectory::new(config(&keys));
            assert!(directory.is_ok(), "{keys}: {directory:?}");
        }
    }
}
