//! The tessera.toml that `tessera migrate` writes, whatever the input
//! format: its sections, rules (live or commented out) and notes.

use std::fmt::Write as _;

/// A TOML string literal.
pub(super) fn quote(text: &str) -> String {
    toml::Value::String(text.to_owned()).to_string()
}

/// The pieces of the tessera.toml being written.
#[derive(Debug, Default)]
pub(super) struct Output {
    pub(super) notes: Vec<String>,
    pub(super) module: Option<String>,
    pub(super) ca: Vec<String>,
    pub(super) ldap: Vec<String>,
    pub(super) rules: Vec<String>,
}

impl Output {
    pub(super) fn note(&mut self, text: impl Into<String>) {
        self.notes.push(text.into());
    }

    pub(super) fn render(&self, source: &str) -> String {
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

/// A `[[rule]]` table named `name` with `lines`, after `comments`.
pub(super) fn rule(name: &str, comments: &[String], lines: &[String]) -> String {
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

/// A rule written as comments, to be reviewed and uncommented.
pub(super) fn commented_rule(name: &str, comments: &[String], lines: &[String]) -> String {
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

/// Where tessera looks for CAs when the old configuration named none: the
/// system store, which the comment before it asks to narrow down.
pub(super) const SYSTEM_CA_FILE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// `starttls = true` when any URI is `ldap://`: tessera refuses cleartext
/// LDAP (see `ldap.allow_cleartext_…` in tessera.toml(5)), so a migrated
/// config never asks for it.
pub(super) fn push_starttls(uris: &[String], out: &mut Output) {
    if uris.iter().any(|uri| uri.starts_with("ldap://")) {
        out.ldap.push("starttls = true".to_owned());
    }
}
