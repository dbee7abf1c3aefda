//! The parts of the `berth` tool that its integration tests reach: the agent's drivers.

pub mod agent;
