//! tessera-eventd against faults real logind will not produce on demand:
//! a login1 stand-in of the project's own (`tessera-rig-login1`) on a
//! private system bus, with real pcscd and a virtual card. The daemon must
//! retry, log and keep running.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tessera_core::binding::{BoundToken, SessionBinding, BINDING_VERSION};
use tessera_core::eventd_api::DBUS_NAME;
use tessera_testrig::dbus::PrivateBus;
use tessera_testrig::eventd::{HostEventd, Login1StandIn};
use tessera_testrig::login::{CardKey, LoginRig, PIN};
use tessera_testrig::p11fault;
use tessera_testrig::pcscd::{reader_name, Pcscd, OPENSC_PKCS11};
use tessera_testrig::vcard::{CardSpec, VirtualCard};

const REACTION: Duration = Duration::from_secs(5);
/// The card's GUID; OpenSC shows its last 16 hex digits as the serial.
const GUID: &str = "00112233445566778899aabbccddeeff";

struct Rig {
    rig: LoginRig,
    bus: PrivateBus,
    card: VirtualCard,
    pcscd: Pcscd,
    sessions: PathBuf,
    /// The fault module's plan, when eventd loads OpenSC through it.
    plan: Option<PathBuf>,
}

impl Rig {
    /// pcscd, alice's card, a private bus, and a binding of logind session
    /// "1" to alice's card; `eventd` is the `[eventd]` section.
    fn new(eventd: &str) -> Rig {
        Rig::build(eventd, false)
    }

    /// Like [`Rig::new`], with eventd loading OpenSC through the fault
    /// module; its plan is written by [`Rig::write_plan`].
    fn with_fault_module(eventd: &str) -> Rig {
        Rig::build(eventd, true)
    }

    fn build(eventd: &str, faults: bool) -> Rig {
        let module = if faults {
            p11fault::module()
        } else {
            PathBuf::from(OPENSC_PKCS11)
        };
        let mut rig = LoginRig::new();
        rig.add_user("alice");
        let pcscd = Pcscd::start_for_readers(&rig.path().join("pcscd"), &[0]).unwrap();
        let (key, cert) = rig.card_credentials("alice", CardKey::P256);
        let card = CardSpec::new(0)
            .slot("9a", key, cert)
            .pin(PIN)
            .guid(GUID)
            .start(&pcscd)
            .unwrap();
        let bus = PrivateBus::start(&rig.path().join("bus"));
        let sessions = rig.path().join("sessions");
        std::fs::write(
            rig.config_path(),
            format!(
                "version = 1\n[pkcs11]\nmodule = \"{}\"\n[pki]\nca = [\"{}\"]\n\
                 [[rule]]\nuser = \"{{cn}}\"\n[session]\nbindings_dir = \"{}\"\n[eventd]\n{eventd}",
                module.display(),
                rig.ca_dir().display(),
                sessions.display()
            ),
        )
        .unwrap();
        let plan = faults.then(|| rig.path().join("plan.toml"));
        let rig = Rig {
            rig,
            bus,
            card,
            pcscd,
            sessions,
            plan,
        };
        if faults {
            rig.write_plan("");
        }
        rig.bind("1");
        rig
    }

    fn bind(&self, session: &str) {
        SessionBinding {
            version: BINDING_VERSION,
            session_id: session.into(),
            uid: 20001,
            user: "alice".into(),
            service: "login".into(),
            tty: "tty1".into(),
            pid: 1,
            created: 0,
            certificate_sha256: "00".repeat(32),
            token: BoundToken {
                label: "alice".into(),
                manufacturer: "piv_II".into(),
                model: "PKCS#15 emulated".into(),
                serial: GUID[16..].into(),
                slot_description: reader_name(0),
            },
        }
        .write(&self.sessions)
        .unwrap();
    }

    /// The fault module forwards to OpenSC with `faults` (its `[[fault]]`
    /// rules); each identification helper reads the plan afresh.
    fn write_plan(&self, faults: &str) {
        let plan = self.plan.as_ref().expect("a rig with the fault module");
        let log = self.rig.path().join("calls.log");
        std::fs::write(
            plan,
            format!(
                "module = \"{OPENSC_PKCS11}\"\nlog = \"{}\"\n{faults}",
                log.display()
            ),
        )
        .unwrap();
    }

    /// How many times the fault module saw `function` called.
    fn calls(&self, function: &str) -> usize {
        std::fs::read_to_string(self.rig.path().join("calls.log"))
            .unwrap_or_default()
            .lines()
            .filter(|line| line.split_whitespace().next() == Some(function))
            .count()
    }

    fn env(&self) -> Vec<(String, OsString)> {
        let (key, value) = self.bus.env();
        let mut env = self.pcscd.env();
        env.push((key, value.into()));
        if let Some(plan) = &self.plan {
            env.push((p11fault::PLAN_VAR.to_owned(), plan.into()));
        }
        env
    }

    /// eventd, owning its bus name; its first identification may still run.
    fn start_eventd(&self, extra: &[&str]) -> HostEventd {
        let eventd = HostEventd::start(
            &self.rig.config_path(),
            &self.rig.path().join("eventd.log"),
            &self.env(),
            extra,
        );
        assert!(
            self.bus.wait_for_name(DBUS_NAME, REACTION),
            "eventd did not own its name:\n{}",
            eventd.log()
        );
        eventd
    }

    fn eventd(&self, extra: &[&str]) -> HostEventd {
        let eventd = self.start_eventd(extra);
        let inserted = eventd.wait_lines("eventd.token.inserted", 1, REACTION);
        assert!(inserted[0].contains(&GUID[16..]), "{}", inserted[0]);
        eventd
    }

    fn standin(&self, args: &[&str]) -> Login1StandIn {
        let mut all = vec!["--session", "1:alice:20001"];
        all.extend_from_slice(args);
        Login1StandIn::start(&self.bus, &self.rig.path().join("calls.jsonl"), &all)
    }

    fn pull(&self) {
        self.card.pull().unwrap();
        self.pcscd.wait_card(0, false, REACTION).unwrap();
    }

    fn insert(&self) {
        self.card.insert().unwrap();
        self.pcscd.wait_card(0, true, REACTION).unwrap();
    }

    fn binding_exists(&self, session: &str) -> bool {
        Path::new(&self.sessions)
            .join(format!("{session}.toml"))
            .exists()
    }
}

/// The daemon survived and still acts: one more pull-and-lock round.
fn still_works(rig: &Rig, eventd: &mut HostEventd, login1: &Login1StandIn) {
    assert!(eventd.running(), "eventd died:\n{}", eventd.log());
    let before = login1.count("LockSession", "1");
    let locked = eventd.lines("eventd.session.locked").len();
    rig.insert();
    rig.pull();
    login1.wait_calls("LockSession", "1", before + 1, REACTION);
    eventd.wait_lines("eventd.session.locked", locked + 1, REACTION);
}

#[test]
fn a_pull_while_logind_is_absent_is_retried_until_it_appears() {
    let rig = Rig::new("");
    let mut eventd = rig.eventd(&[]);
    rig.pull();
    eventd.wait_lines("eventd.logind.retry", 2, REACTION);
    let login1 = rig.standin(&[]);
    login1.wait_calls("LockSession", "1", 1, Duration::from_secs(10));
    let locked = eventd.wait_lines("eventd.session.locked", 1, REACTION);
    assert!(locked[0].contains("session=\"1\""), "{}", locked[0]);
    assert!(!eventd.lines("eventd.logind.recovered").is_empty());
    still_works(&rig, &mut eventd, &login1);
    assert_eq!(eventd.terminate(), Some(0), "SIGTERM stops it cleanly");
}

#[test]
fn logind_errors_are_retried_and_logged() {
    let rig = Rig::new("");
    let login1 = rig.standin(&["--fail-lock", "2"]);
    let mut eventd = rig.eventd(&[]);
    rig.pull();
    login1.wait_calls("LockSession", "1", 3, REACTION);
    let retries = eventd.wait_lines("eventd.logind.retry", 2, REACTION);
    assert!(
        retries[0].contains("org.freedesktop.DBus.Error.Failed"),
        "the error is logged: {}",
        retries[0]
    );
    eventd.wait_lines("eventd.session.locked", 1, REACTION);
    still_works(&rig, &mut eventd, &login1);
}

#[test]
fn a_reply_slower_than_the_call_timeout_is_retried() {
    let rig = Rig::new("");
    let login1 = rig.standin(&["--delay-first-lock-ms", "1500"]);
    let mut eventd = rig.eventd(&["--dbus-timeout-ms", "500"]);
    rig.pull();
    login1.wait_calls("LockSession", "1", 2, REACTION);
    eventd.wait_lines("eventd.session.locked", 1, REACTION);
    assert!(!eventd.lines("eventd.logind.retry").is_empty());
    still_works(&rig, &mut eventd, &login1);
}

#[test]
fn unconfirmed_lock_with_escalation_warn_is_logged_loudly_and_nothing_else() {
    let rig = Rig::new("lock_timeout = \"500ms\"\nescalation = \"warn\"\n");
    let login1 = rig.standin(&["--locker", "never"]);
    let mut eventd = rig.eventd(&[]);
    rig.pull();
    let loud = eventd.wait_lines("eventd.lock.left-unlocked", 1, REACTION);
    assert!(loud[0].contains("ERROR"), "{}", loud[0]);
    assert!(loud[0].contains("SESSION LEFT UNLOCKED"), "{}", loud[0]);
    assert_eq!(login1.count("TerminateSession", "1"), 0);
    assert!(eventd.running());
}

#[test]
fn unconfirmed_lock_runs_the_escalation_command_with_the_session_in_its_environment() {
    let out = tempfile::tempdir().unwrap();
    let env_file = out.path().join("env");
    let rig = Rig::new(&format!(
        "lock_timeout = \"500ms\"\nescalation = \"command\"\n\
         escalation_command = [\"/bin/sh\", \"-c\", \"env > {}\"]\n",
        env_file.display()
    ));
    let login1 = rig.standin(&["--locker", "never"]);
    let eventd = rig.eventd(&[]);
    rig.pull();
    eventd.wait_lines("eventd.command.done", 1, REACTION);
    let env = std::fs::read_to_string(&env_file).unwrap();
    for expected in [
        "TESSERA_EVENT=escalate",
        "TESSERA_SESSION_ID=1",
        "TESSERA_USER=alice",
        "TESSERA_UID=20001",
        "TESSERA_READER=Virtual PCD 00 00",
        "TESSERA_TOKEN_LABEL=alice",
        "TESSERA_TOKEN_IDENTIFIED=true",
    ] {
        assert!(
            env.lines().any(|line| line == expected),
            "{expected} in:\n{env}"
        );
    }
    assert!(
        env.lines()
            .any(|line| line == format!("TESSERA_TOKEN_SERIAL={}", &GUID[16..])),
        "{env}"
    );
    assert!(
        !env.contains("DBUS_SYSTEM_BUS_ADDRESS"),
        "the environment is clean: {env}"
    );
    assert_eq!(login1.count("TerminateSession", "1"), 0);
}

#[test]
fn bindings_of_sessions_logind_does_not_know_are_dropped_at_start() {
    let rig = Rig::new("");
    rig.bind("9");
    let login1 = rig.standin(&[]);
    let mut eventd = rig.eventd(&[]);
    eventd.wait_lines("eventd.binding.forgotten", 1, REACTION);
    assert!(!rig.binding_exists("9"));
    assert!(rig.binding_exists("1"));
    assert!(login1.count("GetSession", "9") >= 1);
    still_works(&rig, &mut eventd, &login1);
}

/// Pull-and-insert rounds run under memcheck.
const MEMCHECK_ROUNDS: usize = 5;

/// eventd on the host under memcheck, with leak checking at exit, memcheck
/// options `extra` on top; memcheck errors make it exit with status 99.
fn eventd_under_memcheck(rig: &Rig, extra: &[&str]) -> HostEventd {
    let mut wrapper = vec![
        "valgrind",
        "--tool=memcheck",
        "--leak-check=full",
        "--show-leak-kinds=definite",
        "--errors-for-leak-kinds=definite",
        "--error-exitcode=99",
    ];
    wrapper.extend_from_slice(extra);
    HostEventd::start_under(
        &wrapper,
        &rig.rig.config_path(),
        &rig.rig.path().join("eventd.log"),
        &rig.env(),
        &[],
    )
}

#[test]
fn pulls_and_inserts_under_memcheck_touch_no_bad_memory_and_leak_nothing() {
    let rig = Rig::new("");
    let login1 = rig.standin(&[]);
    let report = rig.rig.path().join("valgrind-eventd.log");
    let log_file = format!("--log-file={}", report.display());
    let mut eventd = eventd_under_memcheck(&rig, &[&log_file]);
    // Everything runs some 20 times slower under valgrind.
    let slow = Duration::from_secs(60);
    assert!(
        rig.bus.wait_for_name(DBUS_NAME, slow),
        "eventd did not own its name:\n{}",
        eventd.log()
    );
    eventd.wait_lines("eventd.token.inserted", 1, slow);
    for round in 1..=MEMCHECK_ROUNDS {
        rig.pull();
        login1.wait_calls("LockSession", "1", round, slow);
        eventd.wait_lines("eventd.session.locked", round, slow);
        rig.insert();
        eventd.wait_lines("eventd.token.inserted", round + 1, slow);
    }
    assert!(eventd.running(), "eventd died:\n{}", eventd.log());
    let status = eventd.terminate();
    let report = std::fs::read_to_string(&report).unwrap_or_default();
    assert_eq!(status, Some(0), "memcheck's verdict:\n{report}");
    assert!(report.contains("ERROR SUMMARY: 0 errors"), "{report}");
    // The leak check ran at exit. (Blocks of threads still running then,
    // the detached PC/SC thread among them, show as "possibly lost".)
    assert!(report.contains("definitely lost: 0 bytes"), "{report}");
}

#[test]
fn identification_helpers_under_memcheck_touch_no_bad_memory_and_leak_nothing() {
    // Under valgrind OpenSC takes seconds to read the card.
    let rig = Rig::new("identify_timeout = \"2m\"\n");
    let login1 = rig.standin(&[]);
    let reports = rig.rig.path().join("memcheck");
    std::fs::create_dir_all(&reports).unwrap();
    let log_file = format!("--log-file={}/%p.log", reports.display());
    let mut eventd = eventd_under_memcheck(&rig, &["--trace-children=yes", &log_file]);
    let slow = Duration::from_secs(120);
    eventd.wait_lines("eventd.token.inserted", 1, slow);
    rig.pull();
    login1.wait_calls("LockSession", "1", 1, slow);
    rig.insert();
    eventd.wait_lines("eventd.token.inserted", 2, slow);
    assert!(eventd.running(), "eventd died:\n{}", eventd.log());
    // The helpers answered: the card was identified each time.
    let identified = eventd.lines("eventd.token.inserted");
    assert!(
        identified
            .iter()
            .all(|line| line.contains(&format!("serial={}", &GUID[16..]))),
        "{identified:?}"
    );
    assert_eq!(eventd.terminate(), Some(0));
    // eventd kills a helper once it has answered (its C_Finalize may hang),
    // so a helper's report often ends before memcheck's summary; memcheck
    // writes each error as it finds it, so a report with nothing after its
    // header saw none while the helper identified the card.
    let mut helpers = 0;
    for entry in std::fs::read_dir(&reports).unwrap() {
        let report = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        if !report.contains("--identify-module") {
            assert!(report.contains("ERROR SUMMARY: 0 errors"), "{report}");
            continue;
        }
        helpers += 1;
        let body: Vec<&str> = report
            .lines()
            .skip_while(|line| !line.contains("Parent PID:"))
            .skip(1)
            .filter(|line| {
                line.split_once("== ")
                    .is_some_and(|(_, text)| !text.trim().is_empty())
            })
            .collect();
        let clean = body.is_empty()
            || (report.contains("ERROR SUMMARY: 0 errors")
                && report.contains("definitely lost: 0 bytes"));
        assert!(clean, "{report}");
    }
    assert!(helpers >= 2, "{helpers} identification helpers traced");
}

/// `C_GetTokenInfo` blocks for ten minutes, as OpenSC does when it
/// deadlocks on its own card mutex.
const HANG: &str = "[[fault]]\nfunction = \"C_GetTokenInfo\"\naction = { sleep_ms = 600000 }\n";

#[test]
fn a_module_that_hangs_while_identifying_is_killed_and_the_daemon_goes_on() {
    let rig = Rig::with_fault_module("identify_timeout = \"1s\"\n");
    rig.write_plan(HANG);
    let login1 = rig.standin(&[]);
    let mut eventd = rig.start_eventd(&[]);
    let killed = eventd.wait_lines("eventd.pkcs11.timeout", 1, REACTION);
    assert!(killed[0].contains(&reader_name(0)), "{}", killed[0]);
    assert!(eventd.lines("eventd.token.inserted").is_empty());
    // Never identified: the pull acts on every session bound to the reader.
    rig.write_plan("");
    rig.pull();
    login1.wait_calls("LockSession", "1", 1, REACTION);
    // The module is healthy again: the next insertion is identified.
    rig.insert();
    let inserted = eventd.wait_lines("eventd.token.inserted", 1, REACTION);
    assert!(inserted[0].contains(&GUID[16..]), "{}", inserted[0]);
    rig.pull();
    login1.wait_calls("LockSession", "1", 2, REACTION);
    assert!(eventd.running(), "eventd died:\n{}", eventd.log());
}

#[test]
fn a_reinserted_card_is_identified_without_waiting_for_a_hung_identification() {
    let rig = Rig::with_fault_module("identify_timeout = \"300s\"\n");
    rig.write_plan(HANG);
    let login1 = rig.standin(&[]);
    let mut eventd = rig.start_eventd(&[]);
    let deadline = std::time::Instant::now() + REACTION;
    // Calls are logged when they return: the slot list precedes the hang.
    while rig.calls("C_GetSlotList") == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "no identification started:\n{}",
            eventd.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    rig.write_plan("");
    rig.pull();
    rig.insert();
    let inserted = eventd.wait_lines("eventd.token.inserted", 1, REACTION);
    assert!(inserted[0].contains(&GUID[16..]), "{}", inserted[0]);
    assert!(eventd.lines("eventd.pkcs11.timeout").is_empty());
    still_works(&rig, &mut eventd, &login1);
}
