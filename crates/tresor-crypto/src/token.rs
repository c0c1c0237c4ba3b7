//! API tokens: issuing them, recognising their shape, and the peppered MAC they are stored as.
//!
//! A token is `tsr_<token_id>_<secret>`: `token_id` is 16 lowercase hex characters (8 random
//! bytes), safe to log and to revoke by; `secret` is base64url without padding of 32 random
//! bytes. The server stores only HMAC-SHA-256(pepper, token), so a database leak without the
//! pepper (which is itself stored wrapped by the root key) reveals no usable token.

use std::fmt;

use aws_lc_rs::hmac;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use secrecy::SecretString;
use subtle::ConstantTimeEq as _;
use zeroize::Zeroizing;

use crate::data_key::DataKey;
use crate::encoding::{append_base64, lower_hex};
use crate::error::{CryptoError, Result};
use crate::random::{fill_random, random_bytes};

/// Every token starts with this, so leaked tokens are easy to spot (e.g. by secret scanners).
pub const TOKEN_PREFIX: &str = "tsr_";

/// A freshly issued token. `Debug` shows the id only.
pub struct IssuedToken {
    pub token_id: String,
    pub token: SecretString,
}

/// A new random token.
pub fn issue_token() -> Result<IssuedToken> {
    let id_bytes: [u8; ID_BYTES] = random_bytes()?;
    let token_id = lower_hex(&id_bytes);
    let mut secret = Zeroizing::new([0u8; SECRET_BYTES]);
    fill_random(&mut secret[..])?;

    // Exactly TOKEN_LEN capacity: neither the pushes nor the conversion to `Box<str>` inside
    // `SecretString::from` reallocate, so no unzeroized copy of the token is left behind.
    let mut text = String::with_capacity(TOKEN_LEN);
    text.push_str(TOKEN_PREFIX);
    text.push_str(&token_id);
    text.push('_');
    // Fails only if the encoder rejects the exact-size buffer it asked for; report it as the RNG
    // failure callers already handle rather than panic.
    append_base64(&URL_SAFE_NO_PAD, &secret[..], &mut text).ok_or(CryptoError::Random)?;
    Ok(IssuedToken {
        token_id,
        token: SecretString::from(text),
    })
}

/// The token id if `token` has the shape of a tresor token (`tsr_`, 16 lowercase hex, `_`, 43
/// base64url characters), `None` otherwise. Never panics. Says nothing about validity.
pub fn token_id_of(token: &str) -> Option<&str> {
    let bytes = token.as_bytes();
    if bytes.len() != TOKEN_LEN || !token.starts_with(TOKEN_PREFIX) {
        return None;
    }
    let id_end = TOKEN_PREFIX.len() + ID_HEX_LEN;
    let id = bytes.get(TOKEN_PREFIX.len()..id_end)?;
    if !id.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    if bytes.get(id_end) != Some(&b'_') {
        return None;
    }
    let secret = bytes.get(id_end + 1..)?;
    if !secret
        .iter()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
    {
        return None;
    }
    token.get(TOKEN_PREFIX.len()..id_end)
}

/// Server-side pepper for token MACs: 32 random bytes, zeroized on drop, `Debug` redacted.
#[derive(Clone)]
pub struct TokenPepper {
    key: DataKey,
}

impl TokenPepper {
    pub fn generate() -> Result<TokenPepper> {
        Ok(TokenPepper {
            key: DataKey::generate()?,
        })
    }

    /// The server stores the pepper wrapped like a data key; this is the way back.
    pub fn from_data_key(key: DataKey) -> TokenPepper {
        TokenPepper { key }
    }

    /// Locks the pepper in memory (see [`DataKey::lock_in_memory`]).
    pub fn lock_in_memory(&mut self) -> std::io::Result<()> {
        self.key.lock_in_memory()
    }

    /// The pepper as a data key, for wrapping it under the root key.
    pub fn as_data_key(&self) -> DataKey {
        self.key.clone()
    }

    /// HMAC-SHA-256(pepper, token text).
    pub fn mac(&self, token: &str) -> [u8; 32] {
        let key = hmac::Key::new(hmac::HMAC_SHA256, self.key.expose());
        let tag = hmac::sign(&key, token.as_bytes());
        let mut out = [0u8; 32];
        for (o, t) in out.iter_mut().zip(tag.as_ref()) {
            *o = *t;
        }
        out
    }

    /// Whether `mac(token)` equals `expected`, compared in constant time. A wrong-length
    /// `expected` is simply false.
    pub fn verify(&self, token: &str, expected: &[u8]) -> bool {
        self.mac(token)[..].ct_eq(expected).into()
    }
}

impl fmt::Debug for TokenPepper {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenPepper([redacted])")
    }
}

impl fmt::Debug for IssuedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedToken")
            .field("token_id", &self.token_id)
            .field("token", &"[redacted]")
            .finish()
    }
}

const ID_BYTES: usize = 8;
const ID_HEX_LEN: usize = 2 * ID_BYTES;
const SECRET_BYTES: usize = 32;
/// base64url without padding of 32 bytes.
const SECRET_LEN: usize = 43;
const TOKEN_LEN: usize = TOKEN_PREFIX.len() + ID_HEX_LEN + 1 + SECRET_LEN;

#[cfg(test)]
mod tests {
    use base64::Engine as _;
    use proptest::prelude::*;
    use secrecy::ExposeSecret as _;

    use super::*;
    use crate::test_util::assert_no_secret;

    #[test]
    fn issued_token_shape() {
        let issued = issue_token().unwrap();
        let token = issued.token.expose_secret();
        assert_eq!(token.len(), 64);
        assert!(token.starts_with("tsr_"));
        assert_eq!(issued.token_id.len(), 16);
        assert!(
            issued
                .token_id
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        );
        assert_eq!(&token[4..20], issued.token_id);
        assert_eq!(&token[20..21], "_");
        let secret = URL_SAFE_NO_PAD.decode(&token[21..]).unwrap();
        assert_eq!(secret.len(), 32);
        assert_eq!(token_id_of(token), Some(issued.token_id.as_str()));
    }

    #[test]
    fn tokens_are_unique() {
        let a = issue_token().unwrap();
        let b = issue_token().unwrap();
        assert_ne!(a.token_id, b.token_id);
        assert_ne!(a.token.expose_secret(), b.token.expose_secret());
    }

    #[test]
    fn debug_hides_the_token() {
        let issued = issue_token().unwrap();
        let shown = format!("{issued:?} {issued:#?}");
        let token = issued.token.expose_secret();
        assert!(shown.contains(&issued.token_id));
        assert!(!shown.contains(token));
        assert!(!shown.contains(&token[21..]));
        assert!(!shown.contains(&token[21..33]));
    }

    #[test]
    fn token_id_of_rejects_wrong_shapes() {
        let good = format!("tsr_0123456789abcdef_{}", "A".repeat(43));
        assert_eq!(token_id_of(&good), Some("0123456789abcdef"));
        let with_underscores = format!("tsr_0123456789abcdef_{}", "_-".repeat(21) + "z");
        assert_eq!(token_id_of(&with_underscores), Some("0123456789abcdef"));

        for bad in [
            String::new(),
            "tsr_".to_string(),
            good[..63].to_string(),
            format!("{good}A"),
            good.replace("tsr_", "tsx_"),
            good.replace("tsr_", "TSR_"),
            good.replace("0123456789abcdef", "0123456789ABCDEF"),
            good.replace("0123456789abcdef", "0123456789abcdeg"),
            good.replace("0123456789abcdef_", "0123456789abcdef-"),
            format!("tsr_0123456789abcdef_{}", "A".repeat(42) + "="),
            format!("tsr_0123456789abcdef_{}", "A".repeat(42) + "+"),
            format!("tsr_0123456789abcdef_{}", "A".repeat(41) + "é"),
            format!("tsr_0123456789abcde\u{e9}{}", "A".repeat(43)),
        ] {
            assert_eq!(token_id_of(&bad), None, "{bad:?}");
        }
    }

    #[test]
    fn mac_verify() {
        let pepper = TokenPepper::generate().unwrap();
        let issued = issue_token().unwrap();
        let token = issued.token.expose_secret();
        let mac = pepper.mac(token);
        assert_eq!(mac, pepper.mac(token));
        assert!(pepper.verify(token, &mac));

        let other = issue_token().unwrap();
        assert!(!pepper.verify(other.token.expose_secret(), &mac));
        assert!(!pepper.verify(token, &mac[..31]));
        assert!(!pepper.verify(token, &[]));
        let mut flipped = mac;
        flipped[31] ^= 1;
        assert!(!pepper.verify(token, &flipped));
        // A different pepper gives a different MAC.
        let other_pepper = TokenPepper::generate().unwrap();
        assert!(!other_pepper.verify(token, &mac));
    }

    #[test]
    fn mac_is_hmac_sha256() {
        // RFC 4231 test case 2 has a 4-byte key, so check against aws-lc-rs directly with ours.
        let pepper = TokenPepper::from_data_key(DataKey::from_bytes([0x0b; 32]));
        let key = hmac::Key::new(hmac::HMAC_SHA256, &[0x0b; 32]);
        assert_eq!(
            pepper.mac("Hi There")[..],
            *hmac::sign(&key, b"Hi There").as_ref()
        );
    }

    #[test]
    fn pepper_survives_wrapping() {
        let pepper = TokenPepper::generate().unwrap();
        let ring = crate::RootKeyRing::generate().unwrap();
        let wrapped = ring.wrap(&pepper.as_data_key(), b"token-pepper").unwrap();
        let restored = TokenPepper::from_data_key(ring.unwrap(&wrapped, b"token-pepper").unwrap());
        assert_eq!(restored.mac("tsr_x"), pepper.mac("tsr_x"));
    }

    #[test]
    fn pepper_debug_is_redacted() {
        let raw = [0x5c; 32];
        let pepper = TokenPepper::from_data_key(DataKey::from_bytes(raw));
        let shown = format!("{pepper:?} {pepper:#?}");
        assert_eq!(format!("{pepper:?}"), "TokenPepper([redacted])");
        assert_no_secret(&shown, &raw);
    }

    proptest! {
        #[test]
        fn token_id_of_never_panics(s in any::<String>()) {
            let _ = token_id_of(&s);
        }

        #[test]
        fn token_id_of_never_panics_near_the_shape(
            prefix in "(tsr_)?",
            id in "[0-9a-fA-Fé_]{0,18}",
            sep in "[_\\-é]?",
            secret in "[A-Za-z0-9_\\-=+/é]{0,45}",
        ) {
            let token = format!("{prefix}{id}{sep}{secret}");
            if let Some(found) = token_id_of(&token) {
                prop_assert_eq!(token.len(), 64);
                prop_assert_eq!(found.len(), 16);
                prop_assert!(token.starts_with("tsr_"));
            }
        }

        #[test]
        fn token_id_of_accepts_every_issued_shape(id in "[0-9a-f]{16}", secret in "[A-Za-z0-9_\\-]{43}") {
            let token = format!("tsr_{id}_{secret}");
            prop_assert_eq!(token_id_of(&token), Some(id.as_str()));
        }

        #[test]
        fn verify_matches_mac(a in ".*", b in ".*") {
            let pepper = TokenPepper::from_data_key(DataKey::from_bytes([3; 32]));
            prop_assert!(pepper.verify(&a, &pepper.mac(&a)));
            prop_assert_eq!(pepper.verify(&b, &pepper.mac(&a)), a == b);
        }
    }
}
