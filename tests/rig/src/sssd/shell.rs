//! Quoting for the `sh` scripts that set up sssctl's and sssd's mount
//! namespaces.

/// `text` as one single-quoted shell word.
pub(super) fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "'\\''"))
}
