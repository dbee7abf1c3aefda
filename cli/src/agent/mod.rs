//! The machine side of `berth agent`: drivers that run deployments here, in Docker
//! ([`docker::DockerDriver`]) or as plain processes ([`exec::ExecDriver`]), behind one
//! trait ([`driver::Driver`]), and the connection to the server ([`connection`]) that keeps
//! the agent known to its cluster and maps the server's orders onto the driver.

pub mod backoff;
pub mod connection;
pub mod docker;
pub mod driver;
pub mod exec;
pub mod orders;

pub use driver::{DeploymentId, Driver, DriverError, Exit, ExitReceiver, RunSpec, OUTPUT_LIMIT};
