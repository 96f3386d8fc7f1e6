//! The PKCS#11 implementation of [`TokenBackend`]: loading the module,
//! listing tokens and certificates, logging in and signing, through cryptoki.

use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Function, Pkcs11};
use cryptoki::error::{Error as CryptokiError, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{
    Attribute, AttributeInfo, AttributeType, CertificateType, KeyType, ObjectClass, ObjectHandle,
};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::{Slot, TokenInfo};
use cryptoki::types::AuthPin;
use rustls_pki_types::CertificateDer;
use tessera_ipc::Secret;
use tessera_mappers::PublicKey;

use const_oid::ObjectIdentifier;
use der::Decode;

use super::backend::{SigningSession, TokenBackend};
use super::error::{TokenError, UnblockError};
use super::identity::{
    hex_id, TokenCertificate, TokenIdentity, TokenPublicKey, MAX_CERTIFICATES_PER_TOKEN,
    MAX_PUBLIC_KEY_ATTRIBUTE,
};
use crate::filetrust;
use tessera_mappers::MAX_CERTIFICATE_SIZE;

/// Builds a key from a public-key object's attributes.
fn public_key_from_attributes(attributes: Vec<Attribute>) -> Result<PublicKey, String> {
    let mut key_type = None;
    let (mut modulus, mut exponent, mut params, mut point) = (None, None, None, None);
    for attribute in attributes {
        match attribute {
            Attribute::KeyType(kind) => key_type = Some(kind),
            Attribute::Modulus(value) => modulus = Some(value),
            Attribute::PublicExponent(value) => exponent = Some(value),
            Attribute::EcParams(value) => params = Some(value),
            Attribute::EcPoint(value) => point = Some(value),
            _ => {}
        }
    }
    // CKA_EC_POINT is a DER OCTET STRING; some modules return the bare point.
    let unwrap_point = |point: Vec<u8>| {
        der::asn1::OctetString::from_der(&point)
            .map(|octets| octets.as_bytes().to_vec())
            .unwrap_or(point)
    };
    match key_type {
        Some(KeyType::RSA) => match (modulus, exponent) {
            (Some(modulus), Some(exponent)) => {
                PublicKey::rsa(&modulus, &exponent).map_err(|e| e.to_string())
            }
            _ => Err("RSA public key without modulus or exponent".to_owned()),
        },
        Some(KeyType::EC) => {
            let curve = params
                .as_deref()
                .and_then(|params| ObjectIdentifier::from_der(params).ok())
                .ok_or("EC public key without a named curve")?;
            let point = point
                .map(unwrap_point)
                .ok_or("EC public key without a point")?;
            PublicKey::ec(curve, &point).map_err(|e| e.to_string())
        }
        Some(KeyType::EC_EDWARDS) => {
            let point = point
                .map(unwrap_point)
                .ok_or("EdDSA public key without a point")?;
            PublicKey::ed25519(&point).map_err(|e| e.to_string())
        }
        Some(other) => Err(format!("unsupported key type {other}")),
        None => Err("public key without CKA_KEY_TYPE".to_owned()),
    }
}

/// The identity CK_TOKEN_INFO gives the token in slot `slot_id`; the slot
/// description is left empty for the caller to fill.
fn token_identity(slot_id: u64, info: &TokenInfo) -> TokenIdentity {
    TokenIdentity {
        slot_id,
        slot_description: String::new(),
        label: info.label().trim_end().to_owned(),
        manufacturer: info.manufacturer_id().trim_end().to_owned(),
        model: info.model().trim_end().to_owned(),
        serial: info.serial_number().trim_end().to_owned(),
        pin_locked: info.user_pin_locked(),
        pin_final_try: info.user_pin_final_try(),
        pin_count_low: info.user_pin_count_low(),
        protected_authentication_path: info.protected_authentication_path(),
        so_pin_locked: info.so_pin_locked(),
        so_pin_final_try: info.so_pin_final_try(),
    }
}

/// A loaded and initialised PKCS#11 module.
#[derive(Debug)]
pub struct Pkcs11Module {
    context: Option<Pkcs11>,
    path: PathBuf,
    finalize_on_drop: bool,
}

impl Pkcs11Module {
    /// Loads the module at `path` after checking that only root can have written it.
    pub fn load(path: &Path) -> Result<Self, TokenError> {
        filetrust::check_trusted_path(path)?;
        let load_error = |source| TokenError::Load {
            path: path.to_owned(),
            source,
        };
        let context = Pkcs11::new(path).map_err(load_error)?;
        let finalize_on_drop =
            match context.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
                Ok(()) => true,
                // Another user of the module in this process (another PAM module,
                // the host application) initialised it; finalising would pull
                // the rug from under them.
                Err(CryptokiError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => false,
                Err(source) => return Err(load_error(source)),
            };
        Ok(Self {
            context: Some(context),
            path: path.to_owned(),
            finalize_on_drop,
        })
    }

    fn context(&self) -> Result<&Pkcs11, TokenError> {
        self.context
            .as_ref()
            .ok_or(TokenError::Call(CryptokiError::Pkcs11(
                RvError::CryptokiNotInitialized,
                Function::Initialize,
            )))
    }

    /// The module's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every token present in any slot.
    pub fn tokens(&self) -> Result<Vec<TokenIdentity>, TokenError> {
        let context = self.context()?;
        let mut tokens = Vec::new();
        for slot in context.get_slots_with_token()? {
            let identity = context
                .get_token_info(slot)
                .map_err(TokenError::from)
                .and_then(|info| {
                    // SoftHSM and some PKCS#15 drivers expose an empty,
                    // uninitialised token; it holds nothing to log in with.
                    if !info.token_initialized() {
                        return Ok(None);
                    }
                    let slot_info = context.get_slot_info(slot)?;
                    Ok(Some(TokenIdentity {
                        slot_description: slot_info.slot_description().trim_end().to_owned(),
                        ..token_identity(slot.id(), &info)
                    }))
                });
            match identity {
                Ok(None) => {}
                Ok(Some(token)) => tokens.push(token),
                // A token pulled between the slot list and this call is simply gone.
                Err(error) if error.token_gone() => {
                    tracing::debug!(id = "auth.token.vanished", slot = slot.id(), %error, "token vanished while listing")
                }
                Err(error) => return Err(error),
            }
        }
        Ok(tokens)
    }

    /// The slot of `token`. No C_GetSlotList here: some modules (SoftHSM)
    /// rescan their store on every call, and a token that left its slot is
    /// reported by the next call on the slot anyway.
    fn slot(&self, token: &TokenIdentity) -> Result<Slot, TokenError> {
        Slot::try_from(token.slot_id).map_err(TokenError::Call)
    }

    /// `token` as it is now (fresh PIN flags). The slot's description does
    /// not change, so only the token is asked.
    pub fn refresh(&self, token: &TokenIdentity) -> Result<TokenIdentity, TokenError> {
        let info = self.context()?.get_token_info(self.slot(token)?)?;
        Ok(TokenIdentity {
            slot_description: token.slot_description.clone(),
            ..token_identity(token.slot_id, &info)
        })
    }

    /// The X.509 certificates on `token`, at most [`MAX_CERTIFICATES_PER_TOKEN`].
    pub fn certificates(&self, token: &TokenIdentity) -> Result<Vec<TokenCertificate>, TokenError> {
        let session = self.context()?.open_ro_session(self.slot(token)?)?;
        let template = [
            Attribute::Class(ObjectClass::CERTIFICATE),
            Attribute::CertificateType(CertificateType::X_509),
        ];
        let cache = NonZeroUsize::new(MAX_CERTIFICATES_PER_TOKEN).unwrap_or(NonZeroUsize::MIN);
        let mut handles = Vec::new();
        for handle in session.iter_objects_with_cache_size(&template, cache)? {
            if handles.len() == MAX_CERTIFICATES_PER_TOKEN {
                tracing::warn!(
                    id = "auth.token.too_many_certificates",
                    token = %token.describe(),
                    "token holds more than {MAX_CERTIFICATES_PER_TOKEN} certificates; ignoring the rest"
                );
                break;
            }
            handles.push(handle?);
        }
        let mut certificates = Vec::with_capacity(handles.len());
        for handle in handles {
            // Ask the sizes first: cryptoki allocates whatever the module
            // reports, so an absurd length is refused before it is allocated.
            let sizes = session.get_attribute_info(handle, &[AttributeType::Value])?;
            let oversized = sizes.iter().any(|info| {
                matches!(info, AttributeInfo::Available(size) if *size > MAX_CERTIFICATE_SIZE)
            });
            if oversized {
                tracing::warn!(
                    id = "auth.token.certificate_too_large",
                    token = %token.describe(),
                    "certificate object larger than {MAX_CERTIFICATE_SIZE} bytes; skipped"
                );
                continue;
            }
            let attributes = session.get_attributes(
                handle,
                &[
                    AttributeType::Value,
                    AttributeType::Id,
                    AttributeType::Label,
                ],
            )?;
            let mut certificate = TokenCertificate {
                token: token.clone(),
                id: Vec::new(),
                label: String::new(),
                der: CertificateDer::from(Vec::new()),
            };
            for attribute in attributes {
                match attribute {
                    Attribute::Value(value) => certificate.der = CertificateDer::from(value),
                    Attribute::Id(id) => certificate.id = id,
                    Attribute::Label(label) => {
                        certificate.label = String::from_utf8_lossy(&label).into_owned()
                    }
                    _ => {}
                }
            }
            if certificate.der.is_empty() {
                tracing::debug!(id = "auth.token.certificate_empty", token = %token.describe(), "certificate object without a value; skipped");
                continue;
            }
            certificates.push(certificate);
        }
        Ok(certificates)
    }

    /// The token's PIN length limits (CK_TOKEN_INFO ulMinPinLen/ulMaxPinLen).
    pub fn pin_length_range(&self, token: &TokenIdentity) -> Result<(usize, usize), TokenError> {
        let info = self.context()?.get_token_info(self.slot(token)?)?;
        Ok((info.min_pin_length(), info.max_pin_length()))
    }

    /// Changes the user PIN of `token`: C_Login with the old PIN, then
    /// C_SetPIN in that logged-in read-write session. Logging in first both
    /// verifies the old PIN and keeps drivers that treat C_SetPIN in a
    /// public session as "unblock with the PUK" (OpenSC's
    /// `set_pin_in_unlogged_session`) from spending PUK tries.
    pub fn set_pin(
        &self,
        token: &TokenIdentity,
        old: &Secret,
        new: &Secret,
    ) -> Result<(), TokenError> {
        let mut session = Pkcs11Session {
            session: self.context()?.open_rw_session(self.slot(token)?)?,
            logged_in: false,
        };
        session.login(Some(old))?;
        session.session.set_pin(&auth_pin(old), &auth_pin(new))?;
        Ok(())
    }

    /// Unblocks the user PIN of `token` and sets it to `new`: C_Login as the
    /// Security Officer with `puk` (the PUK of PIV cards), C_InitPIN, C_Logout.
    pub fn unblock_pin(
        &self,
        token: &TokenIdentity,
        puk: &Secret,
        new: &Secret,
    ) -> Result<(), UnblockError> {
        let session = self
            .context()
            .and_then(|context| Ok(context.open_rw_session(self.slot(token)?)?))
            .map_err(UnblockError::Session)?;
        session
            .login(UserType::So, Some(&auth_pin(puk)))
            .map_err(|error| UnblockError::Puk(error.into()))?;
        let initialised = session.init_pin(&auth_pin(new));
        if let Err(error) = session.logout() {
            tracing::debug!(id = "auth.token.logout_failed", %error, "C_Logout after the PIN unblock failed");
        }
        initialised.map_err(|error| UnblockError::NewPin(error.into()))
    }

    /// The public-key objects on `token`, at most [`MAX_CERTIFICATES_PER_TOKEN`].
    pub fn public_keys(&self, token: &TokenIdentity) -> Result<Vec<TokenPublicKey>, TokenError> {
        let session = self.context()?.open_ro_session(self.slot(token)?)?;
        let template = [Attribute::Class(ObjectClass::PUBLIC_KEY)];
        let cache = NonZeroUsize::new(MAX_CERTIFICATES_PER_TOKEN).unwrap_or(NonZeroUsize::MIN);
        let mut handles = Vec::new();
        for handle in session.iter_objects_with_cache_size(&template, cache)? {
            if handles.len() == MAX_CERTIFICATES_PER_TOKEN {
                tracing::warn!(
                    id = "auth.token.too_many_keys",
                    token = %token.describe(),
                    "token holds more than {MAX_CERTIFICATES_PER_TOKEN} public keys; ignoring the rest"
                );
                break;
            }
            handles.push(handle?);
        }
        let wanted = [
            AttributeType::Id,
            AttributeType::Label,
            AttributeType::KeyType,
            AttributeType::Modulus,
            AttributeType::PublicExponent,
            AttributeType::EcParams,
            AttributeType::EcPoint,
        ];
        let mut keys = Vec::with_capacity(handles.len());
        for handle in handles {
            // Sizes first, as for certificates: cryptoki allocates whatever
            // the module reports.
            let sizes = session.get_attribute_info(handle, &wanted)?;
            let oversized = sizes.iter().any(|info| {
                matches!(info, AttributeInfo::Available(size) if *size > MAX_PUBLIC_KEY_ATTRIBUTE)
            });
            if oversized {
                tracing::warn!(
                    id = "auth.token.key_too_large",
                    token = %token.describe(),
                    "public-key attribute larger than {MAX_PUBLIC_KEY_ATTRIBUTE} bytes; key skipped"
                );
                continue;
            }
            let attributes = session.get_attributes(handle, &wanted)?;
            let mut id = Vec::new();
            let mut label = String::new();
            for attribute in &attributes {
                match attribute {
                    Attribute::Id(value) => id = value.clone(),
                    Attribute::Label(value) => label = String::from_utf8_lossy(value).into_owned(),
                    _ => {}
                }
            }
            keys.push(TokenPublicKey {
                token: token.clone(),
                id,
                label,
                key: public_key_from_attributes(attributes),
            });
        }
        Ok(keys)
    }

    /// Opens a session on `token` for logging in and signing.
    pub fn open_session(&self, token: &TokenIdentity) -> Result<Pkcs11Session, TokenError> {
        let session = self.context()?.open_ro_session(self.slot(token)?)?;
        Ok(Pkcs11Session {
            session,
            logged_in: false,
        })
    }
}

impl Drop for Pkcs11Module {
    fn drop(&mut self) {
        if let Some(context) = self.context.take() {
            if self.finalize_on_drop {
                if let Err(error) = context.finalize() {
                    tracing::debug!(id = "auth.token.finalize_failed", %error, "C_Finalize failed");
                }
            }
        }
    }
}

/// A PKCS#11 session on one token.
#[derive(Debug)]
pub struct Pkcs11Session {
    session: Session,
    logged_in: bool,
}

impl Pkcs11Session {
    /// Logs the user in with `pin` (or through the PIN pad when `None`).
    ///
    /// If the token says the user is already logged in (another application
    /// logged in, or a card that kept its state), logs out and logs in again,
    /// so that the PIN is always verified.
    pub fn login(&mut self, pin: Option<&Secret>) -> Result<(), TokenError> {
        let auth_pin = pin.map(auth_pin);
        match self.session.login(UserType::User, auth_pin.as_ref()) {
            Ok(()) => {}
            Err(CryptokiError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {
                tracing::debug!(
                    id = "auth.token.already_logged_in",
                    "token already logged in; logging out to verify the PIN"
                );
                self.session.logout()?;
                self.session.login(UserType::User, auth_pin.as_ref())?;
            }
            Err(error) => return Err(error.into()),
        }
        self.logged_in = true;
        Ok(())
    }

    /// The private key whose CKA_ID is `id`; exactly one must exist.
    pub fn private_key(&self, id: &[u8]) -> Result<ObjectHandle, TokenError> {
        let template = [
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::Id(id.to_vec()),
        ];
        let keys: Vec<ObjectHandle> = self
            .session
            .iter_objects(&template)?
            .take(2)
            .collect::<Result<_, _>>()?;
        match keys.as_slice() {
            [key] => Ok(*key),
            [] => Err(TokenError::NoPrivateKey(hex_id(id))),
            _ => Err(TokenError::AmbiguousPrivateKey {
                id: hex_id(id),
                count: keys.len(),
            }),
        }
    }

    /// Signs `data` with `key`.
    pub fn sign(
        &self,
        mechanism: &Mechanism,
        key: ObjectHandle,
        data: &[u8],
    ) -> Result<Vec<u8>, TokenError> {
        Ok(self.session.sign(mechanism, key, data)?)
    }
}

impl Drop for Pkcs11Session {
    fn drop(&mut self) {
        if self.logged_in {
            if let Err(error) = self.session.logout() {
                tracing::debug!(id = "auth.token.logout_failed", %error, "C_Logout failed");
            }
        }
    }
}

/// The PIN as cryptoki takes it: its own zeroizing copy, made at the call.
fn auth_pin(secret: &Secret) -> AuthPin {
    AuthPin::new(secret.expose().as_str().into())
}

impl TokenBackend for Pkcs11Module {
    fn tokens(&self) -> Result<Vec<TokenIdentity>, TokenError> {
        Pkcs11Module::tokens(self)
    }

    fn refresh(&self, token: &TokenIdentity) -> Result<TokenIdentity, TokenError> {
        Pkcs11Module::refresh(self, token)
    }

    fn certificates(&self, token: &TokenIdentity) -> Result<Vec<TokenCertificate>, TokenError> {
        Pkcs11Module::certificates(self, token)
    }

    fn public_keys(&self, token: &TokenIdentity) -> Result<Vec<TokenPublicKey>, TokenError> {
        Pkcs11Module::public_keys(self, token)
    }

    fn pin_length_range(&self, token: &TokenIdentity) -> Result<(usize, usize), TokenError> {
        Pkcs11Module::pin_length_range(self, token)
    }

    fn set_pin(&self, token: &TokenIdentity, old: &Secret, new: &Secret) -> Result<(), TokenError> {
        Pkcs11Module::set_pin(self, token, old, new)
    }

    fn unblock_pin(
        &self,
        token: &TokenIdentity,
        puk: &Secret,
        new: &Secret,
    ) -> Result<(), UnblockError> {
        Pkcs11Module::unblock_pin(self, token, puk, new)
    }

    fn open_session<'s>(
        &'s self,
        token: &TokenIdentity,
    ) -> Result<Box<dyn SigningSession + 's>, TokenError> {
        Ok(Box::new(Pkcs11Module::open_session(self, token)?))
    }
}

impl SigningSession for Pkcs11Session {
    fn login(&mut self, pin: Option<&Secret>) -> Result<(), TokenError> {
        Pkcs11Session::login(self, pin)
    }

    fn sign(
        &mut self,
        key_id: &[u8],
        mechanism: &Mechanism<'_>,
        data: &[u8],
    ) -> Result<Vec<u8>, TokenError> {
        let key = self.private_key(key_id)?;
        Pkcs11Session::sign(self, mechanism, key, data)
    }
}
