//! Card readers through pcscd: one thread blocked in `SCardGetStatusChange`
//! with an infinite timeout over every reader plus `\\?PnP?\Notification`,
//! turning state changes into insert and remove events.
//!
//! [`ReaderTracker`] holds the logic and no PC/SC handle, so it is tested
//! with scripted snapshots; [`spawn`] runs it against pcscd.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use pcsc::{Context, ReaderState, Scope, State};

use crate::events::InputSender;
use crate::model::{Input, ReaderEvent};

/// Readers beyond this many are ignored (logged); bounds every per-wake cost.
pub const MAX_READERS: usize = 64;
/// pcscd restart backoff: first and longest delay.
const BACKOFF_START: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// This many wake-ups in a row that changed nothing make the loop pause:
/// a PC/SC stack that keeps returning at once must not spin a core.
const SPURIOUS_LIMIT: u32 = 50;
const SPURIOUS_PAUSE: Duration = Duration::from_millis(200);

/// What PC/SC reported for one reader after a wait.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReaderSnapshot {
    /// Reader name.
    pub name: String,
    /// A card is in the reader (`SCARD_STATE_PRESENT`).
    pub present: bool,
    /// The card does not answer (yet): `SCARD_STATE_MUTE`.
    pub mute: bool,
    /// Insertions plus removals counted by pcscd (upper 16 bits of dwEventState).
    pub count: u32,
    /// The card's ATR.
    pub atr: Vec<u8>,
}

/// After pcscd comes back, readers and cards take a moment to show up
/// again (reader enumeration, card power-up); a card seen before is only
/// judged pulled if it is still missing after this long.
pub const RESYNC_SETTLE: Duration = Duration::from_secs(3);

#[derive(Debug, Clone)]
struct Known {
    /// ATR of the announced card; None while empty or mute.
    card: Option<Vec<u8>>,
    count: u32,
    /// Announced before pcscd went away and not seen since.
    unconfirmed: bool,
}

/// Turns successive reader snapshots into events.
#[derive(Debug, Default)]
pub struct ReaderTracker {
    known: BTreeMap<String, Known>,
    /// Set after pcscd went away: its counters restart with it.
    lost: bool,
    /// End of the resync window after pcscd came back.
    settle_until: Option<Instant>,
}

impl ReaderTracker {
    /// pcscd went away; the next snapshots come from a new pcscd whose
    /// event counters mean nothing next to the old ones.
    pub fn service_lost(&mut self) {
        self.lost = true;
        self.settle_until = None;
        for known in self.known.values_mut() {
            known.unconfirmed = known.card.is_some();
        }
    }

    /// When the resync window ends, if one is open: wait no longer than that.
    pub fn deadline(&self) -> Option<Instant> {
        self.settle_until
    }

    /// The complete list of readers at `now`; returns what changed, in order.
    pub fn update(&mut self, snapshots: &[ReaderSnapshot], now: Instant) -> Vec<ReaderEvent> {
        if std::mem::take(&mut self.lost) {
            self.settle_until = Some(now + RESYNC_SETTLE);
        }
        let settling = self.settle_until.is_some_and(|until| now < until);
        let mut events = Vec::new();
        let gone: Vec<String> = self
            .known
            .iter()
            .filter(|(name, known)| {
                let listed = snapshots.iter().any(|s| &s.name == *name);
                // A card seen before pcscd went away gets the resync window to come back.
                let waiting = settling && known.unconfirmed;
                !listed && !waiting
            })
            .map(|(name, _)| name.clone())
            .collect();
        for name in gone {
            // A reader unplugged with a card in it is a pull.
            if let Some(Known { card: Some(_), .. }) = self.known.remove(&name) {
                events.push(ReaderEvent::CardRemoved {
                    reader: name.clone(),
                });
            }
            events.push(ReaderEvent::ReaderRemoved(name));
        }
        for snapshot in snapshots {
            let answering = snapshot.present && !snapshot.mute;
            let reader = || snapshot.name.clone();
            let Some(known) = self.known.get_mut(&snapshot.name) else {
                events.push(ReaderEvent::ReaderAdded(reader()));
                if answering {
                    events.push(ReaderEvent::CardInserted {
                        reader: reader(),
                        atr: snapshot.atr.clone(),
                    });
                }
                self.known.insert(
                    reader(),
                    Known {
                        card: answering.then(|| snapshot.atr.clone()),
                        count: snapshot.count,
                        unconfirmed: false,
                    },
                );
                continue;
            };
            if known.unconfirmed {
                match &known.card {
                    Some(old_atr) if answering && *old_atr == snapshot.atr => {
                        events.push(ReaderEvent::CardReverify {
                            reader: reader(),
                            atr: snapshot.atr.clone(),
                        });
                        known.unconfirmed = false;
                    }
                    _ if answering => {
                        events.push(ReaderEvent::CardRemoved { reader: reader() });
                        events.push(ReaderEvent::CardInserted {
                            reader: reader(),
                            atr: snapshot.atr.clone(),
                        });
                        known.card = Some(snapshot.atr.clone());
                        known.unconfirmed = false;
                    }
                    _ if settling => {}
                    _ => {
                        events.push(ReaderEvent::CardRemoved { reader: reader() });
                        known.card = None;
                        known.unconfirmed = false;
                    }
                }
                known.count = snapshot.count;
                continue;
            }
            // pcscd counts each insertion and each removal; two or more
            // since the last look while a card is in again means it left
            // and came back between two waits.
            let cycled = snapshot.count.wrapping_sub(known.count) & 0xFFFF >= 2;
            match (&known.card, snapshot.present) {
                (Some(_), false) => {
                    events.push(ReaderEvent::CardRemoved { reader: reader() });
                    known.card = None;
                }
                (Some(_), true) if cycled => {
                    events.push(ReaderEvent::CardRemoved { reader: reader() });
                    known.card = None;
                    if answering {
                        events.push(ReaderEvent::CardInserted {
                            reader: reader(),
                            atr: snapshot.atr.clone(),
                        });
                        known.card = Some(snapshot.atr.clone());
                    }
                }
                // A card that turns mute stays announced: it is still there.
                (Some(_), true) => {}
                (None, _) if answering => {
                    events.push(ReaderEvent::CardInserted {
                        reader: reader(),
                        atr: snapshot.atr.clone(),
                    });
                    known.card = Some(snapshot.atr.clone());
                }
                (None, _) => {}
            }
            known.count = snapshot.count;
        }
        if !settling {
            self.settle_until = None;
        }
        events
    }
}

/// Errors after which the context is dead and pcscd must be reached anew.
fn service_gone(error: pcsc::Error) -> bool {
    matches!(
        error,
        pcsc::Error::NoService
            | pcsc::Error::CommError
            | pcsc::Error::InvalidHandle
            | pcsc::Error::ServiceStopped
            | pcsc::Error::Shutdown
    )
}

/// The running watcher: cancel it with [`Watcher::stop`].
pub struct Watcher {
    context: Arc<Mutex<Option<Context>>>,
    stop: std::sync::mpsc::Sender<()>,
}

impl std::fmt::Debug for Watcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watcher").finish_non_exhaustive()
    }
}

impl Watcher {
    /// Cancels the blocking wait (`SCardCancel`); the thread then ends on
    /// its own. Not joined: it may be waiting for room in the event channel
    /// that the stopping main loop no longer empties.
    pub fn stop(self) {
        let _ = self.stop.send(());
        if let Some(context) = self
            .context
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
        {
            if let Err(error) = context.cancel() {
                tracing::debug!(%error, "SCardCancel");
            }
        }
    }
}

/// Starts the watcher thread; it sends [`Input::Reader`] and PC/SC
/// availability events to `events`.
pub fn spawn(events: InputSender) -> std::io::Result<Watcher> {
    let context = Arc::new(Mutex::new(None));
    let (stop, stopped) = std::sync::mpsc::channel();
    let shared = context.clone();
    std::thread::Builder::new()
        .name("pcsc".to_owned())
        .spawn(move || watch(&shared, &stopped, &events))?;
    Ok(Watcher { context, stop })
}

fn watch(shared: &Mutex<Option<Context>>, stopped: &Receiver<()>, events: &InputSender) {
    let mut tracker = ReaderTracker::default();
    let mut backoff = BACKOFF_START;
    let mut reachable = true;
    loop {
        match Context::establish(Scope::System) {
            Ok(context) => {
                *shared.lock().unwrap_or_else(PoisonError::into_inner) = Some(context.clone());
                // A stop requested between the check and the store above would
                // cancel nothing; look again now that the context is visible.
                if stop_requested(stopped, Duration::ZERO) {
                    return;
                }
                backoff = BACKOFF_START;
                if !reachable {
                    tracing::info!(
                        id = "eventd.pcsc.restored",
                        "pcscd is reachable again; resynchronising readers"
                    );
                }
                events.send(Input::PcscAvailable(true));
                match follow(&context, &mut tracker, events) {
                    Stop::Cancelled => return,
                    Stop::Lost(error) => {
                        tracing::warn!(id = "eventd.pcsc.lost", %error, "lost pcscd; cards pulled meanwhile count as pulled once it is back");
                        tracker.service_lost();
                        events.send(Input::PcscAvailable(false));
                        reachable = false;
                    }
                }
                *shared.lock().unwrap_or_else(PoisonError::into_inner) = None;
            }
            Err(error) => {
                if reachable {
                    tracing::warn!(id = "eventd.pcsc.unreachable", %error, "cannot reach pcscd; retrying with backoff");
                    events.send(Input::PcscAvailable(false));
                    tracker.service_lost();
                    reachable = false;
                }
            }
        }
        if stop_requested(stopped, backoff) {
            return;
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// Sleeps up to `wait`; true when asked to stop (or the owner is gone).
fn stop_requested(stopped: &Receiver<()>, wait: Duration) -> bool {
    !matches!(stopped.recv_timeout(wait), Err(RecvTimeoutError::Timeout))
}

enum Stop {
    Cancelled,
    Lost(pcsc::Error),
}

fn follow(context: &Context, tracker: &mut ReaderTracker, events: &InputSender) -> Stop {
    let mut states: Vec<ReaderState> = Vec::new();
    let mut pnp = ReaderState::new(pcsc::PNP_NOTIFICATION(), State::UNAWARE);
    let mut spurious = 0u32;
    loop {
        let names = match context.list_readers_owned() {
            Ok(names) => names,
            Err(error) if service_gone(error) => return Stop::Lost(error),
            Err(error) => {
                tracing::warn!(%error, "SCardListReaders failed; treating as no readers");
                Vec::new()
            }
        };
        sync_states(&mut states, names);
        // Infinite unless a resync window after a pcscd restart is open.
        let timeout = tracker
            .deadline()
            .map(|deadline| deadline.saturating_duration_since(Instant::now()));
        states.push(pnp);
        let result = context.get_status_change(timeout, &mut states);
        let seen = Instant::now();
        pnp = states
            .pop()
            .unwrap_or_else(|| ReaderState::new(pcsc::PNP_NOTIFICATION(), State::UNAWARE));
        match result {
            Ok(()) | Err(pcsc::Error::Timeout) => {}
            Err(pcsc::Error::Cancelled) => return Stop::Cancelled,
            Err(error) if service_gone(error) => return Stop::Lost(error),
            // A reader vanished between the list and the wait; list again.
            Err(pcsc::Error::UnknownReader) => continue,
            Err(error) => {
                tracing::warn!(%error, "SCardGetStatusChange failed; retrying");
                std::thread::sleep(SPURIOUS_PAUSE);
                continue;
            }
        }
        let pnp_changed = pnp.event_state().contains(State::CHANGED);
        pnp.sync_current_state();
        let changed = states
            .iter()
            .any(|state| state.event_state().contains(State::CHANGED));
        let snapshots: Vec<ReaderSnapshot> = states
            .iter()
            .filter(|state| {
                !state
                    .event_state()
                    .intersects(State::UNKNOWN | State::IGNORE)
            })
            .map(|state| ReaderSnapshot {
                name: state.name().to_string_lossy().into_owned(),
                present: state.event_state().contains(State::PRESENT),
                mute: state.event_state().contains(State::MUTE),
                count: state.event_count(),
                atr: state.atr().to_vec(),
            })
            .collect();
        for state in &mut states {
            state.sync_current_state();
        }
        for snapshot in &snapshots {
            tracing::debug!(
                reader = %snapshot.name,
                present = snapshot.present,
                mute = snapshot.mute,
                count = snapshot.count,
                "reader state"
            );
        }
        let found = tracker.update(&snapshots, seen);
        if !found.is_empty() {
            tracing::debug!(?found, "reader events");
        }
        if found.is_empty() && !pnp_changed && !changed && timeout.is_none() {
            spurious += 1;
            if spurious >= SPURIOUS_LIMIT {
                tracing::warn!("SCardGetStatusChange keeps returning without a change; pausing");
                std::thread::sleep(SPURIOUS_PAUSE);
                spurious = 0;
            }
        } else {
            spurious = 0;
        }
        for event in found {
            events.send(Input::Reader { event, seen });
        }
    }
}

/// Keeps one `ReaderState` per listed reader, carrying its last reported
/// state (with the event counter) over to the next wait.
fn sync_states(states: &mut Vec<ReaderState>, names: Vec<CString>) {
    if names.len() > MAX_READERS {
        static WARNED: std::sync::Once = std::sync::Once::new();
        WARNED.call_once(|| {
            tracing::warn!(
                "{} readers attached; watching the first {MAX_READERS}",
                names.len()
            )
        });
    }
    let names: Vec<CString> = names.into_iter().take(MAX_READERS).collect();
    states.retain(|state| names.iter().any(|name| name.as_c_str() == state.name()));
    for name in names {
        if !states.iter().any(|state| state.name() == name.as_c_str()) {
            states.push(ReaderState::new(name, State::UNAWARE));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl ReaderTracker {
        fn update_now(&mut self, snapshots: &[ReaderSnapshot]) -> Vec<ReaderEvent> {
            self.update(snapshots, Instant::now())
        }
    }

    fn reader(name: &str, present: bool, count: u32, atr: &[u8]) -> ReaderSnapshot {
        ReaderSnapshot {
            name: name.to_owned(),
            present,
            mute: false,
            count,
            atr: atr.to_vec(),
        }
    }

    fn inserted(reader: &str, atr: &[u8]) -> ReaderEvent {
        ReaderEvent::CardInserted {
            reader: reader.to_owned(),
            atr: atr.to_vec(),
        }
    }

    fn removed(reader: &str) -> ReaderEvent {
        ReaderEvent::CardRemoved {
            reader: reader.to_owned(),
        }
    }

    #[test]
    fn first_sight_announces_readers_and_their_cards() {
        let mut tracker = ReaderTracker::default();
        let events =
            tracker.update_now(&[reader("A", true, 1, b"\x3b"), reader("B", false, 0, b"")]);
        assert_eq!(
            events,
            vec![
                ReaderEvent::ReaderAdded("A".into()),
                inserted("A", b"\x3b"),
                ReaderEvent::ReaderAdded("B".into()),
            ]
        );
    }

    #[test]
    fn pull_and_insert_are_reported_once_each() {
        let mut tracker = ReaderTracker::default();
        tracker.update_now(&[reader("A", true, 1, b"\x3b")]);
        assert_eq!(
            tracker.update_now(&[reader("A", false, 2, b"")]),
            vec![removed("A")]
        );
        assert_eq!(tracker.update_now(&[reader("A", false, 2, b"")]), vec![]);
        assert_eq!(
            tracker.update_now(&[reader("A", true, 3, b"\x3c")]),
            vec![inserted("A", b"\x3c")]
        );
    }

    #[test]
    fn a_pull_and_reinsert_between_two_waits_is_still_a_pull() {
        let mut tracker = ReaderTracker::default();
        tracker.update_now(&[reader("A", true, 1, b"\x3b")]);
        assert_eq!(
            tracker.update_now(&[reader("A", true, 3, b"\x3b")]),
            vec![removed("A"), inserted("A", b"\x3b")]
        );
        // The counter wraps at 16 bits.
        tracker.update_now(&[reader("A", true, 0xFFFF, b"\x3b")]);
        assert_eq!(
            tracker.update_now(&[reader("A", true, 1, b"\x3b")]),
            vec![removed("A"), inserted("A", b"\x3b")]
        );
    }

    #[test]
    fn a_second_card_does_not_hide_the_removal_of_the_first() {
        // pkcs11_eventmgr's blind spot: "some token" vs "no token".
        let mut tracker = ReaderTracker::default();
        tracker.update_now(&[reader("A", true, 1, b"\x3b"), reader("B", true, 1, b"\x3c")]);
        assert_eq!(
            tracker.update_now(&[reader("A", false, 2, b""), reader("B", true, 1, b"\x3c")]),
            vec![removed("A")]
        );
    }

    #[test]
    fn a_reader_unplugged_with_its_card_is_a_pull() {
        let mut tracker = ReaderTracker::default();
        tracker.update_now(&[reader("A", true, 1, b"\x3b"), reader("B", false, 0, b"")]);
        assert_eq!(
            tracker.update_now(&[reader("B", false, 0, b"")]),
            vec![removed("A"), ReaderEvent::ReaderRemoved("A".into())]
        );
    }

    #[test]
    fn mute_cards_are_announced_once_they_answer() {
        let mut tracker = ReaderTracker::default();
        tracker.update_now(&[reader("A", false, 0, b"")]);
        let mut mute = reader("A", true, 1, b"");
        mute.mute = true;
        assert_eq!(tracker.update_now(&[mute.clone()]), vec![]);
        assert_eq!(
            tracker.update_now(&[reader("A", true, 1, b"\x3b")]),
            vec![inserted("A", b"\x3b")]
        );
        // Going mute again is not a pull.
        mute.atr = b"\x3b".to_vec();
        assert_eq!(tracker.update_now(&[mute]), vec![]);
    }

    #[test]
    fn after_pcscd_restarts_vanished_cards_are_pulls_and_present_ones_are_checked() {
        let mut tracker = ReaderTracker::default();
        let start = Instant::now();
        tracker.update(
            &[
                reader("A", true, 5, b"\x3b"),
                reader("B", true, 7, b"\x3c"),
                reader("C", true, 9, b"\x3d"),
            ],
            start,
        );
        tracker.service_lost();
        // New pcscd: counters start again and must not read as cycles; a
        // card not back yet is not judged within the resync window.
        let back = [
            reader("A", false, 0, b""),
            reader("B", true, 1, b"\x3c"),
            reader("C", true, 1, b"\x3e"),
        ];
        assert_eq!(
            tracker.update(&back, start),
            vec![
                ReaderEvent::CardReverify {
                    reader: "B".into(),
                    atr: b"\x3c".to_vec()
                },
                removed("C"),
                inserted("C", b"\x3e"),
            ]
        );
        assert_eq!(tracker.deadline(), Some(start + RESYNC_SETTLE));
        assert_eq!(
            tracker.update(&back, start + RESYNC_SETTLE),
            vec![removed("A")]
        );
        assert_eq!(tracker.deadline(), None);
        // Counters are compared again from here on.
        assert_eq!(tracker.update(&back, start + RESYNC_SETTLE), vec![]);
    }

    #[test]
    fn a_card_back_within_the_resync_window_is_only_checked() {
        let mut tracker = ReaderTracker::default();
        let start = Instant::now();
        tracker.update(&[reader("A", true, 1, b"\x3b")], start);
        tracker.service_lost();
        // The new pcscd has not enumerated its readers yet.
        assert_eq!(tracker.update(&[], start), vec![]);
        assert_eq!(tracker.update(&[reader("A", false, 0, b"")], start), vec![]);
        assert_eq!(
            tracker.update(
                &[reader("A", true, 1, b"\x3b")],
                start + Duration::from_millis(500)
            ),
            vec![ReaderEvent::CardReverify {
                reader: "A".into(),
                atr: b"\x3b".to_vec()
            }]
        );
        assert_eq!(
            tracker.update(&[reader("A", true, 1, b"\x3b")], start + RESYNC_SETTLE),
            vec![]
        );
    }

    #[test]
    fn pcscd_gone_with_its_readers_pulls_their_cards_after_the_window() {
        let mut tracker = ReaderTracker::default();
        let start = Instant::now();
        tracker.update(&[reader("A", true, 1, b"\x3b")], start);
        tracker.service_lost();
        assert_eq!(tracker.update(&[], start), vec![]);
        assert_eq!(
            tracker.update(&[], start + RESYNC_SETTLE),
            vec![removed("A"), ReaderEvent::ReaderRemoved("A".into())]
        );
    }
}
