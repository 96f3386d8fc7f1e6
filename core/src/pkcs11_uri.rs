//! RFC 7512 PKCS#11 URIs, as a filter on which tokens to use.

use std::fmt;

use crate::token::TokenIdentity;

/// A token filter: every attribute given must match the token exactly.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TokenFilter {
    /// `token=`: the token label.
    pub token: Option<String>,
    /// `manufacturer=`: the token manufacturer.
    pub manufacturer: Option<String>,
    /// `serial=`: the token serial number.
    pub serial: Option<String>,
    /// `model=`: the token model.
    pub model: Option<String>,
    /// `slot-description=`: the slot description (the reader name with OpenSC).
    pub slot_description: Option<String>,
    /// `slot-id=`: the slot ID.
    pub slot_id: Option<u64>,
}

/// Why a PKCS#11 URI was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UriError {
    /// Does not start with `pkcs11:`.
    #[error("a PKCS#11 URI starts with \"pkcs11:\"")]
    Scheme,
    /// A path attribute this filter does not know or does not allow.
    #[error("unsupported PKCS#11 URI attribute {0:?}; use token, manufacturer, serial, model, slot-description or slot-id")]
    Attribute(String),
    /// The same attribute twice.
    #[error("PKCS#11 URI attribute {0:?} given twice")]
    Duplicate(String),
    /// Bad percent-encoding or a value that is not UTF-8.
    #[error("bad percent-encoding in PKCS#11 URI attribute {0:?}")]
    Encoding(String),
    /// `slot-id` that is not a number.
    #[error("slot-id {0:?} is not a number")]
    SlotId(String),
    /// A query part: PINs never come from the configuration.
    #[error("PKCS#11 URI query attributes (pin-value, pin-source, module-path) are not accepted")]
    Query,
}

fn percent_decode(name: &str, value: &str) -> Result<String, UriError> {
    let bytes = value.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'%' {
            let hex = value
                .get(index + 1..index + 3)
                .ok_or_else(|| UriError::Encoding(name.to_owned()))?;
            let byte =
                u8::from_str_radix(hex, 16).map_err(|_| UriError::Encoding(name.to_owned()))?;
            decoded.push(byte);
            index += 3;
        } else {
            decoded.push(bytes[index]);
            index += 1;
        }
    }
    String::from_utf8(decoded).map_err(|_| UriError::Encoding(name.to_owned()))
}

impl TokenFilter {
    /// Parses `pkcs11:token=...;serial=...`.
    pub fn parse(uri: &str) -> Result<Self, UriError> {
        let path = uri.strip_prefix("pkcs11:").ok_or(UriError::Scheme)?;
        if path.contains('?') {
            return Err(UriError::Query);
        }
        let mut filter = TokenFilter::default();
        for attribute in path.split(';').filter(|attribute| !attribute.is_empty()) {
            let (name, raw_value) = attribute
                .split_once('=')
                .ok_or_else(|| UriError::Attribute(attribute.to_owned()))?;
            let value = percent_decode(name, raw_value)?;
            let slot = match name {
                "token" => &mut filter.token,
                "manufacturer" => &mut filter.manufacturer,
                "serial" => &mut filter.serial,
                "model" => &mut filter.model,
                "slot-description" => &mut filter.slot_description,
                "slot-id" => {
                    if filter.slot_id.is_some() {
                        return Err(UriError::Duplicate(name.to_owned()));
                    }
                    filter.slot_id =
                        Some(value.parse().map_err(|_| UriError::SlotId(value.clone()))?);
                    continue;
                }
                other => return Err(UriError::Attribute(other.to_owned())),
            };
            if slot.replace(value).is_some() {
                return Err(UriError::Duplicate(name.to_owned()));
            }
        }
        Ok(filter)
    }

    /// Whether `token` satisfies every attribute of the filter.
    pub fn matches(&self, token: &TokenIdentity) -> bool {
        let same = |wanted: &Option<String>, found: &str| {
            wanted.as_deref().is_none_or(|wanted| wanted == found)
        };
        same(&self.token, &token.label)
            && same(&self.manufacturer, &token.manufacturer)
            && same(&self.serial, &token.serial)
            && same(&self.model, &token.model)
            && same(&self.slot_description, &token.slot_description)
            && self.slot_id.is_none_or(|id| id == token.slot_id)
    }
}

impl fmt::Display for TokenFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        for (name, value) in [
            ("token", &self.token),
            ("manufacturer", &self.manufacturer),
            ("serial", &self.serial),
            ("model", &self.model),
            ("slot-description", &self.slot_description),
        ] {
            if let Some(value) = value {
                parts.push(format!("{name}={value}"));
            }
        }
        if let Some(id) = self.slot_id {
            parts.push(format!("slot-id={id}"));
        }
        write!(f, "pkcs11:{}", parts.join(";"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(label: &str, serial: &str) -> TokenIdentity {
        TokenIdentity {
            slot_id: 3,
            slot_description: "Virtual PCD 00 00".into(),
            label: label.into(),
            manufacturer: "piv_II".into(),
            model: "PKCS#15 emulated".into(),
            serial: serial.into(),
            pin_locked: false,
            pin_final_try: false,
            pin_count_low: false,
            protected_authentication_path: false,
            so_pin_locked: false,
            so_pin_final_try: false,
        }
    }

    #[test]
    fn attributes_are_percent_decoded_and_all_must_match() {
        let filter = TokenFilter::parse(
            "pkcs11:token=Alice%27s%20card;serial=42;slot-description=Virtual%20PCD%2000%2000",
        )
        .unwrap();
        assert_eq!(filter.token.as_deref(), Some("Alice's card"));
        assert!(filter.matches(&token("Alice's card", "42")));
        assert!(!filter.matches(&token("Alice's card", "43")));
        assert!(!filter.matches(&token("Bob's card", "42")));
        assert!(TokenFilter::parse("pkcs11:")
            .unwrap()
            .matches(&token("x", "y")));
        assert!(TokenFilter::parse("pkcs11:slot-id=3")
            .unwrap()
            .matches(&token("x", "y")));
    }

    #[test]
    fn malformed_or_unsafe_uris_are_refused() {
        assert_eq!(TokenFilter::parse("token=x"), Err(UriError::Scheme));
        assert_eq!(
            TokenFilter::parse("pkcs11:token=x?pin-value=1234"),
            Err(UriError::Query)
        );
        assert_eq!(
            TokenFilter::parse("pkcs11:object=key"),
            Err(UriError::Attribute("object".into()))
        );
        assert_eq!(
            TokenFilter::parse("pkcs11:token=a;token=b"),
            Err(UriError::Duplicate("token".into()))
        );
        assert_eq!(
            TokenFilter::parse("pkcs11:token=%zz"),
            Err(UriError::Encoding("token".into()))
        );
        assert_eq!(
            TokenFilter::parse("pkcs11:token=%ff"),
            Err(UriError::Encoding("token".into()))
        );
        assert_eq!(
            TokenFilter::parse("pkcs11:slot-id=x"),
            Err(UriError::SlotId("x".into()))
        );
    }
}
