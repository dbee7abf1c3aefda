//! The one router: every route is registered together with its OpenAPI operation, so a
//! route that is not in the document cannot exist, and a route inside an organization
//! together with the `Action` it performs (`org(…)`), which the guard applies and the
//! document publishes: adding an endpoint is a handler and one line here.

use std::sync::OnceLock;

use axum::{Extension, Router};
use utoipa::openapi::extensions::ExtensionsBuilder;
use utoipa::openapi::path::{Operation, ParameterIn, PathItem};
use utoipa::openapi::schema::{ArrayItems, Schema};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, OpenApi as OpenApiDoc, Ref, RefOr, ResponseBuilder};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouter};
use utoipa_axum::routes;

use super::{
    accounts, agent_tokens, agents, api_keys, clusters, deployments, invites, metrics, ops, orgs,
    watch, ApiError, AppState,
};
use crate::domain::policy::Action;
use crate::engine::{READ_CLUSTER_ACTION, READ_QUEUE_ACTION, SUBMIT_ACTION};

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
        (name = "agent-tokens", description = "Tokens a cluster's agent connects with"),
        (name = "agents", description = "The machines that run a cluster's deployments"),
        (name = "deployments", description = "Deployments, admitted by priority"),
        (name = "metrics", description = "Prometheus metrics of an organization's clusters"),
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
/// missing or invalid (401) or its caller's request budget spent (429); and whatever reaches
/// the database may find it down (503).
/// A route that declares one of these statuses itself keeps its own description.
struct SharedProblems;

impl Modify for SharedProblems {
    fn modify(&self, doc: &mut OpenApiDoc) {
        for item in doc.paths.paths.values_mut() {
            operations(item).for_each(shared_problems);
        }
    }
}

fn operations(item: &mut PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        &mut item.get,
        &mut item.put,
        &mut item.post,
        &mut item.delete,
        &mut item.patch,
    ]
    .into_iter()
    .flatten()
}

/// The extension naming an operation's `Action` (its `Debug` name).
pub const ACTION_EXTENSION: &str = "x-berth-action";
/// The extension giving the least role that may call an operation, by the policy table.
pub const ROLE_EXTENSION: &str = "x-berth-role";
/// The extension marking operations that an API key may not call, whatever its role.
pub const USER_ONLY_EXTENSION: &str = "x-berth-user-only";

/// Declares that a route (one handler: one method of one path) performs `action` inside an
/// organization: the request carries it to the guard ([`super::guard::Declared`]), and the
/// document publishes it with the least role and whether a user is needed. A route without
/// it acts outside any organization.
fn org(route: UtoipaMethodRouter<AppState>, action: Action) -> UtoipaMethodRouter<AppState> {
    let (schemas, mut paths, method_router) = route;
    for op in paths.paths.values_mut().flat_map(operations) {
        let policy = ExtensionsBuilder::new()
            .add(ACTION_EXTENSION, format!("{action:?}"))
            .add(ROLE_EXTENSION, action.min_role().as_str())
            .add(USER_ONLY_EXTENSION, action.needs_user())
            .build();
        op.extensions
            .get_or_insert_with(Default::default)
            .merge(policy);
    }
    (schemas, paths, method_router.layer(Extension(action)))
}

/// A page's items are the listed resource's own schema, referenced: utoipa inlines the
/// argument of a generic schema (`Paged_Cluster.items` held a copy of `Cluster`), and a
/// client generated from that got two models per resource.
struct ReferencedItems;

impl Modify for ReferencedItems {
    fn modify(&self, doc: &mut OpenApiDoc) {
        let Some(components) = doc.components.as_mut() else {
            return;
        };
        let names: Vec<String> = components.schemas.keys().cloned().collect();
        for (name, schema) in components.schemas.iter_mut() {
            let Some(item) = name.strip_prefix("Paged_") else {
                continue;
            };
            let RefOr::T(Schema::Object(page)) = schema else {
                continue;
            };
            if !names.iter().any(|n| n == item) {
                continue;
            }
            if let Some(RefOr::T(Schema::Array(items))) = page.properties.get_mut("items") {
                items.items = ArrayItems::RefOrSchema(Box::new(Ref::from_schema_name(item).into()));
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
        add(
            "429",
            "The caller's request budget is spent (`ratelimit-*` headers); retry after `retry-after` seconds",
        );
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
    use Action::*;
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        // Outside any organization.
        .routes(routes!(ops::get_health))
        .routes(routes!(ops::get_openapi))
        .routes(routes!(accounts::get_jwks))
        .routes(routes!(accounts::register))
        .routes(routes!(accounts::login))
        .routes(routes!(accounts::refresh))
        .routes(routes!(accounts::logout))
        .routes(routes!(accounts::get_me))
        .routes(routes!(orgs::create_org, orgs::list_orgs))
        .routes(routes!(invites::accept_invite))
        // Inside an organization, each with its action.
        .routes(org(routes!(orgs::get_org), ReadOrg))
        .routes(org(routes!(metrics::get_metrics), ReadMetrics))
        .routes(org(routes!(orgs::list_members), ListMembers))
        .routes(org(routes!(orgs::update_member), ChangeMemberRole))
        .routes(org(routes!(orgs::delete_member), RemoveMember))
        .routes(org(routes!(invites::create_invite), CreateInvite))
        .routes(org(routes!(invites::list_invites), ListInvites))
        .routes(org(routes!(invites::delete_invite), RevokeInvite))
        .routes(org(routes!(api_keys::create_api_key), CreateApiKey))
        .routes(org(routes!(api_keys::list_api_keys), ListApiKeys))
        .routes(org(routes!(api_keys::delete_api_key), RevokeApiKey))
        .routes(org(routes!(clusters::create_cluster), CreateCluster))
        .routes(org(routes!(clusters::list_clusters), ListClusters))
        .routes(org(routes!(clusters::update_cluster), UpdateCluster))
        .routes(org(routes!(clusters::delete_cluster), DeleteCluster))
        .routes(org(
            routes!(agent_tokens::create_agent_token),
            CreateAgentToken,
        ))
        .routes(org(
            routes!(agent_tokens::list_agent_tokens),
            ListAgentTokens,
        ))
        .routes(org(
            routes!(agent_tokens::delete_agent_token),
            RevokeAgentToken,
        ))
        .routes(org(routes!(agents::list_agents), ListAgents))
        .routes(org(routes!(deployments::list_deployments), ListDeployments))
        .routes(org(routes!(deployments::get_deployment), ReadDeployment))
        .routes(org(
            routes!(deployments::update_deployment),
            UpdateDeployment,
        ))
        .routes(org(
            routes!(deployments::cancel_deployment),
            CancelDeployment,
        ))
        .routes(org(routes!(deployments::stop_deployment), StopDeployment))
        .routes(org(
            routes!(deployments::finish_deployment),
            FinishDeployment,
        ))
        // Authorized by the cluster's object (`engine/authorize.rs`), with its actions.
        .routes(org(routes!(clusters::get_cluster), READ_CLUSTER_ACTION))
        .routes(org(routes!(clusters::get_queue), READ_QUEUE_ACTION))
        .routes(org(routes!(watch::watch_cluster), READ_CLUSTER_ACTION))
        .routes(org(routes!(deployments::create_deployment), SUBMIT_ACTION))
}

/// The router and its document, built once per isolate: building them walks every route
/// and schema, far too much work to repeat for each request.
fn built() -> &'static (Router<AppState>, OpenApiDoc) {
    static BUILT: OnceLock<(Router<AppState>, OpenApiDoc)> = OnceLock::new();
    BUILT.get_or_init(|| {
        let (router, mut doc) = routes().split_for_parts();
        SharedProblems.modify(&mut doc);
        ReferencedItems.modify(&mut doc);
        let router = router
            .route_layer(axum::middleware::from_fn(super::request_log::record_route))
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

/// The application: every route with its state, plus problem+json 404/405 fallbacks, each
/// request logged as one JSON line (`request_log`).
pub fn app(state: AppState) -> Router {
    let log = axum::middleware::from_fn_with_state(state.clone(), super::request_log::request_log);
    let limit = axum::middleware::from_fn_with_state(state.clone(), super::rate_limit::rate_limit);
    built().0.clone().layer(limit).layer(log).with_state(state)
}
