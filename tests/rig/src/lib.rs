//! The test rig: starts real components (SoftHSM tokens, a test PKI, real libpam,
//! pcscd with the virtual card) in scratch directories for the integration tests.
//!
//! Test support only: it panics with a clear message when the machine lacks a
//! component, as a failing test should.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod bins;
pub mod dbus;
pub mod eventd;
pub mod http;
pub mod login;
pub mod ocsp;
pub mod p11fault;
pub mod pcscd;
pub mod pki;
pub mod references;
pub mod slapd;
pub mod softhsm;
pub mod source_tree;
pub mod sssd;
pub mod system;
pub mod systemd;
pub mod vcard;

use std::io::Write;
use std::process::{Command, Output, Stdio};

/// Runs a command, panicking with its output if it fails.
pub fn run(command: &mut Command) -> Output {
    let output = command
        .output()
        .unwrap_or_else(|error| panic!("cannot run {command:?}: {error}"));
    assert!(
        output.status.success(),
        "{command:?} failed with {}\nstdout: {}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// Runs `command` with `input` on its standard input and returns what it
/// printed, whatever its exit status.
pub fn output_with_stdin(command: &mut Command, input: &str) -> Output {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|error| panic!("cannot run {command:?}: {error}"));
    // A command that exits without reading its input is not this helper's
    // failure: the caller asserts on the status.
    let _ = child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(input.as_bytes());
    child.wait_with_output().expect("wait for the command")
}

/// A command's exit status and output, for assertion messages.
pub fn describe(output: &Output) -> String {
    format!(
        "status {}\nstdout: {}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}
