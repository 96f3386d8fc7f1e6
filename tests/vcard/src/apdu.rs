//! ISO 7816-4 short command APDUs and response APDUs.
//!
//! The parser never panics: any malformed byte string maps to a status word
//! the card can send back.

/// A two-byte ISO 7816-4 status word.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status(pub u16);

impl Status {
    /// Normal processing.
    pub const OK: Status = Status(0x9000);
    /// Wrong length (Lc/Le inconsistent, or an extended APDU).
    pub const WRONG_LENGTH: Status = Status(0x6700);
    /// Last command of a chain expected (chain broken by another command).
    pub const LAST_COMMAND_EXPECTED: Status = Status(0x6883);
    /// Security status not satisfied (PIN not verified).
    pub const SECURITY_NOT_SATISFIED: Status = Status(0x6982);
    /// Authentication method blocked (retry counter is zero).
    pub const AUTH_BLOCKED: Status = Status(0x6983);
    /// Conditions of use not satisfied (e.g. GET RESPONSE with nothing pending).
    pub const CONDITIONS_NOT_SATISFIED: Status = Status(0x6985);
    /// Incorrect parameters in the data field.
    pub const WRONG_DATA: Status = Status(0x6A80);
    /// File or application not found.
    pub const NOT_FOUND: Status = Status(0x6A82);
    /// Not enough memory (a command chain grew too long).
    pub const NOT_ENOUGH_MEMORY: Status = Status(0x6A84);
    /// Incorrect P1 or P2.
    pub const WRONG_P1P2: Status = Status(0x6A86);
    /// Referenced data (key or PIN reference) not found.
    pub const REFERENCE_NOT_FOUND: Status = Status(0x6A88);
    /// Instruction not supported.
    pub const INS_NOT_SUPPORTED: Status = Status(0x6D00);
    /// Class not supported.
    pub const CLA_NOT_SUPPORTED: Status = Status(0x6E00);

    /// Verification failed, `tries` attempts left (`63 Cx`).
    pub fn verify_failed(tries: u8) -> Status {
        Status(0x63C0 | u16::from(tries.min(0x0F)))
    }

    /// More response data waiting (`61 xx`); 256 and more are coded as `00`.
    pub fn bytes_remaining(remaining: usize) -> Status {
        let xx = if remaining >= 256 { 0 } else { remaining };
        Status(0x6100 | xx as u16)
    }

    /// The two bytes as sent on the wire.
    pub fn to_bytes(self) -> [u8; 2] {
        self.0.to_be_bytes()
    }
}

/// A parsed short command APDU borrowing its data field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command<'a> {
    /// Class byte.
    pub cla: u8,
    /// Instruction byte.
    pub ins: u8,
    /// Parameter 1.
    pub p1: u8,
    /// Parameter 2.
    pub p2: u8,
    /// Command data (empty for cases 1 and 2).
    pub data: &'a [u8],
    /// Expected response length Ne (1..=256), if Le was present.
    pub le: Option<usize>,
}

impl<'a> Command<'a> {
    /// Parses a short APDU (cases 1 to 4). Extended APDUs are refused with
    /// `67 00`: the card announces no extended-length support, so a reader
    /// must never send one.
    pub fn parse(bytes: &'a [u8]) -> Result<Command<'a>, Status> {
        let (header, body) = match bytes.split_first_chunk::<4>() {
            Some(split) => split,
            None => return Err(Status::WRONG_LENGTH),
        };
        let [cla, ins, p1, p2] = *header;
        let (data, le) = match body {
            [] => (&[][..], None),
            [le] => (&[][..], Some(ne(*le))),
            [0, _, ..] => return Err(Status::WRONG_LENGTH),
            [lc, rest @ ..] => {
                let lc = usize::from(*lc);
                if rest.len() == lc {
                    (rest, None)
                } else if rest.len() == lc + 1 {
                    let (data, le) = rest.split_at(lc);
                    (data, le.first().map(|b| ne(*b)))
                } else {
                    return Err(Status::WRONG_LENGTH);
                }
            }
        };
        Ok(Command {
            cla,
            ins,
            p1,
            p2,
            data,
            le,
        })
    }

    /// True when the class byte says more chunks of this command follow.
    pub fn is_chained(&self) -> bool {
        self.cla & 0x10 != 0
    }
}

/// A short Le byte of 0 means 256.
fn ne(le: u8) -> usize {
    if le == 0 {
        256
    } else {
        usize::from(le)
    }
}

/// A response APDU: data followed by a status word.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// Response data.
    pub data: Vec<u8>,
    /// Status word.
    pub status: Status,
}

impl Response {
    /// A response carrying only a status word.
    pub fn status(status: Status) -> Response {
        Response {
            data: Vec::new(),
            status,
        }
    }

    /// A successful response with data.
    pub fn ok(data: Vec<u8>) -> Response {
        Response {
            data,
            status: Status::OK,
        }
    }

    /// The bytes as sent to the reader.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.data.len() + 2);
        out.extend_from_slice(&self.data);
        out.extend_from_slice(&self.status.to_bytes());
        out
    }
}

impl From<Status> for Response {
    fn from(status: Status) -> Response {
        Response::status(status)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn case_1_has_no_data_and_no_le() {
        let c = Command::parse(&[0x00, 0x20, 0x00, 0x80]);
        assert_eq!(
            c,
            Ok(Command {
                cla: 0,
                ins: 0x20,
                p1: 0,
                p2: 0x80,
                data: &[],
                le: None
            })
        );
    }

    #[test]
    fn case_2_le_zero_means_256() {
        let c = Command::parse(&[0x00, 0xC0, 0x00, 0x00, 0x00]);
        assert_eq!(c.map(|c| c.le), Ok(Some(256)));
        let c = Command::parse(&[0x00, 0xC0, 0x00, 0x00, 0x12]);
        assert_eq!(c.map(|c| c.le), Ok(Some(0x12)));
    }

    #[test]
    fn case_3_takes_exactly_lc_bytes() {
        let c = Command::parse(&[0x00, 0x20, 0x00, 0x80, 0x02, 0x31, 0x32]);
        assert_eq!(c.as_ref().map(|c| c.data), Ok(&[0x31, 0x32][..]));
        assert_eq!(c.map(|c| c.le), Ok(None));
    }

    #[test]
    fn case_4_has_data_and_le() {
        let c = Command::parse(&[0x00, 0xCB, 0x3F, 0xFF, 0x03, 0x5C, 0x01, 0x7E, 0x00]);
        assert_eq!(c.as_ref().map(|c| c.data), Ok(&[0x5C, 0x01, 0x7E][..]));
        assert_eq!(c.map(|c| c.le), Ok(Some(256)));
    }

    #[test]
    fn short_input_is_wrong_length() {
        for bytes in [&[][..], &[0x00], &[0x00, 0xA4], &[0x00, 0xA4, 0x04]] {
            assert_eq!(Command::parse(bytes), Err(Status::WRONG_LENGTH));
        }
    }

    #[test]
    fn lc_longer_than_data_is_wrong_length() {
        assert_eq!(
            Command::parse(&[0x00, 0x20, 0x00, 0x80, 0x08, 0x31]),
            Err(Status::WRONG_LENGTH)
        );
    }

    #[test]
    fn trailing_garbage_is_wrong_length() {
        assert_eq!(
            Command::parse(&[0x00, 0x20, 0x00, 0x80, 0x01, 0x31, 0x00, 0x00]),
            Err(Status::WRONG_LENGTH)
        );
    }

    #[test]
    fn extended_apdu_is_refused() {
        assert_eq!(
            Command::parse(&[0x00, 0xCB, 0x3F, 0xFF, 0x00, 0x00, 0x03, 0x5C, 0x01, 0x7E]),
            Err(Status::WRONG_LENGTH)
        );
        assert_eq!(
            Command::parse(&[0x00, 0xCB, 0x3F, 0xFF, 0x00, 0x01, 0x00]),
            Err(Status::WRONG_LENGTH)
        );
    }

    #[test]
    fn chaining_bit_is_detected() {
        let c = Command::parse(&[0x10, 0x87, 0x07, 0x9A, 0x01, 0x7C]);
        assert_eq!(c.map(|c| c.is_chained()), Ok(true));
    }

    #[test]
    fn every_short_byte_string_parses_or_fails_cleanly() {
        // Exhaustive over lengths 0..=8 with a few byte values: no panics, and
        // a successful parse accounts for every input byte.
        let values = [0x00, 0x01, 0x02, 0x03, 0x04, 0x7F, 0xFF];
        for len in 0..=8usize {
            let mut idx = vec![0usize; len];
            loop {
                let bytes: Vec<u8> = idx.iter().map(|i| values[*i]).collect();
                if let Ok(c) = Command::parse(&bytes) {
                    let le_bytes = usize::from(c.le.is_some());
                    let lc_bytes = usize::from(!c.data.is_empty());
                    assert_eq!(4 + lc_bytes + c.data.len() + le_bytes, bytes.len());
                }
                let mut pos = 0;
                while pos < len {
                    idx[pos] += 1;
                    if idx[pos] < values.len() {
                        break;
                    }
                    idx[pos] = 0;
                    pos += 1;
                }
                if pos == len {
                    break;
                }
            }
        }
    }

    #[test]
    fn status_helpers() {
        assert_eq!(Status::verify_failed(2).to_bytes(), [0x63, 0xC2]);
        assert_eq!(Status::verify_failed(20).to_bytes(), [0x63, 0xCF]);
        assert_eq!(Status::bytes_remaining(300).to_bytes(), [0x61, 0x00]);
        assert_eq!(Status::bytes_remaining(256).to_bytes(), [0x61, 0x00]);
        assert_eq!(Status::bytes_remaining(17).to_bytes(), [0x61, 0x11]);
        assert_eq!(
            Response::ok(vec![1, 2]).to_bytes(),
            vec![0x01, 0x02, 0x90, 0x00]
        );
    }
}
