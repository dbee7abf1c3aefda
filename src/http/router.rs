//! The one router: every route is registered together with its OpenAPI operation, so a
//! route that is not in the document cannot exist.

use std::sync::OnceLock;

use axum::Router;
use utoipa::openapi::path::{Operation, ParameterIn};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, OpenApi as OpenApiDoc, Ref, RefOr, ResponseBuilder};
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

/// The failures that the shared extractors and `ApiError` produce, documented once here
/// rather than on every route (schemathesis found them missing): every problem body is
/// `application/problem+json`, as `ApiError` sends it; a JSON body (`Valid`) can be
/// malformed (400), too large (413), of another type (415) or invalid (422); a list's
/// `?limit=`/`?cursor=` (`List`) malformed (400) or invalid (422); a bearer token (`Caller`)
/// missing or invalid (401); and whatever reaches the database may find it down (503).
/// A route that declares one of these statuses itself keeps its own description.
struct SharedProblems;

impl Modify for SharedProblems {
    fn modify(&self, doc: &mut OpenApiDoc) {
        for item in doc.paths.paths.values_mut() {
            let ops = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ];
            for op in ops.into_iter().flatten() {
                shared_problems(op);
            }
        }
    }
}

const PROBLEM_REF: &str = "#/components/schemas/Problem";

fn shared_problems(op: &mut Operation) {
    let secured = op.security.as_ref().is_some_and(|s| !s.is_empty());
    let body = op.request_body.is_some();
    let list = op
        .parameters
        .iter()
        .flatten()
        .any(|p| p.name == "limit" && p.parameter_in == ParameterIn::Query);
    let responses = &mut op.responses.responses;
    let mut add = |status: &str, description: &str| {
        responses.entry(status.into()).or_insert_with(|| {
            ResponseBuilder::new()
                .description(description)
                .content(
                    "application/problem+json",
                    ContentBuilder::new()
                        .schema(Some(Ref::new(PROBLEM_REF)))
                        .build(),
                )
                .build()
                .into()
        });
    };
    if body {
        add("400", "The body is not a JSON object");
        add("413", "The body is larger than 64 KiB");
        add("415", "The body is not application/json");
        add("422", "Invalid fields, each listed in `errors`");
    }
    if list {
        add("400", "Malformed query string");
        add("422", "Invalid `limit` or `cursor`");
    }
    if secured {
        add("401", "Missing, invalid or expired credentials");
    }
    if secured || body {
        add(
            "503",
            "The database is unreachable; retry after `retry-after` seconds",
        );
    }
    for response in responses.values_mut() {
        let RefOr::T(response) = response else {
            continue;
        };
        response.content = std::mem::take(&mut response.content)
            .into_iter()
            .map(|(media, content)| {
                let problem =
                    matches!(&content.schema, Some(RefOr::Ref(r)) if r.ref_location == PROBLEM_REF);
                if problem && media == "application/json" {
                    ("application/problem+json".to_string(), content)
                } else {
                    (media, content)
                }
            })
            .collect();
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
        let (router, mut doc) = routes().split_for_parts();
        SharedProblems.modify(&mut doc);
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
