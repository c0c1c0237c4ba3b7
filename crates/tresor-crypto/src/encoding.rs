//! Base64 encoding of secrets without leaving unzeroized copies behind.
//!
//! `Engine::encode_string` goes through an internal 1 KiB stack buffer that is never wiped; for
//! key and token text we encode into an exactly sized zeroizing buffer instead.

use base64::Engine;
use base64::engine::Config as _;
use zeroize::Zeroizing;

/// Appends the base64 form of `secret` to `out`. `None` only if the encoder refuses a buffer of
/// the exact size it asked for, which the base64 crate guarantees it does not do.
///
/// `out` should already have capacity for the text, so appending does not reallocate and leave
/// a copy of the earlier contents in freed memory.
pub(crate) fn append_base64(engine: &impl Engine, secret: &[u8], out: &mut String) -> Option<()> {
    let padding = engine.config().encode_padding();
    let len = base64::encoded_len(secret.len(), padding)?;
    let mut buf = Zeroizing::new(vec![0u8; len]);
    let written = engine.encode_slice(secret, &mut buf[..]).ok()?;
    let text = std::str::from_utf8(buf.get(..written)?).ok()?;
    out.push_str(text);
    Some(())
}

/// Lowercase hex, for non-secret identifiers (token ids, temp file names).
pub(crate) fn lower_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

#[cfg(test)]
mod tests {
    use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn append_base64_matches_the_crate(bytes in proptest::collection::vec(any::<u8>(), 0..100)) {
            let mut std_out = String::from("x");
            append_base64(&STANDARD, &bytes, &mut std_out).unwrap();
            prop_assert_eq!(std_out, format!("x{}", STANDARD.encode(&bytes)));
            let mut url_out = String::new();
            append_base64(&URL_SAFE_NO_PAD, &bytes, &mut url_out).unwrap();
            prop_assert_eq!(url_out, URL_SAFE_NO_PAD.encode(&bytes));
        }
    }

    #[test]
    fn hex() {
        assert_eq!(lower_hex(&[0x00, 0x0f, 0xa5, 0xff]), "000fa5ff");
        assert_eq!(lower_hex(&[]), "");
    }
}
