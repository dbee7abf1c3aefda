//! Clusters: capacity, policy, usage and the queue.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::error::Problem;
use super::extract::{Caller, Ids, Valid};
use super::guard::{authorize_in, cluster_access, Declared};
use super::pagination::{List, ListParams, Paged};
use super::{ApiError, AppState};
use crate::db::clusters::{self, ClusterRow, Usage};
use crate::domain::deployment::resources_field;
use crate::domain::ids::{ClusterId, DeploymentId, OrgId};
use crate::domain::resources::Resources;
use crate::domain::scheduling::{Policy, Queueing, WaitReason};
use crate::domain::validation::{display_name, FieldError, Fields, FromJson, Invalid};
use crate::engine::{Command, Outcome, View, Viewed};

/// Capacity and what is done with it, all derived from the deployments' records.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct UsageView {
    pub capacity: Resources,
    /// Sum over running deployments.
    pub allocated: Resources,
    /// capacity − allocated.
    pub available: Resources,
    /// Sum over queued deployments.
    pub queued_demand: Resources,
    /// Running deployments.
    pub running: i64,
    /// Queued deployments.
    pub queued: i64,
    /// What the connected agents offer together (the machines behind the quota).
    pub agent_capacity: Resources,
    /// Agents connected now.
    pub agents_connected: i64,
}

pub(super) fn usage_view(capacity: Resources, u: Usage) -> UsageView {
    UsageView {
        capacity,
        allocated: u.allocated,
        available: capacity.saturating_sub(&u.allocated),
        queued_demand: u.queued_demand,
        running: u.running,
        queued: u.queued,
        agent_capacity: u.agent_capacity,
        agents_connected: u.agents_connected,
    }
}

/// A cluster.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Cluster {
    pub id: Uuid,
    pub org_id: Uuid,
    pub name: String,
    pub capacity: Resources,
    pub queueing: Queueing,
    pub preemption: bool,
    /// How long an agent may stay away (disconnected or silent) before the deployments it ran
    /// are lost and requeued.
    pub agent_grace_seconds: i32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Present on single-cluster responses.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<UsageView>,
}

pub(super) fn cluster(c: ClusterRow, usage: Option<Usage>) -> Cluster {
    Cluster {
        usage: usage.map(|u| usage_view(c.capacity, u)),
        id: c.id.0,
        org_id: c.org_id.0,
        name: c.name,
        capacity: c.capacity,
        queueing: c.policy.queueing,
        preemption: c.policy.preemption,
        agent_grace_seconds: c.agent_grace_seconds,
        created_at: c.created_at,
        updated_at: c.updated_at,
    }
}

fn queueing_field(f: &Fields<'_>) -> Result<Option<Queueing>, Invalid> {
    match f.opt_string("queueing") {
        None => Ok(None),
        Some("best_effort") => Ok(Some(Queueing::BestEffort)),
        Some("strict") => Ok(Some(Queueing::Strict)),
        Some(_) => {
            f.error("queueing", "must be best_effort or strict");
            Err(Invalid)
        }
    }
}

/// Bounds of `agent_grace_seconds`, and its default.
pub const AGENT_GRACE_SECONDS: (i64, i64, i32) = (5, 3600, 60);

fn grace_field(f: &Fields<'_>) -> Result<Option<i32>, Invalid> {
    let (min, max, _) = AGENT_GRACE_SECONDS;
    f.opt_int("agent_grace_seconds", min, max)
        .map(|g| g.and_then(|g| i32::try_from(g).ok()))
}

/// `{name, capacity, queueing?, preemption?, agent_grace_seconds?}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreateClusterRequest {
    #[schema(schema_with = crate::domain::validation::schema::display_name, example = "gpu-east")]
    pub name: String,
    #[schema(schema_with = crate::domain::validation::schema::requested_resources)]
    pub capacity: Resources,
    /// Default best_effort.
    pub queueing: Option<Queueing>,
    /// Default false.
    pub preemption: Option<bool>,
    /// 5 to 3600, default 60.
    #[schema(minimum = 5, maximum = 3600)]
    pub agent_grace_seconds: Option<i32>,
}

impl FromJson for CreateClusterRequest {
    fn from_json(f: &Fields<'_>) -> Result<Self, Vec<FieldError>> {
        let name = f
            .string("name")
            .and_then(|s| display_name(s, 100).map_err(|m| f.error("name", m)).ok());
        let capacity = resources_field(f, "capacity", true);
        let queueing = queueing_field(f);
        let preemption = f.opt_bool("preemption");
        let grace = grace_field(f);
        let value = match (name, capacity, queueing, preemption, grace) {
            (Some(name), Some(capacity), Ok(queueing), Ok(preemption), Ok(agent_grace_seconds)) => {
                Some(Self {
                    name,
                    capacity,
                    queueing,
                    preemption,
                    agent_grace_seconds,
                })
            }
            _ => None,
        };
        f.finish(value)
    }
}

/// Creates a cluster. Role: admin.
#[utoipa::path(post, path = "/v1/orgs/{org_id}/clusters", tag = "clusters",
    params(("org_id" = Uuid, Path)), request_body = CreateClusterRequest, security(("bearer" = [])),
    responses(
        (status = 201, description = "Created", body = Cluster),
        (status = 403, description = "Not an admin", body = Problem),
        (status = 404, description = "Unknown organization, or not a member", body = Problem),
        (status = 409, description = "Name taken in this organization", body = Problem),
        (status = 422, description = "Invalid fields", body = Problem),
    ))]
pub async fn create_cluster(
    State(st): State<AppState>,
    caller: Caller,
    Declared(action): Declared,
    Ids(org): Ids<OrgId>,
    Valid(req): Valid<CreateClusterRequest>,
) -> Result<(StatusCode, Json<Cluster>), ApiError> {
    let db = st.db().await?;
    authorize_in(&st, &db, &caller, org, action, "organization").await?;
    let now = st.now();
    let row = ClusterRow {
        id: ClusterId::new(),
        org_id: org,
        name: req.name,
        capacity: req.capacity,
        policy: Policy {
            queueing: req.queueing.unwrap_or(Queueing::BestEffort),
            preemption: req.preemption.unwrap_or(false),
        },
        agent_grace_seconds: req.agent_grace_seconds.unwrap_or(AGENT_GRACE_SECONDS.2),
        created_at: now,
        updated_at: now,
    };
    let row = clusters::insert(&db, &row).await?;
    Ok((
        StatusCode::CREATED,
        Json(cluster(row, Some(Usage::default()))),
    ))
}

/// An organization's clusters. Role: viewer.
#[utoipa::path(get, path = "/v1/orgs/{org_id}/clusters", tag = "clusters",
    params(("org_id" = Uuid, Path), ListParams), security(("bearer" = [])),
    responses(
        (status = 200, description = "Clusters", body = Paged<Cluster>),
        (status = 404, description = "Unknown organization, or not a member", body = Problem),
    ))]
pub async fn list_clusters(
    State(st): State<AppState>,
    caller: Caller,
    Declared(action): Declared,
    Ids(org): Ids<OrgId>,
    list: List,
) -> Result<Json<Paged<Cluster>>, ApiError> {
    let db = st.db().await?;
    authorize_in(&st, &db, &caller, org, action, "organization").await?;
    let rows = clusters::list(&db, org, &list.page).await?;
    Ok(Json(Paged::new(
        rows,
        &list.page,
        |c| c.id.0,
        |c| cluster(c, None),
    )))
}

/// One cluster with its usage. Role: viewer.
#[utoipa::path(get, path = "/v1/clusters/{cluster_id}", tag = "clusters",
    params(("cluster_id" = Uuid, Path)), security(("bearer" = [])),
    responses(
        (status = 200, description = "The cluster and its usage", body = Cluster),
        (status = 404, description = "Unknown, or in another organization", body = Problem),
    ))]
pub async fn get_cluster(
    State(st): State<AppState>,
    caller: Caller,
    Ids(id): Ids<ClusterId>,
) -> Result<Json<Cluster>, ApiError> {
    // No connection here: the cluster's object authorizes the caller (with the action the
    // route declares: `View::Cluster.action()`) and answers with the usage it keeps (O(1),
    // however many deployments are live).
    match st.platform.cluster_view(id, View::Cluster, caller).await? {
        Viewed::Cluster { cluster: c, usage } => Ok(Json(cluster(*c, Some(usage)))),
        other => Err(ApiError::Internal(format!("unexpected view {other:?}"))),
    }
}

/// `{name?, capacity?, queueing?, preemption?, agent_grace_seconds?}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct UpdateClusterRequest {
    #[schema(schema_with = crate::domain::validation::schema::display_name)]
    pub name: Option<String>,
    #[schema(schema_with = crate::domain::validation::schema::requested_resources)]
    pub capacity: Option<Resources>,
    pub queueing: Option<Queueing>,
    pub preemption: Option<bool>,
    #[schema(minimum = 5, maximum = 3600)]
    pub agent_grace_seconds: Option<i32>,
}

impl FromJson for UpdateClusterRequest {
    fn from_json(f: &Fields<'_>) -> Result<Self, Vec<FieldError>> {
        let name = match f.opt_string("name") {
            None => Ok(None),
            Some(s) => display_name(s, 100).map(Some).map_err(|m| {
                f.error("name", m);
                Invalid
            }),
        };
        let capacity = if f.has("capacity") {
            resources_field(f, "capacity", true)
                .map(Some)
                .ok_or(Invalid)
        } else {
            Ok(None)
        };
        let queueing = queueing_field(f);
        let preemption = f.opt_bool("preemption");
        let grace = grace_field(f);
        let value = match (name, capacity, queueing, preemption, grace) {
            (Ok(name), Ok(capacity), Ok(queueing), Ok(preemption), Ok(agent_grace_seconds)) => {
                Some(Self {
                    name,
                    capacity,
                    queueing,
                    preemption,
                    agent_grace_seconds,
                })
            }
            _ => None,
        };
        f.finish(value)
    }
}

/// Renames, resizes or changes the policy. Role: admin. Shrinking below what is allocated → 409.
#[utoipa::path(patch, path = "/v1/clusters/{cluster_id}", tag = "clusters",
    params(("cluster_id" = Uuid, Path)), request_body = UpdateClusterRequest, security(("bearer" = [])),
    responses(
        (status = 200, description = "Updated (a larger capacity admits what now fits)", body = Cluster),
        (status = 403, description = "Not an admin", body = Problem),
        (status = 404, description = "Unknown, or in another organization", body = Problem),
        (status = 409, description = "Would shrink below the allocation, or name taken", body = Problem),
        (status = 422, description = "Invalid fields", body = Problem),
    ))]
pub async fn update_cluster(
    State(st): State<AppState>,
    caller: Caller,
    Declared(action): Declared,
    Ids(id): Ids<ClusterId>,
    Valid(req): Valid<UpdateClusterRequest>,
) -> Result<Json<Cluster>, ApiError> {
    let (c, _) = {
        let db = st.db().await?;
        cluster_access(&st, &db, &caller, id, action).await?
    };
    let cmd = Command::UpdateCluster {
        name: req.name,
        capacity: req.capacity,
        queueing: req.queueing,
        preemption: req.preemption,
        agent_grace_seconds: req.agent_grace_seconds,
    };
    match st.platform.cluster_command(c.id, cmd).await?.outcome {
        Outcome::Cluster {
            cluster: row,
            usage,
        } => Ok(Json(cluster(*row, Some(usage)))),
        other => Err(ApiError::Internal(format!("unexpected outcome {other:?}"))),
    }
}

/// Deletes a cluster. Role: admin. 409 while deployments are queued or running, or while
/// deployments of other clusters wait for its deployments.
#[utoipa::path(delete, path = "/v1/clusters/{cluster_id}", tag = "clusters",
    params(("cluster_id" = Uuid, Path)), security(("bearer" = [])),
    responses(
        (status = 204, description = "Deleted"),
        (status = 403, description = "Not an admin", body = Problem),
        (status = 404, description = "Unknown, or in another organization", body = Problem),
        (status = 409, description = "Work is queued or running, or deployments of other clusters wait for its deployments", body = Problem),
    ))]
pub async fn delete_cluster(
    State(st): State<AppState>,
    caller: Caller,
    Declared(action): Declared,
    Ids(id): Ids<ClusterId>,
) -> Result<StatusCode, ApiError> {
    let (c, _) = {
        let db = st.db().await?;
        cluster_access(&st, &db, &caller, id, action).await?
    };
    st.platform
        .cluster_command(c.id, Command::DeleteCluster)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// One queued deployment, in scheduling order.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct QueueEntry {
    /// 1-based place in scheduling order.
    pub position: u32,
    pub deployment_id: Uuid,
    pub name: String,
    pub priority: i32,
    /// Priority plus the aging boost (+1 per minute waited, at most +100).
    pub effective_priority: i32,
    pub resources: Resources,
    pub enqueued_at: DateTime<Utc>,
    /// Why it waits.
    pub reason: WaitReason,
}

/// The queue in scheduling order, each entry with its position and why it waits. Role: viewer.
#[utoipa::path(get, path = "/v1/clusters/{cluster_id}/queue", tag = "clusters",
    params(("cluster_id" = Uuid, Path), ListParams), security(("bearer" = [])),
    responses(
        (status = 200, description = "Queued deployments in scheduling order", body = Paged<QueueEntry>),
        (status = 404, description = "Unknown, or in another organization", body = Problem),
    ))]
pub async fn get_queue(
    State(st): State<AppState>,
    caller: Caller,
    Ids(id): Ids<ClusterId>,
    list: List,
) -> Result<Json<Paged<QueueEntry>>, ApiError> {
    // No connection here: the cluster's object authorizes the caller (`View::action`, the
    // route's declared action) and keeps the queue in order (a page costs O(log n + page)).
    let view = View::Queue {
        after: list.page.after.map(DeploymentId),
        limit: list.page.fetch() as usize,
    };
    let page = match st.platform.cluster_view(id, view, caller).await? {
        Viewed::Queue { entries } => entries,
        other => return Err(ApiError::Internal(format!("unexpected view {other:?}"))),
    };
    Ok(Json(Paged::new(
        page,
        &list.page,
        |(e, _)| e.id.0,
        queue_entry,
    )))
}

/// A queue page's entry as the API shows it.
pub(super) fn queue_entry(
    (e, r): (
        crate::domain::scheduling::QueueEntry,
        crate::engine::QueuedRow,
    ),
) -> QueueEntry {
    QueueEntry {
        position: e.position,
        deployment_id: e.id.0,
        name: r.name,
        priority: r.priority,
        effective_priority: e.effective_priority,
        resources: r.resources,
        enqueued_at: r.enqueued_at,
        reason: e.reason,
    }
}
