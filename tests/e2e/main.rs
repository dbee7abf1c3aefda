//! End-to-end tests: the real Worker in workerd (`wrangler dev --test-scheduled`), its real
//! Durable Objects and cron trigger, on a real PostgreSQL. `make test` starts all of it and
//! passes the addresses in; run alone, these tests fail with a message saying so.

mod accounts;
mod agent_cli;
mod agent_run;
mod agents;
mod cli;
#[path = "../common/mod.rs"]
mod common;
mod dependencies;
mod dry_run;
mod json_numbers;
mod metrics;
mod ops;
mod rate_limit;
mod roles;
mod scheduling;
mod stall;
mod support;
mod throttling;
mod watch;
