//! The reference PAM modules tessera is compared with: Debian 12's
//! pam_pkcs11 (libpam-pkcs11) and pam_p11 (libpam-p11), configured for the
//! same token, CA and user as a [`LoginRig`]. Used by the benchmarks only.

use std::path::PathBuf;

use crate::login::LoginRig;

/// PAM service name of the pam_pkcs11 stack written by [`pam_pkcs11_service`].
pub const PAM_PKCS11_SERVICE: &str = "ref-pam-pkcs11";
/// PAM service name of the pam_p11 stack written by [`pam_p11_service`].
pub const PAM_P11_SERVICE: &str = "ref-pam-p11";

const PAM_PKCS11: &str = "/lib/x86_64-linux-gnu/security/pam_pkcs11.so";
const PAM_P11: &str = "/lib/x86_64-linux-gnu/security/pam_p11.so";

/// Whether Debian's reference modules are installed (`scripts/bench` installs them).
pub fn installed() -> bool {
    std::path::Path::new(PAM_PKCS11).exists() && std::path::Path::new(PAM_P11).exists()
}

/// pam_pkcs11 with `cert_policy = ca,signature` and the cn mapper, for
/// `module`; writes its config, a hashed CA directory and the service file.
pub fn pam_pkcs11_service(rig: &LoginRig, module: &str, extra_cert_policy: &str) -> PathBuf {
    let dir = rig.path().join("pam_pkcs11");
    let cacerts = dir.join("cacerts");
    let crls = dir.join("crls");
    std::fs::create_dir_all(&cacerts).expect("cacerts");
    std::fs::create_dir_all(&crls).expect("crls");
    std::fs::write(cacerts.join("root.pem"), rig.ca.pem()).expect("CA");
    crate::run(
        std::process::Command::new("openssl")
            .arg("rehash")
            .arg(&cacerts),
    );
    let config = dir.join("pam_pkcs11.conf");
    std::fs::write(
        &config,
        format!(
            r#"pam_pkcs11 {{
  nullok = false;
  debug = false;
  use_first_pass = false;
  try_first_pass = false;
  use_authtok = false;
  card_only = false;
  wait_for_card = false;
  use_pkcs11_module = bench;
  pkcs11_module bench {{
    module = {module};
    description = "bench";
    slot_num = 0;
    ca_dir = {cacerts};
    crl_dir = {crls};
    support_threads = false;
    cert_policy = ca,signature{extra_cert_policy};
  }}
  use_mappers = cn;
  mapper_search_path = /lib/x86_64-linux-gnu/pam_pkcs11;
  mapper cn {{
    debug = false;
    module = internal;
    ignorecase = false;
    mapfile = "none";
  }}
}}
"#,
            cacerts = cacerts.display(),
            crls = crls.display(),
        ),
    )
    .expect("pam_pkcs11.conf");
    std::fs::write(
        rig.confdir().join(PAM_PKCS11_SERVICE),
        format!(
            "auth required {PAM_PKCS11} config_file={}\n",
            config.display()
        ),
    )
    .expect("service");
    dir
}

/// pam_p11 for `module`, with `user`'s certificate in their
/// `~/.eid/authorized_certificates` (pam_p11's certificate mode).
pub fn pam_p11_service(rig: &LoginRig, module: &str, user: &str, certificate_pem: &str) {
    let eid = rig.path().join("home").join(user).join(".eid");
    std::fs::create_dir_all(&eid).expect("~/.eid");
    std::fs::write(eid.join("authorized_certificates"), certificate_pem).expect("authorized");
    std::fs::write(
        rig.confdir().join(PAM_P11_SERVICE),
        format!("auth required {PAM_P11} {module}\n"),
    )
    .expect("service");
}
