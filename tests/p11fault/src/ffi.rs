//! The PKCS#11 side: the exported `C_GetFunctionList`, and a function list of
//! wrappers that count and log each call, apply the plan and forward to the
//! real module. Every wrapper body runs under `catch_unwind`; a panic becomes
//! CKR_GENERAL_ERROR instead of unwinding into C.
//!
//! Long on purpose: one short wrapper per PKCS#11 function, all of the same
//! shape, next to the function list that names them; split up, the list and
//! its wrappers would be read in different files.
#![allow(non_snake_case)]

use std::collections::HashMap;
use std::ffi::c_void;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::ptr::{self, null_mut};
use std::slice;
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::Duration;

use cryptoki_sys::*;

use crate::calllog::{self, CallLog};
use crate::fakes::{self, FloodSearch};
use crate::plan::{Action, FloodClass, Plan, Position, PLAN_VAR};

/// Everything a call needs: the plan, the real module, the log.
struct Runtime {
    plan: Plan,
    real: CK_FUNCTION_LIST,
    // Keeps the real module mapped while `real` points into it.
    _library: libloading::Library,
    log: CallLog,
    floods: Mutex<HashMap<CK_SESSION_HANDLE, FloodSearch>>,
}

static RUNTIME: OnceLock<Result<Runtime, String>> = OnceLock::new();

fn runtime() -> Result<&'static Runtime, &'static str> {
    RUNTIME
        .get_or_init(|| {
            let runtime = Runtime::start();
            if let Err(error) = &runtime {
                // The caller only sees CKR_GENERAL_ERROR; say why once.
                eprintln!("tessera-p11fault: {error}");
            }
            runtime
        })
        .as_ref()
        .map_err(String::as_str)
}

type GetFunctionList = unsafe extern "C" fn(*mut *mut CK_FUNCTION_LIST) -> CK_RV;

impl Runtime {
    fn start() -> Result<Self, String> {
        let path = std::env::var_os(PLAN_VAR).ok_or_else(|| format!("{PLAN_VAR} is not set"))?;
        let plan = Plan::load(Path::new(&path))?;
        let log = CallLog::open(plan.log.as_deref())?;
        let module = plan.module.display().to_string();
        // SAFETY: loading runs the library's initialisers; the plan names the
        // PKCS#11 module the test wants behind us, and this module itself is
        // only ever loaded by tests.
        let library = unsafe { libloading::Library::new(&plan.module) }
            .map_err(|error| format!("cannot load {module}: {error}"))?;
        let mut list: *mut CK_FUNCTION_LIST = null_mut();
        {
            // SAFETY: every PKCS#11 module exports C_GetFunctionList with this
            // type (PKCS#11 2.40 section 5.2).
            let get_function_list =
                unsafe { library.get::<GetFunctionList>(b"C_GetFunctionList\0") }
                    .map_err(|error| format!("{module}: {error}"))?;
            // SAFETY: `list` is valid for writing one pointer.
            let rv = unsafe { get_function_list(&mut list) };
            if rv != CKR_OK || list.is_null() {
                return Err(format!("{module}: C_GetFunctionList returned {rv:#x}"));
            }
        }
        // SAFETY: on success `list` points to the module's function list,
        // valid while the library stays loaded; we copy it.
        let real = unsafe { list.read() };
        Ok(Self {
            plan,
            real,
            _library: library,
            log,
            floods: Mutex::default(),
        })
    }

    fn floods(&self) -> std::sync::MutexGuard<'_, HashMap<CK_SESSION_HANDLE, FloodSearch>> {
        self.floods.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Calls the real module's `$function`.
macro_rules! forward {
    ($runtime:expr, $function:ident ( $($arg:expr),* $(,)? )) => {
        match $runtime.real.$function {
            // SAFETY: every use passes either its own caller's arguments
            // unchanged, or pointers to live buffers of the lengths it states,
            // which is what the real function's contract asks for.
            Some(real) => unsafe { real($($arg),*) },
            None => CKR_FUNCTION_NOT_SUPPORTED,
        }
    };
}

extern "C" {
    fn fork() -> i32;
    fn pause() -> i32;
}

/// Runs one call: counts it, applies `fail`/`sleep_ms` rules, runs `body`
/// with any other action that matches, and logs the outcome.
fn dispatch(
    function: &'static str,
    body: impl FnOnce(&Runtime, Option<Action>, &mut Vec<String>) -> CK_RV,
) -> CK_RV {
    catch_unwind(AssertUnwindSafe(|| {
        let Ok(runtime) = runtime() else {
            return CKR_GENERAL_ERROR;
        };
        let call = runtime.log.count(function);
        let mut notes = Vec::new();
        let rv = match runtime.plan.action(function, call) {
            Some(Action::Fail(rv)) => {
                notes.push("injected".to_owned());
                rv
            }
            Some(Action::SleepMs(ms)) => {
                std::thread::sleep(Duration::from_millis(ms));
                notes.push(format!("slept_ms={ms}"));
                notes.push("injected".to_owned());
                body(runtime, None, &mut notes)
            }
            // Neither returns: the line is written before, so that the log
            // shows the fault fired.
            Some(Action::Hang) => {
                runtime.log.record_unfinished(function, call, "hang");
                loop {
                    // park may return spuriously; nothing ever unparks us.
                    std::thread::park();
                }
            }
            Some(Action::Abort) => {
                runtime.log.record_unfinished(function, call, "abort");
                std::process::abort()
            }
            Some(Action::Linger) => {
                // SAFETY: fork has no memory-safety preconditions; in a
                // threaded process the child may only make async-signal-safe
                // calls, and it makes nothing but pause() until it is killed.
                let pid = unsafe { fork() };
                if pid == 0 {
                    loop {
                        // SAFETY: pause is async-signal-safe and takes nothing.
                        unsafe { pause() };
                    }
                }
                notes.push(format!("lingering_pid={pid}"));
                notes.push("injected".to_owned());
                body(runtime, None, &mut notes)
            }
            action => body(runtime, action, &mut notes),
        };
        runtime.log.record(function, call, rv, &notes);
        rv
    }))
    .unwrap_or(CKR_GENERAL_ERROR)
}

/// Stores `value` in the caller's out-parameter, if it gave one.
///
/// # Safety
/// `out` is null or valid for writing one CK_ULONG.
unsafe fn store(out: *mut CK_ULONG, value: CK_ULONG) {
    if !out.is_null() {
        // SAFETY: non-null, and valid for a write by this function's contract.
        unsafe { out.write(value) };
    }
}

/// Wrappers that only count, log, fail or sleep, then forward.
macro_rules! forwarders {
    ($($function:ident ( $($arg:ident : $type:ty),* $(,)? );)*) => {$(
        unsafe extern "C" fn $function($($arg: $type),*) -> CK_RV {
            dispatch(stringify!($function), |runtime, _, _| {
                forward!(runtime, $function($($arg),*))
            })
        }
    )*};
}

forwarders! {
    C_Initialize(init_args: *mut c_void);
    C_GetInfo(info: *mut CK_INFO);
    C_GetSlotInfo(slot: CK_SLOT_ID, info: *mut CK_SLOT_INFO);
    C_GetMechanismList(slot: CK_SLOT_ID, list: *mut CK_MECHANISM_TYPE, count: *mut CK_ULONG);
    C_GetMechanismInfo(slot: CK_SLOT_ID, kind: CK_MECHANISM_TYPE, info: *mut CK_MECHANISM_INFO);
    C_InitToken(slot: CK_SLOT_ID, pin: *mut CK_UTF8CHAR, pin_len: CK_ULONG, label: *mut CK_UTF8CHAR);
    C_InitPIN(session: CK_SESSION_HANDLE, pin: *mut CK_UTF8CHAR, pin_len: CK_ULONG);
    C_SetPIN(session: CK_SESSION_HANDLE, old: *mut CK_UTF8CHAR, old_len: CK_ULONG, new: *mut CK_UTF8CHAR, new_len: CK_ULONG);
    C_OpenSession(slot: CK_SLOT_ID, flags: CK_FLAGS, application: *mut c_void, notify: CK_NOTIFY, session: *mut CK_SESSION_HANDLE);
    C_CloseSession(session: CK_SESSION_HANDLE);
    C_CloseAllSessions(slot: CK_SLOT_ID);
    C_GetSessionInfo(session: CK_SESSION_HANDLE, info: *mut CK_SESSION_INFO);
    C_GetOperationState(session: CK_SESSION_HANDLE, state: *mut CK_BYTE, state_len: *mut CK_ULONG);
    C_SetOperationState(session: CK_SESSION_HANDLE, state: *mut CK_BYTE, state_len: CK_ULONG, encryption_key: CK_OBJECT_HANDLE, authentication_key: CK_OBJECT_HANDLE);
    C_Logout(session: CK_SESSION_HANDLE);
    C_CreateObject(session: CK_SESSION_HANDLE, template: *mut CK_ATTRIBUTE, count: CK_ULONG, object: *mut CK_OBJECT_HANDLE);
    C_CopyObject(session: CK_SESSION_HANDLE, object: CK_OBJECT_HANDLE, template: *mut CK_ATTRIBUTE, count: CK_ULONG, new_object: *mut CK_OBJECT_HANDLE);
    C_DestroyObject(session: CK_SESSION_HANDLE, object: CK_OBJECT_HANDLE);
    C_GetObjectSize(session: CK_SESSION_HANDLE, object: CK_OBJECT_HANDLE, size: *mut CK_ULONG);
    C_SetAttributeValue(session: CK_SESSION_HANDLE, object: CK_OBJECT_HANDLE, template: *mut CK_ATTRIBUTE, count: CK_ULONG);
    C_EncryptInit(session: CK_SESSION_HANDLE, mechanism: *mut CK_MECHANISM, key: CK_OBJECT_HANDLE);
    C_Encrypt(session: CK_SESSION_HANDLE, data: *mut CK_BYTE, data_len: CK_ULONG, out: *mut CK_BYTE, out_len: *mut CK_ULONG);
    C_EncryptUpdate(session: CK_SESSION_HANDLE, part: *mut CK_BYTE, part_len: CK_ULONG, out: *mut CK_BYTE, out_len: *mut CK_ULONG);
    C_EncryptFinal(session: CK_SESSION_HANDLE, out: *mut CK_BYTE, out_len: *mut CK_ULONG);
    C_DecryptInit(session: CK_SESSION_HANDLE, mechanism: *mut CK_MECHANISM, key: CK_OBJECT_HANDLE);
    C_Decrypt(session: CK_SESSION_HANDLE, data: *mut CK_BYTE, data_len: CK_ULONG, out: *mut CK_BYTE, out_len: *mut CK_ULONG);
    C_DecryptUpdate(session: CK_SESSION_HANDLE, part: *mut CK_BYTE, part_len: CK_ULONG, out: *mut CK_BYTE, out_len: *mut CK_ULONG);
    C_DecryptFinal(session: CK_SESSION_HANDLE, out: *mut CK_BYTE, out_len: *mut CK_ULONG);
    C_DigestInit(session: CK_SESSION_HANDLE, mechanism: *mut CK_MECHANISM);
    C_Digest(session: CK_SESSION_HANDLE, data: *mut CK_BYTE, data_len: CK_ULONG, out: *mut CK_BYTE, out_len: *mut CK_ULONG);
    C_DigestUpdate(session: CK_SESSION_HANDLE, part: *mut CK_BYTE, part_len: CK_ULONG);
    C_DigestKey(session: CK_SESSION_HANDLE, key: CK_OBJECT_HANDLE);
    C_DigestFinal(session: CK_SESSION_HANDLE, out: *mut CK_BYTE, out_len: *mut CK_ULONG);
    C_SignInit(session: CK_SESSION_HANDLE, mechanism: *mut CK_MECHANISM, key: CK_OBJECT_HANDLE);
    C_SignUpdate(session: CK_SESSION_HANDLE, part: *mut CK_BYTE, part_len: CK_ULONG);
    C_SignFinal(session: CK_SESSION_HANDLE, out: *mut CK_BYTE, out_len: *mut CK_ULONG);
    C_SignRecoverInit(session: CK_SESSION_HANDLE, mechanism: *mut CK_MECHANISM, key: CK_OBJECT_HANDLE);
    C_SignRecover(session: CK_SESSION_HANDLE, data: *mut CK_BYTE, data_len: CK_ULONG, out: *mut CK_BYTE, out_len: *mut CK_ULONG);
    C_VerifyInit(session: CK_SESSION_HANDLE, mechanism: *mut CK_MECHANISM, key: CK_OBJECT_HANDLE);
    C_Verify(session: CK_SESSION_HANDLE, data: *mut CK_BYTE, data_len: CK_ULONG, signature: *mut CK_BYTE, signature_len: CK_ULONG);
    C_VerifyUpdate(session: CK_SESSION_HANDLE, part: *mut CK_BYTE, part_len: CK_ULONG);
    C_VerifyFinal(session: CK_SESSION_HANDLE, signature: *mut CK_BYTE, signature_len: CK_ULONG);
    C_VerifyRecoverInit(session: CK_SESSION_HANDLE, mechanism: *mut CK_MECHANISM, key: CK_OBJECT_HANDLE);
    C_VerifyRecover(session: CK_SESSION_HANDLE, signature: *mut CK_BYTE, signature_len: CK_ULONG, out: *mut CK_BYTE, out_len: *mut CK_ULONG);
    C_DigestEncryptUpdate(session: CK_SESSION_HANDLE, part: *mut CK_BYTE, part_len: CK_ULONG, out: *mut CK_BYTE, out_len: *mut CK_ULONG);
    C_DecryptDigestUpdate(session: CK_SESSION_HANDLE, part: *mut CK_BYTE, part_len: CK_ULONG, out: *mut CK_BYTE, out_len: *mut CK_ULONG);
    C_SignEncryptUpdate(session: CK_SESSION_HANDLE, part: *mut CK_BYTE, part_len: CK_ULONG, out: *mut CK_BYTE, out_len: *mut CK_ULONG);
    C_DecryptVerifyUpdate(session: CK_SESSION_HANDLE, part: *mut CK_BYTE, part_len: CK_ULONG, out: *mut CK_BYTE, out_len: *mut CK_ULONG);
    C_GenerateKey(session: CK_SESSION_HANDLE, mechanism: *mut CK_MECHANISM, template: *mut CK_ATTRIBUTE, count: CK_ULONG, key: *mut CK_OBJECT_HANDLE);
    C_GenerateKeyPair(session: CK_SESSION_HANDLE, mechanism: *mut CK_MECHANISM, public_template: *mut CK_ATTRIBUTE, public_count: CK_ULONG, private_template: *mut CK_ATTRIBUTE, private_count: CK_ULONG, public_key: *mut CK_OBJECT_HANDLE, private_key: *mut CK_OBJECT_HANDLE);
    C_WrapKey(session: CK_SESSION_HANDLE, mechanism: *mut CK_MECHANISM, wrapping_key: CK_OBJECT_HANDLE, key: CK_OBJECT_HANDLE, out: *mut CK_BYTE, out_len: *mut CK_ULONG);
    C_UnwrapKey(session: CK_SESSION_HANDLE, mechanism: *mut CK_MECHANISM, unwrapping_key: CK_OBJECT_HANDLE, wrapped: *mut CK_BYTE, wrapped_len: CK_ULONG, template: *mut CK_ATTRIBUTE, count: CK_ULONG, key: *mut CK_OBJECT_HANDLE);
    C_DeriveKey(session: CK_SESSION_HANDLE, mechanism: *mut CK_MECHANISM, base_key: CK_OBJECT_HANDLE, template: *mut CK_ATTRIBUTE, count: CK_ULONG, key: *mut CK_OBJECT_HANDLE);
    C_SeedRandom(session: CK_SESSION_HANDLE, seed: *mut CK_BYTE, seed_len: CK_ULONG);
    C_GetFunctionStatus(session: CK_SESSION_HANDLE);
    C_CancelFunction(session: CK_SESSION_HANDLE);
    C_WaitForSlotEvent(flags: CK_FLAGS, slot: *mut CK_SLOT_ID, reserved: *mut c_void);
}

/// The function list handed to the application.
static FUNCTION_LIST: CK_FUNCTION_LIST = CK_FUNCTION_LIST {
    version: CK_VERSION {
        major: 2,
        minor: 40,
    },
    C_Initialize: Some(C_Initialize),
    C_Finalize: Some(C_Finalize),
    C_GetInfo: Some(C_GetInfo),
    C_GetFunctionList: Some(C_GetFunctionList),
    C_GetSlotList: Some(C_GetSlotList),
    C_GetSlotInfo: Some(C_GetSlotInfo),
    C_GetTokenInfo: Some(C_GetTokenInfo),
    C_GetMechanismList: Some(C_GetMechanismList),
    C_GetMechanismInfo: Some(C_GetMechanismInfo),
    C_InitToken: Some(C_InitToken),
    C_InitPIN: Some(C_InitPIN),
    C_SetPIN: Some(C_SetPIN),
    C_OpenSession: Some(C_OpenSession),
    C_CloseSession: Some(C_CloseSession),
    C_CloseAllSessions: Some(C_CloseAllSessions),
    C_GetSessionInfo: Some(C_GetSessionInfo),
    C_GetOperationState: Some(C_GetOperationState),
    C_SetOperationState: Some(C_SetOperationState),
    C_Login: Some(C_Login),
    C_Logout: Some(C_Logout),
    C_CreateObject: Some(C_CreateObject),
    C_CopyObject: Some(C_CopyObject),
    C_DestroyObject: Some(C_DestroyObject),
    C_GetObjectSize: Some(C_GetObjectSize),
    C_GetAttributeValue: Some(C_GetAttributeValue),
    C_SetAttributeValue: Some(C_SetAttributeValue),
    C_FindObjectsInit: Some(C_FindObjectsInit),
    C_FindObjects: Some(C_FindObjects),
    C_FindObjectsFinal: Some(C_FindObjectsFinal),
    C_EncryptInit: Some(C_EncryptInit),
    C_Encrypt: Some(C_Encrypt),
    C_EncryptUpdate: Some(C_EncryptUpdate),
    C_EncryptFinal: Some(C_EncryptFinal),
    C_DecryptInit: Some(C_DecryptInit),
    C_Decrypt: Some(C_Decrypt),
    C_DecryptUpdate: Some(C_DecryptUpdate),
    C_DecryptFinal: Some(C_DecryptFinal),
    C_DigestInit: Some(C_DigestInit),
    C_Digest: Some(C_Digest),
    C_DigestUpdate: Some(C_DigestUpdate),
    C_DigestKey: Some(C_DigestKey),
    C_DigestFinal: Some(C_DigestFinal),
    C_SignInit: Some(C_SignInit),
    C_Sign: Some(C_Sign),
    C_SignUpdate: Some(C_SignUpdate),
    C_SignFinal: Some(C_SignFinal),
    C_SignRecoverInit: Some(C_SignRecoverInit),
    C_SignRecover: Some(C_SignRecover),
    C_VerifyInit: Some(C_VerifyInit),
    C_Verify: Some(C_Verify),
    C_VerifyUpdate: Some(C_VerifyUpdate),
    C_VerifyFinal: Some(C_VerifyFinal),
    C_VerifyRecoverInit: Some(C_VerifyRecoverInit),
    C_VerifyRecover: Some(C_VerifyRecover),
    C_DigestEncryptUpdate: Some(C_DigestEncryptUpdate),
    C_DecryptDigestUpdate: Some(C_DecryptDigestUpdate),
    C_SignEncryptUpdate: Some(C_SignEncryptUpdate),
    C_DecryptVerifyUpdate: Some(C_DecryptVerifyUpdate),
    C_GenerateKey: Some(C_GenerateKey),
    C_GenerateKeyPair: Some(C_GenerateKeyPair),
    C_WrapKey: Some(C_WrapKey),
    C_UnwrapKey: Some(C_UnwrapKey),
    C_DeriveKey: Some(C_DeriveKey),
    C_SeedRandom: Some(C_SeedRandom),
    C_GenerateRandom: Some(C_GenerateRandom),
    C_GetFunctionStatus: Some(C_GetFunctionStatus),
    C_CancelFunction: Some(C_CancelFunction),
    C_WaitForSlotEvent: Some(C_WaitForSlotEvent),
};

/// The module's only exported symbol: the list of fault-injecting wrappers.
///
/// # Safety
/// `list` must be null or valid for writing one pointer (PKCS#11 2.40 section 5.2).
#[no_mangle]
pub unsafe extern "C" fn C_GetFunctionList(list: *mut *mut CK_FUNCTION_LIST) -> CK_RV {
    dispatch("C_GetFunctionList", |_, _, _| {
        if list.is_null() {
            return CKR_ARGUMENTS_BAD;
        }
        // Callers never write through the list (the spec makes it read-only).
        let ours = ptr::addr_of!(FUNCTION_LIST).cast_mut();
        // SAFETY: non-null, and the caller gives room for one pointer.
        unsafe { list.write(ours) };
        CKR_OK
    })
}

unsafe extern "C" fn C_Finalize(reserved: *mut c_void) -> CK_RV {
    dispatch("C_Finalize", |runtime, _, notes| {
        let rv = forward!(runtime, C_Finalize(reserved));
        if let Some(kb) = calllog::peak_rss_kb() {
            notes.push(format!("peak_rss_kb={kb}"));
        }
        rv
    })
}

unsafe extern "C" fn C_GetTokenInfo(slot: CK_SLOT_ID, info: *mut CK_TOKEN_INFO) -> CK_RV {
    dispatch("C_GetTokenInfo", |runtime, action, notes| {
        let rv = forward!(runtime, C_GetTokenInfo(slot, info));
        if let Some(Action::TokenFlags(flags)) = action {
            if rv == CKR_OK && !info.is_null() {
                // SAFETY: non-null, and the real module just filled it in.
                unsafe { (*info).flags |= flags };
                notes.push(format!("flags_added={flags:#x}"));
                notes.push("injected".to_owned());
            }
        }
        rv
    })
}

unsafe extern "C" fn C_Login(
    session: CK_SESSION_HANDLE,
    user: CK_USER_TYPE,
    pin: *mut CK_UTF8CHAR,
    pin_len: CK_ULONG,
) -> CK_RV {
    dispatch("C_Login", |runtime, _, notes| {
        // Tests tell a user login from an SO login (PIN unblock) by this note.
        notes.push(
            match user {
                CKU_SO => "user_type=so",
                CKU_USER => "user_type=user",
                CKU_CONTEXT_SPECIFIC => "user_type=context_specific",
                _ => "user_type=other",
            }
            .to_owned(),
        );
        if pin.is_null() {
            notes.push("pin=none".to_owned());
        }
        forward!(runtime, C_Login(session, user, pin, pin_len))
    })
}

unsafe extern "C" fn C_GetSlotList(
    token_present: CK_BBOOL,
    list: *mut CK_SLOT_ID,
    count: *mut CK_ULONG,
) -> CK_RV {
    dispatch("C_GetSlotList", |runtime, action, notes| match action {
        Some(Action::BufferTooSmall) if !list.is_null() => {
            let mut real_count: CK_ULONG = 0;
            let rv = forward!(
                runtime,
                C_GetSlotList(token_present, null_mut(), &mut real_count)
            );
            if rv != CKR_OK {
                return rv;
            }
            // SAFETY: the caller passes `count` for the module to write to.
            unsafe { store(count, real_count) };
            notes.push("injected".to_owned());
            CKR_BUFFER_TOO_SMALL
        }
        Some(Action::AbsurdLength(length)) if list.is_null() => {
            let rv = forward!(runtime, C_GetSlotList(token_present, list, count));
            if rv == CKR_OK {
                // SAFETY: as above.
                unsafe { store(count, length) };
                notes.push("injected".to_owned());
            }
            rv
        }
        Some(Action::Overreport(extra)) if !list.is_null() && !count.is_null() => {
            let rv = forward!(runtime, C_GetSlotList(token_present, list, count));
            if rv == CKR_OK {
                // SAFETY: non-null, and the caller passes it in and out.
                unsafe { store(count, count.read() + extra) };
                notes.push("injected".to_owned());
            }
            rv
        }
        _ => forward!(runtime, C_GetSlotList(token_present, list, count)),
    })
}

/// The caller's attribute template as a slice.
///
/// # Safety
/// `template` is null or points to `count` attributes, and the slice is
/// dropped before anything else (the real module) writes through `template`.
unsafe fn template_slice<'a>(
    template: *mut CK_ATTRIBUTE,
    count: CK_ULONG,
) -> &'a mut [CK_ATTRIBUTE] {
    if template.is_null() {
        return &mut [];
    }
    // SAFETY: non-null, and `count` attributes long by this function's contract.
    unsafe { slice::from_raw_parts_mut(template, count as usize) }
}

/// Answers C_GetAttributeValue for a fake object, as a module must.
fn fake_attributes(
    object: CK_OBJECT_HANDLE,
    class: FloodClass,
    template: &mut [CK_ATTRIBUTE],
) -> CK_RV {
    let mut rv = CKR_OK;
    for attribute in template {
        let Some(value) = fakes::fake_attribute(object, class, attribute.type_) else {
            attribute.ulValueLen = CK_UNAVAILABLE_INFORMATION;
            rv = CKR_ATTRIBUTE_TYPE_INVALID;
            continue;
        };
        let length = value.len() as CK_ULONG;
        if attribute.pValue.is_null() {
            attribute.ulValueLen = length;
        } else if attribute.ulValueLen < length {
            attribute.ulValueLen = CK_UNAVAILABLE_INFORMATION;
            rv = CKR_BUFFER_TOO_SMALL;
        } else {
            // SAFETY: the caller's buffer holds ulValueLen >= value.len() bytes.
            unsafe { slice::from_raw_parts_mut(attribute.pValue.cast::<u8>(), value.len()) }
                .copy_from_slice(&value);
            attribute.ulValueLen = length;
        }
    }
    rv
}

unsafe extern "C" fn C_GetAttributeValue(
    session: CK_SESSION_HANDLE,
    object: CK_OBJECT_HANDLE,
    template: *mut CK_ATTRIBUTE,
    count: CK_ULONG,
) -> CK_RV {
    dispatch("C_GetAttributeValue", |runtime, action, notes| {
        if let Some((_, _, class)) = runtime.plan.flood() {
            if fakes::is_fake_handle(object) {
                notes.push("fake_object".to_owned());
                // SAFETY: the caller passes `count` attributes; nothing else runs meanwhile.
                return fake_attributes(object, class, unsafe { template_slice(template, count) });
            }
        }
        match action {
            Some(Action::BufferTooSmall)
                // SAFETY: the caller passes `count` attributes; the real module is not called.
                if unsafe { template_slice(template, count) }
                    .iter()
                    .any(|attribute| !attribute.pValue.is_null()) =>
            {
                // SAFETY: as above.
                for attribute in unsafe { template_slice(template, count) } {
                    if !attribute.pValue.is_null() {
                        attribute.ulValueLen = CK_UNAVAILABLE_INFORMATION;
                    }
                }
                notes.push("injected".to_owned());
                CKR_BUFFER_TOO_SMALL
            }
            Some(Action::AbsurdLength(length)) => {
                let rv = forward!(runtime, C_GetAttributeValue(session, object, template, count));
                let mut lied = false;
                // SAFETY: the caller passes `count` attributes; the real call is over.
                for attribute in unsafe { template_slice(template, count) } {
                    if attribute.pValue.is_null() && attribute.ulValueLen != CK_UNAVAILABLE_INFORMATION {
                        attribute.ulValueLen = length;
                        lied = true;
                    }
                }
                if lied {
                    notes.push("injected".to_owned());
                }
                rv
            }
            Some(Action::Overreport(extra)) => {
                let rv = forward!(runtime, C_GetAttributeValue(session, object, template, count));
                let mut lied = false;
                // SAFETY: the caller passes `count` attributes; the real call is over.
                for attribute in unsafe { template_slice(template, count) } {
                    if !attribute.pValue.is_null() && attribute.ulValueLen != CK_UNAVAILABLE_INFORMATION {
                        attribute.ulValueLen += extra;
                        lied = true;
                    }
                }
                if lied {
                    notes.push("injected".to_owned());
                }
                rv
            }
            Some(Action::GarbageValue) => {
                let rv = forward!(runtime, C_GetAttributeValue(session, object, template, count));
                // SAFETY: the caller passes `count` attributes; the real call is over.
                for attribute in unsafe { template_slice(template, count) } {
                    if attribute.type_ == CKA_VALUE
                        && !attribute.pValue.is_null()
                        && attribute.ulValueLen != CK_UNAVAILABLE_INFORMATION
                    {
                        let length = attribute.ulValueLen as usize;
                        // SAFETY: the real module just wrote `length` bytes
                        // into this buffer of the caller's.
                        unsafe { slice::from_raw_parts_mut(attribute.pValue.cast::<u8>(), length) }
                            .copy_from_slice(&fakes::garbage(length, object));
                        notes.push("injected".to_owned());
                    }
                }
                rv
            }
            _ => forward!(runtime, C_GetAttributeValue(session, object, template, count)),
        }
    })
}

/// True when a search template asks for objects of class `wanted`.
fn searches_class(template: *const CK_ATTRIBUTE, count: CK_ULONG, wanted: CK_OBJECT_CLASS) -> bool {
    if template.is_null() {
        return false;
    }
    // SAFETY: the caller passes `count` attributes at `template`.
    let attributes = unsafe { slice::from_raw_parts(template, count as usize) };
    attributes.iter().any(|attribute| {
        attribute.type_ == CKA_CLASS
            && !attribute.pValue.is_null()
            && attribute.ulValueLen as usize == size_of::<CK_OBJECT_CLASS>()
            // SAFETY: a CKA_CLASS value of this length is one CK_OBJECT_CLASS,
            // not necessarily aligned.
            && unsafe { attribute.pValue.cast::<CK_OBJECT_CLASS>().read_unaligned() } == wanted
    })
}

unsafe extern "C" fn C_FindObjectsInit(
    session: CK_SESSION_HANDLE,
    template: *mut CK_ATTRIBUTE,
    count: CK_ULONG,
) -> CK_RV {
    dispatch("C_FindObjectsInit", |runtime, _, notes| {
        let rv = forward!(runtime, C_FindObjectsInit(session, template, count));
        if let Some((fakes, position, class)) = runtime.plan.flood() {
            if rv == CKR_OK && searches_class(template, count, fakes::object_class(class)) {
                runtime
                    .floods()
                    .insert(session, FloodSearch::new(fakes, position));
                notes.push("flood".to_owned());
            }
        }
        rv
    })
}

unsafe extern "C" fn C_FindObjects(
    session: CK_SESSION_HANDLE,
    handles: *mut CK_OBJECT_HANDLE,
    max: CK_ULONG,
    found: *mut CK_ULONG,
) -> CK_RV {
    dispatch("C_FindObjects", |runtime, action, notes| {
        let mut floods = runtime.floods();
        let Some(search) = floods.get_mut(&session) else {
            drop(floods);
            let rv = forward!(runtime, C_FindObjects(session, handles, max, found));
            if let (CKR_OK, Some(Action::Overreport(extra))) = (rv, action) {
                if !found.is_null() {
                    // SAFETY: non-null, and the real module just wrote it.
                    unsafe { store(found, found.read() + extra) };
                    notes.push("injected".to_owned());
                }
            }
            return rv;
        };
        if handles.is_null() || found.is_null() {
            return CKR_ARGUMENTS_BAD;
        }
        // SAFETY: the caller gives room for `max` handles.
        let out = unsafe { slice::from_raw_parts_mut(handles, max as usize) };
        let mut fakes = 0;
        if search.position() == Position::Before {
            fakes += search.fill_fakes(out);
        }
        let mut filled = fakes;
        if filled < out.len() && !search.real_done {
            let rest = &mut out[filled..];
            let mut got: CK_ULONG = 0;
            let room = rest.len() as CK_ULONG;
            let rv = forward!(
                runtime,
                C_FindObjects(session, rest.as_mut_ptr(), room, &mut got)
            );
            if rv != CKR_OK {
                return rv;
            }
            search.real_done = got < room;
            filled += got.min(room) as usize;
        }
        if search.position() == Position::After {
            let more = search.fill_fakes(&mut out[filled..]);
            fakes += more;
            filled += more;
        }
        // SAFETY: non-null, and the caller passes it for the count.
        unsafe { found.write(filled as CK_ULONG) };
        if fakes > 0 {
            notes.push(format!("fake_handles={fakes}"));
            notes.push("injected".to_owned());
        }
        CKR_OK
    })
}

unsafe extern "C" fn C_FindObjectsFinal(session: CK_SESSION_HANDLE) -> CK_RV {
    dispatch("C_FindObjectsFinal", |runtime, _, _| {
        runtime.floods().remove(&session);
        forward!(runtime, C_FindObjectsFinal(session))
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// The real module's signature over `data`, for a forged one to start from.
fn real_signature(
    runtime: &Runtime,
    session: CK_SESSION_HANDLE,
    data: *mut CK_BYTE,
    data_len: CK_ULONG,
) -> Result<Vec<u8>, CK_RV> {
    let mut length: CK_ULONG = 0;
    let rv = forward!(
        runtime,
        C_Sign(session, data, data_len, null_mut(), &mut length)
    );
    if rv != CKR_OK {
        return Err(rv);
    }
    let mut signature = vec![0; length as usize];
    let rv = forward!(
        runtime,
        C_Sign(session, data, data_len, signature.as_mut_ptr(), &mut length)
    );
    if rv != CKR_OK {
        return Err(rv);
    }
    signature.truncate(length as usize);
    Ok(signature)
}

unsafe extern "C" fn C_Sign(
    session: CK_SESSION_HANDLE,
    data: *mut CK_BYTE,
    data_len: CK_ULONG,
    signature: *mut CK_BYTE,
    signature_len: *mut CK_ULONG,
) -> CK_RV {
    dispatch("C_Sign", |runtime, action, notes| {
        if !data.is_null() {
            // SAFETY: the caller passes `data_len` bytes at `data`.
            let input = unsafe { slice::from_raw_parts(data, data_len as usize) };
            // The input in the log lets tests check that each challenge is fresh.
            notes.push(format!("data={}", hex(&input[..input.len().min(64)])));
        }
        if signature_len.is_null() {
            return forward!(
                runtime,
                C_Sign(session, data, data_len, signature, signature_len)
            );
        }
        // SAFETY: non-null, and the caller passes it in and out (section 5.2).
        let room = unsafe { signature_len.read() };
        match action {
            Some(Action::BufferTooSmall) if !signature.is_null() => {
                let mut real_length: CK_ULONG = 0;
                // A length query keeps the real operation alive, as the
                // application will expect after BUFFER_TOO_SMALL.
                let rv = forward!(
                    runtime,
                    C_Sign(session, data, data_len, null_mut(), &mut real_length)
                );
                if rv != CKR_OK {
                    return rv;
                }
                // SAFETY: checked non-null above.
                unsafe { store(signature_len, real_length) };
                notes.push("injected".to_owned());
                CKR_BUFFER_TOO_SMALL
            }
            Some(Action::AbsurdLength(length)) if signature.is_null() => {
                let rv = forward!(
                    runtime,
                    C_Sign(session, data, data_len, signature, signature_len)
                );
                if rv == CKR_OK {
                    // SAFETY: checked non-null above.
                    unsafe { store(signature_len, length) };
                    notes.push("injected".to_owned());
                }
                rv
            }
            Some(Action::Overreport(extra)) if !signature.is_null() => {
                let rv = forward!(
                    runtime,
                    C_Sign(session, data, data_len, signature, signature_len)
                );
                if rv == CKR_OK {
                    // SAFETY: checked non-null above; the real module set it.
                    unsafe { store(signature_len, signature_len.read() + extra) };
                    notes.push("injected".to_owned());
                }
                rv
            }
            Some(Action::Signature { length, fill }) => {
                if signature.is_null() {
                    let rv = forward!(
                        runtime,
                        C_Sign(session, data, data_len, signature, signature_len)
                    );
                    if rv == CKR_OK {
                        // SAFETY: checked non-null above.
                        unsafe { store(signature_len, length as CK_ULONG) };
                    }
                    return rv;
                }
                if room < length as CK_ULONG {
                    // SAFETY: checked non-null above.
                    unsafe { store(signature_len, length as CK_ULONG) };
                    return CKR_BUFFER_TOO_SMALL;
                }
                let real = match real_signature(runtime, session, data, data_len) {
                    Ok(real) => real,
                    Err(rv) => return rv,
                };
                let forged = fakes::forge_signature(&real, length, fill);
                // SAFETY: the caller's buffer holds `room` >= `length` bytes.
                unsafe { slice::from_raw_parts_mut(signature, length) }.copy_from_slice(&forged);
                // SAFETY: checked non-null above.
                unsafe { store(signature_len, length as CK_ULONG) };
                notes.push(format!("signature_len={length}"));
                notes.push("injected".to_owned());
                CKR_OK
            }
            _ => {
                let rv = forward!(
                    runtime,
                    C_Sign(session, data, data_len, signature, signature_len)
                );
                if rv == CKR_OK && !signature.is_null() {
                    // SAFETY: checked non-null above; the real module set it.
                    let length = unsafe { signature_len.read() };
                    notes.push(format!("signature_len={length}"));
                }
                rv
            }
        }
    })
}

unsafe extern "C" fn C_GenerateRandom(
    session: CK_SESSION_HANDLE,
    out: *mut CK_BYTE,
    out_len: CK_ULONG,
) -> CK_RV {
    dispatch("C_GenerateRandom", |runtime, action, notes| match action {
        Some(Action::ConstantRandom(byte)) if !out.is_null() => {
            // SAFETY: the caller's buffer holds `out_len` bytes.
            unsafe { slice::from_raw_parts_mut(out, out_len as usize) }.fill(byte);
            notes.push("injected".to_owned());
            CKR_OK
        }
        _ => forward!(runtime, C_GenerateRandom(session, out, out_len)),
    })
}
