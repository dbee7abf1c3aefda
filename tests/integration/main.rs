//! Integration tests: the whole HTTP app, natively, against a real PostgreSQL.

mod accounts;
mod errors;
mod openapi;
mod orgs;
mod scheduling;
mod support;
