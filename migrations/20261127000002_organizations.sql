-- migrate:up
create table organizations (
    id         uuid primary key,
    name       text not null,
    created_at timestamptz not null default now()
);

-- Roles are ordered viewer < developer < admin; the check keeps the column to the enum.
create table memberships (
    org_id    uuid not null references organizations (id) on delete cascade,
    user_id   uuid not null references users (id) on delete cascade,
    role      text not null check (role in ('viewer', 'developer', 'admin')),
    joined_at timestamptz not null default now(),
    primary key (org_id, user_id)
);
create index memberships_user_idx on memberships (user_id);

-- migrate:down
drop table memberships;
drop table organizations;
