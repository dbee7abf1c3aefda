//! Operational endpoints: health and the OpenAPI document.

use axum::extract::{RawQuery, State};
use axum::http::header;
use axum::response::IntoResponse;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::error::Problem;
use super::{ApiError, AppState};

/// Health status.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Health {
    #[schema(example = "ok")]
    pub status: String,
    /// Present with `?deep=1`: whether the database answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database: Option<&'static str>,
}

/// `?deep=1` also checks the database.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HealthQuery {
    #[expect(
        dead_code,
        reason = "describes the query string for OpenAPI; read by hand"
    )]
    #[param(value_type = Option<String>, example = "1")]
    deep: Option<String>,
}

/// Liveness without touching the database; `?deep=1` runs `SELECT 1`.
#[utoipa::path(get, path = "/health", tag = "ops", params(HealthQuery),
    responses(
        (status = 200, description = "Healthy", body = Health),
        (status = 503, description = "Database unreachable (deep check)", body = Problem),
    ))]
pub async fn get_health(
    State(st): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Json<Health>, ApiError> {
    // Read by hand so that no query string, however odd, is rejected.
    let deep = query.unwrap_or_default().split('&').any(|pair| {
        pair.strip_prefix("deep=")
            .is_some_and(|v| !matches!(v, "" | "0" | "false"))
    });
    if !deep {
        return Ok(Json(Health {
            status: "ok".into(),
            database: None,
        }));
    }
    let db = st.db().await?;
    db.query_typed("select 1", &[]).await?;
    Ok(Json(Health {
        status: "ok".into(),
        database: Some("ok"),
    }))
}

/// The OpenAPI 3.1 document (this one).
#[utoipa::path(get, path = "/openapi.json", tag = "ops",
    responses((status = 200, description = "OpenAPI 3.1 document", body = Object)))]
pub async fn get_openapi() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        super::router::openapi_json(),
    )
}
