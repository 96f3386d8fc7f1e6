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

/// The wrapper command line that runs the PAM application under valgrind's
/// memcheck and, through `--trace-children=yes`, every program it starts:
/// the helper `tessera-auth`, both of its starts (it re-executes itself with
/// the config's environment; valgrind copes with the empty environment the
/// module gives it, adding what it needs at each exec).
///
/// Every instance reports on its standard error, which the rig's helper
/// shares with the application (`log=stderr`): a report file per process
/// would not do, as the helper's second start has the same pid as its first
/// and would overwrite its report. `--child-silent-after-fork` keeps quiet
/// the application's copy between fork and exec. Check the output with
/// [`memcheck_reports`].
pub fn memcheck_command() -> Vec<std::ffi::OsString> {
    [
        "valgrind",
        "--tool=memcheck",
        "--error-exitcode=99",
        "--track-origins=yes",
        "--trace-children=yes",
        "--child-silent-after-fork=yes",
    ]
    .map(Into::into)
    .to_vec()
}

/// What one valgrind instance (one program, between exec and exit or the
/// next exec) reported.
#[derive(Debug, Clone, Default)]
pub struct MemcheckReport {
    /// The process id.
    pub pid: u32,
    /// The program and its arguments.
    pub command: String,
    /// The report's lines, without the `==PID==` prefix.
    pub lines: Vec<String>,
}

impl MemcheckReport {
    /// True when this is a report on the helper.
    pub fn is_helper(&self) -> bool {
        self.command
            .split_whitespace()
            .next()
            .is_some_and(|program| program.ends_with("/tessera-auth"))
    }

    /// The error count of the final summary, if the program ran to its exit.
    pub fn errors(&self) -> Option<u64> {
        self.lines.iter().find_map(|line| {
            line.strip_prefix("ERROR SUMMARY: ")?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
    }

    /// True when memcheck printed an error (errors come with a stack;
    /// warnings such as "invalid file descriptor" without).
    pub fn has_error_report(&self) -> bool {
        self.lines.iter().any(|line| {
            let line = line.trim_start();
            line.starts_with("at 0x") || line.starts_with("by 0x")
        })
    }
}

/// Splits the standard error of a run under [`memcheck_command`] into one
/// report per valgrind instance, and checks them: memcheck followed the run
/// into the helper, every instance that exited says "0 errors", every one
/// that did not exited by exec (another instance of the same pid follows),
/// and no instance printed an error. The reports, or what is wrong.
pub fn memcheck_reports(stderr: &str) -> Result<Vec<MemcheckReport>, String> {
    let mut reports: Vec<MemcheckReport> = Vec::new();
    for line in stderr.lines() {
        let Some((pid, text)) = line
            .strip_prefix("==")
            .and_then(|rest| rest.split_once("== "))
            .or_else(|| {
                line.strip_prefix("==")?
                    .strip_suffix("==")
                    .map(|pid| (pid, ""))
            })
        else {
            continue;
        };
        let Ok(pid) = pid.parse::<u32>() else {
            continue;
        };
        if text.starts_with("Memcheck, a memory error detector") {
            reports.push(MemcheckReport {
                pid,
                ..MemcheckReport::default()
            });
        }
        let Some(report) = reports.iter_mut().rev().find(|report| report.pid == pid) else {
            return Err(format!("a valgrind line before its header: {line:?}"));
        };
        if let Some(command) = text.strip_prefix("Command: ") {
            report.command = command.to_owned();
        }
        report.lines.push(text.to_owned());
    }
    let describe = |report: &MemcheckReport| {
        format!(
            "==== pid {} ({})\n{}",
            report.pid,
            report.command,
            report.lines.join("\n")
        )
    };
    let all = reports.iter().map(describe).collect::<Vec<_>>().join("\n");
    if !reports
        .iter()
        .any(|report| report.is_helper() && report.errors().is_some())
    {
        return Err(format!("memcheck did not follow into the helper:\n{all}"));
    }
    for (index, report) in reports.iter().enumerate() {
        let exec_followed = reports[index + 1..]
            .iter()
            .any(|later| later.pid == report.pid);
        let bad = report.has_error_report()
            || match report.errors() {
                Some(count) => count != 0,
                None => !exec_followed,
            };
        if bad {
            return Err(format!(
                "memcheck found errors in pid {} ({}), or it did not finish:\n{all}",
                report.pid, report.command
            ));
        }
    }
    Ok(reports)
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
            &format!(
                "environment = {{ \"{PLAN_VAR}\" = \"{}\", ",
                plan_path.display()
            ),
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
        self.run(plan, user, answers, &["authenticate"], false, RUN_BOUND)
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
        self.run(plan, user, answers, ops, false, RUN_BOUND)
    }

    /// Like [`FaultRig::login`], under valgrind's memcheck following into
    /// the helper (slow: bounded at a minute); returns the run and
    /// [`memcheck_reports`] of it.
    pub fn login_under_memcheck(
        &self,
        plan: &FaultPlan,
        user: Option<&str>,
        answers: &[&str],
    ) -> (FaultRun, Result<Vec<MemcheckReport>, String>) {
        let run = self.run(
            plan,
            user,
            answers,
            &["authenticate"],
            true,
            Duration::from_secs(60),
        );
        let reports = memcheck_reports(&run.run.log);
        (run, reports)
    }

    fn run(
        &self,
        plan: &FaultPlan,
        user: Option<&str>,
        answers: &[&str],
        ops: &[&str],
        memcheck: bool,
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
        let mut command = if memcheck {
            let wrapper = memcheck_command();
            let mut valgrind = Command::new(&wrapper[0]);
            valgrind
                .args(&wrapper[1..])
                .arg(harness.get_program())
                .args(harness.get_args());
            for (key, value) in harness.get_envs() {
                match value {
                    Some(value) => valgrind.env(key, value),
                    None => valgrind.env_remove(key),
                };
            }
            valgrind
        } else {
            harness
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

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    const HARNESS: &str = "==10== Memcheck, a memory error detector\n\
        ==10== Command: /t/tessera-pam-harness --op authenticate\n\
        DEBUG helper started\n\
        ==10== ERROR SUMMARY: 0 errors from 0 contexts (suppressed: 0 from 0)\n";

    fn helper_start(pid: u32, args: &str, body: &str) -> String {
        format!(
            "=={pid}== Memcheck, a memory error detector\n\
             =={pid}== Command: /t/tessera-auth --config /c.toml{args}\n{body}"
        )
    }

    const ERROR: &str = "==11== Conditional jump or move depends on uninitialised value(s)\n\
        ==11==    at 0x4EF51C9: dispatch (ffi.rs:119)\n\
        ==11==    by 0x4EDAAFC: C_Initialize (ffi.rs:171)\n";
    const CLEAN_END: &str = "==11== ERROR SUMMARY: 0 errors from 0 contexts\n";

    #[test]
    fn a_clean_run_through_both_helper_starts_passes() {
        let log = format!(
            "{}{}{HARNESS}",
            helper_start(
                11,
                "",
                "==11== Warning: invalid file descriptor 1 in syscall close()\n"
            ),
            helper_start(11, " --environment-applied", CLEAN_END),
        );
        let reports = memcheck_reports(&log).unwrap();
        assert_eq!(reports.len(), 3);
        assert!(reports[1].is_helper() && reports[1].errors() == Some(0));
    }

    #[test]
    fn errors_in_either_helper_start_or_a_helper_that_never_finished_fail() {
        for log in [
            // An error before the re-execution, which prints no summary.
            format!(
                "{}{}{HARNESS}",
                helper_start(11, "", ERROR),
                helper_start(11, " --environment-applied", CLEAN_END),
            ),
            // An error in the second start.
            format!(
                "{}{}{HARNESS}",
                helper_start(11, "", ""),
                helper_start(11, " --environment-applied", &format!("{ERROR}{CLEAN_END}")),
            ),
            // A non-zero summary.
            format!(
                "{}{HARNESS}",
                helper_start(11, "", "==11== ERROR SUMMARY: 2 errors from 1 contexts\n"),
            ),
            // Killed before its summary (no exec followed).
            format!(
                "{}{HARNESS}",
                helper_start(11, " --environment-applied", "")
            ),
            // Memcheck never saw the helper.
            HARNESS.to_owned(),
        ] {
            assert!(memcheck_reports(&log).is_err(), "passed:\n{log}");
        }
    }
}
