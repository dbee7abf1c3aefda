//! Cluster counters (`cluster_counters`): what each cluster's batches decided since it was
//! created, kept in PostgreSQL so that they outlive its object. Only the cluster's batch
//! writes its row, holding the cluster's lock.

use tokio_postgres::types::Type;
use tokio_postgres::GenericClient;

use super::clusters::resources;
use super::DbResult;
use crate::domain::counters::Counters;
use crate::domain::ids::{ClusterId, OrgId};
use crate::domain::resources::Resources;

/// Adds one batch's figures to its cluster's counters, in one statement; nothing when the
/// batch decided nothing that counts.
pub async fn add(db: &impl GenericClient, cluster: ClusterId, add: &Counters) -> DbResult<()> {
    if add.is_zero() {
        return Ok(());
    }
    let buckets = add.wait_buckets.to_vec();
    db.execute_typed(
        "insert into cluster_counters as k \
           (cluster_id, admissions, preemptions, expirations, lost, wait_buckets, wait_sum_micros) \
         values ($1, $2, $3, $4, $5, $6, $7) \
         on conflict (cluster_id) do update set \
           admissions = k.admissions + excluded.admissions, \
           preemptions = k.preemptions + excluded.preemptions, \
           expirations = k.expirations + excluded.expirations, \
           lost = k.lost + excluded.lost, \
           wait_buckets = array(select coalesce(a, 0) + coalesce(b, 0) \
             from unnest(k.wait_buckets, excluded.wait_buckets) with ordinality as w(a, b, n) \
             order by n), \
           wait_sum_micros = k.wait_sum_micros + excluded.wait_sum_micros",
        &[
            (&cluster.0, Type::UUID),
            (&add.admissions, Type::INT8),
            (&add.preemptions, Type::INT8),
            (&add.expirations, Type::INT8),
            (&add.lost, Type::INT8),
            (&buckets, Type::INT8_ARRAY),
            (&add.wait_sum_micros, Type::INT8),
        ],
    )
    .await?;
    Ok(())
}

/// A cluster as its metrics name it, with its capacity and counters.
#[derive(Debug, Clone, PartialEq)]
pub struct Counted {
    pub id: ClusterId,
    pub name: String,
    pub capacity: Resources,
    pub counters: Counters,
}

/// Every cluster of an organization with its capacity and counters (zero where it has
/// decided nothing yet), by name.
pub async fn of_org(db: &impl GenericClient, org: OrgId) -> DbResult<Vec<Counted>> {
    let rows = db
        .query_typed(
            "select c.id, c.name, c.cpu_millis, c.memory_mib, c.gpus, \
               coalesce(k.admissions, 0) as admissions, coalesce(k.preemptions, 0) as preemptions, \
               coalesce(k.expirations, 0) as expirations, coalesce(k.lost, 0) as lost, \
               coalesce(k.wait_buckets, '{}') as wait_buckets, \
               coalesce(k.wait_sum_micros, 0) as wait_sum_micros \
             from clusters c left join cluster_counters k on k.cluster_id = c.id \
             where c.org_id = $1 order by c.name, c.id",
            &[(&org.0, Type::UUID)],
        )
        .await?;
    rows.iter()
        .map(|r| {
            let buckets: Vec<i64> = r.try_get("wait_buckets")?;
            Ok(Counted {
                id: ClusterId(r.try_get("id")?),
                name: r.try_get("name")?,
                capacity: resources(r)?,
                counters: Counters {
                    admissions: r.try_get("admissions")?,
                    preemptions: r.try_get("preemptions")?,
                    expirations: r.try_get("expirations")?,
                    lost: r.try_get("lost")?,
                    wait_buckets: Counters::buckets_from(&buckets),
                    wait_sum_micros: r.try_get("wait_sum_micros")?,
                },
            })
        })
        .collect()
}
