//! The token helper is isolated from the PAM host's caller (docs/design.md,
//! "Processes and privileges", lesson 13): a local user who runs setuid
//! `su` with a hostile environment and process state must not get their
//! code loaded as root, nor reach the helper in any other way. And a host
//! that reaps children itself (sudo, GDM) or ignores SIGCHLD still gets
//! correct answers from the module, without hanging.
//!
//! The `su` tests run real `su` as an unprivileged user (uid 20001) in a
//! private mount namespace (see `tessera_testrig::system::Overlay`). Each
//! hostile input has a control test that hands the same input to the helper
//! through the config's `[pkcs11] environment` (the old behaviour, where the
//! token stack saw the caller's environment): the attacker's code then runs
//! as root, which shows the detectors work.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tessera_testrig::bins::pam_module;
use tessera_testrig::login::{LoginRig, PamRun, PIN};
use tessera_testrig::references::{self, PAM_P11_SERVICE, PAM_PKCS11_SERVICE};
use tessera_testrig::softhsm::KeyType;
use tessera_testrig::system::Overlay;
use tessera_testrig::{describe, output_with_stdin};

const PAM_MATRIX: &str = "/usr/lib/x86_64-linux-gnu/pam_wrapper/pam_matrix.so";
const OPENSC_MODULE: &str = "/usr/lib/x86_64-linux-gnu/opensc-pkcs11.so";
/// The unprivileged caller of `su`.
const ATTACKER_UID: u32 = 20001;

/// A library whose constructor records that it ran, and as whom.
const MARKER_LIBRARY: &str = r#"
#include <stdio.h>
#include <unistd.h>
__attribute__((constructor)) static void tessera_test_marker(void) {
    FILE *out = fopen(MARKER, "a");
    if (out) {
        fprintf(out, "euid=%d pid=%d\n", (int)geteuid(), (int)getpid());
        fclose(out);
    }
}
"#;

/// A library (LD_PRELOADed into the helper through the config) whose
/// constructor writes what the process inherited: environment, working
/// directory, umask, descriptors, limits, ids and signal state.
const PROBE_LIBRARY: &str = r#"
#define _GNU_SOURCE
#include <dirent.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>
extern char **environ;
static void limit(FILE *out, const char *name, int resource) {
    struct rlimit value;
    if (getrlimit(resource, &value) == 0)
        fprintf(out, "rlimit %s %llu %llu\n", name,
                (unsigned long long)value.rlim_cur, (unsigned long long)value.rlim_max);
}
__attribute__((constructor)) static void tessera_test_probe(void) {
    const char *dir = getenv("TESSERA_TEST_PROBE_DIR");
    if (!dir) return;
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/probe.%d", dir, (int)getpid());
    FILE *out = fopen(path, "w");
    if (!out) return;
    for (char **entry = environ; *entry; entry++) fprintf(out, "env %s\n", *entry);
    char cwd[PATH_MAX];
    if (getcwd(cwd, sizeof cwd)) fprintf(out, "cwd %s\n", cwd);
    mode_t mask = umask(0);
    umask(mask);
    fprintf(out, "umask %03o\n", (unsigned)mask);
    DIR *fds = opendir("/proc/self/fd");
    if (fds) {
        struct dirent *entry;
        while ((entry = readdir(fds))) {
            if (entry->d_name[0] == '.') continue;
            int fd = atoi(entry->d_name);
            if (fd == dirfd(fds) || fd == fileno(out)) continue;
            char link[PATH_MAX], target[PATH_MAX];
            snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
            ssize_t length = readlink(link, target, sizeof target - 1);
            if (length < 0) length = 0;
            target[length] = 0;
            fprintf(out, "fd %d %s\n", fd, target);
        }
        closedir(fds);
    }
    limit(out, "NOFILE", RLIMIT_NOFILE);
    limit(out, "CORE", RLIMIT_CORE);
    FILE *status = fopen("/proc/self/status", "r");
    if (status) {
        char line[4096];
        while (fgets(line, sizeof line, status)) {
            if (!strncmp(line, "Uid:", 4) || !strncmp(line, "Gid:", 4) ||
                !strncmp(line, "Groups:", 7) || !strncmp(line, "SigBlk:", 7) ||
                !strncmp(line, "SigIgn:", 7))
                fprintf(out, "status %s", line);
        }
        fclose(status);
    }
    fprintf(out, "end\n");
    fclose(out);
}
"#;

/// Builds `source` into a shared library at `library`.
fn compile(source: &str, library: &Path, defines: &[String]) {
    let c_file = library.with_extension("c");
    std::fs::write(&c_file, source).unwrap();
    let output = Command::new("cc")
        .args(["-shared", "-fPIC", "-o"])
        .arg(library)
        .args(defines)
        .arg(&c_file)
        .output()
        .unwrap();
    assert!(output.status.success(), "cc failed: {}", describe(&output));
    std::fs::set_permissions(library, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// The unprivileged caller's files: a library of theirs that leaves a
/// marker when loaded, configurations naming it for OpenSC and p11-kit,
/// a SoftHSM configuration with their own token directory, and a socket
/// standing in for pcscd's.
struct Attacker {
    dir: tempfile::TempDir,
    marker: PathBuf,
    /// Connections to the fake pcscd socket so far.
    pcsc_connections: Arc<AtomicUsize>,
}

impl Attacker {
    fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("tessera-attacker-")
            .tempdir()
            .unwrap();
        let root = dir.path();
        std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o777)).unwrap();
        let marker = root.join("marker");
        let library = root.join("x.so");
        compile(
            MARKER_LIBRARY,
            &library,
            &[format!("-DMARKER=\"{}\"", marker.display())],
        );
        std::fs::write(
            root.join("opensc.conf"),
            format!(
                "app default {{\n  reader_driver pcsc {{\n    provider_library = {};\n  }}\n}}\n",
                library.display()
            ),
        )
        .unwrap();
        // p11-kit's per-user module registrations, under $HOME and under
        // $XDG_CONFIG_HOME (p11-kit itself skips user configuration when
        // running as root or in a setuid program, so no control test here).
        for modules in ["home/.config/pkcs11/modules", "xdg/pkcs11/modules"] {
            let modules = root.join(modules);
            std::fs::create_dir_all(&modules).unwrap();
            std::fs::write(
                modules.join("x.module"),
                format!("module: {}\n", library.display()),
            )
            .unwrap();
        }
        std::fs::create_dir_all(root.join("tokens")).unwrap();
        std::fs::write(
            root.join("softhsm2.conf"),
            format!(
                "directories.tokendir = {}/tokens\nobjectstore.backend = file\nlog.level = DEBUG\n",
                root.display()
            ),
        )
        .unwrap();
        let socket_path = root.join("pcscd.comm");
        let pcsc_socket = UnixListener::bind(&socket_path).unwrap();
        std::fs::set_permissions(&socket_path, std::fs::Permissions::from_mode(0o777)).unwrap();
        // Counts and hangs up at once, so that a client fails fast.
        let pcsc_connections = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&pcsc_connections);
        std::thread::spawn(move || {
            for connection in pcsc_socket.incoming() {
                counter.fetch_add(1, Ordering::SeqCst);
                drop(connection);
            }
        });
        Self {
            dir,
            marker,
            pcsc_connections,
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Everything a caller could set to steer a token stack.
    fn environment(&self) -> Vec<(String, String)> {
        let root = self.path().display().to_string();
        [
            ("OPENSC_CONF", format!("{root}/opensc.conf")),
            ("OPENSC_DRIVER", "PIV-II".to_owned()),
            ("SOFTHSM2_CONF", format!("{root}/softhsm2.conf")),
            (
                "P11_KIT_SERVER_ADDRESS",
                format!("unix:path={root}/p11-kit"),
            ),
            ("P11_KIT_DEBUG", "all".to_owned()),
            ("P11_KIT_STRICT", "yes".to_owned()),
            ("PCSCLITE_CSOCK_NAME", format!("{root}/pcscd.comm")),
            ("HOME", format!("{root}/home")),
            ("TMPDIR", root.clone()),
            ("XDG_CONFIG_HOME", format!("{root}/xdg")),
            ("XDG_DATA_HOME", format!("{root}/xdg")),
            ("XDG_RUNTIME_DIR", root.clone()),
            ("PATH", format!("{root}:/usr/bin:/bin")),
        ]
        .into_iter()
        .map(|(name, value)| (name.to_owned(), value))
        .collect()
    }

    /// What the attacker's library recorded, if it ever ran.
    fn marker(&self) -> Option<String> {
        std::fs::read_to_string(&self.marker).ok()
    }

    /// Whether anything connected to the fake pcscd socket.
    fn pcsc_connections(&self) -> usize {
        self.pcsc_connections.load(Ordering::SeqCst)
    }
}

/// A stack where the card module decides when it can and nothing else can
/// succeed: without a usable card, su must fail.
fn card_then_deny(rig: &LoginRig, log: bool) -> String {
    format!(
        "auth [success=done authinfo_unavail=ignore default=die] {} config={}{}\n\
         auth required pam_deny.so\n\
         account required pam_permit.so\nsession required pam_permit.so\n",
        pam_module().display(),
        rig.config_path().display(),
        if log { " log=stderr" } else { "" }
    )
}

/// Runs `su root -c true` as the unprivileged user, after `prepare` (shell
/// commands run as that user), through `launcher` (a command prefix, or
/// ""), with exactly `environment`, writing `input` to su's standard input.
fn su_as_attacker(
    rig: &LoginRig,
    stack: &str,
    prepare: &str,
    launcher: &str,
    environment: &[(String, String)],
    input: &str,
) -> Output {
    let mut overlay = Overlay::new(&rig.path().join("overlay-isolation"));
    overlay
        .users(&[("alice", ATTACKER_UID)])
        .pam_service("su", stack)
        // Other tests' pcscd must stay out of reach, and out of our way.
        .empty_dir("/run/pcscd");
    let mut script = String::from(prepare);
    script.push_str(&format!("\nexec {launcher} env -i"));
    let mut command = overlay.command("setpriv");
    command.args([
        format!("--reuid={ATTACKER_UID}"),
        format!("--regid={ATTACKER_UID}"),
        "--clear-groups".to_owned(),
        "sh".to_owned(),
        "-c".to_owned(),
    ]);
    for (index, (name, _)) in environment.iter().enumerate() {
        script.push_str(&format!(" \"{name}=$TESSERA_HOSTILE_{index}\""));
    }
    script.push_str(" /bin/su root -c true\n");
    command.arg(script);
    for (index, (_, value)) in environment.iter().enumerate() {
        command.env(format!("TESSERA_HOSTILE_{index}"), value);
    }
    let started = Instant::now();
    let output = output_with_stdin(&mut command, input);
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "su took {:?}",
        started.elapsed()
    );
    output
}

/// su's PAM stack refused: it exits non-zero and says so.
fn assert_su_refused(output: &Output) {
    assert!(!output.status.success(), "{}", describe(output));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("Authentication failure"),
        "{}",
        describe(output)
    );
}

/// A rig whose config uses OpenSC as the PKCS#11 module.
fn opensc_rig() -> LoginRig {
    let rig = LoginRig::new();
    rig.use_pkcs11_module(OPENSC_MODULE);
    rig
}

/// The caller's full hostile environment against OpenSC under su: the
/// token stack runs (and finds no token), the caller's library never loads,
/// nothing connects to the caller's pcscd socket, and su falls through to
/// pam_deny.
fn opensc_under_su_ignores_the_caller(rig: &LoginRig) {
    let attacker = Attacker::new();
    let output = su_as_attacker(
        rig,
        &card_then_deny(rig, true),
        "",
        "",
        &attacker.environment(),
        "",
    );
    assert_su_refused(&output);
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("no token present"),
        "the token stack did not run: {}",
        describe(&output)
    );
    assert_eq!(
        attacker.marker(),
        None,
        "the caller's library ran: {}",
        describe(&output)
    );
    assert_eq!(attacker.pcsc_connections(), 0, "{}", describe(&output));
}

#[test]
fn a_callers_opensc_conf_loads_no_library_when_they_run_su() {
    opensc_under_su_ignores_the_caller(&opensc_rig());
}

/// Without `[pkcs11] environment` the helper does not re-execute itself:
/// its first image, spawned with an empty environment, loads OpenSC.
#[test]
fn a_callers_opensc_conf_loads_no_library_under_su_without_a_configured_environment() {
    let rig = opensc_rig();
    let config = std::fs::read_to_string(rig.config_path()).unwrap();
    let line = format!("{}\n", rig.environment_line());
    assert!(config.contains(&line), "{config}");
    rig.write_config(&config.replace(&line, ""));
    opensc_under_su_ignores_the_caller(&rig);
}

/// "Card or password" still works for the hostile caller: with no card the
/// stack falls through to the password module, and the password lets su in.
#[test]
fn a_hostile_caller_of_su_still_falls_back_to_the_password() {
    const PASSWORD: &str = "correct horse";
    let rig = opensc_rig();
    let attacker = Attacker::new();
    let passdb = rig.path().join("passdb");
    std::fs::write(&passdb, format!("root:{PASSWORD}:su\n")).unwrap();
    let stack = format!(
        "auth [success=done authinfo_unavail=ignore default=die] {} config={} log=stderr\n\
         auth required {PAM_MATRIX} passdb={}\n\
         account required pam_permit.so\nsession required pam_permit.so\n",
        pam_module().display(),
        rig.config_path().display(),
        passdb.display()
    );
    let output = su_as_attacker(
        &rig,
        &stack,
        "",
        "",
        &attacker.environment(),
        &format!("{PASSWORD}\n"),
    );
    assert!(output.status.success(), "{}", describe(&output));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("no token present"),
        "{}",
        describe(&output)
    );
    assert_eq!(attacker.marker(), None, "{}", describe(&output));
    assert_eq!(attacker.pcsc_connections(), 0, "{}", describe(&output));
}

/// Control: the same attack with the caller's OPENSC_CONF handed to the
/// helper (as the token stack saw it before the helper existed) runs the
/// caller's library as root.
#[test]
fn control_opensc_conf_in_the_helper_environment_runs_the_library_as_root() {
    let mut rig = opensc_rig();
    let attacker = Attacker::new();
    rig.set_helper_env("OPENSC_CONF", attacker.path().join("opensc.conf"));
    let output = su_as_attacker(
        &rig,
        &card_then_deny(&rig, true),
        "",
        "",
        &attacker.environment(),
        "",
    );
    assert_su_refused(&output);
    let marker = attacker.marker().unwrap_or_default();
    assert!(
        marker.contains("euid=0 "),
        "marker {marker:?}: {}",
        describe(&output)
    );
}

/// Control: with the caller's PCSCLITE_CSOCK_NAME handed to the helper,
/// OpenSC's PC/SC layer connects to the caller's socket.
#[test]
fn control_pcsclite_csock_name_in_the_helper_environment_reaches_the_callers_socket() {
    let mut rig = opensc_rig();
    let attacker = Attacker::new();
    rig.set_helper_env("PCSCLITE_CSOCK_NAME", attacker.path().join("pcscd.comm"));
    let output = su_as_attacker(
        &rig,
        &card_then_deny(&rig, true),
        "",
        "",
        &attacker.environment(),
        "",
    );
    assert!(!output.status.success(), "{}", describe(&output));
    assert!(attacker.pcsc_connections() > 0, "{}", describe(&output));
}

/// What the probe library saw in one helper process.
#[derive(Debug, Default)]
struct Probe {
    env: BTreeSet<String>,
    cwd: String,
    umask: String,
    fds: Vec<(u32, String)>,
    limits: Vec<(String, String, String)>,
    status: Vec<(String, String)>,
}

impl Probe {
    fn read_all(dir: &Path) -> Vec<(String, Self)> {
        let mut probes = Vec::new();
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let contents = std::fs::read_to_string(&path).unwrap();
            assert!(
                contents.ends_with("end\n"),
                "truncated probe {}:\n{contents}",
                path.display()
            );
            let mut probe = Self::default();
            for line in contents.lines() {
                let (kind, rest) = line.split_once(' ').unwrap_or((line, ""));
                match kind {
                    "env" => {
                        probe.env.insert(rest.to_owned());
                    }
                    "cwd" => probe.cwd = rest.to_owned(),
                    "umask" => probe.umask = rest.to_owned(),
                    "fd" => {
                        let (fd, target) = rest.split_once(' ').unwrap();
                        probe.fds.push((fd.parse().unwrap(), target.to_owned()));
                    }
                    "rlimit" => {
                        let fields: Vec<&str> = rest.split(' ').collect();
                        probe.limits.push((
                            fields[0].to_owned(),
                            fields[1].to_owned(),
                            fields[2].to_owned(),
                        ));
                    }
                    "status" => {
                        let (name, value) = rest.split_once(':').unwrap();
                        probe.status.push((
                            name.to_owned(),
                            value.split_whitespace().collect::<Vec<_>>().join(" "),
                        ));
                    }
                    _ => {}
                }
            }
            probe.fds.sort();
            probes.push((contents, probe));
        }
        probes
    }

    fn status(&self, name: &str) -> &str {
        self.status
            .iter()
            .find(|(key, _)| key == name)
            .map_or("<missing>", |(_, value)| value.as_str())
    }

    fn soft_limit(&self, name: &str) -> &str {
        self.limits
            .iter()
            .find(|(key, _, _)| key == name)
            .map_or("<missing>", |(_, soft, _)| soft.as_str())
    }
}

/// The whole hostile state a caller of su can set up: environment, umask,
/// descriptor limit, core limit, ignored signals, an extra open descriptor
/// and the working directory. The helper must see none of it: its
/// environment is exactly the config's `[pkcs11] environment`.
#[test]
fn the_helper_gets_only_the_configured_environment_and_a_clean_process() {
    let mut rig = LoginRig::new();
    // A token of alice's, so that the helper has token work to do too.
    rig.enroll("alice", KeyType::P256);
    let attacker = Attacker::new();
    let probe = rig.path().join("probe.so");
    compile(PROBE_LIBRARY, &probe, &[]);
    let probes = rig.path().join("probes");
    std::fs::create_dir_all(&probes).unwrap();
    rig.set_helper_env(
        "LD_PRELOAD",
        format!("libnss_wrapper.so {}", probe.display()),
    );
    rig.set_helper_env("TESSERA_TEST_PROBE_DIR", &probes);
    let config = std::fs::read_to_string(rig.config_path()).unwrap();
    let expected_env: BTreeSet<String> = config
        .lines()
        .find_map(|line| line.strip_prefix("environment = "))
        .map(|table| {
            let table: toml::Table = toml::from_str(&format!("e = {table}")).unwrap();
            table["e"]
                .as_table()
                .unwrap()
                .iter()
                .map(|(name, value)| format!("{name}={}", value.as_str().unwrap()))
                .collect()
        })
        .expect("an environment line");
    assert!(expected_env
        .iter()
        .any(|var| var.starts_with("SOFTHSM2_CONF=")));

    // Without CAP_SYS_RESOURCE (some containers) nobody can raise a hard
    // limit again, so the caller lowers only the soft one there.
    let nofile = if has_capability(CAP_SYS_RESOURCE) {
        "ulimit -n 64"
    } else {
        "ulimit -S -n 64"
    };
    let prepare = format!(
        "set -e\numask 000\n{nofile}\nulimit -c unlimited 2>/dev/null || true\n\
         trap '' TERM HUP INT QUIT USR1 PIPE\nexec 7</etc/hostname\nexec 9<&0\ncd {}\n",
        attacker.path().display()
    );
    let output = su_as_attacker(
        &rig,
        &card_then_deny(&rig, false),
        &prepare,
        // A blocked signal mask survives exec too.
        "perl -MPOSIX -e 'sigprocmask(SIG_BLOCK, POSIX::SigSet->new(SIGTERM, SIGUSR2, SIGCHLD, SIGALRM)); exec @ARGV'",
        &attacker.environment(),
        "",
    );
    assert_su_refused(&output);
    assert_eq!(attacker.marker(), None, "{}", describe(&output));
    assert_eq!(attacker.pcsc_connections(), 0, "{}", describe(&output));

    let seen = Probe::read_all(&probes);
    assert!(
        !seen.is_empty(),
        "the helper never ran: {}",
        describe(&output)
    );
    for (raw, probe) in &seen {
        assert_eq!(probe.env, expected_env, "environment:\n{raw}");
        assert_eq!(probe.cwd, "/", "{raw}");
        assert_eq!(probe.umask, "077", "{raw}");
        let fds: Vec<u32> = probe.fds.iter().map(|(fd, _)| *fd).collect();
        assert_eq!(fds, [0, 1, 2], "descriptors:\n{raw}");
        assert!(probe.fds[0].1.starts_with("socket:"), "{raw}");
        assert_eq!(probe.fds[1].1, "/dev/null", "{raw}");
        assert_eq!(probe.fds[2].1, "/dev/null", "{raw}");
        assert_eq!(probe.soft_limit("NOFILE"), "1024", "{raw}");
        assert_eq!(probe.soft_limit("CORE"), "0", "{raw}");
        assert_eq!(probe.status("SigBlk"), "0000000000000000", "{raw}");
        // glibc's posix_spawn leaves its internal signals 32 and 33 ignored
        // in every child; a caller cannot choose them.
        let ignored = u64::from_str_radix(probe.status("SigIgn"), 16).unwrap();
        assert_eq!(
            ignored & !GLIBC_INTERNAL_SIGNALS,
            0,
            "ignored signals:\n{raw}"
        );
        assert_eq!(probe.status("Uid"), "0 0 0 0", "{raw}");
        // su is setuid, not setgid: the helper leaves the caller's group
        // for root's, so that nothing it creates belongs to the caller.
        assert_eq!(probe.status("Gid"), "0 0 0 0", "{raw}");
        assert_eq!(probe.status("Groups"), "", "{raw}");
    }
}

/// glibc's SIGCANCEL and SIGSETXID (32, 33) in a SigIgn mask.
const GLIBC_INTERNAL_SIGNALS: u64 = (1 << 31) | (1 << 32);
const CAP_SYS_RESOURCE: u32 = 24;

/// Whether this process's bounding set holds `capability`.
fn has_capability(capability: u32) -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let bounding = status
        .lines()
        .find_map(|line| line.strip_prefix("CapBnd:"))
        .map(|mask| u64::from_str_radix(mask.trim(), 16).unwrap())
        .unwrap();
    bounding & (1 << capability) != 0
}

/// Runs the harness with `extra` arguments and a time bound: a host that
/// reaps the helper itself must not make the module wait forever.
fn bounded(rig: &LoginRig, answers: &[&str], ops: &[&str], extra: &[&str]) -> PamRun {
    let mut child = rig
        .harness_command(Some("alice"), answers, ops, extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if started.elapsed() > Duration::from_secs(60) {
            child.kill().unwrap();
            let output = child.wait_with_output().unwrap();
            panic!("the harness hung with {extra:?}: {}", describe(&output));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = child.wait_with_output().unwrap();
    let run = PamRun::parse(&output.stdout, &output.stderr);
    assert!(output.status.success(), "{}\n{run}", describe(&output));
    run
}

/// The SIGCHLD disposition the harness reported at its end, and how many
/// SIGCHLD signals its `--reap-children` handler took.
fn sigchld(run: &PamRun) -> (String, u64) {
    let event = run
        .events
        .iter()
        .find(|event| event["event"] == "sigchld")
        .unwrap_or_else(|| panic!("no sigchld event: {run}"));
    (
        event["disposition"].as_str().unwrap().to_owned(),
        event["signals"].as_u64().unwrap(),
    )
}

/// A rig whose service runs the module for auth and session, with session
/// bindings in the scratch directory.
fn session_rig() -> LoginRig {
    let mut rig = LoginRig::new();
    rig.enroll("alice", KeyType::P256);
    let config = rig.default_config().replace(
        "[pki]",
        &format!(
            "[session]\nbindings_dir = \"{}\"\n[pki]",
            rig.path().join("sessions").display()
        ),
    );
    rig.write_config(&config);
    rig.write_service(&format!(
        "auth required {module} config={config} log=stderr debug\n\
         account required pam_permit.so\n\
         session required {module} config={config} log=stderr debug\n",
        module = pam_module().display(),
        config = rig.config_path().display()
    ));
    rig
}

fn host_that_handles_children(option: &str, disposition: &str) {
    let rig = session_rig();
    let good = bounded(&rig, &[PIN], &["authenticate"], &[option]);
    assert_eq!(good.result("authenticate"), "PAM_SUCCESS", "{good}");
    assert_eq!(good.user().as_deref(), Some("alice"));
    let (now, signals) = sigchld(&good);
    assert_eq!(now, disposition, "the module changed SIGCHLD: {good}");
    if option == "--reap-children" {
        // Whether the host's handler or the module's waitpid reaps the
        // helper is a race (about half and half here); the module must not
        // care. With SIG_IGN the kernel always takes the child first.
        assert!(signals >= 1, "the host's handler never ran: {good}");
    }

    let bad = bounded(&rig, &["000000"], &["authenticate"], &[option]);
    assert_eq!(bad.result("authenticate"), "PAM_AUTH_ERR", "{bad}");
    assert_eq!(sigchld(&bad).0, disposition, "{bad}");

    let binding = rig.path().join("sessions/c9.toml");
    let opened = bounded(
        &rig,
        &[PIN],
        &["authenticate", "open_session"],
        &[option, "--env", "XDG_SESSION_ID=c9"],
    );
    assert_eq!(opened.result("open_session"), "PAM_SUCCESS", "{opened}");
    assert!(binding.exists(), "no session binding: {opened}");
    let round = bounded(
        &rig,
        &[PIN],
        &["authenticate", "open_session", "close_session"],
        &[option, "--env", "XDG_SESSION_ID=c9"],
    );
    assert_eq!(round.result("authenticate"), "PAM_SUCCESS", "{round}");
    assert_eq!(round.result("open_session"), "PAM_SUCCESS", "{round}");
    assert_eq!(round.result("close_session"), "PAM_SUCCESS", "{round}");
    assert!(
        !binding.exists(),
        "the binding outlived close_session: {round}"
    );
    assert_eq!(sigchld(&round).0, disposition, "{round}");
}

#[test]
fn a_host_that_reaps_children_itself_gets_correct_answers() {
    host_that_handles_children("--reap-children", "handler");
}

#[test]
fn a_host_that_ignores_sigchld_gets_correct_answers() {
    host_that_handles_children("--ignore-sigchld", "ignore");
}

#[test]
fn a_host_with_default_sigchld_gets_correct_answers() {
    let rig = session_rig();
    let run = bounded(&rig, &[PIN], &["authenticate"], &[]);
    assert_eq!(run.result("authenticate"), "PAM_SUCCESS", "{run}");
    assert_eq!(sigchld(&run), ("default".to_owned(), 0), "{run}");
}

/// The anchors on the same attack (docs/security.md): Debian 12's
/// pam_pkcs11 0.6.12 and pam_p11 0.3.1 load the PKCS#11 module inside
/// `su`, where the caller's OPENSC_CONF names a library of theirs, which
/// then runs as root.
#[test]
#[ignore = "needs libpam-pkcs11 and libpam-p11, which scripts/bench installs; run with --ignored"]
fn the_anchors_run_the_callers_library_as_root_under_su() {
    for reference in [PAM_PKCS11_SERVICE, PAM_P11_SERVICE] {
        let rig = opensc_rig();
        if reference == PAM_PKCS11_SERVICE {
            references::pam_pkcs11_service(&rig, OPENSC_MODULE, "");
        } else {
            references::pam_p11_service(&rig, OPENSC_MODULE, "root", "");
        }
        let line = std::fs::read_to_string(rig.confdir().join(reference)).unwrap();
        let stack = format!(
            "{}auth required pam_deny.so\naccount required pam_permit.so\nsession required pam_permit.so\n",
            line.replace(
                "auth required",
                "auth [success=done authinfo_unavail=ignore default=die]"
            )
        );
        let attacker = Attacker::new();
        let output = su_as_attacker(&rig, &stack, "", "", &attacker.environment(), "");
        assert!(
            !output.status.success(),
            "{reference}: {}",
            describe(&output)
        );
        let marker = attacker.marker().unwrap_or_default();
        assert!(
            marker.contains("euid=0 "),
            "{reference}: marker {marker:?}: {}",
            describe(&output)
        );
    }
}
