//! The PIV card application (NIST SP 800-73-4 part 2), limited to what
//! OpenSC's PIV-II driver uses: SELECT, GET DATA, VERIFY, CHANGE REFERENCE
//! DATA, RESET RETRY COUNTER, GENERAL AUTHENTICATE, command chaining and
//! GET RESPONSE.

use std::collections::BTreeMap;

use rand_core::{OsRng, RngCore};

use crate::apdu::{Command, Response, Status};
use crate::keys::{OperationError, SlotKey};
use crate::pin::{Check, Credentials, Padded, Reference};
use crate::tlv;

/// T=1 ATR whose historical bytes carry the PIV AID; OpenSC then treats the
/// card as PIV_II_HIST without vendor quirks.
pub const ATR: [u8; 16] = [
    0x3B, 0x8B, 0x80, 0x01, 0x80, 0xF9, 0xA0, 0x00, 0x00, 0x03, 0x08, 0x00, 0x00, 0x10, 0x00, 0xC8,
];

/// The full PIV application identifier, version 01 00.
const PIV_AID: [u8; 11] = [
    0xA0, 0x00, 0x00, 0x03, 0x08, 0x00, 0x00, 0x10, 0x00, 0x01, 0x00,
];

/// Longest response sent at once; more goes through `61 xx` and GET RESPONSE
/// because pcscd fails longer single responses with SCARD_E_INSUFFICIENT_BUFFER.
const MAX_RESPONSE_CHUNK: usize = 256;

/// Upper bound on a chained command; the largest PIV input is a 384-byte
/// RSA-3072 block in its template.
const MAX_CHAIN: usize = 4096;

/// A FASC-N for CHUIDs of test cards (agency 9999, system 9999, credential 999999).
const FASCN: [u8; 25] = [
    0xD4, 0xE7, 0x39, 0xDA, 0x73, 0x9C, 0xED, 0x39, 0xCE, 0x73, 0x9D, 0x83, 0x68, 0x58, 0x21, 0x08,
    0x42, 0x10, 0x84, 0x21, 0xC8, 0x42, 0x10, 0xC3, 0xEB,
];

/// The four PIV key slots this card offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SlotId {
    /// 9A: PIV authentication (PIN once per session).
    Authentication,
    /// 9C: digital signature (PIN before every use).
    Signature,
    /// 9D: key management (PIN once per session).
    KeyManagement,
    /// 9E: card authentication (no PIN).
    CardAuthentication,
}

impl SlotId {
    /// All slots in key-reference order.
    pub const ALL: [SlotId; 4] = [
        SlotId::Authentication,
        SlotId::Signature,
        SlotId::KeyManagement,
        SlotId::CardAuthentication,
    ];

    /// The key reference used in GENERAL AUTHENTICATE.
    pub fn key_reference(self) -> u8 {
        match self {
            SlotId::Authentication => 0x9A,
            SlotId::Signature => 0x9C,
            SlotId::KeyManagement => 0x9D,
            SlotId::CardAuthentication => 0x9E,
        }
    }

    /// The GET DATA tag of the slot's certificate object.
    pub fn certificate_tag(self) -> u32 {
        match self {
            SlotId::Authentication => 0x5FC105,
            SlotId::Signature => 0x5FC10A,
            SlotId::KeyManagement => 0x5FC10B,
            SlotId::CardAuthentication => 0x5FC101,
        }
    }

    /// The slot for a key reference.
    pub fn from_key_reference(reference: u8) -> Option<SlotId> {
        SlotId::ALL
            .into_iter()
            .find(|s| s.key_reference() == reference)
    }

    /// Parses `9a`, `9c`, `9d` or `9e` (any case).
    pub fn parse(text: &str) -> Option<SlotId> {
        let reference = u8::from_str_radix(text, 16).ok()?;
        SlotId::from_key_reference(reference)
    }
}

/// What goes into one slot.
#[derive(Debug, Default)]
pub struct Slot {
    /// The private key, if the slot can sign.
    pub key: Option<SlotKey>,
    /// The certificate (DER), if the slot exposes one; OpenSC only shows keys
    /// that have a certificate.
    pub certificate: Option<Vec<u8>>,
}

/// A chained command being collected.
#[derive(Debug)]
struct Chain {
    header: [u8; 3],
    data: Vec<u8>,
}

/// The card: persistent objects and reference data plus the volatile state
/// that a power cycle clears.
#[derive(Debug)]
pub struct PivCard {
    slots: BTreeMap<SlotId, Slot>,
    objects: BTreeMap<u32, Vec<u8>>,
    credentials: Credentials,
    pin_verified: bool,
    // The signature key (9C) needs the PIN right before each use.
    signature_pin_used: bool,
    chain: Option<Chain>,
    pending: Vec<u8>,
}

impl PivCard {
    /// Builds a card from its slots; `guid` becomes the CHUID GUID (and so
    /// OpenSC's token serial number).
    pub fn new(slots: BTreeMap<SlotId, Slot>, guid: [u8; 16], credentials: Credentials) -> PivCard {
        let mut objects = BTreeMap::new();
        objects.insert(0x7E, discovery_object());
        objects.insert(0x5FC102, chuid(&guid));
        objects.insert(0x5FC107, ccc(&guid));
        for (id, slot) in &slots {
            if let Some(cert) = &slot.certificate {
                objects.insert(id.certificate_tag(), certificate_object(cert));
            }
        }
        PivCard {
            slots,
            objects,
            credentials,
            pin_verified: false,
            signature_pin_used: false,
            chain: None,
            pending: Vec::new(),
        }
    }

    /// Clears everything a power-off, power-on or reset clears: PIN status,
    /// chains and pending response data. PIV is selected at power-on.
    pub fn power_cycle(&mut self) {
        self.pin_verified = false;
        self.signature_pin_used = false;
        self.chain = None;
        self.pending.clear();
    }

    /// Tries left for the PIN and the PUK.
    pub fn tries_left(&self) -> (u8, u8) {
        (
            self.credentials.pin_tries_left(),
            self.credentials.puk_tries_left(),
        )
    }

    /// Processes one command APDU and returns the response APDU bytes.
    pub fn process(&mut self, bytes: &[u8]) -> Vec<u8> {
        let response = self.respond(bytes);
        self.send(response)
    }

    fn respond(&mut self, bytes: &[u8]) -> Response {
        let command = match Command::parse(bytes) {
            Ok(c) => c,
            Err(status) => {
                self.chain = None;
                self.pending.clear();
                return status.into();
            }
        };
        if command.ins == 0xC0 && command.cla == 0x00 {
            return self.get_response(&command);
        }
        self.pending.clear();
        // Only the chaining bit is supported: no secure messaging, no
        // logical channels.
        if command.cla & !0x10 != 0 {
            self.chain = None;
            return Status::CLA_NOT_SUPPORTED.into();
        }
        let header = [command.ins, command.p1, command.p2];
        if command.is_chained() {
            return self.add_to_chain(header, command.data);
        }
        let data = match self.chain.take() {
            None => command.data.to_vec(),
            Some(chain) if chain.header == header => {
                let mut data = chain.data;
                data.extend_from_slice(command.data);
                data
            }
            Some(_) => return Status::LAST_COMMAND_EXPECTED.into(),
        };
        self.dispatch(&command, &data)
    }

    fn add_to_chain(&mut self, header: [u8; 3], data: &[u8]) -> Response {
        let chain = self.chain.get_or_insert_with(|| Chain {
            header,
            data: Vec::new(),
        });
        if chain.header != header {
            self.chain = None;
            return Status::LAST_COMMAND_EXPECTED.into();
        }
        if chain.data.len() + data.len() > MAX_CHAIN {
            self.chain = None;
            return Status::NOT_ENOUGH_MEMORY.into();
        }
        chain.data.extend_from_slice(data);
        Status::OK.into()
    }

    fn dispatch(&mut self, command: &Command<'_>, data: &[u8]) -> Response {
        match command.ins {
            0xA4 => self.select(command, data),
            0xCB => self.get_data(command, data),
            0x20 => self.verify(command, data),
            0x24 => self.change_reference_data(command, data),
            0x2C => self.reset_retry_counter(command, data),
            0x87 => self.general_authenticate(command, data),
            _ => Status::INS_NOT_SUPPORTED.into(),
        }
    }

    /// Sends at most 256 bytes, keeping the rest for GET RESPONSE.
    fn send(&mut self, response: Response) -> Vec<u8> {
        if response.data.len() <= MAX_RESPONSE_CHUNK {
            return response.to_bytes();
        }
        let mut data = response.data;
        self.pending = data.split_off(MAX_RESPONSE_CHUNK);
        Response {
            data,
            status: Status::bytes_remaining(self.pending.len()),
        }
        .to_bytes()
    }

    fn get_response(&mut self, command: &Command<'_>) -> Response {
        if command.p1 != 0 || command.p2 != 0 {
            return Status::WRONG_P1P2.into();
        }
        if self.pending.is_empty() {
            return Status::CONDITIONS_NOT_SATISFIED.into();
        }
        let n = command
            .le
            .unwrap_or(MAX_RESPONSE_CHUNK)
            .min(self.pending.len());
        let rest = self.pending.split_off(n);
        let data = std::mem::replace(&mut self.pending, rest);
        let status = if self.pending.is_empty() {
            Status::OK
        } else {
            Status::bytes_remaining(self.pending.len())
        };
        Response { data, status }
    }

    fn select(&mut self, command: &Command<'_>, aid: &[u8]) -> Response {
        if command.p1 != 0x04 {
            return Status::WRONG_P1P2.into();
        }
        // A right-truncated AID selects too (OpenSC sends 9 bytes).
        if aid.len() < 5 || !PIV_AID.starts_with(aid) {
            return Status::NOT_FOUND.into();
        }
        Response::ok(application_property_template())
    }

    fn get_data(&mut self, command: &Command<'_>, data: &[u8]) -> Response {
        if command.p1 != 0x3F || command.p2 != 0xFF {
            return Status::WRONG_P1P2.into();
        }
        let tag = match tlv::expect_single(data, 0x5C) {
            Ok(t) if (1..=3).contains(&t.len()) => t,
            _ => return Status::WRONG_DATA.into(),
        };
        let tag = tag.iter().fold(0u32, |acc, b| (acc << 8) | u32::from(*b));
        match self.objects.get(&tag) {
            Some(object) => Response::ok(object.clone()),
            None => Status::NOT_FOUND.into(),
        }
    }

    fn verify(&mut self, command: &Command<'_>, data: &[u8]) -> Response {
        if let Err(status) = pin_reference(command.p2) {
            return status.into();
        }
        match (command.p1, data) {
            // Reset the security status (log out).
            (0xFF, []) => {
                self.pin_verified = false;
                self.signature_pin_used = false;
                Status::OK.into()
            }
            // Query the security status.
            (0x00, []) => {
                if self.pin_verified {
                    Status::OK.into()
                } else {
                    self.status_for_tries(self.credentials.pin_tries_left())
                        .into()
                }
            }
            (0x00, pin) if pin.len() == 8 => match self.credentials.check(Reference::Pin, pin) {
                Check::Correct => {
                    self.pin_verified = true;
                    self.signature_pin_used = false;
                    Status::OK.into()
                }
                Check::Wrong(left) => {
                    self.pin_verified = false;
                    Status::verify_failed(left).into()
                }
                Check::Blocked => {
                    self.pin_verified = false;
                    Status::AUTH_BLOCKED.into()
                }
            },
            (0x00 | 0xFF, _) => Status::WRONG_DATA.into(),
            _ => Status::WRONG_P1P2.into(),
        }
    }

    fn status_for_tries(&self, left: u8) -> Status {
        if left == 0 {
            Status::AUTH_BLOCKED
        } else {
            Status::verify_failed(left)
        }
    }

    fn change_reference_data(&mut self, command: &Command<'_>, data: &[u8]) -> Response {
        if command.p1 != 0x00 {
            return Status::WRONG_P1P2.into();
        }
        let reference = match command.p2 {
            0x80 => Reference::Pin,
            0x81 => Reference::Puk,
            _ => return Status::REFERENCE_NOT_FOUND.into(),
        };
        let Some((old, new)) = split_pair(data) else {
            return Status::WRONG_DATA.into();
        };
        match self.credentials.check(reference, old) {
            Check::Correct => {
                self.credentials.set(reference, new);
                Status::OK.into()
            }
            Check::Wrong(left) => {
                if reference == Reference::Pin {
                    self.pin_verified = false;
                }
                Status::verify_failed(left).into()
            }
            Check::Blocked => Status::AUTH_BLOCKED.into(),
        }
    }

    fn reset_retry_counter(&mut self, command: &Command<'_>, data: &[u8]) -> Response {
        if command.p1 != 0x00 {
            return Status::WRONG_P1P2.into();
        }
        if let Err(status) = pin_reference(command.p2) {
            return status.into();
        }
        let Some((puk, new_pin)) = split_pair(data) else {
            return Status::WRONG_DATA.into();
        };
        match self.credentials.check(Reference::Puk, puk) {
            Check::Correct => {
                self.credentials.set(Reference::Pin, new_pin);
                self.pin_verified = false;
                Status::OK.into()
            }
            Check::Wrong(left) => Status::verify_failed(left).into(),
            Check::Blocked => Status::AUTH_BLOCKED.into(),
        }
    }

    fn general_authenticate(&mut self, command: &Command<'_>, data: &[u8]) -> Response {
        let items = match tlv::expect_single(data, 0x7C).and_then(tlv::parse_all) {
            Ok(items) => items,
            Err(_) => return Status::WRONG_DATA.into(),
        };
        let find = |tag: u32| items.iter().find(|(t, _)| *t == tag).map(|(_, v)| *v);
        let (algorithm, reference) = (command.p1, command.p2);

        if reference == 0x9B {
            // OpenSC's C_GenerateRandom asks the card management key for a
            // challenge; nothing is authenticated, the bytes are just random.
            let size = match algorithm {
                0x00 | 0x03 => 8,
                0x08 | 0x0A | 0x0C => 16,
                _ => return Status::WRONG_P1P2.into(),
            };
            return match (find(0x81), items.len()) {
                (Some([]), 1) => {
                    let mut challenge = vec![0u8; size];
                    OsRng.fill_bytes(&mut challenge);
                    Response::ok(tlv::encode(0x7C, &tlv::encode(0x81, &challenge)))
                }
                _ => Status::WRONG_DATA.into(),
            };
        }

        let Some(slot_id) = SlotId::from_key_reference(reference) else {
            return Status::REFERENCE_NOT_FOUND.into();
        };
        let Some(key) = self.slots.get(&slot_id).and_then(|s| s.key.as_ref()) else {
            return Status::REFERENCE_NOT_FOUND.into();
        };
        let input = match (find(0x82), find(0x81)) {
            (Some([]), Some(challenge)) if !challenge.is_empty() => challenge,
            _ => return Status::WRONG_DATA.into(),
        };
        let allowed = match slot_id {
            SlotId::CardAuthentication => true,
            SlotId::Signature => self.pin_verified && !self.signature_pin_used,
            SlotId::Authentication | SlotId::KeyManagement => self.pin_verified,
        };
        if !allowed {
            return Status::SECURITY_NOT_SATISFIED.into();
        }
        match key.operate(algorithm, input) {
            Ok(result) => {
                if slot_id == SlotId::Signature {
                    self.signature_pin_used = true;
                }
                Response::ok(tlv::encode(0x7C, &tlv::encode(0x82, &result)))
            }
            Err(OperationError::WrongAlgorithm) => Status::WRONG_P1P2.into(),
            Err(OperationError::BadInput) => Status::WRONG_DATA.into(),
        }
    }
}

/// Only the PIV application PIN exists on this card; the global PIN (00)
/// and pairing codes do not.
fn pin_reference(p2: u8) -> Result<(), Status> {
    if p2 == 0x80 {
        Ok(())
    } else {
        Err(Status::REFERENCE_NOT_FOUND)
    }
}

/// Splits 16 bytes into the presented reference data and a well-formed new value.
fn split_pair(data: &[u8]) -> Option<(&[u8], Padded)> {
    if data.len() != 16 {
        return None;
    }
    let (old, new) = data.split_at(8);
    Some((old, Padded::from_wire(new)?))
}

/// Reply to SELECT: the application property template (SP 800-73-4 table 3).
fn application_property_template() -> Vec<u8> {
    let mut body = Vec::new();
    tlv::put(&mut body, 0x4F, PIV_AID.get(5..).unwrap_or_default());
    tlv::put(&mut body, 0x79, &tlv::encode(0x4F, &PIV_AID[..5]));
    tlv::put(&mut body, 0x50, b"tessera virtual PIV");
    let mut algorithms = Vec::new();
    for alg in [0x05, 0x06, 0x07, 0x11, 0x14] {
        tlv::put(&mut algorithms, 0x80, &[alg]);
    }
    tlv::put(&mut algorithms, 0x06, &[0x00]);
    tlv::put(&mut body, 0xAC, &algorithms);
    tlv::encode(0x61, &body)
}

/// Discovery object: the PIV AID and a PIN usage policy of "application PIN
/// only". Its presence tells OpenSC that PIV is already selected.
fn discovery_object() -> Vec<u8> {
    let mut body = tlv::encode(0x4F, &PIV_AID);
    tlv::put(&mut body, 0x5F2F, &[0x40, 0x00]);
    tlv::encode(0x7E, &body)
}

fn chuid(guid: &[u8; 16]) -> Vec<u8> {
    let mut body = tlv::encode(0x30, &FASCN);
    tlv::put(&mut body, 0x34, guid);
    tlv::put(&mut body, 0x35, b"20991231");
    tlv::put(&mut body, 0x3E, &[]);
    tlv::put(&mut body, 0xFE, &[]);
    tlv::encode(0x53, &body)
}

/// Card capability container. F0 is the card identifier: GSC-RID, a
/// manufacturer byte, card type 02 (Java Card) and 14 bytes of card ID.
/// F3 stays empty: a CAC RID there turns OpenSC's dual CAC/PIV handling on.
fn ccc(guid: &[u8; 16]) -> Vec<u8> {
    let mut card_id = vec![0xA0, 0x00, 0x00, 0x01, 0x16, 0xFF, 0x02];
    card_id.extend_from_slice(guid.get(..14).unwrap_or_default());
    let mut body = tlv::encode(0xF0, &card_id);
    for (tag, value) in [
        (0xF1, &[0x21][..]),
        (0xF2, &[0x21]),
        (0xF3, &[]),
        (0xF4, &[0x00]),
        (0xF5, &[0x10]),
        (0xF6, &[]),
        (0xF7, &[]),
        (0xFA, &[]),
        (0xFB, &[]),
        (0xFC, &[]),
        (0xFD, &[]),
        (0xFE, &[]),
    ] {
        tlv::put(&mut body, tag, value);
    }
    tlv::encode(0x53, &body)
}

/// Certificate object: the DER certificate, CertInfo 00 (not compressed)
/// and an empty error detection code.
fn certificate_object(der: &[u8]) -> Vec<u8> {
    let mut body = tlv::encode(0x70, der);
    tlv::put(&mut body, 0x71, &[0x00]);
    tlv::put(&mut body, 0xFE, &[]);
    tlv::encode(0x53, &body)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::keys::tests::{p256_key, rsa_key};
    use ecdsa::signature::hazmat::PrehashVerifier;
    use rsa::traits::PublicKeyParts;
    use rsa::BigUint;

    const PIN: &[u8; 8] = b"123456\xFF\xFF";
    const PUK: &[u8; 8] = b"12345678";

    fn sw(resp: &[u8]) -> u16 {
        let n = resp.len();
        u16::from_be_bytes([resp[n - 2], resp[n - 1]])
    }

    fn data(resp: &[u8]) -> &[u8] {
        &resp[..resp.len() - 2]
    }

    fn apdu(header: [u8; 4], data: &[u8], le: Option<u8>) -> Vec<u8> {
        let mut out = header.to_vec();
        if !data.is_empty() {
            out.push(data.len() as u8);
            out.extend_from_slice(data);
        }
        out.extend(le);
        out
    }

    fn creds() -> Credentials {
        Credentials::new(
            Padded::from_value(b"123456").unwrap(),
            Padded::from_value(b"12345678").unwrap(),
            3,
            3,
            None,
        )
        .unwrap()
    }

    fn fake_cert(len: usize) -> Vec<u8> {
        tlv::encode(0x30, &vec![0x05; len])
    }

    fn card_with(slots: Vec<(SlotId, Slot)>) -> PivCard {
        PivCard::new(slots.into_iter().collect(), [0x11; 16], creds())
    }

    fn verify(card: &mut PivCard, pin: &[u8]) -> u16 {
        sw(&card.process(&apdu([0x00, 0x20, 0x00, 0x80], pin, None)))
    }

    /// Sends a command with chaining in 255-byte chunks, as OpenSC does.
    fn chained(card: &mut PivCard, header: [u8; 4], body: &[u8]) -> Vec<u8> {
        let chunks: Vec<&[u8]> = body.chunks(255).collect();
        for chunk in &chunks[..chunks.len() - 1] {
            let mut h = header;
            h[0] |= 0x10;
            assert_eq!(sw(&card.process(&apdu(h, chunk, None))), 0x9000);
        }
        let mut resp = card.process(&apdu(header, chunks[chunks.len() - 1], Some(0)));
        let mut out = Vec::new();
        loop {
            out.extend_from_slice(data(&resp));
            match sw(&resp) {
                0x9000 => return out,
                s if s >> 8 == 0x61 => {
                    resp = card.process(&[0x00, 0xC0, 0x00, 0x00, s as u8]);
                }
                s => panic!("status {s:04X}"),
            }
        }
    }

    fn get_data(card: &mut PivCard, tag: &[u8]) -> (Vec<u8>, u16) {
        let mut req = vec![0x5C, tag.len() as u8];
        req.extend_from_slice(tag);
        let mut resp = card.process(&apdu([0x00, 0xCB, 0x3F, 0xFF], &req, Some(0)));
        let mut out = Vec::new();
        loop {
            out.extend_from_slice(data(&resp));
            match sw(&resp) {
                s if s >> 8 == 0x61 => {
                    assert_eq!(data(&resp).len(), 256);
                    resp = card.process(&[0x00, 0xC0, 0x00, 0x00, s as u8]);
                }
                s => return (out, s),
            }
        }
    }

    #[test]
    fn atr_checksum_is_valid() {
        assert_eq!(ATR[1..].iter().fold(0u8, |a, b| a ^ b), 0);
    }

    #[test]
    fn select_returns_application_property_template() {
        let mut card = card_with(vec![]);
        let resp = card.process(&apdu([0x00, 0xA4, 0x04, 0x00], &PIV_AID[..9], Some(0)));
        assert_eq!(sw(&resp), 0x9000);
        let body = tlv::expect_single(data(&resp), 0x61).unwrap();
        let items = tlv::parse_all(body).unwrap();
        assert_eq!(items[0], (0x4F, &[0x00, 0x00, 0x10, 0x00, 0x01, 0x00][..]));
        let other = [0xA0, 0x00, 0x00, 0x00, 0x03, 0x10, 0x10];
        let resp = card.process(&apdu([0x00, 0xA4, 0x04, 0x00], &other, Some(0)));
        assert_eq!(sw(&resp), 0x6A82);
    }

    #[test]
    fn discovery_object_is_as_opensc_expects() {
        let mut card = card_with(vec![]);
        let (obj, status) = get_data(&mut card, &[0x7E]);
        assert_eq!(status, 0x9000);
        assert_eq!(
            obj,
            [
                0x7E, 0x12, 0x4F, 0x0B, 0xA0, 0x00, 0x00, 0x03, 0x08, 0x00, 0x00, 0x10, 0x00, 0x01,
                0x00, 0x5F, 0x2F, 0x02, 0x40, 0x00
            ]
        );
    }

    #[test]
    fn chuid_carries_the_guid() {
        let mut card = card_with(vec![]);
        let (obj, status) = get_data(&mut card, &[0x5F, 0xC1, 0x02]);
        assert_eq!(status, 0x9000);
        let body = tlv::expect_single(&obj, 0x53).unwrap();
        let items = tlv::parse_all(body).unwrap();
        assert!(items.contains(&(0x34, &[0x11; 16][..])));
        assert_eq!(items[0].0, 0x30);
        assert_eq!(items[0].1.len(), 25);
    }

    #[test]
    fn long_certificate_comes_back_through_get_response() {
        let cert = fake_cert(1500);
        let mut card = card_with(vec![(
            SlotId::Authentication,
            Slot {
                key: None,
                certificate: Some(cert.clone()),
            },
        )]);
        let (obj, status) = get_data(&mut card, &[0x5F, 0xC1, 0x05]);
        assert_eq!(status, 0x9000);
        let body = tlv::expect_single(&obj, 0x53).unwrap();
        let items = tlv::parse_all(body).unwrap();
        assert_eq!(items[0], (0x70, &cert[..]));
        assert_eq!(items[1], (0x71, &[0x00][..]));
        assert_eq!(items[2], (0xFE, &[][..]));
    }

    #[test]
    fn absent_objects_and_bad_get_data() {
        let mut card = card_with(vec![]);
        assert_eq!(get_data(&mut card, &[0x5F, 0xC1, 0x0A]).1, 0x6A82);
        assert_eq!(get_data(&mut card, &[0x5F, 0xC1, 0x0C]).1, 0x6A82);
        let bad = card.process(&apdu([0x00, 0xCB, 0x3F, 0xFF], &[0x5C, 0x05, 1], Some(0)));
        assert_eq!(sw(&bad), 0x6A80);
        let bad = card.process(&apdu([0x00, 0xCB, 0x3F, 0xFF], &[0x5C, 0x00], Some(0)));
        assert_eq!(sw(&bad), 0x6A80);
        let bad = card.process(&apdu(
            [0x00, 0xCB, 0x00, 0x00],
            &[0x5C, 0x01, 0x7E],
            Some(0),
        ));
        assert_eq!(sw(&bad), 0x6A86);
    }

    #[test]
    fn get_response_without_pending_data_fails() {
        let mut card = card_with(vec![]);
        assert_eq!(sw(&card.process(&[0x00, 0xC0, 0x00, 0x00, 0x00])), 0x6985);
    }

    #[test]
    fn unknown_instruction_and_class() {
        let mut card = card_with(vec![]);
        assert_eq!(sw(&card.process(&[0x00, 0x47, 0x00, 0x9A])), 0x6D00);
        assert_eq!(sw(&card.process(&[0x80, 0xCB, 0x3F, 0xFF])), 0x6E00);
        assert_eq!(sw(&card.process(&[0x0C, 0xCB, 0x3F, 0xFF])), 0x6E00);
        assert_eq!(sw(&card.process(&[0x00, 0xCB])), 0x6700);
    }

    #[test]
    fn verify_counts_down_locks_and_reports_tries() {
        let mut card = card_with(vec![]);
        assert_eq!(verify(&mut card, &[]), 0x63C3);
        assert_eq!(verify(&mut card, b"000000\xFF\xFF"), 0x63C2);
        assert_eq!(verify(&mut card, PIN), 0x9000);
        assert_eq!(verify(&mut card, &[]), 0x9000);
        assert_eq!(verify(&mut card, b"000000\xFF\xFF"), 0x63C2);
        assert_eq!(verify(&mut card, &[]), 0x63C2);
        assert_eq!(verify(&mut card, b"000000\xFF\xFF"), 0x63C1);
        assert_eq!(verify(&mut card, b"000000\xFF\xFF"), 0x63C0);
        assert_eq!(verify(&mut card, &[]), 0x6983);
        assert_eq!(verify(&mut card, PIN), 0x6983);
        assert_eq!(card.tries_left(), (0, 3));
    }

    #[test]
    fn verify_rejects_bad_format_and_references() {
        let mut card = card_with(vec![]);
        assert_eq!(verify(&mut card, b"1234"), 0x6A80);
        let r = card.process(&apdu([0x00, 0x20, 0x00, 0x00], PIN, None));
        assert_eq!(sw(&r), 0x6A88);
        let r = card.process(&apdu([0x00, 0x20, 0x01, 0x80], PIN, None));
        assert_eq!(sw(&r), 0x6A86);
        assert_eq!(card.tries_left(), (3, 3));
    }

    #[test]
    fn logout_and_power_cycle_clear_pin_status_but_select_does_not() {
        let mut card = card_with(vec![]);
        assert_eq!(verify(&mut card, PIN), 0x9000);
        card.process(&apdu([0x00, 0xA4, 0x04, 0x00], &PIV_AID[..9], Some(0)));
        assert_eq!(verify(&mut card, &[]), 0x9000);
        assert_eq!(sw(&card.process(&[0x00, 0x20, 0xFF, 0x80])), 0x9000);
        assert_eq!(verify(&mut card, &[]), 0x63C3);
        assert_eq!(verify(&mut card, PIN), 0x9000);
        card.power_cycle();
        assert_eq!(verify(&mut card, &[]), 0x63C3);
    }

    #[test]
    fn change_pin_needs_the_old_pin() {
        let mut card = card_with(vec![]);
        let mut data = b"000000\xFF\xFF".to_vec();
        data.extend_from_slice(b"654321\xFF\xFF");
        let r = card.process(&apdu([0x00, 0x24, 0x00, 0x80], &data, None));
        assert_eq!(sw(&r), 0x63C2);
        let mut data = PIN.to_vec();
        data.extend_from_slice(b"654321\xFF\xFF");
        let r = card.process(&apdu([0x00, 0x24, 0x00, 0x80], &data, None));
        assert_eq!(sw(&r), 0x9000);
        assert_eq!(card.tries_left(), (3, 3));
        assert_eq!(verify(&mut card, PIN), 0x63C2);
        assert_eq!(verify(&mut card, b"654321\xFF\xFF"), 0x9000);
        let mut data = b"654321\xFF\xFF".to_vec();
        data.extend_from_slice(b"12\xFF\xFF\xFF\xFF\xFF\xFF");
        let r = card.process(&apdu([0x00, 0x24, 0x00, 0x80], &data, None));
        assert_eq!(sw(&r), 0x6A80);
    }

    #[test]
    fn puk_unblocks_pin_and_wrong_puk_counts_down() {
        let mut card = card_with(vec![]);
        for _ in 0..3 {
            verify(&mut card, b"000000\xFF\xFF");
        }
        assert_eq!(verify(&mut card, &[]), 0x6983);
        let mut data = b"00000000".to_vec();
        data.extend_from_slice(b"111111\xFF\xFF");
        let r = card.process(&apdu([0x00, 0x2C, 0x00, 0x80], &data, None));
        assert_eq!(sw(&r), 0x63C2);
        let mut data = PUK.to_vec();
        data.extend_from_slice(b"111111\xFF\xFF");
        let r = card.process(&apdu([0x00, 0x2C, 0x00, 0x80], &data, None));
        assert_eq!(sw(&r), 0x9000);
        assert_eq!(card.tries_left(), (3, 3));
        assert_eq!(verify(&mut card, b"111111\xFF\xFF"), 0x9000);
    }

    #[test]
    fn blocked_puk_stays_blocked() {
        let mut card = card_with(vec![]);
        let mut data = b"00000000".to_vec();
        data.extend_from_slice(b"111111\xFF\xFF");
        for expected in [0x63C2, 0x63C1, 0x63C0, 0x6983] {
            let r = card.process(&apdu([0x00, 0x2C, 0x00, 0x80], &data, None));
            assert_eq!(sw(&r), expected);
        }
        let mut data = PUK.to_vec();
        data.extend_from_slice(b"111111\xFF\xFF");
        let r = card.process(&apdu([0x00, 0x2C, 0x00, 0x80], &data, None));
        assert_eq!(sw(&r), 0x6983);
    }

    fn rsa_template(block: &[u8]) -> Vec<u8> {
        let mut inner = tlv::encode(0x82, &[]);
        tlv::put(&mut inner, 0x81, block);
        tlv::encode(0x7C, &inner)
    }

    #[test]
    fn rsa_2048_sign_with_chaining_needs_pin() {
        let key = rsa_key(2048);
        let mut card = card_with(vec![(
            SlotId::Authentication,
            Slot {
                key: Some(SlotKey::Rsa(Box::new(key.clone()))),
                certificate: None,
            },
        )]);
        let mut block = vec![0xFFu8; 256];
        block[0] = 0x00;
        block[1] = 0x01;
        block[200] = 0x00;
        let template = rsa_template(&block);
        assert_eq!(&template[..4], &[0x7C, 0x82, 0x01, 0x06]);

        let chunks: Vec<&[u8]> = template.chunks(255).collect();
        let r = card.process(&apdu([0x10, 0x87, 0x07, 0x9A], chunks[0], None));
        assert_eq!(sw(&r), 0x9000);
        let r = card.process(&apdu([0x00, 0x87, 0x07, 0x9A], chunks[1], Some(0)));
        assert_eq!(sw(&r), 0x6982);

        assert_eq!(verify(&mut card, PIN), 0x9000);
        let out = chained(&mut card, [0x00, 0x87, 0x07, 0x9A], &template);
        assert_eq!(&out[..4], &[0x7C, 0x82, 0x01, 0x04]);
        let sig = tlv::expect_single(tlv::expect_single(&out, 0x7C).unwrap(), 0x82).unwrap();
        let recovered = BigUint::from_bytes_be(sig).modpow(key.e(), key.n());
        assert_eq!(recovered, BigUint::from_bytes_be(&block));

        // Wrong algorithm byte for the key.
        let out = card.process(&apdu(
            [0x00, 0x87, 0x11, 0x9A],
            &rsa_template(&[1; 32]),
            None,
        ));
        assert_eq!(sw(&out), 0x6A86);
    }

    #[test]
    fn broken_chain_is_refused() {
        let mut card = card_with(vec![]);
        let r = card.process(&apdu([0x10, 0x87, 0x07, 0x9A], &[0x7C, 0x01], None));
        assert_eq!(sw(&r), 0x9000);
        let r = card.process(&apdu([0x00, 0x87, 0x07, 0x9C], &[0x00], None));
        assert_eq!(sw(&r), 0x6883);
        let r = card.process(&apdu([0x10, 0x87, 0x07, 0x9A], &[0x7C, 0x01], None));
        assert_eq!(sw(&r), 0x9000);
        let r = card.process(&apdu([0x10, 0x87, 0x07, 0x9D], &[0x7C, 0x01], None));
        assert_eq!(sw(&r), 0x6883);
        for _ in 0..16 {
            card.process(&apdu([0x10, 0x87, 0x07, 0x9A], &[0; 255], None));
        }
        let r = card.process(&apdu([0x10, 0x87, 0x07, 0x9A], &[0; 255], None));
        assert_eq!(sw(&r), 0x6A84);
    }

    #[test]
    fn p256_signature_key_needs_pin_before_each_use() {
        let key = p256_key();
        let mut card = card_with(vec![(
            SlotId::Signature,
            Slot {
                key: Some(SlotKey::P256(key.clone())),
                certificate: None,
            },
        )]);
        let hash = [0x3C; 32];
        let mut inner = tlv::encode(0x82, &[]);
        tlv::put(&mut inner, 0x81, &hash);
        let cmd = apdu(
            [0x00, 0x87, 0x11, 0x9C],
            &tlv::encode(0x7C, &inner),
            Some(0),
        );
        assert_eq!(&cmd[5..9], &[0x7C, 0x24, 0x82, 0x00]);

        assert_eq!(verify(&mut card, PIN), 0x9000);
        let r = card.process(&cmd);
        assert_eq!(sw(&r), 0x9000);
        let der = tlv::expect_single(tlv::expect_single(data(&r), 0x7C).unwrap(), 0x82).unwrap();
        let sig = p256::ecdsa::Signature::from_der(der).unwrap();
        p256::ecdsa::VerifyingKey::from(&key)
            .verify_prehash(&hash, &sig)
            .unwrap();
        assert_eq!(sw(&card.process(&cmd)), 0x6982);
        assert_eq!(verify(&mut card, PIN), 0x9000);
        assert_eq!(sw(&card.process(&cmd)), 0x9000);
    }

    #[test]
    fn card_authentication_key_needs_no_pin() {
        let mut card = card_with(vec![(
            SlotId::CardAuthentication,
            Slot {
                key: Some(SlotKey::P256(p256_key())),
                certificate: None,
            },
        )]);
        let mut inner = tlv::encode(0x82, &[]);
        tlv::put(&mut inner, 0x81, &[1; 32]);
        let r = card.process(&apdu(
            [0x00, 0x87, 0x11, 0x9E],
            &tlv::encode(0x7C, &inner),
            Some(0),
        ));
        assert_eq!(sw(&r), 0x9000);
        let r = card.process(&apdu(
            [0x00, 0x87, 0x11, 0x9D],
            &tlv::encode(0x7C, &inner),
            Some(0),
        ));
        assert_eq!(sw(&r), 0x6A88);
    }

    #[test]
    fn random_challenge_for_generate_random() {
        let mut card = card_with(vec![]);
        let r = card.process(&[0x00, 0x87, 0x00, 0x9B, 0x04, 0x7C, 0x02, 0x81, 0x00, 0x00]);
        assert_eq!(sw(&r), 0x9000);
        assert_eq!(&data(&r)[..4], &[0x7C, 0x0A, 0x81, 0x08]);
        assert_eq!(data(&r).len(), 12);
    }

    #[test]
    fn malformed_general_authenticate_is_wrong_data() {
        let mut card = card_with(vec![(
            SlotId::Authentication,
            Slot {
                key: Some(SlotKey::P256(p256_key())),
                certificate: None,
            },
        )]);
        verify(&mut card, PIN);
        for body in [
            &[0x7C, 0x05, 0x82, 0x00][..],
            &[0x7D, 0x02, 0x82, 0x00],
            &[0x7C, 0x02, 0x82, 0x00],
            &[0x7C, 0x04, 0x82, 0x00, 0x81, 0x00],
            &[0x7C, 0x03, 0x81, 0x01, 0x01],
        ] {
            let r = card.process(&apdu([0x00, 0x87, 0x11, 0x9A], body, Some(0)));
            assert_eq!(sw(&r), 0x6A80, "{body:02X?}");
        }
    }

    #[test]
    fn random_apdus_never_panic() {
        let mut card = card_with(vec![(
            SlotId::Authentication,
            Slot {
                key: Some(SlotKey::P256(p256_key())),
                certificate: Some(fake_cert(600)),
            },
        )]);
        let interesting = [
            0x00, 0x10, 0xA4, 0xCB, 0x20, 0x24, 0x2C, 0x87, 0xC0, 0x7C, 0x81, 0x82,
        ];
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..50_000 {
            let len = (next() % 24) as usize;
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    let r = next();
                    if r % 3 == 0 {
                        interesting[(r >> 8) as usize % interesting.len()]
                    } else {
                        (r >> 16) as u8
                    }
                })
                .collect();
            let resp = card.process(&bytes);
            assert!(resp.len() >= 2);
        }
    }
}
