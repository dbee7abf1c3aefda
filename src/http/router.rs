//! The one router: every route is registered together with its OpenAPI operation, so a
//! route that is not in the document cannot exist.

use std::sync::OnceLock;

use axum::Router;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::OpenApi as OpenApiDoc;
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{accounts, api_keys, clusters, deployments, invites, ops, orgs, ApiError, AppState};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Berth",
        description = "Control plane for shared compute: organizations, clusters with CPU / memory / GPU capacity, and deployments admitted by priority.",
        license(name = "MIT")
    ),
    modifiers(&BearerAuth),
    tags(
        (name = "auth", description = "Accounts and tokens"),
        (name = "organizations", description = "Organizations and members; roles viewer < developer < admin"),
        (name = "invites", description = "Invite codes"),
        (name = "api-keys", description = "API keys for automation"),
        (name = "clusters", description = "Clusters, their usage and queue"),
        (name = "deployments", description = "Deployments, admitted by priority"),
        (name = "ops", description = "Health and documentation"),
    )
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, doc: &mut OpenApiDoc) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT or API key")
                    .build(),
            ),
        );
    }
}

fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(ops::get_health))
        .routes(routes!(ops::get_openapi))
        .routes(routes!(accounts::get_jwks))
        .routes(routes!(accounts::register))
        .routes(routes!(accounts::login))
        .routes(routes!(accounts::refresh))
        .routes(routes!(accounts::logout))
        .routes(routes!(accounts::get_me))
        .routes(routes!(orgs::create_org, orgs::list_orgs))
        .routes(routes!(orgs::get_org))
        .routes(routes!(orgs::list_members))
        .routes(routes!(orgs::update_member, orgs::delete_member))
        .routes(routes!(invites::create_invite, invites::list_invites))
        .routes(routes!(invites::delete_invite))
        .routes(routes!(invites::accept_invite))
        .routes(routes!(api_keys::create_api_key, api_keys::list_api_keys))
        .routes(routes!(api_keys::delete_api_key))
        .routes(routes!(clusters::create_cluster, clusters::list_clusters))
        .routes(routes!(
            clusters::get_cluster,
            clusters::update_cluster,
            clusters::delete_cluster
        ))
        .routes(routes!(clusters::get_queue))
        .routes(routes!(
            deployments::create_deployment,
            deployments::list_deployments
        ))
        .routes(routes!(
            deployments::get_deployment,
            deployments::update_deployment
        ))
        .routes(routes!(deployments::cancel_deployment))
        .routes(routes!(deployments::stop_deployment))
        .routes(routes!(deployments::finish_deployment))
}

/// The router and its document, built once per isolate: building them walks every route
/// and schema, far too much work to repeat for each request.
fn built() -> &'static (Router<AppState>, OpenApiDoc) {
    static BUILT: OnceLock<(Router<AppState>, OpenApiDoc)> = OnceLock::new();
    BUILT.get_or_init(|| {
        let (router, doc) = routes().split_for_parts();
        let router = router
            .fallback(|| async { ApiError::NotFound("no such route".into()) })
            .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed });
        (router, doc)
    })
}

/// The OpenAPI document of every route.
pub fn openapi() -> &'static OpenApiDoc {
    &built().1
}

/// The OpenAPI document as JSON, rendered once.
pub fn openapi_json() -> &'static str {
    static JSON: OnceLock<String> = OnceLock::new();
    JSON.get_or_init(|| openapi().to_json().unwrap_or_else(|_| "{}".into()))
}

/// The application: every route with its state, plus problem+json 404/405 fallbacks.
pub fn app(state: AppState) -> Router {
    built().0.clone().with_state(state)
}
