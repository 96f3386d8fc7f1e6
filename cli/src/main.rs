//! `tessera`: the administration tool.

mod inspect;
mod login;
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
        /// The configuration file.
        #[arg(default_value = DEFAULT_CONFIG_PATH)]
        path: PathBuf,
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
    },
    /// Show what tessera-eventd sees: readers, inserted tokens and the
    /// sessions bound to tokens. Exit status 1 when eventd does not answer.
    Status {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    match &cli.command {
        Command::CheckConfig { path } => match check_config(path) {
            Ok(report) => {
                for line in report {
                    #[allow(clippy::print_stdout)]
                    {
                        println!("{line}");
                    }
                }
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("tessera check-config: {error}");
                ExitCode::FAILURE
            }
        },
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
        } => match login::run(config, user.as_deref(), service) {
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
    }
}
