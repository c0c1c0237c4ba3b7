//! The one-key-per-message AES-256-GCM construction shared by the record envelope and key
//! wrapping.
//!
//! Every message gets its own AES-256 key, derived with HKDF-SHA256 from a long-term key and a
//! fresh random 256-bit salt, and a random 96-bit nonce. The blob is
//! `prefix || salt || nonce || ciphertext || tag`, where `prefix` is the caller's format header,
//! and GCM authenticates `prefix || salt || nonce || caller aad`, so no header byte can be
//! changed without detection. See the `record` module docs for the resulting usage bound.

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use aws_lc_rs::error::Unspecified;
use aws_lc_rs::hkdf::{self, HKDF_SHA256, Salt};
use zeroize::Zeroizing;

use crate::data_key::{DataKey, KEY_LEN};
use crate::error::{CryptoError, Result};
use crate::random::random_bytes;

/// First byte of every blob this crate writes.
pub(crate) const FORMAT_V1: u8 = 1;
/// Second byte: AES-256-GCM under an HKDF-SHA256 per-message key.
pub(crate) const ALG_AES256GCM_HKDF_SHA256: u8 = 1;
pub(crate) const SALT_LEN: usize = 32;
pub(crate) const NONCE_LEN: usize = 12;
pub(crate) const TAG_LEN: usize = 16;

/// Encrypts `plaintext` under a key derived from `ikm`; see the module docs for the layout.
///
/// Fails with `Random` if the RNG fails, and `UnsupportedFormat` if GCM refuses the input
/// (only for plaintexts above its 2^36 - 32 byte per-message limit).
pub(crate) fn seal(
    ikm: &DataKey,
    info: &[u8],
    prefix: &[u8],
    aad: &[u8],
    plaintext: &[u8],
) -> Result<Vec<u8>> {
    let salt: [u8; SALT_LEN] = random_bytes()?;
    let nonce: [u8; NONCE_LEN] = random_bytes()?;
    let header_len = prefix.len() + SALT_LEN + NONCE_LEN;

    // Holds the plaintext until it is encrypted in place, hence zeroizing; the exact capacity
    // means appending the tag never reallocates.
    let mut out = Zeroizing::new(Vec::with_capacity(header_len + plaintext.len() + TAG_LEN));
    out.extend_from_slice(prefix);
    out.extend_from_slice(&salt);
    out.extend_from_slice(&nonce);
    let full_aad = header_and_aad(&out, aad);
    out.extend_from_slice(plaintext);

    let key = message_key(ikm, &salt, info).map_err(|_| CryptoError::UnsupportedFormat)?;
    let body = out
        .get_mut(header_len..)
        .ok_or(CryptoError::UnsupportedFormat)?;
    let tag = key
        .seal_in_place_separate_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(&full_aad),
            body,
        )
        .map_err(|_| CryptoError::UnsupportedFormat)?;
    out.extend_from_slice(tag.as_ref());
    Ok(std::mem::take(&mut *out))
}

/// Decrypts a blob made by [`seal`] whose format prefix is `prefix_len` bytes long. The caller
/// has already checked the prefix itself; every failure here is `Integrity`.
pub(crate) fn open(
    ikm: &DataKey,
    info: &[u8],
    prefix_len: usize,
    aad: &[u8],
    blob: &[u8],
) -> Result<Zeroizing<Vec<u8>>> {
    let header_len = prefix_len + SALT_LEN + NONCE_LEN;
    if blob.len() < header_len + TAG_LEN {
        return Err(CryptoError::Integrity);
    }
    let (header, body) = blob.split_at(header_len);
    let salt = header
        .get(prefix_len..prefix_len + SALT_LEN)
        .ok_or(CryptoError::Integrity)?;
    let nonce_bytes = header
        .get(prefix_len + SALT_LEN..)
        .ok_or(CryptoError::Integrity)?;
    let nonce =
        Nonce::try_assume_unique_for_key(nonce_bytes).map_err(|_| CryptoError::Integrity)?;
    let key = message_key(ikm, salt, info).map_err(|_| CryptoError::Integrity)?;

    // On failure GCM may leave partial plaintext in the buffer, so it is zeroizing from the start.
    let mut buf = Zeroizing::new(body.to_vec());
    let plain_len = key
        .open_in_place(nonce, Aad::from(header_and_aad(header, aad)), &mut buf)
        .map_err(|_| CryptoError::Integrity)?
        .len();
    buf.truncate(plain_len);
    Ok(buf)
}

/// Checks the format and algorithm bytes shared by every blob this crate writes. A blob too short
/// to have them is truncated (`Integrity`); present but unknown is `UnsupportedFormat`.
pub(crate) fn check_format(blob: &[u8]) -> Result<()> {
    let format = *blob.first().ok_or(CryptoError::Integrity)?;
    if format != FORMAT_V1 {
        return Err(CryptoError::UnsupportedFormat);
    }
    let alg = *blob.get(1).ok_or(CryptoError::Integrity)?;
    if alg != ALG_AES256GCM_HKDF_SHA256 {
        return Err(CryptoError::UnsupportedFormat);
    }
    Ok(())
}

/// HKDF output length for an AES-256 key.
struct Aes256KeyLen;

impl hkdf::KeyType for Aes256KeyLen {
    fn len(&self) -> usize {
        KEY_LEN
    }
}

/// Derives this message's AES key. The derived bytes pass through a zeroizing buffer rather than
/// `UnboundKey::from(Okm)`, which leaves them in an unwiped stack array.
fn message_key(
    ikm: &DataKey,
    salt: &[u8],
    info: &[u8],
) -> std::result::Result<LessSafeKey, Unspecified> {
    let prk = Salt::new(HKDF_SHA256, salt).extract(ikm.expose());
    let info = [info];
    let okm = prk.expand(&info, Aes256KeyLen)?;
    let mut key = Zeroizing::new([0u8; KEY_LEN]);
    okm.fill(&mut key[..])?;
    Ok(LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &key[..])?))
}

/// The header is self-delimiting (fixed layout given its prefix), so plain concatenation with
/// the caller's AAD is unambiguous.
fn header_and_aad(header: &[u8], aad: &[u8]) -> Vec<u8> {
    let mut full = Vec::with_capacity(header.len() + aad.len());
    full.extend_from_slice(header);
    full.extend_from_slice(aad);
    full
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn different_info_does_not_open() {
        let key = DataKey::generate().unwrap();
        let blob = seal(&key, b"tresor/a", b"P", b"", b"hello").unwrap();
        assert_eq!(&*open(&key, b"tresor/a", 1, b"", &blob).unwrap(), b"hello");
        assert!(matches!(
            open(&key, b"tresor/b", 1, b"", &blob),
            Err(CryptoError::Integrity)
        ));
    }

    #[test]
    fn prefix_is_authenticated() {
        let key = DataKey::generate().unwrap();
        let mut blob = seal(&key, b"i", b"PQ", b"", b"x").unwrap();
        blob[1] ^= 1;
        assert!(matches!(
            open(&key, b"i", 2, b"", &blob),
            Err(CryptoError::Integrity)
        ));
    }
}
