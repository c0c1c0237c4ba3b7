//! `application/x-www-form-urlencoded` parsing and percent-encoding for the fake provider, strict
//! where the provider judges the client: a malformed escape or invalid UTF-8 is an error, never
//! guessed at, and a repeated OAuth parameter is refused (RFC 6749 3.1, 3.2).

use std::collections::HashMap;

/// Decodes `a=1&b=x+y&c=%2F` into pairs, in order. Empty pieces (`a=1&&b=2`) are skipped; a
/// name without `=` has an empty value.
pub(super) fn parse(input: &str) -> Result<Vec<(String, String)>, String> {
    let mut pairs = Vec::new();
    for piece in input.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = piece.split_once('=').unwrap_or((piece, ""));
        pairs.push((decode(name)?, decode(value)?));
    }
    Ok(pairs)
}

/// Decodes one form component: `+` is a space, `%XX` a byte.
pub(super) fn decode(component: &str) -> Result<String, String> {
    let raw = component.as_bytes();
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while let Some(&b) = raw.get(i) {
        match b {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = raw
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                let Some(byte) = hex else {
                    return Err(format!("malformed percent-escape in {component:?}"));
                };
                out.push(byte);
                i += 2;
            }
            _ => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| format!("{component:?} does not decode to UTF-8"))
}

/// Percent-encodes everything but RFC 3986 unreserved characters; valid both in a query and in
/// a form body.
pub(super) fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

pub(super) fn encode_pairs(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(name, value)| format!("{}={}", encode(name), encode(value)))
        .collect::<Vec<_>>()
        .join("&")
}

/// `url` with `pairs` appended to its query (keeping a query it already has).
pub(super) fn with_query(url: &str, pairs: &[(&str, &str)]) -> String {
    let separator = match url.contains('?') {
        true if url.ends_with('?') || url.ends_with('&') => "",
        true => "&",
        false => "?",
    };
    format!("{url}{separator}{}", encode_pairs(pairs))
}

/// OAuth request parameters, each present at most once.
pub(super) struct Params(HashMap<String, String>);

impl Params {
    /// Err names the first repeated parameter.
    pub(super) fn unique(pairs: Vec<(String, String)>) -> Result<Params, String> {
        let mut map = HashMap::with_capacity(pairs.len());
        for (name, value) in pairs {
            if map.contains_key(&name) {
                return Err(name);
            }
            map.insert(name, value);
        }
        Ok(Params(map))
    }

    pub(super) fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }
}
