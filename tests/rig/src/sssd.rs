//! SSSD as the reference for certmap semantics (issue 19).
//!
//! A deterministic corpus of certificates (odd DNs, every keyUsage bit,
//! common EKUs, every SAN kind tessera reads) and of SSSD `matchrule` and
//! `maprule` strings, and [`Sssctl`], which evaluates them with SSSD's own
//! libsss_certmap through `sssctl cert-eval-rule`, in a private mount
//! namespace so that the host's `/etc/sssd` and `/var/lib/sss` are never
//! touched.
//!
//! One file per concern: the seedable generator (`rng.rs`), the certificate
//! corpus (`certificates.rs`), the rule corpus (`rules.rs`), the sssctl
//! batch runner (`sssctl.rs`) and the sssd daemon (`daemon.rs`).

mod certificates;
mod daemon;
mod rng;
mod rules;
mod shell;
mod sssctl;

pub use certificates::{certificate, KRB5_OID, UPN_OID};
pub use daemon::{files_domain, sssd_installed, SssdDaemon, SssdLogin, PAM_SSS_SERVICE};
pub use rng::Rng;
pub use rules::{match_rules, FIXED_MATCH_RULES, MAP_RULES};
pub use sssctl::{Query, Sssctl, SssdAnswer};
