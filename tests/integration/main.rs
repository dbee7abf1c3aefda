//! Integration tests: the whole HTTP app, natively, against a real PostgreSQL.

mod accounts;
mod agent_tokens;
mod agents;
#[path = "../common/mod.rs"]
mod common;
mod counters;
mod dependencies;
mod errors;
mod logs;
mod openapi;
mod orgs;
mod placement;
mod scheduling;
mod support;
mod watch;
