//! Deployments' dependencies (`depends_on`, `held`): what a submission's dependencies are
//! now, which of a cluster's deployments are held and what their dependencies are, releases,
//! and which other clusters hold deployments waiting for ones that just ended.
//!
//! A submission's dependencies are read `for share`: a dependency of another cluster cannot
//! end (that cluster's object updates its row) between this batch's reading and its commit,
//! and that object's batch, blocked until then, finds the new dependent when it asks which
//! clusters to wake ([`waiting_clusters`] runs after its update). So no wake-up is lost to a
//! race; one lost to a failure is caught by the cron sweep, which ticks every cluster with
//! queued deployments. Two clusters' batches can deadlock only if each submits a deployment
//! depending on one the other is ending in that very batch; PostgreSQL then aborts one batch
//! (its callers get 503 with `retry-after`, which an Idempotency-Key makes safe to retry).

use chrono::{DateTime, Utc};
use tokio_postgres::types::Type;
use tokio_postgres::GenericClient;
use uuid::Uuid;

use super::deployments::stored_status as status;
use super::DbResult;
use crate::domain::deployment::Status;
use crate::domain::ids::{ClusterId, DeploymentId, OrgId};
use crate::domain::scheduling::dependencies::Found;

/// The organization and status of each of `ids` that exists (locked `for share` until the
/// transaction ends; see the module documentation).
pub async fn found(
    db: &impl GenericClient,
    ids: &[DeploymentId],
) -> DbResult<Vec<(DeploymentId, Found)>> {
    if ids.is_empty() {
        return Ok(vec![]);
    }
    let ids: Vec<Uuid> = ids.iter().map(|id| id.0).collect();
    let rows = db
        .query_typed(
            "select id, org_id, status from deployments where id = any($1) for share",
            &[(&ids, Type::UUID_ARRAY)],
        )
        .await?;
    rows.iter()
        .map(|r| {
            let s: String = r.try_get(2)?;
            Ok((
                DeploymentId(r.try_get(0)?),
                Found {
                    org: OrgId(r.try_get(1)?),
                    status: status(&s)?,
                },
            ))
        })
        .collect()
}

/// A held deployment's dependency with its status now (none: it no longer exists).
pub type HeldDependency = (DeploymentId, DeploymentId, Option<Status>);

/// Every dependency of `cluster`'s held deployments: (held, dependency, its status), each
/// held deployment's in the order it named them.
pub async fn held(db: &impl GenericClient, cluster: ClusterId) -> DbResult<Vec<HeldDependency>> {
    let rows = db
        .query_typed(
            "select h.id, dep.id, d.status from deployments h \
             cross join lateral unnest(h.depends_on) with ordinality as dep(id, n) \
             left join deployments d on d.id = dep.id \
             where h.cluster_id = $1 and h.status = 'queued' and h.held \
             order by h.id, dep.n",
            &[(&cluster.0, Type::UUID)],
        )
        .await?;
    rows.iter()
        .map(|r| {
            let s: Option<String> = r.try_get(2)?;
            Ok((
                DeploymentId(r.try_get(0)?),
                DeploymentId(r.try_get(1)?),
                s.as_deref().map(status).transpose()?,
            ))
        })
        .collect()
}

/// Those of `ids` that have not succeeded (or no longer exist), in the order of `ids`: what
/// a held deployment still waits for.
pub async fn unmet(db: &impl GenericClient, ids: &[DeploymentId]) -> DbResult<Vec<DeploymentId>> {
    let raw: Vec<Uuid> = ids.iter().map(|id| id.0).collect();
    let rows = db
        .query_typed(
            "select id from deployments where id = any($1) and status = 'succeeded'",
            &[(&raw, Type::UUID_ARRAY)],
        )
        .await?;
    let succeeded = rows
        .iter()
        .map(|r| Ok(DeploymentId(r.try_get(0)?)))
        .collect::<DbResult<Vec<_>>>()?;
    Ok(ids
        .iter()
        .filter(|id| !succeeded.contains(id))
        .copied()
        .collect())
}

/// Releases held deployments whose dependencies all succeeded: queued from `now`.
pub async fn release(
    db: &impl GenericClient,
    ids: &[DeploymentId],
    now: DateTime<Utc>,
) -> DbResult<()> {
    if ids.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = ids.iter().map(|id| id.0).collect();
    db.execute_typed(
        "update deployments set held = false, enqueued_at = $2, updated_at = $2 \
         where id = any($1) and status = 'queued' and held",
        &[(&ids, Type::UUID_ARRAY), (&now, Type::TIMESTAMPTZ)],
    )
    .await?;
    Ok(())
}

/// Whether held deployments of other clusters name deployments of `cluster` (which must
/// then not be deleted).
pub async fn awaited_elsewhere(db: &impl GenericClient, cluster: ClusterId) -> DbResult<bool> {
    let row = db
        .query_typed_one(
            "select exists (select 1 from deployments h \
               cross join lateral unnest(h.depends_on) as dep(id) \
               join deployments d on d.id = dep.id \
             where h.held and h.cluster_id <> $1 and d.cluster_id = $1)",
            &[(&cluster.0, Type::UUID)],
        )
        .await?;
    Ok(row.try_get(0)?)
}

/// The clusters other than `cluster` holding deployments that wait for some of `ended`:
/// their objects must look again once this transaction commits.
pub async fn waiting_clusters(
    db: &impl GenericClient,
    ended: &[DeploymentId],
    cluster: ClusterId,
) -> DbResult<Vec<ClusterId>> {
    if ended.is_empty() {
        return Ok(vec![]);
    }
    let ids: Vec<Uuid> = ended.iter().map(|id| id.0).collect();
    let rows = db
        .query_typed(
            "select distinct cluster_id from deployments \
             where held and depends_on && $1 and cluster_id <> $2",
            &[(&ids, Type::UUID_ARRAY), (&cluster.0, Type::UUID)],
        )
        .await?;
    rows.iter().map(|r| Ok(ClusterId(r.try_get(0)?))).collect()
}
