//! Which token is in a reader, asked through PKCS#11 in a helper process:
//! for each insertion the daemon runs its own executable again as
//! `tessera-eventd --identify-module MODULE --identify-reader READER`.
//!
//! A PKCS#11 module is third-party C code talking to a card that may leave
//! in the middle of a command. It may block for good (OpenSC 0.23 deadlocks
//! on its own card mutex when a card is pulled while it recovers from a
//! pcscd restart), crash, or leak. In a helper it is killed after
//! `identify_timeout`, or as soon as a newer insertion in the same reader
//! makes its answer moot, and the daemon goes on identifying other cards.
//! Each helper loads the module afresh, so nothing stale survives a pcscd
//! restart either.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, ChildStdout, Command, ExitCode, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tessera_core::binding::BoundToken;
use tessera_core::token::{Pkcs11Module, TokenError, TokenIdentity};

use crate::engine::same_reader;
use crate::events::InputSender;
use crate::model::{Identity, Input};

/// Requests that may wait; beyond that, the oldest waiting one is dropped
/// and its card left Unreadable (fail closed).
const QUEUE: usize = 32;
/// Tries per request inside the helper; a card just inserted may still be
/// powering up.
const TRIES: u32 = 3;
const RETRY_DELAY: Duration = Duration::from_millis(150);
/// What the daemon reads of a helper's answer and of its standard error.
const MAX_ANSWER: u64 = 16 * 1024;
const MAX_ERRORS: u64 = 4 * 1024;
/// The running executable, where its path cannot be read.
const SELF_EXE: &str = "/proc/self/exe";
/// Ends a helper's answer: the daemon needs no end of file, so a helper
/// that hangs on its way out (a module's destructors) still answered.
const END_OF_ANSWER: &[u8] = b"\n# end of answer\n";

/// One identification request.
#[derive(Debug)]
pub struct Request {
    /// The PKCS#11 module to load.
    pub module: PathBuf,
    /// Reader name.
    pub reader: String,
    /// Echoed back.
    pub insertion: u64,
}

/// What a helper prints on standard output: one TOML document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Answer {
    /// One token in the reader.
    Token {
        /// Its identity.
        token: BoundToken,
    },
    /// PKCS#11 shows no token for the reader.
    NotAToken,
    /// Several tokens on one card (e.g. several PINs): no single identity.
    Several {
        /// How many.
        count: usize,
    },
    /// Every try failed.
    Failed {
        /// The last PKCS#11 error.
        error: String,
    },
}

enum Job {
    Identify(Request),
    Answered { helper: u64, output: HelperOutput },
}

struct HelperOutput {
    answer: Vec<u8>,
    errors: Vec<u8>,
}

/// The sending side of the worker.
#[derive(Debug, Clone)]
pub struct Identifier {
    jobs: SyncSender<Job>,
    events: InputSender,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Job::Identify(request) => f.debug_tuple("Identify").field(request).finish(),
            Job::Answered { helper, .. } => {
                f.debug_struct("Answered").field("helper", helper).finish()
            }
        }
    }
}

impl Identifier {
    /// Starts the worker thread; helpers still running after `timeout` are killed.
    pub fn spawn(events: InputSender, timeout: Duration) -> std::io::Result<Self> {
        let (jobs, receiver) = mpsc::sync_channel(QUEUE);
        let results = events.clone();
        let answers = jobs.clone();
        // Its path rather than /proc/self/exe, which under valgrind (the
        // memcheck tests) is valgrind itself.
        let program = std::env::current_exe().unwrap_or_else(|_| PathBuf::from(SELF_EXE));
        let helpers = Helpers {
            program,
            answers,
            timeout,
        };
        std::thread::Builder::new()
            .name("pkcs11".to_owned())
            .spawn(move || serve(&receiver, &helpers, &results))?;
        Ok(Self { jobs, events })
    }

    /// Queues a request without waiting.
    pub async fn identify(&self, request: Request) {
        match self.jobs.try_send(Job::Identify(request)) {
            Ok(()) => {}
            Err(TrySendError::Full(job) | TrySendError::Disconnected(job)) => {
                if let Job::Identify(request) = job {
                    tracing::error!(
                        reader = %request.reader,
                        "PKCS#11 identification queue full or stopped; card left unidentified"
                    );
                    self.events.send_async(unreadable(request)).await;
                }
            }
        }
    }
}

fn unreadable(request: Request) -> Input {
    Input::Identified {
        reader: request.reader,
        insertion: request.insertion,
        identity: Identity::Unreadable,
    }
}

/// A helper at work.
struct Running {
    request: Request,
    child: Child,
    helper: u64,
    deadline: Instant,
}

impl Running {
    /// Kills the helper (it may have exited already) and reaps it.
    fn end(mut self) -> (Request, Option<ExitStatus>) {
        let _ = self.child.kill();
        (self.request, self.child.wait().ok())
    }
}

/// How helpers are started.
struct Helpers {
    /// The daemon's own executable.
    program: PathBuf,
    /// Where their answers go.
    answers: SyncSender<Job>,
    /// How long each may take.
    timeout: Duration,
}

fn serve(jobs: &Receiver<Job>, helpers: &Helpers, events: &InputSender) {
    let mut waiting: VecDeque<Request> = VecDeque::new();
    let mut running: Option<Running> = None;
    let mut started = 0u64;
    loop {
        let job = match &running {
            None => match jobs.recv() {
                Ok(job) => Some(job),
                Err(_) => return,
            },
            Some(run) => {
                match jobs.recv_timeout(run.deadline.saturating_duration_since(Instant::now())) {
                    Ok(job) => Some(job),
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(RecvTimeoutError::Disconnected) => return,
                }
            }
        };
        match job {
            None => {
                if let Some(run) = running.take() {
                    let (request, _) = run.end();
                    tracing::warn!(
                        id = "eventd.pkcs11.timeout",
                        reader = %request.reader,
                        timeout = ?helpers.timeout,
                        "the PKCS#11 module did not answer in time; its helper was killed and the card left unidentified"
                    );
                    events.send(unreadable(request));
                }
            }
            Some(Job::Identify(request)) => {
                // A newer insertion in the same reader: older answers are moot
                // (the engine would ignore them), so stop waiting for them.
                if let Some(run) = running.take_if(|run| run.request.reader == request.reader) {
                    let (old, _) = run.end();
                    tracing::debug!(reader = %old.reader, insertion = old.insertion, "identification superseded by a newer insertion");
                }
                waiting.retain(|older| older.reader != request.reader);
                if waiting.len() >= QUEUE {
                    if let Some(oldest) = waiting.pop_front() {
                        tracing::error!(reader = %oldest.reader, "too many identifications waiting; card left unidentified");
                        events.send(unreadable(oldest));
                    }
                }
                waiting.push_back(request);
            }
            Some(Job::Answered { helper, output }) => {
                if let Some(run) = running.take_if(|run| run.helper == helper) {
                    let (request, status) = run.end();
                    let identity = judge(&request.reader, &output, status);
                    events.send(Input::Identified {
                        reader: request.reader,
                        insertion: request.insertion,
                        identity,
                    });
                }
            }
        }
        while running.is_none() {
            let Some(request) = waiting.pop_front() else {
                break;
            };
            started += 1;
            match helpers.start(request, started) {
                Ok(run) => running = Some(run),
                Err((request, error)) => {
                    tracing::error!(id = "eventd.pkcs11.unreadable", reader = %request.reader, %error, "cannot identify the card");
                    events.send(unreadable(request));
                }
            }
        }
    }
}

impl Helpers {
    fn start(&self, request: Request, helper: u64) -> Result<Running, (Request, String)> {
        let spawned = Command::new(&self.program)
            .arg("--identify-module")
            .arg(&request.module)
            .arg("--identify-reader")
            .arg(&request.reader)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn();
        let mut child = match spawned {
            Ok(child) => child,
            Err(error) => {
                return Err((
                    request,
                    format!(
                        "cannot start the identification helper {}: {error}",
                        self.program.display()
                    ),
                ))
            }
        };
        let pipes = (child.stdout.take(), child.stderr.take());
        let answers = self.answers.clone();
        let reader = match pipes {
            (Some(stdout), Some(stderr)) => std::thread::Builder::new()
                .name("pkcs11-helper".to_owned())
                .spawn(move || {
                    let output = read_output(stdout, stderr);
                    let _ = answers.send(Job::Answered { helper, output });
                })
                .map(drop)
                .map_err(|error| format!("cannot start a thread: {error}")),
            _ => Err("the helper's pipes are missing".to_owned()),
        };
        let deadline = Instant::now() + self.timeout;
        let run = Running {
            request,
            child,
            helper,
            deadline,
        };
        match reader {
            Ok(()) => Ok(run),
            Err(error) => Err((run.end().0, error)),
        }
    }
}

/// Reads the answer up to its end line; without one (the helper died, or
/// wrote too much), its standard error up to the end of file as well. A
/// helper that stops writing meets its deadline instead.
fn read_output(mut stdout: ChildStdout, stderr: ChildStderr) -> HelperOutput {
    let mut answer = Vec::new();
    let mut chunk = [0u8; 4096];
    while !answer.ends_with(END_OF_ANSWER) && answer.len() as u64 <= MAX_ANSWER {
        match stdout.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(read) => answer.extend_from_slice(&chunk[..read]),
        }
    }
    let mut errors = Vec::new();
    if !answer.ends_with(END_OF_ANSWER) {
        let _ = stderr.take(MAX_ERRORS).read_to_end(&mut errors);
    }
    HelperOutput { answer, errors }
}

/// The identity a helper's output stands for.
fn judge(reader: &str, output: &HelperOutput, status: Option<ExitStatus>) -> Identity {
    let parsed = if output.answer.len() as u64 > MAX_ANSWER {
        Err(format!("answer longer than {MAX_ANSWER} bytes"))
    } else if !output.answer.ends_with(END_OF_ANSWER) {
        Err("no complete answer".to_owned())
    } else {
        std::str::from_utf8(&output.answer)
            .map_err(|error| error.to_string())
            .and_then(|text| {
                toml::from_str::<Answer>(text).map_err(|error| error.message().to_owned())
            })
    };
    let answer = match parsed {
        Ok(answer) => answer,
        Err(error) => {
            let errors = String::from_utf8_lossy(&output.errors);
            let exit =
                status.map_or_else(|| "status unknown".to_owned(), |status| status.to_string());
            tracing::warn!(
                id = "eventd.pkcs11.unreadable",
                reader,
                %exit,
                stderr = errors.trim(),
                "the identification helper gave no valid answer ({error}); card left unidentified"
            );
            return Identity::Unreadable;
        }
    };
    match answer {
        Answer::Token { token } if same_reader(&token.slot_description, reader) => {
            tracing::debug!(reader, token = %describe(&token), "identified");
            Identity::Token(token)
        }
        Answer::Token { token } => {
            tracing::warn!(id = "eventd.pkcs11.unreadable", reader, slot = %token.slot_description, "the helper answered for another reader; card left unidentified");
            Identity::Unreadable
        }
        Answer::NotAToken => Identity::NotAToken,
        Answer::Several { count } => {
            tracing::warn!(reader, count, "several tokens in one reader");
            Identity::Unreadable
        }
        Answer::Failed { error } => {
            tracing::warn!(
                id = "eventd.pkcs11.unreadable",
                reader,
                %error,
                "cannot identify the card; a pull from this reader will act on every session bound to it"
            );
            Identity::Unreadable
        }
    }
}

fn describe(token: &BoundToken) -> String {
    format!("{:?} (serial {})", token.label, token.serial)
}

/// The helper's side: identifies the token in `reader`, prints the
/// [`Answer`] and its end line, and exits without finalising the module.
pub fn helper(module: &Path, reader: &str) -> ExitCode {
    let answer = find_token(module, reader);
    let text = match encode(&answer) {
        Ok(text) => text,
        Err(error) => {
            eprintln!("tessera-eventd: cannot encode the answer: {error}");
            return ExitCode::FAILURE;
        }
    };
    let mut stdout = std::io::stdout().lock();
    if stdout
        .write_all(&text)
        .and_then(|()| stdout.flush())
        .is_err()
    {
        return ExitCode::FAILURE;
    }
    // No unwinding: the module is not finalised on the way out.
    std::process::exit(0)
}

fn encode(answer: &Answer) -> Result<Vec<u8>, toml::ser::Error> {
    let mut text = toml::to_string(answer)?.into_bytes();
    text.extend_from_slice(END_OF_ANSWER);
    Ok(text)
}

fn find_token(module: &Path, reader: &str) -> Answer {
    let mut last_error = None;
    for attempt in 1..=TRIES {
        match tokens(module) {
            Ok(tokens) => {
                let found: Vec<&TokenIdentity> = tokens
                    .iter()
                    .filter(|token| same_reader(&token.slot_description, reader))
                    .collect();
                match found.as_slice() {
                    [token] => {
                        return Answer::Token {
                            token: BoundToken::from(*token),
                        }
                    }
                    // The module may not have seen the card yet.
                    [] if attempt < TRIES => {}
                    [] => return Answer::NotAToken,
                    several => {
                        return Answer::Several {
                            count: several.len(),
                        }
                    }
                }
            }
            Err(error) => last_error = Some(error.to_string()),
        }
        std::thread::sleep(RETRY_DELAY * attempt);
    }
    Answer::Failed {
        error: last_error.unwrap_or_else(|| "no answer".to_owned()),
    }
}

fn tokens(module: &Path) -> Result<Vec<TokenIdentity>, TokenError> {
    Pkcs11Module::load(module)?.tokens()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(slot: &str) -> BoundToken {
        BoundToken {
            label: "alice".into(),
            manufacturer: "piv_II".into(),
            model: "PKCS#15 emulated".into(),
            serial: "8899aabbccddeeff".into(),
            slot_description: slot.into(),
        }
    }

    fn output(answer: &str) -> HelperOutput {
        HelperOutput {
            answer: answer.as_bytes().to_vec(),
            errors: b"some module noise\n".to_vec(),
        }
    }

    const READER: &str = "Virtual PCD 00 00";

    #[test]
    fn every_answer_survives_the_pipe() {
        for answer in [
            Answer::Token {
                token: token(READER),
            },
            Answer::NotAToken,
            Answer::Several { count: 2 },
            Answer::Failed {
                error: "CKR_DEVICE_ERROR".into(),
            },
        ] {
            let text = String::from_utf8(encode(&answer).unwrap()).unwrap();
            assert_eq!(toml::from_str::<Answer>(&text).unwrap(), answer, "{text}");
        }
    }

    #[test]
    fn only_a_token_in_the_asked_reader_identifies_the_card() {
        let answer = |answer: Answer| output(&String::from_utf8(encode(&answer).unwrap()).unwrap());
        let found = judge(
            READER,
            &answer(Answer::Token {
                token: token(READER),
            }),
            None,
        );
        assert_eq!(found, Identity::Token(token(READER)));
        let elsewhere = answer(Answer::Token {
            token: token("Virtual PCD 00 01"),
        });
        assert_eq!(judge(READER, &elsewhere, None), Identity::Unreadable);
        assert_eq!(
            judge(READER, &answer(Answer::NotAToken), None),
            Identity::NotAToken
        );
        assert_eq!(
            judge(READER, &answer(Answer::Several { count: 2 }), None),
            Identity::Unreadable
        );
        let failed = answer(Answer::Failed {
            error: "CKR_DEVICE_ERROR".into(),
        });
        assert_eq!(judge(READER, &failed, None), Identity::Unreadable);
    }

    #[test]
    fn no_answer_garbage_or_an_oversized_one_leaves_the_card_unreadable() {
        let end = std::str::from_utf8(END_OF_ANSWER).unwrap();
        let valid = toml::to_string(&Answer::Token {
            token: token(READER),
        })
        .unwrap();
        let oversized = format!("{valid}#{}{end}", "x".repeat(MAX_ANSWER as usize));
        for bad in [
            String::new(),
            // Cut off before its end line.
            valid.clone(),
            format!("outcome = \"token\"{end}"),
            format!("outcome = \"root\"{end}"),
            format!("{valid}extra = 1{end}"),
            oversized,
        ] {
            assert_eq!(
                judge(READER, &output(&bad), None),
                Identity::Unreadable,
                "{bad:.80}"
            );
        }
        let not_utf8 = HelperOutput {
            answer: [&[0xff, 0xfe], END_OF_ANSWER].concat(),
            errors: Vec::new(),
        };
        assert_eq!(judge(READER, &not_utf8, None), Identity::Unreadable);
    }
}
