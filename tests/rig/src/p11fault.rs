//! Logins through `libtessera_p11fault.so`, the fault-injecting PKCS#11
//! module, in front of the rig's SoftHSM tokens: fault plans, harness runs
//! with a time bound, and the module's call log.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::bins::artefact;
use crate::login::{LoginRig, PamRun};
use crate::softhsm::SOFTHSM_MODULE;

/// The environment variable that names the module's plan file.
pub const PLAN_VAR: &str = "TESSERA_P11FAULT_PLAN";

/// How long one login may take before the run is killed and counted as a hang.
pub const RUN_BOUND: Duration = Duration::from_secs(10);

/// The fault-injecting module.
pub fn module() -> PathBuf {
    artefact("libtessera_p11fault.so")
}

/// A fault plan: rules in the module's TOML, first match wins.
#[derive(Debug, Clone, Default)]
pub struct FaultPlan {
    rules: Vec<String>,
}

impl FaultPlan {
    /// A plan that breaks nothing: every call is forwarded and logged.
    pub fn new() -> Self {
        Self::default()
    }

    /// Applies `action` (TOML, e.g. `{ fail = "CKR_DEVICE_ERROR" }`) to the
    /// `call`-th call of `function`, or to every call.
    pub fn rule(mut self, function: &str, call: Option<u64>, action: &str) -> Self {
        let call = call.map(|n| format!("call = {n}\n")).unwrap_or_default();
        self.rules.push(format!(
            "[[fault]]\nfunction = \"{function}\"\n{call}action = {action}\n"
        ));
        self
    }

    /// `function` returns `code` without reaching the token.
    pub fn fail(self, function: &str, call: Option<u64>, code: &str) -> Self {
        self.rule(function, call, &format!("{{ fail = \"{code}\" }}"))
    }

    fn render(&self, log: &Path) -> String {
        let mut text = format!(
            "module = \"{SOFTHSM_MODULE}\"\nlog = \"{}\"\n",
            log.display()
        );
        for rule in &self.rules {
            text.push_str(rule);
        }
        text
    }
}

/// One line of the module's call log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    /// The PKCS#11 function, e.g. `C_Sign`.
    pub function: String,
    /// Which call of that function this was, from 1.
    pub call: u64,
    /// The return code's name, e.g. `CKR_OK`.
    pub rv: String,
    /// Notes: `injected` when a fault fired, `key=value` details.
    pub notes: Vec<String>,
}

impl Call {
    fn parse(line: &str) -> Self {
        let mut words = line.split_whitespace();
        let mut next = || {
            words
                .next()
                .unwrap_or_else(|| panic!("short call log line {line:?}"))
        };
        let function = next().to_owned();
        let call = next().parse().expect("call number");
        let rv = next().to_owned();
        Self {
            function,
            call,
            rv,
            notes: words.map(str::to_owned).collect(),
        }
    }

    /// True when the plan changed this call.
    pub fn injected(&self) -> bool {
        self.notes.iter().any(|note| note == "injected")
    }

    /// True when the plan changed what this call did or returned, rather
    /// than only delaying it.
    pub fn altered(&self) -> bool {
        self.injected() && self.note("slept_ms").is_none()
    }

    /// The value of note `key=value`.
    pub fn note(&self, key: &str) -> Option<&str> {
        self.notes
            .iter()
            .find_map(|note| note.strip_prefix(key)?.strip_prefix('='))
    }
}

/// What one login through the fault module did.
#[derive(Debug)]
pub struct FaultRun {
    /// The harness output.
    pub run: PamRun,
    /// How the harness process ended (killed when it ran past the bound).
    pub status: ExitStatus,
    /// It ran past its bound and was killed.
    pub timed_out: bool,
    /// Wall-clock time of the whole process.
    pub elapsed: Duration,
    /// The module's call log, in order.
    pub calls: Vec<Call>,
}

impl FaultRun {
    /// The result name of `pam_authenticate`, if the harness got that far.
    pub fn result(&self) -> Option<&str> {
        self.result_of("authenticate")
    }

    /// The result name of the PAM call `op` (e.g. `chauthtok`), if made.
    pub fn result_of(&self, op: &str) -> Option<&str> {
        self.run
            .events
            .iter()
            .find(|event| event["event"] == "result" && event["op"] == op)
            .and_then(|event| event["name"].as_str())
    }

    /// The `C_Login` calls as the Security Officer.
    pub fn so_logins(&self) -> Vec<&Call> {
        self.calls
            .iter()
            .filter(|call| call.function == "C_Login" && call.note("user_type") == Some("so"))
            .collect()
    }

    /// The functions called, in order.
    pub fn functions(&self) -> Vec<&str> {
        self.calls
            .iter()
            .map(|call| call.function.as_str())
            .collect()
    }

    /// True when some call of `function` was made.
    pub fn called(&self, function: &str) -> bool {
        self.calls.iter().any(|call| call.function == function)
    }

    /// How many calls of `function` were made.
    pub fn count(&self, function: &str) -> usize {
        self.calls
            .iter()
            .filter(|call| call.function == function)
            .count()
    }

    /// The calls a fault changed.
    pub fn injected(&self) -> Vec<&Call> {
        self.calls.iter().filter(|call| call.injected()).collect()
    }

    /// The process's peak memory in KiB, as the module saw it at C_Finalize.
    pub fn peak_rss_kb(&self) -> Option<u64> {
        self.calls
            .iter()
            .find_map(|call| call.note("peak_rss_kb")?.parse().ok())
    }
}

impl std::fmt::Display for FaultRun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "status {}, {:?}{}",
            self.status,
            self.elapsed,
            if self.timed_out {
                " (killed: ran past its bound)"
            } else {
                ""
            }
        )?;
        writeln!(f, "--- calls ---")?;
        for call in &self.calls {
            writeln!(
                f,
                "{} {} {} {}",
                call.function,
                call.call,
                call.rv,
                call.notes.join(" ")
            )?;
        }
        write!(f, "{}", self.run)
    }
}

/// A login rig whose config points at the fault module.
#[derive(Debug)]
pub struct FaultRig {
    /// The rig underneath: tokens, CA, users, PAM files.
    pub rig: LoginRig,
    runs: AtomicUsize,
}

impl FaultRig {
    /// Points the helper at a new plan file (it reads nothing from the PAM
    /// application's environment).
    fn use_plan(&self, plan_path: &Path) {
        let config = std::fs::read_to_string(self.rig.config_path()).expect("read config");
        let line = self.rig.environment_line();
        let with_plan = line.replacen(
            "environment = { ",
            &format!("environment = {{ \"{PLAN_VAR}\" = \"{}\", ", plan_path.display()),
            1,
        );
        let current = config
            .lines()
            .find(|l| l.starts_with("environment = { "))
            .expect("the config has an environment line")
            .to_owned();
        assert!(
            current == line || current.contains(PLAN_VAR),
            "unexpected environment line {current:?}"
        );
        self.rig.write_config(&config.replace(&current, &with_plan));
    }

    /// Switches `rig`'s config to the fault module.
    pub fn new(rig: LoginRig) -> Self {
        rig.use_pkcs11_module(&module().display().to_string());
        Self {
            rig,
            runs: AtomicUsize::new(0),
        }
    }

    /// `pam_authenticate` as `user` under `plan`, killed after [`RUN_BOUND`].
    pub fn login(&self, plan: &FaultPlan, user: Option<&str>, answers: &[&str]) -> FaultRun {
        self.run(plan, user, answers, &["authenticate"], None, RUN_BOUND)
    }

    /// The PAM calls `ops` (e.g. `["chauthtok"]`) as `user` under `plan`,
    /// killed after [`RUN_BOUND`].
    pub fn pam(
        &self,
        plan: &FaultPlan,
        user: Option<&str>,
        answers: &[&str],
        ops: &[&str],
    ) -> FaultRun {
        self.run(plan, user, answers, ops, None, RUN_BOUND)
    }

    /// Like [`FaultRig::login`], under valgrind's memcheck (slow: bounded at
    /// a minute); returns the run and memcheck's report. Memcheck errors make
    /// the harness exit with status 99.
    pub fn login_under_memcheck(
        &self,
        plan: &FaultPlan,
        user: Option<&str>,
        answers: &[&str],
    ) -> (FaultRun, String) {
        let report = self.rig.path().join(format!(
            "memcheck-{}.log",
            self.runs.load(Ordering::Relaxed)
        ));
        let run = self.run(
            plan,
            user,
            answers,
            &["authenticate"],
            Some(&report),
            Duration::from_secs(60),
        );
        (run, std::fs::read_to_string(&report).unwrap_or_default())
    }

    fn run(
        &self,
        plan: &FaultPlan,
        user: Option<&str>,
        answers: &[&str],
        ops: &[&str],
        memcheck_report: Option<&Path>,
        bound: Duration,
    ) -> FaultRun {
        let dir = self.rig.path().join(format!(
            "fault-{}",
            self.runs.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("fault run dir");
        let log = dir.join("calls.log");
        let plan_path = dir.join("plan.toml");
        std::fs::write(&plan_path, plan.render(&log)).expect("write plan");
        self.use_plan(&plan_path);

        let harness = self.rig.harness_command(user, answers, ops, &[]);
        let mut command = match memcheck_report {
            None => harness,
            Some(report) => {
                let mut valgrind = Command::new("valgrind");
                valgrind
                    .args(["--tool=memcheck", "--error-exitcode=99"])
                    .arg(format!("--log-file={}", report.display()))
                    .arg(harness.get_program())
                    .args(harness.get_args());
                for (key, value) in harness.get_envs() {
                    match value {
                        Some(value) => valgrind.env(key, value),
                        None => valgrind.env_remove(key),
                    };
                }
                valgrind
            }
        };
        command
            .env(PLAN_VAR, &plan_path)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let start = Instant::now();
        let mut child = command.spawn().expect("start tessera-pam-harness");
        // Drain both pipes while waiting, or a chatty run blocks on a full pipe.
        let drain = |pipe: Option<Box<dyn Read + Send>>| {
            std::thread::spawn(move || {
                let mut bytes = Vec::new();
                if let Some(mut pipe) = pipe {
                    pipe.read_to_end(&mut bytes).expect("read harness output");
                }
                bytes
            })
        };
        let stdout = drain(
            child
                .stdout
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
        );
        let stderr = drain(
            child
                .stderr
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
        );
        let mut timed_out = false;
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait for the harness") {
                break status;
            }
            if start.elapsed() > bound {
                timed_out = true;
                child.kill().expect("kill the harness");
                break child.wait().expect("reap the harness");
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        let elapsed = start.elapsed();
        let run = PamRun::parse(
            &stdout.join().expect("stdout reader"),
            &stderr.join().expect("stderr reader"),
        );
        let calls = std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .map(Call::parse)
            .collect();
        FaultRun {
            run,
            status,
            timed_out,
            elapsed,
            calls,
        }
    }
}
