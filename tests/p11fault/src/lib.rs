//! tessera-p11fault: a PKCS#11 module for tests that sits in front of a real
//! one (SoftHSM2 by default), forwards every call and breaks the calls its
//! fault plan names: failing with any CKR code (optionally on the Nth call
//! only), CKR_BUFFER_TOO_SMALL forever, absurd lengths, forged signatures,
//! a constant C_GenerateRandom, garbage certificate values, floods of fake
//! certificate or public-key objects, slow calls, calls that never return
//! and calls that abort the process. It logs every call to a
//! file so tests can assert which functions ran, in what order, and which
//! faults fired.
//!
//! The plan is a TOML file named by the `TESSERA_P11FAULT_PLAN` environment
//! variable. That is acceptable only because this module is test support:
//! it is never installed or loaded in production, where a module taking
//! orders from the environment of `login` or `sudo` would be a hole.
//!
//! ```toml
//! module = "/usr/lib/softhsm/libsofthsm2.so"   # the real module (default)
//! log = "/tmp/run/calls.log"                     # one line per call
//! [[fault]]
//! function = "C_Login"
//! call = 1                                       # optional: only the 1st call
//! action = { fail = "CKR_USER_ALREADY_LOGGED_IN" }
//! # other actions: { sleep_ms = 1500 }, "hang" (never returns),
//! # "abort" (std::process::abort), "linger" (fork a process that keeps the
//! # caller's descriptors and sleeps until killed), "buffer_too_small",
//! # { absurd_length = 1099511627776 }, { overreport = 16 }, { constant_random = 0 },
//! # { signature = { length = 512, fill = "real" | "garbage" } },
//! # "garbage_value",
//! # { flood = { count = 10000, position = "before" | "after",
//! #             class = "certificate" (default) | "public_key" } }
//! ```
//!
//! Being a PKCS#11 module it is FFI through and through, so `unsafe` is
//! allowed here, in the `ffi` module only: each block is narrow and says
//! which part of the PKCS#11 contract makes it sound, and no panic crosses
//! into the caller.

mod calllog;
mod fakes;
#[allow(unsafe_code)]
mod ffi;
mod plan;
mod rv;
