//! OCSP responses about the material's user certificate: parsing, the
//! signer (the issuing CA or a responder it delegated to), CertID, nonce
//! and time window.
//!
//! The first input byte selects the mode. Bit 0 set: the response is
//! re-signed with the issuing CA's key before it is checked, so that
//! mutations of the signed data reach the checks behind the signature.
//! Bit 1 set: the check expects the material's nonce.
#![no_main]

use std::sync::OnceLock;
use std::time::Duration;

use const_oid::db::rfc5912::ECDSA_WITH_SHA_256;
use der::asn1::{BitString, OctetString};
use der::{Decode, Encode};
use libfuzzer_sys::fuzz_target;
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_ASN1_SIGNING};
use tessera_core::pki::ocsp::{self, Context, Target};
use tessera_core::pki::policy::OcspHash;
use tessera_core::pki::{Deadline, Policy};
use tessera_fuzz::{certificates, now, ISSUER_DER, ISSUER_KEY, NONCE};
use x509_cert::spki::AlgorithmIdentifierOwned;
use x509_ocsp::{BasicOcspResponse, OcspResponse};

/// Clock skew tolerance, as configured by default.
const SKEW: u64 = 300;

fn signer() -> &'static (EcdsaKeyPair, SystemRandom) {
    static SIGNER: OnceLock<(EcdsaKeyPair, SystemRandom)> = OnceLock::new();
    SIGNER.get_or_init(|| {
        let random = SystemRandom::new();
        let key =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, ISSUER_KEY, &random).unwrap();
        (key, random)
    })
}

/// `bytes` with its BasicOCSPResponse signed anew by the issuing CA.
fn resign(bytes: &[u8]) -> Option<Vec<u8>> {
    let mut response = OcspResponse::from_der(bytes).ok()?;
    let body = response.response_bytes.as_mut()?;
    let mut basic = BasicOcspResponse::from_der(body.response.as_bytes()).ok()?;
    let signed = basic.tbs_response_data.to_der().ok()?;
    let (key, random) = signer();
    let signature = key.sign(random, &signed).ok()?;
    basic.signature_algorithm = AlgorithmIdentifierOwned {
        oid: ECDSA_WITH_SHA_256,
        parameters: None,
    };
    basic.signature = BitString::from_bytes(signature.as_ref()).ok()?;
    body.response = OctetString::new(basic.to_der().ok()?).ok()?;
    response.to_der().ok()
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, response)) = data.split_first() else {
        return;
    };
    let resigned;
    let response = if mode & 1 == 1 {
        match resign(response) {
            Some(bytes) => {
                resigned = bytes;
                &resigned
            }
            None => response,
        }
    } else {
        response
    };
    let nonce = (mode & 2 == 2).then_some(NONCE);

    let (user, issuer) = certificates();
    let target = Target {
        certificate: user,
        issuer,
        issuer_der: ISSUER_DER,
    };
    let cert_id = ocsp::cert_id(OcspHash::Sha1, target).unwrap();
    let policy = Policy::default();
    let deadline = Deadline::after(Duration::from_secs(60));
    let context = Context {
        policy: &policy.ocsp,
        algorithms: &policy.signature_algorithms,
        now: now(),
        skew: SKEW,
        deadline: &deadline,
        cache: None,
    };
    match ocsp::verify_response(response, &cert_id, nonce, target, &context) {
        Ok(verified) => {
            // Never a stale answer.
            if let Some(next_update) = verified.next_update {
                assert!(next_update.as_secs() + SKEW >= now().as_secs());
            }
        }
        Err(failure) => assert!(!failure.to_string().is_empty()),
    }
});
