//! The scheduling rules, all in this folder, pure (no I/O, no clock: time is passed in):
//!
//! * [`model`]: what the scheduler reasons about (policies, running and queued deployments,
//!   decisions, wait reasons) and the arithmetic of aging and fitting;
//! * [`order`]: the queue order and the preemption order, each defined once;
//! * [`reference`]: the reference scheduler over a whole [`ClusterState`] (`schedule`,
//!   `queue_view`), the specification, with its property tests;
//! * [`book`]: the incremental [`Book`] the engine keeps per cluster, which decides exactly
//!   what the reference decides (its differential property test checks that);
//! * [`lifecycle`]: the transitions the decisions drive (admission with its deadline,
//!   preemption counted, expiry, endings) and the net changes of a scheduling call;
//! * [`placement`]: which connected agent runs an admitted deployment (best fit, never more
//!   than a machine has);
//! * [`plan`]: what a submission would meet now (a dry run), by the book's own pass on a copy;
//! * [`dependencies`]: what a submission's `depends_on` allows, and what a held deployment's
//!   dependencies decide for it (wait, join the queue, or be cancelled).
//!
//! A new rule goes in `reference` (with a property test), in `book` (the differential test
//! fails until it matches), and, if it changes what happens to a deployment, in `lifecycle`.

pub mod book;
pub mod dependencies;
pub mod lifecycle;
pub mod model;
pub mod order;
pub mod placement;
pub mod plan;
pub mod reference;
mod wide;

pub use book::{Book, BookEntry, Totals};
pub use model::*;
pub use reference::{queue_order, queue_view, schedule};
