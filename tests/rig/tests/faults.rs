//! Logins through real libpam with `libtessera_p11fault.so` between
//! `pam_tessera.so` and SoftHSM: every PKCS#11 call of the flow fails in
//! turn, and tokens lie about lengths, signatures, certificates and objects.
//! Whatever the token does, the module fails closed, never crashes the
//! application and never runs without bound.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use tessera_testrig::login::{LoginRig, PIN};
use tessera_testrig::p11fault::{Call, FaultPlan, FaultRig, FaultRun};
use tessera_testrig::softhsm::KeyType;

/// The codes the design allows for a failed login (docs/design.md, "PAM return codes").
const FAIL_CLOSED: [&str; 4] = [
    "PAM_AUTH_ERR",
    "PAM_AUTHINFO_UNAVAIL",
    "PAM_MAXTRIES",
    "PAM_SERVICE_ERR",
];

/// Errors a token or its driver can return from any call.
const ERRORS: [&str; 6] = [
    "CKR_GENERAL_ERROR",
    "CKR_DEVICE_REMOVED",
    "CKR_DEVICE_ERROR",
    "CKR_TOKEN_NOT_PRESENT",
    "CKR_HOST_MEMORY",
    "CKR_FUNCTION_FAILED",
];

fn rig(key_type: KeyType) -> FaultRig {
    let mut rig = LoginRig::new();
    rig.enroll("alice", key_type);
    FaultRig::new(rig)
}

/// Checks what every run must satisfy and returns the PAM result: the
/// harness exited by itself within the bound, and a success always rests on
/// a PIN the real token accepted and a signature the real token made.
fn outcome(run: &FaultRun) -> Result<String, String> {
    if run.timed_out {
        return Err(format!("ran past its bound\n{run}"));
    }
    if !run.status.success() {
        return Err(format!("the application did not exit normally\n{run}"));
    }
    let result = run
        .result()
        .ok_or_else(|| format!("no authenticate result\n{run}"))?;
    if result == "PAM_SUCCESS" {
        let real = |function: &str, check: &dyn Fn(&Call) -> bool| {
            run.calls.iter().any(|call| {
                call.function == function && call.rv == "CKR_OK" && !call.altered() && check(call)
            })
        };
        if !real("C_Login", &|_| true)
            || !real("C_Sign", &|call| call.note("signature_len").is_some())
        {
            return Err(format!("success without a real C_Login and C_Sign\n{run}"));
        }
    }
    Ok(result.to_owned())
}

fn expect_result(run: &FaultRun, expected: &str) {
    assert_eq!(outcome(run).as_deref(), Ok(expected), "{run}");
}

fn expect_fail_closed(run: &FaultRun) {
    let result = outcome(run).unwrap_or_else(|error| panic!("{error}"));
    assert!(FAIL_CLOSED.contains(&result.as_str()), "{result}\n{run}");
}

fn expect_injected(run: &FaultRun, function: &str) {
    assert!(
        run.injected().iter().any(|call| call.function == function),
        "the fault on {function} never fired\n{run}"
    );
}

/// The `[auth] token_timeout` of [`short_timeout_rig`].
const TOKEN_TIMEOUT: Duration = Duration::from_secs(2);

/// What a login whose helper was killed may take beyond [`TOKEN_TIMEOUT`]:
/// starting the helper twice (it re-executes with its environment), the
/// exchanges before the hang, the kill and the harness's exit.
const KILL_MARGIN: Duration = Duration::from_millis(2500);

/// A rig whose helper must answer within [`TOKEN_TIMEOUT`] between two
/// exchanges (the rig checks no revocation, so 2 s is allowed).
fn short_timeout_rig(key_type: KeyType) -> FaultRig {
    let mut rig = LoginRig::new();
    rig.enroll("alice", key_type);
    rig.write_config(&format!(
        "{}[auth]\ntoken_timeout = \"{}s\"\n",
        rig.default_config(),
        TOKEN_TIMEOUT.as_secs()
    ));
    FaultRig::new(rig)
}

/// The pids of `tessera-auth` processes started for the rig whose config is
/// `config` that are still running (zombies have no command line).
fn helpers_left(config: &Path) -> Vec<String> {
    let config = config.as_os_str().as_encoded_bytes();
    let mut left = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let pid = entry.file_name().to_string_lossy().into_owned();
        if !pid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let mut args = cmdline.split(|b| *b == 0);
        let program = args.next().unwrap_or_default();
        if program.ends_with(b"tessera-auth") && args.any(|arg| arg == config) {
            left.push(format!("{pid}: {}", String::from_utf8_lossy(&cmdline)));
        }
    }
    left
}

/// Checks that no helper of `rig` outlived its login.
fn expect_no_helper_left(rig: &FaultRig, run: &FaultRun) {
    // The module waits for the helper's end of the socket to close, so a
    // killed helper is gone (or a zombie) when the harness exits.
    let left = helpers_left(&rig.rig.config_path());
    assert!(left.is_empty(), "helpers still running: {left:?}\n{run}");
}

/// The login ended in PAM_AUTHINFO_UNAVAIL because the helper ran past its
/// deadline and was killed, in time, and the application exited by itself.
fn expect_killed_at_the_deadline(rig: &FaultRig, run: &FaultRun) {
    expect_result(run, "PAM_AUTHINFO_UNAVAIL");
    assert!(
        run.run.logged(
            "pam.helper.failed",
            &format!(
                "the token did not answer within {} s; the helper was killed",
                TOKEN_TIMEOUT.as_secs()
            )
        ),
        "the log does not name the timeout\n{run}"
    );
    assert!(
        said(run, "The smart card did not answer in time"),
        "the user was not told\n{run}"
    );
    assert!(
        run.elapsed >= TOKEN_TIMEOUT && run.elapsed < TOKEN_TIMEOUT + KILL_MARGIN,
        "took {:?}\n{run}",
        run.elapsed
    );
    expect_no_helper_left(rig, run);
}

/// The login ended in PAM_AUTHINFO_UNAVAIL because the helper died before
/// its verdict, at once, and the application exited by itself.
fn expect_died_without_verdict(rig: &FaultRig, run: &FaultRun) {
    expect_result(run, "PAM_AUTHINFO_UNAVAIL");
    assert!(
        run.run
            .logged("pam.helper.failed", "the helper ended without a verdict"),
        "the log does not say the helper died\n{run}"
    );
    assert!(
        run.elapsed < TOKEN_TIMEOUT,
        "a dead helper was waited for: {:?}\n{run}",
        run.elapsed
    );
    expect_no_helper_left(rig, run);
}

/// The first call of each PKCS#11 function a successful login makes, in
/// the order of the clean run.
fn first_calls(rig: &FaultRig) -> (FaultRun, Vec<String>) {
    let baseline = rig.login(&FaultPlan::new(), Some("alice"), &[PIN]);
    expect_result(&baseline, "PAM_SUCCESS");
    let mut functions: Vec<String> = Vec::new();
    for call in &baseline.calls {
        if !functions.contains(&call.function) {
            functions.push(call.function.clone());
        }
    }
    for essential in [
        "C_Initialize",
        "C_GetSlotList",
        "C_GetTokenInfo",
        "C_OpenSession",
        "C_FindObjectsInit",
        "C_FindObjects",
        "C_GetAttributeValue",
        "C_Login",
        "C_SignInit",
        "C_Sign",
        "C_Finalize",
    ] {
        assert!(
            functions.iter().any(|f| f == essential),
            "{essential} missing\n{baseline}"
        );
    }
    (baseline, functions)
}

/// Why a failure of baseline call `index` may leave the login successful,
/// or `None` when the login must fail. Each is a decision: the call cannot
/// change who is authenticated, so tessera ignores or retries it. The login
/// may still fail (a token can stay in a state that breaks later calls), but
/// it must never succeed without a real C_Login and C_Sign.
fn harmless(baseline: &[Call], index: usize) -> Option<&'static str> {
    let call = &baseline[index];
    let before = |function: &str| baseline[..index].iter().any(|c| c.function == function);
    let first_login = baseline.iter().position(|c| c.function == "C_Login")?;
    // The PIN-flag refresh: the session for the login is open, C_Login is next.
    let refresh_start = baseline[..first_login]
        .iter()
        .rposition(|c| c.function == "C_OpenSession")?;
    match call.function.as_str() {
        "C_FindObjectsFinal" => Some(
            "ends a search whose handles were all read; cryptoki ignores its result \
             (a token that keeps the search open then refuses C_SignInit)",
        ),
        "C_CloseSession" => {
            Some("only releases a session; cryptoki's Drop logs and ignores the result")
        }
        "C_Finalize" => Some("unloads the module after the outcome is decided"),
        "C_Logout" if before("C_Sign") => Some("logs out after the signature was verified"),
        "C_GetSlotList" | "C_GetSlotInfo" | "C_GetTokenInfo"
            if index > refresh_start && index < first_login =>
        {
            Some(
                "refreshes the PIN flags for the prompt's warnings (auth::log_in_with_pin); \
                 C_Login still verifies the PIN and the token refuses a locked one",
            )
        }
        "C_GetTokenInfo"
            if index < refresh_start
                && baseline.get(index + 1).map(|next| next.function.as_str())
                    != Some("C_GetSlotInfo") =>
        {
            Some(
                "reads the uninitialised token SoftHSM shows in its spare slot \
                 (Pkcs11Module::tokens skips it, and skips a token reported gone), \
                 not the user's token, whose read is followed by C_GetSlotInfo",
            )
        }
        _ => None,
    }
}

#[test]
fn every_pkcs11_call_of_the_login_flow_fails_closed_under_every_error() {
    let rig = rig(KeyType::Rsa2048);
    let baseline = rig.login(&FaultPlan::new(), Some("alice"), &[PIN]);
    expect_result(&baseline, "PAM_SUCCESS");
    // The flow as discovered from the log must at least prove possession.
    for essential in [
        "C_Initialize",
        "C_OpenSession",
        "C_Login",
        "C_SignInit",
        "C_Sign",
        "C_Finalize",
    ] {
        assert!(
            baseline.called(essential),
            "{essential} missing\n{baseline}"
        );
    }

    let mut rows: Vec<(usize, &str)> = Vec::new();
    for index in 0..baseline.calls.len() {
        rows.extend(ERRORS.iter().map(|code| (index, *code)));
    }
    let exceptions: BTreeSet<&str> = (0..baseline.calls.len())
        .filter_map(|index| harmless(&baseline.calls, index))
        .collect();
    let mut failures = Vec::new();
    let mut used = BTreeSet::new();
    for (index, code) in rows {
        let call = &baseline.calls[index];
        let plan = FaultPlan::new().fail(&call.function, Some(call.call), code);
        let run = rig.login(&plan, Some("alice"), &[PIN]);
        let row = format!("{} #{} -> {code}", call.function, call.call);
        let fired = run
            .injected()
            .iter()
            .any(|c| c.function == call.function && c.call == call.call);
        match (outcome(&run), harmless(&baseline.calls, index)) {
            _ if !fired => failures.push(format!("{row}: the fault never fired\n{run}")),
            (Err(error), _) => failures.push(format!("{row}: {error}")),
            (Ok(result), _) if FAIL_CLOSED.contains(&result.as_str()) => {}
            (Ok(result), Some(reason)) if result == "PAM_SUCCESS" => {
                used.insert(reason);
            }
            (Ok(result), _) => failures.push(format!("{row}: {result}\n{run}")),
        }
    }
    assert!(
        failures.is_empty(),
        "{} rows failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    // Every exception is real: some failure it covers did leave a success.
    assert_eq!(used, exceptions);
}

#[test]
fn every_pkcs11_call_of_the_login_flow_that_hangs_is_killed_at_the_token_timeout() {
    let rig = short_timeout_rig(KeyType::P256);
    let (_, functions) = first_calls(&rig);
    let mut failures = Vec::new();
    for function in &functions {
        let plan = FaultPlan::new().rule(function, Some(1), "\"hang\"");
        let run = rig.login(&plan, Some("alice"), &[PIN]);
        eprintln!("{function} #1 hangs: {:?}", run.elapsed);
        let checked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            expect_injected(&run, function);
            // C_Finalize too: the helper finalises the module when its
            // authentication drops it, before it sends the verdict, so a
            // token that hangs there fails even a verified login closed.
            expect_killed_at_the_deadline(&rig, &run);
            if function == "C_Finalize" {
                assert!(run.called("C_Sign"), "{run}");
            }
        }));
        if let Err(payload) = checked {
            let message = payload
                .downcast_ref::<String>()
                .cloned()
                .unwrap_or_else(|| "(no message)".to_owned());
            failures.push(format!("{function} #1 hangs: {message}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} rows failed:\n{}",
        failures.len(),
        functions.len(),
        failures.join("\n")
    );
}

#[test]
fn every_pkcs11_call_of_the_login_flow_that_aborts_fails_closed_at_once() {
    let rig = short_timeout_rig(KeyType::P256);
    let (_, functions) = first_calls(&rig);
    let mut failures = Vec::new();
    for function in &functions {
        let plan = FaultPlan::new().rule(function, Some(1), "\"abort\"");
        let run = rig.login(&plan, Some("alice"), &[PIN]);
        eprintln!("{function} #1 aborts: {:?}", run.elapsed);
        let checked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            expect_injected(&run, function);
            // C_Finalize comes before the verdict (see the hang table).
            expect_died_without_verdict(&rig, &run);
        }));
        if let Err(payload) = checked {
            let message = payload
                .downcast_ref::<String>()
                .cloned()
                .unwrap_or_else(|| "(no message)".to_owned());
            failures.push(format!("{function} #1 aborts: {message}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} rows failed:\n{}",
        failures.len(),
        functions.len(),
        failures.join("\n")
    );
}

/// How long the module lets a helper that gave its verdict take to exit
/// (ipc/src/client.rs `EXIT_GRACE`).
const EXIT_GRACE: Duration = Duration::from_secs(2);

/// Every PKCS#11 call happens before the verdict (C_Finalize included, see
/// above), so what can outlive it is a process: here the token's module
/// forks one that keeps the helper's descriptors, the socket to the module
/// among them, as a middleware starting an undetached daemon would. The
/// module waits [`EXIT_GRACE`] for the socket to close, kills the helper's
/// process group, and the verdict stands.
#[test]
fn a_helper_that_lingers_after_its_verdict_is_killed_and_the_verdict_stands() {
    let rig = short_timeout_rig(KeyType::P256);
    for (answer, expected) in [(PIN, "PAM_SUCCESS"), ("000000", "PAM_AUTH_ERR")] {
        let plan = FaultPlan::new().rule("C_Initialize", Some(1), "\"linger\"");
        let run = rig.login(&plan, Some("alice"), &[answer]);
        eprintln!("lingering, {expected}: {:?}", run.elapsed);
        expect_injected(&run, "C_Initialize");
        let lingering: u32 = run
            .calls
            .iter()
            .find_map(|call| call.note("lingering_pid")?.parse().ok())
            .unwrap_or_else(|| panic!("no lingering process forked\n{run}"));
        expect_result(&run, expected);
        assert!(
            run.elapsed >= EXIT_GRACE && run.elapsed < EXIT_GRACE + KILL_MARGIN,
            "took {:?}\n{run}",
            run.elapsed
        );
        let stat = std::fs::read_to_string(format!("/proc/{lingering}/stat")).unwrap_or_default();
        assert!(
            stat.is_empty() || stat.contains(") Z "),
            "the lingering process {lingering} survived: {stat}\n{run}"
        );
        expect_no_helper_left(&rig, &run);
    }
}

#[test]
fn pin_errors_from_c_login_map_to_their_pam_codes() {
    let rig = rig(KeyType::P256);
    for (code, expected) in [
        ("CKR_PIN_INCORRECT", "PAM_AUTH_ERR"),
        ("CKR_PIN_LOCKED", "PAM_MAXTRIES"),
        ("CKR_PIN_EXPIRED", "PAM_AUTH_ERR"),
        ("CKR_USER_PIN_NOT_INITIALIZED", "PAM_AUTH_ERR"),
    ] {
        let run = rig.login(
            &FaultPlan::new().fail("C_Login", None, code),
            Some("alice"),
            &[PIN],
        );
        expect_injected(&run, "C_Login");
        expect_result(&run, expected);
        assert!(
            !run.called("C_Sign"),
            "{code}: signed after a failed login\n{run}"
        );
    }
}

#[test]
fn already_logged_in_logs_out_and_verifies_the_pin_again() {
    let rig = rig(KeyType::P256);
    let already = FaultPlan::new().fail("C_Login", Some(1), "CKR_USER_ALREADY_LOGGED_IN");

    let run = rig.login(&already, Some("alice"), &[PIN]);
    expect_result(&run, "PAM_SUCCESS");
    let logins: Vec<String> = run
        .calls
        .iter()
        .filter(|call| call.function == "C_Login" || call.function == "C_Logout")
        .map(|call| format!("{} {} {}", call.function, call.call, call.rv))
        .collect();
    assert_eq!(
        logins[..3],
        [
            "C_Login 1 CKR_USER_ALREADY_LOGGED_IN",
            "C_Logout 1 CKR_OK",
            "C_Login 2 CKR_OK"
        ],
        "{run}"
    );

    // The second C_Login reaches the token with the wrong PIN, which it refuses.
    let run = rig.login(&already, Some("alice"), &["999999"]);
    expect_result(&run, "PAM_AUTH_ERR");
    assert!(
        run.calls
            .iter()
            .any(|c| c.function == "C_Login" && c.call == 2 && c.rv == "CKR_PIN_INCORRECT"),
        "{run}"
    );

    // A token that claims to be logged in whatever happens never gets to sign.
    let forever = FaultPlan::new().fail("C_Login", None, "CKR_USER_ALREADY_LOGGED_IN");
    let run = rig.login(&forever, Some("alice"), &[PIN]);
    expect_fail_closed(&run);
    assert!(!run.called("C_Sign"), "{run}");
}

#[test]
fn buffer_too_small_forever_from_sign_or_attribute_reads_fails_within_the_bound() {
    let rig = rig(KeyType::Rsa2048);
    for function in ["C_Sign", "C_GetAttributeValue"] {
        let plan = FaultPlan::new().rule(function, None, "\"buffer_too_small\"");
        let run = rig.login(&plan, Some("alice"), &[PIN]);
        expect_injected(&run, function);
        expect_fail_closed(&run);
        let retries = run
            .calls
            .iter()
            .filter(|call| call.function == function)
            .count();
        // Bounded, never a loop: at most a size query, a length query and a
        // fetch per object (tessera asks sizes first to refuse absurd ones).
        assert!(
            retries <= 6,
            "{function} was retried {retries} times\n{run}"
        );
    }
}

/// cryptoki 0.12 `Pkcs11::get_slots_with_token` retries C_GetSlotList for
/// as long as it answers CKR_BUFFER_TOO_SMALL (anchor flaws 5 and 10): the
/// helper spins until the module kills it at `token_timeout`.
#[test]
fn buffer_too_small_forever_from_the_slot_list_is_killed_at_the_token_timeout() {
    let rig = short_timeout_rig(KeyType::P256);
    let plan = FaultPlan::new().rule("C_GetSlotList", None, "\"buffer_too_small\"");
    let run = rig.login(&plan, Some("alice"), &[PIN]);
    expect_injected(&run, "C_GetSlotList");
    expect_killed_at_the_deadline(&rig, &run);
    assert!(!run.called("C_Login"), "{run}");
}

/// A length no real token reports: 1 TiB.
const ABSURD: &str = "{ absurd_length = 1099511627776 }";

/// cryptoki 0.12 `Pkcs11::get_slots` allocates whatever slot count
/// C_GetSlotList reports (`vec![0; count]`): 2^40 aborts the process
/// ("memory allocation failed"). That process is the helper now.
#[test]
fn an_absurd_slot_count_kills_the_helper_not_the_application() {
    let rig = short_timeout_rig(KeyType::P256);
    let run = rig.login(
        &FaultPlan::new().rule("C_GetSlotList", Some(1), ABSURD),
        Some("alice"),
        &[PIN],
    );
    expect_injected(&run, "C_GetSlotList");
    expect_died_without_verdict(&rig, &run);
}

#[test]
fn an_absurd_certificate_length_does_not_crash_the_application() {
    let rig = rig(KeyType::P256);
    let run = rig.login(
        &FaultPlan::new().rule("C_GetAttributeValue", None, ABSURD),
        Some("alice"),
        &[PIN],
    );
    expect_injected(&run, "C_GetAttributeValue");
    expect_fail_closed(&run);
}

/// cryptoki 0.12 `Session::sign` allocates whatever signature length the
/// C_Sign length query reports (`vec![0; len]`): 2^40 bytes aborts the
/// process after C_Login. That process is the helper now.
#[test]
fn an_absurd_signature_length_kills_the_helper_not_the_application() {
    let rig = short_timeout_rig(KeyType::P256);
    let run = rig.login(
        &FaultPlan::new().rule("C_Sign", None, ABSURD),
        Some("alice"),
        &[PIN],
    );
    expect_injected(&run, "C_Sign");
    assert!(run.called("C_Login"), "{run}");
    expect_died_without_verdict(&rig, &run);
}

#[test]
fn overreported_signature_and_slot_list_lengths_are_never_read_past_the_buffer() {
    let rig = rig(KeyType::P256);
    for function in ["C_Sign", "C_GetSlotList"] {
        let plan = FaultPlan::new().rule(function, None, "{ overreport = 16 }");
        let (run, reports) = rig.login_under_memcheck(&plan, Some("alice"), &[PIN]);
        expect_injected(&run, function);
        assert!(!run.timed_out && run.status.code() == Some(0), "{run}");
        if let Err(error) = reports {
            panic!("{function}: {error}\n{run}");
        }
        // cryptoki keeps the buffer it allocated: the bytes used are the real ones.
        assert_eq!(run.result(), Some("PAM_SUCCESS"), "{run}");
    }
}

#[test]
#[ignore = "BUG (not a crash, so the helper does not fix it): cryptoki 0.12 Session::get_attributes \
            (used by token::Pkcs11Module::certificates) builds each value with \
            slice::from_raw_parts(pValue, ulValueLen) using the length the module reports after the fetch, \
            without checking it against the buffer it allocated: a module that reports 16 bytes more than \
            it wrote makes the helper read past a heap block (memcheck, following into tessera-auth: \
            invalid read in Attribute::try_from, anchor flaw 7). Out-of-bounds bytes may end up in the \
            certificate that is parsed; the fix belongs in core/src/token.rs (read attributes without \
            cryptoki's get_attributes, or check lengths first)"]
fn an_overreported_certificate_length_is_never_read_past_the_buffer() {
    let rig = rig(KeyType::P256);
    let plan = FaultPlan::new().rule("C_GetAttributeValue", None, "{ overreport = 16 }");
    let (run, reports) = rig.login_under_memcheck(&plan, Some("alice"), &[PIN]);
    expect_injected(&run, "C_GetAttributeValue");
    assert_eq!(run.status.code(), Some(0), "{run}");
    if let Err(error) = reports {
        panic!("{error}\n{run}");
    }
    expect_fail_closed(&run);
}

/// C_FindObjects reports more handles than the caller had room for.
fn overreported_object_count() -> FaultPlan {
    FaultPlan::new().rule("C_FindObjects", Some(1), "{ overreport = 32 }")
}

#[test]
fn a_panic_below_the_pam_module_is_contained_and_fails_closed() {
    let rig = rig(KeyType::P256);
    let run = rig.login(&overreported_object_count(), Some("alice"), &[PIN]);
    expect_injected(&run, "C_FindObjects");
    expect_fail_closed(&run);
}

/// cryptoki 0.12 `ObjectHandleIterator::next` indexes its 32-entry handle
/// cache with the count C_FindObjects reports (object_management.rs:152),
/// so a count above 32 panics inside `token::Pkcs11Module::certificates`.
/// The panic is the helper's: it ends without a verdict and the broken
/// token is skipped like one whose objects cannot be read.
#[test]
fn an_overreported_object_count_panics_in_the_helper_not_the_application() {
    let rig = short_timeout_rig(KeyType::P256);
    let run = rig.login(&overreported_object_count(), Some("alice"), &[PIN]);
    expect_injected(&run, "C_FindObjects");
    expect_died_without_verdict(&rig, &run); // The default panic hook writes to the helper's stderr, which is the
                                             // application's only because the rig logs with `log=stderr`; otherwise
                                             // the module puts /dev/null there.
    assert!(
        run.run
            .log
            .contains("internal error (panic: index out of bounds"),
        "{run}"
    );
}

fn signature(length: usize, fill: &str) -> String {
    format!("{{ signature = {{ length = {length}, fill = \"{fill}\" }} }}")
}

#[test]
fn forged_rsa_signatures_of_any_length_are_auth_err() {
    let rig = rig(KeyType::Rsa2048);
    for (length, fill) in [
        // RSA-4096 sized: the real value zero-padded, numerically the same.
        (512, "real"),
        (512, "garbage"),
        (256, "garbage"),
        (255, "real"),
        (0, "real"),
    ] {
        let run = rig.login(
            &FaultPlan::new().rule("C_Sign", None, &signature(length, fill)),
            Some("alice"),
            &[PIN],
        );
        expect_injected(&run, "C_Sign");
        assert!(
            run.calls
                .iter()
                .any(|call| call.note("signature_len") == Some(&length.to_string())),
            "{run}"
        );
        expect_result(&run, "PAM_AUTH_ERR");
    }
}

#[test]
fn forged_ecdsa_signatures_of_any_length_are_auth_err() {
    let rig = rig(KeyType::P256);
    for (length, fill) in [
        (64, "garbage"),
        (63, "real"),
        (65, "real"),
        (72, "garbage"),
        (128, "real"),
        (0, "real"),
    ] {
        let run = rig.login(
            &FaultPlan::new().rule("C_Sign", None, &signature(length, fill)),
            Some("alice"),
            &[PIN],
        );
        expect_injected(&run, "C_Sign");
        expect_result(&run, "PAM_AUTH_ERR");
    }
}

#[test]
fn an_rsa_4096_key_logs_in_with_its_512_byte_signature() {
    let rig = rig(KeyType::Rsa4096);
    let run = rig.login(&FaultPlan::new(), Some("alice"), &[PIN]);
    expect_result(&run, "PAM_SUCCESS");
    assert!(
        run.calls
            .iter()
            .any(|call| call.function == "C_Sign" && call.note("signature_len") == Some("512")),
        "{run}"
    );
}

#[test]
fn the_challenge_is_fresh_and_never_comes_from_the_token() {
    let rig = rig(KeyType::Rsa2048);
    let constant = FaultPlan::new().rule("C_GenerateRandom", None, "{ constant_random = 0 }");
    let challenge = |run: &FaultRun| {
        run.calls
            .iter()
            .find(|call| call.function == "C_Sign")
            .and_then(|call| call.note("data"))
            .map(str::to_owned)
            .unwrap_or_else(|| panic!("no C_Sign input logged\n{run}"))
    };
    let first = rig.login(&constant, Some("alice"), &[PIN]);
    let second = rig.login(&constant, Some("alice"), &[PIN]);
    for run in [&first, &second] {
        expect_result(run, "PAM_SUCCESS");
        assert!(
            !run.called("C_GenerateRandom") && !run.called("C_SeedRandom"),
            "{run}"
        );
        // CKM_SHA256_RSA_PKCS signs the challenge itself: at least 32 bytes.
        assert!(challenge(run).len() >= 64, "{run}");
    }
    assert_ne!(
        challenge(&first),
        challenge(&second),
        "a challenge was reused"
    );
}

#[test]
fn garbage_certificate_bytes_are_skipped_with_a_clear_log_line() {
    let rig = rig(KeyType::P256);
    let run = rig.login(
        &FaultPlan::new().rule("C_GetAttributeValue", None, "\"garbage_value\""),
        Some("alice"),
        &[PIN],
    );
    expect_injected(&run, "C_GetAttributeValue");
    expect_result(&run, "PAM_AUTHINFO_UNAVAIL");
    assert!(
        run.run
            .log
            .lines()
            .any(|line| line.contains("certificate skipped") && line.contains("not valid DER")),
        "{run}"
    );
    assert!(
        !run.called("C_Login"),
        "the PIN was tried for a certificate that does not parse\n{run}"
    );
}

#[test]
fn ten_thousand_certificate_objects_are_read_no_further_than_the_limit() {
    let rig = rig(KeyType::P256);
    // `before` pushes the real certificate past the limit; `after` keeps it first.
    for (position, expected) in [("before", "PAM_AUTHINFO_UNAVAIL"), ("after", "PAM_SUCCESS")] {
        let flood = format!("{{ flood = {{ count = 10000, position = \"{position}\" }} }}");
        let run = rig.login(
            &FaultPlan::new().rule("C_FindObjects", None, &flood),
            Some("alice"),
            &[PIN],
        );
        expect_injected(&run, "C_FindObjects");
        expect_result(&run, expected);
        assert!(
            run.run.logged(
                "auth.token.too_many_certificates",
                "more than 32 certificates"
            ),
            "{run}"
        );
        // One C_FindObjects fills the 32 the module reads, one more shows there are more.
        assert!(run.count("C_FindObjects") <= 3, "{run}");
        // At most five C_GetAttributeValue calls per certificate read: the
        // size query, then cryptoki's length query and fetch, which it
        // repeats attribute by attribute when an object lacks one.
        assert!(run.count("C_GetAttributeValue") <= 5 * 32, "{run}");
        let peak = run
            .peak_rss_kb()
            .unwrap_or_else(|| panic!("no peak memory logged\n{run}"));
        assert!(peak < 64 * 1024, "peak memory {peak} KiB\n{run}");
    }
}

#[test]
fn a_hung_c_sign_holds_the_login_as_long_as_it_hangs() {
    // A slow call within `token_timeout` (30 s by default) is waited for;
    // one past it gets the helper killed (the hang table above).
    let rig = rig(KeyType::P256);
    let sleep = Duration::from_millis(1500);
    let plan = FaultPlan::new().rule(
        "C_Sign",
        Some(2),
        &format!("{{ sleep_ms = {} }}", sleep.as_millis()),
    );
    let run = rig.login(&plan, Some("alice"), &[PIN]);
    expect_injected(&run, "C_Sign");
    expect_result(&run, "PAM_SUCCESS");
    assert!(run.elapsed >= sleep, "{run}");
}

fn token_flags(names: &[&str]) -> FaultPlan {
    let names: Vec<String> = names.iter().map(|name| format!("\"{name}\"")).collect();
    FaultPlan::new().rule(
        "C_GetTokenInfo",
        None,
        &format!("{{ token_flags = [{}] }}", names.join(", ")),
    )
}

fn secret_prompts(run: &FaultRun) -> Vec<String> {
    run.run
        .messages()
        .into_iter()
        .filter(|(style, _)| style == "prompt_echo_off")
        .map(|(_, text)| text)
        .collect()
}

fn said(run: &FaultRun, text: &str) -> bool {
    run.run.messages().iter().any(|(_, said)| said == text)
}

/// Token flags SoftHSM never sets, reported by the fault module on top of
/// the real ones: the prompt honours each.
#[test]
fn the_token_flags_shape_the_pin_prompt() {
    let rig = rig(KeyType::P256);

    let locked = rig.login(
        &token_flags(&["CKF_USER_PIN_LOCKED"]),
        Some("alice"),
        &[PIN],
    );
    expect_result(&locked, "PAM_MAXTRIES");
    assert!(
        said(&locked, "The PIN of alice-token is locked"),
        "{locked}"
    );
    assert!(secret_prompts(&locked).is_empty(), "{locked}");
    assert!(!locked.called("C_Login"), "{locked}");

    for (flag, warning) in [
        (
            "CKF_USER_PIN_FINAL_TRY",
            "Warning: one more wrong PIN will lock the card",
        ),
        (
            "CKF_USER_PIN_COUNT_LOW",
            "Warning: a wrong PIN was entered recently",
        ),
    ] {
        let run = rig.login(&token_flags(&[flag]), Some("alice"), &[PIN]);
        expect_result(&run, "PAM_SUCCESS");
        let messages = run.run.messages();
        let warned = messages.iter().position(|(_, text)| text == warning);
        let asked = messages
            .iter()
            .position(|(_, text)| text == "PIN for alice-token: ");
        assert!(
            matches!((warned, asked), (Some(w), Some(a)) if w < a),
            "{flag}: the warning comes before the prompt\n{run}"
        );
    }

    // A PIN pad: nothing asked, C_Login without a PIN (the reader collects
    // it). SoftHSM has no pad and refuses that login: fail closed.
    let pad = rig.login(
        &token_flags(&["CKF_PROTECTED_AUTHENTICATION_PATH"]),
        Some("alice"),
        &[],
    );
    assert!(
        said(&pad, "Enter your PIN on the reader's PIN pad"),
        "{pad}"
    );
    assert!(secret_prompts(&pad).is_empty(), "{pad}");
    let login = pad
        .calls
        .iter()
        .find(|call| call.function == "C_Login")
        .unwrap_or_else(|| panic!("no C_Login\n{pad}"));
    assert_eq!(login.note("user_type"), Some("user"), "{pad}");
    assert!(login.notes.iter().any(|note| note == "pin=none"), "{pad}");
    expect_fail_closed(&pad);
    assert!(!pad.called("C_Sign"), "{pad}");
}
