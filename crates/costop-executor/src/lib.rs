//! The response executor: from a plan to the world, step by step.
//!
//! It is generic over the ports (`costop_core::ports`) and needs no async
//! runtime of its own, so the server runs it on tokio against Kubernetes,
//! AWS and Redis, and the simulator runs the very same code in virtual time
//! against its world. A figure the simulator prints for costop is this
//! code's behaviour.

mod evictions;
pub mod executor;
pub mod observe;
pub mod open;
pub mod warm_pool;

pub use executor::{event_reason, would_do, Executor, NoMoveMemo, Waits, MOVE_ROUND};
pub use observe::{NoObserver, ResponseObserver};
pub use open::OpenResponses;
