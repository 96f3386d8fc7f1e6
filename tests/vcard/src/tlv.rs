//! The BER-TLV subset PIV uses: tags of up to three bytes, definite lengths
//! of up to two bytes (`82 xx xx`).

/// Appends `tag`, the BER length of `value`, and `value` to `out`.
pub fn put(out: &mut Vec<u8>, tag: u32, value: &[u8]) {
    put_tag(out, tag);
    put_len(out, value.len());
    out.extend_from_slice(value);
}

/// Returns `tag`, length and `value` as a new vector.
pub fn encode(tag: u32, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(value.len() + 6);
    put(&mut out, tag, value);
    out
}

fn put_tag(out: &mut Vec<u8>, tag: u32) {
    let bytes = tag.to_be_bytes();
    let skip = bytes.iter().take(3).take_while(|b| **b == 0).count();
    out.extend_from_slice(bytes.get(skip..).unwrap_or(&[]));
}

fn put_len(out: &mut Vec<u8>, len: usize) {
    match len {
        0..=0x7F => out.push(len as u8),
        0x80..=0xFF => out.extend_from_slice(&[0x81, len as u8]),
        _ => {
            // Objects here are certificates of a few kilobytes; 65535 is the
            // PIV maximum, so longer values are a bug in the caller.
            let len = u16::try_from(len).unwrap_or(u16::MAX);
            out.push(0x82);
            out.extend_from_slice(&len.to_be_bytes());
        }
    }
}

/// Why a byte string is not a well-formed TLV sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Malformed;

/// Splits one TLV off the front of `input`: `(tag, value, rest)`.
pub fn take(input: &[u8]) -> Result<(u32, &[u8], &[u8]), Malformed> {
    let (tag, rest) = take_tag(input)?;
    let (len, rest) = take_len(rest)?;
    if rest.len() < len {
        return Err(Malformed);
    }
    let (value, rest) = rest.split_at(len);
    Ok((tag, value, rest))
}

/// Parses a whole byte string as a sequence of TLVs.
pub fn parse_all(mut input: &[u8]) -> Result<Vec<(u32, &[u8])>, Malformed> {
    let mut items = Vec::new();
    while !input.is_empty() {
        let (tag, value, rest) = take(input)?;
        items.push((tag, value));
        input = rest;
    }
    Ok(items)
}

/// Parses `input` as exactly one TLV with the expected tag and returns its value.
pub fn expect_single(input: &[u8], expected: u32) -> Result<&[u8], Malformed> {
    match take(input)? {
        (tag, value, []) if tag == expected => Ok(value),
        _ => Err(Malformed),
    }
}

fn take_tag(input: &[u8]) -> Result<(u32, &[u8]), Malformed> {
    let (&first, mut rest) = input.split_first().ok_or(Malformed)?;
    let mut tag = u32::from(first);
    if first & 0x1F == 0x1F {
        // Multi-byte tag: continuation bytes have bit 8 set; PIV uses at most 3.
        let mut count = 0;
        loop {
            let (&b, r) = rest.split_first().ok_or(Malformed)?;
            rest = r;
            tag = (tag << 8) | u32::from(b);
            count += 1;
            if b & 0x80 == 0 {
                break;
            }
            if count == 2 {
                return Err(Malformed);
            }
        }
    }
    Ok((tag, rest))
}

fn take_len(input: &[u8]) -> Result<(usize, &[u8]), Malformed> {
    match input {
        [len @ 0..=0x7F, rest @ ..] => Ok((usize::from(*len), rest)),
        [0x81, len, rest @ ..] => Ok((usize::from(*len), rest)),
        [0x82, hi, lo, rest @ ..] => Ok((usize::from(u16::from_be_bytes([*hi, *lo])), rest)),
        _ => Err(Malformed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_short_and_long_lengths() {
        assert_eq!(encode(0x81, &[]), vec![0x81, 0x00]);
        assert_eq!(encode(0x7C, &[1; 3])[..2], [0x7C, 0x03]);
        assert_eq!(encode(0x53, &[0; 200])[..3], [0x53, 0x81, 200]);
        assert_eq!(encode(0x70, &[0; 1000])[..4], [0x70, 0x82, 0x03, 0xE8]);
    }

    #[test]
    fn encodes_multi_byte_tags() {
        assert_eq!(encode(0x5FC102, &[]), vec![0x5F, 0xC1, 0x02, 0x00]);
        assert_eq!(
            encode(0x5F2F, &[0x40, 0x00]),
            vec![0x5F, 0x2F, 0x02, 0x40, 0x00]
        );
    }

    #[test]
    fn round_trips() {
        let mut buf = Vec::new();
        put(&mut buf, 0x5C, &[0x5F, 0xC1, 0x05]);
        put(&mut buf, 0x5FC10A, &[7; 300]);
        put(&mut buf, 0x82, &[]);
        let items = parse_all(&buf);
        assert_eq!(
            items,
            Ok(vec![
                (0x5C, &[0x5F, 0xC1, 0x05][..]),
                (0x5FC10A, &[7; 300][..]),
                (0x82, &[][..])
            ])
        );
    }

    #[test]
    fn rejects_truncated_and_oversized_input() {
        assert_eq!(take(&[]), Err(Malformed));
        assert_eq!(take(&[0x5F]), Err(Malformed));
        assert_eq!(take(&[0x5F, 0xC1]), Err(Malformed));
        assert_eq!(take(&[0x5F, 0xC1, 0x82, 0x02]), Err(Malformed));
        assert_eq!(take(&[0x53, 0x05, 0x01]), Err(Malformed));
        assert_eq!(take(&[0x53, 0x83, 0x00, 0x00, 0x01]), Err(Malformed));
        assert_eq!(take(&[0x53, 0x80]), Err(Malformed));
        assert_eq!(take(&[0x1F, 0x81, 0x81, 0x01, 0x00]), Err(Malformed));
    }

    #[test]
    fn expect_single_checks_tag_and_trailing_bytes() {
        assert_eq!(expect_single(&[0x7C, 0x01, 0xAA], 0x7C), Ok(&[0xAA][..]));
        assert_eq!(expect_single(&[0x7C, 0x01, 0xAA], 0x7D), Err(Malformed));
        assert_eq!(
            expect_single(&[0x7C, 0x01, 0xAA, 0x00], 0x7C),
            Err(Malformed)
        );
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let mut x: u32 = 0x1234_5678;
        for _ in 0..20_000 {
            let len = (x % 12) as usize;
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    x as u8
                })
                .collect();
            let _ = parse_all(&bytes);
        }
    }
}
