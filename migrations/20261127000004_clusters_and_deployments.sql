-- migrate:up
-- Capacity is stored, allocation never is: what a cluster has allocated is always the sum
-- over its running deployments, so it cannot drift or leak.
create table clusters (
    id          uuid primary key,
    org_id      uuid not null references organizations (id) on delete cascade,
    name        text not null,
    cpu_millis  bigint not null check (cpu_millis >= 0 and cpu_millis < 1099511627776),
    memory_mib  bigint not null check (memory_mib >= 0 and memory_mib < 1099511627776),
    gpus        bigint not null check (gpus >= 0 and gpus < 1099511627776),
    queueing    text not null default 'best_effort' check (queueing in ('best_effort', 'strict')),
    preemption  boolean not null default false,
    created_at  timestamptz not null default now(),
    updated_at  timestamptz not null default now(),
    constraint clusters_org_name_key unique (org_id, name)
);

create table deployments (
    id                   uuid primary key,
    cluster_id           uuid not null references clusters (id) on delete cascade,
    org_id               uuid not null references organizations (id) on delete cascade,
    name                 text not null,
    image                text not null,
    cpu_millis           bigint not null check (cpu_millis >= 0 and cpu_millis < 1099511627776),
    memory_mib           bigint not null check (memory_mib >= 0 and memory_mib < 1099511627776),
    gpus                 bigint not null check (gpus >= 0 and gpus < 1099511627776),
    priority             integer not null check (priority between 0 and 1000),
    max_runtime_seconds  integer check (max_runtime_seconds > 0),
    status               text not null check (status in
                           ('queued', 'running', 'succeeded', 'failed', 'stopped', 'cancelled')),
    -- When it (re)entered the queue; FIFO order and aging are measured from here.
    enqueued_at          timestamptz not null,
    admitted_at          timestamptz,
    -- admitted_at + max_runtime_seconds, so the sweep finds overdue work by index.
    deadline_at          timestamptz,
    finished_at          timestamptz,
    preemptions          integer not null default 0,
    preempted_by         uuid,
    message              text,
    idempotency_key      text,
    created_by           uuid references users (id) on delete set null,
    created_at           timestamptz not null default now(),
    updated_at           timestamptz not null default now(),
    constraint deployments_idempotency_key unique (cluster_id, idempotency_key)
);
-- The scheduler reads only the live part of a cluster.
create index deployments_live_idx on deployments (cluster_id, status)
    where status in ('queued', 'running');
create index deployments_cluster_idx on deployments (cluster_id, id);
create index deployments_deadline_idx on deployments (deadline_at) where status = 'running';

create table deployment_events (
    id             bigint generated always as identity primary key,
    deployment_id  uuid not null references deployments (id) on delete cascade,
    at             timestamptz not null,
    kind           text not null,
    reason         text,
    -- The deployment that caused it (the preemptor of a `preempted` event).
    by_deployment  uuid
);
create index deployment_events_deployment_idx on deployment_events (deployment_id, id);

-- migrate:down
drop table deployment_events;
drop table deployments;
drop table clusters;
