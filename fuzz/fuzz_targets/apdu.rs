//! The virtual card's command parser and PIV application, over a sequence
//! of command APDUs (each a length byte and the command).
#![no_main]

use std::collections::BTreeMap;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use tessera_fuzz::{CARD_DER, CARD_KEY};
use tessera_vcard::apdu::Command;
use tessera_vcard::keys::SlotKey;
use tessera_vcard::pin::{Credentials, Padded};
use tessera_vcard::piv::{PivCard, Slot, SlotId};

fn card() -> PivCard {
    // Parsing the key derives its public half: far slower than an input.
    static KEY: OnceLock<SlotKey> = OnceLock::new();
    let key = match KEY.get_or_init(|| SlotKey::from_pkcs8_der(CARD_KEY).unwrap()) {
        SlotKey::P256(key) => SlotKey::P256(key.clone()),
        other => panic!("the material's card key is P-256, not {other:?}"),
    };
    let slots = BTreeMap::from([(
        SlotId::Authentication,
        Slot {
            key: Some(key),
            certificate: Some(CARD_DER.to_vec()),
        },
    )]);
    let pin = Padded::from_value(b"123456").unwrap();
    let puk = Padded::from_value(b"12345678").unwrap();
    PivCard::new(
        slots,
        [7; 16],
        Credentials::new(pin, puk, 3, 3, None).unwrap(),
    )
}

/// Commands per input: enough for a whole OpenSC login with chaining;
/// longer inputs would mostly repeat signatures, which dominate the time.
const MAX_COMMANDS: usize = 24;

fuzz_target!(|data: &[u8]| {
    let mut card = card();
    let mut rest = data;
    let mut commands = 0;
    while let Some((&length, tail)) = rest.split_first() {
        commands += 1;
        if commands > MAX_COMMANDS {
            break;
        }
        let (command, tail) = tail.split_at(usize::from(length).min(tail.len()));
        rest = tail;
        if let Ok(parsed) = Command::parse(command) {
            // A parsed command accounts for every byte of the input.
            let lc = usize::from(!parsed.data.is_empty());
            let le = usize::from(parsed.le.is_some());
            assert_eq!(4 + lc + parsed.data.len() + le, command.len());
        }
        let response = card.process(command);
        // Every response ends in a status word and fits a short APDU.
        assert!((2..=258).contains(&response.len()), "{}", response.len());
    }
});
