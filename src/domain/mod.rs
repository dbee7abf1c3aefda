//! Pure domain types and rules: no I/O, no clock (time is passed in), no `worker` import.

pub mod agent;
pub mod counters;
pub mod deployment;
pub mod ids;
pub mod policy;
pub mod resources;
pub mod scheduling;
pub mod throttle;
pub mod validation;
