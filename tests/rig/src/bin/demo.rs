//! The README's demo: a real PAM login with a software token.
//!
//! Builds a scratch PKI and a SoftHSM2 token holding an RSA-2048 key and a
//! certificate for user "demo", logs that user in through real libpam and
//! `pam_tessera.so`, and prints who was mapped, from which certificate, and how
//! long the login took next to the bare token cost (C_Initialize + C_Login +
//! C_Sign) measured in the same run.
#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::expect_used)]

use std::process::ExitCode;

use tessera_testrig::login::{LoginRig, PIN};
use tessera_testrig::softhsm::KeyType;
use x509_cert::der::Decode;

const ROUNDS: usize = 20;

fn percentile(sorted: &[u64], fraction: f64) -> f64 {
    let index = ((sorted.len() - 1) as f64 * fraction).round() as usize;
    sorted[index] as f64 / 1000.0
}

fn main() -> ExitCode {
    if !nix_is_root() {
        eprintln!("tessera-demo: run as root (the module refuses config files not owned by root)");
        return ExitCode::from(2);
    }
    let mut rig = LoginRig::new();
    println!("scratch directory: {}", rig.path().display());
    let enrolled = rig.enroll("demo", KeyType::Rsa2048);
    println!(
        "token \"{}\": RSA-2048 key generated on the token, certificate issued by the test CA",
        enrolled.token
    );

    let first = rig.authenticate(Some("demo"), &[PIN]);
    let result = first.result("authenticate");
    println!("pam_authenticate(\"demo\") through libpam + pam_tessera.so: {result}");
    if result != "PAM_SUCCESS" {
        println!("{first}");
        return ExitCode::FAILURE;
    }
    let certificate = x509_cert::Certificate::from_der(&enrolled.certificate).expect("certificate");
    println!("  mapped user:   {}", first.user().unwrap_or_default());
    println!("  certificate:   {}", certificate.tbs_certificate.subject);
    println!("  issuer:        {}", certificate.tbs_certificate.issuer);
    println!(
        "  login time:    {:.2} ms",
        first.micros("authenticate") as f64 / 1000.0
    );

    rig.quiet_service();
    let mut logins = rig.bench_authenticate("demo", PIN, ROUNDS);
    logins.sort_unstable();
    let floor: serde_json::Value =
        serde_json::from_str(
            &rig.hsm
                .bench_sign(&enrolled.token, PIN, &enrolled.id, ROUNDS),
        )
        .expect("bench output");
    let floor_median = floor["median_micros"].as_f64().unwrap_or(f64::NAN) / 1000.0;
    let login_median = percentile(&logins, 0.5);
    println!();
    println!("over {ROUNDS} rounds, same token, same run:");
    println!(
        "  pam_start+pam_authenticate+pam_end         min {:.2} ms  median {:.2} ms  p90 {:.2} ms",
        percentile(&logins, 0.0),
        login_median,
        percentile(&logins, 0.9)
    );
    println!(
        "  bare C_Initialize+C_Login+C_Sign (floor)   min {:.2} ms  median {:.2} ms",
        floor["min_micros"].as_f64().unwrap_or(f64::NAN) / 1000.0,
        floor_median
    );
    println!(
        "  ratio tessera/floor (median)               {:.2}",
        login_median / floor_median
    );
    ExitCode::SUCCESS
}

fn nix_is_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|meta| std::os::unix::fs::MetadataExt::uid(&meta) == 0)
        .unwrap_or(false)
}
