//! The one error type of the domain and the contract's error codes.
//!
//! Every crate's error ends up as a [`CoreError`]; [`ErrorCode`] is the contract's table of codes
//! and HTTP statuses, so the mapping to HTTP exists exactly once.

/// The error codes of the HTTP contract, with their HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
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
}

impl ErrorCode {
    /// The `code` string of the error body.
    pub fn as_str(self) -> &'static str {
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
        }
    }

    /// The HTTP status that carries this code.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::InvalidRequest => 400,
            ErrorCode::Unauthenticated => 401,
            ErrorCode::Forbidden | ErrorCode::QuotaExceeded | ErrorCode::DestinationForbidden => {
                403
            }
            ErrorCode::NotFound => 404,
            ErrorCode::MethodNotAllowed => 405,
            ErrorCode::Conflict | ErrorCode::ReconsentRequired => 409,
            ErrorCode::Gone => 410,
            ErrorCode::PreconditionFailed => 412,
            ErrorCode::PayloadTooLarge => 413,
            ErrorCode::UnsupportedMediaType => 415,
            ErrorCode::RateLimited => 429,
            ErrorCode::Internal => 500,
            ErrorCode::NotImplemented => 501,
            ErrorCode::UpstreamFailed => 502,
            ErrorCode::Unavailable => 503,
            ErrorCode::InsufficientStorage => 507,
        }
    }
}

/// Every failure the domain reports. Messages are safe to show to the caller: they never hold a
/// value, a secret or a token. `Internal` keeps its detail for the log only.
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    #[error("{0}")]
    InvalidRequest(String),
    #[error("missing, unknown, expired or revoked token")]
    Unauthenticated,
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Gone(String),
    /// The proxy refuses the destination (not an allowed host, or an address class that is
    /// never, or not for this provider, reachable).
    #[error("{0}")]
    DestinationForbidden(String),
    /// The credential's grant was revoked; the OAuth flow must run again.
    #[error("the credential's grant was revoked; run the OAuth flow again")]
    ReconsentRequired,
    /// The proxy could not reach the provider, timed out, or the answer was too large.
    #[error("{0}")]
    UpstreamFailed(String),
    #[error("precondition failed")]
    PreconditionFailed {
        /// The current version of the key, when it exists, for the `ETag` of the 412.
        current_version: Option<u64>,
    },
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("the stored data failed its integrity check")]
    Integrity,
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    #[error("the disk is full; nothing was written")]
    InsufficientStorage,
    /// The write would take a namespace past an operator-configured storage quota.
    #[error("a storage quota (records or bytes) is full; nothing was written")]
    QuotaExceeded,
    /// Over a rate limit; `retry_after_secs` (at least 1) goes into `Retry-After`.
    #[error("too many requests; retry after {retry_after_secs} s")]
    RateLimited { retry_after_secs: u64 },
    /// A concurrent writer changed what this operation read; the service retries internally and
    /// this never reaches a client.
    #[error("write conflict")]
    WriteConflict,
    /// The namespace's data key is being rotated, or was rotated after this operation read it
    /// (its commit is fenced or was sealed under the old key): the service forgets the cached
    /// key, waits briefly and runs the operation again. Reaches a client only when the rotation
    /// outlasts the wait.
    #[error("the installation's data key is being rotated; try again")]
    Rekeying,
    #[error("internal error")]
    Internal(String),
}

impl CoreError {
    /// The contract code of this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            CoreError::InvalidRequest(_) => ErrorCode::InvalidRequest,
            CoreError::Unauthenticated => ErrorCode::Unauthenticated,
            CoreError::Forbidden(_) => ErrorCode::Forbidden,
            CoreError::NotFound(_) => ErrorCode::NotFound,
            CoreError::Conflict(_) => ErrorCode::Conflict,
            CoreError::Gone(_) => ErrorCode::Gone,
            CoreError::DestinationForbidden(_) => ErrorCode::DestinationForbidden,
            CoreError::ReconsentRequired => ErrorCode::ReconsentRequired,
            CoreError::UpstreamFailed(_) => ErrorCode::UpstreamFailed,
            CoreError::PreconditionFailed { .. } => ErrorCode::PreconditionFailed,
            CoreError::PayloadTooLarge(_) => ErrorCode::PayloadTooLarge,
            CoreError::UnsupportedMediaType(_) => ErrorCode::UnsupportedMediaType,
            CoreError::Integrity | CoreError::Internal(_) | CoreError::WriteConflict => {
                ErrorCode::Internal
            }
            CoreError::Unavailable(_) | CoreError::Rekeying => ErrorCode::Unavailable,
            CoreError::InsufficientStorage => ErrorCode::InsufficientStorage,
            CoreError::QuotaExceeded => ErrorCode::QuotaExceeded,
            CoreError::RateLimited { .. } => ErrorCode::RateLimited,
        }
    }

    /// The sentence for the error body. Internal details stay in the log.
    pub fn public_message(&self) -> String {
        match self {
            CoreError::Internal(_) | CoreError::WriteConflict => {
                "internal error; see the server log with this request id".to_owned()
            }
            other => other.to_string(),
        }
    }

    pub fn invalid(msg: impl Into<String>) -> Self {
        CoreError::InvalidRequest(msg.into())
    }

    pub fn internal(msg: impl Into<String>) -> Self {
        CoreError::Internal(msg.into())
    }
}

impl From<tresor_crypto::CryptoError> for CoreError {
    fn from(e: tresor_crypto::CryptoError) -> Self {
        match e {
            tresor_crypto::CryptoError::Integrity
            | tresor_crypto::CryptoError::UnsupportedFormat => CoreError::Integrity,
            other => CoreError::Internal(other.to_string()),
        }
    }
}

pub type Result<T, E = CoreError> = std::result::Result<T, E>;
