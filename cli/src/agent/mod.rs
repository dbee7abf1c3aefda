//! The machine side of `berth agent`: drivers that run deployments here, in Docker
//! ([`docker::DockerDriver`]) or as plain processes ([`exec::ExecDriver`]), behind one
//! trait ([`driver::Driver`]). The connection to the server maps its orders onto them.

pub mod docker;
pub mod driver;
pub mod exec;

pub use driver::{DeploymentId, Driver, DriverError, Exit, ExitReceiver, RunSpec, OUTPUT_LIMIT};
