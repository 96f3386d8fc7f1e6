//! The fault plan: which real module to forward to, where to log calls, and
//! which calls to break and how.

use std::path::{Path, PathBuf};

use cryptoki_sys::*;
use serde::Deserialize;

use crate::rv;

/// The environment variable naming the plan file.
pub const PLAN_VAR: &str = "TESSERA_P11FAULT_PLAN";

/// The module forwarded to when the plan names none.
const DEFAULT_MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";

/// Every function of a PKCS#11 2.40 function list, in list order.
pub const FUNCTIONS: [&str; 68] = [
    "C_Initialize",
    "C_Finalize",
    "C_GetInfo",
    "C_GetFunctionList",
    "C_GetSlotList",
    "C_GetSlotInfo",
    "C_GetTokenInfo",
    "C_GetMechanismList",
    "C_GetMechanismInfo",
    "C_InitToken",
    "C_InitPIN",
    "C_SetPIN",
    "C_OpenSession",
    "C_CloseSession",
    "C_CloseAllSessions",
    "C_GetSessionInfo",
    "C_GetOperationState",
    "C_SetOperationState",
    "C_Login",
    "C_Logout",
    "C_CreateObject",
    "C_CopyObject",
    "C_DestroyObject",
    "C_GetObjectSize",
    "C_GetAttributeValue",
    "C_SetAttributeValue",
    "C_FindObjectsInit",
    "C_FindObjects",
    "C_FindObjectsFinal",
    "C_EncryptInit",
    "C_Encrypt",
    "C_EncryptUpdate",
    "C_EncryptFinal",
    "C_DecryptInit",
    "C_Decrypt",
    "C_DecryptUpdate",
    "C_DecryptFinal",
    "C_DigestInit",
    "C_Digest",
    "C_DigestUpdate",
    "C_DigestKey",
    "C_DigestFinal",
    "C_SignInit",
    "C_Sign",
    "C_SignUpdate",
    "C_SignFinal",
    "C_SignRecoverInit",
    "C_SignRecover",
    "C_VerifyInit",
    "C_Verify",
    "C_VerifyUpdate",
    "C_VerifyFinal",
    "C_VerifyRecoverInit",
    "C_VerifyRecover",
    "C_DigestEncryptUpdate",
    "C_DecryptDigestUpdate",
    "C_SignEncryptUpdate",
    "C_DecryptVerifyUpdate",
    "C_GenerateKey",
    "C_GenerateKeyPair",
    "C_WrapKey",
    "C_UnwrapKey",
    "C_DeriveKey",
    "C_SeedRandom",
    "C_GenerateRandom",
    "C_GetFunctionStatus",
    "C_CancelFunction",
    "C_WaitForSlotEvent",
];

/// A plan file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PlanFile {
    module: Option<PathBuf>,
    log: Option<PathBuf>,
    #[serde(default, rename = "fault")]
    faults: Vec<FaultEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FaultEntry {
    function: String,
    call: Option<u64>,
    action: ActionEntry,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
enum ActionEntry {
    Fail(String),
    SleepMs(u64),
    Hang,
    Abort,
    Linger,
    BufferTooSmall,
    AbsurdLength(u64),
    Overreport(u64),
    Signature {
        length: usize,
        fill: Fill,
    },
    ConstantRandom(u8),
    GarbageValue,
    Flood {
        count: u64,
        position: Position,
        #[serde(default)]
        class: FloodClass,
    },
    TokenFlags(Vec<String>),
}

/// What a signature fault puts in the signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fill {
    /// Pseudo-random bytes.
    Garbage,
    /// The real signature, right-aligned: zero-padded or cut on the left.
    Real,
}

/// Where a flood's fake handles go relative to the token's real objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Position {
    /// Before the real objects (they are pushed past any read limit).
    Before,
    /// After the real objects.
    After,
}

/// Which searches a flood joins, and what its fake objects are.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FloodClass {
    /// X.509 certificate objects whose CKA_VALUE is not DER.
    #[default]
    Certificate,
    /// EC public-key objects whose CKA_EC_POINT is not a point.
    PublicKey,
}

/// What to do to a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Return this code without calling the real module.
    Fail(CK_RV),
    /// Sleep, then forward.
    SleepMs(u64),
    /// Never return: block the calling thread for ever (a token or reader
    /// that stopped answering; PKCS#11 calls cannot be cancelled).
    Hang,
    /// Abort the process (`std::process::abort`): a module that crashes.
    Abort,
    /// Fork a process that keeps every descriptor of the caller and
    /// sleeps until killed (a module that starts a daemon without
    /// detaching it), then forward.
    Linger,
    /// Answer length queries truthfully and every call with a buffer with
    /// CKR_BUFFER_TOO_SMALL.
    BufferTooSmall,
    /// Report this length (or count) for length queries.
    AbsurdLength(u64),
    /// Succeed, but report this many more bytes (or handles, or slots) than
    /// were written into the caller's buffer.
    Overreport(u64),
    /// Return a signature of this length instead of the real one.
    Signature {
        /// Signature length in bytes.
        length: usize,
        /// Its content.
        fill: Fill,
    },
    /// Fill the random buffer with this byte.
    ConstantRandom(u8),
    /// Overwrite every CKA_VALUE read with garbage of the same length.
    GarbageValue,
    /// Add this many fake objects to the searches for their class.
    Flood {
        /// How many fake objects.
        count: u64,
        /// Before or after the real ones.
        position: Position,
        /// Certificates or public keys.
        class: FloodClass,
    },
    /// Report these CK_TOKEN_INFO flags set, on top of the real ones (a
    /// locked PIN, a PIN pad: states SoftHSM never reaches).
    TokenFlags(CK_FLAGS),
}

/// One rule: break `function` (on its `call`-th call only, if given).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    /// The PKCS#11 function name, e.g. `C_Sign`.
    pub function: &'static str,
    /// 1-based call number of that function; `None` for every call.
    pub call: Option<u64>,
    /// What to do.
    pub action: Action,
}

/// A checked plan.
#[derive(Debug)]
pub struct Plan {
    /// The real module to forward to.
    pub module: PathBuf,
    /// The call log, if any.
    pub log: Option<PathBuf>,
    /// The rules, first match wins.
    pub faults: Vec<Fault>,
}

impl Plan {
    /// Reads and checks the plan at `path`.
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|error| format!("cannot read {}: {error}", path.display()))?;
        Self::parse(&text).map_err(|error| format!("{}: {error}", path.display()))
    }

    /// Parses and checks a plan.
    pub fn parse(text: &str) -> Result<Self, String> {
        let file: PlanFile = toml::from_str(text).map_err(|error| error.to_string())?;
        let faults = file
            .faults
            .into_iter()
            .map(Fault::check)
            .collect::<Result<_, _>>()?;
        Ok(Self {
            module: file.module.unwrap_or_else(|| PathBuf::from(DEFAULT_MODULE)),
            log: file.log,
            faults,
        })
    }

    /// The action for the `call`-th call of `function`, if any rule matches.
    pub fn action(&self, function: &str, call: u64) -> Option<Action> {
        self.faults
            .iter()
            .find(|fault| fault.function == function && fault.call.is_none_or(|n| n == call))
            .map(|fault| fault.action)
    }

    /// The flood rule, if any: how many fakes, where, and of which class.
    pub fn flood(&self) -> Option<(u64, Position, FloodClass)> {
        self.faults.iter().find_map(|fault| match fault.action {
            Action::Flood {
                count,
                position,
                class,
            } => Some((count, position, class)),
            _ => None,
        })
    }
}

/// The CK_TOKEN_INFO flags a plan may add, by name.
fn token_flag(name: &str) -> Option<CK_FLAGS> {
    Some(match name {
        "CKF_PROTECTED_AUTHENTICATION_PATH" => CKF_PROTECTED_AUTHENTICATION_PATH,
        "CKF_USER_PIN_COUNT_LOW" => CKF_USER_PIN_COUNT_LOW,
        "CKF_USER_PIN_FINAL_TRY" => CKF_USER_PIN_FINAL_TRY,
        "CKF_USER_PIN_LOCKED" => CKF_USER_PIN_LOCKED,
        "CKF_USER_PIN_TO_BE_CHANGED" => CKF_USER_PIN_TO_BE_CHANGED,
        "CKF_SO_PIN_COUNT_LOW" => CKF_SO_PIN_COUNT_LOW,
        "CKF_SO_PIN_FINAL_TRY" => CKF_SO_PIN_FINAL_TRY,
        "CKF_SO_PIN_LOCKED" => CKF_SO_PIN_LOCKED,
        _ => return None,
    })
}

impl Fault {
    fn check(entry: FaultEntry) -> Result<Self, String> {
        let function = FUNCTIONS
            .iter()
            .find(|name| **name == entry.function)
            .copied()
            .ok_or_else(|| format!("unknown PKCS#11 function {:?}", entry.function))?;
        let action = match entry.action {
            ActionEntry::Fail(name) => Action::Fail(
                rv::code(&name).ok_or_else(|| format!("unknown return code {name:?}"))?,
            ),
            ActionEntry::SleepMs(ms) => Action::SleepMs(ms),
            ActionEntry::Hang => Action::Hang,
            ActionEntry::Abort => Action::Abort,
            ActionEntry::Linger => Action::Linger,
            ActionEntry::BufferTooSmall => Action::BufferTooSmall,
            ActionEntry::AbsurdLength(length) => Action::AbsurdLength(length),
            ActionEntry::Overreport(extra) => Action::Overreport(extra),
            ActionEntry::Signature { length, fill } => Action::Signature { length, fill },
            ActionEntry::ConstantRandom(byte) => Action::ConstantRandom(byte),
            ActionEntry::GarbageValue => Action::GarbageValue,
            ActionEntry::Flood {
                count,
                position,
                class,
            } => Action::Flood {
                count,
                position,
                class,
            },
            ActionEntry::TokenFlags(names) => Action::TokenFlags(
                names
                    .iter()
                    .map(|name| {
                        token_flag(name).ok_or_else(|| format!("unknown token flag {name:?}"))
                    })
                    .try_fold(0, |flags, flag| flag.map(|flag| flags | flag))?,
            ),
        };
        let allowed: &[&str] = match action {
            Action::Fail(_)
            | Action::SleepMs(_)
            | Action::Hang
            | Action::Abort
            | Action::Linger => &FUNCTIONS,
            Action::BufferTooSmall | Action::AbsurdLength(_) => {
                &["C_GetSlotList", "C_GetAttributeValue", "C_Sign"]
            }
            Action::Overreport(_) => &[
                "C_GetSlotList",
                "C_GetAttributeValue",
                "C_Sign",
                "C_FindObjects",
            ],
            Action::Signature { .. } => &["C_Sign"],
            Action::ConstantRandom(_) => &["C_GenerateRandom"],
            Action::GarbageValue => &["C_GetAttributeValue"],
            Action::Flood { .. } => &["C_FindObjects"],
            Action::TokenFlags(_) => &["C_GetTokenInfo"],
        };
        if !allowed.contains(&function) {
            return Err(format!("{action:?} cannot apply to {function}"));
        }
        if matches!(action, Action::Flood { .. }) && entry.call.is_some() {
            return Err("a flood applies to whole searches; drop `call`".to_owned());
        }
        if entry.call == Some(0) {
            return Err("calls are counted from 1".to_owned());
        }
        Ok(Self {
            function,
            call: entry.call,
            action,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_of_public_keys_names_its_class() {
        let plan = Plan::parse(
            r#"
            [[fault]]
            function = "C_FindObjects"
            action = { flood = { count = 40, position = "after", class = "public_key" } }
            "#,
        )
        .unwrap();
        assert_eq!(
            plan.flood(),
            Some((40, Position::After, FloodClass::PublicKey))
        );
        let unknown = r#"
            [[fault]]
            function = "C_FindObjects"
            action = { flood = { count = 1, position = "after", class = "secret_key" } }
            "#;
        assert!(Plan::parse(unknown).is_err());
    }

    #[test]
    fn a_full_plan_parses_and_first_matching_rule_wins() {
        let plan = Plan::parse(
            r#"
            module = "/opt/real.so"
            log = "/tmp/calls.log"
            [[fault]]
            function = "C_Login"
            call = 2
            action = { fail = "CKR_PIN_LOCKED" }
            [[fault]]
            function = "C_Login"
            action = { fail = "0x32" }
            [[fault]]
            function = "C_Sign"
            action = { signature = { length = 512, fill = "real" } }
            [[fault]]
            function = "C_FindObjects"
            action = { flood = { count = 10000, position = "before" } }
            [[fault]]
            function = "C_GetSlotList"
            action = "buffer_too_small"
            [[fault]]
            function = "C_GetTokenInfo"
            action = { token_flags = ["CKF_USER_PIN_LOCKED", "CKF_SO_PIN_FINAL_TRY"] }
            "#,
        )
        .unwrap();
        assert_eq!(plan.module, PathBuf::from("/opt/real.so"));
        assert_eq!(
            plan.action("C_Login", 1),
            Some(Action::Fail(CKR_DEVICE_REMOVED))
        );
        assert_eq!(
            plan.action("C_Login", 2),
            Some(Action::Fail(CKR_PIN_LOCKED))
        );
        assert_eq!(plan.action("C_Logout", 1), None);
        assert_eq!(
            plan.flood(),
            Some((10000, Position::Before, FloodClass::Certificate))
        );
        assert_eq!(
            plan.action("C_GetSlotList", 7),
            Some(Action::BufferTooSmall)
        );
        assert_eq!(
            plan.action("C_GetTokenInfo", 1),
            Some(Action::TokenFlags(
                CKF_USER_PIN_LOCKED | CKF_SO_PIN_FINAL_TRY
            ))
        );
    }

    #[test]
    fn hang_abort_and_linger_apply_to_any_function_and_take_no_argument() {
        let plan = Plan::parse(
            r#"
            [[fault]]
            function = "C_Finalize"
            action = "hang"
            [[fault]]
            function = "C_Sign"
            call = 2
            action = "abort"
            [[fault]]
            function = "C_Initialize"
            action = "abort"
            [[fault]]
            function = "C_GetInfo"
            action = "linger"
            "#,
        )
        .unwrap();
        assert_eq!(plan.action("C_Finalize", 1), Some(Action::Hang));
        assert_eq!(plan.action("C_Finalize", 7), Some(Action::Hang));
        assert_eq!(plan.action("C_Sign", 1), None);
        assert_eq!(plan.action("C_Sign", 2), Some(Action::Abort));
        assert_eq!(plan.action("C_Initialize", 1), Some(Action::Abort));
        assert_eq!(plan.action("C_GetInfo", 3), Some(Action::Linger));
        assert_eq!(plan.flood(), None);
        for wrong in [
            // A unit variant: no table form, no argument.
            "[[fault]]\nfunction = \"C_Sign\"\naction = { hang = 1 }",
            "[[fault]]\nfunction = \"C_Sign\"\naction = { abort = 1 }",
            "[[fault]]\nfunction = \"C_Sign\"\naction = \"hung\"",
            "[[fault]]\nfunction = \"C_Sign\"\ncall = 0\naction = \"hang\"",
            "[[fault]]\nfunction = \"C_Sigh\"\naction = \"abort\"",
        ] {
            assert!(Plan::parse(wrong).is_err(), "{wrong:?} parsed");
        }
    }

    #[test]
    fn mistakes_in_a_plan_are_errors_not_silently_ignored() {
        for (text, expected) in [
            (
                "[[fault]]\nfunction = \"C_Sigh\"\naction = \"buffer_too_small\"",
                "unknown PKCS#11 function",
            ),
            (
                "[[fault]]\nfunction = \"C_Sign\"\naction = { fail = \"CKR_NOPE\" }",
                "unknown return code",
            ),
            (
                "[[fault]]\nfunction = \"C_Login\"\naction = \"garbage_value\"",
                "cannot apply to C_Login",
            ),
            (
                "[[fault]]\nfunction = \"C_Login\"\naction = { overreport = 1 }",
                "cannot apply to C_Login",
            ),
            (
                "[[fault]]\nfunction = \"C_Sign\"\ncall = 0\naction = { sleep_ms = 1 }",
                "counted from 1",
            ),
            (
                "[[fault]]\nfunction = \"C_GetTokenInfo\"\naction = { token_flags = [\"CKF_PIN_GONE\"] }",
                "unknown token flag",
            ),
            (
                "[[fault]]\nfunction = \"C_Login\"\naction = { token_flags = [] }",
                "cannot apply to C_Login",
            ),
            ("modul = \"/x.so\"", "unknown field"),
        ] {
            match Plan::parse(text) {
                Ok(plan) => panic!("{text:?} parsed: {plan:?}"),
                Err(error) => assert!(error.contains(expected), "{text:?}: {error}"),
            }
        }
    }
}
