//! `tessera migrate pam_pkcs11`: pam_pkcs11.conf (scconf) to tessera.toml.

use super::output::{commented_rule, push_starttls, quote, rule, Output, SYSTEM_CA_FILE};

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
