-- migrate:up
-- What a deployment depends on (`depends_on`, Slurm's afterok): earlier deployments of its
-- organization, in any of its clusters, in the order given, set at its submission and never
-- changed (so no cycle can form). An array rather than a table of pairs: it is read with the
-- row, and the one reverse question, which held deployments wait for these, has its own
-- index. Not foreign keys: a dependency's cluster may be deleted after it ended; a held
-- deployment whose dependency is gone is cancelled.
alter table deployments add column depends_on uuid[] not null default '{}';
-- Queued but not yet a candidate for admission, until every dependency has succeeded (then
-- `released`, with `enqueued_at` set to that moment). Stored rather than derived from the
-- dependencies' statuses, so that a release missed by a lost wake-up is still a release.
alter table deployments add column held boolean not null default false;
-- Which clusters must be woken when these deployments end: only held rows, which are few.
create index deployments_held_idx on deployments using gin (depends_on) where held;

-- migrate:down
drop index deployments_held_idx;
alter table deployments drop column held;
alter table deployments drop column depends_on;
