//! `DataKey`: a 256-bit symmetric key (installation, app or account key, or the token pepper).

use std::fmt;

use subtle::ConstantTimeEq;
use zeroize::{Zeroize, Zeroizing};

use crate::error::Result;
use crate::locked::LockedKey;
use crate::random::fill_random;

/// Length of every symmetric key in tresor.
pub const KEY_LEN: usize = 32;

/// A 256-bit symmetric key. Zeroized on drop; `Debug` prints `DataKey([redacted])`.
///
/// The bytes live on the heap so that moving a `DataKey` around does not leave stray copies of
/// the key on the stack; a long-lived key can move into a page of its own locked in memory
/// ([`DataKey::lock_in_memory`]).
pub struct DataKey {
    bytes: Home,
}

enum Home {
    Heap(Box<Zeroizing<[u8; KEY_LEN]>>),
    Locked(LockedKey),
}

impl Clone for DataKey {
    /// A clone of a locked key is locked too (if the system allows it).
    fn clone(&self) -> DataKey {
        match &self.bytes {
            Home::Heap(b) => DataKey {
                bytes: Home::Heap(b.clone()),
            },
            Home::Locked(k) => DataKey {
                bytes: Home::Locked(LockedKey::new(k.key()).0),
            },
        }
    }
}

impl DataKey {
    /// A fresh random key.
    pub fn generate() -> Result<DataKey> {
        let mut bytes = Box::new(Zeroizing::new([0u8; KEY_LEN]));
        fill_random(&mut bytes[..])?;
        Ok(DataKey {
            bytes: Home::Heap(bytes),
        })
    }

    /// Takes ownership of existing key bytes. The caller's copy of the array is its own to
    /// zeroize; the local copy made by passing it by value is wiped here.
    pub fn from_bytes(mut bytes: [u8; KEY_LEN]) -> DataKey {
        let mut boxed = Box::new(Zeroizing::new([0u8; KEY_LEN]));
        boxed.copy_from_slice(&bytes);
        bytes.zeroize();
        DataKey {
            bytes: Home::Heap(boxed),
        }
    }

    /// Copies key bytes straight from a (zeroizing) buffer into the key's heap home, so that no
    /// intermediate array is left on the stack. `None` unless `bytes` is exactly 32 bytes.
    pub(crate) fn from_slice(bytes: &[u8]) -> Option<DataKey> {
        if bytes.len() != KEY_LEN {
            return None;
        }
        let mut boxed = Box::new(Zeroizing::new([0u8; KEY_LEN]));
        boxed.copy_from_slice(bytes);
        Some(DataKey {
            bytes: Home::Heap(boxed),
        })
    }

    /// Moves the key into a page of its own and locks that page in memory (`mlock`), so it is
    /// never written to swap. When the system refuses (`RLIMIT_MEMLOCK`), the key stays usable
    /// in its own unlocked page and the error says why. Calling it again on a locked key does
    /// nothing.
    pub fn lock_in_memory(&mut self) -> std::io::Result<()> {
        match &self.bytes {
            Home::Locked(k) if k.is_locked() => Ok(()),
            Home::Locked(k) => {
                let (locked, result) = LockedKey::new(k.key());
                self.bytes = Home::Locked(locked);
                result
            }
            Home::Heap(b) => {
                let (locked, result) = LockedKey::new(b);
                self.bytes = Home::Locked(locked);
                result
            }
        }
    }

    /// Whether the key sits in a page locked in memory.
    pub fn is_locked_in_memory(&self) -> bool {
        matches!(&self.bytes, Home::Locked(k) if k.is_locked())
    }

    /// The raw key, for the primitives in this crate only.
    pub(crate) fn expose(&self) -> &[u8; KEY_LEN] {
        match &self.bytes {
            Home::Heap(b) => b,
            Home::Locked(k) => k.key(),
        }
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
    fn a_locked_key_keeps_its_bytes_and_its_clones_are_locked() {
        let raw: [u8; 32] = core::array::from_fn(|i| i as u8 ^ 0x5c);
        let mut key = DataKey::from_bytes(raw);
        assert!(!key.is_locked_in_memory());
        // Locking may be refused (RLIMIT_MEMLOCK); the key works either way.
        let locked = key.lock_in_memory().is_ok();
        assert_eq!(key.is_locked_in_memory(), locked);
        assert_eq!(key.expose(), &raw);
        assert_eq!(key.clone(), DataKey::from_bytes(raw));
        if locked {
            assert!(key.clone().is_locked_in_memory());
            assert!(key.lock_in_memory().is_ok(), "idempotent");
        }
        let shown = format!("{key:?}");
        assert_no_secret(&shown, &raw);
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
