//! tessera-vcard: a virtual PIV card for vpcd (vsmartcard's virtual reader
//! driver for pcscd), good enough for OpenSC's PIV-II driver to turn it into
//! a PKCS#11 token. Test support only: keys live in plain files.
#![deny(unsafe_code)]

mod control;
mod link;

use std::collections::BTreeMap;
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use clap::{Args, Parser, Subcommand};
use sha2::{Digest, Sha256};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use tessera_vcard::keys::{self, SlotKey};
use tessera_vcard::pin::{Credentials, Padded};
use tessera_vcard::piv::{PivCard, Slot, SlotId};

use crate::link::Switch;

/// vpcd's first reader listens here; reader N on this port + N.
const VPCD_BASE_PORT: u16 = 35963;

#[derive(Debug, Parser)]
#[command(
    name = "tessera-vcard",
    about = "A virtual PIV card for vpcd (test support)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a card: connect to vpcd and answer APDUs until SIGTERM or `quit`.
    Run(RunArgs),
    /// Send one command to a running card's control socket and print the reply.
    Ctl {
        /// The card's control socket.
        #[arg(long)]
        control: PathBuf,
        /// pull, insert, status or quit.
        command: String,
    },
}

#[derive(Debug, Args)]
struct RunArgs {
    /// vpcd reader index: the card connects to 127.0.0.1:(35963 + index).
    #[arg(long, default_value_t = 0)]
    reader: u16,
    /// vpcd port on 127.0.0.1, overriding --reader.
    #[arg(long)]
    port: Option<u16>,
    /// Private key for a slot, PKCS#8 PEM or DER: SLOT=FILE with SLOT one of 9a, 9c, 9d, 9e.
    #[arg(long = "key", value_name = "SLOT=FILE")]
    keys: Vec<String>,
    /// Certificate for a slot, PEM or DER: SLOT=FILE.
    #[arg(long = "cert", value_name = "SLOT=FILE")]
    certs: Vec<String>,
    /// PIV application PIN (6 to 8 characters).
    #[arg(long, default_value = "123456")]
    pin: String,
    /// PIN unblocking key (6 to 8 characters).
    #[arg(long, default_value = "12345678")]
    puk: String,
    /// Wrong PINs before the PIN blocks (1-15).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u8).range(1..=15))]
    pin_tries: u8,
    /// Wrong PUKs before the PUK blocks (1-15).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u8).range(1..=15))]
    puk_tries: u8,
    /// Keep PIN, PUK and retry counters in this file across restarts.
    #[arg(long)]
    state: Option<PathBuf>,
    /// Card GUID (32 hex digits), OpenSC's token serial; default: derived
    /// from the certificates.
    #[arg(long)]
    guid: Option<String>,
    /// Unix control socket accepting pull, insert, status and quit.
    #[arg(long)]
    control: Option<PathBuf>,
    /// Start with the card out of the reader.
    #[arg(long)]
    pulled: bool,
    /// Log every APDU (PINs redacted) to stderr.
    #[arg(long)]
    verbose: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => run(args),
        Command::Ctl { control, command } => ctl(&control, &command),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("tessera-vcard: {e}");
            ExitCode::from(2)
        }
    }
}

type Error = Box<dyn std::error::Error + Send + Sync>;

fn ctl(control: &Path, command: &str) -> Result<ExitCode, Error> {
    let reply =
        control::request(control, command).map_err(|e| format!("{}: {e}", control.display()))?;
    writeln!(std::io::stdout().lock(), "{reply}")?;
    Ok(if reply.starts_with("ok") {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn run(args: RunArgs) -> Result<ExitCode, Error> {
    let port = match args.port {
        Some(p) => p,
        None => VPCD_BASE_PORT
            .checked_add(args.reader)
            .ok_or("--reader too large")?,
    };
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let slots = load_slots(&args.keys, &args.certs)?;
    let guid = match &args.guid {
        Some(text) => parse_guid(text)?,
        None => default_guid(&slots),
    };
    let pin =
        Padded::from_value(args.pin.as_bytes()).ok_or("--pin: 6 to 8 printable characters")?;
    let puk =
        Padded::from_value(args.puk.as_bytes()).ok_or("--puk: 6 to 8 printable characters")?;
    let credentials = Credentials::new(pin, puk, args.pin_tries, args.puk_tries, args.state)?;
    for (id, slot) in &slots {
        eprintln!(
            "tessera-vcard: slot {:02x}: key {}, certificate {}",
            id.key_reference(),
            slot.key
                .as_ref()
                .map_or("none".to_owned(), SlotKey::describe),
            slot.certificate
                .as_ref()
                .map_or("none".to_owned(), |c| format!("{} bytes", c.len())),
        );
    }
    let card = Arc::new(Mutex::new(PivCard::new(slots, guid, credentials)));
    let switch = Arc::new(Switch::new(!args.pulled));

    let mut signals = Signals::new([SIGTERM, SIGINT])?;
    {
        let switch = Arc::clone(&switch);
        std::thread::spawn(move || {
            if signals.forever().next().is_some() {
                switch.quit();
            }
        });
    }
    if let Some(path) = &args.control {
        let listener = control::bind(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let (switch, card) = (Arc::clone(&switch), Arc::clone(&card));
        std::thread::spawn(move || control::serve(listener, switch, card));
    }
    eprintln!(
        "tessera-vcard: ready, guid {}, vpcd {addr}{}",
        hex(&guid),
        if args.pulled { " (pulled)" } else { "" }
    );
    link::run(&switch, &card, addr, args.verbose);
    if let Some(path) = &args.control {
        let _ = std::fs::remove_file(path);
    }
    eprintln!("tessera-vcard: quit");
    Ok(ExitCode::SUCCESS)
}

fn split_slot_arg<'a>(flag: &str, arg: &'a str) -> Result<(SlotId, &'a Path), Error> {
    let (slot, file) = arg
        .split_once('=')
        .ok_or_else(|| format!("--{flag} {arg:?}: expected SLOT=FILE"))?;
    let slot = SlotId::parse(slot)
        .ok_or_else(|| format!("--{flag} {arg:?}: slot must be 9a, 9c, 9d or 9e"))?;
    Ok((slot, Path::new(file)))
}

fn load_slots(keys: &[String], certs: &[String]) -> Result<BTreeMap<SlotId, Slot>, Error> {
    let mut slots: BTreeMap<SlotId, Slot> = BTreeMap::new();
    for arg in keys {
        let (id, path) = split_slot_arg("key", arg)?;
        let slot = slots.entry(id).or_default();
        if slot.key.is_some() {
            return Err(format!("--key: slot {arg:?} given twice").into());
        }
        slot.key = Some(SlotKey::load(path)?);
    }
    for arg in certs {
        let (id, path) = split_slot_arg("cert", arg)?;
        let slot = slots.entry(id).or_default();
        if slot.certificate.is_some() {
            return Err(format!("--cert: slot {arg:?} given twice").into());
        }
        slot.certificate = Some(keys::load_certificate(path)?);
    }
    Ok(slots)
}

fn parse_guid(text: &str) -> Result<[u8; 16], Error> {
    let bad = || format!("--guid {text:?}: expected 32 hex digits");
    if text.len() != 32 {
        return Err(bad().into());
    }
    let mut guid = [0u8; 16];
    for (i, b) in guid.iter_mut().enumerate() {
        let pair = text.get(2 * i..2 * i + 2).ok_or_else(bad)?;
        *b = u8::from_str_radix(pair, 16).map_err(|_| bad())?;
    }
    Ok(guid)
}

/// A stable GUID per set of certificates, so two cards with different
/// certificates get different token serials without configuration.
fn default_guid(slots: &BTreeMap<SlotId, Slot>) -> [u8; 16] {
    let mut hash = Sha256::new();
    hash.update(b"tessera-vcard guid");
    for (id, slot) in slots {
        hash.update([id.key_reference()]);
        if let Some(cert) = &slot.certificate {
            hash.update(cert);
        }
    }
    let digest = hash.finalize();
    let mut guid = [0u8; 16];
    guid.iter_mut()
        .zip(digest.iter())
        .for_each(|(g, d)| *g = *d);
    guid
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
