//! Test support: SoftHSM chores that pkcs11-tool cannot do reliably (it
//! cannot export Ed25519 or P-384 public keys), and the bare-token floor
//! measurement (C_Login + C_Sign) for benchmarks.
//!
//! Runs as its own process so each test's `SOFTHSM2_CONF` applies.
#![allow(clippy::print_stdout)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::{Parser, Subcommand, ValueEnum};
use const_oid::ObjectIdentifier;
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, CertificateType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;
use der::asn1::{BitString, OctetString, UintRef};
use der::{Decode, Encode, Sequence};
use x509_cert::spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned};

const RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const SECP256R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
const SECP384R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");
const ED25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");

#[derive(Clone, Copy, Debug, ValueEnum)]
enum KeyType {
    Rsa2048,
    Rsa4096,
    P256,
    P384,
    Ed25519,
}

#[derive(Parser, Debug)]
struct Cli {
    /// PKCS#11 module.
    #[arg(long, default_value = "/usr/lib/softhsm/libsofthsm2.so")]
    module: PathBuf,
    /// Token label.
    #[arg(long)]
    token: String,
    /// User PIN.
    #[arg(long)]
    pin: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Generate a key pair on the token and write its SubjectPublicKeyInfo (DER).
    Keygen {
        #[arg(long, value_enum)]
        key_type: KeyType,
        /// CKA_ID in hex.
        #[arg(long)]
        id: String,
        #[arg(long)]
        label: String,
        #[arg(long)]
        spki_out: PathBuf,
    },
    /// Store a file as an X.509 certificate object, whatever its size
    /// (pkcs11-tool refuses large ones).
    WriteCertificate {
        /// CKA_ID in hex.
        #[arg(long)]
        id: String,
        /// The CKA_VALUE.
        #[arg(long)]
        file: PathBuf,
    },
    /// Log in and keep the session open until standard input closes, so the
    /// token is "already logged in" for other applications. Prints "ready".
    HoldLogin,
    /// Time C_Initialize+C_OpenSession+C_Login+C_FindObjects+C_Sign against the key with CKA_ID.
    BenchSign {
        #[arg(long)]
        id: String,
        #[arg(long, default_value_t = 20)]
        iterations: usize,
    },
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("tessera-rig-p11: {error}");
            ExitCode::FAILURE
        }
    }
}

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn open(module: &PathBuf, token: &str) -> Result<(Pkcs11, Session)> {
    let context = Pkcs11::new(module)?;
    context.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))?;
    let slot = context
        .get_slots_with_token()?
        .into_iter()
        .find(|slot| {
            context
                .get_token_info(*slot)
                .map(|info| info.label().trim_end() == token)
                .unwrap_or(false)
        })
        .ok_or_else(|| format!("no token labelled {token:?}"))?;
    let session = context.open_rw_session(slot)?;
    Ok((context, session))
}

fn run(cli: Cli) -> Result<()> {
    match &cli.command {
        Command::Keygen {
            key_type,
            id,
            label,
            spki_out,
        } => {
            let (_context, session) = open(&cli.module, &cli.token)?;
            session.login(UserType::User, Some(&AuthPin::new(cli.pin.clone().into())))?;
            let spki = keygen(&session, *key_type, &hex::decode(id)?, label)?;
            std::fs::write(spki_out, spki)?;
            Ok(())
        }
        Command::WriteCertificate { id, file } => {
            let value = std::fs::read(file)?;
            // SoftHSM wants the subject; reading it is all the parsing done.
            let subject = x509_cert::Certificate::from_der(&value)?
                .tbs_certificate
                .subject
                .to_der()?;
            let (_context, session) = open(&cli.module, &cli.token)?;
            session.login(UserType::User, Some(&AuthPin::new(cli.pin.clone().into())))?;
            session.create_object(&[
                Attribute::Class(ObjectClass::CERTIFICATE),
                Attribute::CertificateType(CertificateType::X_509),
                Attribute::Token(true),
                Attribute::Id(hex::decode(id)?),
                Attribute::Label(format!("cert-{id}").into_bytes()),
                Attribute::Subject(subject),
                Attribute::Value(value),
            ])?;
            Ok(())
        }
        Command::HoldLogin => {
            let (_context, session) = open(&cli.module, &cli.token)?;
            session.login(UserType::User, Some(&AuthPin::new(cli.pin.clone().into())))?;
            println!("ready");
            std::io::Write::flush(&mut std::io::stdout())?;
            std::io::copy(&mut std::io::stdin(), &mut std::io::sink())?;
            Ok(())
        }
        Command::BenchSign { id, iterations } => bench_sign(&cli, &hex::decode(id)?, *iterations),
    }
}

#[derive(Sequence)]
struct RsaPublicKey<'a> {
    modulus: UintRef<'a>,
    exponent: UintRef<'a>,
}

fn keygen(session: &Session, key_type: KeyType, id: &[u8], label: &str) -> Result<Vec<u8>> {
    let common_public = vec![
        Attribute::Token(true),
        Attribute::Private(false),
        Attribute::Verify(true),
        Attribute::Id(id.to_vec()),
        Attribute::Label(label.as_bytes().to_vec()),
    ];
    let private = vec![
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Sign(true),
        Attribute::Id(id.to_vec()),
        Attribute::Label(label.as_bytes().to_vec()),
    ];
    let (mechanism, extra, curve) = match key_type {
        KeyType::Rsa2048 | KeyType::Rsa4096 => {
            let bits: u64 = if matches!(key_type, KeyType::Rsa2048) {
                2048
            } else {
                4096
            };
            (
                Mechanism::RsaPkcsKeyPairGen,
                vec![
                    Attribute::ModulusBits(bits.into()),
                    Attribute::PublicExponent(vec![1, 0, 1]),
                ],
                None,
            )
        }
        KeyType::P256 => (
            Mechanism::EccKeyPairGen,
            vec![Attribute::EcParams(SECP256R1.to_der()?)],
            Some(SECP256R1),
        ),
        KeyType::P384 => (
            Mechanism::EccKeyPairGen,
            vec![Attribute::EcParams(SECP384R1.to_der()?)],
            Some(SECP384R1),
        ),
        KeyType::Ed25519 => (
            Mechanism::EccEdwardsKeyPairGen,
            vec![Attribute::EcParams(ED25519.to_der()?)],
            Some(ED25519),
        ),
    };
    let mut public_template = common_public;
    public_template.extend(extra);
    let (public, _private) = session.generate_key_pair(&mechanism, &public_template, &private)?;
    let spki = match (key_type, curve) {
        (KeyType::Rsa2048 | KeyType::Rsa4096, _) => {
            let attributes = session.get_attributes(
                public,
                &[AttributeType::Modulus, AttributeType::PublicExponent],
            )?;
            let (mut modulus, mut exponent) = (Vec::new(), Vec::new());
            for attribute in attributes {
                match attribute {
                    Attribute::Modulus(value) => modulus = value,
                    Attribute::PublicExponent(value) => exponent = value,
                    _ => {}
                }
            }
            let key = RsaPublicKey {
                modulus: UintRef::new(&modulus)?,
                exponent: UintRef::new(&exponent)?,
            }
            .to_der()?;
            SubjectPublicKeyInfoOwned {
                algorithm: AlgorithmIdentifierOwned {
                    oid: RSA_ENCRYPTION,
                    parameters: Some(der::asn1::Null.into()),
                },
                subject_public_key: BitString::from_bytes(&key)?,
            }
        }
        (_, Some(curve)) => {
            let point = ec_point(session, public)?;
            let algorithm = if curve == ED25519 {
                AlgorithmIdentifierOwned {
                    oid: ED25519,
                    parameters: None,
                }
            } else {
                AlgorithmIdentifierOwned {
                    oid: EC_PUBLIC_KEY,
                    parameters: Some(der::Any::encode_from(&curve)?),
                }
            };
            SubjectPublicKeyInfoOwned {
                algorithm,
                subject_public_key: BitString::from_bytes(&point)?,
            }
        }
        (_, None) => return Err("no curve".into()),
    };
    Ok(spki.to_der()?)
}

/// CKA_EC_POINT, unwrapped from the DER OCTET STRING most modules put around it.
fn ec_point(session: &Session, public: ObjectHandle) -> Result<Vec<u8>> {
    for attribute in session.get_attributes(public, &[AttributeType::EcPoint])? {
        if let Attribute::EcPoint(value) = attribute {
            return Ok(match OctetString::from_der(&value) {
                Ok(inner) => inner.as_bytes().to_vec(),
                Err(_) => value,
            });
        }
    }
    Err("token returned no CKA_EC_POINT".into())
}

fn bench_sign(cli: &Cli, id: &[u8], iterations: usize) -> Result<()> {
    let mut samples = Vec::with_capacity(iterations);
    let challenge = [0x5au8; 32];
    for _ in 0..iterations {
        let started = Instant::now();
        let (context, session) = open(&cli.module, &cli.token)?;
        session.login(UserType::User, Some(&AuthPin::new(cli.pin.clone().into())))?;
        let key = session
            .find_objects(&[
                Attribute::Class(ObjectClass::PRIVATE_KEY),
                Attribute::Id(id.to_vec()),
            ])?
            .into_iter()
            .next()
            .ok_or("no private key with that CKA_ID")?;
        let key_type = session.get_attributes(key, &[AttributeType::KeyType])?;
        let is_rsa = key_type
            .iter()
            .any(|a| matches!(a, Attribute::KeyType(t) if *t == cryptoki::object::KeyType::RSA));
        let signature = if is_rsa {
            session.sign(&Mechanism::Sha256RsaPkcs, key, &challenge)?
        } else {
            session.sign(&Mechanism::Ecdsa, key, &challenge)?
        };
        if signature.is_empty() {
            return Err("empty signature".into());
        }
        session.logout()?;
        drop(session);
        context.finalize()?;
        samples.push(started.elapsed().as_micros() as u64);
    }
    let in_order = samples.clone();
    samples.sort_unstable();
    println!(
        "{}",
        serde_json::json!({
            "micros": in_order,
            "min_micros": samples.first(),
            "median_micros": samples.get(samples.len() / 2),
            "max_micros": samples.last(),
            "iterations": iterations,
        })
    );
    Ok(())
}
