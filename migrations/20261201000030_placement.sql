-- migrate:up
-- Placement: which agent runs an admitted deployment. `placement` is where its container is:
-- `assigned` (the run order is sent), `started` (the agent said so), `stopping` (a stop order
-- is sent and the exit not yet reported; the container still occupies its agent until then
-- or until `stop_until`). Null when no container is expected: not placed yet, or gone.
-- `agent_id`/`agent_name` stay set after the deployment ends (an agent's name never changes
-- for its id), `exit_code` is what the agent reported.
alter table deployments
    add column agent_id    uuid references agents (id) on delete set null,
    add column agent_name  text,
    add column placement   text check (placement in ('assigned', 'started', 'stopping')),
    add column stop_until  timestamptz,
    add column started_at  timestamptz,
    add column exit_code   integer;
create index deployments_placed_idx on deployments (cluster_id) where placement is not null;

-- How long an agent may stay away (disconnected, or silent) before what it ran is lost.
alter table clusters
    add column agent_grace_seconds integer not null default 60
        check (agent_grace_seconds between 5 and 3600);

-- migrate:down
alter table clusters drop column agent_grace_seconds;
drop index deployments_placed_idx;
alter table deployments drop column agent_id, drop column agent_name, drop column placement,
    drop column stop_until, drop column started_at, drop column exit_code;
