//! `tessera migrate pam_pkcs11 FILE` and `tessera migrate sssd FILE`: print a
//! tessera.toml equivalent to an existing pam_pkcs11.conf or sssd.conf, with
//! comments for what has no equivalent and for the old unsafe defaults.

use std::collections::BTreeMap;
use std::fmt::Write as _;

/// A TOML string literal.
fn quote(text: &str) -> String {
    toml::Value::String(text.to_owned()).to_string()
}

/// The pieces of the tessera.toml being written.
#[derive(Debug, Default)]
struct Output {
    notes: Vec<String>,
    module: Option<String>,
    ca: Vec<String>,
    ldap: Vec<String>,
    rules: Vec<String>,
}

impl Output {
    fn note(&mut self, text: impl Into<String>) {
        self.notes.push(text.into());
    }

    fn render(&self, source: &str) -> String {
        let mut out = format!("# tessera.toml migrated from {source} by `tessera migrate`.\n");
        out.push_str("# Review every comment, then check it with `tessera check-config`\n");
        out.push_str("# and try certificates with `tessera map CERT.pem`.\n");
        for note in &self.notes {
            for line in note.lines() {
                let _ = writeln!(out, "# {line}");
            }
        }
        out.push_str("\nversion = 1\n\n[pkcs11]\n");
        match &self.module {
            Some(module) => {
                let _ = writeln!(out, "module = {}", quote(module));
            }
            None => out.push_str("# module: p11-kit's proxy (the default)\n"),
        }
        out.push_str("\n[pki]\n");
        if self.ca.is_empty() {
            out.push_str("# No CA was found in the old configuration: name yours.\nca = [\"/etc/tessera/ca\"]\n");
        } else {
            let list: Vec<String> = self.ca.iter().map(|ca| quote(ca)).collect();
            let _ = writeln!(out, "ca = [{}]", list.join(", "));
        }
        if !self.ldap.is_empty() {
            out.push_str("\n[ldap]\n");
            for line in &self.ldap {
                out.push_str(line);
                out.push('\n');
            }
        }
        if self.rules.is_empty() {
            out.push_str("\n# No mapping could be carried over; tessera needs at least one rule.\n[[rule]]\nuser = \"{cn}\"\n");
        }
        for rule in &self.rules {
            out.push('\n');
            out.push_str(rule);
        }
        out
    }
}

/// One element of a pam_pkcs11 (scconf) file.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Item {
    Pair(String, Vec<String>),
    Block(String, Vec<String>, Vec<Item>),
}

/// scconf tokens: words, quoted strings, and `{ } = ; ,`.
fn scconf_tokens(text: &str) -> Result<Vec<(String, bool)>, String> {
    let mut tokens = Vec::new();
    let mut chars = text.chars().peekable();
    let mut line = 1;
    while let Some(&c) = chars.peek() {
        match c {
            '\n' => {
                line += 1;
                chars.next();
            }
            c if c.is_whitespace() => {
                chars.next();
            }
            '#' => {
                while chars.peek().is_some_and(|&c| c != '\n') {
                    chars.next();
                }
            }
            '{' | '}' | '=' | ';' | ',' => {
                tokens.push((c.to_string(), false));
                chars.next();
            }
            '"' => {
                chars.next();
                let mut value = String::new();
                loop {
                    match chars.next() {
                        None => return Err(format!("line {line}: unterminated string")),
                        Some('"') => break,
                        Some('\\') => value.extend(chars.next()),
                        Some(other) => value.push(other),
                    }
                }
                tokens.push((value, true));
            }
            _ => {
                let mut word = String::new();
                while chars
                    .peek()
                    .is_some_and(|&c| !c.is_whitespace() && !"{}=;,#\"".contains(c))
                {
                    word.extend(chars.next());
                }
                tokens.push((word, true));
            }
        }
    }
    Ok(tokens)
}

fn scconf_items(
    tokens: &[(String, bool)],
    position: &mut usize,
    depth: usize,
) -> Result<Vec<Item>, String> {
    if depth > 16 {
        return Err("blocks nested too deeply".to_owned());
    }
    let mut items = Vec::new();
    while *position < tokens.len() {
        let (token, is_word) = &tokens[*position];
        if token == "}" && !is_word {
            *position += 1;
            return Ok(items);
        }
        if !is_word {
            *position += 1;
            continue;
        }
        let name = token.clone();
        *position += 1;
        let mut words = Vec::new();
        while let Some((next, is_word)) = tokens.get(*position) {
            if *is_word {
                words.push(next.clone());
                *position += 1;
            } else {
                break;
            }
        }
        match tokens.get(*position).map(|(t, _)| t.as_str()) {
            Some("=") => {
                *position += 1;
                let mut values = Vec::new();
                while let Some((value, is_word)) = tokens.get(*position) {
                    *position += 1;
                    match (value.as_str(), is_word) {
                        (";", false) => break,
                        (",", false) => {}
                        (_, true) => values.push(value.clone()),
                        _ => {
                            *position -= 1;
                            break;
                        }
                    }
                }
                items.push(Item::Pair(name, values));
            }
            Some("{") => {
                *position += 1;
                let children = scconf_items(tokens, position, depth + 1)?;
                items.push(Item::Block(name, words, children));
            }
            _ => return Err(format!("`{name}` is neither `key = value;` nor a block")),
        }
    }
    if depth > 0 {
        return Err("unclosed block".to_owned());
    }
    Ok(items)
}

fn value<'a>(items: &'a [Item], key: &str) -> Option<&'a str> {
    items.iter().find_map(|item| match item {
        Item::Pair(name, values) if name == key => values.first().map(String::as_str),
        _ => None,
    })
}

fn values<'a>(items: &'a [Item], key: &str) -> Vec<&'a str> {
    items
        .iter()
        .find_map(|item| match item {
            Item::Pair(name, values) if name == key => {
                Some(values.iter().map(String::as_str).collect())
            }
            _ => None,
        })
        .unwrap_or_default()
}

fn block<'a>(items: &'a [Item], kind: &str, name: &str) -> Option<&'a [Item]> {
    items.iter().find_map(|item| match item {
        Item::Block(block_kind, words, children)
            if block_kind == kind && words.first().map(String::as_str) == Some(name) =>
        {
            Some(children.as_slice())
        }
        _ => None,
    })
}

fn truthy(text: Option<&str>) -> bool {
    matches!(text, Some("true" | "yes" | "on" | "1"))
}

/// pam_pkcs11 writes mapfiles as URLs (`file:///etc/…`); "none" means none.
fn mapfile_path(items: &[Item]) -> Option<String> {
    let raw = value(items, "mapfile")?;
    if raw == "none" || raw.is_empty() {
        return None;
    }
    Some(raw.strip_prefix("file://").unwrap_or(raw).to_owned())
}

fn rule(name: &str, comments: &[String], lines: &[String]) -> String {
    let mut text = String::new();
    for comment in comments {
        for line in comment.lines() {
            let _ = writeln!(text, "# {line}");
        }
    }
    let _ = writeln!(text, "[[rule]]\nname = {}", quote(name));
    for line in lines {
        let _ = writeln!(text, "{line}");
    }
    text
}

fn commented_rule(name: &str, comments: &[String], lines: &[String]) -> String {
    let body = rule(name, &[], lines);
    let mut text = String::new();
    for comment in comments {
        for line in comment.lines() {
            let _ = writeln!(text, "# {line}");
        }
    }
    for line in body.lines() {
        let _ = writeln!(text, "# {line}");
    }
    text
}

/// Converts a pam_pkcs11.conf.
pub fn pam_pkcs11(text: &str) -> Result<String, String> {
    let tokens = scconf_tokens(text)?;
    let mut position = 0;
    let top = scconf_items(&tokens, &mut position, 0)?;
    let items = top
        .iter()
        .find_map(|item| match item {
            Item::Block(name, _, children) if name == "pam_pkcs11" => Some(children.as_slice()),
            _ => None,
        })
        .ok_or("no `pam_pkcs11 { … }` block")?;
    let mut out = Output::default();

    // ca_dir, crl_dir and cert_policy sit in the module's block in Debian's
    // example, at the top level in older files.
    let empty: &[Item] = &[];
    let module_block = value(items, "use_pkcs11_module")
        .and_then(|name| block(items, "pkcs11_module", name))
        .unwrap_or(empty);
    out.module = value(module_block, "module").map(str::to_owned);
    let setting = |key: &str| value(module_block, key).or_else(|| value(items, key));
    if let Some(ca) = setting("ca_dir") {
        out.ca.push(ca.to_owned());
        out.note("pki.ca: tessera reads *.pem, *.crt, *.cer and *.der files from ca_dir (not c_rehash links).");
    }
    if setting("crl_dir").is_some() {
        out.note("crl_dir: revocation is configured in [pki]; see tessera.toml(5).");
    }
    let mut policy = values(module_block, "cert_policy");
    if policy.is_empty() {
        policy = values(items, "cert_policy");
    }
    if policy.contains(&"none") || (!policy.is_empty() && !policy.contains(&"ca")) {
        out.note(format!(
            "UNSAFE in pam_pkcs11: cert_policy = {} skipped CA checks. tessera always validates the chain and validity, and always proves possession with a signature.",
            policy.join(", ")
        ));
    }
    if truthy(value(items, "nullok")) {
        out.note("nullok: tessera never accepts an empty PIN.");
    }

    let mappers = values(items, "use_mappers");
    if mappers.is_empty() {
        out.note("use_mappers is empty; pam_pkcs11 then maps nothing.");
    }
    for name in mappers {
        let empty: &[Item] = &[];
        let options = block(items, "mapper", name).unwrap_or(empty);
        let mapfile = mapfile_path(options);
        let ignorecase = truthy(value(options, "ignorecase"));
        let mut comments = Vec::new();
        if ignorecase {
            comments.push(
                "pam_pkcs11 compared case-insensitively (ignorecase); tessera compares exactly."
                    .to_owned(),
            );
        }
        let direct_or_mapfile = |field: &str, comments: &mut Vec<String>| -> Vec<String> {
            match &mapfile {
                Some(path) => {
                    comments.push("A key missing from the mapfile is a miss in tessera; pam_pkcs11 fell back to the key itself as the user name.".to_owned());
                    vec![
                        format!("mapfile = {}", quote(path)),
                        format!("key = {}", quote(field)),
                    ]
                }
                None => vec![format!("user = {}", quote(field))],
            }
        };
        match name {
            "cn" => {
                let lines = direct_or_mapfile("{cn}", &mut comments);
                out.rules.push(rule("cn", &comments, &lines));
            }
            "uid" => {
                let lines = direct_or_mapfile("{uid}", &mut comments);
                out.rules.push(rule("uid", &comments, &lines));
            }
            "subject" => {
                comments.push("pam_pkcs11 keyed this mapfile by the OpenSSL \"oneline\" subject (/C=../O=../CN=..), which is ambiguous. tessera uses RFC 4514 (CN=..,O=..,C=..): rewrite the keys; `tessera map CERT.pem` prints each certificate's subject.".to_owned());
                let lines = direct_or_mapfile("{subject}", &mut comments);
                if mapfile.is_some() {
                    out.rules.push(rule("subject", &comments, &lines));
                } else {
                    comments.push("Without a mapfile the subject mapper cannot give a user name.".to_owned());
                    out.rules.push(commented_rule("subject", &comments, &lines));
                }
            }
            "digest" => {
                let algorithm = value(options, "algorithm").unwrap_or("sha1");
                let field = match algorithm {
                    "sha1" => Some("{sha1!hex_uc}"),
                    "sha256" => Some("{sha256!hex_uc}"),
                    _ => None,
                };
                match (field, &mapfile) {
                    (Some(field), Some(path)) => {
                        comments.push(format!("pam_pkcs11's digest mapper: {algorithm} of the certificate as XX:XX:… keys."));
                        comments.push("A key missing from the mapfile is a miss in tessera; pam_pkcs11 fell back to the key itself as the user name.".to_owned());
                        out.rules.push(rule(
                            "digest",
                            &comments,
                            &[format!("mapfile = {}", quote(path)), format!("key = {}", quote(field))],
                        ));
                    }
                    _ => out.note(format!("digest mapper with algorithm {algorithm} and no usable mapfile: no equivalent (tessera has sha1 and sha256).")),
                }
            }
            "mail" | "ms" => {
                let (field, local) = if name == "mail" { ("email", "{email.local}") } else { ("upn", "{upn.local}") };
                let domain = value(options, "domain").filter(|d| !d.is_empty());
                let ignoredomain = value(options, "ignoredomain").map_or(name == "mail", |v| truthy(Some(v)));
                if ignoredomain {
                    comments.push(format!("UNSAFE in pam_pkcs11: ignoredomain maps {field} root@evil.example to root. tessera never ignores the domain."));
                }
                match (&mapfile, domain) {
                    (Some(path), _) => {
                        out.rules.push(rule(name, &comments, &[format!("mapfile = {}", quote(path)), format!("key = {}", quote(&format!("{{{field}}}")))]));
                    }
                    (None, Some(domain)) => {
                        out.rules.push(rule(name, &comments, &[format!("user = {}", quote(local)), format!("domain = {}", quote(domain))]));
                    }
                    (None, None) => {
                        comments.push("Name the domain whose addresses map to local users, then uncomment.".to_owned());
                        out.rules.push(commented_rule(name, &comments, &[format!("user = {}", quote(local)), "domain = \"example.com\"".to_owned()]));
                    }
                }
            }
            "krb" => {
                let lines = match &mapfile {
                    Some(path) => vec![format!("mapfile = {}", quote(path)), "key = \"{krb_principal}\"".to_owned()],
                    None => vec!["user = \"{krb_principal}\"".to_owned()],
                };
                out.rules.push(rule("krb", &comments, &lines));
            }
            "pwent" => {
                comments.push("UNSAFE in pam_pkcs11: pwent also matched the CN against GECOS, which users can edit. tessera never matches GECOS; this rule maps the CN to a login name only.".to_owned());
                out.rules.push(rule("pwent", &comments, &["user = \"{cn}\"".to_owned()]));
            }
            "openssh" | "opensc" => {
                comments.push(format!(
                    "pam_pkcs11's {name} mapper: keys in the user's {}. tessera reads ~/.ssh/authorized_keys and ~/.config/tessera/authorized_certificates, only when owned by the user or root and not group/world-writable, and checks no chain, expiry or revocation for such keys.",
                    if name == "openssh" { "~/.ssh/authorized_keys" } else { "~/.eid/authorized_certificates (move it to ~/.config/tessera/authorized_certificates)" }
                ));
                out.rules.push(rule(name, &comments, &["authorized_files = true".to_owned()]));
            }
            "ldap" => {
                ldap_from_pam_pkcs11(options, &mut out);
                comments.push("pam_pkcs11 fetched the user's entry and compared certificate bytes; tessera searches for the entry holding this certificate.".to_owned());
                out.rules.push(rule("ldap", &comments, &[format!(
                    "ldap_filter = {}",
                    quote("(userCertificate={ serialNumber {serial_dec}, issuer rdnSequence:\"{issuer}\" })")
                )]));
            }
            "generic" => {
                let item = value(options, "cert_item").unwrap_or("cn");
                let field = match item {
                    "cn" => "{cn}",
                    "subject" => "{subject}",
                    "kpn" => "{krb_principal}",
                    "email" => "{email}",
                    "upn" => "{upn}",
                    "uid" => "{uid}",
                    _ => "",
                };
                if truthy(value(options, "use_getpwent")) {
                    comments.push("UNSAFE in pam_pkcs11: use_getpwent matched GECOS. tessera never does.".to_owned());
                }
                if field.is_empty() {
                    out.note(format!("generic mapper with cert_item {item}: no equivalent."));
                } else {
                    let lines = direct_or_mapfile(field, &mut comments);
                    out.rules.push(rule("generic", &comments, &lines));
                }
            }
            "null" => out.note("UNSAFE in pam_pkcs11: the null mapper maps every certificate to one default user. No equivalent."),
            other => out.note(format!("mapper {other}: no equivalent in tessera.")),
        }
    }
    Ok(out.render("pam_pkcs11.conf"))
}

/// Where tessera looks for CAs when the old configuration named none: the
/// system store, which the comment before it asks to narrow down.
const SYSTEM_CA_FILE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// `starttls = true` when any URI is `ldap://`: tessera refuses cleartext
/// LDAP (see `ldap.allow_cleartext_…` in tessera.toml(5)), so a migrated
/// config never asks for it.
fn push_starttls(uris: &[String], out: &mut Output) {
    if uris.iter().any(|uri| uri.starts_with("ldap://")) {
        out.ldap.push("starttls = true".to_owned());
    }
}

fn ldap_from_pam_pkcs11(options: &[Item], out: &mut Output) {
    // pam_pkcs11's ldap mapper: ssl = tls is StartTLS, ssl = on or ssl is
    // LDAPS, anything else (off, the default) is cleartext.
    let ssl = value(options, "ssl").unwrap_or("off").to_ascii_lowercase();
    let starttls = matches!(ssl.as_str(), "tls" | "start_tls");
    let ldaps = matches!(ssl.as_str(), "on" | "ssl");
    let uri = value(options, "URI")
        .map(|uris| {
            uris.split(',')
                .map(str::trim)
                .filter(|uri| !uri.is_empty())
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .unwrap_or_else(|| {
            let host = value(options, "ldaphost").unwrap_or("localhost");
            match (ldaps, value(options, "ldapport")) {
                (true, Some(port)) => vec![format!("ldaps://{host}:{port}")],
                (true, None) => vec![format!("ldaps://{host}")],
                (false, port) => vec![format!("ldap://{host}:{}", port.unwrap_or("389"))],
            }
        });
    if !starttls && uri.iter().any(|uri| uri.starts_with("ldap://")) {
        out.note(format!(
            "UNSAFE in pam_pkcs11: ssl = {ssl} sent the LDAP search (and the bind password) over the network in cleartext: anyone on the path could read the password, or answer the search and map any valid card to any user. The [ldap] section below uses StartTLS instead."
        ));
    }
    let list: Vec<String> = uri.iter().map(|u| quote(u)).collect();
    out.ldap.push(format!("uri = [{}]", list.join(", ")));
    out.ldap.push(format!(
        "base = {}",
        quote(value(options, "base").unwrap_or(""))
    ));
    if let Some(scope) = value(options, "scope") {
        let scope = match scope {
            "0" => "base",
            "1" => "one",
            _ => "sub",
        };
        out.ldap.push(format!("scope = {}", quote(scope)));
    }
    push_starttls(&uri, out);
    match value(options, "tls_cacertfile") {
        Some(ca) => out.ldap.push(format!("tls_ca = {}", quote(ca))),
        None => {
            match value(options, "tls_cacertdir") {
                Some(dir) => out.ldap.push(format!(
                    "# pam_pkcs11 read the CAs in tls_cacertdir = {dir}; tessera reads one PEM file: name the CA that signs the directory."
                )),
                None => out.ldap.push(
                    "# pam_pkcs11 trusted the system CA store; name the CA that signs the directory."
                        .to_owned(),
                ),
            }
            out.ldap.push(format!("tls_ca = {}", quote(SYSTEM_CA_FILE)));
        }
    }
    if let Some(dn) = value(options, "binddn").filter(|dn| !dn.is_empty()) {
        out.ldap.push(format!("bind_dn = {}", quote(dn)));
        out.ldap.push(
            "# The password was in pam_pkcs11.conf; put it in a root-only file (mode 0600)."
                .to_owned(),
        );
        out.ldap
            .push("bind_password_file = \"/etc/tessera/ldap-password\"".to_owned());
    }
    if let Some(timeout) = value(options, "ldap_timeout") {
        out.ldap.push(format!("search_timeout = {timeout}.0"));
    }
}

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
    let mut certmaps: Vec<(u32, &str, &BTreeMap<String, String>)> = sections
        .iter()
        .filter_map(|(name, keys)| {
            let rest = name.strip_prefix("certmap/")?;
            let rule_name = rest.split_once('/').map_or(rest, |(_, r)| r);
            let priority = keys
                .get("priority")
                .and_then(|p| p.parse().ok())
                .unwrap_or(u32::MAX);
            Some((priority, rule_name, keys))
        })
        .collect();
    // SSSD: the lowest number is the highest priority; rules without one come last.
    certmaps.sort_by_key(|(priority, name, _)| (*priority, name.to_string()));
    if certmaps.is_empty() {
        out.note("No [certmap/…] section: SSSD's default rule matched clientAuth certificates and searched (userCertificate;binary={cert!bin}).");
    }
    for (_, name, keys) in certmaps {
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
        if filter.contains("userCertificate;binary") {
            comments.push("OpenLDAP does not match (userCertificate;binary=<DER>); Active Directory does. For OpenLDAP use (userCertificate={ serialNumber {serial_dec}, issuer rdnSequence:\"{issuer}\" }).".to_owned());
        }
        if filter.contains(".short_name") {
            let domain = ldap_domain.unwrap_or("example.com");
            comments.push(format!(
                "{{….short_name}} drops the domain; tessera requires `domain` (check {domain})."
            ));
            lines.push(format!("domain = {}", quote(domain)));
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

#[cfg(test)]
mod tests {
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
    fn broken_inputs_are_errors_not_panics() {
        assert!(pam_pkcs11("pam_pkcs11 { a = \"b; }").is_err());
        assert!(pam_pkcs11("other { }").is_err());
        assert!(pam_pkcs11("pam_pkcs11 { x { ").is_err());
        assert!(sssd("key = value").is_err());
        assert!(sssd("[sssd]\nnot a pair").is_err());
    }
}
