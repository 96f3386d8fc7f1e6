//! The daemon's decisions, with no I/O: which card is in which reader,
//! which sessions it opened, and what a pull or an insert must cause.
//!
//! [`Engine::handle`] takes one [`Input`] and returns the [`Effect`]s the
//! main loop then carries out, so the whole policy is tested with scripted
//! inputs.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use tessera_core::binding::{BoundToken, SessionBinding};
use tessera_core::config::eventd::EventdConfig;

use crate::model::{Identity, Input, ReaderEvent};

/// Most session bindings kept; the PAM module writes one per session.
pub const MAX_SESSIONS: usize = 4096;

/// A card in a reader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Card {
    /// Its ATR.
    pub atr: Vec<u8>,
    /// Its token identity.
    pub identity: Identity,
    /// Numbers identification requests, so a late answer about a card
    /// that has since left is ignored.
    pub insertion: u64,
    /// Identity before a re-check after pcscd came back.
    previous: Option<Identity>,
}

/// A card that left a reader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pull {
    /// The reader it left.
    pub reader: String,
    /// Its ATR.
    pub atr: Vec<u8>,
    /// What it was.
    pub identity: Identity,
    /// When eventd learnt that it left (from PC/SC, or from an
    /// identification that found another card in its place).
    pub seen: Instant,
}

/// One session to act on because of a pull.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActionRequest {
    /// The session's binding.
    pub binding: SessionBinding,
    /// The pull that caused it.
    pub pull: Pull,
}

/// What the main loop must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Ask PKCS#11 which token is in `reader`.
    Identify {
        /// Reader name.
        reader: String,
        /// Echoed back in [`Input::Identified`].
        insertion: u64,
    },
    /// Send [`Input::GraceExpired`] after `delay`.
    StartGrace {
        /// Echoed back.
        id: u64,
        /// How long.
        delay: Duration,
    },
    /// Run the configured action on one session.
    Act(Box<ActionRequest>),
    /// A token was inserted and identified.
    Inserted {
        /// Reader name.
        reader: String,
        /// The card's ATR.
        atr: Vec<u8>,
        /// The token.
        token: BoundToken,
        /// Sessions bound to it.
        sessions: Vec<String>,
    },
    /// A card left its reader (announced before any action).
    Removed(Pull),
    /// Ask logind whether the session still exists.
    CheckSession(String),
    /// Delete the binding file of a session logind no longer knows.
    ForgetBinding(String),
}

#[derive(Debug)]
struct InFlight {
    /// A pull that came while the action ran: acted on once it is done.
    queued: Option<Pull>,
}

/// The daemon's state.
#[derive(Debug)]
pub struct Engine {
    config: EventdConfig,
    readers: BTreeMap<String, Option<Card>>,
    pcsc_available: bool,
    sessions: BTreeMap<String, SessionBinding>,
    grace: BTreeMap<u64, Pull>,
    in_flight: BTreeMap<String, InFlight>,
    next_id: u64,
}

/// Whether a slot description names `reader`. PKCS#11 pads slot
/// descriptions to 64 characters and cuts longer reader names there.
pub fn same_reader(slot_description: &str, reader: &str) -> bool {
    let slot = slot_description.trim_end();
    slot == reader || (reader.len() > 64 && reader.get(..64).map(str::trim_end) == Some(slot))
}

/// The same token: every identity field, never the label alone.
pub fn same_token(a: &BoundToken, b: &BoundToken) -> bool {
    a.label == b.label
        && a.manufacturer == b.manufacturer
        && a.model == b.model
        && a.serial == b.serial
}

/// Whether pulling a card with `identity` from `reader` concerns a session
/// bound to `bound`.
pub fn pull_concerns(bound: &BoundToken, reader: &str, identity: &Identity) -> bool {
    match identity {
        // A serial number pins the card wherever it sits; without one, the
        // reader must match as well.
        Identity::Token(token) => {
            same_token(bound, token)
                && (!token.serial.is_empty() || same_reader(&bound.slot_description, reader))
        }
        Identity::NotAToken => false,
        // Fail closed: a card we could not identify may have been the one.
        Identity::Pending | Identity::Unreadable => same_reader(&bound.slot_description, reader),
    }
}

impl Engine {
    /// An engine with no readers and no sessions.
    pub fn new(config: EventdConfig) -> Self {
        Self {
            config,
            readers: BTreeMap::new(),
            pcsc_available: false,
            sessions: BTreeMap::new(),
            grace: BTreeMap::new(),
            in_flight: BTreeMap::new(),
            next_id: 1,
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> &EventdConfig {
        &self.config
    }

    /// Replaces the configuration (SIGHUP); running delays keep theirs.
    pub fn set_config(&mut self, config: EventdConfig) {
        self.config = config;
    }

    /// Readers and their cards.
    pub fn readers(&self) -> &BTreeMap<String, Option<Card>> {
        &self.readers
    }

    /// Whether pcscd is reachable.
    pub fn pcsc_available(&self) -> bool {
        self.pcsc_available
    }

    /// Known session bindings.
    pub fn sessions(&self) -> &BTreeMap<String, SessionBinding> {
        &self.sessions
    }

    /// Whether an action is still running.
    pub fn busy(&self) -> bool {
        !self.in_flight.is_empty()
    }

    /// Whether the token a session is bound to is in a reader now.
    pub fn token_present(&self, bound: &BoundToken) -> bool {
        self.readers
            .values()
            .flatten()
            .any(|card| match &card.identity {
                Identity::Token(token) => same_token(bound, token),
                _ => false,
            })
    }

    fn next(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// Reacts to one input.
    pub fn handle(&mut self, input: Input) -> Vec<Effect> {
        let mut effects = Vec::new();
        match input {
            Input::Reader { event, seen } => self.reader_event(event, seen, &mut effects),
            Input::PcscAvailable(available) => self.pcsc_available = available,
            Input::Identified {
                reader,
                insertion,
                identity,
            } => self.identified(&reader, insertion, identity, &mut effects),
            Input::BindingsRescanned(bindings) => {
                let previous = std::mem::take(&mut self.sessions);
                for binding in bindings.into_iter().take(MAX_SESSIONS) {
                    if !previous.contains_key(&binding.session_id) {
                        effects.push(Effect::CheckSession(binding.session_id.clone()));
                    }
                    self.sessions.insert(binding.session_id.clone(), binding);
                }
            }
            Input::Binding {
                session_id,
                binding: Some(binding),
            } => {
                if !self.sessions.contains_key(&session_id) {
                    if self.sessions.len() >= MAX_SESSIONS {
                        tracing::error!(
                            session = %session_id,
                            "more than {MAX_SESSIONS} session bindings; ignoring this one"
                        );
                        return effects;
                    }
                    effects.push(Effect::CheckSession(session_id.clone()));
                    self.act_if_card_absent(&binding, &mut effects);
                }
                self.sessions.insert(session_id, *binding);
            }
            Input::Binding {
                session_id,
                binding: None,
            } => {
                self.sessions.remove(&session_id);
            }
            Input::SessionGone(session_id) => {
                if self.sessions.remove(&session_id).is_some() {
                    effects.push(Effect::ForgetBinding(session_id));
                }
            }
            Input::BusConnected => {
                effects.extend(self.sessions.keys().cloned().map(Effect::CheckSession));
            }
            Input::GraceExpired(id) => {
                if let Some(pull) = self.grace.remove(&id) {
                    self.act_on_pull(&pull, &mut effects);
                }
            }
            Input::ActionDone { session_id, .. } => {
                let queued = self
                    .in_flight
                    .remove(&session_id)
                    .and_then(|in_flight| in_flight.queued);
                if let (Some(pull), Some(binding)) = (queued, self.sessions.get(&session_id)) {
                    let request = ActionRequest {
                        binding: binding.clone(),
                        pull,
                    };
                    self.in_flight.insert(session_id, InFlight { queued: None });
                    effects.push(Effect::Act(Box::new(request)));
                }
            }
            // Handled by the main loop itself.
            Input::Reload | Input::Stop => {}
        }
        effects
    }

    fn reader_event(&mut self, event: ReaderEvent, seen: Instant, effects: &mut Vec<Effect>) {
        match event {
            ReaderEvent::ReaderAdded(reader) => {
                self.readers.entry(reader).or_insert(None);
            }
            ReaderEvent::ReaderRemoved(reader) => {
                // The tracker reports the card's removal first.
                self.readers.remove(&reader);
            }
            ReaderEvent::CardInserted { reader, atr } => {
                let insertion = self.next();
                self.readers.insert(
                    reader.clone(),
                    Some(Card {
                        atr,
                        identity: Identity::Pending,
                        insertion,
                        previous: None,
                    }),
                );
                effects.push(Effect::Identify { reader, insertion });
            }
            ReaderEvent::CardReverify { reader, atr } => {
                let insertion = self.next();
                let previous = match self.readers.get(&reader) {
                    Some(Some(card)) => card.identity.clone(),
                    _ => Identity::Unreadable,
                };
                self.readers.insert(
                    reader.clone(),
                    Some(Card {
                        atr,
                        identity: previous.clone(),
                        insertion,
                        previous: Some(previous),
                    }),
                );
                effects.push(Effect::Identify { reader, insertion });
            }
            ReaderEvent::CardRemoved { reader } => {
                let Some(card) = self.readers.get_mut(&reader).and_then(Option::take) else {
                    return;
                };
                let pull = Pull {
                    reader,
                    atr: card.atr,
                    identity: card.identity,
                    seen,
                };
                self.pulled(pull, effects);
            }
        }
    }

    fn pulled(&mut self, pull: Pull, effects: &mut Vec<Effect>) {
        effects.push(Effect::Removed(pull.clone()));
        if self.config.grace.is_zero() {
            self.act_on_pull(&pull, effects);
        } else {
            let id = self.next();
            self.grace.insert(id, pull);
            effects.push(Effect::StartGrace {
                id,
                delay: self.config.grace,
            });
        }
    }

    fn identified(
        &mut self,
        reader: &str,
        insertion: u64,
        identity: Identity,
        effects: &mut Vec<Effect>,
    ) {
        let Some(Some(card)) = self.readers.get_mut(reader) else {
            return;
        };
        if card.insertion != insertion {
            return;
        }
        if let Some(previous) = card.previous.take() {
            // Re-check after pcscd came back: the same card stays; another
            // card means the old one was pulled while pcscd was away.
            let swapped = match (&previous, &identity) {
                (_, Identity::Unreadable) | (_, Identity::Pending) => false,
                (Identity::Token(old), Identity::Token(new)) => !same_token(old, new),
                (Identity::Token(_), Identity::NotAToken) => true,
                _ => false,
            };
            if !swapped {
                if identity != Identity::Unreadable {
                    card.identity = identity;
                }
                return;
            }
            let pull = Pull {
                reader: reader.to_owned(),
                atr: card.atr.clone(),
                identity: previous,
                seen: Instant::now(),
            };
            card.identity = identity.clone();
            let atr = card.atr.clone();
            self.pulled(pull, effects);
            self.announce_insert(reader, atr, identity, effects);
            return;
        }
        card.identity = identity.clone();
        let atr = card.atr.clone();
        self.announce_insert(reader, atr, identity, effects);
    }

    fn announce_insert(
        &mut self,
        reader: &str,
        atr: Vec<u8>,
        identity: Identity,
        effects: &mut Vec<Effect>,
    ) {
        let Identity::Token(token) = identity else {
            return;
        };
        // The same card back within the grace delay cancels its action.
        let cancelled: Vec<u64> = self
            .grace
            .iter()
            .filter(
                |(_, pull)| matches!(&pull.identity, Identity::Token(t) if same_token(t, &token)),
            )
            .map(|(id, _)| *id)
            .collect();
        for id in cancelled {
            self.grace.remove(&id);
            tracing::info!(
                id = "eventd.grace.cancelled",
                reader,
                token = %token.label,
                serial = %token.serial,
                "card re-inserted within the grace delay; no action"
            );
        }
        let sessions = self
            .sessions
            .values()
            .filter(|binding| same_token(&binding.token, &token))
            .map(|binding| binding.session_id.clone())
            .collect();
        effects.push(Effect::Inserted {
            reader: reader.to_owned(),
            atr,
            token,
            sessions,
        });
    }

    /// A new binding for a card that is in no reader: it was pulled
    /// between pam_sm_authenticate and pam_sm_open_session, and that pull
    /// concerned no session yet. Act on the new session at once, but only
    /// when eventd knows it: the bound reader is known and empty, and the
    /// token is in no other reader. A reader not listed yet (eventd just
    /// started, or pcscd came back and the readers are being listed again),
    /// a card in it not identified yet, or a grace delay running for that
    /// card (it covers this session when it ends) all mean: wait.
    fn act_if_card_absent(&mut self, binding: &SessionBinding, effects: &mut Vec<Effect>) {
        if !self.pcsc_available || self.token_present(&binding.token) {
            return;
        }
        let its_reader_is_empty = self.readers.iter().any(|(reader, card)| {
            card.is_none() && same_reader(&binding.token.slot_description, reader)
        });
        let grace_running = self.grace.values().any(
            |pull| matches!(&pull.identity, Identity::Token(token) if same_token(token, &binding.token)),
        );
        if !its_reader_is_empty || grace_running {
            return;
        }
        let session_id = binding.session_id.clone();
        tracing::warn!(
            id = "eventd.binding.card_absent",
            session = %session_id,
            user = %binding.user,
            token = %binding.token.label,
            serial = %binding.token.serial,
            "session bound to a card that is in no reader (pulled before the session opened); acting at once"
        );
        if self.in_flight.contains_key(&session_id) {
            return;
        }
        self.in_flight.insert(session_id, InFlight { queued: None });
        effects.push(Effect::Act(Box::new(ActionRequest {
            binding: binding.clone(),
            pull: Pull {
                reader: binding.token.slot_description.trim_end().to_owned(),
                atr: Vec::new(),
                identity: Identity::Token(binding.token.clone()),
                seen: Instant::now(),
            },
        })));
    }

    fn act_on_pull(&mut self, pull: &Pull, effects: &mut Vec<Effect>) {
        let concerned: Vec<SessionBinding> = self
            .sessions
            .values()
            .filter(|binding| pull_concerns(&binding.token, &pull.reader, &pull.identity))
            .cloned()
            .collect();
        for binding in concerned {
            let session_id = binding.session_id.clone();
            if let Some(in_flight) = self.in_flight.get_mut(&session_id) {
                // One action per session at a time; pulls meanwhile fold into one more.
                in_flight.queued = Some(pull.clone());
                continue;
            }
            self.in_flight.insert(session_id, InFlight { queued: None });
            effects.push(Effect::Act(Box::new(ActionRequest {
                binding,
                pull: pull.clone(),
            })));
        }
    }
}

#[cfg(test)]
mod tests {
    use tessera_core::binding::BINDING_VERSION;

    use crate::model::Outcome;

    use super::*;

    const R0: &str = "Virtual PCD 00 00";
    const R1: &str = "Virtual PCD 00 01";

    fn token(label: &str, serial: &str, reader: &str) -> BoundToken {
        BoundToken {
            label: label.into(),
            manufacturer: "piv_II".into(),
            model: "PKCS#15 emulated".into(),
            serial: serial.into(),
            slot_description: reader.into(),
        }
    }

    fn binding(session: &str, user: &str, token: BoundToken) -> SessionBinding {
        SessionBinding {
            version: BINDING_VERSION,
            session_id: session.into(),
            uid: 1000,
            user: user.into(),
            service: "login".into(),
            tty: "tty1".into(),
            pid: 1,
            created: 0,
            certificate_sha256: "00".repeat(32),
            token,
        }
    }

    /// A reader event seen now.
    fn reader_input(event: ReaderEvent) -> Input {
        Input::Reader {
            event,
            seen: Instant::now(),
        }
    }

    struct Script {
        engine: Engine,
    }

    impl Script {
        fn new(config: EventdConfig) -> Self {
            let mut engine = Engine::new(config);
            engine.handle(reader_input(ReaderEvent::ReaderAdded(R0.into())));
            engine.handle(reader_input(ReaderEvent::ReaderAdded(R1.into())));
            Self { engine }
        }

        fn bind(&mut self, binding: SessionBinding) {
            let effects = self.engine.handle(Input::Binding {
                session_id: binding.session_id.clone(),
                binding: Some(Box::new(binding.clone())),
            });
            assert_eq!(effects, vec![Effect::CheckSession(binding.session_id)]);
        }

        /// Inserts and identifies a card; returns the effects of identification.
        fn insert(&mut self, reader: &str, identity: Identity) -> Vec<Effect> {
            let effects = self.engine.handle(reader_input(ReaderEvent::CardInserted {
                reader: reader.into(),
                atr: vec![0x3b],
            }));
            let [Effect::Identify { insertion, .. }] = effects.as_slice() else {
                panic!("expected one Identify, got {effects:?}");
            };
            self.engine.handle(Input::Identified {
                reader: reader.into(),
                insertion: *insertion,
                identity,
            })
        }

        fn pull(&mut self, reader: &str) -> Vec<Effect> {
            self.engine.handle(reader_input(ReaderEvent::CardRemoved {
                reader: reader.into(),
            }))
        }

        fn done(&mut self, session: &str) -> Vec<Effect> {
            self.engine.handle(Input::ActionDone {
                session_id: session.into(),
                outcome: Outcome::Locked,
            })
        }
    }

    fn acted_on(effects: &[Effect]) -> Vec<String> {
        effects
            .iter()
            .filter_map(|effect| match effect {
                Effect::Act(request) => Some(request.binding.session_id.clone()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_binding_for_a_card_already_pulled_is_acted_on_at_once() {
        let mut script = Script::new(EventdConfig::default());
        script.engine.handle(Input::PcscAvailable(true));
        let alice = token("alice", "0001", R0);
        script.insert(R0, Identity::Token(alice.clone()));
        // Present: nothing to do.
        script.bind(binding("c1", "alice", alice.clone()));
        // Pulled between authenticate and open_session: c2 is bound after.
        assert!(acted_on(&script.pull(R0)).contains(&"c1".to_owned()));
        let effects = script.engine.handle(Input::Binding {
            session_id: "c2".into(),
            binding: Some(Box::new(binding("c2", "alice", alice.clone()))),
        });
        assert_eq!(acted_on(&effects), vec!["c2"]);
        // A card not yet identified in the bound reader may be it: wait.
        script
            .engine
            .handle(reader_input(ReaderEvent::CardInserted {
                reader: R0.into(),
                atr: vec![0x3b],
            }));
        let effects = script.engine.handle(Input::Binding {
            session_id: "c3".into(),
            binding: Some(Box::new(binding("c3", "alice", alice))),
        });
        assert!(acted_on(&effects).is_empty());
    }

    #[test]
    fn a_binding_is_not_acted_on_before_its_reader_is_known() {
        // eventd starting: pcscd answers, the readers are not listed yet,
        // and the bindings of running sessions are read.
        let mut engine = Engine::new(EventdConfig::default());
        engine.handle(Input::PcscAvailable(true));
        let alice = token("alice", "0001", R0);
        let effects = engine.handle(Input::Binding {
            session_id: "c1".into(),
            binding: Some(Box::new(binding("c1", "alice", alice.clone()))),
        });
        assert!(acted_on(&effects).is_empty());
        // Listed with alice's card in it: still nothing to do.
        engine.handle(reader_input(ReaderEvent::ReaderAdded(R0.into())));
        let effects = engine.handle(reader_input(ReaderEvent::CardInserted {
            reader: R0.into(),
            atr: vec![0x3b],
        }));
        assert!(acted_on(&effects).is_empty(), "{effects:?}");
    }

    #[test]
    fn pulling_a_card_acts_on_exactly_the_sessions_it_opened() {
        let mut script = Script::new(EventdConfig::default());
        let alice = token("alice", "0001", R0);
        let bob = token("bob", "0002", R1);
        script.bind(binding("c1", "alice", alice.clone()));
        script.bind(binding("c2", "bob", bob.clone()));
        script.bind(binding("c3", "alice", alice.clone()));
        script.insert(R0, Identity::Token(alice));
        script.insert(R1, Identity::Token(bob));

        let effects = script.pull(R1);
        assert_eq!(acted_on(&effects), vec!["c2"]);
        assert!(matches!(&effects[0], Effect::Removed(pull) if pull.reader == R1));
        script.done("c2");
        assert_eq!(acted_on(&script.pull(R0)), vec!["c1", "c3"]);
    }

    #[test]
    fn the_same_label_on_another_card_is_not_the_same_card() {
        let mut script = Script::new(EventdConfig::default());
        script.bind(binding("c1", "alice", token("alice", "0001", R0)));
        // A card with alice's label but another serial, in alice's reader.
        script.insert(R0, Identity::Token(token("alice", "9999", R0)));
        assert_eq!(acted_on(&script.pull(R0)), Vec::<String>::new());
    }

    #[test]
    fn a_card_with_a_serial_is_followed_to_another_reader() {
        let mut script = Script::new(EventdConfig::default());
        script.bind(binding("c1", "alice", token("alice", "0001", R0)));
        script.insert(R1, Identity::Token(token("alice", "0001", R1)));
        assert_eq!(acted_on(&script.pull(R1)), vec!["c1"]);
    }

    #[test]
    fn without_a_serial_the_reader_must_match_too() {
        let mut script = Script::new(EventdConfig::default());
        script.bind(binding("c1", "alice", token("alice", "", R0)));
        script.insert(R1, Identity::Token(token("alice", "", R1)));
        assert_eq!(acted_on(&script.pull(R1)), Vec::<String>::new());
        script.insert(R0, Identity::Token(token("alice", "", R0)));
        assert_eq!(acted_on(&script.pull(R0)), vec!["c1"]);
    }

    #[test]
    fn an_unidentified_card_pulled_from_a_bound_reader_fails_closed() {
        let mut script = Script::new(EventdConfig::default());
        script.bind(binding("c1", "alice", token("alice", "0001", R0)));
        script.bind(binding("c2", "bob", token("bob", "0002", R1)));
        script.insert(R0, Identity::Unreadable);
        assert_eq!(acted_on(&script.pull(R0)), vec!["c1"]);
        // Pulled before identification finished.
        script
            .engine
            .handle(reader_input(ReaderEvent::CardInserted {
                reader: R1.into(),
                atr: vec![0x3b],
            }));
        assert_eq!(acted_on(&script.pull(R1)), vec!["c2"]);
        // But a card PKCS#11 does not know is nobody's login card.
        script.insert(R0, Identity::NotAToken);
        assert_eq!(acted_on(&script.pull(R0)), Vec::<String>::new());
    }

    #[test]
    fn late_identification_of_a_card_that_left_is_ignored() {
        let mut script = Script::new(EventdConfig::default());
        let effects = script
            .engine
            .handle(reader_input(ReaderEvent::CardInserted {
                reader: R0.into(),
                atr: vec![0x3b],
            }));
        let [Effect::Identify { insertion, .. }] = effects.as_slice() else {
            panic!("{effects:?}");
        };
        let insertion = *insertion;
        script.pull(R0);
        script.insert(R0, Identity::NotAToken);
        let effects = script.engine.handle(Input::Identified {
            reader: R0.into(),
            insertion,
            identity: Identity::Token(token("alice", "0001", R0)),
        });
        assert!(effects.is_empty());
        assert_eq!(
            script.engine.readers()[R0].as_ref().map(|c| &c.identity),
            Some(&Identity::NotAToken)
        );
    }

    #[test]
    fn reinserting_within_the_grace_delay_cancels_the_action() {
        let config = EventdConfig {
            grace: Duration::from_secs(2),
            ..EventdConfig::default()
        };
        let mut script = Script::new(config);
        let alice = token("alice", "0001", R0);
        script.bind(binding("c1", "alice", alice.clone()));
        script.insert(R0, Identity::Token(alice.clone()));
        let effects = script.pull(R0);
        let Some(Effect::StartGrace { id, delay }) = effects.get(1) else {
            panic!("{effects:?}");
        };
        assert_eq!(*delay, Duration::from_secs(2));
        let id = *id;
        let effects = script.insert(R0, Identity::Token(alice.clone()));
        assert!(matches!(&effects[..], [Effect::Inserted { sessions, .. }] if sessions == &["c1"]));
        assert!(script.engine.handle(Input::GraceExpired(id)).is_empty());

        // Not re-inserted: the action runs when the delay ends.
        let effects = script.pull(R0);
        let Some(Effect::StartGrace { id, .. }) = effects.get(1) else {
            panic!("{effects:?}");
        };
        assert_eq!(
            acted_on(&script.engine.handle(Input::GraceExpired(*id))),
            vec!["c1"]
        );
    }

    #[test]
    fn another_card_inserted_within_the_grace_delay_does_not_cancel() {
        let config = EventdConfig {
            grace: Duration::from_secs(2),
            ..EventdConfig::default()
        };
        let mut script = Script::new(config);
        script.bind(binding("c1", "alice", token("alice", "0001", R0)));
        script.insert(R0, Identity::Token(token("alice", "0001", R0)));
        let effects = script.pull(R0);
        let Some(Effect::StartGrace { id, .. }) = effects.get(1) else {
            panic!("{effects:?}");
        };
        let id = *id;
        script.insert(R0, Identity::Token(token("mallory", "0666", R0)));
        assert_eq!(
            acted_on(&script.engine.handle(Input::GraceExpired(id))),
            vec!["c1"]
        );
    }

    #[test]
    fn pulls_during_a_running_action_fold_into_one_more() {
        let mut script = Script::new(EventdConfig::default());
        let alice = token("alice", "0001", R0);
        script.bind(binding("c1", "alice", alice.clone()));
        script.insert(R0, Identity::Token(alice.clone()));
        assert_eq!(acted_on(&script.pull(R0)), vec!["c1"]);
        for _ in 0..3 {
            script.insert(R0, Identity::Token(alice.clone()));
            assert_eq!(acted_on(&script.pull(R0)), Vec::<String>::new());
        }
        assert_eq!(acted_on(&script.done("c1")), vec!["c1"]);
        assert!(script.done("c1").is_empty());
    }

    #[test]
    fn a_swapped_card_after_pcscd_restart_is_a_pull_of_the_old_one() {
        let mut script = Script::new(EventdConfig::default());
        let alice = token("alice", "0001", R0);
        script.bind(binding("c1", "alice", alice.clone()));
        script.insert(R0, Identity::Token(alice.clone()));
        let reverify = |script: &mut Script, identity| {
            let effects = script
                .engine
                .handle(reader_input(ReaderEvent::CardReverify {
                    reader: R0.into(),
                    atr: vec![0x3b],
                }));
            let [Effect::Identify { insertion, .. }] = effects.as_slice() else {
                panic!("{effects:?}");
            };
            script.engine.handle(Input::Identified {
                reader: R0.into(),
                insertion: *insertion,
                identity,
            })
        };
        // Same card, or one we cannot read now: nothing happened.
        assert!(reverify(&mut script, Identity::Token(alice.clone())).is_empty());
        assert!(reverify(&mut script, Identity::Unreadable).is_empty());
        assert!(script.engine.token_present(&alice));
        // Another card with the same ATR.
        let effects = reverify(&mut script, Identity::Token(token("bob", "0002", R0)));
        assert_eq!(acted_on(&effects), vec!["c1"]);
        assert!(
            matches!(effects.last(), Some(Effect::Inserted { token, .. }) if token.label == "bob")
        );
    }

    #[test]
    fn bindings_of_ended_sessions_are_forgotten_once() {
        let mut script = Script::new(EventdConfig::default());
        script.bind(binding("c1", "alice", token("alice", "0001", R0)));
        assert_eq!(
            script.engine.handle(Input::SessionGone("c1".into())),
            vec![Effect::ForgetBinding("c1".into())]
        );
        assert!(script
            .engine
            .handle(Input::SessionGone("c1".into()))
            .is_empty());
        assert!(script.engine.sessions().is_empty());
    }

    #[test]
    fn a_rescan_checks_only_new_sessions_and_a_reconnect_checks_all() {
        let mut script = Script::new(EventdConfig::default());
        script.bind(binding("c1", "alice", token("alice", "0001", R0)));
        let effects = script.engine.handle(Input::BindingsRescanned(vec![
            binding("c1", "alice", token("alice", "0001", R0)),
            binding("c2", "bob", token("bob", "0002", R1)),
        ]));
        assert_eq!(effects, vec![Effect::CheckSession("c2".into())]);
        assert_eq!(
            script.engine.handle(Input::BusConnected),
            vec![
                Effect::CheckSession("c1".into()),
                Effect::CheckSession("c2".into())
            ]
        );
    }

    #[test]
    fn truncated_slot_descriptions_still_name_their_reader() {
        let reader = "Long Vendor Name Smart Card Reader With Many Features Interface 00 00";
        assert!(same_reader(&reader[..64], reader));
        assert!(!same_reader(&reader[..60], reader));
        assert!(same_reader("Virtual PCD 00 00   ", R0));
        assert!(!same_reader("Virtual PCD 00", R0));
    }
}
