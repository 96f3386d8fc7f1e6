//! The admin's commands: run without a shell, with a fixed PATH, the event
//! described in `TESSERA_*` variables, and a time limit.

use std::process::Stdio;
use std::time::Duration;

use tessera_core::config::eventd::CommandLine;
use zruntime::process::Command;
use zruntime::SharedRuntime;

/// The only inherited-looking variable: programs the command runs by name.
const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Runs `command` with `env` and waits for it, at most `timeout` (then kills
/// it). Failures are logged, never returned: a command is advisory.
pub async fn run(
    runtime: &SharedRuntime,
    what: &'static str,
    command: &CommandLine,
    env: &[(&'static str, String)],
    timeout: Duration,
) {
    let program = command.program.display().to_string();
    let mut process = Command::new(&command.program);
    process
        .args(&command.args)
        .env_clear()
        .env("PATH", PATH)
        .envs(env.iter().map(|(key, value)| (*key, value.as_str())))
        .current_dir("/")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let mut child = match process.spawn(runtime) {
        Ok(child) => child,
        Err(error) => {
            tracing::error!(id = "eventd.command.failed", command = what, %program, %error, "cannot start command");
            return;
        }
    };
    match runtime.timeout(timeout, child.status()).await {
        Ok(Ok(status)) if status.success() => {
            tracing::info!(id = "eventd.command.done", command = what, %program, "command succeeded");
        }
        Ok(Ok(status)) => {
            tracing::warn!(id = "eventd.command.failed", command = what, %program, %status, "command failed");
        }
        Ok(Err(error)) => {
            tracing::error!(id = "eventd.command.failed", command = what, %program, %error, "cannot wait for command");
        }
        Err(_) => {
            tracing::error!(id = "eventd.command.timeout", command = what, %program, ?timeout, "command did not finish in time; killed");
            let _ = child.kill();
            let _ = child.status().await;
        }
    }
}
