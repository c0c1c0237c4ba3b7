//! Access to the system CSPRNG (through aws-lc-rs) for this crate and for other crates, and
//! SHA-256 for the PKCE code challenge.

use crate::error::{CryptoError, Result};

/// `N` bytes from the system CSPRNG.
///
/// The returned array is not zeroizing; callers that use it as key material should wrap it
/// (this crate does so internally).
pub fn random_bytes<const N: usize>() -> Result<[u8; N]> {
    let mut buf = [0u8; N];
    fill_random(&mut buf)?;
    Ok(buf)
}

/// Fills `dest` in place, so secrets can be generated straight into their zeroizing home.
pub(crate) fn fill_random(dest: &mut [u8]) -> Result<()> {
    aws_lc_rs::rand::fill(dest).map_err(|_| CryptoError::Random)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_bytes_are_not_constant() {
        let a: [u8; 32] = random_bytes().unwrap();
        let b: [u8; 32] = random_bytes().unwrap();
        assert_ne!(a, b);
        assert_ne!(a, [0u8; 32]);
    }

    #[test]
    fn zero_length_is_fine() {
        let empty: [u8; 0] = random_bytes().unwrap();
        assert!(empty.is_empty());
    }
}

/// SHA-256 of `data` (the PKCE S256 code challenge is its base64url).
pub fn sha256(data: &[u8]) -> [u8; 32] {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

#[cfg(test)]
mod sha_tests {
    #[test]
    fn sha256_of_abc() {
        let h = super::sha256(b"abc");
        assert_eq!(h[0], 0xba);
        assert_eq!(h[31], 0xad);
    }
}
