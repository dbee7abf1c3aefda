-- migrate:up
-- The machines that have connected as a cluster's agents. A machine is known by its name in
-- the cluster: one that reconnects (after a restart, with a new token) is the same agent.
-- `status` is what its object last saw: `connected` from its hello until its socket closed.
create table agents (
    id            uuid primary key,
    cluster_id    uuid not null references clusters (id) on delete cascade,
    token_id      uuid references agent_tokens (id) on delete set null,
    name          text not null,
    version       text not null,
    cpu_millis    bigint not null,
    memory_mib    bigint not null,
    gpus          bigint not null,
    status        text not null check (status in ('connected', 'disconnected')),
    connected_at  timestamptz not null,
    last_seen_at  timestamptz not null,
    created_at    timestamptz not null,
    unique (cluster_id, name)
);
create index agents_cluster_idx on agents (cluster_id, id);

-- migrate:down
drop table agents;
