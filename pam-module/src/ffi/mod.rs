//! The only unsafe code of tessera: the PAM entry points pamsm's macro
//! generates ([`exports`]) and the libpam calls pamsm does not wrap
//! ([`calls`]). Each unsafe block says why it is sound (`// SAFETY:`).
#![allow(unsafe_code)]

pub mod calls;
mod exports;
