//! Plain-HTTP downloads of CRLs and OCSP responses, bounded in size and time.
//!
//! ureq without default features: no TLS, no compression, no cookies, no
//! proxy taken from the environment (a user running `su` controls it).
//! DNS look-ups run on a helper thread so that they obey the timeout too.

use std::time::{Duration, Instant};

/// Largest response header block accepted.
const MAX_HEADER_BYTES: usize = 16 * 1024;

/// The overall time budget of revocation checking for one login.
#[derive(Debug, Clone, Copy)]
pub struct Deadline(Instant);

impl Deadline {
    /// A deadline `budget` from now.
    pub fn after(budget: Duration) -> Self {
        Self(Instant::now() + budget)
    }

    /// Time left, or `None` once the deadline has passed.
    pub fn remaining(&self) -> Option<Duration> {
        self.0
            .checked_duration_since(Instant::now())
            .filter(|left| !left.is_zero())
    }
}

/// Why a download failed; the message names the URL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{url}: {reason}")]
pub struct FetchError {
    /// What was fetched.
    pub url: String,
    /// What went wrong.
    pub reason: String,
}

/// Whether `url` is one we fetch: http only (CRLs and OCSP are signed, and
/// this build carries no TLS stack).
pub fn is_http_url(url: &str) -> bool {
    url.get(..7)
        .is_some_and(|scheme| scheme.eq_ignore_ascii_case("http://"))
        && url.len() > 7
}

/// GETs `url` (or POSTs `body` as `content_type`) and returns at most
/// `max_bytes` of a 200 response, within the deadline.
pub fn fetch(
    url: &str,
    post: Option<(&str, &[u8])>,
    max_bytes: u64,
    deadline: &Deadline,
) -> Result<Vec<u8>, FetchError> {
    let failed = |reason: String| FetchError {
        url: url.to_owned(),
        reason,
    };
    if !is_http_url(url) {
        return Err(failed("only http:// URLs are fetched".to_owned()));
    }
    let Some(timeout) = deadline.remaining() else {
        return Err(failed(
            "not fetched: the revocation time budget is spent".to_owned(),
        ));
    };
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .http_status_as_error(false)
        .proxy(None)
        .max_redirects(0)
        .max_response_header_size(MAX_HEADER_BYTES)
        .user_agent("tessera")
        .build()
        .into();
    let started = Instant::now();
    let result = match post {
        Some((content_type, body)) => agent
            .post(url)
            .header("Content-Type", content_type)
            .send(body),
        None => agent.get(url).call(),
    };
    let mut response = result.map_err(|error| failed(describe(error, timeout)))?;
    let status = response.status();
    if status != 200 {
        return Err(failed(format!("HTTP status {status}")));
    }
    let bytes = response
        .body_mut()
        .with_config()
        .limit(max_bytes)
        .read_to_vec()
        .map_err(|error| failed(describe(error, timeout)))?;
    tracing::debug!(
        id = "auth.revocation.fetched",
        url,
        bytes = bytes.len(),
        millis = started.elapsed().as_millis() as u64,
        "fetched"
    );
    Ok(bytes)
}

fn describe(error: ureq::Error, timeout: Duration) -> String {
    match error {
        ureq::Error::Timeout(_) => format!("no answer within {} ms", timeout.as_millis()),
        ureq::Error::BodyExceedsLimit(limit) => format!("response larger than {limit} bytes"),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_http_urls_are_fetched() {
        assert!(is_http_url("http://127.0.0.1/ca.crl"));
        assert!(is_http_url("HTTP://ca.example/ocsp"));
        assert!(!is_http_url("https://ca.example/ca.crl"));
        assert!(!is_http_url("ldap://ca.example/cn=ca"));
        assert!(!is_http_url("http://"));
        let deadline = Deadline::after(Duration::from_secs(1));
        let error = fetch("ldap://x/y", None, 10, &deadline).unwrap_err();
        assert_eq!(
            error.to_string(),
            "ldap://x/y: only http:// URLs are fetched"
        );
    }

    /// Serves one response whose headers carry `filler` bytes of padding.
    fn serve_once(filler: usize) -> String {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/ca.crl", listener.local_addr().unwrap());
        std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut request = Vec::new();
            let mut byte = [0u8; 1];
            while !request.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap_or(0) == 1 {
                request.push(byte[0]);
            }
            let response = format!(
                "HTTP/1.1 200 OK\r\nX-Filler: {}\r\nContent-Length: 2\r\n\r\nok",
                "a".repeat(filler)
            );
            let _ = stream.write_all(response.as_bytes());
        });
        url
    }

    #[test]
    fn response_headers_over_16_kib_are_refused() {
        let deadline = Deadline::after(Duration::from_secs(5));
        let small = fetch(&serve_once(1024), None, 10, &deadline).unwrap();
        assert_eq!(small, b"ok");
        let error = fetch(&serve_once(MAX_HEADER_BYTES + 1), None, 10, &deadline).unwrap_err();
        assert!(error.url.ends_with("/ca.crl"), "{error}");
        assert!(!error.reason.is_empty(), "{error}");
    }

    #[test]
    fn a_spent_deadline_fetches_nothing() {
        let deadline = Deadline::after(Duration::ZERO);
        let error = fetch("http://127.0.0.1:9/x.crl", None, 10, &deadline).unwrap_err();
        assert!(error.reason.contains("time budget is spent"), "{error}");
    }
}
