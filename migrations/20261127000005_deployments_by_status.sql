-- migrate:up
-- Lists by status page in id order (GET …/deployments?status=running): without this index
-- the planner walks the primary key and filters, ~20,000 rows for 27 running ones.
-- It also serves the live reads the partial index served.
create index deployments_cluster_status_idx on deployments (cluster_id, status, id);
drop index deployments_live_idx;

-- migrate:down
create index deployments_live_idx on deployments (cluster_id, status)
    where status in ('queued', 'running');
drop index deployments_cluster_status_idx;
