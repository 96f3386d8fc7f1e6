//! Regexes compiled from configured patterns, with a bound on their size.

use regex::{Regex, RegexBuilder};

use super::error::ConditionError;

/// Compiled regexes are bounded so a configured pattern cannot eat memory.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// Compiles `pattern` for the config key `key`, anchored to the whole text
/// when `anchored`.
pub(super) fn regex(key: &str, pattern: &str, anchored: bool) -> Result<Regex, ConditionError> {
    let pattern = if anchored {
        format!("^(?:{pattern})$")
    } else {
        pattern.to_owned()
    };
    RegexBuilder::new(&pattern)
        .size_limit(REGEX_SIZE_LIMIT)
        .dfa_size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map_err(|error| ConditionError::Regex {
            key: key.to_owned(),
            error: error.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_regex_that_compiles_over_1_mib_is_refused() {
        assert!(regex("subject_regex", "CN=\\w{10}", true).is_ok());
        // Unicode \w repeated a thousand times compiles to several MiB.
        let error = regex("subject_regex", "\\w{1000}", true).unwrap_err();
        assert!(
            matches!(&error, ConditionError::Regex { key, .. } if key == "subject_regex"),
            "{error}"
        );
        assert!(error.to_string().contains("size limit"), "{error}");
    }
}
