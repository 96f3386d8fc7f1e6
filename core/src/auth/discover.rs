//! Discovery: each certificate and bare key on the tokens, mapped to users
//! and validated, with the verdict and the mapping trace. The login takes
//! its candidates from here, and `tessera inspect` and `tessera map` show
//! the same results, so they show what the module does.

use rustls_pki_types::{CertificateDer, UnixTime};
use tessera_ipc::FailureKind;
use tessera_mappers::{
    CertificateFields, Mapping, MappingContext, MappingInput, Outcome, PublicKey, TokenInfo,
};

use super::candidate::{Candidate, Proof, TrustBasis};
use super::failure::AuthFailure;
use super::tokens::TokenObjects;
use crate::config::Config;
use crate::mapping;
use crate::pki::{self, Rejection, TrustStore, ValidatedCertificate};
use crate::token::{TokenIdentity, TokenPublicKey};

/// What discovery is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope<'u> {
    /// A login for `user` (any user when `None`): only what maps is
    /// validated, and a mapping source that fails ends the login (fail closed).
    Login {
        /// The user the application asked for.
        user: Option<&'u str>,
    },
    /// An explanation (`tessera inspect`, `tessera map --token`): every
    /// certificate is validated, and a failing mapping source is recorded
    /// in that object's mapping before the next object is examined.
    Explain {
        /// The user a login would ask for, if any.
        user: Option<&'u str>,
    },
}

impl Scope<'_> {
    fn user(&self) -> Option<&str> {
        match self {
            Scope::Login { user } | Scope::Explain { user } => *user,
        }
    }
}

/// A certificate or bare key found on a token.
#[derive(Debug)]
pub enum Object<'o> {
    /// An X.509 certificate; `fields` is `None` when it does not parse.
    Certificate {
        /// Its DER.
        der: &'o [u8],
        /// What the mapping rules see of it.
        fields: Option<Box<CertificateFields>>,
    },
    /// A public key without a certificate; `None` when it cannot be read.
    Key(Option<&'o PublicKey>),
}

/// What the login makes of an object.
#[derive(Debug)]
pub enum Verdict<'o> {
    /// The certificate chains to a trusted CA and passed every check.
    Valid(Box<ValidatedCertificate<'o>>),
    /// Accepted on its key alone, listed in the user's authorized files:
    /// no chain validation applies.
    AuthorizedKey,
    /// The certificate failed validation.
    Rejected(Rejection),
    /// The object cannot be used: a certificate that does not parse, a key
    /// of a type we cannot read.
    Unusable(String),
    /// Not validated: no rule maps it to the user of this login.
    NotMapped,
}

impl Verdict<'_> {
    /// The verdict in words: "valid", "rejected: …" and so on.
    pub fn describe(&self) -> String {
        match self {
            Verdict::Valid(_) => "valid".to_owned(),
            Verdict::AuthorizedKey => {
                "accepted: key in the user's authorized files (no chain validation)".to_owned()
            }
            Verdict::Rejected(rejection) => format!("rejected: {rejection}"),
            Verdict::Unusable(reason) => format!("rejected: {reason}"),
            Verdict::NotMapped => "not validated: maps to no user of this login".to_owned(),
        }
    }
}

/// One object and what discovery made of it.
#[derive(Debug)]
pub struct Examined<'o> {
    /// The token it is on.
    pub token: &'o TokenIdentity,
    /// CKA_ID, which links it to its private key.
    pub id: &'o [u8],
    /// CKA_LABEL.
    pub label: &'o str,
    /// The certificate or key.
    pub object: Object<'o>,
    /// The mapping rules' decision and trace; `None` when the object is unusable.
    pub mapping: Option<Mapping>,
    /// The verdict.
    pub verdict: Verdict<'o>,
}

impl Examined<'_> {
    /// The certificate's subject, or the key's type and fingerprint.
    pub fn subject(&self) -> String {
        match &self.object {
            Object::Certificate {
                fields: Some(fields),
                ..
            } => fields.subject.clone(),
            Object::Certificate { fields: None, .. } => String::new(),
            Object::Key(Some(key)) => key_subject(key),
            Object::Key(None) => self.label.to_owned(),
        }
    }

    /// The users and rule of a match, with what the rule vouches for.
    fn matched(&self) -> Option<(&[String], &str, TrustBasis)> {
        match &self.mapping.as_ref()?.outcome {
            Outcome::Matched { rule, users, basis } => Some((users, rule, *basis)),
            _ => None,
        }
    }
}

/// How a bare key is named in messages: its type and fingerprint.
pub fn key_subject(key: &PublicKey) -> String {
    format!("{} key {}", key.kind(), key.fingerprint())
}

/// Maps one certificate or key; in a login, a failing mapping source is
/// the end of it (fail closed: no later rule or certificate is tried).
pub(crate) fn map_object(
    config: &Config,
    context: &MappingContext<'_>,
    fields: Option<&CertificateFields>,
    key: Option<&PublicKey>,
    token: &TokenIdentity,
    scope: Scope<'_>,
) -> Result<Mapping, AuthFailure> {
    let token_info = TokenInfo {
        label: token.label.clone(),
        serial: token.serial.clone(),
    };
    let input = MappingInput {
        certificate: fields,
        key,
        token: &token_info,
        requested_user: scope.user(),
    };
    let mapping = mapping::map(config, context, &input);
    if let (Scope::Login { .. }, Outcome::Error { rule, error }) = (scope, &mapping.outcome) {
        let kind = if error.is_unavailable() {
            FailureKind::MappingUnavailable
        } else {
            FailureKind::Config
        };
        return Err(AuthFailure::new(
            kind,
            format!("mapping rule \"{rule}\": {error}"),
        ));
    }
    Ok(mapping)
}

/// Maps and validates every object in `objects` at `now`, in order, with
/// one revocation budget for them all.
pub fn discover<'o>(
    config: &Config,
    store: &TrustStore,
    objects: &'o TokenObjects,
    scope: Scope<'_>,
    now: UnixTime,
) -> Result<Vec<Examined<'o>>, AuthFailure> {
    let deadline = pki::Deadline::after(config.pki.revocation_timeout);
    mapping::with_context(config, Some(now.as_secs()), |context| {
        let step = Step {
            config,
            store,
            context,
            scope,
            now,
            deadline: &deadline,
        };
        let certificates =
            (0..objects.certificates.len()).map(|index| step.certificate(objects, index));
        let keys = objects.bare_keys.iter().map(|bare| step.bare_key(bare));
        certificates.chain(keys).collect()
    })
}

/// What examining one object needs.
struct Step<'s> {
    config: &'s Config,
    store: &'s TrustStore,
    context: &'s MappingContext<'s>,
    scope: Scope<'s>,
    now: UnixTime,
    deadline: &'s pki::Deadline,
}

impl Step<'_> {
    /// Maps the certificate `index` of `objects`, then validates it if the
    /// scope asks for it and its rule vouches for the certificate.
    fn certificate<'o>(
        &self,
        objects: &'o TokenObjects,
        index: usize,
    ) -> Result<Examined<'o>, AuthFailure> {
        let certificate = &objects.certificates[index];
        let mut entry = Examined {
            token: &certificate.token,
            id: &certificate.id,
            label: &certificate.label,
            object: Object::Certificate {
                der: &certificate.der,
                fields: None,
            },
            mapping: None,
            verdict: Verdict::NotMapped,
        };
        let fields = match CertificateFields::from_der(&certificate.der) {
            Ok(fields) => fields,
            Err(error) => {
                tracing::info!(id = "auth.certificate.unparsable", token = %certificate.token.describe(), label = %certificate.label, %error, "certificate skipped");
                entry.verdict = Verdict::Unusable(error.to_string());
                return Ok(entry);
            }
        };
        entry.mapping = Some(map_object(
            self.config,
            self.context,
            Some(&fields),
            fields.public_key.as_ref(),
            &certificate.token,
            self.scope,
        )?);
        let basis = entry.matched().map(|(_, _, basis)| basis);
        entry.verdict = match (basis, self.scope) {
            (Some(TrustBasis::AuthorizedKey), _) if fields.public_key.is_some() => {
                tracing::info!(id = "auth.certificate.authorized_key", subject = %fields.subject, "certificate key is in the user's authorized files; no chain validation");
                Verdict::AuthorizedKey
            }
            (Some(TrustBasis::AuthorizedKey), _) => {
                Verdict::Unusable("certificate key cannot be read".to_owned())
            }
            (None, Scope::Login { .. }) => Verdict::NotMapped,
            (Some(TrustBasis::CertificateChain), _) | (None, Scope::Explain { .. }) => {
                self.validate(objects, index, &fields.subject)
            }
        };
        entry.object = Object::Certificate {
            der: &certificate.der,
            fields: Some(Box::new(fields)),
        };
        Ok(entry)
    }

    /// Validates the certificate `index` of `objects`, with the other
    /// certificates of its token as the intermediates to build a path from.
    fn validate<'o>(&self, objects: &'o TokenObjects, index: usize, subject: &str) -> Verdict<'o> {
        let certificate = &objects.certificates[index];
        let intermediates: Vec<CertificateDer<'_>> = objects
            .certificates
            .iter()
            .enumerate()
            .filter(|(other, sibling)| *other != index && sibling.token == certificate.token)
            .map(|(_, sibling)| CertificateDer::from(sibling.der.as_ref()))
            .collect();
        match pki::validate(
            self.store,
            &self.config.pki,
            &certificate.der,
            &intermediates,
            self.now,
            self.deadline,
        ) {
            Ok(validated) => {
                tracing::debug!(id = "auth.certificate.valid", %subject, "certificate valid");
                Verdict::Valid(Box::new(validated))
            }
            Err(rejection) => {
                tracing::warn!(id = "auth.certificate.rejected", %subject, token = %certificate.token.describe(), reason = %rejection, "certificate rejected");
                Verdict::Rejected(rejection)
            }
        }
    }

    /// Maps a bare key; a key the rules map is accepted on its own.
    fn bare_key<'o>(&self, bare: &'o TokenPublicKey) -> Result<Examined<'o>, AuthFailure> {
        let mut entry = Examined {
            token: &bare.token,
            id: &bare.id,
            label: &bare.label,
            object: Object::Key(None),
            mapping: None,
            verdict: Verdict::NotMapped,
        };
        let key = match &bare.key {
            Ok(key) => key,
            Err(error) => {
                tracing::debug!(id = "auth.key.unusable", token = %bare.token.describe(), label = %bare.label, %error, "public key skipped");
                entry.verdict = Verdict::Unusable(error.clone());
                return Ok(entry);
            }
        };
        entry.object = Object::Key(Some(key));
        entry.mapping = Some(map_object(
            self.config,
            self.context,
            None,
            Some(key),
            &bare.token,
            self.scope,
        )?);
        if entry.matched().is_some() {
            entry.verdict = Verdict::AuthorizedKey;
        }
        Ok(entry)
    }
}

/// What a login can use of a discovery: the candidates, in order, and the
/// rejections of certificates that mapped.
pub(crate) fn candidates(
    examined: Vec<Examined<'_>>,
) -> (Vec<Candidate<'_>>, Vec<(String, Rejection)>) {
    let mut candidates = Vec::new();
    let mut rejections = Vec::new();
    for entry in examined {
        let subject = entry.subject();
        let Some((users, rule, _)) = entry.matched() else {
            continue;
        };
        let (users, rule) = (users.to_vec(), rule.to_owned());
        let (proof, validity, sha256) = match (entry.object, entry.verdict) {
            (Object::Certificate { der, fields }, Verdict::Valid(validated)) => (
                Proof::Certificate { der, validated },
                pki::validity_window(der),
                fields.map(|fields| fields.sha256_hex).unwrap_or_default(),
            ),
            (Object::Certificate { fields, .. }, Verdict::AuthorizedKey) => {
                let Some(fields) = fields else { continue };
                let Some(key) = fields.public_key else {
                    continue;
                };
                (Proof::Key(key), (0, u64::MAX), fields.sha256_hex)
            }
            // No certificate, so no validity period: the authorized file decides.
            (Object::Key(Some(key)), Verdict::AuthorizedKey) => {
                (Proof::Key(key.clone()), (0, u64::MAX), String::new())
            }
            (_, Verdict::Rejected(rejection)) => {
                rejections.push((subject, rejection));
                continue;
            }
            _ => continue,
        };
        candidates.push(Candidate {
            token: entry.token,
            id: entry.id,
            subject,
            sha256,
            validity,
            users,
            rule,
            proof,
        });
    }
    (candidates, rejections)
}
