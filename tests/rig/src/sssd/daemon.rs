//! sssd itself, with `pam_cert_auth`, in a mount namespace of its own: the
//! reference that pam_sss logins run against.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use super::shell::shell_quote;

/// The PAM service of the pam_sss stack [`SssdDaemon::start`] writes.
pub const PAM_SSS_SERVICE: &str = "ref-pam-sss";

/// What [`SssdDaemon::start`] needs: one token, one user, their CA.
#[derive(Debug)]
pub struct SssdLogin<'a> {
    /// Scratch directory for sssd's configuration and logs.
    pub dir: &'a Path,
    /// The CA that issued the user's certificate (PEM).
    pub ca_pem: &'a Path,
    /// The token's label (`p11_uri = pkcs11:token=<label>`).
    pub token_label: &'a str,
    /// The user, a local user of the `files` domain, and the CN of their certificate.
    pub user: &'a str,
    /// The name of sssd's one domain.
    pub domain: &'a str,
    /// The keys of its `[domain/…]` section, e.g. [`files_domain`]'s.
    pub domain_keys: String,
    /// The PAM directory the pam_sss service file goes to.
    pub confdir: &'a Path,
    /// Other PAM services that may use certificate authentication (the
    /// bench also runs each stack under the rig's own service name).
    pub also_allowed: &'a [&'a str],
    /// Environment for sssd, which its p11_child inherits (`SOFTHSM2_CONF`,
    /// `OPENSC_CONF`).
    pub env: Vec<(String, std::ffi::OsString)>,
}

/// sssd with `pam_cert_auth`, the smart-card login RHEL, Fedora and Ubuntu
/// document. It runs in a mount namespace of its own, made by `unshare`,
/// where `/etc/sssd`, `/var/lib/sss`, `/var/log/sssd` and `/run` are the
/// rig's: the host's are never touched, and the mounts go when sssd does.
/// PAM clients reach it through [`SssdDaemon::enter`].
#[derive(Debug)]
pub struct SssdDaemon {
    child: std::process::Child,
}

/// Whether sssd and pam_sss are installed (`scripts/setup` installs them).
pub fn sssd_installed() -> bool {
    Path::new("/usr/sbin/sssd").exists()
        && Path::new("/lib/x86_64-linux-gnu/security/pam_sss.so").exists()
}

impl SssdDaemon {
    /// Writes `sssd.conf` (a `files` domain, a certmap rule for the user),
    /// starts `sssd -i` in its namespace and waits for its PAM responder;
    /// writes the [`PAM_SSS_SERVICE`] stack.
    pub fn start(login: &SssdLogin<'_>) -> Self {
        let (user, domain) = (login.user, login.domain);
        Self::start_with_certmap(
            login,
            &format!(
                "[certmap/{domain}/{user}]\nmatchrule = <SUBJECT>.*CN={user}.*\nmaprule = ({user})\n"
            ),
        )
    }

    /// Like [`SssdDaemon::start`], with `certmap` (sssd.conf sections) as
    /// the domain's certificate mapping rules.
    pub fn start_with_certmap(login: &SssdLogin<'_>, certmap: &str) -> Self {
        let etc = login.dir.join("etc");
        std::fs::create_dir_all(&etc).expect("sssd etc");
        let conf = etc.join("sssd.conf");
        let allowed: Vec<String> = std::iter::once(PAM_SSS_SERVICE)
            .chain(login.also_allowed.iter().copied())
            .map(|service| format!("+{service}"))
            .collect();
        std::fs::write(&conf, sssd_conf(login, &allowed.join(", "), certmap)).expect("sssd.conf");
        std::fs::set_permissions(&conf, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .expect("sssd.conf mode");
        let logs = login.dir.join("log");
        std::fs::create_dir_all(&logs).expect("sssd logs");
        // A private /run too, for sssd's pid file (so that several can run),
        // keeping pcscd's socket directory, which p11_child may need.
        let pcscd = login.dir.join("pcscd-mount");
        let script = format!(
            "set -e\n\
             if [ -d /run/pcscd ]; then mkdir -p {pcscd}; mount --bind /run/pcscd {pcscd}; fi\n\
             mount -t tmpfs tmpfs /run\n\
             if mountpoint -q {pcscd}; then mkdir /run/pcscd; mount --move {pcscd} /run/pcscd; fi\n\
             mount --bind {etc} /etc/sssd\n\
             mount -t tmpfs tmpfs /var/lib/sss\n\
             mkdir -p /var/lib/sss/db /var/lib/sss/pipes/private /var/lib/sss/mc /var/lib/sss/pubconf /var/lib/sss/gpo_cache\n\
             mount --bind {logs} /var/log/sssd\n\
             exec sssd -i --logger=files\n",
            pcscd = shell_quote(&pcscd.to_string_lossy()),
            etc = shell_quote(&etc.to_string_lossy()),
            logs = shell_quote(&logs.to_string_lossy()),
        );
        // unshare and sh exec, so the child's pid is sssd's.
        let child = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c", &script])
            .envs(login.env.iter().map(|(k, v)| (k, v)))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start sssd");
        let mut daemon = Self { child };
        let socket = format!("/proc/{}/root/var/lib/sss/pipes/pam", daemon.child.id());
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            // The socket, as seen in sssd's namespace.
            let ready = Command::new("nsenter")
                .args(daemon.enter())
                .args(["test", "-S", "/var/lib/sss/pipes/pam"])
                .status()
                .is_ok_and(|status| status.success());
            if ready {
                break;
            }
            if let Ok(Some(status)) = daemon.child.try_wait() {
                panic!("sssd exited ({status}); see {}", logs.display());
            }
            assert!(
                std::time::Instant::now() < deadline,
                "sssd's PAM responder ({socket}) did not start; see {}",
                logs.display()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        std::fs::write(
            login.confdir.join(PAM_SSS_SERVICE),
            "auth required pam_sss.so require_cert_auth\naccount required pam_permit.so\n",
        )
        .expect("pam_sss service");
        daemon
    }

    /// `nsenter` arguments that put a command in sssd's mount namespace
    /// (`nsenter <these> command…`), where pam_sss finds its socket.
    pub fn enter(&self) -> Vec<String> {
        vec![
            "--target".to_owned(),
            self.child.id().to_string(),
            "--mount".to_owned(),
        ]
    }
}

/// A `files` domain of local users from `passwd` and `group`.
pub fn files_domain(passwd: &Path, group: &Path) -> String {
    format!(
        "id_provider = files\npasswd_files = {}\ngroup_files = {}\n",
        passwd.display(),
        group.display()
    )
}

fn sssd_conf(login: &SssdLogin<'_>, allowed: &str, certmap: &str) -> String {
    format!(
        "[sssd]\nservices = nss, pam\ndomains = {domain}\ncertificate_verification = no_ocsp\n\n\
         [pam]\npam_cert_auth = True\npam_cert_db_path = {ca}\n\
         pam_p11_allowed_services = {allowed}\np11_uri = pkcs11:token={label}\n\n\
         [domain/{domain}]\n{keys}\n\
         {certmap}",
        ca = login.ca_pem.display(),
        label = login.token_label,
        domain = login.domain,
        keys = login.domain_keys,
    )
}

impl Drop for SssdDaemon {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
