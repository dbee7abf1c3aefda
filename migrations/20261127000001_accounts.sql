-- migrate:up
create table users (
    id            uuid primary key,
    email         text not null,
    name          text not null,
    password_hash text not null,
    created_at    timestamptz not null default now()
);
-- e-mails are unique whatever their letter case; the address is kept as typed.
create unique index users_email_lower_key on users (lower(email));

-- Refresh tokens are stored only as a SHA-256 hash. A family is one login; every refresh
-- spends one token and adds the next to the same family, so reuse of a spent token can
-- revoke the family at once.
create table refresh_tokens (
    id          uuid primary key,
    family_id   uuid not null,
    user_id     uuid not null references users (id) on delete cascade,
    token_hash  bytea not null unique,
    expires_at  timestamptz not null,
    used_at     timestamptz,
    revoked_at  timestamptz,
    created_at  timestamptz not null default now()
);
create index refresh_tokens_family_idx on refresh_tokens (family_id);
create index refresh_tokens_expires_idx on refresh_tokens (expires_at);

-- migrate:down
drop table refresh_tokens;
drop table users;
