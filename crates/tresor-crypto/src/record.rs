//! The record envelope: how tresor encrypts stored values under a data key.
//!
//! # Format
//!
//! `[format = 1 u8][alg = 1 u8][key_id u32 BE][salt 32][nonce 12][ciphertext][tag 16]`
//!
//! The first 50 bytes are the header. GCM's additional data is `header || caller aad`, so the
//! format, algorithm, data-key id, salt and nonce are all authenticated, and the caller's AAD
//! (account, installation, store, key) binds a ciphertext to its record: copied anywhere else it
//! fails to open.
//!
//! # Keys and the usage bound
//!
//! Each seal derives a fresh AES-256 key: HKDF-SHA256 with the data key as input keying
//! material, a random 256-bit salt (stored in the header) and info `tresor/record/v1`. The
//! derived key encrypts exactly one message under one random 96-bit nonce.
//!
//! So the NIST SP 800-38D limit for random nonces (at most 2^32 encryptions per key) never
//! applies: no AES key is used twice. What remains is the chance that two seals under the same
//! data key draw the same salt and so re-derive the same AES key. For `n` seals that is at most
//! `n^2 / 2^257`: below 2^-160 even after 2^48 seals under one data key. A salt collision alone
//! is still harmless unless the two 96-bit nonces also collide. The data key itself is only ever
//! used as an HKDF key, which has no comparable per-key limit.
//!
//! The remaining GCM limit is per message: at most 2^36 - 32 bytes (about 64 GiB) of plaintext.
//!
//! The data-key id in the header is not used to pick the key; the caller passes the key and
//! reads the id with [`sealed_key_id`] to find it (e.g. during rotation).

use zeroize::Zeroizing;

use crate::data_key::DataKey;
use crate::derived_aead::{
    self, ALG_AES256GCM_HKDF_SHA256, FORMAT_V1, NONCE_LEN, SALT_LEN, TAG_LEN, check_format,
};
use crate::error::{CryptoError, Result};

/// Encrypts `plaintext` under a fresh key derived from `key`, authenticating the header and
/// `aad`. `key_id` is stored in the header for the caller's bookkeeping.
pub fn seal(key: &DataKey, key_id: u32, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>> {
    let mut prefix = [0u8; PREFIX_LEN];
    prefix[0] = FORMAT_V1;
    prefix[1] = ALG_AES256GCM_HKDF_SHA256;
    prefix[2..].copy_from_slice(&key_id.to_be_bytes());
    derived_aead::seal(key, RECORD_INFO, &prefix, aad, plaintext)
}

/// Decrypts a blob made by [`seal`]. Any tampering, truncation, wrong key or wrong `aad` gives
/// `Integrity`; an unknown format or algorithm byte gives `UnsupportedFormat`.
pub fn open(key: &DataKey, aad: &[u8], sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
    sealed_key_id(sealed)?;
    derived_aead::open(key, RECORD_INFO, PREFIX_LEN, aad, sealed)
}

/// The data-key id in a sealed blob's header. Not authenticated until the blob is opened.
pub fn sealed_key_id(sealed: &[u8]) -> Result<u32> {
    check_format(sealed)?;
    if sealed.len() < MIN_LEN {
        return Err(CryptoError::Integrity);
    }
    let id = sealed
        .get(2..PREFIX_LEN)
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .ok_or(CryptoError::Integrity)?;
    Ok(u32::from_be_bytes(id))
}

/// HKDF info, so a record key can never equal a key-wrapping key derived from the same input.
const RECORD_INFO: &[u8] = b"tresor/record/v1";
/// Format, algorithm, key id.
const PREFIX_LEN: usize = 6;
/// Header plus tag: an empty plaintext.
const MIN_LEN: usize = PREFIX_LEN + SALT_LEN + NONCE_LEN + TAG_LEN;

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn key() -> DataKey {
        DataKey::generate().unwrap()
    }

    #[test]
    fn layout_matches_the_spec() {
        let k = key();
        let sealed = seal(&k, 0x0102_0304, b"aad", b"hello").unwrap();
        assert_eq!(sealed.len(), 50 + 5 + 16);
        assert_eq!(&sealed[..6], &[1, 1, 1, 2, 3, 4]);
        assert_eq!(sealed_key_id(&sealed).unwrap(), 0x0102_0304);
    }

    #[test]
    fn empty_plaintext_round_trips() {
        let k = key();
        let sealed = seal(&k, 7, b"", b"").unwrap();
        assert_eq!(sealed.len(), MIN_LEN);
        assert!(open(&k, b"", &sealed).unwrap().is_empty());
    }

    #[test]
    fn wrong_aad_fails() {
        let k = key();
        let sealed = seal(&k, 1, b"acct:1/inst:2/store:s/key:a", b"secret").unwrap();
        for aad in [
            &b"acct:1/inst:2/store:s/key:b"[..],
            b"",
            b"acct:1/inst:2/store:s/key:a\0",
            b"acct:1/inst:2/store:s/key:",
        ] {
            assert!(matches!(
                open(&k, aad, &sealed),
                Err(CryptoError::Integrity)
            ));
        }
    }

    #[test]
    fn wrong_key_fails() {
        let sealed = seal(&key(), 1, b"aad", b"secret").unwrap();
        assert!(matches!(
            open(&key(), b"aad", &sealed),
            Err(CryptoError::Integrity)
        ));
    }

    #[test]
    fn same_plaintext_seals_differently() {
        let k = key();
        let a = seal(&k, 1, b"aad", b"same").unwrap();
        let b = seal(&k, 1, b"aad", b"same").unwrap();
        assert_ne!(a, b);
        // Salt and nonce both fresh, not just one of them.
        assert_ne!(a[6..38], b[6..38]);
        assert_ne!(a[38..50], b[38..50]);
    }

    #[test]
    fn every_truncation_is_an_error() {
        let k = key();
        let sealed = seal(&k, 9, b"aad", b"some plaintext").unwrap();
        for len in 0..sealed.len() {
            let cut = &sealed[..len];
            assert!(open(&k, b"aad", cut).is_err(), "length {len} opened");
            if len < MIN_LEN {
                assert!(sealed_key_id(cut).is_err(), "length {len} gave a key id");
            }
        }
        // Trailing garbage is tampering too.
        let mut longer = sealed.clone();
        longer.push(0);
        assert!(matches!(
            open(&k, b"aad", &longer),
            Err(CryptoError::Integrity)
        ));
    }

    #[test]
    fn every_single_bit_flip_is_an_error() {
        let k = key();
        let sealed = seal(&k, 3, b"aad", b"0123456789").unwrap();
        for bit in 0..sealed.len() * 8 {
            let mut bad = sealed.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            assert_flip_error(&k, b"aad", &bad, bit / 8);
        }
    }

    #[test]
    fn unknown_format_or_algorithm() {
        let k = key();
        let sealed = seal(&k, 3, b"", b"x").unwrap();
        for idx in [0, 1] {
            let mut bad = sealed.clone();
            bad[idx] = 2;
            assert!(matches!(
                open(&k, b"", &bad),
                Err(CryptoError::UnsupportedFormat)
            ));
            assert!(matches!(
                sealed_key_id(&bad),
                Err(CryptoError::UnsupportedFormat)
            ));
        }
    }

    fn assert_flip_error(k: &DataKey, aad: &[u8], bad: &[u8], byte: usize) {
        match (byte, open(k, aad, bad)) {
            (0 | 1, Err(CryptoError::UnsupportedFormat)) => {}
            (_, Err(CryptoError::Integrity)) => {}
            (_, other) => panic!("flip in byte {byte} gave {other:?}"),
        }
    }

    proptest! {
        #[test]
        fn round_trip(
            plaintext in proptest::collection::vec(any::<u8>(), 0..2048),
            aad in proptest::collection::vec(any::<u8>(), 0..256),
            key_id in any::<u32>(),
        ) {
            let k = key();
            let sealed = seal(&k, key_id, &aad, &plaintext).unwrap();
            prop_assert_eq!(sealed.len(), MIN_LEN + plaintext.len());
            prop_assert_eq!(sealed_key_id(&sealed).unwrap(), key_id);
            prop_assert_eq!(&**open(&k, &aad, &sealed).unwrap(), &plaintext[..]);
        }

        #[test]
        fn any_bit_flip_fails(
            plaintext in proptest::collection::vec(any::<u8>(), 0..512),
            aad in proptest::collection::vec(any::<u8>(), 0..64),
            position in any::<prop::sample::Index>(),
        ) {
            let k = key();
            let mut sealed = seal(&k, 11, &aad, &plaintext).unwrap();
            let bit = position.index(sealed.len() * 8);
            sealed[bit / 8] ^= 1 << (bit % 8);
            assert_flip_error(&k, &aad, &sealed, bit / 8);
        }

        #[test]
        fn garbage_never_panics(blob in proptest::collection::vec(any::<u8>(), 0..200)) {
            let k = key();
            prop_assert!(open(&k, b"", &blob).is_err());
            let _ = sealed_key_id(&blob);
        }
    }
}
