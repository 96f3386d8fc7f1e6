//! A PIN or password in memory that is wiped when dropped.

use std::fmt;

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

/// A PIN or password: wiped when dropped, never shown by `Debug`.
#[derive(Clone, Serialize, Deserialize)]
pub struct Secret(Zeroizing<String>);

impl Secret {
    /// Wraps a secret.
    pub fn new(secret: Zeroizing<String>) -> Self {
        Self(secret)
    }

    /// The secret text.
    pub fn expose(&self) -> &Zeroizing<String> {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_prints_the_secret() {
        let secret = Secret::new(Zeroizing::new("123456".to_owned()));
        assert_eq!(format!("{secret:?}"), "Secret(<redacted>)");
        assert_eq!(secret.expose().as_str(), "123456");
    }
}
