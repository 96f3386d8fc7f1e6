//! SoftHSM2 tokens private to one test.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::bins::artefact;
use crate::run;

/// The Security Officer PIN of every rig token (the PUK of a PIV card).
pub const SO_PIN: &str = "12345678";

/// The SoftHSM2 PKCS#11 module.
pub const SOFTHSM_MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";

/// Key types the tests enrol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyType {
    /// RSA 2048.
    Rsa2048,
    /// RSA 4096 (512-byte signatures).
    Rsa4096,
    /// ECDSA P-256.
    P256,
    /// ECDSA P-384.
    P384,
    /// Ed25519.
    Ed25519,
}

impl KeyType {
    fn arg(self) -> &'static str {
        match self {
            KeyType::Rsa2048 => "rsa2048",
            KeyType::Rsa4096 => "rsa4096",
            KeyType::P256 => "p256",
            KeyType::P384 => "p384",
            KeyType::Ed25519 => "ed25519",
        }
    }
}

/// A SoftHSM2 token directory with its own `softhsm2.conf`.
#[derive(Debug, Clone)]
pub struct SoftHsm {
    dir: PathBuf,
    conf: PathBuf,
}

impl SoftHsm {
    /// Creates the token directory and configuration under `dir`.
    pub fn new(dir: &Path) -> Self {
        let tokens = dir.join("tokens");
        std::fs::create_dir_all(&tokens).expect("create SoftHSM token dir");
        let conf = dir.join("softhsm2.conf");
        std::fs::write(
            &conf,
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n",
                tokens.display()
            ),
        )
        .expect("write softhsm2.conf");
        Self {
            dir: dir.to_owned(),
            conf,
        }
    }

    /// `SOFTHSM2_CONF` for processes that use these tokens.
    pub fn env(&self) -> (&'static str, PathBuf) {
        ("SOFTHSM2_CONF", self.conf.clone())
    }

    fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut command = Command::new(program);
        command.env("SOFTHSM2_CONF", &self.conf);
        command
    }

    /// Initialises a token with `label`, SO PIN [`SO_PIN`] and user `pin`.
    pub fn init_token(&self, label: &str, pin: &str) {
        run(self.command("softhsm2-util").args([
            "--init-token",
            "--free",
            "--label",
            label,
            "--so-pin",
            SO_PIN,
            "--pin",
            pin,
        ]));
    }

    /// Generates a key pair on the token; returns its SubjectPublicKeyInfo (DER).
    pub fn generate_key(&self, token: &str, pin: &str, id: &str, key_type: KeyType) -> Vec<u8> {
        let spki = self.dir.join(format!("{token}-{id}.spki"));
        run(self
            .command(artefact("tessera-rig-p11"))
            .args(["--module", SOFTHSM_MODULE, "--token", token, "--pin", pin])
            .args([
                "keygen",
                "--key-type",
                key_type.arg(),
                "--id",
                id,
                "--label",
            ])
            .arg(format!("key-{id}"))
            .arg("--spki-out")
            .arg(&spki));
        std::fs::read(&spki).expect("read SPKI")
    }

    /// Writes an object with pkcs11-tool (`kind` is cert, privkey or pubkey).
    pub fn write_object(&self, token: &str, pin: &str, id: &str, kind: &str, der: &[u8]) {
        let file = self.dir.join(format!("{token}-{id}-{kind}.der"));
        std::fs::write(&file, der).expect("write object file");
        run(self
            .command("pkcs11-tool")
            .args(["--module", SOFTHSM_MODULE, "--token-label", token])
            .args(["--login", "--pin", pin, "--write-object"])
            .arg(&file)
            .args(["--type", kind, "--id", id, "--label"])
            .arg(format!("{kind}-{id}")));
    }

    /// Stores `der` as a certificate object without parsing it, whatever its size.
    pub fn write_raw_certificate(&self, token: &str, pin: &str, id: &str, der: &[u8]) {
        let file = self.dir.join(format!("{token}-{id}-raw.der"));
        std::fs::write(&file, der).expect("write object file");
        run(self
            .command(artefact("tessera-rig-p11"))
            .args(["--token", token, "--pin", pin])
            .args(["write-certificate", "--id", id, "--file"])
            .arg(&file));
    }

    /// Measures the bare token floor: C_Initialize, C_Login, C_Sign (JSON line).
    pub fn bench_sign(&self, token: &str, pin: &str, id: &str, iterations: usize) -> String {
        let output = run(self
            .command(artefact("tessera-rig-p11"))
            .args(["--module", SOFTHSM_MODULE, "--token", token, "--pin", pin])
            .args(["bench-sign", "--id", id, "--iterations"])
            .arg(iterations.to_string()));
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    }
}
