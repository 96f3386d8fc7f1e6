//! `tessera setup`: a starting configuration from a CA file and one rule.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tessera_core::pki::TrustStore;
use tessera_core::Config;

/// What `tessera setup` was asked for.
#[derive(Debug)]
pub struct SetupRequest {
    /// The CA certificate to trust.
    pub ca: PathBuf,
    /// The user template of the first rule.
    pub rule: String,
    /// The PKCS#11 module; `None` keeps the default (p11-kit's proxy).
    pub module: Option<PathBuf>,
    /// `pki.revocation`; `None` keeps the default.
    pub revocation: Option<String>,
    /// Where the configuration goes.
    pub output: PathBuf,
    /// Overwrite existing files.
    pub force: bool,
}

fn toml_string(text: &str) -> String {
    toml::Value::String(text.to_owned()).to_string()
}

/// The configuration text; the CA is named by its directory so that more
/// anchors can be dropped next to it later.
fn render(request: &SetupRequest, ca_dir: &Path) -> String {
    let mut text = String::from(
        "# Written by `tessera setup`; every key is described in tessera.toml(5)\n\
         # and /usr/share/doc/tessera/examples (etc/tessera.toml in the sources).\n\
         version = 1\n\n[pkcs11]\n",
    );
    match &request.module {
        Some(module) => text.push_str(&format!(
            "module = {}\n",
            toml_string(&module.to_string_lossy())
        )),
        None => text.push_str("# module: p11-kit's proxy, which reaches every registered module\n"),
    }
    text.push_str(&format!(
        "\n[pki]\nca = [{}]\n",
        toml_string(&ca_dir.to_string_lossy())
    ));
    if let Some(revocation) = &request.revocation {
        text.push_str(&format!("revocation = {}\n", toml_string(revocation)));
    }
    text.push_str(&format!(
        "\n[[rule]]\nuser = {}\n",
        toml_string(&request.rule)
    ));
    text
}

/// Writes `contents` to `path` with mode 0644 (whatever the umask), and
/// only over an existing file when `force` is set.
fn write_file(path: &Path, contents: &[u8], force: bool) -> Result<(), String> {
    let mut options = OpenOptions::new();
    options.write(true).mode(0o644);
    if force {
        options.create(true).truncate(true);
    } else {
        options.create_new(true);
    }
    let mut file = options.open(path).map_err(|error| {
        if error.kind() == std::io::ErrorKind::AlreadyExists {
            format!(
                "{} exists; nothing written (--force overwrites it)",
                path.display()
            )
        } else {
            format!("{}: {error}", path.display())
        }
    })?;
    file.set_permissions(fs::Permissions::from_mode(0o644))
        .and_then(|()| file.write_all(contents))
        .map_err(|error| format!("{}: {error}", path.display()))
}

/// Checks the request, then writes the CA copy and the configuration.
/// Nothing is written when any check fails.
pub fn write(request: &SetupRequest) -> Result<(), String> {
    // The same anchor loader the module uses: a file that is not a CA
    // certificate is refused here rather than at the first login.
    TrustStore::load(std::slice::from_ref(&request.ca)).map_err(|error| error.to_string())?;
    let ca_bytes =
        fs::read(&request.ca).map_err(|error| format!("{}: {error}", request.ca.display()))?;
    let file_name = request
        .ca
        .file_name()
        .ok_or_else(|| format!("{}: not a file", request.ca.display()))?;
    let directory = request
        .output
        .parent()
        .filter(|parent| !parent.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let ca_dir = directory.join("ca");
    let ca_copy = ca_dir.join(file_name);

    let text = render(request, &ca_dir);
    Config::parse(&request.output, &text).map_err(|error| error.to_string())?;
    if !request.force {
        for path in [&request.output, &ca_copy] {
            if path.exists() {
                return Err(format!(
                    "{} exists; nothing written (--force overwrites it)",
                    path.display()
                ));
            }
        }
    }

    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(&ca_dir)
        .map_err(|error| format!("{}: {error}", ca_dir.display()))?;
    write_file(&ca_copy, &ca_bytes, request.force)?;
    write_file(&request.output, text.as_bytes(), request.force)
}

/// What to do after a good configuration, for the PAM tooling this system has.
pub fn next_step() -> String {
    let tryout = "Next: try a login without PAM: tessera login --user USER\n";
    if Path::new("/usr/sbin/pam-auth-update").exists() {
        format!(
            "{tryout}Then enable the module: pam-auth-update --enable tessera\n\
             (card or password; tessera-required: card only)"
        )
    } else if Path::new("/usr/bin/authselect").exists() {
        format!(
            "{tryout}Then add it to an authselect profile:\n  \
             authselect create-profile tessera -b sssd\n  \
             add 'auth [success=done authinfo_unavail=ignore default=die] pam_tessera.so'\n  \
             before pam_unix.so in /etc/authselect/custom/tessera/system-auth and password-auth\n  \
             authselect select custom/tessera"
        )
    } else {
        format!(
            "{tryout}Then put this line before the password module of the PAM stacks:\n  \
             auth [success=done authinfo_unavail=ignore default=die] pam_tessera.so"
        )
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn request(rule: &str) -> SetupRequest {
        SetupRequest {
            ca: PathBuf::from("/nonexistent/ca.pem"),
            rule: rule.to_owned(),
            module: Some(PathBuf::from("/usr/lib/softhsm/libsofthsm2.so")),
            revocation: Some("none".to_owned()),
            output: PathBuf::from("/etc/tessera/tessera.toml"),
            force: false,
        }
    }

    #[test]
    fn rendered_config_parses_and_keeps_odd_characters_intact() {
        let text = render(&request("{cn}\"\\x"), Path::new("/etc/tessera/c\"a"));
        let value: toml::Table = toml::from_str(&text).unwrap();
        assert_eq!(
            value["rule"][0]["user"].as_str(),
            Some("{cn}\"\\x"),
            "{text}"
        );
        assert_eq!(
            value["pki"]["ca"][0].as_str(),
            Some("/etc/tessera/c\"a"),
            "{text}"
        );
        let text = render(&request("{uid}"), Path::new("/etc/tessera/ca"));
        Config::parse(Path::new("t.toml"), &text).unwrap();
        assert!(text.contains("revocation = \"none\""), "{text}");
    }
}
