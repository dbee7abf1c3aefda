//! The machine side of `berth agent`: drivers that run deployments here, in Docker
//! ([`docker::DockerDriver`]) or as plain processes ([`exec::ExecDriver`]), behind one
//! trait ([`driver::Driver`]), the connection to the server ([`connection`]) that keeps
//! the agent known to its cluster, and [`orders`], which carries the server's orders out on
//! the driver and keeps the exits until the server has them.

pub mod backoff;
pub mod connection;
pub mod docker;
pub mod driver;
pub mod exec;
pub mod orders;

pub use driver::{DeploymentId, Driver, DriverError, Exit, ExitReceiver, RunSpec, OUTPUT_LIMIT};
