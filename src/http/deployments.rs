//! Deployments: submitted to a cluster's queue, admitted by priority, stopped and finished.
//! Every change goes through the cluster's single writer (`Platform::cluster_command`).

use std::collections::BTreeMap;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::error::Problem;
use super::extract::{Caller, Ids, Valid};
use super::guard::{cluster_access, deployment_access, Declared};
use super::pagination::{List, ListParams, Paged, StatusFilter};
use super::{ApiError, AppState};
use crate::db::dependencies;
use crate::db::deployments::{self, DeploymentRow, EventRow, NewDeployment};
use crate::domain::deployment::{
    depends_on_field, resources_field, EventKind, ImageRef, Process, Status, DEFAULT_PRIORITY,
    MAX_PRIORITY, MAX_RUNTIME_SECONDS, MIN_PRIORITY,
};
use crate::domain::ids::{ClusterId, DeploymentId};
use crate::domain::policy::Action;
use crate::domain::resources::Resources;
use crate::domain::scheduling::placement::Placement;
use crate::domain::scheduling::plan::Plan;
use crate::domain::scheduling::WaitReason;
use crate::domain::validation::{display_name, FieldError, Fields, FromJson};
use crate::engine::{Command, Outcome, View, Viewed};

/// One line of a deployment's history.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DeploymentEvent {
    pub at: DateTime<Utc>,
    pub kind: EventKind,
    pub reason: Option<String>,
    /// The deployment that caused it (the preemptor, for `preempted`).
    pub by_deployment: Option<Uuid>,
}

/// A deployment.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Deployment {
    pub id: Uuid,
    pub cluster_id: Uuid,
    pub org_id: Uuid,
    pub name: String,
    pub image: String,
    pub resources: Resources,
    pub priority: i32,
    pub max_runtime_seconds: Option<i32>,
    pub status: Status,
    /// 1-based place in the queue, when queued and known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub position: Option<u32>,
    pub preemptions: i32,
    pub preempted_by: Option<Uuid>,
    pub message: Option<String>,
    pub created_at: DateTime<Utc>,
    pub enqueued_at: DateTime<Utc>,
    pub admitted_at: Option<DateTime<Utc>>,
    pub deadline_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// The agent it was placed on (stays set after it ends).
    pub agent: Option<AgentView>,
    /// While running: whether an agent runs it yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placement: Option<Placement>,
    /// When its agent started it.
    pub started_at: Option<DateTime<Utc>>,
    /// Its container's exit code, as its agent reported it.
    pub exit_code: Option<i32>,
    /// The deployments that must all succeed before it may be admitted (empty: none).
    #[serde(default)]
    pub depends_on: Vec<Uuid>,
    /// Those of `depends_on` it still waits for (single-deployment answers, while it waits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub awaiting: Option<Vec<Uuid>>,
    /// Replaces the image's command (single-deployment answers, when given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    /// Environment variables of the process (single-deployment answers, when given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<BTreeMap<String, String>>,
    /// History, oldest first (single-deployment responses).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub events: Option<Vec<DeploymentEvent>>,
}

/// An agent as a deployment names it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AgentView {
    pub id: Uuid,
    pub name: String,
}

pub(super) fn deployment(
    d: DeploymentRow,
    position: Option<u32>,
    process: Process,
    events: Option<Vec<EventRow>>,
) -> Deployment {
    Deployment {
        command: process.command,
        env: process.env,
        id: d.id.0,
        cluster_id: d.cluster_id.0,
        org_id: d.org_id.0,
        name: d.name,
        image: d.image,
        resources: d.resources,
        priority: d.priority,
        max_runtime_seconds: d.max_runtime_seconds,
        status: d.status,
        position,
        preemptions: d.preemptions,
        preempted_by: d.preempted_by.map(|b| b.0),
        message: d.message,
        created_at: d.created_at,
        enqueued_at: d.enqueued_at,
        admitted_at: d.admitted_at,
        deadline_at: d.deadline_at,
        finished_at: d.finished_at,
        placement: Placement::of(d.status, d.placement),
        agent: d.agent.map(|a| AgentView {
            id: a.id.0,
            name: a.name,
        }),
        started_at: d.started_at,
        exit_code: d.exit_code,
        depends_on: d.depends_on.iter().map(|id| id.0).collect(),
        awaiting: None,
        events: events.map(|es| {
            es.into_iter()
                .map(|e| DeploymentEvent {
                    at: e.at,
                    kind: e.kind,
                    reason: e.reason,
                    by_deployment: e.by_deployment.map(|b| b.0),
                })
                .collect()
        }),
    }
}

/// `{name, image, resources, priority?, max_runtime_seconds?, command?, env?, depends_on?}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreateDeploymentRequest {
    #[schema(schema_with = crate::domain::validation::schema::display_name, example = "trainer")]
    pub name: String,
    /// OCI image reference (the document's pattern is a common subset of the grammar; at most
    /// 247 characters, so that a bare name stays within the grammar's 255 for a repository
    /// path once it gets its default `library/`).
    #[schema(value_type = String, max_length = 247, example = "ghcr.io/acme/trainer:1.4",
        pattern = r"^[a-z0-9]+([.-][a-z0-9]+)*(/[a-z0-9]+([._-][a-z0-9]+)*)*(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?$")]
    pub image: ImageRef,
    #[schema(schema_with = crate::domain::validation::schema::requested_resources)]
    pub resources: Resources,
    /// 0–1000, default 500; higher runs first.
    #[schema(minimum = 0, maximum = 1000)]
    pub priority: Option<i32>,
    /// Fails the deployment when it runs longer.
    #[schema(minimum = 1, maximum = 31536000)]
    pub max_runtime_seconds: Option<i32>,
    /// The program and its arguments, replacing the image's command.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = crate::domain::validation::schema::command)]
    pub command: Option<Vec<String>>,
    /// Environment variables of the process.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = crate::domain::validation::schema::env)]
    pub env: Option<BTreeMap<String, String>>,
    /// Deployments of the organization (any cluster) that must all succeed first: it waits
    /// for them (`waiting_for_dependencies`), and is cancelled if one fails, is stopped or
    /// cancelled.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(schema_with = crate::domain::validation::schema::depends_on)]
    pub depends_on: Vec<Uuid>,
}

impl FromJson for CreateDeploymentRequest {
    fn from_json(f: &Fields<'_>) -> Result<Self, Vec<FieldError>> {
        let name = f
            .string("name")
            .and_then(|s| display_name(s, 100).map_err(|m| f.error("name", m)).ok());
        let image = f
            .string("image")
            .and_then(|s| ImageRef::parse(s).map_err(|m| f.error("image", m)).ok());
        let resources = resources_field(f, "resources", true);
        let priority = f.opt_int("priority", MIN_PRIORITY, MAX_PRIORITY);
        let runtime = f.opt_int("max_runtime_seconds", 1, MAX_RUNTIME_SECONDS);
        let process = Process::from_fields(f);
        let depends_on = depends_on_field(f);
        let value = match (
            name, image, resources, priority, runtime, process, depends_on,
        ) {
            (Some(name), Some(image), Some(resources), Ok(p), Ok(rt), Ok(process), Ok(deps)) => {
                Some(Self {
                    name,
                    image,
                    resources,
                    priority: p.map(|p| p as i32),
                    max_runtime_seconds: rt.map(|r| r as i32),
                    command: process.command,
                    env: process.env,
                    depends_on: deps.into_iter().map(|d| d.0).collect(),
                })
            }
            _ => None,
        };
        f.finish(value)
    }
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(v) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    match v.to_str() {
        Ok(s) if !s.trim().is_empty() && s.len() <= 255 => Ok(Some(s.trim().to_string())),
        _ => Err(ApiError::field(
            "Idempotency-Key",
            "must be 1 to 255 visible ASCII characters",
        )),
    }
}

/// `?dry_run=` of a submission.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SubmitParams {
    /// `true`: answer what the submission would meet now (200), and write nothing.
    #[param(value_type = Option<bool>)]
    pub dry_run: Option<String>,
}

/// What a submission would meet now (`?dry_run=true`).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DryRun {
    /// `admitted` (at once), `queued` (at `position`, for `reason`) or `never_fits` (larger
    /// than the cluster: the submission would be refused with 422).
    #[schema(example = "queued")]
    pub outcome: String,
    /// 1-based place in the queue it would take, when `queued`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<u32>,
    /// Why it would wait, when `queued`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<WaitReason>,
    /// The running deployments its admission would preempt (empty when none).
    pub preempts: Vec<Uuid>,
}

impl From<Plan> for DryRun {
    fn from(plan: Plan) -> Self {
        let (outcome, position, reason, preempts) = match plan {
            Plan::Admitted { preempts } => ("admitted", None, None, preempts),
            Plan::Queued { position, reason } => ("queued", Some(position), Some(reason), vec![]),
            Plan::NeverFits => ("never_fits", None, None, vec![]),
        };
        Self {
            outcome: outcome.into(),
            position,
            reason,
            preempts: preempts.into_iter().map(|d| d.0).collect(),
        }
    }
}

/// Whether the submission is a dry run: `?dry_run=true|false` (400 for a query that does not
/// parse, 422 for another value).
fn dry_run(uri: &Uri) -> Result<bool, ApiError> {
    let Query(p) = Query::<SubmitParams>::try_from_uri(uri)
        .map_err(|e| ApiError::BadRequest(format!("invalid query string: {e}")))?;
    match p.dry_run.as_deref() {
        None | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(_) => Err(ApiError::field("dry_run", "must be true or false")),
    }
}

/// Submits a deployment. Role: developer. 201 `running` when admitted at once, else
/// `queued` with its position; a request that could never fit the cluster → 422. With an
/// `Idempotency-Key`, a replay returns the original deployment. With `?dry_run=true`, it is
/// validated and authorized the same way and answered 200 with what it would meet now,
/// computed by the cluster's scheduler: nothing is written (no deployment, no event, no
/// Idempotency-Key record).
#[utoipa::path(post, path = "/v1/clusters/{cluster_id}/deployments", tag = "deployments",
    params(("cluster_id" = Uuid, Path), SubmitParams, ("Idempotency-Key" = Option<String>, Header, description = "Replays return the first submission",
        max_length = 255, pattern = r"^[\x20-\x7e]*[\x21-\x7e][\x20-\x7e]*$")),
    request_body = CreateDeploymentRequest, security(("bearer" = [])),
    responses(
        (status = 200, description = "A dry run: what the submission would meet now", body = DryRun),
        (status = 201, description = "Submitted: running or queued", body = Deployment, headers(
            ("idempotent-replayed" = String, description = "`true` when an Idempotency-Key replay returned the first submission"),
            ("server-timing" = String, description = "`batch;dur=<ms>;desc=\"<n> commands\"`: the cluster's batch this submission was committed in"),
        )),
        (status = 403, description = "Viewers cannot deploy", body = Problem),
        (status = 404, description = "Unknown cluster, or in another organization", body = Problem),
        (status = 409, description = "Idempotency-Key reused for a different request", body = Problem),
        (status = 422, description = "Invalid fields, larger than the cluster, or a dependency that is unknown, of another organization or already ended without succeeding", body = Problem),
    ))]
pub async fn create_deployment(
    State(st): State<AppState>,
    caller: Caller,
    Ids(cluster): Ids<ClusterId>,
    headers: HeaderMap,
    uri: Uri,
    Valid(req): Valid<CreateDeploymentRequest>,
) -> Result<Response, ApiError> {
    let key = idempotency_key(&headers)?;
    let dry = dry_run(&uri)?;
    // No connection here: the cluster's object authorizes the caller inside its batch, with
    // the action the route declares (`engine::SUBMIT_ACTION`).
    let process = Process {
        command: req.command,
        env: req.env,
    };
    let new = NewDeployment {
        name: req.name,
        image: req.image.as_str().to_string(),
        resources: req.resources,
        priority: req.priority.unwrap_or(DEFAULT_PRIORITY),
        max_runtime_seconds: req.max_runtime_seconds,
        idempotency_key: key,
        created_by: None,
        process: process.clone(),
        depends_on: req.depends_on.into_iter().map(DeploymentId).collect(),
    };
    if dry {
        let planned = st
            .platform
            .cluster_command(
                cluster,
                Command::Plan {
                    deployment: new,
                    by: caller,
                },
            )
            .await?;
        return match planned.outcome {
            Outcome::Planned { plan } => Ok(Json(DryRun::from(plan)).into_response()),
            other => Err(ApiError::Internal(format!("unexpected outcome {other:?}"))),
        };
    }
    let executed = st
        .platform
        .cluster_command(
            cluster,
            Command::Submit {
                deployment: new,
                by: caller,
            },
        )
        .await?;
    match executed.outcome {
        Outcome::Deployment {
            deployment: d,
            position,
            replayed,
        } => {
            let mut res = (
                StatusCode::CREATED,
                Json(deployment(*d, position, process, None)),
            )
                .into_response();
            if replayed {
                res.headers_mut()
                    .insert("idempotent-replayed", HeaderValue::from_static("true"));
            }
            if let Some(b) = executed.batch {
                // The batch this submission was committed in, for the admission benchmark.
                let timing = format!(
                    "batch;dur={:.3};desc=\"{} commands\"",
                    b.micros as f64 / 1000.0,
                    b.commands
                );
                if let Ok(v) = HeaderValue::from_str(&timing) {
                    res.headers_mut().insert("server-timing", v);
                }
            }
            Ok(res)
        }
        other => Err(ApiError::Internal(format!("unexpected outcome {other:?}"))),
    }
}

/// A cluster's deployments, `?status=` to filter. Role: viewer.
#[utoipa::path(get, path = "/v1/clusters/{cluster_id}/deployments", tag = "deployments",
    params(("cluster_id" = Uuid, Path), ListParams, StatusFilter), security(("bearer" = [])),
    responses(
        (status = 200, description = "Deployments", body = Paged<Deployment>),
        (status = 404, description = "Unknown cluster, or in another organization", body = Problem),
        (status = 422, description = "Unknown status", body = Problem),
    ))]
pub async fn list_deployments(
    State(st): State<AppState>,
    caller: Caller,
    Declared(action): Declared,
    Ids(id): Ids<ClusterId>,
    list: List<StatusFilter>,
) -> Result<Json<Paged<Deployment>>, ApiError> {
    let status = match list.filter.status.as_deref() {
        None | Some("") => None,
        Some(s) => Some(Status::parse(s).ok_or_else(|| {
            ApiError::field(
                "status",
                "must be one of queued, running, succeeded, failed, stopped, cancelled",
            )
        })?),
    };
    let db = st.db().await?;
    let (c, _) = cluster_access(&st, &db, &caller, id, action).await?;
    let rows = deployments::list(&db, c.id, status, &list.page).await?;
    Ok(Json(Paged::new(
        rows,
        &list.page,
        |d| d.id.0,
        |d| deployment(d, None, Process::default(), None),
    )))
}

/// One deployment with its event history. Role: viewer.
#[utoipa::path(get, path = "/v1/deployments/{deployment_id}", tag = "deployments",
    params(("deployment_id" = Uuid, Path)), security(("bearer" = [])),
    responses(
        (status = 200, description = "The deployment and its events", body = Deployment),
        (status = 404, description = "Unknown, or in another organization", body = Problem),
    ))]
pub async fn get_deployment(
    State(st): State<AppState>,
    caller: Caller,
    Declared(action): Declared,
    Ids(id): Ids<DeploymentId>,
) -> Result<Json<Deployment>, ApiError> {
    let db = st.db().await?;
    let (d, _) = deployment_access(&st, &db, &caller, id, action).await?;
    // The place in the queue is the cluster object's to know (it keeps the queue in order);
    // asked while the two queries run, which the client pipelines into one round trip.
    let position = async {
        if d.status != Status::Queued {
            return Ok(None);
        }
        let view = View::Position { id: d.id };
        match st.platform.cluster_view(d.cluster_id, view, caller).await? {
            Viewed::Position { position } => Ok(position),
            other => Err(ApiError::Internal(format!("unexpected view {other:?}"))),
        }
    };
    let events = async { Ok::<_, ApiError>(deployments::events(&db, d.id).await?) };
    let process = async { Ok::<_, ApiError>(deployments::process(&db, d.id).await?) };
    let awaiting = async {
        if d.status != Status::Queued || d.depends_on.is_empty() {
            return Ok(None);
        }
        Ok::<_, ApiError>(Some(dependencies::unmet(&db, &d.depends_on).await?))
    };
    let (position, events, process, awaiting) =
        tokio::try_join!(position, events, process, awaiting)?;
    let mut answer = deployment(d, position, process, Some(events));
    answer.awaiting = awaiting.map(|ids| ids.into_iter().map(|id| id.0).collect());
    Ok(Json(answer))
}

/// Authorizes, then runs one command on the deployment's cluster and answers with it.
async fn command(
    st: &AppState,
    caller: &Caller,
    id: DeploymentId,
    action: Action,
    cmd: impl FnOnce(DeploymentId) -> Command,
) -> Result<Json<Deployment>, ApiError> {
    let (d, _) = {
        let db = st.db().await?;
        deployment_access(st, &db, caller, id, action).await?
    };
    match st
        .platform
        .cluster_command(d.cluster_id, cmd(d.id))
        .await?
        .outcome
    {
        Outcome::Deployment {
            deployment: d,
            position,
            ..
        } => Ok(Json(deployment(*d, position, Process::default(), None))),
        other => Err(ApiError::Internal(format!("unexpected outcome {other:?}"))),
    }
}

/// `{priority}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct UpdateDeploymentRequest {
    #[schema(minimum = 0, maximum = 1000)]
    pub priority: i32,
}

impl FromJson for UpdateDeploymentRequest {
    fn from_json(f: &Fields<'_>) -> Result<Self, Vec<FieldError>> {
        let p = f.int("priority", MIN_PRIORITY, MAX_PRIORITY);
        f.finish(p.map(|p| Self { priority: p as i32 }))
    }
}

/// Changes the priority of a queued or running deployment (may admit or preempt). Role: developer.
#[utoipa::path(patch, path = "/v1/deployments/{deployment_id}", tag = "deployments",
    params(("deployment_id" = Uuid, Path)), request_body = UpdateDeploymentRequest, security(("bearer" = [])),
    responses(
        (status = 200, description = "Updated", body = Deployment),
        (status = 403, description = "Viewers cannot change deployments", body = Problem),
        (status = 404, description = "Unknown, or in another organization", body = Problem),
        (status = 409, description = "Already finished", body = Problem),
    ))]
pub async fn update_deployment(
    State(st): State<AppState>,
    caller: Caller,
    Declared(action): Declared,
    Ids(id): Ids<DeploymentId>,
    Valid(req): Valid<UpdateDeploymentRequest>,
) -> Result<Json<Deployment>, ApiError> {
    command(&st, &caller, id, action, |id| Command::SetPriority {
        id,
        priority: req.priority,
    })
    .await
}

/// Cancels a queued deployment. Role: developer.
#[utoipa::path(post, path = "/v1/deployments/{deployment_id}/cancel", tag = "deployments",
    params(("deployment_id" = Uuid, Path)), security(("bearer" = [])),
    responses(
        (status = 200, description = "Cancelled", body = Deployment),
        (status = 403, description = "Viewers cannot change deployments", body = Problem),
        (status = 404, description = "Unknown, or in another organization", body = Problem),
        (status = 409, description = "Not queued", body = Problem),
    ))]
pub async fn cancel_deployment(
    State(st): State<AppState>,
    caller: Caller,
    Declared(action): Declared,
    Ids(id): Ids<DeploymentId>,
) -> Result<Json<Deployment>, ApiError> {
    command(&st, &caller, id, action, |id| Command::Cancel { id }).await
}

/// Stops a running deployment, freeing its resources for what waits. Role: developer.
#[utoipa::path(post, path = "/v1/deployments/{deployment_id}/stop", tag = "deployments",
    params(("deployment_id" = Uuid, Path)), security(("bearer" = [])),
    responses(
        (status = 200, description = "Stopped", body = Deployment),
        (status = 403, description = "Viewers cannot change deployments", body = Problem),
        (status = 404, description = "Unknown, or in another organization", body = Problem),
        (status = 409, description = "Not running", body = Problem),
    ))]
pub async fn stop_deployment(
    State(st): State<AppState>,
    caller: Caller,
    Declared(action): Declared,
    Ids(id): Ids<DeploymentId>,
) -> Result<Json<Deployment>, ApiError> {
    command(&st, &caller, id, action, |id| Command::Stop { id }).await
}

/// `{outcome: "succeeded" | "failed", message?}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct FinishRequest {
    pub outcome: FinishOutcome,
    #[schema(max_length = 1000)]
    pub message: Option<String>,
}

/// How a deployment ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum FinishOutcome {
    Succeeded,
    Failed,
}

impl FromJson for FinishRequest {
    fn from_json(f: &Fields<'_>) -> Result<Self, Vec<FieldError>> {
        let outcome = f.string("outcome").and_then(|o| {
            let outcome = match o {
                "succeeded" => Some(FinishOutcome::Succeeded),
                "failed" => Some(FinishOutcome::Failed),
                _ => None,
            };
            if outcome.is_none() {
                f.error("outcome", "must be succeeded or failed");
            }
            outcome
        });
        let message = f.opt_string("message").filter(|m| {
            let ok = m.chars().count() <= 1000;
            if !ok {
                f.error("message", "must be at most 1000 characters");
            }
            ok
        });
        f.finish(outcome.map(|outcome| Self {
            outcome,
            message: message.map(str::to_string),
        }))
    }
}

/// Reports a running deployment finished (a cluster agent calls this). Role: developer.
#[utoipa::path(post, path = "/v1/deployments/{deployment_id}/finish", tag = "deployments",
    params(("deployment_id" = Uuid, Path)), request_body = FinishRequest, security(("bearer" = [])),
    responses(
        (status = 200, description = "Finished", body = Deployment),
        (status = 403, description = "Viewers cannot change deployments", body = Problem),
        (status = 404, description = "Unknown, or in another organization", body = Problem),
        (status = 409, description = "Not running", body = Problem),
    ))]
pub async fn finish_deployment(
    State(st): State<AppState>,
    caller: Caller,
    Declared(action): Declared,
    Ids(id): Ids<DeploymentId>,
    Valid(req): Valid<FinishRequest>,
) -> Result<Json<Deployment>, ApiError> {
    let succeeded = req.outcome == FinishOutcome::Succeeded;
    command(&st, &caller, id, action, |id| Command::Finish {
        id,
        succeeded,
        message: req.message,
    })
    .await
}
