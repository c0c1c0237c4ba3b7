//! `RootKeyRing`: the versioned root keys, and wrapping data keys under them.
//!
//! The ring holds every root key version the server knows; the last one is active and is the
//! only one used to wrap. Older versions stay so that keys wrapped before a rotation still
//! unwrap. Loading and writing the root key file lives in `key_file.rs`.
//!
//! # Wrapped key format
//!
//! `[format = 1 u8][alg = 1 u8][id_len u8][id bytes][salt 32][nonce 12][ciphertext 32][tag 16]`
//!
//! The construction is the record envelope's (see [`crate::record`]): a one-time AES-256-GCM
//! key from HKDF-SHA256 over the root version key with a random 256-bit salt, here with info
//! `tresor/wrap/v1`. GCM authenticates the whole header plus the caller's context, so a wrapped
//! key moved to another owner, or relabelled with another version id, fails to unwrap.

use std::fmt;

use crate::data_key::{DataKey, KEY_LEN};
use crate::derived_aead::{
    self, ALG_AES256GCM_HKDF_SHA256, FORMAT_V1, NONCE_LEN, SALT_LEN, TAG_LEN, check_format,
};
use crate::error::{CryptoError, Result};

/// Versioned root keys; the last version is the active one. `Debug` shows version ids only.
#[derive(Clone)]
pub struct RootKeyRing {
    /// Kept apart from the older versions so "the ring always has an active key" holds by
    /// construction rather than by a check at every use.
    pub(crate) active: RootVersion,
    pub(crate) older: Vec<RootVersion>,
}

impl RootKeyRing {
    /// An in-memory ring with one random version, id `1` (what `generate_file` writes). For
    /// tests and ephemeral setups; nothing is persisted.
    pub fn generate() -> Result<RootKeyRing> {
        Ok(RootKeyRing {
            active: RootVersion {
                id: "1".to_string(),
                key: DataKey::generate()?,
            },
            older: Vec::new(),
        })
    }

    /// The id of the version that [`RootKeyRing::wrap`] uses.
    pub fn active_id(&self) -> &str {
        &self.active.id
    }

    /// Locks the key of every version in memory (see [`DataKey::lock_in_memory`]); the first
    /// refusal is returned, after every version was tried.
    pub fn lock_in_memory(&mut self) -> std::io::Result<()> {
        let mut first = Ok(());
        for v in self
            .older
            .iter_mut()
            .chain(std::iter::once(&mut self.active))
        {
            if let Err(e) = v.key.lock_in_memory()
                && first.is_ok()
            {
                first = Err(e);
            }
        }
        first
    }

    /// All version ids, oldest first; the last is the active one.
    pub fn version_ids(&self) -> Vec<String> {
        self.versions().map(|v| v.id.clone()).collect()
    }

    /// Wraps a data key under the active root version. `context` is authenticated (AAD), e.g.
    /// `b"installation:42"`, and must be given again to unwrap.
    pub fn wrap(&self, key: &DataKey, context: &[u8]) -> Result<Vec<u8>> {
        self.wrap_under(&self.active, key, context)
    }

    /// Wraps a data key under the version `id` (`UnknownKeyVersion` if the ring does not hold
    /// it): a store's active version is the one every running server holds, which need not be
    /// the newest in this ring (see key rotation in `tresor-core`).
    pub fn wrap_with(&self, id: &str, key: &DataKey, context: &[u8]) -> Result<Vec<u8>> {
        let version = self
            .versions()
            .find(|v| v.id == id)
            .ok_or_else(|| CryptoError::UnknownKeyVersion(id.to_string()))?;
        self.wrap_under(version, key, context)
    }

    fn wrap_under(&self, version: &RootVersion, key: &DataKey, context: &[u8]) -> Result<Vec<u8>> {
        let id = version.id.as_bytes();
        let id_len = u8::try_from(id.len()).map_err(|_| CryptoError::UnsupportedFormat)?;
        let mut prefix = Vec::with_capacity(3 + id.len());
        prefix.extend_from_slice(&[FORMAT_V1, ALG_AES256GCM_HKDF_SHA256, id_len]);
        prefix.extend_from_slice(id);
        derived_aead::seal(&version.key, WRAP_INFO, &prefix, context, key.expose())
    }

    /// Does the ring hold the version `id`?
    pub fn holds(&self, id: &str) -> bool {
        self.versions().any(|v| v.id == id)
    }

    /// The header every key wrapped under version `id` starts with (see
    /// [`RootKeyRing::wrapped_headers`]), whether or not this ring holds it; `None` for an id
    /// that is not a valid version id.
    pub fn header_of(id: &str) -> Option<Vec<u8>> {
        if !valid_id(id) {
            return None;
        }
        let mut header = Vec::with_capacity(PREFIX_FIXED_LEN + id.len());
        header.extend_from_slice(&[
            FORMAT_V1,
            ALG_AES256GCM_HKDF_SHA256,
            u8::try_from(id.len()).ok()?,
        ]);
        header.extend_from_slice(id.as_bytes());
        Some(header)
    }

    /// Unwraps with whichever version the header names (`UnknownKeyVersion` if the ring does not
    /// hold it). A wrong context, any flipped bit or a truncated blob gives `Integrity`.
    pub fn unwrap(&self, wrapped: &[u8], context: &[u8]) -> Result<DataKey> {
        let id = parse_header(wrapped)?;
        let prefix_len = PREFIX_FIXED_LEN + id.len();
        if wrapped.len() != prefix_len + SALT_LEN + NONCE_LEN + KEY_LEN + TAG_LEN {
            return Err(CryptoError::Integrity);
        }
        let version = self
            .versions()
            .find(|v| v.id == id)
            .ok_or_else(|| CryptoError::UnknownKeyVersion(id.to_string()))?;
        let plain = derived_aead::open(&version.key, WRAP_INFO, prefix_len, context, wrapped)?;
        DataKey::from_slice(&plain).ok_or(CryptoError::Integrity)
    }

    /// The header that every key wrapped under each version starts with, oldest version first:
    /// `(id, header)`. Lets a store be asked which of its wrapped keys were made under a version
    /// (or under none that this ring holds) without any key bytes leaving this crate.
    pub fn wrapped_headers(&self) -> Vec<(String, Vec<u8>)> {
        // Every id in a ring is valid (checked when the ring was built), so each has a header.
        self.versions()
            .filter_map(|v| Some((v.id.clone(), RootKeyRing::header_of(&v.id)?)))
            .collect()
    }

    /// The root key version id a wrapped key was made with. Reads the header only, so the answer
    /// is unauthenticated until the key is unwrapped.
    pub fn wrapped_version(wrapped: &[u8]) -> Result<String> {
        parse_header(wrapped).map(str::to_string)
    }

    pub(crate) fn versions(&self) -> impl Iterator<Item = &RootVersion> {
        self.older.iter().chain(std::iter::once(&self.active))
    }

    /// Builds a ring from versions in file order; `None` if there are none.
    pub(crate) fn from_versions(mut versions: Vec<RootVersion>) -> Option<RootKeyRing> {
        let active = versions.pop()?;
        Some(RootKeyRing {
            active,
            older: versions,
        })
    }

    /// The ring with `version` appended as the new active one.
    pub(crate) fn with_new_active(mut self, version: RootVersion) -> RootKeyRing {
        let previous = std::mem::replace(&mut self.active, version);
        self.older.push(previous);
        self
    }
}

impl fmt::Debug for RootKeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RootKeyRing")
            .field("versions", &self.version_ids())
            .field("active", &self.active_id())
            .finish()
    }
}

/// One root key version.
#[derive(Clone)]
pub(crate) struct RootVersion {
    pub(crate) id: String,
    pub(crate) key: DataKey,
}

/// Whether `id` is a valid version id: `[A-Za-z0-9._-]{1,32}`. The charset keeps ids safe to
/// print in errors and logs and unambiguous in the `ID:BASE64` file format.
pub(crate) fn valid_id(id: &str) -> bool {
    (1..=MAX_ID_LEN).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

pub(crate) const MAX_ID_LEN: usize = 32;

/// HKDF info, so a wrapping key can never equal a record key derived from the same input.
const WRAP_INFO: &[u8] = b"tresor/wrap/v1";
/// Format, algorithm, id length.
const PREFIX_FIXED_LEN: usize = 3;

/// The version id in a wrapped key's header. Ids that are not valid version ids are treated as
/// corruption, which also keeps whatever bytes are there out of error messages.
fn parse_header(wrapped: &[u8]) -> Result<&str> {
    check_format(wrapped)?;
    let id_len = usize::from(*wrapped.get(2).ok_or(CryptoError::Integrity)?);
    let id_bytes = wrapped
        .get(PREFIX_FIXED_LEN..PREFIX_FIXED_LEN + id_len)
        .ok_or(CryptoError::Integrity)?;
    let id = std::str::from_utf8(id_bytes).map_err(|_| CryptoError::Integrity)?;
    if !valid_id(id) {
        return Err(CryptoError::Integrity);
    }
    Ok(id)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::test_util::assert_no_secret;

    fn ring_of(ids: &[&str]) -> RootKeyRing {
        let versions = ids
            .iter()
            .map(|id| RootVersion {
                id: (*id).to_string(),
                key: DataKey::generate().unwrap(),
            })
            .collect();
        RootKeyRing::from_versions(versions).unwrap()
    }

    #[test]
    fn round_trip() {
        let ring = ring_of(&["1"]);
        let dk = DataKey::generate().unwrap();
        let wrapped = ring.wrap(&dk, b"installation:42").unwrap();
        assert_eq!(wrapped.len(), 3 + 1 + 32 + 12 + 32 + 16);
        assert_eq!(&wrapped[..4], &[1, 1, 1, b'1']);
        assert_eq!(ring.unwrap(&wrapped, b"installation:42").unwrap(), dk);
        assert_eq!(RootKeyRing::wrapped_version(&wrapped).unwrap(), "1");
    }

    #[test]
    fn wrap_with_names_the_version_and_any_ring_holding_it_unwraps() {
        let ring = ring_of(&["1", "2"]);
        let dk = DataKey::generate().unwrap();
        let under_1 = ring.wrap_with("1", &dk, b"ctx").unwrap();
        assert_eq!(RootKeyRing::wrapped_version(&under_1).unwrap(), "1");
        assert!(under_1.starts_with(&RootKeyRing::header_of("1").unwrap()));
        assert_eq!(ring.unwrap(&under_1, b"ctx").unwrap(), dk);
        assert!(matches!(
            ring.wrap_with("3", &dk, b"ctx"),
            Err(CryptoError::UnknownKeyVersion(id)) if id == "3"
        ));
        assert!(ring.holds("1") && ring.holds("2") && !ring.holds("3"));
        assert_eq!(RootKeyRing::header_of("bad id"), None);
        assert_eq!(
            ring.wrapped_headers(),
            vec![
                ("1".to_string(), RootKeyRing::header_of("1").unwrap()),
                ("2".to_string(), RootKeyRing::header_of("2").unwrap())
            ]
        );
    }

    #[test]
    fn wrong_context_fails() {
        let ring = ring_of(&["1"]);
        let wrapped = ring
            .wrap(&DataKey::generate().unwrap(), b"installation:42")
            .unwrap();
        for ctx in [
            &b"installation:43"[..],
            b"",
            b"account:42",
            b"installation:42 ",
        ] {
            assert!(matches!(
                ring.unwrap(&wrapped, ctx),
                Err(CryptoError::Integrity)
            ));
        }
    }

    #[test]
    fn unknown_version() {
        let old = ring_of(&["1"]);
        let wrapped = old.wrap(&DataKey::generate().unwrap(), b"c").unwrap();
        let other = ring_of(&["2"]);
        match other.unwrap(&wrapped, b"c") {
            Err(CryptoError::UnknownKeyVersion(id)) => assert_eq!(id, "1"),
            other => panic!("expected UnknownKeyVersion, got {other:?}"),
        }
        // Same id, different key material: authentication fails, nothing is returned.
        let impostor = ring_of(&["1"]);
        assert!(matches!(
            impostor.unwrap(&wrapped, b"c"),
            Err(CryptoError::Integrity)
        ));
    }

    #[test]
    fn older_versions_still_unwrap_after_rotation() {
        let v1 = ring_of(&["1"]);
        let dk = DataKey::generate().unwrap();
        let wrapped_by_1 = v1.wrap(&dk, b"installation:7").unwrap();

        let rotated = v1.clone().with_new_active(RootVersion {
            id: "2".to_string(),
            key: DataKey::generate().unwrap(),
        });
        assert_eq!(rotated.active_id(), "2");
        assert_eq!(rotated.version_ids(), ["1", "2"]);
        assert_eq!(
            rotated.unwrap(&wrapped_by_1, b"installation:7").unwrap(),
            dk
        );

        let rewrapped = rotated.wrap(&dk, b"installation:7").unwrap();
        assert_eq!(RootKeyRing::wrapped_version(&rewrapped).unwrap(), "2");
        assert_eq!(rotated.unwrap(&rewrapped, b"installation:7").unwrap(), dk);
        assert!(matches!(
            v1.unwrap(&rewrapped, b"installation:7"),
            Err(CryptoError::UnknownKeyVersion(_))
        ));
    }

    #[test]
    fn long_ids_round_trip() {
        let id = "a".repeat(MAX_ID_LEN);
        let ring = ring_of(&["x", &id]);
        let dk = DataKey::generate().unwrap();
        let wrapped = ring.wrap(&dk, b"").unwrap();
        assert_eq!(RootKeyRing::wrapped_version(&wrapped).unwrap(), id);
        assert_eq!(ring.unwrap(&wrapped, b"").unwrap(), dk);
    }

    #[test]
    fn every_truncation_is_an_error() {
        let ring = ring_of(&["1"]);
        let wrapped = ring.wrap(&DataKey::generate().unwrap(), b"c").unwrap();
        for len in 0..wrapped.len() {
            assert!(ring.unwrap(&wrapped[..len], b"c").is_err(), "length {len}");
            if len < 4 {
                assert!(RootKeyRing::wrapped_version(&wrapped[..len]).is_err());
            }
        }
        let mut longer = wrapped;
        longer.push(0);
        assert!(matches!(
            ring.unwrap(&longer, b"c"),
            Err(CryptoError::Integrity)
        ));
    }

    #[test]
    fn every_single_bit_flip_is_an_error() {
        // Neighbouring ids in the ring, so a flipped id byte can land on a held version.
        let ring = ring_of(&["0", "3", "q", "1"]);
        let wrapped = ring.wrap(&DataKey::generate().unwrap(), b"c").unwrap();
        for bit in 0..wrapped.len() * 8 {
            let mut bad = wrapped.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            assert!(ring.unwrap(&bad, b"c").is_err(), "bit {bit} unwrapped");
        }
    }

    #[test]
    fn bad_header_ids_are_integrity_errors() {
        let ring = ring_of(&["1"]);
        let mut wrapped = ring.wrap(&DataKey::generate().unwrap(), b"").unwrap();
        wrapped[3] = b'/';
        assert!(matches!(
            RootKeyRing::wrapped_version(&wrapped),
            Err(CryptoError::Integrity)
        ));
        wrapped[2] = 0;
        assert!(matches!(
            ring.unwrap(&wrapped, b""),
            Err(CryptoError::Integrity)
        ));
        wrapped[0] = 9;
        assert!(matches!(
            ring.unwrap(&wrapped, b""),
            Err(CryptoError::UnsupportedFormat)
        ));
    }

    #[test]
    fn wrapped_keys_start_with_their_version_header() {
        let ring = ring_of(&["1", "2024-b"]);
        let headers = ring.wrapped_headers();
        assert_eq!(headers.len(), 2);
        assert_eq!(headers[0], ("1".to_string(), vec![1, 1, 1, b'1']));
        let wrapped = ring.wrap(&DataKey::generate().unwrap(), b"c").unwrap();
        assert!(wrapped.starts_with(&headers[1].1));
        assert!(!wrapped.starts_with(&headers[0].1));
        assert_eq!(headers[1].0, "2024-b");
    }

    #[test]
    fn debug_shows_ids_only() {
        let ring = ring_of(&["1", "2"]);
        let shown = format!("{ring:?} {ring:#?}");
        assert!(shown.contains("\"1\"") && shown.contains("\"2\""));
        for v in ring.versions() {
            assert_no_secret(&shown, v.key.expose());
        }
    }

    #[test]
    fn id_validation() {
        for good in ["1", "env", "2024-01.a_b", &"Z".repeat(32)] {
            assert!(valid_id(good), "{good}");
        }
        for bad in ["", " 1", "1:", "a/b", "é", &"Z".repeat(33), "a b"] {
            assert!(!valid_id(bad), "{bad}");
        }
    }

    proptest! {
        #[test]
        fn garbage_never_panics(blob in proptest::collection::vec(any::<u8>(), 0..200)) {
            let ring = ring_of(&["1"]);
            prop_assert!(ring.unwrap(&blob, b"").is_err());
            let _ = RootKeyRing::wrapped_version(&blob);
        }

        #[test]
        fn any_bit_flip_fails(
            context in proptest::collection::vec(any::<u8>(), 0..64),
            position in any::<prop::sample::Index>(),
        ) {
            let ring = ring_of(&["1"]);
            let mut wrapped = ring.wrap(&DataKey::generate().unwrap(), &context).unwrap();
            let bit = position.index(wrapped.len() * 8);
            wrapped[bit / 8] ^= 1 << (bit % 8);
            prop_assert!(ring.unwrap(&wrapped, &context).is_err());
        }
    }
}
