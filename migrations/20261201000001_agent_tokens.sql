-- migrate:up
-- An agent token lets one cluster's agent connect as that cluster's agent, and nothing else.
-- Stored only as a SHA-256 hash like an API key; `prefix` (its first characters) is kept so
-- a leaked token can be matched to its row without the secret. A token goes with its cluster.
create table agent_tokens (
    id            uuid primary key,
    cluster_id    uuid not null references clusters (id) on delete cascade,
    name          text not null,
    token_hash    bytea not null unique,
    prefix        text not null,
    created_by    uuid references users (id) on delete set null,
    created_at    timestamptz not null default now(),
    last_used_at  timestamptz,
    revoked_at    timestamptz
);
create index agent_tokens_cluster_idx on agent_tokens (cluster_id, id);

-- migrate:down
drop table agent_tokens;
