//! Test support: runs PAM operations through the real libpam with
//! `pam_start_confdir`, so tests use service files in a scratch directory,
//! and answers the conversation from a script. Every message and result is
//! printed to stdout as one JSON object per line.
//!
//! This binary is not shipped; it needs unsafe code to call libpam, which is
//! why the workspace's `unsafe_code` lint is relaxed here and only here
//! outside the module's FFI.
#![allow(unsafe_code)]
#![allow(clippy::print_stdout)]

use std::cell::RefCell;
use std::collections::VecDeque;
use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::process::ExitCode;
use std::ptr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use clap::Parser;
use serde_json::json;

const PAM_SUCCESS: c_int = 0;
const PAM_CONV_ERR: c_int = 19;
const PAM_BUF_ERR: c_int = 5;
const PAM_USER: c_int = 2;

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

#[repr(C)]
struct PamConv {
    conv: Option<
        unsafe extern "C" fn(
            c_int,
            *mut *const PamMessage,
            *mut *mut PamResponse,
            *mut c_void,
        ) -> c_int,
    >,
    appdata_ptr: *mut c_void,
}

#[link(name = "pam")]
extern "C" {
    fn pam_getenv(pamh: *mut c_void, name: *const c_char) -> *const c_char;
    fn pam_start_confdir(
        service: *const c_char,
        user: *const c_char,
        conv: *const PamConv,
        confdir: *const c_char,
        pamh: *mut *mut c_void,
    ) -> c_int;
    fn pam_end(pamh: *mut c_void, status: c_int) -> c_int;
    fn pam_authenticate(pamh: *mut c_void, flags: c_int) -> c_int;
    fn pam_acct_mgmt(pamh: *mut c_void, flags: c_int) -> c_int;
    fn pam_setcred(pamh: *mut c_void, flags: c_int) -> c_int;
    fn pam_open_session(pamh: *mut c_void, flags: c_int) -> c_int;
    fn pam_close_session(pamh: *mut c_void, flags: c_int) -> c_int;
    fn pam_chauthtok(pamh: *mut c_void, flags: c_int) -> c_int;
    fn pam_get_item(pamh: *const c_void, item_type: c_int, item: *mut *const c_void) -> c_int;
    fn pam_putenv(pamh: *mut c_void, name_value: *const c_char) -> c_int;
    fn pam_getenvlist(pamh: *mut c_void) -> *mut *mut c_char;
}

/// PAM return code names, for readable test output.
fn code_name(code: c_int) -> &'static str {
    const NAMES: [&str; 32] = [
        "PAM_SUCCESS",
        "PAM_OPEN_ERR",
        "PAM_SYMBOL_ERR",
        "PAM_SERVICE_ERR",
        "PAM_SYSTEM_ERR",
        "PAM_BUF_ERR",
        "PAM_PERM_DENIED",
        "PAM_AUTH_ERR",
        "PAM_CRED_INSUFFICIENT",
        "PAM_AUTHINFO_UNAVAIL",
        "PAM_USER_UNKNOWN",
        "PAM_MAXTRIES",
        "PAM_NEW_AUTHTOK_REQD",
        "PAM_ACCT_EXPIRED",
        "PAM_SESSION_ERR",
        "PAM_CRED_UNAVAIL",
        "PAM_CRED_EXPIRED",
        "PAM_CRED_ERR",
        "PAM_NO_MODULE_DATA",
        "PAM_CONV_ERR",
        "PAM_AUTHTOK_ERR",
        "PAM_AUTHTOK_RECOVERY_ERR",
        "PAM_AUTHTOK_LOCK_BUSY",
        "PAM_AUTHTOK_DISABLE_AGING",
        "PAM_TRY_AGAIN",
        "PAM_IGNORE",
        "PAM_ABORT",
        "PAM_AUTHTOK_EXPIRED",
        "PAM_MODULE_UNKNOWN",
        "PAM_BAD_ITEM",
        "PAM_CONV_AGAIN",
        "PAM_INCOMPLETE",
    ];
    usize::try_from(code)
        .ok()
        .and_then(|index| NAMES.get(index))
        .copied()
        .unwrap_or("PAM_UNKNOWN")
}

#[derive(Parser, Debug)]
#[command(about = "Run PAM operations through real libpam with a scripted conversation")]
struct Cli {
    /// Directory holding the PAM service files.
    #[arg(long)]
    confdir: String,
    /// PAM service name (a file in --confdir).
    #[arg(long)]
    service: String,
    /// PAM_USER to start with; omit to start without a user (GDM smart-card style).
    #[arg(long)]
    user: Option<String>,
    /// PAM_USER as hexadecimal bytes, for names that are not valid UTF-8.
    #[arg(long, conflicts_with = "user")]
    user_hex: Option<String>,
    /// Answers to prompts, in order.
    #[arg(long = "answer")]
    answers: Vec<String>,
    /// Operations to run in order: authenticate, acct_mgmt, setcred,
    /// open_session, close_session, chauthtok; also `env=NAME` (print a PAM
    /// environment variable) and `wait` (hold the transaction open until
    /// standard input closes) and `pause` (wait for one line on standard input,
    /// then go on).
    #[arg(long = "op", default_value = "authenticate")]
    ops: Vec<String>,
    /// PAM environment variables (NAME=VALUE) to set before the operations.
    #[arg(long = "env")]
    env: Vec<String>,
    /// Benchmark: run pam_start_confdir, pam_authenticate and pam_end this
    /// many times in this process (the module is loaded and unloaded each
    /// time, as login and sudo do) and print each duration.
    #[arg(long, default_value_t = 0)]
    repeat: usize,
    /// With --repeat: more services to alternate with --service, round by round.
    #[arg(long = "alternate")]
    alternates: Vec<String>,
    /// With --repeat: time pam_start_confdir + pam_end only, which load and
    /// unload the service's modules, without pam_authenticate.
    #[arg(long)]
    load_only: bool,
    /// Stop at the first operation that does not return PAM_SUCCESS.
    #[arg(long)]
    stop_on_failure: bool,
    /// Reap every child in a SIGCHLD handler (`waitpid(-1, WNOHANG)` in a
    /// loop), as sudo and GDM do: the module must not rely on reaping its
    /// helper itself.
    #[arg(long, conflicts_with = "ignore_sigchld")]
    reap_children: bool,
    /// Set SIGCHLD to SIG_IGN, so the kernel reaps children at once and
    /// `waitpid` fails with ECHILD.
    #[arg(long)]
    ignore_sigchld: bool,
}

/// SIGCHLD signals [`reap_children`] handled.
static SIGCHLD_SEEN: AtomicUsize = AtomicUsize::new(0);
/// Children [`reap_children`] reaped (it races the module's own waitpid).
static REAPED: AtomicUsize = AtomicUsize::new(0);

/// SIGCHLD handler of `--reap-children`: reaps whatever has ended. Only
/// async-signal-safe calls; errno is restored for the interrupted code.
extern "C" fn reap_children(_signal: c_int) {
    SIGCHLD_SEEN.fetch_add(1, Ordering::SeqCst);
    // SAFETY: __errno_location returns this thread's errno slot.
    let errno = unsafe { libc::__errno_location() };
    // SAFETY: reads this thread's errno.
    let saved = unsafe { *errno };
    loop {
        // SAFETY: waitpid is async-signal-safe; a null status pointer is allowed.
        let pid = unsafe { libc::waitpid(-1, ptr::null_mut(), libc::WNOHANG) };
        if pid <= 0 {
            break;
        }
        REAPED.fetch_add(1, Ordering::SeqCst);
    }
    // SAFETY: restores this thread's errno.
    unsafe { *errno = saved };
}

/// Installs `handler` (a function or SIG_IGN) for SIGCHLD.
fn set_sigchld(handler: libc::sighandler_t) -> std::io::Result<()> {
    // SAFETY: a zeroed sigaction is valid (empty mask, no flags) before we fill it in.
    let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
    action.sa_sigaction = handler;
    action.sa_flags = libc::SA_RESTART | libc::SA_NOCLDSTOP;
    // SAFETY: valid sigaction struct; the old action is not wanted.
    if unsafe { libc::sigaction(libc::SIGCHLD, &action, ptr::null_mut()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The current SIGCHLD disposition: "default", "ignore" or "handler".
fn sigchld_disposition() -> &'static str {
    // SAFETY: zeroed sigaction is a valid out-buffer; a null new action only queries.
    let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::sigaction(libc::SIGCHLD, ptr::null(), &mut action) } != 0 {
        return "unknown";
    }
    match action.sa_sigaction {
        libc::SIG_DFL => "default",
        libc::SIG_IGN => "ignore",
        _ => "handler",
    }
}

struct Script {
    answers: VecDeque<String>,
}

fn style_name(style: c_int) -> &'static str {
    match style {
        1 => "prompt_echo_off",
        2 => "prompt_echo_on",
        3 => "error",
        4 => "info",
        _ => "unknown",
    }
}

unsafe extern "C" fn scripted_conversation(
    count: c_int,
    messages: *mut *const PamMessage,
    responses: *mut *mut PamResponse,
    appdata: *mut c_void,
) -> c_int {
    let Ok(count) = usize::try_from(count) else {
        return PAM_CONV_ERR;
    };
    // SAFETY: appdata is the &RefCell<Script> main() passed to pam_start_confdir,
    // alive for the whole PAM transaction.
    let script = unsafe { &*appdata.cast::<RefCell<Script>>() };
    // SAFETY: calloc of `count` zeroed responses; libpam's caller frees them.
    let replies = unsafe { libc::calloc(count.max(1), std::mem::size_of::<PamResponse>()) }
        .cast::<PamResponse>();
    if replies.is_null() {
        return PAM_BUF_ERR;
    }
    for index in 0..count {
        // SAFETY: Linux-PAM passes an array of `count` message pointers.
        let message = unsafe { &**messages.add(index) };
        // SAFETY: each message text is a NUL-terminated string.
        let text = unsafe { CStr::from_ptr(message.msg) }.to_string_lossy();
        let is_prompt = matches!(message.msg_style, 1 | 2);
        let answer = if is_prompt {
            script.borrow_mut().answers.pop_front()
        } else {
            None
        };
        println!(
            "{}",
            json!({"event": "message", "style": style_name(message.msg_style), "text": text, "answered": answer.is_some()})
        );
        if is_prompt {
            let Some(answer) = answer else {
                // SAFETY: frees what we allocated above, nothing else refers to it.
                unsafe { free_replies(replies, index) };
                return PAM_CONV_ERR;
            };
            let Ok(answer) = CString::new(answer) else {
                // SAFETY: as above.
                unsafe { free_replies(replies, index) };
                return PAM_CONV_ERR;
            };
            // SAFETY: strdup copies into malloc'd memory that libpam's caller frees.
            unsafe { (*replies.add(index)).resp = libc::strdup(answer.as_ptr()) };
        }
    }
    // SAFETY: `responses` is libpam's out-pointer.
    unsafe { *responses = replies };
    PAM_SUCCESS
}

/// Frees the first `filled` answers and the array after a failed conversation.
unsafe fn free_replies(replies: *mut PamResponse, filled: usize) {
    for index in 0..filled {
        // SAFETY: the caller guarantees `filled` initialised entries.
        unsafe { libc::free((*replies.add(index)).resp.cast()) };
    }
    // SAFETY: the array came from calloc.
    unsafe { libc::free(replies.cast()) };
}

/// `hex` as bytes: pairs of hexadecimal digits.
fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|index| u8::from_str_radix(hex.get(index..index + 2)?, 16).ok())
        .collect()
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let sigchld = if cli.reap_children {
        Some(reap_children as extern "C" fn(c_int) as libc::sighandler_t)
    } else if cli.ignore_sigchld {
        Some(libc::SIG_IGN)
    } else {
        None
    };
    if let Some(handler) = sigchld {
        if let Err(error) = set_sigchld(handler) {
            eprintln!("cannot set the SIGCHLD disposition: {error}");
            return ExitCode::from(2);
        }
    }
    let script = RefCell::new(Script {
        answers: cli.answers.into_iter().collect(),
    });
    let conversation = PamConv {
        conv: Some(scripted_conversation),
        appdata_ptr: (&script as *const RefCell<Script>).cast_mut().cast(),
    };
    let cli_service_name = cli.service.clone();
    let (Ok(service), Ok(confdir)) = (CString::new(cli.service), CString::new(cli.confdir)) else {
        eprintln!("service and confdir must not contain NUL");
        return ExitCode::from(2);
    };
    let user_bytes = match (&cli.user, &cli.user_hex) {
        (_, Some(hex)) => match decode_hex(hex) {
            Some(bytes) => Some(bytes),
            None => {
                eprintln!("--user-hex takes an even number of hexadecimal digits");
                return ExitCode::from(2);
            }
        },
        (Some(user), None) => Some(user.clone().into_bytes()),
        (None, None) => None,
    };
    let user = match user_bytes.map(CString::new).transpose() {
        Ok(user) => user,
        Err(_) => {
            eprintln!("user must not contain NUL");
            return ExitCode::from(2);
        }
    };
    if cli.repeat > 0 {
        let mut services = vec![(cli_service_name.clone(), service.clone())];
        for alternate in &cli.alternates {
            let Ok(name) = CString::new(alternate.as_str()) else {
                eprintln!("service names must not contain NUL");
                return ExitCode::from(2);
            };
            services.push((alternate.clone(), name));
        }
        let initial: VecDeque<String> = script.borrow().answers.clone();
        let mut micros: Vec<Vec<u64>> = vec![Vec::with_capacity(cli.repeat); services.len()];
        for _ in 0..cli.repeat {
            for (index, (name, service)) in services.iter().enumerate() {
                script.borrow_mut().answers = initial.clone();
                let started = Instant::now();
                let mut handle: *mut c_void = ptr::null_mut();
                // SAFETY: as for the single run below; the handle is ended in this iteration.
                let rc = unsafe {
                    let rc = pam_start_confdir(
                        service.as_ptr(),
                        user.as_ref().map_or(ptr::null(), |u| u.as_ptr()),
                        &conversation,
                        confdir.as_ptr(),
                        &mut handle,
                    );
                    if rc != PAM_SUCCESS {
                        rc
                    } else if cli.load_only {
                        pam_end(handle, PAM_SUCCESS)
                    } else {
                        let rc = pam_authenticate(handle, 0);
                        pam_end(handle, rc);
                        rc
                    }
                };
                if rc != PAM_SUCCESS {
                    println!(
                        "{}",
                        json!({"event": "bench", "service": name, "error": code_name(rc)})
                    );
                    return ExitCode::from(1);
                }
                micros[index].push(started.elapsed().as_micros() as u64);
            }
        }
        for ((name, _), micros) in services.iter().zip(micros) {
            println!(
                "{}",
                json!({"event": "bench", "service": name, "micros": micros})
            );
        }
        // Peak resident memory of this process, for the footprint benchmark.
        let peak_kib = std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|status| {
                status
                    .lines()
                    .find_map(|line| line.strip_prefix("VmHWM:"))
                    .and_then(|value| {
                        value
                            .trim()
                            .trim_end_matches("kB")
                            .trim()
                            .parse::<u64>()
                            .ok()
                    })
            });
        println!("{}", json!({"event": "memory", "peak_kib": peak_kib}));
        return ExitCode::SUCCESS;
    }
    let mut handle: *mut c_void = ptr::null_mut();
    // SAFETY: all strings are NUL-terminated and outlive the call; the
    // conversation struct and the script outlive the transaction (pam_end below).
    let rc = unsafe {
        pam_start_confdir(
            service.as_ptr(),
            user.as_ref().map_or(ptr::null(), |u| u.as_ptr()),
            &conversation,
            confdir.as_ptr(),
            &mut handle,
        )
    };
    if rc != PAM_SUCCESS {
        println!(
            "{}",
            json!({"event": "start", "code": rc, "name": code_name(rc)})
        );
        return ExitCode::from(1);
    }
    for variable in &cli.env {
        let Ok(variable) = CString::new(variable.as_str()) else {
            eprintln!("--env must not contain NUL");
            return ExitCode::from(2);
        };
        // SAFETY: live handle; libpam copies the string.
        let rc = unsafe { pam_putenv(handle, variable.as_ptr()) };
        if rc != PAM_SUCCESS {
            eprintln!("pam_putenv failed: {}", code_name(rc));
            return ExitCode::from(2);
        }
    }
    let mut last = PAM_SUCCESS;
    for op in &cli.ops {
        if let Some(name) = op.strip_prefix("env=") {
            let Ok(name) = CString::new(name) else {
                eprintln!("variable name must not contain NUL");
                continue;
            };
            // SAFETY: live handle; pam_getenv returns NULL or a string owned by libpam.
            let value = unsafe {
                let value = pam_getenv(handle, name.as_ptr());
                (!value.is_null()).then(|| CStr::from_ptr(value).to_string_lossy().into_owned())
            };
            println!(
                "{}",
                json!({"event": "env", "name": name.to_string_lossy(), "value": value})
            );
            continue;
        }
        if op == "pause" {
            println!("{}", json!({"event": "paused"}));
            let mut line = String::new();
            let _ = std::io::stdin().read_line(&mut line);
            continue;
        }
        if op == "wait" {
            println!("{}", json!({"event": "waiting"}));
            let mut sink = Vec::new();
            let _ = std::io::Read::read_to_end(&mut std::io::stdin().lock(), &mut sink);
            continue;
        }
        let started = Instant::now();
        // SAFETY: `handle` is the live handle from pam_start_confdir.
        let rc = unsafe {
            match op.as_str() {
                "authenticate" => pam_authenticate(handle, 0),
                "acct_mgmt" => pam_acct_mgmt(handle, 0),
                "setcred" => pam_setcred(handle, 0x0002),
                "open_session" => pam_open_session(handle, 0),
                "close_session" => pam_close_session(handle, 0),
                "chauthtok" => pam_chauthtok(handle, 0),
                other => {
                    eprintln!("unknown operation {other}");
                    pam_end(handle, PAM_SUCCESS);
                    return ExitCode::from(2);
                }
            }
        };
        let micros = started.elapsed().as_micros() as u64;
        println!(
            "{}",
            json!({"event": "result", "op": op, "code": rc, "name": code_name(rc), "micros": micros})
        );
        last = rc;
        if rc != PAM_SUCCESS && cli.stop_on_failure {
            break;
        }
    }
    let mut item: *const c_void = ptr::null();
    // SAFETY: live handle, valid out-pointer; PAM_USER is a C string or NULL.
    let user_now = unsafe {
        if pam_get_item(handle, PAM_USER, &mut item) == PAM_SUCCESS && !item.is_null() {
            Some(
                CStr::from_ptr(item.cast::<c_char>())
                    .to_string_lossy()
                    .into_owned(),
            )
        } else {
            None
        }
    };
    println!("{}", json!({"event": "user", "user": user_now}));
    let mut environment = Vec::new();
    // SAFETY: pam_getenvlist returns a malloc'd NULL-terminated array of
    // malloc'd strings that the caller frees.
    unsafe {
        let list = pam_getenvlist(handle);
        if !list.is_null() {
            let mut index = 0;
            loop {
                let entry = *list.add(index);
                if entry.is_null() {
                    break;
                }
                environment.push(CStr::from_ptr(entry).to_string_lossy().into_owned());
                libc::free(entry.cast());
                index += 1;
            }
            libc::free(list.cast());
        }
    }
    println!("{}", json!({"event": "env", "vars": environment}));
    println!(
        "{}",
        json!({
            "event": "sigchld",
            "disposition": sigchld_disposition(),
            "signals": SIGCHLD_SEEN.load(Ordering::SeqCst),
            "reaped": REAPED.load(Ordering::SeqCst),
        })
    );
    // SAFETY: ends the transaction started above; the handle is not used again.
    unsafe { pam_end(handle, last) };
    ExitCode::SUCCESS
}
