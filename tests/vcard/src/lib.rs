//! The virtual PIV card as a library: the card application with its APDU
//! and TLV parsers, shared by the `tessera-vcard` binary and the fuzz
//! targets in `fuzz/`.
#![deny(unsafe_code)]

pub mod apdu;
pub mod keys;
pub mod pin;
pub mod piv;
pub mod tlv;
