//! What one run of `tessera-pam-harness` printed: its JSON events (results
//! per call, conversation messages, PAM_USER, the PAM environment) and the
//! module's log.

use serde_json::Value;

/// What one harness run printed.
#[derive(Debug)]
pub struct PamRun {
    /// JSON events: messages, results, the final PAM_USER.
    pub events: Vec<Value>,
    /// The module's log (it logs to stderr in the rig).
    pub log: String,
}

impl PamRun {
    /// Parses the harness's stdout (JSON lines) and keeps its stderr as the log.
    pub fn parse(stdout: &[u8], stderr: &[u8]) -> Self {
        let events = String::from_utf8_lossy(stdout)
            .lines()
            .map(|line| {
                serde_json::from_str(line).unwrap_or_else(|_| panic!("harness printed {line:?}"))
            })
            .collect();
        PamRun {
            events,
            log: String::from_utf8_lossy(stderr).into_owned(),
        }
    }

    /// The result name (e.g. `PAM_SUCCESS`) of operation `op`.
    pub fn result(&self, op: &str) -> String {
        self.events
            .iter()
            .find(|event| event["event"] == "result" && event["op"] == op)
            .and_then(|event| event["name"].as_str())
            .unwrap_or_else(|| panic!("no result for {op}: {self}"))
            .to_owned()
    }

    /// Microseconds operation `op` took.
    pub fn micros(&self, op: &str) -> u64 {
        self.events
            .iter()
            .find(|event| event["event"] == "result" && event["op"] == op)
            .and_then(|event| event["micros"].as_u64())
            .unwrap_or_else(|| panic!("no timing for {op}: {self}"))
    }

    /// PAM_USER after the run.
    pub fn user(&self) -> Option<String> {
        self.events
            .iter()
            .find(|event| event["event"] == "user")
            .and_then(|event| event["user"].as_str())
            .map(str::to_owned)
    }

    /// PAM_AUTHTOK as pam_wrapper's `pam_get_items.so` exported it into the
    /// PAM environment (applications cannot read the item themselves).
    pub fn authtok(&self) -> Option<String> {
        self.env()
            .iter()
            .find_map(|var| var.strip_prefix("PAM_AUTHTOK=").map(str::to_owned))
    }

    /// The PAM environment after the run, as NAME=VALUE strings.
    pub fn env(&self) -> Vec<String> {
        self.events
            .iter()
            .find(|event| event["event"] == "env")
            .and_then(|event| event["vars"].as_array())
            .map(|vars| {
                vars.iter()
                    .filter_map(|var| var.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Conversation messages as (style, text).
    pub fn messages(&self) -> Vec<(String, String)> {
        self.events
            .iter()
            .filter(|event| event["event"] == "message")
            .map(|event| {
                (
                    event["style"].as_str().unwrap_or_default().to_owned(),
                    event["text"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect()
    }

    /// The module's and the helper's log records with the stable ID `id`
    /// (docs/pam.md, "Log records"). A record runs from its level to the
    /// next record's: some messages span lines (the mapping trace).
    pub fn records(&self, id: &str) -> Vec<String> {
        let needle = format!("id=\"{id}\"");
        let mut records: Vec<String> = Vec::new();
        for line in self.log.lines() {
            let starts_record = ["ERROR ", "WARN ", "INFO ", "DEBUG ", "TRACE "]
                .iter()
                .any(|level| line.trim_start().starts_with(level));
            match records.last_mut() {
                Some(record) if !starts_record => {
                    record.push('\n');
                    record.push_str(line);
                }
                _ => records.push(line.to_owned()),
            }
        }
        records.retain(|record| record.contains(&needle));
        records
    }

    /// Whether a record `id` was logged that contains `text`.
    pub fn logged(&self, id: &str, text: &str) -> bool {
        self.records(id).iter().any(|line| line.contains(text))
    }
}

impl std::fmt::Display for PamRun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for event in &self.events {
            writeln!(f, "{event}")?;
        }
        write!(f, "--- module log ---\n{}", self.log)
    }
}
