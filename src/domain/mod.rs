//! Pure domain types and rules: no I/O, no clock (time is passed in), no `worker` import.

pub mod book;
pub mod deployment;
pub mod ids;
pub mod policy;
pub mod resources;
pub mod scheduler;
pub mod throttle;
pub mod treap;
pub mod validation;
