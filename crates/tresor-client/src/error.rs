//! The SDK's one error type, the contract's error codes, and the parsing of error bodies.
//!
//! Error messages never carry the token, and never a stored value: decoding errors are
//! redacted because serde's messages quote the offending data.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The `code` of an error body: every code of the contract's table, `not_implemented`, and
/// [`ErrorCode::Other`] for a code this SDK does not know yet.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    InvalidRequest,
    Unauthenticated,
    Forbidden,
    QuotaExceeded,
    DestinationForbidden,
    NotFound,
    MethodNotAllowed,
    Conflict,
    ReconsentRequired,
    Gone,
    PreconditionFailed,
    PayloadTooLarge,
    UnsupportedMediaType,
    RateLimited,
    Internal,
    NotImplemented,
    UpstreamFailed,
    Unavailable,
    InsufficientStorage,
    /// A code outside the table, kept verbatim.
    Other(String),
}

impl ErrorCode {
    /// The code as it appears in the error body.
    pub fn as_str(&self) -> &str {
        match self {
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::Unauthenticated => "unauthenticated",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::QuotaExceeded => "quota_exceeded",
            ErrorCode::DestinationForbidden => "destination_forbidden",
            ErrorCode::NotFound => "not_found",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::Conflict => "conflict",
            ErrorCode::ReconsentRequired => "reconsent_required",
            ErrorCode::Gone => "gone",
            ErrorCode::PreconditionFailed => "precondition_failed",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::UnsupportedMediaType => "unsupported_media_type",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::Internal => "internal",
            ErrorCode::NotImplemented => "not_implemented",
            ErrorCode::UpstreamFailed => "upstream_failed",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::InsufficientStorage => "insufficient_storage",
            ErrorCode::Other(code) => code,
        }
    }

    /// Parses a code; unknown codes become [`ErrorCode::Other`].
    pub fn parse(code: &str) -> ErrorCode {
        match code {
            "invalid_request" => ErrorCode::InvalidRequest,
            "unauthenticated" => ErrorCode::Unauthenticated,
            "forbidden" => ErrorCode::Forbidden,
            "quota_exceeded" => ErrorCode::QuotaExceeded,
            "destination_forbidden" => ErrorCode::DestinationForbidden,
            "not_found" => ErrorCode::NotFound,
            "method_not_allowed" => ErrorCode::MethodNotAllowed,
            "conflict" => ErrorCode::Conflict,
            "reconsent_required" => ErrorCode::ReconsentRequired,
            "gone" => ErrorCode::Gone,
            "precondition_failed" => ErrorCode::PreconditionFailed,
            "payload_too_large" => ErrorCode::PayloadTooLarge,
            "unsupported_media_type" => ErrorCode::UnsupportedMediaType,
            "rate_limited" => ErrorCode::RateLimited,
            "internal" => ErrorCode::Internal,
            "not_implemented" => ErrorCode::NotImplemented,
            "upstream_failed" => ErrorCode::UpstreamFailed,
            "unavailable" => ErrorCode::Unavailable,
            "insufficient_storage" => ErrorCode::InsufficientStorage,
            other => ErrorCode::Other(other.to_owned()),
        }
    }

    /// The code a bare status stands for, used when an answer has no parsable error body
    /// (HEAD, or something in front of the server answering instead of it). Ambiguous statuses
    /// (403, 409) take the table's first code.
    pub fn from_status(status: u16) -> ErrorCode {
        match status {
            400 => ErrorCode::InvalidRequest,
            401 => ErrorCode::Unauthenticated,
            403 => ErrorCode::Forbidden,
            404 => ErrorCode::NotFound,
            405 => ErrorCode::MethodNotAllowed,
            409 => ErrorCode::Conflict,
            410 => ErrorCode::Gone,
            412 => ErrorCode::PreconditionFailed,
            413 => ErrorCode::PayloadTooLarge,
            415 => ErrorCode::UnsupportedMediaType,
            429 => ErrorCode::RateLimited,
            500 => ErrorCode::Internal,
            501 => ErrorCode::NotImplemented,
            502 => ErrorCode::UpstreamFailed,
            503 => ErrorCode::Unavailable,
            507 => ErrorCode::InsufficientStorage,
            other => ErrorCode::Other(format!("http_{other}")),
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<&str> for ErrorCode {
    fn from(code: &str) -> ErrorCode {
        ErrorCode::parse(code)
    }
}

impl Serialize for ErrorCode {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ErrorCode {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<ErrorCode, D::Error> {
        let code = String::deserialize(deserializer)?;
        Ok(ErrorCode::parse(&code))
    }
}

/// The inside of the contract's error body `{"error": {...}}`; batch results carry it too.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiErrorBody {
    pub code: ErrorCode,
    #[serde(default)]
    pub message: String,
    #[serde(default)]
    pub request_id: Option<String>,
    /// The failing op of an atomic batch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub op_index: Option<usize>,
}

impl ApiErrorBody {
    /// Turns the body into an [`Error::Api`] with the given HTTP status.
    pub fn into_error(self, status: u16) -> Error {
        Error::Api {
            status,
            code: self.code,
            message: self.message,
            request_id: self.request_id,
            op_index: self.op_index,
        }
    }
}

/// Everything that can go wrong in a call.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The server answered with an error body (or an error status without one).
    #[error("{code}: {message}{}", RequestIdSuffix(.request_id))]
    Api {
        status: u16,
        code: ErrorCode,
        message: String,
        request_id: Option<String>,
        /// The index of the failing op of an atomic batch.
        op_index: Option<usize>,
    },
    /// The request did not complete: connection, TLS, timeout, or reading the answer.
    #[error("the request to the tresor server failed")]
    Transport(#[source] reqwest::Error),
    /// A successful answer did not have the expected shape (or a value did not fit the
    /// requested type). The message is redacted: it never quotes data.
    #[error("could not decode the answer: {0}")]
    Decode(String),
    /// A value could not be encoded as JSON.
    #[error("could not encode the request: {0}")]
    Encode(String),
    /// The client is misconfigured: base URL, token, CA certificate, environment.
    #[error("invalid client configuration: {0}")]
    Config(String),
    /// An argument cannot be sent at all (an empty key, `.` or `..`, a field with a comma).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}

impl Error {
    /// The contract code, for errors the server answered.
    pub fn code(&self) -> Option<&ErrorCode> {
        match self {
            Error::Api { code, .. } => Some(code),
            _ => None,
        }
    }

    /// The HTTP status, for errors the server answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The server's request id, to find the request in its log and audit trail.
    pub fn request_id(&self) -> Option<&str> {
        match self {
            Error::Api { request_id, .. } => request_id.as_deref(),
            _ => None,
        }
    }

    /// The index of the op that failed an atomic batch.
    pub fn op_index(&self) -> Option<usize> {
        match self {
            Error::Api { op_index, .. } => *op_index,
            _ => None,
        }
    }

    /// `true` for 404 `not_found`.
    pub fn is_not_found(&self) -> bool {
        self.code() == Some(&ErrorCode::NotFound)
    }

    /// `true` for 412 `precondition_failed` (a conditional write lost).
    pub fn is_precondition_failed(&self) -> bool {
        self.code() == Some(&ErrorCode::PreconditionFailed)
    }
}

/// The SDK's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

struct RequestIdSuffix<'a>(&'a Option<String>);

impl fmt::Display for RequestIdSuffix<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(id) => write!(f, " (request {id})"),
            None => Ok(()),
        }
    }
}

/// Builds the error for a non-2xx answer from its status, its `X-Request-Id` header and its
/// body, which may be absent (HEAD) or not ours (a proxy's HTML page).
pub(crate) fn api_error(status: u16, header_request_id: Option<String>, body: &[u8]) -> Error {
    #[derive(Deserialize)]
    struct Envelope {
        error: ApiErrorBody,
        // The contract leaves open whether a batch's `op_index` sits next to or inside `error`.
        #[serde(default)]
        op_index: Option<usize>,
    }
    match serde_json::from_slice::<Envelope>(body) {
        Ok(envelope) => {
            let mut inner = envelope.error;
            inner.op_index = inner.op_index.or(envelope.op_index);
            if inner.request_id.is_none() {
                inner.request_id = header_request_id;
            }
            inner.into_error(status)
        }
        Err(_) => Error::Api {
            status,
            code: ErrorCode::from_status(status),
            message: format!("HTTP status {status} without an error body"),
            request_id: header_request_id,
            op_index: None,
        },
    }
}

/// A decoding error whose message cannot leak the data that failed to decode.
pub(crate) fn decode_error(context: &str, err: &serde_json::Error) -> Error {
    use serde_json::error::Category;
    let detail = match err.classify() {
        // Data errors quote the value ("invalid type: string \"hunter2\", expected u64").
        Category::Data => redact_quoted(&err.to_string()),
        Category::Syntax | Category::Eof => err.to_string(),
        Category::Io => "I/O error while decoding".to_owned(),
    };
    Error::Decode(format!("{context}: {detail}"))
}

/// Replaces every `"…"` and `` `…` `` span of a serde message by an ellipsis. A "missing field"
/// message names a field of the caller's own type, not data, so it stays readable.
pub(crate) fn redact_quoted(message: &str) -> String {
    if message.starts_with("missing field") {
        return message.to_owned();
    }
    let mut out = String::with_capacity(message.len());
    let mut chars = message.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                out.push_str("\"…\"");
                let mut escaped = false;
                for inner in chars.by_ref() {
                    match inner {
                        _ if escaped => escaped = false,
                        '\\' => escaped = true,
                        '"' => break,
                        _ => {}
                    }
                }
            }
            '`' => {
                out.push_str("`…`");
                for inner in chars.by_ref() {
                    if inner == '`' {
                        break;
                    }
                }
            }
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_standard_error_body() {
        let body = br#"{"error": {"code": "precondition_failed", "message": "version is 8", "request_id": "r-1"}}"#;
        let err = api_error(412, Some("from-header".into()), body);
        assert!(err.is_precondition_failed());
        assert!(!err.is_not_found());
        assert_eq!(err.status(), Some(412));
        assert_eq!(err.request_id(), Some("r-1"));
        assert_eq!(
            err.to_string(),
            "precondition_failed: version is 8 (request r-1)"
        );
    }

    #[test]
    fn header_request_id_fills_a_missing_one() {
        let body = br#"{"error": {"code": "not_found", "message": "no such key"}}"#;
        let err = api_error(404, Some("hdr".into()), body);
        assert!(err.is_not_found());
        assert_eq!(err.request_id(), Some("hdr"));
    }

    #[test]
    fn bodyless_errors_take_the_code_of_their_status() {
        let err = api_error(404, None, b"");
        assert!(err.is_not_found());
        let err = api_error(502, Some("x".into()), b"<html>bad gateway</html>");
        assert_eq!(err.code(), Some(&ErrorCode::UpstreamFailed));
        let err = api_error(418, None, b"");
        assert_eq!(err.code(), Some(&ErrorCode::Other("http_418".into())));
        assert_eq!(
            err.to_string(),
            "http_418: HTTP status 418 without an error body"
        );
    }

    #[test]
    fn op_index_is_found_inside_or_beside_the_error() {
        let inside =
            br#"{"error": {"code": "conflict", "message": "m", "request_id": "r", "op_index": 2}}"#;
        assert_eq!(api_error(409, None, inside).op_index(), Some(2));
        let beside =
            br#"{"error": {"code": "conflict", "message": "m", "request_id": "r"}, "op_index": 3}"#;
        assert_eq!(api_error(409, None, beside).op_index(), Some(3));
    }

    #[test]
    fn every_code_round_trips_and_unknown_codes_are_kept() {
        let codes = [
            "invalid_request",
            "unauthenticated",
            "forbidden",
            "quota_exceeded",
            "destination_forbidden",
            "not_found",
            "method_not_allowed",
            "conflict",
            "reconsent_required",
            "gone",
            "precondition_failed",
            "payload_too_large",
            "unsupported_media_type",
            "rate_limited",
            "internal",
            "not_implemented",
            "upstream_failed",
            "unavailable",
            "insufficient_storage",
        ];
        for code in codes {
            let parsed = ErrorCode::parse(code);
            assert!(!matches!(parsed, ErrorCode::Other(_)), "{code}");
            assert_eq!(parsed.as_str(), code);
        }
        assert_eq!(
            ErrorCode::parse("brand_new"),
            ErrorCode::Other("brand_new".into())
        );
        let body = br#"{"error": {"code": "brand_new", "message": "m"}}"#;
        assert_eq!(
            api_error(400, None, body).code(),
            Some(&ErrorCode::Other("brand_new".into()))
        );
    }

    #[test]
    fn decode_errors_do_not_quote_data() {
        let err = serde_json::from_str::<u64>(r#""hunter2""#)
            .map(|_| ())
            .unwrap_err();
        let msg = decode_error("value", &err).to_string();
        assert!(!msg.contains("hunter2"), "{msg}");
        let err = serde_json::from_str::<bool>("12345")
            .map(|_| ())
            .unwrap_err();
        let msg = decode_error("value", &err).to_string();
        assert!(!msg.contains("12345"), "{msg}");
        let escaped = redact_quoted(r#"invalid type: string "a\"b secret", expected u64"#);
        assert_eq!(escaped, r#"invalid type: string "…", expected u64"#);
    }

    #[test]
    fn missing_field_messages_stay_readable() {
        #[derive(Debug, Deserialize)]
        #[allow(dead_code)]
        struct Creds {
            token: String,
        }
        let err = serde_json::from_str::<Creds>("{}").map(|_| ()).unwrap_err();
        let msg = decode_error("value", &err).to_string();
        assert!(msg.contains("missing field `token`"), "{msg}");
    }
}
