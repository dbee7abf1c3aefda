-- migrate:up
-- Lists by status page in id order (GET …/deployments?status=running): without this index
-- the planner walks the primary key and filters, ~20,000 rows for 27 running ones.
create index deployments_cluster_status_idx on deployments (cluster_id, status, id);

-- migrate:down
drop index deployments_cluster_status_idx;
