//! `tessera migrate sssd`: sssd.conf (its certmap rules, the LDAP or AD
//! domain they search, the CA database) to tessera.toml.

use std::collections::BTreeMap;

use super::output::{commented_rule, push_starttls, quote, rule, Output, SYSTEM_CA_FILE};

/// sssd.conf sections: name -> (key -> value).
fn ini(text: &str) -> Result<BTreeMap<String, BTreeMap<String, String>>, String> {
    let mut sections: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut current: Option<String> = None;
    for (index, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            current = Some(name.trim().to_owned());
            sections.entry(name.trim().to_owned()).or_default();
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .ok_or_else(|| format!("line {}: expected `key = value`", index + 1))?;
        let section = current
            .as_ref()
            .ok_or_else(|| format!("line {}: key outside a section", index + 1))?;
        sections
            .entry(section.clone())
            .or_default()
            .insert(key.trim().to_owned(), value.trim().to_owned());
    }
    Ok(sections)
}

/// Converts an sssd.conf: certmap rules, the LDAP/AD domain they search, and
/// the CA database.
pub fn sssd(text: &str) -> Result<String, String> {
    let sections = ini(text)?;
    let mut out = Output::default();
    if let Some(pam) = sections.get("pam") {
        if let Some(db) = pam.get("pam_cert_db_path") {
            out.ca.push(db.clone());
        }
        if !pam
            .get("pam_cert_auth")
            .is_some_and(|value| value.eq_ignore_ascii_case("true"))
        {
            out.note("pam_cert_auth was not enabled in sssd.conf.");
        }
    }
    if out.ca.is_empty() {
        out.ca.push("/etc/sssd/pki/sssd_auth_ca_db.pem".to_owned());
        out.note("pki.ca: SSSD's default CA database.");
    }
    if let Some(verification) = sections
        .get("sssd")
        .and_then(|s| s.get("certificate_verification"))
    {
        out.note(format!(
            "certificate_verification = {verification}: tessera always validates chain and validity; see [pki] for revocation."
        ));
    }
    // The first domain that searches a directory provides [ldap].
    let mut ldap_domain: Option<&str> = None;
    for (name, keys) in &sections {
        let Some(domain) = name.strip_prefix("domain/") else {
            continue;
        };
        let provider = keys.get("id_provider").map(String::as_str).unwrap_or("");
        if (provider == "ldap" || provider == "ad") && ldap_domain.is_none() {
            ldap_domain = Some(domain);
            ldap_from_sssd(keys, provider, domain, &mut out);
        }
    }
    let mut certmaps: Vec<(u32, &str, &str, &BTreeMap<String, String>)> = sections
        .iter()
        .filter_map(|(name, keys)| {
            let rest = name.strip_prefix("certmap/")?;
            let (domain, rule_name) = rest.split_once('/').unwrap_or(("", rest));
            let priority = keys
                .get("priority")
                .and_then(|p| p.parse().ok())
                .unwrap_or(u32::MAX);
            Some((priority, domain, rule_name, keys))
        })
        .collect();
    // SSSD: the lowest number is the highest priority; rules without one come last.
    certmaps.sort_by_key(|(priority, _, name, _)| (*priority, name.to_string()));
    if certmaps.is_empty() {
        out.note("No [certmap/…] section: SSSD's default rule matched clientAuth certificates and searched (userCertificate;binary={cert!bin}).");
    }
    for (_, domain, name, keys) in certmaps {
        let mut comments = Vec::new();
        let mut lines = Vec::new();
        if let Some(domains) = keys.get("domains") {
            comments.push(format!(
                "SSSD limited this rule to domains {domains}; tessera has one directory."
            ));
        }
        if let Some(matchrule) = keys.get("matchrule") {
            lines.push(format!("matchrule = {}", quote(matchrule)));
        }
        let maprule = keys
            .get("maprule")
            .map(String::as_str)
            .unwrap_or("(userCertificate;binary={cert!bin})");
        let filter = maprule
            .strip_prefix("LDAPU1:")
            .or_else(|| maprule.strip_prefix("LDAP:"))
            .unwrap_or(maprule);
        // The domain an address's `.short_name` is trusted in: the rule's
        // SSSD domain (SSSD itself checks none).
        let trusted = if domain.is_empty() {
            ldap_domain.unwrap_or("example.com")
        } else {
            domain
        };
        if filter.contains(".short_name") {
            comments.push(format!(
                "{{….short_name}} drops the domain; tessera requires `domain` (check {trusted}: SSSD checked none)."
            ));
            lines.push(format!("domain = {}", quote(trusted)));
        }
        let provider = sections
            .get(&format!("domain/{domain}"))
            .and_then(|keys| keys.get("id_provider"))
            .map(String::as_str)
            .unwrap_or("");
        if matches!(provider, "files" | "proxy") {
            // Local users: SSSD's maprule is `(user name)`, templates allowed.
            local_user_rule(name, filter, comments, lines, &mut out);
            continue;
        }
        if filter.contains("userCertificate;binary") {
            comments.push("OpenLDAP does not match (userCertificate;binary=<DER>); Active Directory does. For OpenLDAP use (userCertificate={ serialNumber {serial_dec}, issuer rdnSequence:\"{issuer}\" }).".to_owned());
        }
        if ldap_domain.is_some() {
            lines.push(format!("ldap_filter = {}", quote(filter)));
            out.rules.push(rule(name, &comments, &lines));
        } else {
            comments.push(
                "No LDAP or AD domain in sssd.conf: add an [ldap] section, then uncomment."
                    .to_owned(),
            );
            lines.push(format!("ldap_filter = {}", quote(filter)));
            out.rules.push(commented_rule(name, &comments, &lines));
        }
    }
    Ok(out.render("sssd.conf"))
}

/// A certmap rule of a `files` or `proxy` domain: its maprule names the local
/// user, `(alice)` or `({subject_rfc822_name.short_name})`. A template carries
/// over as `user`; a fixed name does not, since tessera never maps
/// certificates to a constant user name.
fn local_user_rule(
    name: &str,
    maprule: &str,
    mut comments: Vec<String>,
    mut lines: Vec<String>,
    out: &mut Output,
) {
    let user = maprule
        .strip_prefix('(')
        .and_then(|rest| rest.strip_suffix(')'))
        .filter(|user| !user.contains(['(', ')']));
    match user {
        Some(template) if template.contains('{') => {
            lines.push(format!("user = {}", quote(template)));
            out.rules.push(rule(name, &comments, &lines));
        }
        Some(user) => {
            comments.push(format!(
                "SSSD mapped every certificate this matchrule matches to the local user {user}. tessera does not map to a fixed user name: use a template (user = \"{{cn}}\" when the CN is the login name) or a mapfile keyed by {{sha256}}, then uncomment."
            ));
            lines.push(format!("user = {}", quote(user)));
            out.rules.push(commented_rule(name, &comments, &lines));
        }
        None => {
            comments.push(format!(
                "SSSD reads a local-user maprule as `(user name)`; {maprule} is not of that form: write the user template, then uncomment."
            ));
            lines.push(format!("user = {}", quote(maprule)));
            out.rules.push(commented_rule(name, &comments, &lines));
        }
    }
}

fn ldap_from_sssd(keys: &BTreeMap<String, String>, provider: &str, domain: &str, out: &mut Output) {
    let yes = |key: &str| {
        keys.get(key)
            .is_some_and(|v| v.eq_ignore_ascii_case("true"))
    };
    // SSSD's AD provider talks ldap:// to the domain controllers, sealed with
    // GSSAPI (Kerberos), or ldaps:// with ad_use_ldaps. tessera binds simply
    // or anonymously, so it needs TLS instead: StartTLS on ldap://.
    let ad_scheme = if yes("ad_use_ldaps") { "ldaps" } else { "ldap" };
    let uris: Vec<String> = match keys.get("ldap_uri") {
        Some(list) => list
            .split(',')
            .map(str::trim)
            .filter(|uri| !uri.is_empty())
            .map(str::to_owned)
            .collect(),
        None if provider == "ad" => {
            // `_srv_` is DNS discovery: the domain's name stands for it.
            let servers: Vec<String> = keys
                .get("ad_server")
                .map(|servers| {
                    servers
                        .split(',')
                        .map(str::trim)
                        .filter(|server| !server.is_empty() && *server != "_srv_")
                        .map(|server| format!("{ad_scheme}://{server}"))
                        .collect()
                })
                .unwrap_or_default();
            if servers.is_empty() {
                vec![format!("{ad_scheme}://{domain}")]
            } else {
                servers
            }
        }
        None => vec!["ldap://localhost".to_owned()],
    };
    let list: Vec<String> = uris.iter().map(|u| quote(u)).collect();
    out.ldap.push(format!(
        "# from [domain/{domain}] (id_provider = {provider})"
    ));
    out.ldap.push(format!("uri = [{}]", list.join(", ")));
    let base = keys.get("ldap_search_base").cloned().unwrap_or_else(|| {
        domain
            .split('.')
            .map(|dc| format!("dc={dc}"))
            .collect::<Vec<_>>()
            .join(",")
    });
    out.ldap.push(format!("base = {}", quote(&base)));
    if uris.iter().any(|uri| uri.starts_with("ldap://")) && !yes("ldap_id_use_start_tls") {
        let gssapi = provider == "ad"
            || keys
                .get("ldap_sasl_mech")
                .is_some_and(|mech| mech.eq_ignore_ascii_case("gssapi"));
        out.ldap.push(if gssapi {
            "# SSSD sealed ldap:// with GSSAPI (Kerberos), which tessera does not do; tessera refuses cleartext LDAP, so it uses StartTLS (the servers need a TLS certificate)."
                .to_owned()
        } else {
            "# SSSD did not use StartTLS (ldap_id_use_start_tls); tessera refuses cleartext LDAP, so it does."
                .to_owned()
        });
    }
    push_starttls(&uris, out);
    match keys.get("ldap_tls_cacert") {
        Some(ca) => out.ldap.push(format!("tls_ca = {}", quote(ca))),
        None => {
            match keys.get("ldap_tls_cacertdir") {
                Some(dir) => out.ldap.push(format!(
                    "# SSSD read the CAs in ldap_tls_cacertdir = {dir}; tessera reads one PEM file: name the CA that signs the directory."
                )),
                None => out.ldap.push(
                    "# SSSD trusted the system CA store (or TLS_CACERT of ldap.conf); name the CA that signs the directory."
                        .to_owned(),
                ),
            }
            out.ldap.push(format!("tls_ca = {}", quote(SYSTEM_CA_FILE)));
        }
    }
    if let Some(reqcert) = keys
        .get("ldap_tls_reqcert")
        .filter(|value| matches!(value.to_ascii_lowercase().as_str(), "never" | "allow"))
    {
        out.ldap.push(format!(
            "# UNSAFE in SSSD: ldap_tls_reqcert = {reqcert} accepted servers without a valid certificate; tessera always checks it against tls_ca."
        ));
    }
    if provider == "ad" && !keys.contains_key("ldap_default_bind_dn") {
        out.ldap.push("# SSSD searched as the machine account (Kerberos); Active Directory refuses anonymous searches: add bind_dn and bind_password_file for a reader account.".to_owned());
    }
    if keys
        .get("ldap_sasl_mech")
        .is_some_and(|mech| mech.eq_ignore_ascii_case("gssapi"))
    {
        out.ldap.push("# SSSD bound with SASL GSSAPI (Kerberos, the host's keytab), which tessera cannot do: bind with bind_dn and bind_password_file (a reader account), or anonymously where the directory allows it.".to_owned());
    }
    if let Some(dn) = keys.get("ldap_default_bind_dn") {
        out.ldap.push(format!("bind_dn = {}", quote(dn)));
        out.ldap
            .push("# ldap_default_authtok moves to a root-only file (mode 0600).".to_owned());
        out.ldap
            .push("bind_password_file = \"/etc/tessera/ldap-password\"".to_owned());
    }
    let attribute = keys.get("ldap_user_name").cloned().unwrap_or_else(|| {
        if provider == "ad" {
            "sAMAccountName".to_owned()
        } else {
            "uid".to_owned()
        }
    });
    out.ldap
        .push(format!("user_attribute = {}", quote(&attribute)));
    if let Some(timeout) = keys.get("ldap_search_timeout") {
        out.ldap.push(format!("search_timeout = {timeout}.0"));
    }
    if let Some(timeout) = keys.get("ldap_network_timeout") {
        out.ldap.push(format!("connect_timeout = {timeout}.0"));
    }
}
