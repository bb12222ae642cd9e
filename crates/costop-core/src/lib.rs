//! The pure decision core of costop.
//!
//! Everything here is a function of (cluster view, notice, policy, now): no IO,
//! no clock, no randomness. The same code decides in production, in tests and
//! in the simulator. See `DESIGN.md` for where it sits in the data flow.

pub mod burstable;
pub mod effects;
pub mod headroom;
pub mod listed;
pub mod model;
pub mod move_back;
pub mod name;
pub mod notice;
pub mod plan;
pub mod policy;
pub mod pools;
pub mod ports;
pub mod quantity;
pub mod respond;
pub mod tiers;
pub mod time;
pub mod warm_pool;

pub use model::{
    CapacityType, ClusterView, Name, NodeView, PodView, PoolId, PoolView, Resources, Taint, VolumeView,
    WorkloadView,
};
pub use notice::{Notice, NoticeKey, NoticeKind, NoticeSource};
pub use plan::{Plan, Step};
pub use policy::{Policy, PolicyError, SpareSizing, StandbyMode};
pub use respond::{respond, PlanError};
pub use time::Millis;
