//! `DataKey`: a 256-bit symmetric key (installation, app or account key, or the token pepper).

use std::fmt;

use subtle::ConstantTimeEq;
use zeroize::{Zeroize, Zeroizing};

use crate::error::Result;
use crate::random::fill_random;

/// Length of every symmetric key in tresor.
pub const KEY_LEN: usize = 32;

/// A 256-bit symmetric key. Zeroized on drop; `Debug` prints `DataKey([redacted])`.
///
/// The bytes live on the heap so that moving a `DataKey` around does not leave stray copies of
/// the key on the stack.
#[derive(Clone)]
pub struct DataKey {
    bytes: Box<Zeroizing<[u8; KEY_LEN]>>,
}

impl DataKey {
    /// A fresh random key.
    pub fn generate() -> Result<DataKey> {
        let mut bytes = Box::new(Zeroizing::new([0u8; KEY_LEN]));
        fill_random(&mut bytes[..])?;
        Ok(DataKey { bytes })
    }

    /// Takes ownership of existing key bytes. The caller's copy of the array is its own to
    /// zeroize; the local copy made by passing it by value is wiped here.
    pub fn from_bytes(mut bytes: [u8; KEY_LEN]) -> DataKey {
        let mut boxed = Box::new(Zeroizing::new([0u8; KEY_LEN]));
        boxed.copy_from_slice(&bytes);
        bytes.zeroize();
        DataKey { bytes: boxed }
    }

    /// Copies key bytes straight from a (zeroizing) buffer into the key's heap home, so that no
    /// intermediate array is left on the stack. `None` unless `bytes` is exactly 32 bytes.
    pub(crate) fn from_slice(bytes: &[u8]) -> Option<DataKey> {
        if bytes.len() != KEY_LEN {
            return None;
        }
        let mut boxed = Box::new(Zeroizing::new([0u8; KEY_LEN]));
        boxed.copy_from_slice(bytes);
        Some(DataKey { bytes: boxed })
    }

    /// The raw key, for the primitives in this crate only.
    pub(crate) fn expose(&self) -> &[u8; KEY_LEN] {
        &self.bytes
    }
}

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DataKey([redacted])")
    }
}

/// Constant time, so comparing keys (e.g. in tests of other crates) cannot leak them by timing.
impl PartialEq for DataKey {
    fn eq(&self, other: &Self) -> bool {
        self.expose().ct_eq(other.expose()).into()
    }
}

impl Eq for DataKey {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::assert_no_secret;

    #[test]
    fn debug_is_redacted() {
        let raw = [0xA7u8; 32];
        let key = DataKey::from_bytes(raw);
        let shown = format!("{key:?} {key:#?}");
        assert!(shown.contains("DataKey([redacted])"));
        assert_no_secret(&shown, &raw);

        let generated = DataKey::generate().unwrap();
        let shown = format!("{generated:?}");
        assert_no_secret(&shown, generated.expose());
    }

    #[test]
    fn generate_gives_distinct_keys() {
        let a = DataKey::generate().unwrap();
        let b = DataKey::generate().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.clone(), a);
    }

    #[test]
    fn from_bytes_keeps_bytes() {
        let raw: [u8; 32] = core::array::from_fn(|i| i as u8);
        assert_eq!(DataKey::from_bytes(raw).expose(), &raw);
        assert_eq!(DataKey::from_slice(&raw), Some(DataKey::from_bytes(raw)));
    }

    #[test]
    fn from_slice_rejects_wrong_lengths() {
        assert!(DataKey::from_slice(&[0u8; 31]).is_none());
        assert!(DataKey::from_slice(&[0u8; 33]).is_none());
        assert!(DataKey::from_slice(&[]).is_none());
    }
}
