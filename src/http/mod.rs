//! The HTTP API: one router with routes and OpenAPI registered together, handlers per
//! resource, extractors, and the one error type that becomes problem+json.

mod accounts;
mod api_keys;
mod clusters;
mod deployments;
pub mod error;
pub mod extract;
pub mod guard;
mod invites;
mod ops;
mod orgs;
pub mod pagination;
pub mod router;
pub mod state;

pub use error::ApiError;
pub use router::{app, openapi};
pub use state::{AppState, Platform};
