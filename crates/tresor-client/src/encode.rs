//! Percent-encoding of keys, ids and query values, and the client-side checks on what can be
//! put into a URL at all.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

use crate::error::{Error, Result};

/// Everything except RFC 3986's unreserved characters is encoded, so a key is always exactly
/// one path segment and the server decodes it exactly once.
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Encodes a key (or an id, or a query value) as one URL path segment: every byte outside
/// `A-Za-z0-9-._~` becomes `%XX` (so `/` is `%2F`, `%` is `%25`, a space `%20`).
pub fn encode_key(key: &str) -> String {
    utf8_percent_encode(key, COMPONENT).to_string()
}

/// Checks that `segment` can travel as a path segment. `.` and `..` cannot: URL parsers remove
/// them (also as `%2E`), so the request would silently reach another route.
pub(crate) fn path_segment(what: &str, segment: &str) -> Result<String> {
    match segment {
        "" => Err(Error::InvalidArgument(format!("the {what} is empty"))),
        "." | ".." => Err(Error::InvalidArgument(format!(
            "the {what} {segment:?} cannot be used in a URL (and is not a valid {what})"
        ))),
        _ => Ok(encode_key(segment)),
    }
}

/// A query string under construction.
#[derive(Debug, Default)]
pub(crate) struct Query(String);

impl Query {
    pub(crate) fn push(&mut self, name: &str, value: &str) -> &mut Self {
        self.0.push(if self.0.is_empty() { '?' } else { '&' });
        self.0.push_str(name);
        self.0.push('=');
        self.0.push_str(&encode_key(value));
        self
    }

    pub(crate) fn push_opt(&mut self, name: &str, value: Option<impl ToString>) -> &mut Self {
        if let Some(value) = value {
            self.push(name, &value.to_string());
        }
        self
    }

    /// `fields=a,b`: each name encoded on its own, joined by a literal comma.
    pub(crate) fn push_fields<S: AsRef<str>>(&mut self, fields: &[S]) -> Result<&mut Self> {
        if fields.is_empty() {
            return Ok(self);
        }
        let mut joined = String::new();
        for (i, field) in fields.iter().enumerate() {
            let field = field.as_ref();
            if field.contains(',') {
                return Err(Error::InvalidArgument(format!(
                    "field name {field:?} contains a comma, which separates fields"
                )));
            }
            if i > 0 {
                joined.push(',');
            }
            joined.push_str(&encode_key(field));
        }
        self.0.push(if self.0.is_empty() { '?' } else { '&' });
        self.0.push_str("fields=");
        self.0.push_str(&joined);
        Ok(self)
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_encoding_table() {
        let table = [
            ("simple", "simple"),
            ("a/b", "a%2Fb"),
            ("100%", "100%25"),
            ("with space", "with%20space"),
            ("unreserved-._~AZaz09", "unreserved-._~AZaz09"),
            ("a+b", "a%2Bb"),
            ("q?x=1&y#z", "q%3Fx%3D1%26y%23z"),
            ("semi;colon:at@", "semi%3Bcolon%3Aat%40"),
            ("...", "..."),
            ("a/../b", "a%2F..%2Fb"),
            ("ünï", "%C3%BCn%C3%AF"),
            ("emoji😀", "emoji%F0%9F%98%80"),
            ("back\\slash", "back%5Cslash"),
            ("%2F", "%252F"),
        ];
        for (key, encoded) in table {
            assert_eq!(encode_key(key), encoded, "{key:?}");
            assert_eq!(path_segment("key", key).unwrap(), encoded);
        }
    }

    #[test]
    fn unsendable_segments_are_refused() {
        for key in ["", ".", ".."] {
            assert!(matches!(
                path_segment("key", key),
                Err(Error::InvalidArgument(_))
            ));
        }
    }

    #[test]
    fn query_building() {
        let mut q = Query::default();
        q.push("prefix", "a b/c")
            .push_opt("limit", Some(10))
            .push_opt("cursor", None::<u32>);
        assert_eq!(q.as_str(), "?prefix=a%20b%2Fc&limit=10");
        let mut q = Query::default();
        q.push_fields(&["a", "b c", "d/e"]).unwrap();
        q.push("return", "previous");
        assert_eq!(q.as_str(), "?fields=a,b%20c,d%2Fe&return=previous");
        assert!(Query::default().push_fields(&["a,b"]).is_err());
        let empty: [&str; 0] = [];
        let mut q = Query::default();
        q.push_fields(&empty).unwrap();
        assert_eq!(q.as_str(), "");
    }
}
