//! `sssctl cert-eval-rule`, SSSD's own libsss_certmap, run in batches in a
//! private mount namespace.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::shell::shell_quote;

/// What SSSD said about one certificate and rule pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SssdAnswer {
    /// `Some(true)`: matches; `Some(false)`: does not; `None`: SSSD refused
    /// the rules (or failed otherwise, see `output`).
    pub matched: Option<bool>,
    /// The mapping filter, when the certificate matched and the filter
    /// could be built.
    pub filter: Option<String>,
    /// sssctl's whole output, for messages.
    pub output: String,
}

/// One evaluation for [`Sssctl::evaluate`].
#[derive(Debug, Clone)]
pub struct Query {
    /// Index of the certificate in the slice given to `evaluate`.
    pub certificate: usize,
    /// The matchrule.
    pub matchrule: String,
    /// The maprule.
    pub maprule: String,
}

/// `sssctl cert-eval-rule` in a private mount namespace: its own
/// `/etc/sssd/sssd.conf` (sssctl wants one domain), `/var/lib/sss` and
/// `/var/log/sssd`.
#[derive(Debug)]
pub struct Sssctl {
    dir: tempfile::TempDir,
}

impl Sssctl {
    /// Prepares the scratch configuration; panics when sssctl is missing
    /// (`scripts/setup` installs it).
    pub fn new() -> Self {
        assert!(
            Path::new("/usr/sbin/sssctl").exists(),
            "sssctl is missing: run scripts/setup (Debian's sssd-tools)"
        );
        let dir = tempfile::tempdir().expect("scratch directory");
        let etc = dir.path().join("etc");
        std::fs::create_dir(&etc).expect("etc");
        let conf = etc.join("sssd.conf");
        std::fs::write(
            &conf,
            "[sssd]\nservices = nss\ndomains = local\n\n[domain/local]\nid_provider = files\n",
        )
        .expect("sssd.conf");
        std::fs::set_permissions(&conf, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .expect("sssd.conf mode");
        Self { dir }
    }

    fn script(&self, certificates: usize, queries: &[(usize, &Query)]) -> PathBuf {
        let etc = self.dir.path().join("etc");
        let certs = self.dir.path().join("certs");
        let mut script = format!(
            "set -u\n\
             mount --bind {etc} /etc/sssd || exit 97\n\
             mount -t tmpfs tmpfs /var/lib/sss || exit 97\n\
             mkdir -p /var/lib/sss/db\n\
             mount -t tmpfs tmpfs /var/log/sssd || exit 97\n\
             q() {{ n=$1; shift; printf '\\n@@begin %s\\n' \"$n\"; sssctl cert-eval-rule \"$@\" 2>&1; printf '\\n@@end %s\\n' \"$n\"; }}\n",
            etc = shell_quote(&etc.to_string_lossy())
        );
        // One shell variable per certificate: base64 once, not per query.
        for index in 0..certificates {
            let _ = writeln!(
                script,
                "c{index}=$(base64 -w0 {})",
                shell_quote(&certs.join(format!("{index}.der")).to_string_lossy())
            );
        }
        for (index, query) in queries {
            let _ = writeln!(
                script,
                "q {index} \"$c{}\" --match={} --map={}",
                query.certificate,
                shell_quote(&query.matchrule),
                shell_quote(&query.maprule)
            );
        }
        let path = self
            .dir
            .path()
            .join(format!("batch-{}.sh", queries.first().map_or(0, |q| q.0)));
        std::fs::write(&path, script).expect("batch script");
        path
    }

    /// Evaluates every query, in two parallel batches (one namespace and one
    /// shell each; sssctl itself is one process per query, about 30 ms).
    pub fn evaluate(&self, certificates: &[Vec<u8>], queries: &[Query]) -> Vec<SssdAnswer> {
        let certs = self.dir.path().join("certs");
        std::fs::create_dir_all(&certs).expect("certs directory");
        for (index, der) in certificates.iter().enumerate() {
            std::fs::write(certs.join(format!("{index}.der")), der).expect("certificate file");
        }
        let indexed: Vec<(usize, &Query)> = queries.iter().enumerate().collect();
        let half = indexed.len().div_ceil(2).max(1);
        let outputs: Vec<String> = std::thread::scope(|scope| {
            let handles: Vec<_> = indexed
                .chunks(half)
                .map(|chunk| {
                    let script = self.script(certificates.len(), chunk);
                    scope.spawn(move || {
                        let output = Command::new("unshare")
                            .args(["--mount", "--propagation", "private", "sh"])
                            .arg(&script)
                            // Unicode-aware regexes, as sssd runs under a UTF-8 locale.
                            .env("LC_ALL", "C.UTF-8")
                            .output()
                            .expect("unshare sssctl");
                        assert!(
                            output.status.success(),
                            "sssctl batch failed: {}\n{}",
                            output.status,
                            String::from_utf8_lossy(&output.stderr)
                        );
                        String::from_utf8_lossy(&output.stdout).into_owned()
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|handle| handle.join().expect("batch thread"))
                .collect()
        });
        let mut answers = vec![None; queries.len()];
        for output in outputs {
            parse_batch(&output, &mut answers);
        }
        answers
            .into_iter()
            .enumerate()
            .map(|(index, answer)| {
                answer.unwrap_or_else(|| panic!("sssctl gave no answer for query {index}"))
            })
            .collect()
    }
}

impl Default for Sssctl {
    fn default() -> Self {
        Self::new()
    }
}

fn parse_batch(output: &str, answers: &mut [Option<SssdAnswer>]) {
    let mut rest = output;
    while let Some(start) = rest.find("\n@@begin ") {
        let after = &rest[start + "\n@@begin ".len()..];
        let (number, body) = after.split_once('\n').expect("query number");
        let index: usize = number.trim().parse().expect("query number");
        let end_marker = format!("\n@@end {index}\n");
        let end = body.find(&end_marker).expect("end of query output");
        let text = &body[..end];
        rest = &body[end + end_marker.len() - 1..];
        let matched = if text.contains("Certificate matches rule.") {
            Some(true)
        } else if text.contains("Certificate does not match rule.") {
            Some(false)
        } else {
            None
        };
        let filter = text
            .split_once("Mapping filter:\n\n    ")
            .map(|(_, tail)| tail.strip_suffix("\n\n").unwrap_or(tail).to_owned());
        answers[index] = Some(SssdAnswer {
            matched,
            filter,
            output: text.to_owned(),
        });
    }
}
