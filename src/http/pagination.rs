//! `?limit=` (default 50, max 200) and an opaque `?cursor=` on every list; responses are
//! `{"items": [...], "next_cursor": "..." | null}`.

use axum::extract::rejection::QueryRejection;
use axum::extract::{FromRequestParts, Query};
use axum::http::request::Parts;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::ApiError;
use crate::db::Page;
use crate::domain::deployment::Status;
use crate::domain::validation::FieldError;

/// Default page size.
pub const DEFAULT_LIMIT: i64 = 50;
/// Largest page size.
pub const MAX_LIMIT: i64 = 200;

/// The query string every list endpoint takes.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Page size, 1–200 (default 50).
    #[param(value_type = Option<i64>, minimum = 1, maximum = 200)]
    limit: Option<String>,
    /// The `next_cursor` of the previous page (an id, 16 bytes in unpadded base64url).
    #[param(pattern = "^[A-Za-z0-9_-]{21}[AQgw]$")]
    cursor: Option<String>,
}

/// The filter of a list that takes none.
#[derive(Debug, Default, Deserialize)]
pub struct NoFilter {}

/// `?status=` of the deployment lists.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StatusFilter {
    /// Only the deployments in this status.
    #[param(value_type = Option<Status>)]
    pub status: Option<String>,
}

/// A parsed list request, with the endpoint's own filter `F` read from the same query.
#[derive(Debug)]
pub struct List<F = NoFilter> {
    /// The page to read.
    pub page: Page,
    /// The endpoint's filter, as given.
    pub filter: F,
}

impl<S: Send + Sync, F: DeserializeOwned> FromRequestParts<S> for List<F> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let malformed =
            |e: QueryRejection| ApiError::BadRequest(format!("invalid query string: {e}"));
        let Query(p) = Query::<ListParams>::try_from_uri(&parts.uri).map_err(malformed)?;
        let Query(filter) = Query::<F>::try_from_uri(&parts.uri).map_err(malformed)?;
        let mut errors = Vec::new();
        let limit = match p.limit.as_deref().map(str::parse::<i64>) {
            None => DEFAULT_LIMIT,
            Some(Ok(n)) if (1..=MAX_LIMIT).contains(&n) => n,
            Some(_) => {
                errors.push(FieldError::new("limit", "must be an integer from 1 to 200"));
                DEFAULT_LIMIT
            }
        };
        let after = match p.cursor.as_deref() {
            None | Some("") => None,
            Some(c) => match decode(c) {
                Some(id) => Some(id),
                None => {
                    errors.push(FieldError::new("cursor", "is not a cursor this API issued"));
                    None
                }
            },
        };
        if !errors.is_empty() {
            return Err(ApiError::Validation(errors));
        }
        Ok(List {
            page: Page { after, limit },
            filter,
        })
    }
}

fn decode(cursor: &str) -> Option<Uuid> {
    let bytes = URL_SAFE_NO_PAD.decode(cursor).ok()?;
    Uuid::from_slice(&bytes).ok()
}

/// One page of results.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Paged<T> {
    /// The items of this page.
    pub items: Vec<T>,
    /// Pass as `?cursor=` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

impl<T> Paged<T> {
    /// Cuts the extra row fetched by `Page::fetch` and makes the cursor from the last id.
    pub fn new<R>(
        mut rows: Vec<R>,
        page: &Page,
        id: impl Fn(&R) -> Uuid,
        map: impl Fn(R) -> T,
    ) -> Self {
        let more = rows.len() as i64 > page.limit;
        rows.truncate(page.limit.max(0) as usize);
        let next_cursor = if more {
            rows.last()
                .map(|r| URL_SAFE_NO_PAD.encode(id(r).as_bytes()))
        } else {
            None
        };
        Self {
            items: rows.into_iter().map(map).collect(),
            next_cursor,
        }
    }
}
