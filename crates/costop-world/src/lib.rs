//! The rules of the cluster world, as pure functions over small typed
//! inputs: one implementation each, which `costop emu` (real time, JSON
//! objects) and `costop sim` (virtual time, typed structs) both call.
//!
//! - [`scheduler`]: which node a pod goes to, and which lower-priority pods
//!   to preempt for it (kube-scheduler's filters, default scoring and
//!   default preemption);
//! - [`kubelet`]: when a bound pod turns Ready, and how long a deleted one
//!   takes to go;
//! - [`replicas`]: how many pods a Deployment or StatefulSet controller
//!   creates or deletes, and which pods go first on scale-down;
//! - [`budget`]: a PodDisruptionBudget's status (disruptions allowed) and
//!   the API server's eviction check;
//! - [`credits`]: a burstable node's CPU credits (EC2's rules): what it
//!   serves at a demand, and the surplus it is charged.
//!
//! Each rule names the Kubernetes (or EC2) source it follows. Durations come from
//! `costop-facts`; nothing here depends on the simulator, the emulator or
//! a clock.

pub mod budget;
pub mod credits;
pub mod kubelet;
pub mod replicas;
pub mod scheduler;
