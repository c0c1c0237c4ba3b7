//! The one place where a domain error becomes an HTTP answer: status, code, message, request
//! id, and the headers some codes carry (`WWW-Authenticate`, `ETag`, `Retry-After`).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tresor_core::{CoreError, ErrorCode};

/// A failed request, ready to be answered.
#[derive(Debug)]
pub struct ApiError {
    pub error: CoreError,
    pub request_id: String,
    /// For atomic batches: the op that failed.
    pub op_index: Option<usize>,
}

impl ApiError {
    pub fn new(error: CoreError, request_id: &str) -> ApiError {
        ApiError {
            error,
            request_id: request_id.to_owned(),
            op_index: None,
        }
    }
}

/// The error body of the contract.
pub fn error_body(
    code: ErrorCode,
    message: &str,
    request_id: &str,
    op_index: Option<usize>,
) -> serde_json::Value {
    let mut err = serde_json::json!({
        "code": code.as_str(),
        "message": message,
        "request_id": request_id,
    });
    if let (Some(i), Some(obj)) = (op_index, err.as_object_mut()) {
        obj.insert("op_index".into(), i.into());
    }
    serde_json::json!({ "error": err })
}

/// An error answer for a code without a domain error (404 and 405 of the router).
pub fn plain_error(code: ErrorCode, message: &str, request_id: &str) -> Response {
    let status =
        StatusCode::from_u16(code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        status,
        axum::Json(error_body(code, message, request_id, None)),
    )
        .into_response()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = self.error.code();
        if let CoreError::Internal(detail) = &self.error {
            tracing::error!(request_id = %self.request_id, detail = %detail, "internal error");
        } else if matches!(self.error, CoreError::Integrity) {
            tracing::error!(request_id = %self.request_id, "stored data failed its integrity check");
        }
        let status =
            StatusCode::from_u16(code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = error_body(
            code,
            &self.error.public_message(),
            &self.request_id,
            self.op_index,
        );
        let mut resp = (status, axum::Json(body)).into_response();
        let headers = resp.headers_mut();
        match &self.error {
            CoreError::Unauthenticated => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            CoreError::PreconditionFailed {
                current_version: Some(v),
            } => {
                if let Ok(etag) = HeaderValue::from_str(&format!("\"{v}\"")) {
                    headers.insert(header::ETAG, etag);
                }
            }
            CoreError::RateLimited { retry_after_secs } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_secs));
            }
            _ => {}
        }
        resp
    }
}
