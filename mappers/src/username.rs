//! What a mapped user name may look like.

/// Longest user name a rule may produce.
pub const MAX_USERNAME_LEN: usize = 256;

/// Why a mapped value is not acceptable as a user name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UsernameError {
    /// The value is empty.
    #[error("user name is empty")]
    Empty,
    /// The value is longer than [`MAX_USERNAME_LEN`] bytes.
    #[error("user name is longer than {MAX_USERNAME_LEN} bytes")]
    TooLong,
    /// The value starts with a character that tools would take as an option or hidden name.
    #[error("user name may not start with {0:?}")]
    BadStart(char),
    /// The value contains a character outside the portable set.
    #[error("user name contains the character {0:?}, which is not allowed")]
    BadCharacter(char),
}

/// Accepts POSIX portable user names plus `@` (for `user@realm` style
/// accounts) and a trailing `$` (Samba machine accounts). Everything else,
/// from `/` and `:` to control characters and whitespace, is refused: a mapped
/// name comes from certificate data chosen by whoever issued the certificate.
pub fn validate_username(name: &str) -> Result<(), UsernameError> {
    let first = name.chars().next().ok_or(UsernameError::Empty)?;
    if name.len() > MAX_USERNAME_LEN {
        return Err(UsernameError::TooLong);
    }
    if first == '-' || first == '.' {
        return Err(UsernameError::BadStart(first));
    }
    let last_index = name.len() - 1;
    for (index, character) in name.char_indices() {
        let allowed = character.is_ascii_alphanumeric()
            || matches!(character, '.' | '_' | '-' | '@')
            || (character == '$' && index == last_index);
        if !allowed {
            return Err(UsernameError::BadCharacter(character));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn portable_names_are_accepted() {
        for name in [
            "alice",
            "bob.smith",
            "j_doe-2",
            "alice@EXAMPLE.TEST",
            "HOST$",
        ] {
            assert_eq!(validate_username(name), Ok(()), "{name}");
        }
    }

    #[test]
    fn separators_controls_and_option_like_names_are_refused() {
        assert_eq!(validate_username(""), Err(UsernameError::Empty));
        assert_eq!(
            validate_username("-root"),
            Err(UsernameError::BadStart('-'))
        );
        assert_eq!(validate_username(".."), Err(UsernameError::BadStart('.')));
        assert_eq!(
            validate_username("../etc"),
            Err(UsernameError::BadStart('.'))
        );
        assert_eq!(
            validate_username("a/b"),
            Err(UsernameError::BadCharacter('/'))
        );
        assert_eq!(
            validate_username("root:x"),
            Err(UsernameError::BadCharacter(':'))
        );
        assert_eq!(
            validate_username("al ice"),
            Err(UsernameError::BadCharacter(' '))
        );
        assert_eq!(
            validate_username("a\nb"),
            Err(UsernameError::BadCharacter('\n'))
        );
        assert_eq!(
            validate_username("a$b"),
            Err(UsernameError::BadCharacter('$'))
        );
        assert_eq!(
            validate_username(&"a".repeat(257)),
            Err(UsernameError::TooLong)
        );
    }
}
