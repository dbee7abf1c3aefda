-- migrate:up
-- What each cluster's batches decided since the cluster was created, for its Prometheus
-- metrics (GET /v1/orgs/{org_id}/metrics): admissions, preemptions, expirations and lost
-- deployments, and the queue waits of the admissions as a histogram. Each batch that decides
-- something adds to its cluster's row in the same transaction (one upsert, db::counters::add);
-- a cluster without a row has decided nothing yet. `wait_buckets` holds one count per bucket,
-- not cumulative: the first counts the waits of at most 0.1 s, the next those above it up to
-- 0.5 s, then 1, 5, 15, 60, 300, 900 and 3600 s (domain::counters::WAIT_BOUNDS_MICROS), and
-- the last those above an hour.
create table cluster_counters (
    cluster_id       uuid primary key references clusters (id) on delete cascade,
    admissions       bigint not null default 0,
    preemptions      bigint not null default 0,
    expirations      bigint not null default 0,
    lost             bigint not null default 0,
    wait_buckets     bigint[] not null default '{}',
    wait_sum_micros  bigint not null default 0
);

-- The backfill: the same figures from the history every cluster already has. Each
-- `admitted`, `preempted`, `expired` and `lost` event is one count, and an admission's wait is
-- its event's time minus its deployment's `enqueued_at` (which a deployment keeps from its
-- submission on, through preemptions and lost agents), as the batches count them from now on.
-- (tests/integration/counters.rs checks that this statement and the batches agree.)
with waits as (
    select e.cluster_id,
           greatest(0, (extract(epoch from e.at - d.enqueued_at) * 1000000)::bigint) as micros
    from deployment_events e
    join deployments d on d.id = e.deployment_id
    where e.kind = 'admitted'
), bucketed as (
    select w.cluster_id, w.micros,
           (select count(*)
            from unnest('{100000,500000,1000000,5000000,15000000,60000000,300000000,900000000,3600000000}'::bigint[]) as b(bound)
            where b.bound < w.micros) as bucket
    from waits w
), per_bucket as (
    select c.cluster_id, g.bucket, count(b.micros) as n, coalesce(sum(b.micros), 0) as micros
    from (select distinct cluster_id from bucketed) c
    cross join generate_series(0, 9) as g(bucket)
    left join bucketed b on b.cluster_id = c.cluster_id and b.bucket = g.bucket
    group by c.cluster_id, g.bucket
), histograms as (
    select cluster_id, array_agg(n order by bucket) as buckets, sum(micros)::bigint as sum_micros
    from per_bucket
    group by cluster_id
), counts as (
    select cluster_id,
           count(*) filter (where kind = 'admitted') as admissions,
           count(*) filter (where kind = 'preempted') as preemptions,
           count(*) filter (where kind = 'expired') as expirations,
           count(*) filter (where kind = 'lost') as lost
    from deployment_events
    where kind in ('admitted', 'preempted', 'expired', 'lost')
    group by cluster_id
)
insert into cluster_counters
    (cluster_id, admissions, preemptions, expirations, lost, wait_buckets, wait_sum_micros)
select k.cluster_id, k.admissions, k.preemptions, k.expirations, k.lost,
       coalesce(h.buckets, '{}'), coalesce(h.sum_micros, 0)
from counts k
join clusters c on c.id = k.cluster_id
left join histograms h on h.cluster_id = k.cluster_id;

-- migrate:down
drop table cluster_counters;
