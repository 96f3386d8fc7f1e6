//! tessera-eventd against real systemd-logind: systemd boots as PID 1 in a
//! private namespace (see `tessera_testrig::systemd`), users log in through
//! real libpam with pam_tessera and pam_systemd using virtual PIV cards
//! behind real pcscd and OpenSC, eventd runs as its hardened systemd unit,
//! and a locker in each session answers logind's Lock signal.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::time::{Duration, Instant};

use tessera_core::binding::{BoundToken, SessionBinding, BINDING_VERSION, SESSIONS_DIR};
use tessera_core::token::Pkcs11Module;
use tessera_testrig::bins::pam_module;
use tessera_testrig::eventd::{
    add_system_user, card_credentials, locked_hint, session_alive, EventdUnit, Locker, Session,
};
use tessera_testrig::login::{LoginRig, PIN};
use tessera_testrig::pcscd::{reader_name, Pcscd, OPENSC_PKCS11};
use tessera_testrig::systemd::in_namespace;
use tessera_testrig::vcard::{CardSpec, VirtualCard};

/// pcscd sees a pull within 400 ms; logind and the locker add milliseconds.
const REACTION: Duration = Duration::from_secs(5);

struct World {
    rig: LoginRig,
    cards: Vec<VirtualCard>,
    unit: EventdUnit,
    pcscd: Option<Pcscd>,
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
            let (key, cert) = card_credentials(&rig, user);
            CardSpec::new(index as u16)
                .slot("9a", key, cert)
                .pin(PIN)
                .start(&pcscd)
                .unwrap()
        })
        .collect();
    rig.add_env(pcscd.env());
    rig.use_pkcs11_module(OPENSC_PKCS11);
    rig.write_service(&format!(
        "auth required {module} config={config} log=stderr\n\
         account required pam_permit.so\n\
         session required pam_systemd.so class=user type=tty\n",
        module = pam_module().display(),
        config = rig.config_path().display(),
    ));
    std::env::set_var("OPENSC_CONF", pcscd.opensc_conf());
    let mut unit = EventdUnit::install(&pcscd, eventd);
    unit.start();
    World {
        rig,
        cards,
        unit,
        pcscd: Some(pcscd),
    }
}

impl World {
    fn pcscd(&self) -> &Pcscd {
        self.pcscd.as_ref().unwrap()
    }

    /// Logs `user` in and records the session binding for the card in
    /// reader `reader`, as pam_tessera's open_session does.
    fn login(&self, user: &str, reader: u16) -> Session {
        let session = Session::login(&self.rig, user);
        bind(&session, reader);
        session
    }

    fn pull(&self, reader: usize) {
        self.cards[reader].pull().unwrap();
        self.pcscd()
            .wait_card(reader as u16, false, REACTION)
            .unwrap();
    }

    fn insert(&self, reader: usize) {
        self.cards[reader].insert().unwrap();
        self.pcscd()
            .wait_card(reader as u16, true, REACTION)
            .unwrap();
    }
}

/// The identity OpenSC shows for the card in `reader`.
fn token_in(reader: u16) -> BoundToken {
    let name = reader_name(reader);
    let module = Pkcs11Module::load(Path::new(OPENSC_PKCS11)).unwrap();
    let token = module
        .tokens()
        .unwrap()
        .into_iter()
        .find(|token| token.slot_description == name)
        .unwrap_or_else(|| panic!("no token in {name}"));
    BoundToken::from(&token)
}

fn bind(session: &Session, reader: u16) {
    SessionBinding {
        version: BINDING_VERSION,
        session_id: session.id.clone(),
        uid: session.uid,
        user: session.user.clone(),
        service: "tessera-test".into(),
        tty: String::new(),
        pid: 1,
        created: 0,
        certificate_sha256: "00".repeat(32),
        token: token_in(reader),
    }
    .write(Path::new(SESSIONS_DIR))
    .unwrap();
}

fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within {timeout:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn pulling_a_card_locks_exactly_the_session_it_opened() {
    in_namespace("pulling_a_card_locks_exactly_the_session_it_opened", || {
        let world = world(&["alice", "bob"], "");
        let alice = world.login("alice", 0);
        let bob = world.login("bob", 1);
        let alice_locker = Locker::start(&alice, false);
        let bob_locker = Locker::start(&bob, false);
        world
            .unit
            .wait_records("eventd.token.inserted", 2, REACTION);

        // Bob pulls his card: only his session locks.
        world.pull(1);
        assert!(
            bob_locker.wait("lock", REACTION).is_some(),
            "{}",
            world.unit.log_text()
        );
        wait_until("bob's LockedHint", REACTION, || locked_hint(&bob.id));
        world
            .unit
            .wait_records("eventd.session.locked", 1, REACTION);
        assert!(!locked_hint(&alice.id));
        assert!(alice_locker
            .wait("lock", Duration::from_millis(500))
            .is_none());

        // Alice pulls hers: logind emits Lock for her session, once.
        world.pull(0);
        assert!(
            alice_locker.wait("lock", REACTION).is_some(),
            "{}",
            world.unit.log_text()
        );
        wait_until("alice's LockedHint", REACTION, || locked_hint(&alice.id));
        let locked = world
            .unit
            .wait_records("eventd.session.locked", 2, REACTION);
        let sessions: Vec<&str> = locked
            .iter()
            .map(|record| record["TESSERA_SESSION"].as_str().unwrap())
            .collect();
        assert_eq!(sessions, vec![bob.id.as_str(), alice.id.as_str()]);
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
