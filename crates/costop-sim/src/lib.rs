//! The simulated world: a cluster, its cloud and a Spot market, in virtual time.

pub mod catalog;
pub mod market;
pub mod rng;
pub mod trace;
