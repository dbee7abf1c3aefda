-- migrate:up
-- Invite codes are stored only as a SHA-256 hash; the code is shown once at creation.
-- `uses <= max_uses` is enforced here as well as by the conditional update that consumes a
-- use, so no race can ever over-use a code.
create table invites (
    id          uuid primary key,
    org_id      uuid not null references organizations (id) on delete cascade,
    code_hash   bytea not null unique,
    role        text not null check (role in ('viewer', 'developer', 'admin')),
    created_by  uuid references users (id) on delete set null,
    expires_at  timestamptz not null,
    max_uses    integer not null check (max_uses between 1 and 1000),
    uses        integer not null default 0 check (uses between 0 and max_uses),
    revoked_at  timestamptz,
    created_at  timestamptz not null default now()
);
create index invites_org_idx on invites (org_id, id);

-- API keys act inside one organization with a fixed role. `prefix` (the first characters
-- of the key) is kept so a leaked key can be matched to its row without the secret.
create table api_keys (
    id            uuid primary key,
    org_id        uuid not null references organizations (id) on delete cascade,
    name          text not null,
    role          text not null check (role in ('viewer', 'developer', 'admin')),
    key_hash      bytea not null unique,
    prefix        text not null,
    created_by    uuid references users (id) on delete set null,
    created_at    timestamptz not null default now(),
    last_used_at  timestamptz,
    revoked_at    timestamptz
);
create index api_keys_org_idx on api_keys (org_id, id);

-- migrate:down
drop table api_keys;
drop table invites;
