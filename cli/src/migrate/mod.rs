//! `tessera migrate pam_pkcs11 FILE` and `tessera migrate sssd FILE`: print a
//! tessera.toml equivalent to an existing pam_pkcs11.conf or sssd.conf, with
//! comments for what has no equivalent and for the old unsafe defaults. One
//! file per input format; what they share, the tessera.toml being written,
//! is in `output.rs`.

mod output;
mod pam_pkcs11;
mod sssd;

pub use pam_pkcs11::pam_pkcs11;
pub use sssd::sssd;

#[cfg(test)]
mod tests {
    use super::output::quote;
    use super::*;
    use std::path::Path;
    use tessera_core::config::Config;

    fn parses(text: &str) -> Config {
        Config::parse(Path::new("/migrated.toml"), text)
            .unwrap_or_else(|error| panic!("{error}\n{text}"))
    }

    const PAM_PKCS11: &str = r#"
pam_pkcs11 {
  nullok = true;
  use_pkcs11_module = opensc;
  pkcs11_module opensc {
    module = /usr/lib/x86_64-linux-gnu/opensc-pkcs11.so;
    slot_num = 0;
  }
  ca_dir = /etc/pam_pkcs11/cacerts;
  crl_dir = /etc/pam_pkcs11/crls;
  cert_policy = none;
  use_mappers = digest, cn, pwent, mail, ms, subject, openssh, ldap, null;
  mapper digest {
    debug = false;
    module = internal;
    algorithm = "sha1";
    mapfile = file:///etc/pam_pkcs11/digest_mapping;
  }
  mapper cn {
    module = internal;
    ignorecase = true;
    mapfile = "none";
  }
  mapper mail {
    module = internal;
    mapfile = "none";
    ignorecase = true;
    ignoredomain = true;
  }
  mapper ms {
    module = internal;
    ignoredomain = false;
    domain = "example.com";
  }
  mapper subject {
    module = internal;
    mapfile = file:///etc/pam_pkcs11/subject_mapping;
  }
  mapper ldap {
    ldaphost = "ldap.example.com";
    ldapport = 389;
    base = "ou=People,dc=example,dc=com";
    binddn = "cn=reader,dc=example,dc=com";
    passwd = "secret";
    ssl = off;
  }
  mapper null { default_match = false; default_user = nobody; }
}
"#;

    #[test]
    fn pam_pkcs11_config_migrates_with_warnings() {
        let toml = pam_pkcs11(PAM_PKCS11).unwrap();
        assert!(
            toml.contains("module = \"/usr/lib/x86_64-linux-gnu/opensc-pkcs11.so\""),
            "{toml}"
        );
        assert!(toml.contains("ca = [\"/etc/pam_pkcs11/cacerts\"]"));
        assert!(toml.contains("UNSAFE in pam_pkcs11: cert_policy = none"));
        assert!(toml
            .contains("UNSAFE in pam_pkcs11: ignoredomain maps email root@evil.example to root"));
        assert!(toml.contains("GECOS"));
        assert!(toml.contains("key = \"{sha1!hex_uc}\""));
        assert!(toml.contains("mapfile = \"/etc/pam_pkcs11/digest_mapping\""));
        assert!(toml.contains("user = \"{upn.local}\"\ndomain = \"example.com\""));
        assert!(
            toml.contains("# user = \"{email.local}\""),
            "mail without a domain is left commented: {toml}"
        );
        assert!(toml.contains("null mapper"));
        assert!(!toml.contains("secret"), "the LDAP password is not copied");
        let tls = pam_pkcs11(&PAM_PKCS11.replace("ssl = off", "ssl = tls")).unwrap();
        assert!(
            tls.contains("starttls = true\n# pam_pkcs11 trusted the system CA store"),
            "{tls}"
        );
        let config = parses(&toml);
        assert!(config.ldap.is_some());
        let names: Vec<&str> = config.rules.iter().map(|r| r.name()).collect();
        assert_eq!(
            names,
            ["digest", "cn", "pwent", "ms", "subject", "openssh", "ldap"]
        );
    }

    const SSSD: &str = r#"
[sssd]
services = nss, pam
domains = example.com
certificate_verification = no_ocsp

[pam]
pam_cert_auth = True
pam_cert_db_path = /etc/sssd/pki/sssd_auth_ca_db.pem

[domain/example.com]
id_provider = ad
ad_domain = example.com
ad_server = dc1.example.com, dc2.example.com
ldap_search_base = dc=example,dc=com

[certmap/example.com/smartcards]
matchrule = <ISSUER>^CN=Example CA,DC=example,DC=com$<EKU>msScLogin
maprule = (|(userPrincipalName={subject_principal})(samAccountName={subject_principal.short_name}))
priority = 10

[certmap/example.com/strong]
matchrule = &&<EKU>clientAuth<SAN:ntPrincipalName>.*@example\.com
maprule = LDAPU1:(altSecurityIdentities=X509:<I>{issuer_dn!ad_x500}<SR>{serial_number!hex_ur})
priority = 5
"#;

    #[test]
    fn sssd_config_migrates_in_priority_order() {
        let toml = sssd(SSSD).unwrap();
        assert!(
            toml.contains("uri = [\"ldap://dc1.example.com\", \"ldap://dc2.example.com\"]"),
            "{toml}"
        );
        assert!(toml.contains("user_attribute = \"sAMAccountName\""));
        assert!(toml.contains("certificate_verification = no_ocsp"));
        let config = parses(&toml);
        let names: Vec<&str> = config.rules.iter().map(|r| r.name()).collect();
        assert_eq!(names, ["strong", "smartcards"]);
        assert!(toml.contains("ldap_filter = \"(altSecurityIdentities=X509:<I>{issuer_dn!ad_x500}<SR>{serial_number!hex_ur})\""));
    }

    const INSECURE: &str = "allow_cleartext_i_understand_anyone_on_the_network_can_map_users";
    const SYSTEM_CA: &str = "/etc/ssl/certs/ca-certificates.crt";

    /// The `[ldap]` keys of a migrated config, `key = value` lines in order.
    fn ldap_section(toml: &str) -> Vec<&str> {
        toml.split_once("\n[ldap]\n")
            .map(|(_, rest)| rest)
            .unwrap_or("")
            .lines()
            .take_while(|line| !line.starts_with('['))
            .filter(|line| !line.is_empty() && !line.starts_with('#'))
            .collect()
    }

    /// Every server is reached over TLS: `ldaps://`, or `ldap://` with StartTLS,
    /// and a CA to check it with; never the insecure key.
    fn assert_tls_only(toml: &str) {
        let ldap = ldap_section(toml);
        assert!(!ldap.is_empty(), "{toml}");
        let starttls = ldap.contains(&"starttls = true");
        let uri = ldap
            .iter()
            .find_map(|line| line.strip_prefix("uri = "))
            .unwrap_or_else(|| panic!("{toml}"));
        let uris: Vec<String> = toml::from_str::<toml::Table>(&format!("uri = {uri}")).unwrap()
            ["uri"]
            .as_array()
            .unwrap()
            .iter()
            .map(|uri| uri.as_str().unwrap().to_owned())
            .collect();
        for uri in &uris {
            assert!(
                uri.starts_with("ldaps://") || (uri.starts_with("ldap://") && starttls),
                "{uri} in cleartext:\n{toml}"
            );
        }
        assert!(
            ldap.iter().any(|line| line.starts_with("tls_ca = ")),
            "{toml}"
        );
        assert!(!toml.contains(INSECURE), "{toml}");
        // tessera takes it: with the CA file of this machine in place of the
        // (absent here) one named.
        if std::path::Path::new(SYSTEM_CA).exists() {
            let local: String = toml
                .lines()
                .map(|line| {
                    if line.starts_with("tls_ca = ") {
                        format!("tls_ca = {}\n", quote(SYSTEM_CA))
                    } else {
                        format!("{line}\n")
                    }
                })
                .collect();
            assert!(parses(&local).ldap.is_some());
        } else {
            eprintln!("{SYSTEM_CA} absent: the migrated config is not parsed");
        }
    }

    #[test]
    fn sssd_migration_never_writes_cleartext_ldap() {
        // AD: SSSD used ldap:// with GSSAPI sealing, which tessera has not.
        let toml = sssd(SSSD).unwrap();
        assert_tls_only(&toml);
        assert!(
            toml.contains("uri = [\"ldap://dc1.example.com\", \"ldap://dc2.example.com\"]\n"),
            "{toml}"
        );
        assert!(toml.contains("\nstarttls = true\n"), "{toml}");
        assert!(toml.contains("GSSAPI"), "{toml}");
        assert!(
            toml.contains(&format!("\ntls_ca = {}\n", quote(SYSTEM_CA))),
            "{toml}"
        );

        // SSSD's CA is carried over.
        let with_ca = sssd(&SSSD.replace(
            "ad_domain = example.com",
            "ad_domain = example.com\nldap_tls_cacert = /etc/sssd/pki/ldap-ca.pem",
        ))
        .unwrap();
        assert_tls_only(&with_ca);
        assert!(
            with_ca.contains("\ntls_ca = \"/etc/sssd/pki/ldap-ca.pem\"\n"),
            "{with_ca}"
        );

        // AD over LDAPS.
        let ldaps = sssd(&SSSD.replace(
            "ad_domain = example.com",
            "ad_domain = example.com\nad_use_ldaps = true",
        ))
        .unwrap();
        assert_tls_only(&ldaps);
        assert!(
            ldaps.contains("uri = [\"ldaps://dc1.example.com\", \"ldaps://dc2.example.com\"]\n"),
            "{ldaps}"
        );
        assert!(!ldaps.contains("starttls"), "{ldaps}");

        // AD found through DNS: the domain's name.
        let srv = sssd(&SSSD.replace(
            "ad_server = dc1.example.com, dc2.example.com",
            "ad_server = _srv_",
        ))
        .unwrap();
        assert_tls_only(&srv);
        assert!(srv.contains("uri = [\"ldap://example.com\"]\n"), "{srv}");

        // id_provider = ldap, in cleartext with a simple bind, and without a
        // URI at all.
        let ldap = SSSD.replace(
            "id_provider = ad\nad_domain = example.com\nad_server = dc1.example.com, dc2.example.com",
            "id_provider = ldap\nldap_uri = ldap://ldap1.example.com, ldaps://ldap2.example.com\nldap_default_bind_dn = cn=reader,dc=example,dc=com\nldap_tls_cacert = /etc/openldap/certs/ca.pem\nldap_tls_reqcert = never",
        );
        let toml = sssd(&ldap).unwrap();
        assert_tls_only(&toml);
        assert!(toml.contains("\nstarttls = true\n"), "{toml}");
        assert!(
            toml.contains("\ntls_ca = \"/etc/openldap/certs/ca.pem\"\n"),
            "{toml}"
        );
        assert!(toml.contains("ldap_tls_reqcert = never"), "{toml}");
        let no_uri = sssd(&ldap.replace(
            "ldap_uri = ldap://ldap1.example.com, ldaps://ldap2.example.com\n",
            "",
        ))
        .unwrap();
        assert_tls_only(&no_uri);
        let ldaps_only = sssd(&ldap.replace(
            "ldap_uri = ldap://ldap1.example.com, ldaps://ldap2.example.com",
            "ldap_uri = ldaps://ldap1.example.com",
        ))
        .unwrap();
        assert_tls_only(&ldaps_only);
        assert!(!ldaps_only.contains("starttls"), "{ldaps_only}");
    }

    #[test]
    fn pam_pkcs11_migration_never_writes_cleartext_ldap() {
        // ssl = off, a bind DN: the password went over the network in clear.
        let toml = pam_pkcs11(PAM_PKCS11).unwrap();
        assert_tls_only(&toml);
        assert!(
            toml.contains("uri = [\"ldap://ldap.example.com:389\"]\n"),
            "{toml}"
        );
        assert!(toml.contains("ssl = off"), "{toml}");
        let ldaps = pam_pkcs11(&PAM_PKCS11.replace(
            "ssl = off;",
            "ssl = ssl;\n    tls_cacertfile = /etc/ldap/ca.pem;",
        ))
        .unwrap();
        assert_tls_only(&ldaps);
        assert!(
            ldaps.contains("\ntls_ca = \"/etc/ldap/ca.pem\"\n"),
            "{ldaps}"
        );
        assert!(
            ldaps.contains("uri = [\"ldaps://ldap.example.com:389\"]\n")
                || ldaps.contains("uri = [\"ldaps://ldap.example.com\"]\n"),
            "{ldaps}"
        );
        let uri = pam_pkcs11(&PAM_PKCS11.replace(
            "ldaphost = \"ldap.example.com\";",
            "URI = \"ldap://a.example.com, ldaps://b.example.com\";",
        ))
        .unwrap();
        assert_tls_only(&uri);
    }

    #[test]
    fn files_domain_maprules_become_user_templates_or_stay_commented() {
        let toml = sssd(
            "[sssd]\nservices = nss, pam\ndomains = example.test\n\n[pam]\npam_cert_auth = True\n\n\
             [domain/example.test]\nid_provider = files\n\n\
             [certmap/example.test/mail]\nmatchrule = <EKU>clientAuth<SAN:rfc822Name>@example\\.test$\n\
             maprule = ({subject_rfc822_name.short_name})\npriority = 1\n\n\
             [certmap/example.test/fixed]\nmatchrule = <SUBJECT>.*CN=alice.*\nmaprule = (alice)\npriority = 2\n",
        )
        .unwrap();
        let config = parses(&toml);
        assert_eq!(config.rules.len(), 1, "{toml}");
        assert!(
            toml.contains("user = \"{subject_rfc822_name.short_name}\"\n")
                && toml.contains("domain = \"example.test\"")
                && !toml.contains("ldap_filter"),
            "{toml}"
        );
        assert!(
            toml.contains("# user = \"alice\"")
                && toml.contains("tessera does not map to a fixed user name"),
            "{toml}"
        );
    }

    #[test]
    fn a_gssapi_bind_is_named_as_what_tessera_cannot_do() {
        let toml = sssd(
            "[domain/example.test]\nid_provider = ldap\nldap_uri = ldaps://ldap.example.test\n\
             ldap_sasl_mech = GSSAPI\nldap_tls_cacert = /etc/ssl/certs/ca-certificates.crt\n\n\
             [certmap/example.test/c]\nmaprule = (mail={subject_rfc822_name})\n",
        )
        .unwrap();
        parses(&toml);
        assert!(toml.contains("SASL GSSAPI"), "{toml}");
    }

    #[test]
    fn broken_inputs_are_errors_not_panics() {
        assert!(pam_pkcs11("pam_pkcs11 { a = \"b; }").is_err());
        assert!(pam_pkcs11("other { }").is_err());
        assert!(pam_pkcs11("pam_pkcs11 { x { ").is_err());
        assert!(sssd("key = value").is_err());
        assert!(sssd("[sssd]\nnot a pair").is_err());
    }
}
