//! Extractors: validated JSON bodies, the authenticated caller, path ids and the client IP.

use std::collections::HashMap;

use axum::body::Body;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap};
use chrono::{DateTime, Utc};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use super::rate_limit::Authenticated;
use super::{ApiError, AppState};
use crate::auth::opaque::{self, Kind};
use crate::domain::ids::UserId;
use crate::domain::validation::{Fields, FromJson};

/// Largest accepted request body.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// A JSON request body parsed into a valid domain value; malformed JSON → 400, too large →
/// 413, wrong content type → 415, invalid fields → 422 listing all of them.
#[derive(Debug)]
pub struct Valid<T>(pub T);

impl<T: FromJson, S: Send + Sync> FromRequest<S> for Valid<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, _: &S) -> Result<Self, ApiError> {
        let is_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                let essence = v
                    .split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase();
                essence == "application/json" || essence.ends_with("+json")
            });
        if !is_json {
            return Err(ApiError::UnsupportedMediaType(
                "send the body as application/json".into(),
            ));
        }
        let bytes = read_body(req.into_body()).await?;
        let value = parse_json(&bytes)
            .map_err(|e| ApiError::BadRequest(format!("the body is not valid JSON: {e}")))?;
        let Value::Object(object) = &value else {
            return Err(ApiError::BadRequest(
                "the body must be a JSON object".into(),
            ));
        };
        T::from_json(&Fields::new(object, ""))
            .map(Valid)
            .map_err(ApiError::Validation)
    }
}

/// Parses a body. serde_json refuses a number beyond a double's range (`1e999`) although it
/// is valid JSON; such a body is read again value by value ([`RawValue`] scans numbers
/// without converting them), and each number that does not fit becomes the largest double
/// of its sign: outside every field's range, so the field's own check names it in the 422,
/// as it names any other invalid value.
fn parse_json(bytes: &[u8]) -> Result<Value, serde_json::Error> {
    serde_json::from_slice(bytes).or_else(|first| {
        // Not JSON: the scan's error names the fault (the first may be a number's range).
        let raw = serde_json::from_slice::<&RawValue>(bytes)?;
        saturating(raw).map_err(|_| first)
    })
}

fn saturating(raw: &RawValue) -> Result<Value, serde_json::Error> {
    let text = raw.get();
    match text.as_bytes().first() {
        Some(b'{') => serde_json::from_str::<HashMap<String, &RawValue>>(text)?
            .into_iter()
            .map(|(k, v)| Ok((k, saturating(v)?)))
            .collect::<Result<Map<_, _>, _>>()
            .map(Value::Object),
        Some(b'[') => serde_json::from_str::<Vec<&RawValue>>(text)?
            .into_iter()
            .map(saturating)
            .collect::<Result<_, _>>()
            .map(Value::Array),
        Some(b'-' | b'0'..=b'9') => Ok(serde_json::from_str(text).unwrap_or_else(|_| {
            let max = if text.starts_with('-') {
                -f64::MAX
            } else {
                f64::MAX
            };
            Value::from(max)
        })),
        _ => serde_json::from_str(text),
    }
}

async fn read_body(body: Body) -> Result<axum::body::Bytes, ApiError> {
    axum::body::to_bytes(body, MAX_BODY_BYTES)
        .await
        .map_err(|e| {
            let too_large =
                std::iter::successors(Some(&e as &(dyn std::error::Error + 'static)), |e| {
                    e.source()
                })
                .any(|e| e.is::<http_body_util::LengthLimitError>());
            if too_large {
                ApiError::PayloadTooLarge
            } else {
                ApiError::BadRequest("the body could not be read".into())
            }
        })
}

pub use crate::auth::Caller;

impl Caller {
    /// The user behind the call; API keys act only inside their organization (403 here).
    pub fn user(&self) -> Result<UserId, ApiError> {
        match self {
            Caller::User(u) => Ok(*u),
            Caller::ApiKey(_) => Err(ApiError::Forbidden(
                "API keys act only on their organization's resources; this needs a user".into(),
            )),
        }
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        // The rate limit authenticated it already.
        if let Some(done) = parts.extensions.get::<Authenticated>() {
            return Ok(done.caller.clone());
        }
        authenticate(&parts.headers, state).map(|(caller, _)| caller)
    }
}

/// The caller of `Authorization: Bearer …`, and when its credential expires (an access
/// token's expiry; an API key has none): 401 for anything else.
pub fn authenticate(
    headers: &HeaderMap,
    state: &AppState,
) -> Result<(Caller, Option<DateTime<Utc>>), ApiError> {
    let token = bearer(headers)?;
    // An agent token only connects its cluster's agent: it is neither an access token
    // nor an API key, and no route of the API takes it.
    if token.starts_with(Kind::AgentToken.prefix()) {
        return Err(ApiError::Unauthorized(
            "an agent token only connects a cluster's agent; it cannot call the API".into(),
        ));
    }
    if token.starts_with(Kind::ApiKey.prefix()) {
        return opaque::hash_presented(Kind::ApiKey, token)
            .map(|hash| (Caller::ApiKey(hash), None))
            .ok_or_else(|| ApiError::Unauthorized("invalid API key".into()));
    }
    let (user, expires) = state
        .keys
        .verify_until(token, state.now())
        .map_err(|e| ApiError::Unauthorized(format!("invalid access token: {e}")))?;
    Ok((Caller::User(user), Some(expires)))
}

fn bearer(headers: &HeaderMap) -> Result<&str, ApiError> {
    let value = headers
        .get(header::AUTHORIZATION)
        .ok_or_else(|| ApiError::Unauthorized("missing Authorization: Bearer token".into()))?
        .to_str()
        .map_err(|_| ApiError::Unauthorized("malformed Authorization header".into()))?;
    let (scheme, token) = value
        .split_once(' ')
        .ok_or_else(|| ApiError::Unauthorized("expected Authorization: Bearer <token>".into()))?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(ApiError::Unauthorized(
            "expected Authorization: Bearer <token>".into(),
        ));
    }
    Ok(token.trim())
}

/// Path parameters as their typed ids (`Ids<OrgId>`, `Ids<(OrgId, UserId)>`); a malformed
/// id, or a path that cannot be read (not UTF-8, say), names nothing: 404, like an unknown id.
#[derive(Debug)]
pub struct Ids<T>(pub T);

impl<T, S> FromRequestParts<S> for Ids<T>
where
    T: serde::de::DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(v)| Ids(v))
            .map_err(|_| ApiError::NotFound("no such resource".into()))
    }
}

/// The client's IP as the edge reports it (`CF-Connecting-IP`), for throttling.
#[derive(Debug, Clone)]
pub struct ClientIp(pub String);

impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let ip = parts
            .headers
            .get("cf-connecting-ip")
            .and_then(|v| v.to_str().ok())
            .map(|s| s.trim().chars().take(64).collect())
            .unwrap_or_else(|| "unknown".to_string());
        Ok(ClientIp(ip))
    }
}

#[cfg(test)]
mod tests {
    use super::parse_json;
    use serde_json::json;

    #[test]
    fn numbers_beyond_a_double_saturate_wherever_they_are() {
        let v = parse_json(br#" {"a": {"b": 1e999}, "c": [-1E+400, 2], "d": "1e999", "e": null} "#)
            .expect("valid JSON");
        assert_eq!(
            v,
            json!({"a": {"b": f64::MAX}, "c": [-f64::MAX, 2], "d": "1e999", "e": null})
        );
    }

    #[test]
    fn invalid_json_keeps_the_parser_s_own_error() {
        for bad in [&br#"{"a": 1e}"#[..], b"{\"a\": \"\\x\"}", b"{\"a\": 1", b""] {
            let direct = serde_json::from_slice::<serde_json::Value>(bad).expect_err("invalid");
            let ours = parse_json(bad).expect_err("invalid");
            assert_eq!(ours.to_string(), direct.to_string());
        }
        // Beside a huge number, the real fault is named, not the number.
        let e = parse_json(br#"{"a": 1e999,}"#).expect_err("invalid");
        assert_eq!((e.line(), e.column()), (1, 13), "{e}");
        assert!(!e.to_string().contains("out of range"), "{e}");
    }
}
