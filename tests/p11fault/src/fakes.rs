//! What the fault module makes up: garbage bytes, forged signatures and the
//! fake certificate or public-key objects of a flood.

use cryptoki_sys::{
    CKA_CERTIFICATE_TYPE, CKA_CLASS, CKA_EC_PARAMS, CKA_EC_POINT, CKA_ID, CKA_KEY_TYPE, CKA_LABEL,
    CKA_VALUE, CKC_X_509, CKK_EC, CKO_CERTIFICATE, CKO_PUBLIC_KEY, CK_ATTRIBUTE_TYPE,
    CK_OBJECT_CLASS, CK_OBJECT_HANDLE,
};

use crate::plan::{Fill, FloodClass, Position};

/// DER of the OID of P-256, the curve every fake public key claims.
const PRIME256V1: [u8; 10] = [0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];

/// The CKA_CLASS value of a flood's objects.
pub fn object_class(class: FloodClass) -> CK_OBJECT_CLASS {
    match class {
        FloodClass::Certificate => CKO_CERTIFICATE,
        FloodClass::PublicKey => CKO_PUBLIC_KEY,
    }
}

/// Fake handles start here, far above the small numbers real modules use.
const FAKE_HANDLE_BASE: CK_OBJECT_HANDLE = 0xF1_0000_0000;

/// Deterministic pseudo-random bytes (xorshift64*), so failures reproduce.
pub fn garbage(length: usize, seed: u64) -> Vec<u8> {
    let mut state = seed ^ 0x9E37_79B9_7F4A_7C15;
    (0..length)
        .map(|_| {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_be_bytes()[0]
        })
        .collect()
}

/// A `length`-byte signature made from the `real` one as `fill` says.
pub fn forge_signature(real: &[u8], length: usize, fill: Fill) -> Vec<u8> {
    match fill {
        Fill::Garbage => garbage(length, real.len() as u64),
        Fill::Real => {
            let mut forged = vec![0; length.saturating_sub(real.len())];
            forged.extend_from_slice(&real[real.len().saturating_sub(length)..]);
            forged
        }
    }
}

/// True for handles a flood made up.
pub fn is_fake_handle(handle: CK_OBJECT_HANDLE) -> bool {
    handle >= FAKE_HANDLE_BASE
}

/// The value of attribute `kind` of fake object `handle` of `class`: a
/// certificate object whose CKA_VALUE is not DER, or a P-256 public key whose
/// CKA_EC_POINT is not a point. `None` for attributes it lacks.
pub fn fake_attribute(
    handle: CK_OBJECT_HANDLE,
    class: FloodClass,
    kind: CK_ATTRIBUTE_TYPE,
) -> Option<Vec<u8>> {
    match (class, kind) {
        (_, CKA_CLASS) => Some(object_class(class).to_ne_bytes().to_vec()),
        (_, CKA_ID) => Some(handle.to_be_bytes().to_vec()),
        (_, CKA_LABEL) => Some(format!("flood {}", handle - FAKE_HANDLE_BASE).into_bytes()),
        (FloodClass::Certificate, CKA_CERTIFICATE_TYPE) => Some(CKC_X_509.to_ne_bytes().to_vec()),
        (FloodClass::Certificate, CKA_VALUE) => Some(garbage(64, handle)),
        (FloodClass::PublicKey, CKA_KEY_TYPE) => Some(CKK_EC.to_ne_bytes().to_vec()),
        (FloodClass::PublicKey, CKA_EC_PARAMS) => Some(PRIME256V1.to_vec()),
        (FloodClass::PublicKey, CKA_EC_POINT) => Some(garbage(67, handle)),
        _ => None,
    }
}

/// One certificate search with fake objects mixed in.
#[derive(Debug)]
pub struct FloodSearch {
    position: Position,
    next: CK_OBJECT_HANDLE,
    remaining: u64,
    /// The real module has returned all its objects.
    pub real_done: bool,
}

impl FloodSearch {
    /// A search that yields `count` fake objects at `position`.
    pub fn new(count: u64, position: Position) -> Self {
        Self {
            position,
            next: FAKE_HANDLE_BASE,
            remaining: count,
            real_done: false,
        }
    }

    /// Where the fakes go.
    pub fn position(&self) -> Position {
        self.position
    }

    /// Fills `out` with fake handles while any remain; returns how many.
    pub fn fill_fakes(&mut self, out: &mut [CK_OBJECT_HANDLE]) -> usize {
        let mut filled = 0;
        for slot in out.iter_mut() {
            if self.remaining == 0 {
                break;
            }
            *slot = self.next;
            self.next += 1;
            self.remaining -= 1;
            filled += 1;
        }
        filled
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_real_signature_is_padded_or_cut_on_the_left() {
        let real = [1, 2, 3, 4];
        assert_eq!(forge_signature(&real, 6, Fill::Real), [0, 0, 1, 2, 3, 4]);
        assert_eq!(forge_signature(&real, 2, Fill::Real), [3, 4]);
        assert_eq!(forge_signature(&real, 0, Fill::Real), [0u8; 0]);
        let garbage = forge_signature(&real, 512, Fill::Garbage);
        assert_eq!(garbage.len(), 512);
        assert_ne!(garbage[..4], real);
    }

    #[test]
    fn garbage_is_deterministic_and_not_constant() {
        assert_eq!(garbage(32, 7), garbage(32, 7));
        assert_ne!(garbage(32, 7), garbage(32, 8));
        let bytes = garbage(64, 1);
        assert!(bytes.iter().any(|byte| *byte != bytes[0]));
    }

    #[test]
    fn a_flood_hands_out_exactly_its_count_of_distinct_fakes() {
        let mut search = FloodSearch::new(5, Position::Before);
        let mut out = [0; 3];
        assert_eq!(search.fill_fakes(&mut out), 3);
        assert!(out.iter().all(|handle| is_fake_handle(*handle)));
        let mut more = [0; 3];
        assert_eq!(search.fill_fakes(&mut more), 2);
        assert_eq!(search.fill_fakes(&mut more), 0);
        assert_ne!(out[2], more[0]);
        assert!(!is_fake_handle(42));
        assert_eq!(
            fake_attribute(out[0], FloodClass::Certificate, CKA_LABEL),
            Some(b"flood 0".to_vec())
        );
    }
}
