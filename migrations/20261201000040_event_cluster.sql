-- migrate:up
-- Each event names its deployment's cluster, so that a cluster's changes can be read in
-- commit order (its watch stream resumes from them): the cluster's object is the only writer
-- of its deployments' events, holding the cluster's row lock, so within a cluster `id`
-- increases in commit order.
alter table deployment_events add column cluster_id uuid;
update deployment_events e set cluster_id = d.cluster_id from deployments d where d.id = e.deployment_id;
alter table deployment_events alter column cluster_id set not null;
create index deployment_events_cluster_idx on deployment_events (cluster_id, id);

-- migrate:down
drop index deployment_events_cluster_idx;
alter table deployment_events drop column cluster_id;
