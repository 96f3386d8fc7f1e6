//! `/etc/tessera/tessera.toml`: versioned, strict, with errors that name the
//! file, line and column. One file per section; [`Config::parse`] checks
//! them in the order of the file's contract and gathers the result.

mod auth;
mod error;
pub mod eventd;
mod mapping;
mod pkcs11;
mod pki;
mod session;

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use tessera_mappers::{LdapConfig, LdapDirectory, MappingCache, Rule, RuleConfig};
use toml::Spanned;

use crate::filetrust::{self, TrustError};
use crate::pkcs11_uri::TokenFilter;
use crate::pki::policy::Policy as PkiPolicy;
use crate::policy::{Policies, SessionPolicy};

use self::auth::AuthSection;
use self::error::{ConfigText, MAX_CONFIG_SIZE};
use self::eventd::{EventdConfig, RawEventd};
use self::mapping::MappingSection;
use self::pkcs11::Pkcs11Section;
use self::pki::PkiSection;
use self::session::SessionSection;

pub use self::error::ConfigError;
pub use self::mapping::DEFAULT_CACHE_TTL;
pub use self::pkcs11::default_pkcs11_module;
pub use tessera_ipc::DEFAULT_CONFIG_PATH;

/// The only configuration format version this build understands.
pub const CONFIG_VERSION: u32 = 1;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    version: Spanned<u32>,
    #[serde(default)]
    pkcs11: Pkcs11Section,
    pki: Spanned<PkiSection>,
    #[serde(default, rename = "rule")]
    rules: Vec<Spanned<RuleConfig>>,
    auth: Option<Spanned<AuthSection>>,
    #[serde(default)]
    service: BTreeMap<String, Spanned<AuthSection>>,
    session: Option<Spanned<SessionSection>>,
    #[serde(default)]
    eventd: RawEventd,
    ldap: Option<Spanned<LdapConfig>>,
    mapping: Option<Spanned<MappingSection>>,
}

/// A loaded, checked configuration.
#[derive(Debug)]
pub struct Config {
    /// Where it was read from.
    pub path: PathBuf,
    /// The PKCS#11 module to load.
    pub pkcs11_module: PathBuf,
    /// `[pkcs11] environment`: the whole environment of the helper that
    /// loads the module (nothing comes from the PAM application).
    pub pkcs11_environment: BTreeMap<String, String>,
    /// Trust anchor files or directories.
    pub ca_paths: Vec<PathBuf>,
    /// Certificate policy and revocation checking (`[pki]` but `ca`).
    pub pki: PkiPolicy,
    /// Mapping rules, in order.
    pub rules: Vec<Rule>,
    /// `[pkcs11] token`: only tokens matching this RFC 7512 URI are used.
    pub token_filter: Option<TokenFilter>,
    /// `[auth]` and `[service.<name>]`.
    pub policies: Policies,
    /// `[session]`.
    pub session: SessionPolicy,
    /// tessera-eventd's `[eventd]` section.
    pub eventd: EventdConfig,
    /// The directory, when `[ldap]` is configured.
    pub ldap: Option<LdapDirectory>,
    /// The cache of directory mappings, when `[mapping] cache` is set.
    pub mapping_cache: Option<MappingCache>,
}

impl Config {
    /// Reads and checks the configuration at `path`, refusing it unless it
    /// and its directories are root-owned and not group/other-writable.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let file = filetrust::open_trusted_file(path).map_err(|error| match error {
            TrustError::Io { path, source } => ConfigError::Io { path, source },
            other => ConfigError::Untrusted(other),
        })?;
        let mut text = String::new();
        file.take(MAX_CONFIG_SIZE + 1)
            .read_to_string(&mut text)
            .map_err(|source| ConfigError::Io {
                path: path.to_owned(),
                source,
            })?;
        if text.len() as u64 > MAX_CONFIG_SIZE {
            return Err(ConfigError::TooLarge {
                path: path.to_owned(),
            });
        }
        Self::parse(path, &text)
    }

    /// Parses configuration text; `path` is only used in error messages and
    /// to resolve nothing else (all paths in the file must be absolute).
    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        let config = ConfigText::new(path, text);
        let raw: RawConfig = toml::from_str(text)
            .map_err(|error| config.error(error.span(), error.message().to_owned()))?;

        if *raw.version.get_ref() != CONFIG_VERSION {
            return Err(config.error(
                Some(raw.version.span()),
                format!(
                    "unsupported config version {}; this tessera reads version {CONFIG_VERSION}",
                    raw.version.get_ref()
                ),
            ));
        }
        let module = raw.pkcs11.module(config)?;
        let pki = pki::pki_settings(&raw.pki, config)?;
        let rules = mapping::compile_rules(&raw.rules, config)?;
        let token_filter = raw.pkcs11.token_filter(config)?;
        let policies = auth::policies(raw.auth.as_ref(), &raw.service, &pki.policy, config)?;
        let session = session::session_policy(raw.session.as_ref(), config)?;
        let eventd = EventdConfig::from_raw(raw.eventd, config)?;
        let ldap = mapping::ldap_directory(raw.ldap.as_ref(), &rules, &raw.rules, config)?;
        let mapping_cache = mapping::mapping_cache(raw.mapping.as_ref(), config)?;

        Ok(Self {
            path: path.to_owned(),
            pkcs11_module: module.path,
            pkcs11_environment: module.environment,
            ca_paths: pki.ca_paths,
            pki: pki.policy,
            rules,
            token_filter,
            policies,
            session,
            eventd,
            ldap,
            mapping_cache,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::policy::{MissingPolicy, OcspHash, RevocationMode};

    const CONTRACT: &str = r#"
version = 1
[pkcs11]
module = "/usr/lib/softhsm/libsofthsm2.so"   # default: p11-kit-proxy
[pki]
ca = ["/etc/tessera/ca"]                      # PEM/DER files or directories of them
[[rule]]                                      # ordered certificate-to-user rules
user = "{cn}"                                 # template over certificate fields
"#;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(Path::new("/etc/tessera/tessera.toml"), text)
    }

    #[test]
    fn pkcs11_environment_is_the_helpers_whole_environment_and_names_are_checked() {
        let config = parse(&CONTRACT.replace(
            "[pki]",
            "environment = { OPENSC_CONF = \"/etc/opensc/site.conf\", SOFTHSM2_CONF = \"/x\" }\n[pki]",
        ))
        .unwrap();
        assert_eq!(
            config
                .pkcs11_environment
                .get("OPENSC_CONF")
                .map(String::as_str),
            Some("/etc/opensc/site.conf")
        );
        assert_eq!(config.pkcs11_environment.len(), 2);
        assert!(parse(CONTRACT).unwrap().pkcs11_environment.is_empty());

        let (line, _, message) = position(
            parse(&CONTRACT.replace("[pki]", "environment = { \"A=B\" = \"x\" }\n[pki]"))
                .unwrap_err(),
        );
        assert_eq!(line, 5);
        assert!(
            message.contains("\"A=B\" is not a variable name"),
            "{message}"
        );
        let (_, _, message) = position(
            parse(&CONTRACT.replace("[pki]", "environment = { X = \"a\\u0000b\" }\n[pki]"))
                .unwrap_err(),
        );
        assert!(message.contains("NUL"), "{message}");
    }

    #[test]
    fn token_timeout_defaults_to_30_s_is_bounded_and_outlasts_the_revocation_budget() {
        let config = parse(CONTRACT).unwrap();
        assert_eq!(
            config.policies.default.token_timeout,
            std::time::Duration::from_secs(30)
        );
        let config = parse(&format!(
            "{CONTRACT}[auth]\ntoken_timeout = \"10s\"\n[service.sudo]\ntoken_timeout = \"20s\"\n"
        ))
        .unwrap();
        assert_eq!(
            config.policies.for_service("login").token_timeout.as_secs(),
            10
        );
        assert_eq!(
            config.policies.for_service("sudo").token_timeout.as_secs(),
            20
        );
        for bad in ["500ms", "301s", "10"] {
            let error = parse(&format!("{CONTRACT}[auth]\ntoken_timeout = \"{bad}\"\n"))
                .unwrap_err()
                .to_string();
            assert!(error.contains("token_timeout"), "{bad}: {error}");
        }
        // The default revocation budget is 5 s: a 5 s deadline could never
        // see a fetch through.
        let error = parse(&format!(
            "{CONTRACT}[service.sudo]\ntoken_timeout = \"5s\"\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(
            error.contains("service.sudo.token_timeout (5000 ms) must be longer than pki.revocation_timeout_ms (5000 ms)"),
            "{error}"
        );
        let no_revocation = CONTRACT.replace("[pki]\n", "[pki]\nrevocation = \"none\"\n");
        assert!(parse(&format!("{no_revocation}[auth]\ntoken_timeout = \"2s\"\n")).is_ok());
    }

    fn position(error: ConfigError) -> (usize, usize, String) {
        match error {
            ConfigError::At {
                line,
                column,
                message,
                ..
            } => (line, column, message),
            other => panic!("expected a positioned error, got {other}"),
        }
    }

    #[test]
    fn the_design_contract_parses_as_written() {
        let config = parse(CONTRACT).unwrap();
        assert_eq!(
            config.pkcs11_module,
            PathBuf::from("/usr/lib/softhsm/libsofthsm2.so")
        );
        assert_eq!(config.ca_paths, vec![PathBuf::from("/etc/tessera/ca")]);
        assert_eq!(config.rules.len(), 1);
        assert_eq!(config.rules[0].describe_source(), "user = \"{cn}\"");
    }

    #[test]
    fn the_shipped_example_config_parses() {
        let example = include_str!("../../../etc/tessera.toml");
        let config = parse(example).unwrap();
        assert_eq!(config.rules.len(), 1);
        assert_eq!(
            config.session.bindings_dir,
            PathBuf::from("/run/tessera/sessions")
        );
    }

    #[test]
    fn module_defaults_to_p11_kit_proxy() {
        let config =
            parse("version = 1\n[pki]\nca = [\"/ca\"]\n[[rule]]\nuser = \"{cn}\"\n").unwrap();
        assert!(config
            .pkcs11_module
            .to_string_lossy()
            .ends_with("p11-kit-proxy.so"));
    }

    #[test]
    fn unknown_key_is_named_with_line_and_column() {
        let text = CONTRACT.replace("[pki]\n", "[pki]\ncrl_dir = \"/x\"\n");
        let error = parse(&text).unwrap_err();
        let rendered = error.to_string();
        let (line, column, message) = position(error);
        assert_eq!((line, column), (6, 1), "{rendered}");
        assert!(message.contains("unknown field `crl_dir`"), "{message}");
        assert!(
            rendered.starts_with("/etc/tessera/tessera.toml:6:1: "),
            "{rendered}"
        );
    }

    #[test]
    fn wrong_version_is_refused_at_its_position() {
        let (line, column, message) =
            position(parse(&CONTRACT.replace("version = 1", "version = 2")).unwrap_err());
        assert_eq!((line, column), (2, 11));
        assert!(
            message.contains("unsupported config version 2"),
            "{message}"
        );
    }

    #[test]
    fn missing_version_is_an_error() {
        let text = CONTRACT.replace("version = 1\n", "");
        let (_, _, message) = position(parse(&text).unwrap_err());
        assert!(message.contains("version"), "{message}");
    }

    #[test]
    fn bad_template_points_at_its_rule() {
        let text = CONTRACT.replace("{cn}", "{common_name}");
        let (line, _, message) = position(parse(&text).unwrap_err());
        // The [[rule]] header of the offending rule.
        assert_eq!(line, 7);
        assert!(
            message.contains("rule 1: in `user`: unknown field {common_name}"),
            "{message}"
        );
    }

    #[test]
    fn relative_paths_are_refused() {
        let text = CONTRACT.replace("/etc/tessera/ca", "ca");
        let (line, _, message) = position(parse(&text).unwrap_err());
        assert_eq!(line, 6);
        assert!(message.contains("must be absolute"), "{message}");
    }

    #[test]
    fn no_rule_and_no_ca_are_errors() {
        let no_rule = CONTRACT.split("[[rule]]").next().unwrap();
        assert!(position(parse(no_rule).unwrap_err())
            .2
            .contains("no [[rule]]"));
        let no_ca = CONTRACT.replace("[\"/etc/tessera/ca\"]", "[]");
        assert!(position(parse(&no_ca).unwrap_err())
            .2
            .contains("pki.ca is empty"));
    }

    #[test]
    fn auth_service_and_session_sections() {
        let text = format!("{CONTRACT}[pkcs11]\n");
        assert!(parse(&text).is_err(), "a repeated table is an error");
        let text = CONTRACT.replace(
            "[pki]",
            "token = \"pkcs11:token=Alice%27s%20card\"\n[auth]\nwait_for_card = \"30s\"\n[service.sudo]\ncard = \"required\"\n[service.gdm-password]\ncard = \"disabled\"\n[session]\nbindings_dir = \"/run/t\"\n[pki]",
        );
        let config = parse(&text).unwrap();
        assert_eq!(
            config.token_filter.unwrap().token.as_deref(),
            Some("Alice's card")
        );
        let sudo = config.policies.for_service("sudo");
        assert_eq!(sudo.card, crate::policy::CardRequirement::Required);
        assert_eq!(sudo.wait_for_card, std::time::Duration::from_secs(30));
        assert_eq!(
            config.policies.for_service("login").card,
            crate::policy::CardRequirement::Optional
        );
        assert_eq!(
            config.policies.for_service("gdm-password").card,
            crate::policy::CardRequirement::Disabled
        );
        assert_eq!(config.session.bindings_dir, PathBuf::from("/run/t"));
    }

    #[test]
    fn bad_policy_values_point_at_their_table() {
        let text = CONTRACT.replace("[pki]", "[service.sudo]\nwait_for_card = \"30\"\n[pki]");
        let (line, _, message) = position(parse(&text).unwrap_err());
        assert_eq!(line, 5);
        assert!(message.contains("service.sudo.wait_for_card"), "{message}");
        let text = CONTRACT.replace("[pki]", "[auth]\ncard = \"maybe\"\n[pki]");
        let (line, _, message) = position(parse(&text).unwrap_err());
        assert_eq!(line, 6);
        assert!(message.contains("unknown variant `maybe`"), "{message}");
        let text = CONTRACT.replace(
            "module = \"/usr/lib/softhsm/libsofthsm2.so\"",
            "token = \"pkcs11:object=x\"",
        );
        let (line, _, message) = position(parse(&text).unwrap_err());
        assert_eq!(line, 4);
        assert!(message.contains("pkcs11.token: unsupported"), "{message}");
    }

    #[test]
    fn pki_defaults_are_secure() {
        let config = parse(CONTRACT).unwrap();
        let pki = &config.pki;
        assert_eq!(pki.revocation, RevocationMode::OcspThenCrl);
        assert_eq!(pki.crl.missing, MissingPolicy::Deny);
        assert_eq!(pki.crl.missing_intermediate, MissingPolicy::Deny);
        assert!(!pki.ocsp.soft_fail);
        assert!(pki.ocsp.nonce);
        assert_eq!(pki.revocation_timeout, std::time::Duration::from_secs(5));
        assert_eq!(
            pki.cache_dir.as_deref(),
            Some(Path::new(crate::pki::policy::DEFAULT_CACHE_DIR))
        );
    }

    #[test]
    fn every_pki_key_parses() {
        let text = CONTRACT.replace(
            "[[rule]]",
            r#"allowed_eku = ["pkinit", "1.3.6.1.5.5.7.3.2"]
require_eku = true
max_chain_depth = 2
signature_algorithms = ["ecdsa-p256-sha256", "rsa-pkcs1-sha384"]
clock_skew_seconds = 30
revocation = "crl-then-ocsp"
revocation_timeout_ms = 2500
cache = false
[pki.crl]
files = ["/etc/tessera/crl"]
fetch = false
max_bytes = 4096
missing = "allow"
missing_intermediate = "deny"
[pki.ocsp]
url = "http://ocsp.example.test/"
hash = "sha256"
nonce = false
soft_fail = true
max_bytes = 8192
[[rule]]"#,
        );
        let pki = parse(&text).unwrap().pki;
        assert_eq!(pki.allowed_eku.len(), 2);
        assert_eq!(pki.allowed_eku[0], crate::pki::EKU_PKINIT_CLIENT);
        assert!(pki.require_eku);
        assert_eq!(pki.max_chain_depth, 2);
        // rsa-pkcs1-sha384 stands for two webpki algorithms (2048+ and 3072+ keys).
        assert_eq!(pki.signature_algorithms.len(), 3);
        assert_eq!(pki.clock_skew, std::time::Duration::from_secs(30));
        assert_eq!(pki.revocation, RevocationMode::CrlThenOcsp);
        assert_eq!(
            pki.revocation_timeout,
            std::time::Duration::from_millis(2500)
        );
        assert_eq!(pki.cache_dir, None);
        assert_eq!(pki.crl.paths, vec![PathBuf::from("/etc/tessera/crl")]);
        assert!(!pki.crl.fetch);
        assert_eq!(pki.crl.max_bytes, 4096);
        assert_eq!(pki.crl.missing, MissingPolicy::Allow);
        assert_eq!(pki.ocsp.url.as_deref(), Some("http://ocsp.example.test/"));
        assert_eq!(pki.ocsp.hash, OcspHash::Sha256);
        assert!(!pki.ocsp.nonce);
        assert!(pki.ocsp.soft_fail);
        assert_eq!(pki.ocsp.max_bytes, 8192);
    }

    fn pki_error(keys: &str) -> (usize, usize, String) {
        let text = CONTRACT.replace("[[rule]]", &format!("{keys}\n[[rule]]"));
        position(parse(&text).unwrap_err())
    }

    #[test]
    fn bad_pki_values_are_named_at_their_position() {
        let (line, column, message) = pki_error("revocation = \"maybe\"");
        assert_eq!((line, column), (7, 14));
        assert!(
            message.contains("pki.revocation: unknown value \"maybe\"; expected one of: none, crl, ocsp, ocsp-then-crl, crl-then-ocsp"),
            "{message}"
        );
        let (line, _, message) = pki_error("allowed_eku = [\"clientAuth\", \"serverLogin\"]");
        assert_eq!(line, 7);
        assert!(message.contains("\"serverLogin\" is neither"), "{message}");
        let (_, _, message) = pki_error("[pki.ocsp]\nurl = \"https://ocsp.example.test/\"");
        assert!(message.contains("must be an http:// URL"), "{message}");
        let (line, column, message) = pki_error("[pki.crl]\nmissing = \"ignore\"");
        assert_eq!((line, column), (8, 11));
        assert!(
            message.contains("expected one of: deny, allow"),
            "{message}"
        );
        let (line, _, message) = pki_error("[pki.ocsp]\nresponder = \"http://x/\"");
        assert_eq!(line, 8);
        assert!(message.contains("unknown field `responder`"), "{message}");
        let (_, _, message) = pki_error("max_chain_depth = 9");
        assert!(message.contains("between 1 and 6"), "{message}");
        let (_, _, message) = pki_error("signature_algorithms = [\"rsa-pkcs1-sha1\"]");
        assert!(
            message.contains("expected one of: ecdsa-p256-sha256"),
            "{message}"
        );
        let (_, _, message) = pki_error("cache_dir = \"cache\"");
        assert!(message.contains("must be absolute"), "{message}");
    }

    #[test]
    fn ldap_rule_without_ldap_section_points_at_the_rule() {
        let text = CONTRACT.replace("user = \"{cn}\"", "ldap_filter = \"(mail={email})\"");
        let (line, _, message) = position(parse(&text).unwrap_err());
        assert_eq!(line, 7);
        assert!(message.contains("needs an [ldap] section"), "{message}");
    }

    #[test]
    fn ldap_and_mapping_sections_parse() {
        let text = format!(
            "{CONTRACT}[ldap]\nuri = [\"ldap://127.0.0.1:1\", \"ldap://127.0.0.1:2\"]\nbase = \"dc=example,dc=test\"\nsearch_timeout = 1.5\nallow_cleartext_i_understand_anyone_on_the_network_can_map_users = true\n[mapping]\ncache = \"/var/cache/tessera/mapping\"\ncache_ttl = 60\n"
        );
        let config = parse(&text).unwrap();
        assert!(config.ldap.is_some());
        assert!(config.mapping_cache.is_some());
        let bad = text.replace("search_timeout = 1.5", "search_timeout = 0");
        assert!(position(parse(&bad).unwrap_err())
            .2
            .contains("search_timeout"));
        let unknown = text.replace("base =", "bsae =");
        assert!(position(parse(&unknown).unwrap_err())
            .2
            .contains("unknown field `bsae`"));
    }

    #[test]
    fn eku_oids_are_refused_unless_they_read_back_as_written() {
        // 4294967298 = 2^32 + 2: wrapped, it would read as clientAuth (…3.2);
        // 128 would be encoded as …0; 01 is not canonical.
        let long = format!("1.3.{}", "2".repeat(120));
        for oid in [
            "1.3.6.1.5.5.7.3.4294967298",
            "1.3.6.1.5.5.7.3.268435456",
            long.as_str(),
            "1.3.6.1.4.1.311.128",
            "1.3.6.1.4.1.311.16384",
            "1.3.06.1",
            "1.3.6.+1",
        ] {
            let (line, _, message) = pki_error(&format!("allowed_eku = [\"{oid}\"]"));
            assert_eq!(line, 7, "{oid}");
            assert!(message.contains("nor a dotted OID"), "{oid}: {message}");
        }
        let text = CONTRACT.replace(
            "[[rule]]",
            "allowed_eku = [\"1.3.6.1.4.1.99999.129.268435455\"]\n[[rule]]",
        );
        assert_eq!(
            parse(&text).unwrap().pki.allowed_eku[0].to_string(),
            "1.3.6.1.4.1.99999.129.268435455"
        );
    }

    #[test]
    #[ignore = "needs root: config files must be root-owned"]
    fn a_config_file_over_1_mib_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tessera.toml");
        std::fs::write(&path, CONTRACT).unwrap();
        Config::load(&path).unwrap();
        let padded = format!("{CONTRACT}#{}\n", "x".repeat(MAX_CONFIG_SIZE as usize));
        std::fs::write(&path, padded).unwrap();
        let error = Config::load(&path).unwrap_err();
        assert!(matches!(error, ConfigError::TooLarge { .. }), "{error}");
        assert!(
            error.to_string().ends_with("larger than 1048576 bytes"),
            "{error}"
        );
    }

    #[test]
    fn an_absent_eventd_section_means_its_defaults() {
        assert_eq!(parse(CONTRACT).unwrap().eventd, EventdConfig::default());
    }
}
