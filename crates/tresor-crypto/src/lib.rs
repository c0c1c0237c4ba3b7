//! Cryptography for tresor: root keys, per-owner data keys, the record envelope and token MACs.
//!
//! This crate is the only place in tresor that touches key bytes. Everything that holds key
//! material or plaintext lives in zeroizing types, and no `Debug` or error message prints it.
//! All primitives come from aws-lc-rs; see the module docs of [`record`] for the envelope format
//! and its usage bound, and [`root_key`] for the root key file and key wrapping.

pub mod data_key;
mod derived_aead;
mod encoding;
pub mod error;
mod key_file;
mod locked;
pub mod random;
pub mod record;
pub mod root_key;
pub mod token;

pub use data_key::DataKey;
pub use error::{CryptoError, Result};
pub use random::{random_bytes, sha256};
pub use record::{open, seal, sealed_key_id};
pub use root_key::RootKeyRing;
pub use token::{IssuedToken, TokenPepper, issue_token, token_id_of};

/// Byte patterns that must never appear in `Debug` or error output, shared by the tests that
/// check for leaked key material.
#[cfg(test)]
pub(crate) mod test_util {
    use base64::Engine as _;
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};

    /// Every textual form a 32-byte secret could plausibly be printed in.
    pub fn secret_renderings(bytes: &[u8]) -> Vec<String> {
        let lower: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let upper = lower.to_uppercase();
        let decimal = bytes
            .iter()
            .take(4)
            .map(|b| b.to_string())
            .collect::<Vec<_>>()
            .join(", ");
        let mut out = vec![
            STANDARD.encode(bytes),
            STANDARD_NO_PAD.encode(bytes),
            URL_SAFE.encode(bytes),
            URL_SAFE_NO_PAD.encode(bytes),
            // A prefix catches truncated printing too.
            lower[..16].to_string(),
            upper[..16].to_string(),
            decimal,
        ];
        out.push(lower);
        out.push(upper);
        out
    }

    pub fn assert_no_secret(text: &str, bytes: &[u8]) {
        for form in secret_renderings(bytes) {
            assert!(
                !text.contains(&form),
                "output leaks secret in form {form:?}: {text}"
            );
        }
    }
}
