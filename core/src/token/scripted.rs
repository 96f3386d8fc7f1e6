//! A fake token for in-process tests: a PIN with a retry counter that
//! really blocks, a PUK, and Ed25519 keys that really sign, so the login
//! flow runs as a normal user without SoftHSM or a card.

use std::cell::RefCell;

use cryptoki::context::Function;
use cryptoki::error::{Error as CryptokiError, RvError};
use cryptoki::mechanism::Mechanism;
use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, KeyPair};
use tessera_ipc::Secret;
use tessera_mappers::PublicKey;

use super::backend::{SigningSession, TokenBackend};
use super::error::{TokenError, UnblockError};
use super::identity::{hex_id, TokenCertificate, TokenIdentity, TokenPublicKey};

/// PIN tries of a fresh card, as on the PIV virtual card.
pub(crate) const PIN_TRIES: u32 = 3;
/// PUK tries of a fresh card.
pub(crate) const PUK_TRIES: u32 = 3;

fn failed(rv: RvError, function: Function) -> TokenError {
    TokenError::Call(CryptokiError::Pkcs11(rv, function))
}

/// One card's mutable state.
struct Card {
    identity: TokenIdentity,
    pin: String,
    puk: String,
    pin_tries_left: u32,
    puk_tries_left: u32,
    keys: Vec<(Vec<u8>, Ed25519KeyPair)>,
    certificates: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Card {
    /// The identity with PIN flags as CK_TOKEN_INFO reports them now.
    fn identity(&self) -> TokenIdentity {
        TokenIdentity {
            pin_locked: self.pin_tries_left == 0,
            pin_final_try: self.pin_tries_left == 1,
            pin_count_low: (1..PIN_TRIES).contains(&self.pin_tries_left),
            so_pin_locked: self.puk_tries_left == 0,
            so_pin_final_try: self.puk_tries_left == 1,
            ..self.identity.clone()
        }
    }

    /// C_Login as the user: a wrong PIN spends a try, a right one restores them.
    fn check_pin(&mut self, pin: &Secret) -> Result<(), TokenError> {
        if self.pin_tries_left == 0 {
            return Err(failed(RvError::PinLocked, Function::Login));
        }
        if pin.expose().as_str() == self.pin {
            self.pin_tries_left = PIN_TRIES;
            Ok(())
        } else {
            self.pin_tries_left -= 1;
            Err(failed(
                if self.pin_tries_left == 0 {
                    RvError::PinLocked
                } else {
                    RvError::PinIncorrect
                },
                Function::Login,
            ))
        }
    }
}

/// Cards in slots 0, 1, …, each holding Ed25519 keys and the certificates
/// tests store for them.
pub(crate) struct ScriptedTokens {
    cards: Vec<RefCell<Card>>,
    /// Every token call, in order, for tests that check what reached a card.
    calls: RefCell<Vec<String>>,
}

impl ScriptedTokens {
    /// No cards yet.
    pub(crate) fn new() -> Self {
        Self {
            cards: Vec::new(),
            calls: RefCell::new(Vec::new()),
        }
    }

    /// Adds a card labelled `label` with `pin`, `puk` and one key per id.
    pub(crate) fn with_card(mut self, label: &str, pin: &str, puk: &str, key_ids: &[u8]) -> Self {
        let random = SystemRandom::new();
        let keys = key_ids
            .iter()
            .map(|id| {
                let pkcs8 = Ed25519KeyPair::generate_pkcs8(&random).expect("Ed25519 key");
                let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).expect("Ed25519 key");
                (vec![*id], pair)
            })
            .collect();
        let slot_id = self.cards.len() as u64;
        self.cards.push(RefCell::new(Card {
            identity: TokenIdentity {
                slot_id,
                slot_description: format!("Scripted reader {slot_id}"),
                label: label.to_owned(),
                manufacturer: "tessera".to_owned(),
                model: "scripted".to_owned(),
                serial: format!("{slot_id:016}"),
                pin_locked: false,
                pin_final_try: false,
                pin_count_low: false,
                protected_authentication_path: false,
                so_pin_locked: false,
                so_pin_final_try: false,
            },
            pin: pin.to_owned(),
            puk: puk.to_owned(),
            pin_tries_left: PIN_TRIES,
            puk_tries_left: PUK_TRIES,
            keys,
            certificates: Vec::new(),
        }));
        self
    }

    /// Stores certificate `der` with CKA_ID `id` on the card in `slot`.
    pub(crate) fn store_certificate(&self, slot: usize, id: u8, der: Vec<u8>) {
        self.cards[slot]
            .borrow_mut()
            .certificates
            .push((vec![id], der));
    }

    /// The DER SubjectPublicKeyInfo of key `id` on the card in `slot`,
    /// for a CA to certify.
    pub(crate) fn spki(&self, slot: usize, id: u8) -> Vec<u8> {
        // id-Ed25519 AlgorithmIdentifier, then the 32-byte key as a BIT STRING.
        const PREFIX: [u8; 12] = [
            0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
        ];
        let card = self.cards[slot].borrow();
        let (_, pair) = card
            .keys
            .iter()
            .find(|(key_id, _)| key_id.as_slice() == [id])
            .expect("no such key");
        [&PREFIX[..], pair.public_key().as_ref()].concat()
    }

    /// Sets the PIN tries left on the card in `slot` (0 locks it).
    pub(crate) fn set_pin_tries(&self, slot: usize, tries: u32) {
        self.cards[slot].borrow_mut().pin_tries_left = tries;
    }

    /// Sets the PUK tries left on the card in `slot` (0 locks it).
    pub(crate) fn set_puk_tries(&self, slot: usize, tries: u32) {
        self.cards[slot].borrow_mut().puk_tries_left = tries;
    }

    /// The PIN tries left on the card in `slot`.
    pub(crate) fn pin_tries(&self, slot: usize) -> u32 {
        self.cards[slot].borrow().pin_tries_left
    }

    /// The card's current PIN.
    pub(crate) fn pin(&self, slot: usize) -> String {
        self.cards[slot].borrow().pin.clone()
    }

    /// The card in `slot` as the token list shows it now.
    pub(crate) fn identity(&self, slot: usize) -> TokenIdentity {
        self.cards[slot].borrow().identity()
    }

    /// The public half of key `id` on the card in `slot`.
    pub(crate) fn public_key(&self, slot: usize, id: u8) -> PublicKey {
        let card = self.cards[slot].borrow();
        let (_, pair) = card
            .keys
            .iter()
            .find(|(key_id, _)| key_id.as_slice() == [id])
            .expect("no such key");
        PublicKey::ed25519(pair.public_key().as_ref()).expect("Ed25519 public key")
    }

    /// The calls made so far, e.g. `"C_Login 0"`.
    pub(crate) fn calls(&self) -> Vec<String> {
        self.calls.borrow().clone()
    }

    fn card(&self, token: &TokenIdentity) -> Result<&RefCell<Card>, TokenError> {
        usize::try_from(token.slot_id)
            .ok()
            .and_then(|slot| self.cards.get(slot))
            .ok_or_else(|| failed(RvError::SlotIdInvalid, Function::GetTokenInfo))
    }

    fn record(&self, call: &str, token: &TokenIdentity) {
        self.calls
            .borrow_mut()
            .push(format!("{call} {}", token.slot_id));
    }
}

impl TokenBackend for ScriptedTokens {
    fn tokens(&self) -> Result<Vec<TokenIdentity>, TokenError> {
        Ok(self
            .cards
            .iter()
            .map(|card| card.borrow().identity())
            .collect())
    }

    fn refresh(&self, token: &TokenIdentity) -> Result<TokenIdentity, TokenError> {
        self.record("C_GetTokenInfo", token);
        Ok(self.card(token)?.borrow().identity())
    }

    fn certificates(&self, token: &TokenIdentity) -> Result<Vec<TokenCertificate>, TokenError> {
        let card = self.card(token)?.borrow();
        Ok(card
            .certificates
            .iter()
            .map(|(id, der)| TokenCertificate {
                token: card.identity(),
                id: id.clone(),
                label: format!("certificate {}", hex_id(id)),
                der: der.clone().into(),
            })
            .collect())
    }

    fn public_keys(&self, token: &TokenIdentity) -> Result<Vec<TokenPublicKey>, TokenError> {
        let card = self.card(token)?.borrow();
        Ok(card
            .keys
            .iter()
            .map(|(id, pair)| TokenPublicKey {
                token: card.identity(),
                id: id.clone(),
                label: format!("key {}", hex_id(id)),
                key: PublicKey::ed25519(pair.public_key().as_ref()).map_err(|e| e.to_string()),
            })
            .collect())
    }

    fn pin_length_range(&self, token: &TokenIdentity) -> Result<(usize, usize), TokenError> {
        self.card(token).map(|_| (6, 8))
    }

    fn set_pin(&self, token: &TokenIdentity, old: &Secret, new: &Secret) -> Result<(), TokenError> {
        self.record("C_SetPIN", token);
        let mut card = self.card(token)?.borrow_mut();
        card.check_pin(old)?;
        card.pin = new.expose().to_string();
        Ok(())
    }

    fn unblock_pin(
        &self,
        token: &TokenIdentity,
        puk: &Secret,
        new: &Secret,
    ) -> Result<(), UnblockError> {
        self.record("C_InitPIN", token);
        let mut card = self
            .card(token)
            .map_err(UnblockError::Session)?
            .borrow_mut();
        if card.puk_tries_left == 0 {
            return Err(UnblockError::Puk(failed(
                RvError::PinLocked,
                Function::Login,
            )));
        }
        if puk.expose().as_str() != card.puk {
            card.puk_tries_left -= 1;
            let rv = if card.puk_tries_left == 0 {
                RvError::PinLocked
            } else {
                RvError::PinIncorrect
            };
            return Err(UnblockError::Puk(failed(rv, Function::Login)));
        }
        card.puk_tries_left = PUK_TRIES;
        card.pin = new.expose().to_string();
        card.pin_tries_left = PIN_TRIES;
        Ok(())
    }

    fn open_session<'s>(
        &'s self,
        token: &TokenIdentity,
    ) -> Result<Box<dyn SigningSession + 's>, TokenError> {
        Ok(Box::new(ScriptedSession {
            tokens: self,
            card: self.card(token)?,
            token: token.clone(),
            logged_in: false,
        }))
    }
}

struct ScriptedSession<'s> {
    tokens: &'s ScriptedTokens,
    card: &'s RefCell<Card>,
    token: TokenIdentity,
    logged_in: bool,
}

impl SigningSession for ScriptedSession<'_> {
    fn login(&mut self, pin: Option<&Secret>) -> Result<(), TokenError> {
        self.tokens.record("C_Login", &self.token);
        let pin = pin.ok_or_else(|| failed(RvError::FunctionNotSupported, Function::Login))?;
        self.card.borrow_mut().check_pin(pin)?;
        self.logged_in = true;
        Ok(())
    }

    fn sign(
        &mut self,
        key_id: &[u8],
        mechanism: &Mechanism<'_>,
        data: &[u8],
    ) -> Result<Vec<u8>, TokenError> {
        self.tokens.record("C_Sign", &self.token);
        if !self.logged_in {
            return Err(failed(RvError::UserNotLoggedIn, Function::Sign));
        }
        if !matches!(mechanism, Mechanism::Eddsa(_)) {
            return Err(failed(RvError::MechanismInvalid, Function::SignInit));
        }
        let card = self.card.borrow();
        let (_, pair) = card
            .keys
            .iter()
            .find(|(id, _)| id.as_slice() == key_id)
            .ok_or_else(|| TokenError::NoPrivateKey(hex_id(key_id)))?;
        Ok(pair.sign(data).as_ref().to_vec())
    }
}
