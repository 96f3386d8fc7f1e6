//! Dotted OIDs written by an administrator (EKUs, DN attribute types).
//!
//! const-oid 0.9's `ObjectIdentifier::new` cannot be given such text as it
//! is: it does not check arcs for overflow (an arc past 2^32 wraps into
//! another OID in release builds, and panics where overflow checks are on),
//! it encodes an arc that is a power of 128 wrongly (`…128` becomes `…0`),
//! and its decoder, `Display` included, panics on arcs of 2^28 and more.

use const_oid::ObjectIdentifier;

/// Largest arc const-oid 0.9 decodes (four base-128 bytes).
const MAX_ARC: u32 = (1 << 28) - 1;

/// `text` as an OID, if every arc is plain digits below 2^28 and the OID
/// reads back exactly as written (which also refuses leading zeros).
pub fn parse_oid(text: &str) -> Option<ObjectIdentifier> {
    let arcs_fit = text.split('.').all(|arc| {
        arc.bytes().all(|byte| byte.is_ascii_digit())
            && arc.parse::<u32>().is_ok_and(|arc| arc <= MAX_ARC)
    });
    if !arcs_fit {
        return None;
    }
    let oid = ObjectIdentifier::new(text).ok()?;
    (oid.to_string() == text).then_some(oid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oids_const_oid_would_wrap_misencode_or_panic_on_are_refused() {
        let long = format!("1.3.{}", "2".repeat(120));
        for text in [
            // 2^32 + 2: wrapped, it would read as clientAuth (…3.2).
            "1.3.6.1.5.5.7.3.4294967298",
            "1.3.6.1.5.5.7.3.268435456",
            long.as_str(),
            // Powers of 128, which const-oid encodes as …0.
            "1.3.6.1.4.1.311.128",
            "1.3.6.1.4.1.311.16384",
            "1.3.06.1",
            "1.3.6.+1",
            "1.3.6.",
            "",
        ] {
            assert_eq!(parse_oid(text), None, "{text}");
        }
        for text in [
            "1.3.6.1.5.5.7.3.2",
            "2.5.4.3",
            "1.3.6.1.4.1.99999.129.268435455",
        ] {
            assert_eq!(
                parse_oid(text).map(|oid| oid.to_string()).as_deref(),
                Some(text)
            );
        }
    }
}
