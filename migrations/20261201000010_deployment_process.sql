-- migrate:up
-- The process a deployment's container runs beyond its image (both optional): `command`, a
-- JSON array of strings replacing the image's command, and `env`, a JSON object of strings.
-- They are read only where they are shown or handed to an agent, never by the scheduler.
alter table deployments add column command jsonb, add column env jsonb;

-- migrate:down
alter table deployments drop column command, drop column env;
