//! The one error type of the HTTP edge; every failure leaves as an RFC 9457 problem document.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::db::{unique_violation, DbError};
use crate::domain::validation::FieldError;
use crate::engine::EngineError;

/// Seconds a client should wait before retrying while the database is unreachable.
const UNAVAILABLE_RETRY_SECONDS: u64 = 5;

/// Every client-visible failure.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: the body is not valid JSON or not the expected shape at the top level.
    #[error("{0}")]
    BadRequest(String),
    /// 401: missing, invalid or expired credentials.
    #[error("{0}")]
    Unauthorized(String),
    /// 403: authenticated, but the role does not allow this.
    #[error("{0}")]
    Forbidden(String),
    /// 404: unknown, or in an organization the caller does not belong to.
    #[error("{0}")]
    NotFound(String),
    /// 405.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// 409: the current state forbids it.
    #[error("{0}")]
    Conflict(String),
    /// 410: existed, but no longer usable.
    #[error("{title}: {detail}")]
    Gone { title: String, detail: String },
    /// 413.
    #[error("request body larger than 64 KiB")]
    PayloadTooLarge,
    /// 415.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// 422: every invalid field.
    #[error("validation failed")]
    Validation(Vec<FieldError>),
    /// 426: a WebSocket route asked without `Upgrade: websocket`. (RFC 9110 wants an
    /// `Upgrade` header on it, but workerd drops that hop-by-hop header from any answer.)
    #[error("{0}")]
    UpgradeRequired(String),
    /// 429.
    #[error("too many attempts")]
    Throttled { retry_after: u64 },
    /// 429: the caller spent its request budget (`rate_limit`).
    #[error("rate limit: {} requests a minute (a write counts {}); retry after {retry_after} s", allowance.limit, super::rate_limit::WRITE_COST)]
    RateLimited {
        retry_after: u64,
        allowance: super::rate_limit::Allowance,
    },
    /// 503: the database (or a Durable Object) cannot be reached.
    #[error("service unavailable: {0}")]
    Unavailable(String),
    /// 500: a bug. Logged with its cause, never echoed.
    #[error("internal error: {0}")]
    Internal(String),
}

/// An RFC 9457 problem document.
#[derive(Debug, Serialize, serde::Deserialize, ToSchema)]
pub struct Problem {
    /// A URI naming the kind of problem.
    #[serde(rename = "type")]
    pub kind: String,
    /// Short summary of the kind of problem.
    pub title: String,
    /// HTTP status code.
    pub status: u16,
    /// What happened this time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Every invalid field (422 only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errors: Option<Vec<FieldError>>,
}

impl ApiError {
    /// Shorthand for a validation error on a single field.
    pub fn field(field: &str, message: &str) -> Self {
        Self::Validation(vec![FieldError::new(field, message)])
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::Gone { .. } => StatusCode::GONE,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Validation(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::UpgradeRequired(_) => StatusCode::UPGRADE_REQUIRED,
            Self::Throttled { .. } | Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn slug_and_title(&self) -> (&'static str, String) {
        match self {
            Self::BadRequest(_) => ("bad-request", "Malformed request".into()),
            Self::Unauthorized(_) => ("unauthorized", "Authentication required".into()),
            Self::Forbidden(_) => ("forbidden", "Not allowed for your role".into()),
            Self::NotFound(_) => ("not-found", "Not found".into()),
            Self::MethodNotAllowed => ("method-not-allowed", "Method not allowed".into()),
            Self::Conflict(_) => ("conflict", "Conflict with the current state".into()),
            Self::Gone { title, .. } => ("gone", title.clone()),
            Self::PayloadTooLarge => ("payload-too-large", "Request body too large".into()),
            Self::UnsupportedMediaType(_) => {
                ("unsupported-media-type", "Unsupported media type".into())
            }
            Self::Validation(_) => ("validation", "Invalid request fields".into()),
            Self::UpgradeRequired(_) => ("upgrade-required", "Upgrade required".into()),
            Self::Throttled { .. } => ("throttled", "Too many attempts".into()),
            Self::RateLimited { .. } => ("rate-limited", "Too many requests".into()),
            Self::Unavailable(_) => ("unavailable", "Service temporarily unavailable".into()),
            Self::Internal(_) => ("internal", "Internal error".into()),
        }
    }

    /// The problem document for this error.
    pub fn problem(&self) -> Problem {
        let (slug, title) = self.slug_and_title();
        let detail = match self {
            Self::Internal(_) => Some("an unexpected error occurred; it has been logged".into()),
            Self::Unavailable(_) => Some("the database is unreachable; retry shortly".into()),
            Self::Validation(_) => Some("one or more fields are invalid; see errors".into()),
            Self::Gone { detail, .. } => Some(detail.clone()),
            other => Some(other.to_string()),
        };
        Problem {
            kind: format!("https://berth.dev/problems/{slug}"),
            title,
            status: self.status().as_u16(),
            detail,
            errors: match self {
                Self::Validation(errors) => Some(errors.clone()),
                _ => None,
            },
        }
    }
}

impl From<DbError> for ApiError {
    fn from(e: DbError) -> Self {
        match e {
            DbError::Unavailable(m) => Self::Unavailable(m),
            DbError::Conflict(m) => Self::Unavailable(format!("retryable conflict: {m}")),
            DbError::Unique(c) => Self::Conflict(unique_violation(&c).into()),
            DbError::Other(m) => Self::Internal(m),
        }
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::NotFound(what) => Self::NotFound(format!("no such {what}")),
            EngineError::Unauthorized(m) => Self::Unauthorized(m),
            EngineError::Forbidden(m) => Self::Forbidden(m),
            EngineError::Conflict(m) => Self::Conflict(m),
            EngineError::Validation(errors) => Self::Validation(errors),
            EngineError::Unavailable(m) => Self::Unavailable(m),
            EngineError::Internal(m) => Self::Internal(m),
        }
    }
}

impl From<tokio_postgres::Error> for ApiError {
    fn from(e: tokio_postgres::Error) -> Self {
        DbError::from(e).into()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            log_error(&self);
        }
        let body = serde_json::to_vec(&self.problem()).unwrap_or_default();
        let mut res = (status, body).into_response();
        let headers = res.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        let retry = match &self {
            Self::Throttled { retry_after } | Self::RateLimited { retry_after, .. } => {
                Some(*retry_after)
            }
            Self::Unavailable(_) => Some(UNAVAILABLE_RETRY_SECONDS),
            _ => None,
        };
        if let Some(secs) = retry {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if let Self::RateLimited { allowance, .. } = &self {
            allowance.write(headers);
        }

        res
    }
}

/// Where server errors are logged: stderr natively; `edge/` points it at `console.error`
/// (stderr goes nowhere on wasm32) so that `wrangler tail` shows them.
pub static ERROR_LOG: std::sync::OnceLock<fn(&str)> = std::sync::OnceLock::new();

fn log_error(e: &ApiError) {
    match ERROR_LOG.get() {
        Some(log) => log(&e.to_string()),
        None => eprintln!("{e}"),
    }
}
