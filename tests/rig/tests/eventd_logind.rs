//! tessera-eventd against real systemd-logind: systemd boots as PID 1 in a
//! private namespace (see `tessera_testrig::systemd`), users log in through
//! real libpam with pam_tessera and pam_systemd using virtual PIV cards
//! behind real pcscd and OpenSC, eventd runs as its hardened systemd unit,
//! and a locker in each session answers logind's Lock signal.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use tessera_core::binding::SESSIONS_DIR;
use tessera_testrig::bins::{artefact, pam_module};
use tessera_testrig::eventd::{
    add_system_user, locked_hint, session_alive, write_config, EventdUnit, Locker, Session,
};
use tessera_testrig::login::{CardKey, LoginRig, PIN};
use tessera_testrig::pcscd::{Pcscd, OPENSC_PKCS11};
use tessera_testrig::run;
use tessera_testrig::systemd::in_namespace;
use tessera_testrig::vcard::{CardSpec, VirtualCard};

/// pcscd sees a pull within 400 ms; logind and the locker add milliseconds.
const REACTION: Duration = Duration::from_secs(5);

struct World {
    rig: LoginRig,
    cards: Vec<VirtualCard>,
    unit: EventdUnit,
    pcscd: Pcscd,
}

/// Users, one card each (user i in reader i), pcscd, and eventd started
/// with `eventd` as its `[eventd]` section.
fn world(users: &[&str], eventd: &str) -> World {
    let mut rig = LoginRig::new();
    for user in users {
        rig.add_user(user);
        add_system_user(&rig, user);
    }
    let readers: Vec<u16> = (0..users.len() as u16).collect();
    let pcscd = Pcscd::start_for_readers(&rig.path().join("pcscd"), &readers).unwrap();
    let cards = users
        .iter()
        .enumerate()
        .map(|(index, user)| {
            let (key, cert) = rig.card_credentials(user, CardKey::P256);
            CardSpec::new(index as u16)
                .slot("9a", key, cert)
                .pin(PIN)
                .start(&pcscd)
                .unwrap()
        })
        .collect();
    rig.add_env(pcscd.env());
    rig.use_pkcs11_module(OPENSC_PKCS11);
    // pam_systemd creates the logind session; pam_tessera's open_session
    // then binds it to the card that authenticated the user.
    rig.write_service(&format!(
        "auth required {module} config={config} log=stderr\n\
         account required pam_permit.so\n\
         session required pam_systemd.so class=user type=tty\n\
         session required {module} config={config} log=stderr\n",
        module = pam_module().display(),
        config = rig.config_path().display(),
    ));
    let mut unit = EventdUnit::install(&pcscd, eventd);
    unit.start();
    World {
        rig,
        cards,
        unit,
        pcscd,
    }
}

impl World {
    /// Logs `user` in with their card; the binding pam_tessera wrote is checked.
    fn login(&self, user: &str) -> Session {
        let session = Session::login(&self.rig, user);
        assert!(
            binding_path(&session.id).exists(),
            "pam_tessera did not bind session {}",
            session.id
        );
        session
    }

    /// Logs `user` in with a screen locker in the session (`ignore`: one
    /// that never answers Lock, like a text console), then waits until
    /// eventd has seen `tokens` tokens inserted in all.
    fn login_with_locker(&self, user: &str, ignore: bool, tokens: usize) -> (Session, Locker) {
        let session = self.login(user);
        let locker = Locker::start(&session, ignore);
        self.unit
            .wait_records("eventd.token.inserted", tokens, REACTION);
        (session, locker)
    }

    /// logind sent Lock to the session's locker within `within` and shows
    /// the session locked.
    fn assert_locks(&self, locker: &Locker, session: &Session, within: Duration) {
        assert!(
            locker.wait("lock", within).is_some(),
            "no Lock for session {}:\n{}",
            session.id,
            self.unit.log_text()
        );
        wait_until("LockedHint", REACTION, || locked_hint(&session.id));
    }

    /// pcscd dies, eventd notices, and pcscd comes back after a moment.
    fn restart_pcscd(&mut self, while_down: impl FnOnce(&Self)) {
        self.pcscd.kill();
        self.unit.wait_records("eventd.pcsc.lost", 1, REACTION);
        while_down(self);
        std::thread::sleep(Duration::from_millis(500));
        self.pcscd.restart().unwrap();
    }

    fn pull(&self, reader: usize) {
        self.cards[reader].pull().unwrap();
        self.pcscd
            .wait_card(reader as u16, false, REACTION)
            .unwrap();
    }

    fn insert(&self, reader: usize) {
        self.cards[reader].insert().unwrap();
        self.pcscd.wait_card(reader as u16, true, REACTION).unwrap();
    }
}

fn binding_path(session: &str) -> PathBuf {
    Path::new(SESSIONS_DIR).join(format!("{session}.toml"))
}

fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within {timeout:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// No Lock reaches `locker` for `quiet`.
fn assert_no_lock(locker: &Locker, quiet: Duration, unit: &EventdUnit) {
    assert!(
        locker.wait("lock", quiet).is_none(),
        "unexpected Lock:\n{}",
        unit.log_text()
    );
}

#[test]
fn pulling_a_card_locks_exactly_the_session_it_opened() {
    in_namespace(|| {
        let world = world(&["alice", "bob"], "");
        let alice = world.login("alice");
        let bob = world.login("bob");
        let alice_locker = Locker::start(&alice, false);
        let bob_locker = Locker::start(&bob, false);
        world
            .unit
            .wait_records("eventd.token.inserted", 2, REACTION);

        // Bob pulls his card: only his session locks.
        world.pull(1);
        world.assert_locks(&bob_locker, &bob, REACTION);
        world
            .unit
            .wait_records("eventd.session.locked", 1, REACTION);
        assert!(!locked_hint(&alice.id));
        assert!(alice_locker
            .wait("lock", Duration::from_millis(500))
            .is_none());

        // Alice pulls hers: logind emits Lock for her session, once.
        world.pull(0);
        world.assert_locks(&alice_locker, &alice, REACTION);
        let locked = world
            .unit
            .wait_records("eventd.session.locked", 2, REACTION);
        let sessions: Vec<&str> = locked
            .iter()
            .map(|record| record["TESSERA_SESSION"].as_str().unwrap())
            .collect();
        assert_eq!(sessions, vec![bob.id.as_str(), alice.id.as_str()]);
        // Each LockSession is recorded with eventd's share of the latency
        // and logind's answer time (the benchmark's split).
        let requests = world.unit.records("eventd.lock.requested");
        assert_eq!(requests.len(), 2, "{}", world.unit.log_text());
        for (record, session) in requests.iter().zip([&bob.id, &alice.id]) {
            assert_eq!(record["TESSERA_SESSION"], session.as_str());
            for field in ["TESSERA_SINCE_PULL_US", "TESSERA_ANSWER_US"] {
                let micros: u64 = record[field].as_str().unwrap().parse().unwrap();
                assert!(micros < REACTION.as_micros() as u64, "{record}");
            }
        }
        assert!(alice_locker
            .drain()
            .iter()
            .all(|event| event["event"] != "lock"));
        assert!(bob_locker
            .drain()
            .iter()
            .all(|event| event["event"] != "lock"));
        assert!(world.unit.stop(), "SIGTERM stops the daemon cleanly");
    });
}

#[test]
fn reinserting_the_card_within_the_grace_delay_does_nothing() {
    in_namespace(|| {
        let world = world(&["alice"], "grace = \"3s\"\n");
        let (alice, locker) = world.login_with_locker("alice", false, 1);

        world.pull(0);
        world.insert(0);
        world
            .unit
            .wait_records("eventd.grace.cancelled", 1, REACTION);
        assert_no_lock(&locker, Duration::from_secs(4), &world.unit);
        assert!(!locked_hint(&alice.id));

        // Left out, the card's session locks once the delay is over.
        let pulled = Instant::now();
        world.pull(0);
        world.assert_locks(&locker, &alice, REACTION + Duration::from_secs(3));
        assert!(pulled.elapsed() >= Duration::from_secs(3));
    });
}

#[test]
fn a_session_nothing_locks_is_escalated_to_terminate() {
    in_namespace(|| {
        let world = world(
            &["alice"],
            "lock_timeout = \"1s\"\nescalation = \"terminate\"\n",
        );
        let alice = world.login("alice");
        // A text console: logind emits Lock, nothing answers.
        let locker = Locker::start(&alice, true);
        world
            .unit
            .wait_records("eventd.token.inserted", 1, REACTION);

        world.pull(0);
        assert!(locker.wait("lock", REACTION).is_some());
        world
            .unit
            .wait_records("eventd.lock.unconfirmed", 1, REACTION);
        let escalated = world
            .unit
            .wait_records("eventd.session.escalated", 1, REACTION);
        assert_eq!(escalated[0]["TESSERA_ACTION"], "terminate");
        wait_until("the session is gone", REACTION, || {
            !session_alive(&alice.id)
        });
        // logind's SessionRemoved makes eventd drop the binding.
        wait_until("the binding is removed", REACTION, || {
            !binding_path(&alice.id).exists()
        });
    });
}

#[test]
fn after_pcscd_restarts_with_the_card_in_a_pull_still_locks() {
    in_namespace(|| {
        let mut world = world(&["alice"], "");
        let (alice, locker) = world.login_with_locker("alice", false, 1);

        world.restart_pcscd(|_| {});
        world.pcscd.wait_card(0, true, REACTION).unwrap();
        world.unit.wait_records("eventd.pcsc.restored", 1, REACTION);
        // The card never left: no lock from the restart itself.
        assert_no_lock(&locker, Duration::from_secs(4), &world.unit);
        assert!(world.unit.records("eventd.token.removed").is_empty());

        world.pull(0);
        world.assert_locks(&locker, &alice, REACTION);
    });
}

#[test]
fn a_pull_while_pcscd_is_down_is_acted_on_once_it_is_back() {
    in_namespace(|| {
        let mut world = world(&["alice"], "");
        let (alice, locker) = world.login_with_locker("alice", false, 1);

        world.restart_pcscd(|world| world.cards[0].pull().unwrap());
        // Judged pulled at the end of eventd's resync window (3 s).
        world.assert_locks(&locker, &alice, REACTION + Duration::from_secs(3));
        assert_eq!(world.unit.records("eventd.session.act").len(), 1);
    });
}

#[test]
fn malformed_and_foreign_owned_bindings_are_ignored_with_a_log_line() {
    in_namespace(|| {
        let world = world(&["alice"], "");
        let (alice, locker) = world.login_with_locker("alice", false, 1);
        let path = binding_path(&alice.id);

        // The user's own copy of the record is not trusted.
        std::os::unix::fs::chown(&path, Some(alice.uid), None).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::fs::write(
            Path::new(SESSIONS_DIR).join("c99.toml"),
            "version = \"x\"\n[",
        )
        .unwrap();
        let writable = Path::new(SESSIONS_DIR).join("c98.toml");
        std::fs::copy(&path, &writable).unwrap();
        std::os::unix::fs::chown(&writable, Some(0), None).unwrap();
        std::fs::set_permissions(&writable, std::fs::Permissions::from_mode(0o666)).unwrap();
        let refused = world
            .unit
            .wait_records("eventd.binding.refused", 3, REACTION);
        let text: Vec<String> = refused
            .iter()
            .map(|r| {
                r["MESSAGE"].as_str().unwrap_or_default().to_owned()
                    + r["TESSERA_ERROR"].as_str().unwrap_or_default()
            })
            .collect();
        assert!(
            text.iter()
                .any(|t| t.contains(&format!("owned by uid {}", alice.uid))),
            "{text:?}"
        );
        assert!(text.iter().any(|t| t.contains("malformed")), "{text:?}");
        assert!(
            text.iter()
                .any(|t| t.contains("lets group or others write it")),
            "{text:?}"
        );

        world.pull(0);
        world.unit.wait_records("eventd.token.removed", 1, REACTION);
        assert_no_lock(&locker, Duration::from_secs(2), &world.unit);
        assert!(world.unit.records("eventd.session.act").is_empty());

        // Root-owned again: bound again.
        std::os::unix::fs::chown(&path, Some(0), None).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        world.insert(0);
        world
            .unit
            .wait_records("eventd.token.inserted", 2, REACTION);
        world.pull(0);
        assert!(
            locker.wait("lock", REACTION).is_some(),
            "{}",
            world.unit.log_text()
        );
    });
}

#[test]
fn bindings_of_sessions_logind_no_longer_knows_are_dropped() {
    in_namespace(|| {
        let mut world = world(&["alice"], "");
        let alice = world.login("alice");
        // A leftover from before: logind never heard of session c77.
        assert!(world.unit.stop());
        let stale = binding_path("c77");
        let record = std::fs::read_to_string(binding_path(&alice.id))
            .unwrap()
            .replace(
                &format!("session_id = \"{}\"", alice.id),
                "session_id = \"c77\"",
            );
        std::fs::write(&stale, record).unwrap();
        std::fs::set_permissions(&stale, std::fs::Permissions::from_mode(0o600)).unwrap();
        world.unit.start();
        wait_until("the stale binding is removed", REACTION, || !stale.exists());

        // A session that ends (here killed, so close_session never runs).
        run(Command::new("loginctl").args(["terminate-session", &alice.id]));
        wait_until("the binding is removed", REACTION, || {
            !binding_path(&alice.id).exists()
        });
        assert_eq!(world.unit.records("eventd.binding.forgotten").len(), 2);
        drop(alice);
    });
}

#[test]
fn sighup_reloads_the_config_and_a_bad_one_is_refused() {
    in_namespace(|| {
        let world = world(&["alice"], "");
        let (_alice, locker) = world.login_with_locker("alice", false, 1);

        write_config("on_remove = \"sleep\"\n");
        world.unit.reload();
        let refused = world
            .unit
            .wait_records("eventd.config.invalid", 1, REACTION);
        let error = refused[0]["TESSERA_ERROR"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert!(
            error.contains("tessera.toml:9:"),
            "names file and line: {error}"
        );

        write_config("on_remove = \"none\"\n");
        world.unit.reload();
        world
            .unit
            .wait_records("eventd.config.reloaded", 1, REACTION);
        world.pull(0);
        world
            .unit
            .wait_records("eventd.session.no-action", 1, REACTION);
        assert_no_lock(&locker, Duration::from_secs(1), &world.unit);

        write_config("");
        world.unit.reload();
        world
            .unit
            .wait_records("eventd.config.reloaded", 2, REACTION);
        world.insert(0);
        world
            .unit
            .wait_records("eventd.token.inserted", 2, REACTION);
        world.pull(0);
        assert!(locker.wait("lock", REACTION).is_some());
        assert!(world.unit.stop(), "SIGTERM stops the daemon cleanly");
    });
}

#[test]
fn tessera_status_shows_readers_tokens_and_sessions_to_any_user() {
    in_namespace(|| {
        let world = world(&["alice"], "");
        let alice = world.login("alice");
        world
            .unit
            .wait_records("eventd.token.inserted", 1, REACTION);
        // As alice, not root: the bus policy lets anyone read.
        let output = run(Command::new("setpriv")
            .arg(format!("--reuid={}", alice.uid))
            .arg(format!("--regid={}", alice.uid))
            .arg("--clear-groups")
            .arg(artefact("tessera"))
            .args(["status", "--json"]));
        let status: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        assert_eq!(status["pcsc_available"], true, "{status}");
        assert_eq!(
            status["readers"][0]["name"], "Virtual PCD 00 00",
            "{status}"
        );
        assert_eq!(status["readers"][0]["card_present"], true, "{status}");
        assert_eq!(status["tokens"][0]["state"], "identified", "{status}");
        assert_eq!(status["tokens"][0]["label"], "alice", "{status}");
        assert_eq!(status["sessions"][0]["id"], alice.id.as_str(), "{status}");
        assert_eq!(status["sessions"][0]["user"], "alice", "{status}");
        assert_eq!(status["sessions"][0]["token_present"], true, "{status}");

        let text = run(Command::new(artefact("tessera")).arg("status"));
        let text = String::from_utf8_lossy(&text.stdout);
        assert!(text.contains("Virtual PCD 00 00"), "{text}");
        assert!(text.contains(&format!("session {}", alice.id)), "{text}");
    });
}

/// Resident memory of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// Open descriptors of a process.
fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

/// `cycles` pulls and re-inserts of alice's card with `restarts` pcscd
/// kills spread over them: every pull must produce exactly one Lock and one
/// confirmed lock, and the daemon's memory must stay flat (within
/// `rss_slack_kib` of its size after a warm-up), its descriptors too.
fn soak(cycles: usize, restarts: usize, rss_slack_kib: u64) {
    let mut world = world(&["alice"], "");
    let alice = world.login("alice");
    let mut locker = Locker::start(&alice, false);
    world
        .unit
        .wait_records("eventd.token.inserted", 1, REACTION);
    let pid = world.unit.main_pid();
    let restart_every = cycles / (restarts + 1);
    let started = Instant::now();
    let mut restarted = 0;
    let mut warm_rss = 0;
    let start_fds = open_fds(pid);
    let mut warm_fds = 0;
    for cycle in 1..=cycles {
        world.pull(0);
        assert!(
            locker.wait("lock", REACTION).is_some(),
            "cycle {cycle}: no Lock\n{}",
            world.unit.log_text()
        );
        wait_until("LockedHint", REACTION, || locked_hint(&alice.id));
        // A person unlocks seconds later, after eventd saw the lock; a
        // locker that unlocks before eventd looks is escalated.
        world
            .unit
            .wait_records("eventd.session.locked", cycle, REACTION);
        locker.unlock();
        world.insert(0);
        world
            .unit
            .wait_records("eventd.token.inserted", cycle + 1, REACTION);
        if restarted < restarts && cycle % restart_every == 0 {
            world.pcscd.kill();
            std::thread::sleep(Duration::from_millis(300));
            world.pcscd.restart().unwrap();
            restarted += 1;
            world
                .unit
                .wait_records("eventd.pcsc.restored", restarted, REACTION);
            world.pcscd.wait_card(0, true, REACTION).unwrap();
        }
        if cycle == 5.min(cycles) {
            warm_rss = rss_kib(pid);
            warm_fds = open_fds(pid);
        }
    }
    assert_no_lock(&locker, Duration::from_secs(1), &world.unit);
    assert_eq!(restarted, restarts);
    assert_eq!(world.unit.records("eventd.session.act").len(), cycles);
    assert_eq!(world.unit.records("eventd.session.locked").len(), cycles);
    assert_eq!(world.unit.main_pid(), pid, "the daemon never restarted");
    let end_rss = rss_kib(pid);
    let end_fds = open_fds(pid);
    let missed = cycles - world.unit.records("eventd.session.locked").len();
    eprintln!(
        "soak: {cycles} pulls, {restarts} pcscd restarts in {:?}; {missed} pulls missed; eventd RSS {warm_rss} KiB after warm-up, {end_rss} KiB at the end; open descriptors {start_fds} at the start, {warm_fds} after warm-up, {end_fds} at the end",
        started.elapsed()
    );
    assert!(
        end_rss <= warm_rss + rss_slack_kib,
        "memory grew from {warm_rss} to {end_rss} KiB"
    );
    // A leak grows with the pulls; a few descriptors of an identification
    // helper that happens to run are not one.
    assert!(
        end_fds <= warm_fds + 4,
        "descriptors grew from {warm_fds} to {end_fds}"
    );
}

#[test]
fn soak_smoke_50_pulls_and_2_pcscd_restarts_each_pull_locks_exactly_once() {
    in_namespace(|| soak(50, 2, 2048));
}

/// The full soak, run by hand (about 15 minutes):
/// `cargo test -p tessera-testrig --test eventd_logind -- --ignored --nocapture soak_full`
#[test]
#[ignore = "15 minutes; run by hand"]
fn soak_full_1000_pulls_and_20_pcscd_restarts_each_pull_locks_exactly_once() {
    in_namespace(|| soak(1000, 20, 1024));
}

/// Microseconds since the epoch, to compare with the locker's timestamps.
#[allow(clippy::disallowed_methods)]
fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

fn summary(name: &str, mut micros: Vec<u64>) -> String {
    micros.sort_unstable();
    let at = |fraction: f64| {
        micros[((micros.len() - 1) as f64 * fraction).round() as usize] as f64 / 1000.0
    };
    format!(
        "{name:<44} min {:>7.1} ms  median {:>7.1} ms  p99 {:>7.1} ms  max {:>7.1} ms",
        at(0.0),
        at(0.5),
        at(0.99),
        at(1.0)
    )
}

/// Benchmark, run by hand (about 4 minutes):
/// `cargo test -p tessera-testrig --release --test eventd_logind -- --ignored --nocapture bench_pull`
/// Each pull closes the card's vpcd connection after a random 0-499 ms
/// pause; the run records when pcscd reported the reader empty (a PC/SC
/// client of the test) and when logind's Lock signal reached the session's
/// locker.
#[test]
#[ignore = "benchmark; run by hand"]
fn bench_pull_to_logind_lock_latency() {
    in_namespace(|| {
        const PULLS: usize = 200;
        let world = world(&["alice"], "");
        let alice = world.login("alice");
        let mut locker = Locker::start(&alice, false);
        world
            .unit
            .wait_records("eventd.token.inserted", 1, REACTION);
        let (mut pcscd_us, mut lock_us, mut after_pcscd_us) = (Vec::new(), Vec::new(), Vec::new());
        for cycle in 1..=PULLS {
            std::thread::sleep(Duration::from_millis(u64::from(now_us() as u32 % 500)));
            let pulled = now_us();
            world.pull(0);
            let seen = now_us();
            let lock = locker.wait("lock", REACTION).expect("Lock");
            let locked = lock["t_us"].as_u64().unwrap();
            pcscd_us.push(seen - pulled);
            lock_us.push(locked - pulled);
            after_pcscd_us.push(locked.saturating_sub(seen));
            wait_until("LockedHint", REACTION, || locked_hint(&alice.id));
            world
                .unit
                .wait_records("eventd.session.locked", cycle, REACTION);
            locker.unlock();
            world.insert(0);
            world
                .unit
                .wait_records("eventd.token.inserted", cycle + 1, REACTION);
        }
        eprintln!("pull -> ... over {PULLS} pulls (vpcd connection closed at t=0):");
        eprintln!("{}", summary("pcscd reports the reader empty", pcscd_us));
        eprintln!("{}", summary("logind's Lock reaches the session", lock_us));
        eprintln!(
            "{}",
            summary("  of which after pcscd reported it", after_pcscd_us)
        );
        let requests = world.unit.records("eventd.lock.requested");
        assert_eq!(requests.len(), PULLS, "{}", world.unit.log_text());
        let field = |name: &str| -> Vec<u64> {
            requests
                .iter()
                .map(|record| record[name].as_str().unwrap().parse().unwrap())
                .collect()
        };
        eprintln!(
            "{}",
            summary(
                "    eventd: its wake-up to LockSession sent",
                field("TESSERA_SINCE_PULL_US")
            )
        );
        eprintln!(
            "{}",
            summary(
                "    logind: LockSession to its answer",
                field("TESSERA_ANSWER_US")
            )
        );
    });
}

/// CPU time (ns, all threads), context switches (all threads) and RSS (KiB) of a process.
fn cost(pid: u32) -> (u64, u64, u64) {
    let mut cpu = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
    {
        cpu += std::fs::read_to_string(task.path().join("schedstat"))
            .unwrap_or_default()
            .split_whitespace()
            .next()
            .and_then(|ns| ns.parse::<u64>().ok())
            .unwrap_or(0);
    }
    let switches = thread_switches(pid).values().sum();
    (cpu, switches, rss_kib(pid))
}

/// Benchmark, run by hand after `apt-get install libpam-pkcs11` (as
/// `scripts/bench eventd` does): the idle cost of tessera-eventd next to
/// pkcs11_eventmgr and card_eventmgr, all watching the same pcscd and card.
/// `TESSERA_IDLE_SECS` sets the window (default 60; 600 for the documented run).
#[test]
#[ignore = "benchmark; run by hand"]
fn bench_idle_cost_next_to_pam_pkcs11_event_managers() {
    in_namespace(|| {
        let window = Duration::from_secs(
            std::env::var("TESSERA_IDLE_SECS")
                .ok()
                .and_then(|secs| secs.parse().ok())
                .unwrap_or(60),
        );
        let world = world(&["alice"], "");
        world
            .unit
            .wait_records("eventd.token.inserted", 1, REACTION);
        let dir = world.rig.path().join("pam_pkcs11");
        std::fs::create_dir_all(&dir).unwrap();
        let actions = "event card_insert { on_error = ignore; action = \"/bin/true\"; }\n\
                       event card_remove { on_error = ignore; action = \"/bin/true\"; }\n";
        std::fs::write(
            dir.join("pkcs11_eventmgr.conf"),
            format!("pkcs11_eventmgr {{\n daemon = false;\n debug = false;\n polling_time = 1;\n expire_time = 0;\n pkcs11_module = {OPENSC_PKCS11};\n{actions}}}\n"),
        )
        .unwrap();
        std::fs::write(
            dir.join("card_eventmgr.conf"),
            format!("card_eventmgr {{\n daemon = false;\n debug = false;\n timeout = 1000;\n{actions}}}\n"),
        )
        .unwrap();
        let spawn = |program: &str, config: &str| {
            Command::new(program)
                .args(["nodaemon", "nodebug"])
                .arg(format!("config_file={}", dir.join(config).display()))
                .envs(world.pcscd.env())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap_or_else(|error| panic!("{program}: {error} (install libpam-pkcs11)"))
        };
        let mut others = [
            (
                "pkcs11_eventmgr",
                spawn("pkcs11_eventmgr", "pkcs11_eventmgr.conf"),
            ),
            (
                "card_eventmgr",
                spawn("card_eventmgr", "card_eventmgr.conf"),
            ),
        ];
        // Let every watcher settle (eventd's PKCS#11 worker exits when idle).
        std::thread::sleep(Duration::from_secs(15));
        let mut measured: Vec<(String, u32)> =
            vec![("tessera-eventd".to_owned(), world.unit.main_pid())];
        measured.extend(
            others
                .iter()
                .map(|(name, child)| (name.to_string(), child.id())),
        );
        let before: Vec<_> = measured.iter().map(|(_, pid)| cost(*pid)).collect();
        let eventd_threads = thread_switches(world.unit.main_pid());
        let records_before = world.unit.journal().len();
        std::thread::sleep(window);
        // Every return from SCardGetStatusChange logs the reader states
        // (debug), so wake-ups that leave no record stayed inside libpcsclite.
        let records: Vec<String> = world
            .unit
            .journal()
            .iter()
            .skip(records_before)
            .map(|record| record["MESSAGE"].as_str().unwrap_or_default().to_owned())
            .collect();
        let woken: Vec<String> = thread_switches(world.unit.main_pid())
            .into_iter()
            .filter_map(|(thread, end)| {
                let start = eventd_threads.get(&thread).copied().unwrap_or(0);
                (end > start).then(|| format!("{} ({}): {}", thread.1, thread.0, end - start))
            })
            .collect();
        eprintln!("idle, one card in the reader, over {window:?}:");
        for ((name, pid), start) in measured.iter().zip(before) {
            let end = cost(*pid);
            eprintln!(
                "{name:<16} wake-ups {:>6} ({:>6.2}/s)  CPU {:>8.1} ms  RSS {:>6} KiB",
                end.1 - start.1,
                (end.1 - start.1) as f64 / window.as_secs_f64(),
                (end.0 - start.0) as f64 / 1e6,
                end.2
            );
        }
        eprintln!(
            "tessera-eventd's log records during the window: {} {records:?}",
            records.len()
        );
        eprintln!(
            "tessera-eventd's wake-ups by thread (name, tid): {}",
            if woken.is_empty() {
                "none".to_owned()
            } else {
                woken.join(", ")
            }
        );
        for (_, child) in &mut others {
            let _ = child.kill();
            let _ = child.wait();
        }
    });
}

/// Context switches of each thread of a process, by (thread id, name).
fn thread_switches(pid: u32) -> std::collections::BTreeMap<(String, String), u64> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
        .map(|task| {
            let path = task.path();
            let name = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
            let switches = std::fs::read_to_string(path.join("status"))
                .unwrap_or_default()
                .lines()
                .filter(|line| line.contains("ctxt_switches"))
                .filter_map(|line| line.split_whitespace().nth(1)?.parse::<u64>().ok())
                .sum::<u64>();
            (
                (
                    task.file_name().to_string_lossy().into_owned(),
                    name.trim().to_owned(),
                ),
                switches,
            )
        })
        .collect()
}

/// JSON lines a harness prints, read on a thread.
fn follow(stdout: std::process::ChildStdout) -> std::sync::mpsc::Receiver<serde_json::Value> {
    use std::io::BufRead;
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Ok(value) = serde_json::from_str(&line) {
                if sender.send(value).is_err() {
                    break;
                }
            }
        }
    });
    receiver
}

/// Every event up to and including the first named `event`.
fn events_until(
    lines: &std::sync::mpsc::Receiver<serde_json::Value>,
    event: &str,
) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let value = lines
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("no {event:?} event; got {seen:?}"));
        let done = value["event"] == event;
        seen.push(value);
        if done {
            return seen;
        }
    }
}

/// Security review: `su` inside a card session (a PAM transaction that
/// creates no logind session of its own, so pam_systemd sets no
/// XDG_SESSION_ID) must neither rebind the caller's session to the card it
/// authenticated nor remove the caller's binding when it closes.
#[test]
fn su_with_another_card_inside_a_card_session_keeps_that_sessions_lock() {
    in_namespace(|| {
        let mut world = world(&["alice", "bob"], "");
        let (alice, locker) = world.login_with_locker("alice", false, 2);
        let before = std::fs::read_to_string(binding_path(&alice.id)).unwrap();

        // "su bob" from a shell of alice's session: the PAM application
        // runs in her session's scope, with the same stack.
        world.rig.run_under([
            "sh".to_owned(),
            "-c".to_owned(),
            r#"echo $$ > "$0/cgroup.procs" && exec "$@""#.to_owned(),
            alice.scope().display().to_string(),
        ]);
        let su = world
            .rig
            .harness_command(
                Some("bob"),
                &[PIN],
                &[
                    "authenticate",
                    "acct_mgmt",
                    "open_session",
                    "env=XDG_SESSION_ID",
                    "close_session",
                ],
                &["--stop-on-failure"],
            )
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&su.stdout);
        let results: Vec<serde_json::Value> = stdout
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .filter(|value: &serde_json::Value| value["event"] == "result")
            .collect();
        assert_eq!(results.len(), 4, "{stdout}");
        assert!(
            results.iter().all(|result| result["name"] == "PAM_SUCCESS"),
            "{stdout}"
        );
        assert!(
            !stdout.contains(&format!("\"value\":\"{}\"", alice.id)),
            "pam_systemd created no session for su: {stdout}"
        );
        assert_eq!(
            std::fs::read_to_string(binding_path(&alice.id)).ok(),
            Some(before),
            "su must leave alice's binding as it was"
        );

        // Alice pulls her card: her session locks.
        world.pull(0);
        world.assert_locks(&locker, &alice, REACTION);
    });
}

/// Security review: a card pulled between pam_sm_authenticate and
/// pam_sm_open_session; the binding then names a card that is gone, and
/// eventd must lock the session as soon as it sees the binding.
#[test]
fn a_card_pulled_before_open_session_locks_the_new_session_at_once() {
    in_namespace(|| {
        let world = world(&["alice"], "");
        world
            .unit
            .wait_records("eventd.token.inserted", 1, REACTION);
        let mut child = world
            .rig
            .harness_command(
                Some("alice"),
                &[PIN],
                &[
                    "authenticate",
                    "acct_mgmt",
                    "pause",
                    "open_session",
                    "env=XDG_SESSION_ID",
                    "wait",
                ],
                &["--stop-on-failure"],
            )
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let lines = follow(child.stdout.take().unwrap());
        let authenticated = events_until(&lines, "paused");
        assert!(
            authenticated
                .iter()
                .filter(|value| value["event"] == "result")
                .all(|value| value["name"] == "PAM_SUCCESS"),
            "{authenticated:?}"
        );

        world.pull(0);
        world.unit.wait_records("eventd.token.removed", 1, REACTION);
        std::io::Write::write_all(&mut stdin, b"\n").unwrap();
        let opened = events_until(&lines, "waiting");
        let id = opened
            .iter()
            .find(|value| value["event"] == "env")
            .and_then(|value| value["value"].as_str())
            .unwrap_or_else(|| panic!("no XDG_SESSION_ID: {opened:?}"))
            .to_owned();
        assert!(binding_path(&id).exists(), "{opened:?}");

        let requests = world
            .unit
            .wait_records("eventd.lock.requested", 1, REACTION);
        assert_eq!(
            requests[0]["TESSERA_SESSION"],
            id.as_str(),
            "{}",
            world.unit.log_text()
        );
        drop(stdin);
        let _ = child.kill();
        let _ = child.wait();
    });
}
