//! One structured JSON line per request, for a platform team's log pipeline: method, route
//! template, status, duration, the kind of caller and a request id — the edge's `cf-ray` when
//! there is one, else a generated one — which the answer echoes as `x-request-id`.
//!
//! The route template comes from the router (`MatchedPath`), recorded on the answer by
//! [`record_route`] (a route layer: it runs only for matched routes), so the line names
//! `/v1/clusters/{cluster_id}` rather than an id; an unmatched request logs `null`.

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use serde::Serialize;

use super::AppState;
use crate::auth::opaque::Kind;

/// The answer header that carries the request's id.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// The route template of a matched request, carried from the route layer to the log.
#[derive(Clone)]
struct Route(String);

/// Route layer: records the matched route's template on the answer.
pub async fn record_route(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| Route(p.as_str().to_string()));
    let mut res = next.run(req).await;
    if let Some(route) = route {
        res.extensions_mut().insert(route);
    }
    res
}

/// One request's log line.
#[derive(Debug, Serialize, PartialEq)]
pub struct Line<'a> {
    pub kind: &'static str,
    pub request_id: &'a str,
    pub method: &'a str,
    /// The route template, `null` for a request no route matched.
    pub route: Option<&'a str>,
    pub status: u16,
    pub duration_ms: f64,
    /// `user`, `api_key`, `agent` or `anonymous`, by the credential presented (whether it
    /// was valid is the status's business).
    pub caller: &'static str,
}

/// The kind of credential `headers` present.
pub fn caller_kind(headers: &HeaderMap) -> &'static str {
    let Some(bearer) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
    else {
        return "anonymous";
    };
    if bearer.starts_with(Kind::ApiKey.prefix()) {
        "api_key"
    } else if bearer.starts_with(Kind::AgentToken.prefix()) {
        "agent"
    } else {
        "user"
    }
}

/// The request's id: the edge's `cf-ray` when it is a plausible one, else a new UUID.
pub fn request_id(headers: &HeaderMap) -> String {
    headers
        .get("cf-ray")
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty()
                && v.len() <= 64
                && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
        .map(str::to_string)
        .unwrap_or_else(|| uuid::Uuid::now_v7().to_string())
}

/// The middleware: times the request, echoes its id, and writes its line through the
/// platform.
pub async fn request_log(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let started = st.now();
    let id = request_id(req.headers());
    let method = req.method().as_str().to_string();
    let caller = caller_kind(req.headers());
    let mut res = next.run(req).await;
    if let Ok(value) = HeaderValue::from_str(&id) {
        res.headers_mut().insert(REQUEST_ID_HEADER, value);
    }
    let micros = (st.now() - started).num_microseconds().unwrap_or(0).max(0);
    let route = res.extensions().get::<Route>().map(|r| r.0.as_str());
    let line = Line {
        kind: "request",
        request_id: &id,
        method: &method,
        route,
        status: res.status().as_u16(),
        duration_ms: micros as f64 / 1000.0,
        caller,
    };
    if let Ok(text) = serde_json::to_string(&line) {
        st.platform.log(&text);
    }
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).expect("value"));
        }
        h
    }

    #[test]
    fn the_caller_is_named_by_the_credential_presented() {
        assert_eq!(caller_kind(&headers(&[])), "anonymous");
        assert_eq!(
            caller_kind(&headers(&[("authorization", "Bearer eyJ.x.y")])),
            "user"
        );
        assert_eq!(
            caller_kind(&headers(&[("authorization", "bearer bak_123")])),
            "api_key"
        );
        assert_eq!(
            caller_kind(&headers(&[("authorization", "Bearer bat_123")])),
            "agent"
        );
        assert_eq!(
            caller_kind(&headers(&[("authorization", "Basic abc")])),
            "anonymous"
        );
    }

    #[test]
    fn the_request_id_is_the_edge_s_ray_or_a_new_one() {
        assert_eq!(
            request_id(&headers(&[("cf-ray", "8f1c2a3b4c5d6e7f-AMS")])),
            "8f1c2a3b4c5d6e7f-AMS"
        );
        for odd in ["", "a b", "x!y", &"a".repeat(65)] {
            let id = request_id(&headers(&[("cf-ray", odd)]));
            assert!(uuid::Uuid::parse_str(&id).is_ok(), "{odd:?} → {id}");
        }
        let id = request_id(&headers(&[]));
        assert!(uuid::Uuid::parse_str(&id).is_ok());
    }
}
