//! libpam calls that pamsm does not wrap: a conversation that wipes the
//! reply, PAM_TTY, setting PAM_USER.

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::ptr;

use pamsm::{Pam, PamError};
use zeroize::{Zeroize, Zeroizing};

const PAM_SUCCESS: c_int = PamError::SUCCESS as c_int;
// Item types of _pam_types.h (pamsm keeps its own enum private).
const PAM_USER: c_int = 2;
const PAM_TTY: c_int = 3;
const PAM_CONV: c_int = 5;

/// PAM message styles (pam_appl.h).
#[derive(Debug, Clone, Copy)]
#[repr(i32)]
pub enum MessageStyle {
    /// PAM_PROMPT_ECHO_OFF
    PromptEchoOff = 1,
    /// PAM_PROMPT_ECHO_ON
    PromptEchoOn = 2,
    /// PAM_ERROR_MSG
    ErrorMsg = 3,
    /// PAM_TEXT_INFO
    TextInfo = 4,
}

#[repr(C)]
struct PamMessage {
    msg_style: c_int,
    msg: *const c_char,
}

#[repr(C)]
struct PamResponse {
    resp: *mut c_char,
    resp_retcode: c_int,
}

type ConvFunction = unsafe extern "C" fn(
    num_msg: c_int,
    msg: *mut *const PamMessage,
    resp: *mut *mut PamResponse,
    appdata_ptr: *mut c_void,
) -> c_int;

#[repr(C)]
struct PamConv {
    conv: Option<ConvFunction>,
    appdata_ptr: *mut c_void,
}

#[link(name = "pam")]
extern "C" {
    fn pam_get_item(pamh: *const c_void, item_type: c_int, item: *mut *const c_void) -> c_int;
    fn pam_set_item(pamh: *const c_void, item_type: c_int, item: *const c_void) -> c_int;
}

/// The raw `pam_handle_t *` inside pamsm's handle.
fn raw_handle(pam: &Pam) -> *const c_void {
    // SAFETY: pamsm declares `Pam` as `#[repr(transparent)]` over its
    // `PamHandle` (`*const c_void`), so a `&Pam` points at that pointer.
    unsafe { *(pam as *const Pam).cast::<*const c_void>() }
}

/// Every return code of pam_appl.h, by name: what libpam and the
/// application's conversation function return is matched against these.
const KNOWN_CODES: [PamError; 32] = [
    PamError::SUCCESS,
    PamError::OPEN_ERR,
    PamError::SYMBOL_ERR,
    PamError::SERVICE_ERR,
    PamError::SYSTEM_ERR,
    PamError::BUF_ERR,
    PamError::PERM_DENIED,
    PamError::AUTH_ERR,
    PamError::CRED_INSUFFICIENT,
    PamError::AUTHINFO_UNAVAIL,
    PamError::USER_UNKNOWN,
    PamError::MAXTRIES,
    PamError::NEW_AUTHTOK_REQD,
    PamError::ACCT_EXPIRED,
    PamError::SESSION_ERR,
    PamError::CRED_UNAVAIL,
    PamError::CRED_EXPIRED,
    PamError::CRED_ERR,
    PamError::NO_MODULE_DATA,
    PamError::CONV_ERR,
    PamError::AUTHTOK_ERR,
    PamError::AUTHTOK_RECOVERY_ERR,
    PamError::AUTHTOK_LOCK_BUSY,
    PamError::AUTHTOK_DISABLE_AGING,
    PamError::TRY_AGAIN,
    PamError::IGNORE,
    PamError::ABORT,
    PamError::AUTHTOK_EXPIRED,
    PamError::MODULE_UNKNOWN,
    PamError::BAD_ITEM,
    PamError::CONV_AGAIN,
    PamError::INCOMPLETE,
];

/// A code from libpam or the application as pamsm's enum. A number outside
/// pam_appl.h becomes SYSTEM_ERR (a failure, never success).
fn code(rc: c_int) -> PamError {
    KNOWN_CODES
        .into_iter()
        .find(|known| *known as c_int == rc)
        .unwrap_or(PamError::SYSTEM_ERR)
}

/// Sends one message through the application's conversation function. For
/// prompts, returns the reply copied into zeroizing memory; the C buffer is
/// wiped and freed here (pamsm's `conv()` neither wipes nor frees it).
pub fn converse(
    pam: &Pam,
    style: MessageStyle,
    text: &str,
) -> Result<Option<Zeroizing<Vec<u8>>>, PamError> {
    let handle = raw_handle(pam);
    let mut item: *const c_void = ptr::null();
    // SAFETY: `handle` is the live handle libpam passed to this entry point;
    // `item` is a valid out-pointer. libpam keeps the item alive until pam_end.
    let rc = unsafe { pam_get_item(handle, PAM_CONV, &mut item) };
    if rc != PAM_SUCCESS {
        return Err(code(rc));
    }
    if item.is_null() {
        return Err(PamError::CONV_ERR);
    }
    // SAFETY: PAM_CONV is a `struct pam_conv *` (pam_get_item(3)), non-null here.
    let conversation = unsafe { &*item.cast::<PamConv>() };
    let function = conversation.conv.ok_or(PamError::CONV_ERR)?;

    let message_text = CString::new(text).map_err(|_| PamError::BUF_ERR)?;
    let message = PamMessage {
        msg_style: style as c_int,
        msg: message_text.as_ptr(),
    };
    let mut message_pointer: *const PamMessage = &message;
    let mut responses: *mut PamResponse = ptr::null_mut();
    // SAFETY: one valid message whose text outlives the call; `responses` is a
    // valid out-pointer; `appdata_ptr` is the application's, passed back as
    // the conversation contract requires.
    let rc = unsafe {
        function(
            1,
            &mut message_pointer,
            &mut responses,
            conversation.appdata_ptr,
        )
    };
    if responses.is_null() {
        return if rc == PAM_SUCCESS {
            Ok(None)
        } else {
            Err(PamError::CONV_ERR)
        };
    }
    // SAFETY: the application allocated one `struct pam_response` with
    // malloc (pam_conv(3)); we own it now and read its single element.
    let reply_pointer = unsafe { (*responses).resp };
    let reply = if reply_pointer.is_null() {
        None
    } else {
        // SAFETY: a non-null `resp` is a malloc'd NUL-terminated string.
        let length = unsafe { CStr::from_ptr(reply_pointer) }.to_bytes().len();
        // SAFETY: `length` bytes before the terminator belong to that string,
        // and nothing else refers to it.
        let bytes = unsafe { std::slice::from_raw_parts_mut(reply_pointer.cast::<u8>(), length) };
        let copy = Zeroizing::new(bytes.to_vec());
        bytes.zeroize();
        // SAFETY: `resp` was malloc'd by the application and is freed once, here.
        unsafe { libc::free(reply_pointer.cast()) };
        Some(copy)
    };
    // SAFETY: the response array was malloc'd by the application and is freed once, here.
    unsafe { libc::free(responses.cast()) };
    if rc != PAM_SUCCESS {
        return Err(PamError::CONV_ERR);
    }
    Ok(reply)
}

/// PAM_TTY, if the application set it (pamsm does not expose it).
pub fn tty(pam: &Pam) -> Option<String> {
    let mut item: *const c_void = ptr::null();
    // SAFETY: live handle and a valid out-pointer; PAM_TTY is a C string or NULL.
    let rc = unsafe { pam_get_item(raw_handle(pam), PAM_TTY, &mut item) };
    if rc != PAM_SUCCESS || item.is_null() {
        return None;
    }
    // SAFETY: non-null PAM_TTY points at a NUL-terminated string owned by libpam
    // for the duration of this call; it is copied at once.
    let tty = unsafe { CStr::from_ptr(item.cast::<c_char>()) };
    Some(tty.to_string_lossy().into_owned())
}

/// Sets PAM_USER (when the user was found from the certificate).
pub fn set_user(pam: &Pam, user: &str) -> Result<(), PamError> {
    let name = CString::new(user).map_err(|_| PamError::BUF_ERR)?;
    // SAFETY: live handle; libpam copies the string (pam_set_item(3)), so
    // `name` may be dropped after the call.
    let rc = unsafe { pam_set_item(raw_handle(pam), PAM_USER, name.as_ptr().cast()) };
    if rc == PAM_SUCCESS {
        Ok(())
    } else {
        Err(code(rc))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_known_by_name_and_unknown_ones_fail() {
        assert_eq!(code(PAM_SUCCESS), PamError::SUCCESS);
        // Values from Linux-PAM's _pam_types.h, written out on purpose.
        assert_eq!(code(5), PamError::BUF_ERR);
        assert_eq!(code(19), PamError::CONV_ERR);
        assert_eq!(code(26), PamError::ABORT);
        assert_eq!(code(29), PamError::BAD_ITEM);
        assert_eq!(code(31), PamError::INCOMPLETE);
        assert_eq!(code(-1), PamError::SYSTEM_ERR);
        assert_eq!(code(4242), PamError::SYSTEM_ERR);
        for (value, known) in KNOWN_CODES.into_iter().enumerate() {
            assert_eq!(known as usize, value, "{known:?} out of order");
        }
    }
}
