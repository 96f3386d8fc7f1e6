//! `tessera`: the administration tool.

mod inspect;
mod login;
#[cfg(test)]
mod man_coverage;
mod map;
mod migrate;
mod setup;
mod status;
mod terminal;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tessera_core::config::{Config, DEFAULT_CONFIG_PATH};
use tessera_core::pki::TrustStore;
use tessera_core::token::Pkcs11Module;

/// Inspect and check a tessera smart-card login setup.
#[derive(Parser, Debug)]
#[command(name = "tessera", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Check a configuration: syntax, file ownership and modes, trust anchors
    /// and the PKCS#11 module. Exit status 0 when usable, 1 otherwise.
    CheckConfig {
        /// The configuration file, as for every other command.
        #[arg(long, default_value = DEFAULT_CONFIG_PATH)]
        config: PathBuf,
        /// The configuration file: the positional form, kept for scripts
        /// written before `--config`.
        #[arg(value_name = "PATH", conflicts_with = "config")]
        path: Option<PathBuf>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// List tokens and their certificates: validation verdict and mapped user.
    /// Exit status 0 when the tokens could be read.
    Inspect {
        /// The configuration file.
        #[arg(long, default_value = DEFAULT_CONFIG_PATH)]
        config: PathBuf,
        /// Only tokens matching this RFC 7512 PKCS#11 URI.
        #[arg(long)]
        token: Option<String>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Run the whole authentication flow without PAM, printing each step and
    /// its time. Exit status 0 on success, 1 on failure.
    Login {
        /// The configuration file.
        #[arg(long, default_value = DEFAULT_CONFIG_PATH)]
        config: PathBuf,
        /// The user to log in; omitted, the user is found from the certificate.
        #[arg(long)]
        user: Option<String>,
        /// The PAM service whose policy applies.
        #[arg(long, default_value = "login")]
        service: String,
        /// Log in this many times in one process, each from the config on,
        /// with its own timeline (the first run pays for loading libraries).
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1000))]
        repeat: u32,
        /// Run each login in the helper tessera-auth, spawned the way
        /// pam_tessera.so spawns it (clean environment, deadline), instead of
        /// in this process; its log goes to standard error.
        #[arg(long)]
        helper: bool,
    },
    /// Write a starting configuration (mode 0644) and copy the CA next to
    /// it, check it like check-config, and print the next step. Exit status
    /// 0 when written and usable, 1 when nothing was written, 3 when written
    /// but the checks fail.
    Setup {
        /// The trusted CA certificate, PEM or DER.
        #[arg(long)]
        ca: PathBuf,
        /// The user template of the first rule, e.g. '{cn}' or '{uid}'.
        #[arg(long)]
        rule: String,
        /// The PKCS#11 module (default: p11-kit's proxy).
        #[arg(long)]
        module: Option<PathBuf>,
        /// pki.revocation: none, crl, ocsp, ocsp-then-crl or crl-then-ocsp.
        #[arg(long)]
        revocation: Option<String>,
        /// Where to write the configuration.
        #[arg(long, default_value = DEFAULT_CONFIG_PATH)]
        output: PathBuf,
        /// Overwrite an existing configuration and CA copy.
        #[arg(long)]
        force: bool,
    },
    /// Show what tessera-eventd sees: readers, inserted tokens and the
    /// sessions bound to tokens. Exit status 1 when eventd does not answer.
    Status {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Explain how a certificate, or what the present tokens hold, maps to
    /// users: every rule tried, what each condition saw, every look-up.
    /// Exit status 0 when something maps, 1 otherwise.
    Map {
        /// A certificate file, PEM or DER.
        #[arg(required_unless_present = "token", conflicts_with = "token")]
        certificate: Option<PathBuf>,
        /// Map the certificates and keys on the present tokens instead.
        #[arg(long)]
        token: bool,
        /// The configuration file.
        #[arg(long, default_value = DEFAULT_CONFIG_PATH)]
        config: PathBuf,
        /// The user name the login would ask for (needed by authorized-files rules).
        #[arg(long)]
        user: Option<String>,
        /// The token label to assume for a certificate file.
        #[arg(long, default_value = "", conflicts_with = "token")]
        token_label: String,
        /// The token serial to assume for a certificate file.
        #[arg(long, default_value = "", conflicts_with = "token")]
        token_serial: String,
        /// Print the explanation as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print a tessera.toml equivalent to a pam_pkcs11 or SSSD configuration.
    Migrate {
        /// What to migrate from.
        #[arg(value_enum)]
        from: MigrateFrom,
        /// pam_pkcs11.conf or sssd.conf.
        file: PathBuf,
    },
}

/// The configurations `tessera migrate` reads.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum MigrateFrom {
    /// pam_pkcs11.conf (OpenSC's pam_pkcs11).
    #[value(name = "pam_pkcs11")]
    PamPkcs11,
    /// sssd.conf (certmap sections and the LDAP/AD domain).
    Sssd,
}

/// One line on how revocation will be checked, so an admin sees the default.
fn describe_revocation(policy: &tessera_core::pki::Policy) -> String {
    use tessera_core::pki::policy::RevocationMode;
    let mode = match policy.revocation {
        RevocationMode::None => {
            return "revocation: not checked (pki.revocation = \"none\")".to_owned()
        }
        RevocationMode::Crl => "CRL",
        RevocationMode::Ocsp => "OCSP",
        RevocationMode::OcspThenCrl => "OCSP, then CRL",
        RevocationMode::CrlThenOcsp => "CRL, then OCSP",
    };
    format!(
        "revocation: {mode}, within {} ms per login; {} local CRL path(s); cache {}",
        policy.revocation_timeout.as_millis(),
        policy.crl.paths.len(),
        policy
            .cache_dir
            .as_ref()
            .map_or("off".to_owned(), |dir| dir.display().to_string())
    )
}

fn check_config(path: &Path) -> Result<Vec<String>, String> {
    let config = Config::load(path).map_err(|error| error.to_string())?;
    let mut report = vec![format!("{}: syntax and permissions OK", path.display())];
    let store = TrustStore::load(&config.ca_paths).map_err(|error| error.to_string())?;
    report.push(format!("trust anchors: {} CA certificate(s)", store.len()));
    report.push(describe_revocation(&config.pki));
    let module = Pkcs11Module::load(&config.pkcs11_module).map_err(|error| error.to_string())?;
    let tokens = module.tokens().map_err(|error| error.to_string())?;
    report.push(format!(
        "PKCS#11 module {}: loaded, {} token(s) present",
        module.path().display(),
        tokens.len()
    ));
    for rule in &config.rules {
        report.push(format!(
            "rule \"{}\": {}",
            rule.name(),
            rule.describe_source()
        ));
    }
    Ok(report)
}

/// Writes a report to standard output, the one place the tool prints it.
#[allow(clippy::print_stdout)]
fn print_lines(text: &str) {
    println!("{}", text.trim_end());
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match &cli.command {
        Command::CheckConfig { config, path, json } => {
            let path = path.as_ref().unwrap_or(config);
            let result = check_config(path);
            if *json {
                let report = match &result {
                    Ok(checks) => serde_json::json!({
                        "ok": true, "config": path, "checks": checks,
                    }),
                    Err(error) => serde_json::json!({
                        "ok": false, "config": path, "error": error,
                    }),
                };
                print_lines(&serde_json::to_string_pretty(&report).unwrap_or_default());
            }
            match result {
                Ok(report) => {
                    if !*json {
                        print_lines(&report.join("\n"));
                    }
                    ExitCode::SUCCESS
                }
                Err(error) => {
                    if !*json {
                        eprintln!("tessera check-config: {error}");
                    }
                    ExitCode::FAILURE
                }
            }
        }
        Command::Setup {
            ca,
            rule,
            module,
            revocation,
            output,
            force,
        } => {
            let request = setup::SetupRequest {
                ca: ca.clone(),
                rule: rule.clone(),
                module: module.clone(),
                revocation: revocation.clone(),
                output: output.clone(),
                force: *force,
            };
            if let Err(error) = setup::write(&request) {
                eprintln!("tessera setup: {error}");
                return ExitCode::FAILURE;
            }
            print_lines(&format!("{}: written", output.display()));
            match check_config(output) {
                Ok(report) => {
                    print_lines(&report.join("\n"));
                    print_lines(&setup::next_step());
                    ExitCode::SUCCESS
                }
                Err(error) => {
                    eprintln!(
                        "tessera setup: written, but the check failed: {error}\n\
                         Fix it, then run: tessera check-config --config {}",
                        output.display()
                    );
                    ExitCode::from(3)
                }
            }
        }
        Command::Inspect {
            config,
            token,
            json,
        } => match inspect::inspect(config, token.as_deref()) {
            Ok(report) => {
                let text = if *json {
                    serde_json::to_string_pretty(&report).unwrap_or_default()
                } else {
                    inspect::render(&report)
                };
                #[allow(clippy::print_stdout)]
                {
                    println!("{}", text.trim_end());
                }
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("tessera inspect: {error}");
                ExitCode::FAILURE
            }
        },
        Command::Login {
            config,
            user,
            service,
            repeat,
            helper,
        } => match login::run(config, user.as_deref(), service, *repeat, *helper) {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::FAILURE,
            Err(error) => {
                eprintln!("tessera login: {error}");
                ExitCode::FAILURE
            }
        },
        Command::Status { json } => match status::query() {
            Ok(report) => {
                let text = if *json {
                    serde_json::to_string_pretty(&report).unwrap_or_default()
                } else {
                    status::render(&report)
                };
                #[allow(clippy::print_stdout)]
                {
                    println!("{}", text.trim_end());
                }
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("tessera status: {error}");
                ExitCode::FAILURE
            }
        },
        Command::Map {
            certificate,
            token,
            config,
            user,
            token_label,
            token_serial,
            json,
        } => {
            let request = map::MapRequest {
                config: config.clone(),
                certificate: certificate.clone(),
                token: *token,
                user: user.clone(),
                token_label: token_label.clone(),
                token_serial: token_serial.clone(),
                json: *json,
            };
            match map::run(&request) {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) => ExitCode::FAILURE,
                Err(error) => {
                    eprintln!("tessera map: {error}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Migrate { from, file } => {
            let converted = std::fs::read_to_string(file)
                .map_err(|error| format!("{}: {error}", file.display()))
                .and_then(|text| match from {
                    MigrateFrom::PamPkcs11 => migrate::pam_pkcs11(&text),
                    MigrateFrom::Sssd => migrate::sssd(&text),
                });
            match converted {
                Ok(toml) => {
                    #[allow(clippy::print_stdout)]
                    {
                        print!("{toml}");
                    }
                    ExitCode::SUCCESS
                }
                Err(error) => {
                    eprintln!("tessera migrate: {}: {error}", file.display());
                    ExitCode::FAILURE
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_config_path(args: &[&str]) -> Result<PathBuf, clap::Error> {
        let cli = Cli::try_parse_from(["tessera", "check-config"].iter().chain(args))?;
        match cli.command {
            Command::CheckConfig { config, path, .. } => Ok(path.unwrap_or(config)),
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn check_config_takes_config_like_every_command_and_still_a_path() {
        assert_eq!(
            check_config_path(&["--config", "/a.toml"]).unwrap(),
            PathBuf::from("/a.toml")
        );
        assert_eq!(
            check_config_path(&["/b.toml"]).unwrap(),
            PathBuf::from("/b.toml")
        );
        assert_eq!(
            check_config_path(&[]).unwrap(),
            PathBuf::from(DEFAULT_CONFIG_PATH)
        );
        assert!(check_config_path(&["--config", "/a.toml", "/b.toml"]).is_err());
    }
}
