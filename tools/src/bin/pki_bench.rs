//! Validation cost per login: tessera's `pki::validate` next to `openssl`
//! doing the same work, in the same run, against the rig's PKI.
//!
//! `cargo run -p tessera-tools --bin tessera-pki-bench` (as root: the
//! trust anchors must be root-owned). Prints min/median/p90 in ms.
#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use rustls_pki_types::{CertificateDer, UnixTime};
use tessera_core::pki::policy::{Policy, RevocationMode};
use tessera_core::pki::{validate, Deadline, TrustStore};
use tessera_testrig::ocsp::{write_index, IndexEntry, OcspResponder, ResponderFiles};
use tessera_testrig::pki::{pem_encode, Pointers, Revoked, TestCa, UserCert};
use time::OffsetDateTime;

const ROUNDS: usize = 30;

fn summary(name: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let at = |fraction: f64| samples[((samples.len() - 1) as f64 * fraction).round() as usize];
    println!(
        "{name:<44} min {:>8.3}  median {:>8.3}  p90 {:>8.3}",
        ms(samples[0]),
        ms(at(0.5)),
        ms(at(0.9))
    );
}

fn time(mut body: impl FnMut()) -> Vec<Duration> {
    body();
    (0..ROUNDS)
        .map(|_| {
            let started = Instant::now();
            body();
            started.elapsed()
        })
        .collect()
}

fn openssl(args: &[&str]) {
    let output = Command::new("openssl").args(args).output().unwrap();
    assert!(
        output.status.success() && !String::from_utf8_lossy(&output.stdout).contains("revoked"),
        "openssl {args:?}: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn main() -> ExitCode {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("tessera-pki-bench: run as root (trust anchors must be root-owned)");
        return ExitCode::from(2);
    }
    let dir = tempfile::Builder::new()
        .prefix("tessera-bench-")
        .tempdir()
        .unwrap();
    let path = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
    let root = TestCa::new_rsa("Tessera Bench RSA Root");
    let issuing = root.intermediate("Tessera Bench EC Issuing CA", &Pointers::default());
    let signer = issuing.ocsp_signer("Tessera Bench OCSP Responder");
    let files = ResponderFiles::write(dir.path(), "issuing", issuing.pem(), &signer);
    write_index(
        &files.index,
        &[IndexEntry {
            serial: 0x5001,
            subject: "/O=Example Test/CN=bench".to_owned(),
            revoked: None,
        }],
    );
    let responder = OcspResponder::start(&files, dir.path());

    let mut spec = UserCert::valid("bench");
    spec.serial = Some(0x5001);
    spec.pointers.ocsp_url = Some(responder.url());
    let (user, _) = issuing.issue_with_new_key(&spec);

    let ca_dir = dir.path().join("ca");
    std::fs::create_dir(&ca_dir).unwrap();
    std::fs::write(ca_dir.join("root.pem"), root.pem()).unwrap();
    std::fs::write(path("root.pem"), root.pem()).unwrap();
    std::fs::write(path("issuing.pem"), issuing.pem()).unwrap();
    std::fs::write(
        path("chain.pem"),
        format!("{}{}", issuing.pem(), root.pem()),
    )
    .unwrap();
    let user_pem = pem_encode("CERTIFICATE", &user);
    std::fs::write(path("user.pem"), &user_pem).unwrap();

    let next_update = OffsetDateTime::now_utc() + time::Duration::days(1);
    let entries: Vec<Revoked> = (0..100_000)
        .map(|index| Revoked::new(0x100_0000 + index, None))
        .collect();
    let crl_dir = dir.path().join("crl");
    std::fs::create_dir(&crl_dir).unwrap();
    let issuing_crl = issuing.crl(&entries, next_update);
    let root_crl = root.crl(&[], next_update);
    std::fs::write(crl_dir.join("issuing.crl"), &issuing_crl).unwrap();
    std::fs::write(crl_dir.join("root.crl"), &root_crl).unwrap();
    std::fs::write(
        path("issuing-crl.pem"),
        pem_encode("X509 CRL", &issuing_crl),
    )
    .unwrap();
    std::fs::write(path("root-crl.pem"), pem_encode("X509 CRL", &root_crl)).unwrap();
    println!(
        "PKI: RSA-2048 root, P-256 issuing CA, P-256 user; CRL of {} entries ({} bytes); {ROUNDS} rounds\n",
        entries.len(),
        issuing_crl.len()
    );

    let store = TrustStore::load(&[ca_dir]).unwrap();
    let der = CertificateDer::from(user.as_slice());
    let intermediates = [CertificateDer::from(issuing.der())];
    let now = UnixTime::since_unix_epoch(Duration::from_secs(
        OffsetDateTime::now_utc().unix_timestamp() as u64,
    ));
    let tessera = |policy: &Policy| {
        let deadline = Deadline::after(policy.revocation_timeout);
        validate(&store, policy, &der, &intermediates, now, &deadline).unwrap();
    };

    let chain = Policy {
        revocation: RevocationMode::None,
        cache_dir: None,
        ..Policy::default()
    };
    summary("tessera: chain only", time(|| tessera(&chain)));
    summary(
        "openssl verify: chain only",
        time(|| {
            openssl(&[
                "verify",
                "-CAfile",
                &path("root.pem"),
                "-untrusted",
                &path("issuing.pem"),
                &path("user.pem"),
            ])
        }),
    );

    let mut crl = Policy {
        revocation: RevocationMode::Crl,
        cache_dir: None,
        ..Policy::default()
    };
    crl.crl.paths = vec![crl_dir];
    crl.crl.fetch = false;
    summary(
        "tessera: chain + local CRL (100,000 entries)",
        time(|| tessera(&crl)),
    );
    summary(
        "openssl verify: chain + CRL (100,000 entries)",
        time(|| {
            openssl(&[
                "verify",
                "-crl_check_all",
                "-CAfile",
                &path("root.pem"),
                "-untrusted",
                &path("issuing.pem"),
                "-CRLfile",
                &path("issuing-crl.pem"),
                "-CRLfile",
                &path("root-crl.pem"),
                &path("user.pem"),
            ])
        }),
    );

    // OCSP for the user's certificate; the issuing CA's status from the root's CRL.
    let mut cached = Policy {
        revocation: RevocationMode::OcspThenCrl,
        cache_dir: Some(dir.path().join("cache")),
        ..Policy::default()
    };
    cached.crl.paths = vec![dir.path().join("crl/root.crl")];
    cached.crl.fetch = false;
    summary(
        "tessera: chain + OCSP, cached response",
        time(|| tessera(&cached)),
    );
    let live = Policy {
        cache_dir: None,
        ..cached.clone()
    };
    summary(
        "tessera: chain + OCSP, live (local responder)",
        time(|| tessera(&live)),
    );

    openssl(&[
        "ocsp",
        "-issuer",
        &path("issuing.pem"),
        "-cert",
        &path("user.pem"),
        "-url",
        &responder.url(),
        "-CAfile",
        &path("chain.pem"),
        "-respout",
        &path("response.der"),
    ]);
    summary(
        "openssl ocsp: saved response (-respin)",
        time(|| {
            openssl(&[
                "ocsp",
                "-issuer",
                &path("issuing.pem"),
                "-cert",
                &path("user.pem"),
                "-respin",
                &path("response.der"),
                "-CAfile",
                &path("chain.pem"),
                "-no_nonce",
            ])
        }),
    );
    summary(
        "openssl ocsp: live (local responder)",
        time(|| {
            openssl(&[
                "ocsp",
                "-issuer",
                &path("issuing.pem"),
                "-cert",
                &path("user.pem"),
                "-url",
                &responder.url(),
                "-CAfile",
                &path("chain.pem"),
            ])
        }),
    );
    println!("\nopenssl figures include starting the openssl process (about 2-4 ms here).");
    drop(responder);
    ExitCode::SUCCESS
}
