//! A scratch login environment: SoftHSM tokens, a test CA, a tessera config,
//! PAM service files and fake users (nss_wrapper), driven through real libpam
//! by `tessera-pam-harness`, whose output is a [`PamRun`]
//! (`login/pam_run.rs`).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use tempfile::TempDir;

use crate::bins::{artefact, pam_module};
use crate::pki::{TestCa, UserCert};
use crate::run;
use crate::softhsm::{KeyType, SoftHsm, SOFTHSM_MODULE};

mod pam_run;
pub use pam_run::PamRun;

/// The PAM service the rig writes.
pub const SERVICE: &str = "tessera-test";
/// The PIN every enrolled token gets.
pub const PIN: &str = "123456";

const NSS_WRAPPER: &str = "libnss_wrapper.so";

/// pam_wrapper's test module that sets PAM items (PAM_AUTHTOK...) from the
/// process environment, as an earlier password module would.
pub const PAM_SET_ITEMS: &str = "/usr/lib/x86_64-linux-gnu/pam_wrapper/pam_set_items.so";
/// pam_wrapper's test module that copies PAM items into the PAM environment.
pub const PAM_GET_ITEMS: &str = "/usr/lib/x86_64-linux-gnu/pam_wrapper/pam_get_items.so";

/// Algorithms of keys made on the host for a virtual card.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CardKey {
    /// RSA-2048.
    Rsa2048,
    /// ECDSA P-256.
    P256,
}

impl CardKey {
    fn genpkey_args(self) -> [&'static str; 4] {
        match self {
            CardKey::Rsa2048 => ["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
            CardKey::P256 => ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
        }
    }
}

/// A token enrolled for a user.
#[derive(Debug, Clone)]
pub struct Enrolled {
    /// Token label.
    pub token: String,
    /// CKA_ID of the key and certificate (hex).
    pub id: String,
    /// The certificate on the token.
    pub certificate: Vec<u8>,
    /// The key's public half (DER SPKI).
    pub spki: Vec<u8>,
}

/// One scratch login environment.
#[derive(Debug)]
pub struct LoginRig {
    dir: TempDir,
    /// The SoftHSM token store.
    pub hsm: SoftHsm,
    /// The trusted CA.
    pub ca: TestCa,
    users: Vec<(String, String)>,
    extra_env: Vec<(String, std::ffi::OsString)>,
    /// `[pkcs11] environment` of the config: the helper gets nothing else.
    helper_env: Vec<(String, std::ffi::OsString)>,
    run_as: Option<u32>,
    wrapper: Vec<std::ffi::OsString>,
}

impl Default for LoginRig {
    fn default() -> Self {
        Self::new()
    }
}

impl LoginRig {
    /// Creates the scratch directory, a CA, the default config and PAM files.
    pub fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("tessera-rig-")
            .tempdir()
            .expect("scratch dir");
        let hsm = SoftHsm::new(&dir.path().join("softhsm"));
        let ca = TestCa::new("Tessera Test Root CA");
        let (softhsm_key, softhsm_conf) = hsm.env();
        let helper_env = vec![
            (softhsm_key.to_owned(), softhsm_conf.into_os_string()),
            ("LD_PRELOAD".to_owned(), NSS_WRAPPER.into()),
            (
                "NSS_WRAPPER_PASSWD".to_owned(),
                dir.path().join("passwd").into_os_string(),
            ),
            (
                "NSS_WRAPPER_GROUP".to_owned(),
                dir.path().join("group").into_os_string(),
            ),
        ];
        let rig = Self {
            hsm,
            ca,
            users: Vec::new(),
            extra_env: Vec::new(),
            helper_env,
            run_as: None,
            wrapper: Vec::new(),
            dir,
        };
        std::fs::create_dir_all(rig.ca_dir()).expect("ca dir");
        std::fs::write(rig.ca_dir().join("root.pem"), rig.ca.pem()).expect("write CA");
        rig.write_config(&rig.default_config());
        rig.write_service(&format!(
            "auth required {} config={} log=stderr debug\naccount required pam_permit.so\n",
            pam_module().display(),
            rig.config_path().display()
        ));
        std::fs::write(
            rig.confdir().join("other"),
            "auth required pam_deny.so\naccount required pam_deny.so\n",
        )
        .expect("write other");
        rig.write_nss();
        rig
    }

    /// The scratch directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Directory of trusted CA files.
    pub fn ca_dir(&self) -> PathBuf {
        self.path().join("ca")
    }

    /// The tessera config file.
    pub fn config_path(&self) -> PathBuf {
        self.path().join("tessera.toml")
    }

    /// The PAM service directory.
    pub fn confdir(&self) -> PathBuf {
        let dir = self.path().join("pam.d");
        std::fs::create_dir_all(&dir).expect("pam.d");
        dir
    }

    /// The config the rig starts with: SoftHSM, the helper's environment
    /// (SoftHSM's config, nss_wrapper's users), the rig CA (whose
    /// certificates name no CRL or OCSP responder, hence no revocation
    /// checking), `user = "{cn}"`.
    pub fn default_config(&self) -> String {
        format!(
            "version = 1\n[pkcs11]\nmodule = \"{SOFTHSM_MODULE}\"\n{}\n[pki]\nca = [\"{}\"]\nrevocation = \"none\"\n[[rule]]\nuser = \"{{cn}}\"\n",
            self.environment_line(),
            self.ca_dir().display()
        )
    }

    /// The `[pkcs11] environment = { ... }` line of the config.
    pub fn environment_line(&self) -> String {
        let quote = |text: &str| format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""));
        let pairs: Vec<String> = self
            .helper_env
            .iter()
            .map(|(name, value)| format!("{} = {}", quote(name), quote(&value.to_string_lossy())))
            .collect();
        format!("environment = {{ {} }}", pairs.join(", "))
    }

    /// Sets (or replaces) a variable of the helper's environment and
    /// rewrites the config's `environment` line, if it has one.
    pub fn set_helper_env(&mut self, name: &str, value: impl Into<std::ffi::OsString>) {
        let old_line = self.environment_line();
        self.helper_env.retain(|(key, _)| key != name);
        self.helper_env.push((name.to_owned(), value.into()));
        let config = std::fs::read_to_string(self.config_path()).unwrap_or_default();
        if config.contains(&old_line) {
            self.write_config(&config.replace(&old_line, &self.environment_line()));
        }
    }

    /// Replaces the tessera config (mode 0644).
    pub fn write_config(&self, text: &str) {
        std::fs::write(self.config_path(), text).expect("write config");
    }

    /// Replaces the PAM service file.
    pub fn write_service(&self, text: &str) {
        std::fs::write(self.confdir().join(SERVICE), text).expect("write service");
    }

    /// Adds environment variables for the token stack (e.g. pcscd's
    /// `OPENSC_CONF`): to the helper's `[pkcs11] environment`, and to the
    /// PAM application's environment for the rig's own tools.
    pub fn add_env(&mut self, vars: impl IntoIterator<Item = (String, std::ffi::OsString)>) {
        for (name, value) in vars {
            self.set_helper_env(&name, value.clone());
            self.extra_env.push((name, value));
        }
    }

    /// Sets (or with `None` removes) a variable of the PAM application's
    /// process environment, e.g. `PAM_AUTHTOK` for [`PAM_SET_ITEMS`].
    pub fn set_process_env(&mut self, name: &str, value: Option<&str>) {
        self.extra_env.retain(|(key, _)| key != name);
        if let Some(value) = value {
            self.extra_env.push((name.to_owned(), value.into()));
        }
    }

    /// Runs the PAM application as `uid` (as screen lockers do) instead of
    /// root: the scratch files become readable, the tokens owned by `uid`.
    pub fn run_as(&mut self, uid: u32) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(self.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod scratch dir");
        crate::run(
            Command::new("chown")
                .arg("-R")
                .arg(format!("{uid}:{uid}"))
                .arg(self.path().join("softhsm")),
        );
        self.run_as = Some(uid);
    }

    /// Runs the PAM application under `wrapper` (a program and its
    /// arguments, such as valgrind), which gets the harness command line.
    pub fn run_under<S: Into<std::ffi::OsString>>(&mut self, wrapper: impl IntoIterator<Item = S>) {
        self.wrapper = wrapper.into_iter().map(Into::into).collect();
    }

    /// The uid of the `index`-th user added (0-based), as in the fake passwd.
    pub fn uid_of(&self, name: &str) -> u32 {
        let index = self
            .users
            .iter()
            .position(|(user, _)| user == name)
            .expect("user was added");
        20001 + index as u32
    }

    /// Uses `module` as the PKCS#11 module in the current config.
    pub fn use_pkcs11_module(&self, module: &str) {
        let config = std::fs::read_to_string(self.config_path()).expect("read config");
        assert!(
            config.contains(SOFTHSM_MODULE),
            "no SoftHSM module in\n{config}"
        );
        self.write_config(&config.replace(SOFTHSM_MODULE, module));
    }

    /// A rig where alice has a token with an Ed25519 key and no certificate
    /// (an OpenPGP card), listed in her `~/.ssh/authorized_keys` of `mode`,
    /// and a config whose only rule reads authorized files.
    pub fn with_bare_key(mode: u32) -> Self {
        let mut rig = Self::new();
        rig.add_user("alice");
        rig.hsm.init_token("openpgp-card", PIN);
        let spki = rig
            .hsm
            .generate_key("openpgp-card", PIN, "01", KeyType::Ed25519);
        let key = tessera_mappers::PublicKey::from_spki_der(&spki).expect("Ed25519 SPKI");
        let ssh = rig.home("alice").join(".ssh");
        std::fs::create_dir_all(&ssh).expect(".ssh");
        let file = ssh.join("authorized_keys");
        std::fs::write(
            &file,
            format!("{} alice@laptop\n", key.authorized_keys_line()),
        )
        .expect("authorized_keys");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode))
            .expect("authorized_keys mode");
        rig.write_config(
            &rig.config_with_rules("[[rule]]\nname = \"keys\"\nauthorized_files = true\n"),
        );
        rig
    }

    /// The default config with `rules` (TOML) instead of `user = "{cn}"`.
    pub fn config_with_rules(&self, rules: &str) -> String {
        self.default_config()
            .replace("[[rule]]\nuser = \"{cn}\"\n", rules)
    }

    /// Adds a user to the fake passwd database (GECOS = the name).
    pub fn add_user(&mut self, name: &str) {
        self.add_user_with_gecos(name, name);
    }

    /// Adds a user whose GECOS field is `gecos`.
    pub fn add_user_with_gecos(&mut self, name: &str, gecos: &str) {
        self.users.push((name.to_owned(), gecos.to_owned()));
        std::fs::create_dir_all(self.home(name)).expect("home dir");
        self.write_nss();
    }

    /// A user's home directory (in the scratch directory, root-owned).
    pub fn home(&self, name: &str) -> PathBuf {
        self.path().join("home").join(name)
    }

    fn write_nss(&self) {
        let mut passwd = String::from("root:x:0:0:root:/root:/bin/sh\n");
        let mut group = String::from("root:x:0:\n");
        for (index, (user, gecos)) in self.users.iter().enumerate() {
            let uid = 20001 + index;
            // Keep uid_of() in step with this numbering.
            let home = self.home(user);
            passwd.push_str(&format!(
                "{user}:x:{uid}:{uid}:{gecos}:{}:/bin/sh\n",
                home.display()
            ));
            group.push_str(&format!("{user}:x:{uid}:\n"));
        }
        std::fs::write(self.path().join("passwd"), passwd).expect("passwd");
        std::fs::write(self.path().join("group"), group).expect("group");
    }

    /// Initialises a token called `token`, generates a key of `key_type` on it
    /// and stores a certificate for it issued by `ca` from `spec`.
    pub fn enroll_with(
        &self,
        token: &str,
        key_type: KeyType,
        spec: &UserCert,
        ca: &TestCa,
    ) -> Enrolled {
        self.hsm.init_token(token, PIN);
        let id = "01";
        let spki = self.hsm.generate_key(token, PIN, id, key_type);
        let certificate = ca.issue(spec, &spki);
        self.hsm.write_object(token, PIN, id, "cert", &certificate);
        Enrolled {
            token: token.to_owned(),
            id: id.to_owned(),
            certificate,
            spki,
        }
    }

    /// Adds `user` and gives them a token with a valid certificate from the rig CA.
    pub fn enroll(&mut self, user: &str, key_type: KeyType) -> Enrolled {
        self.add_user(user);
        self.enroll_with(
            &format!("{user}-token"),
            key_type,
            &UserCert::valid(user),
            &self.ca,
        )
    }

    /// A key made on the host by openssl and a certificate for `user` from
    /// the rig's CA, for a virtual card: (PKCS#8 PEM key, DER certificate),
    /// in the rig's `card-<user>` directory.
    pub fn card_credentials(&self, user: &str, key_type: CardKey) -> (PathBuf, PathBuf) {
        let dir = self.path().join(format!("card-{user}"));
        std::fs::create_dir_all(&dir).expect("card directory");
        let key = dir.join("key.pem");
        let spki = dir.join("spki.der");
        run(Command::new("openssl")
            .arg("genpkey")
            .args(key_type.genpkey_args())
            .arg("-out")
            .arg(&key));
        run(Command::new("openssl")
            .args(["pkey", "-pubout", "-outform", "DER", "-in"])
            .arg(&key)
            .arg("-out")
            .arg(&spki));
        let certificate = self.ca.issue(
            &UserCert::valid(user),
            &std::fs::read(&spki).expect("public key"),
        );
        let cert = dir.join("cert.der");
        std::fs::write(&cert, certificate).expect("certificate");
        (key, cert)
    }

    /// Environment for processes that must see the rig's users and tokens.
    pub fn env(&self) -> Vec<(&'static str, PathBuf)> {
        let (key, value) = self.hsm.env();
        vec![
            (key, value),
            ("LD_PRELOAD", PathBuf::from(NSS_WRAPPER)),
            ("NSS_WRAPPER_PASSWD", self.path().join("passwd")),
            ("NSS_WRAPPER_GROUP", self.path().join("group")),
        ]
    }

    /// Runs `ops` through real libpam as `user` (None: no PAM_USER), answering
    /// prompts with `answers` in order.
    pub fn pam(&self, user: Option<&str>, answers: &[&str], ops: &[&str]) -> PamRun {
        self.pam_with(user, answers, ops, &[])
    }

    /// Like [`LoginRig::pam`], with extra harness arguments (`--env`, `--authtok`).
    pub fn pam_with(
        &self,
        user: Option<&str>,
        answers: &[&str],
        ops: &[&str],
        extra: &[&str],
    ) -> PamRun {
        let output = self
            .harness_command(user, answers, ops, extra)
            .output()
            .expect("run tessera-pam-harness");
        PamRun::parse(&output.stdout, &output.stderr)
    }

    /// The `tessera-pam-harness` command [`LoginRig::pam_with`] runs, for
    /// callers that need to control the process (a time bound, its exit status).
    pub fn harness_command(
        &self,
        user: Option<&str>,
        answers: &[&str],
        ops: &[&str],
        extra: &[&str],
    ) -> Command {
        let mut program = self.wrapper.clone();
        program.push(artefact("tessera-pam-harness").into());
        if let Some(uid) = self.run_as {
            let setpriv = [
                "setpriv".to_owned(),
                format!("--reuid={uid}"),
                format!("--regid={uid}"),
                "--clear-groups".to_owned(),
            ];
            program.splice(0..0, setpriv.map(Into::into));
        }
        let mut command = Command::new(&program[0]);
        command.args(&program[1..]);
        command.args(extra);
        command
            .arg("--confdir")
            .arg(self.confdir())
            .args(["--service", SERVICE]);
        if let Some(user) = user {
            command.args(["--user", user]);
        }
        for answer in answers {
            command.args(["--answer", answer]);
        }
        for op in ops {
            command.args(["--op", op]);
        }
        let (key, value) = self.hsm.env();
        command
            .env(key, value)
            .env("LD_PRELOAD", NSS_WRAPPER)
            .env("NSS_WRAPPER_PASSWD", self.path().join("passwd"))
            .env("NSS_WRAPPER_GROUP", self.path().join("group"))
            .envs(self.extra_env.iter().map(|(k, v)| (k, v)));
        command
    }

    /// Measures `pam_start`, `pam_authenticate` and `pam_end` as `user`,
    /// `rounds` times in one process (the module is loaded every time, as
    /// login and sudo do); the microseconds of each round.
    pub fn bench_authenticate(&self, user: &str, pin: &str, rounds: usize) -> Vec<u64> {
        self.bench_services(user, pin, rounds, &[])
            .remove(SERVICE)
            .unwrap_or_default()
    }

    /// Like [`LoginRig::bench_authenticate`], alternating round by round
    /// between this rig's service and `others` (service files in the rig's
    /// PAM directory): A B C A B C... Microseconds per service.
    pub fn bench_services(
        &self,
        user: &str,
        pin: &str,
        rounds: usize,
        others: &[&str],
    ) -> std::collections::BTreeMap<String, Vec<u64>> {
        let rounds = rounds.to_string();
        let mut extra = vec!["--repeat", rounds.as_str()];
        for other in others {
            extra.extend(["--alternate", other]);
        }
        let run = self.pam_with(Some(user), &[pin], &[], &extra);
        let mut results = std::collections::BTreeMap::new();
        for event in run.events.iter().filter(|event| event["event"] == "bench") {
            let service = event["service"].as_str().unwrap_or_default().to_owned();
            let micros = event["micros"]
                .as_array()
                .unwrap_or_else(|| panic!("benchmark of {service} failed: {run}"))
                .iter()
                .filter_map(Value::as_u64)
                .collect();
            results.insert(service, micros);
        }
        assert!(!results.is_empty(), "no bench result: {run}");
        results
    }

    /// The production-like stack: no `debug`, logs to syslog (as by default).
    pub fn quiet_service(&self) {
        self.write_service(&format!(
            "auth required {} config={}\naccount required pam_permit.so\n",
            pam_module().display(),
            self.config_path().display()
        ));
    }

    /// `pam_authenticate` as `user` with the PIN answers given.
    pub fn authenticate(&self, user: Option<&str>, answers: &[&str]) -> PamRun {
        self.pam(user, answers, &["authenticate"])
    }
}
