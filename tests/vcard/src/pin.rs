//! The card's reference data: PIN and PUK with their retry counters, kept
//! across restarts in an optional state file.

use std::fmt;
use std::path::{Path, PathBuf};

/// A PIN or PUK in the PIV on-card format: 8 bytes, padded with `FF`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Padded(pub [u8; 8]);

// Reference data never goes to logs.
impl fmt::Debug for Padded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Padded(..)")
    }
}

impl Padded {
    /// Pads a PIN given as text. PIV asks for 6 to 8 digits; any printable
    /// ASCII is accepted so tests can use odd PINs too.
    pub fn from_value(value: &[u8]) -> Option<Padded> {
        if !(6..=8).contains(&value.len()) || !value.iter().all(|b| (0x20..=0x7E).contains(b)) {
            return None;
        }
        let mut out = [0xFF; 8];
        out.iter_mut().zip(value).for_each(|(o, v)| *o = *v);
        Some(Padded(out))
    }

    /// Checks the on-card format of 8 bytes from a command: a valid value
    /// followed only by `FF` padding.
    pub fn from_wire(bytes: &[u8]) -> Option<Padded> {
        let bytes: [u8; 8] = bytes.try_into().ok()?;
        let len = bytes.iter().position(|b| *b == 0xFF).unwrap_or(8);
        let (value, padding) = bytes.split_at(len);
        if !padding.iter().all(|b| *b == 0xFF) {
            return None;
        }
        Padded::from_value(value)
    }

    fn to_hex(self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn from_hex(text: &str) -> Option<Padded> {
        if text.len() != 16 {
            return None;
        }
        let mut out = [0u8; 8];
        for (i, o) in out.iter_mut().enumerate() {
            *o = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        Some(Padded(out))
    }
}

/// Which reference data a command addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reference {
    /// The PIV application PIN (key reference 80).
    Pin,
    /// The PIN unblocking key (key reference 81).
    Puk,
}

/// Outcome of presenting reference data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// Correct; the counter is back at its maximum.
    Correct,
    /// Wrong; this many tries are left (0 = now blocked).
    Wrong(u8),
    /// The counter was already zero; nothing was compared.
    Blocked,
}

/// PIN and PUK values and retry counters.
#[derive(Debug)]
pub struct Credentials {
    pin: Padded,
    puk: Padded,
    pin_tries_left: u8,
    puk_tries_left: u8,
    pin_max: u8,
    puk_max: u8,
    state_file: Option<PathBuf>,
}

impl Credentials {
    /// New credentials; when `state_file` exists its PIN, PUK and counters
    /// take precedence, so a restarted card stays blocked or keeps a
    /// changed PIN.
    pub fn new(
        pin: Padded,
        puk: Padded,
        pin_max: u8,
        puk_max: u8,
        state_file: Option<PathBuf>,
    ) -> Result<Credentials, String> {
        let mut creds = Credentials {
            pin,
            puk,
            pin_tries_left: pin_max,
            puk_tries_left: puk_max,
            pin_max,
            puk_max,
            state_file,
        };
        if let Some(path) = creds.state_file.clone() {
            match std::fs::read_to_string(&path) {
                Ok(text) => creds
                    .apply_state(&text)
                    .map_err(|e| format!("{}: {e}", path.display()))?,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => creds.save()?,
                Err(e) => return Err(format!("{}: {e}", path.display())),
            }
        }
        Ok(creds)
    }

    fn apply_state(&mut self, text: &str) -> Result<(), String> {
        for line in text.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (key, value) = line
                .split_once('=')
                .ok_or_else(|| format!("bad line {line:?}"))?;
            let bad = || format!("bad value for {key}");
            match key {
                "pin" => self.pin = Padded::from_hex(value).ok_or_else(bad)?,
                "puk" => self.puk = Padded::from_hex(value).ok_or_else(bad)?,
                "pin_tries_left" => {
                    self.pin_tries_left = value.parse::<u8>().map_err(|_| bad())?.min(self.pin_max)
                }
                "puk_tries_left" => {
                    self.puk_tries_left = value.parse::<u8>().map_err(|_| bad())?.min(self.puk_max)
                }
                _ => return Err(format!("unknown key {key:?}")),
            }
        }
        Ok(())
    }

    /// Writes the state file (atomically, by rename) if there is one.
    fn save(&self) -> Result<(), String> {
        let Some(path) = &self.state_file else {
            return Ok(());
        };
        let text = format!(
            "# tessera-vcard card state: PIN and PUK are hex, FF-padded\n\
             pin={}\npuk={}\npin_tries_left={}\npuk_tries_left={}\n",
            self.pin.to_hex(),
            self.puk.to_hex(),
            self.pin_tries_left,
            self.puk_tries_left
        );
        write_atomically(path, &text).map_err(|e| format!("{}: {e}", path.display()))
    }

    fn persist(&self) {
        // A card keeps working when its state file becomes unwritable; the
        // log says why a restart would forget the counters.
        if let Err(e) = self.save() {
            eprintln!("tessera-vcard: cannot save state: {e}");
        }
    }

    /// Tries left for the PIN.
    pub fn pin_tries_left(&self) -> u8 {
        self.pin_tries_left
    }

    /// Tries left for the PUK.
    pub fn puk_tries_left(&self) -> u8 {
        self.puk_tries_left
    }

    /// Presents `candidate` for `reference`, counting a failure.
    pub fn check(&mut self, reference: Reference, candidate: &[u8]) -> Check {
        let (value, left, max) = match reference {
            Reference::Pin => (self.pin, &mut self.pin_tries_left, self.pin_max),
            Reference::Puk => (self.puk, &mut self.puk_tries_left, self.puk_max),
        };
        if *left == 0 {
            return Check::Blocked;
        }
        let result = if constant_time_eq(&value.0, candidate) {
            *left = max;
            Check::Correct
        } else {
            *left -= 1;
            Check::Wrong(*left)
        };
        self.persist();
        result
    }

    /// Replaces the value of `reference` and resets its counter.
    pub fn set(&mut self, reference: Reference, value: Padded) {
        match reference {
            Reference::Pin => {
                self.pin = value;
                self.pin_tries_left = self.pin_max;
            }
            Reference::Puk => {
                self.puk = value;
                self.puk_tries_left = self.puk_max;
            }
        }
        self.persist();
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn write_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn padded(s: &str) -> Padded {
        Padded::from_value(s.as_bytes()).unwrap()
    }

    #[test]
    fn padding_format() {
        assert_eq!(padded("123456").0, *b"123456\xFF\xFF");
        assert_eq!(padded("12345678").0, *b"12345678");
        assert!(Padded::from_value(b"12345").is_none());
        assert!(Padded::from_value(b"123456789").is_none());
        assert!(Padded::from_value(b"12\x0034567").is_none());
        assert_eq!(Padded::from_wire(b"123456\xFF\xFF"), Some(padded("123456")));
        assert!(Padded::from_wire(b"123456\xFF1").is_none());
        assert!(Padded::from_wire(b"1234\xFF\xFF\xFF\xFF").is_none());
        assert!(Padded::from_wire(b"123456").is_none());
    }

    #[test]
    fn wrong_pin_counts_down_to_blocked_and_correct_resets() {
        let mut c = Credentials::new(padded("123456"), padded("12345678"), 3, 3, None).unwrap();
        assert_eq!(c.check(Reference::Pin, b"000000\xFF\xFF"), Check::Wrong(2));
        assert_eq!(c.check(Reference::Pin, &padded("123456").0), Check::Correct);
        assert_eq!(c.pin_tries_left(), 3);
        for left in [2, 1, 0] {
            assert_eq!(c.check(Reference::Pin, b"x"), Check::Wrong(left));
        }
        assert_eq!(c.check(Reference::Pin, &padded("123456").0), Check::Blocked);
        c.set(Reference::Pin, padded("654321"));
        assert_eq!(c.check(Reference::Pin, &padded("654321").0), Check::Correct);
    }

    #[test]
    fn state_file_survives_restart() {
        let dir = std::env::temp_dir().join(format!("vcard-pin-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("state");
        let _ = std::fs::remove_file(&path);
        let mut c = Credentials::new(
            padded("123456"),
            padded("12345678"),
            3,
            5,
            Some(path.clone()),
        )
        .unwrap();
        assert_eq!(c.check(Reference::Pin, b"bad"), Check::Wrong(2));
        assert_eq!(c.check(Reference::Puk, b"bad"), Check::Wrong(4));
        drop(c);
        let mut c = Credentials::new(
            padded("999999"),
            padded("99999999"),
            3,
            5,
            Some(path.clone()),
        )
        .unwrap();
        assert_eq!(c.pin_tries_left(), 2);
        assert_eq!(c.puk_tries_left(), 4);
        c.set(Reference::Pin, padded("777777"));
        drop(c);
        let mut c = Credentials::new(
            padded("999999"),
            padded("99999999"),
            3,
            5,
            Some(path.clone()),
        )
        .unwrap();
        assert_eq!(c.check(Reference::Pin, &padded("777777").0), Check::Correct);
        std::fs::write(&path, "pin=zz\n").unwrap();
        assert!(Credentials::new(padded("123456"), padded("12345678"), 3, 3, Some(path)).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
