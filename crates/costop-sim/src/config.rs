//! What one simulation run is asked to do.

use crate::strategy::Strategy;
use crate::timings::Timings;
use costop_core::Policy;
use serde::{Deserialize, Serialize};

/// How one pool reclaim in a trace (which watches one instance per pool)
/// maps onto a cluster with many nodes in that pool.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PoolHit {
    /// Every node of the pool at once: the worst case a trace can show.
    All,
    /// One node of the pool.
    One,
    /// This share of the pool's nodes (0–1], at least one.
    Share(f64),
}

impl PoolHit {
    /// How the output describes the model.
    pub fn describe(&self) -> String {
        match self {
            PoolHit::All => "a pool reclaim hits every node of that pool at once".into(),
            PoolHit::One => "a pool reclaim hits one node of that pool".into(),
            PoolHit::Share(s) => format!("a pool reclaim hits {:.0}% of that pool's nodes", s * 100.0),
        }
    }
}

impl std::str::FromStr for PoolHit {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "all" => Ok(PoolHit::All),
            "one" => Ok(PoolHit::One),
            other => match other.parse::<f64>() {
                Ok(v) if v > 0.0 && v <= 1.0 => Ok(PoolHit::Share(v)),
                _ => Err(format!("pool hit `{other}` is not `all`, `one` or a share in (0, 1]")),
            },
        }
    }
}

/// The cluster and run parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct SimConfig {
    /// Seed of every random draw.
    pub seed: u64,
    /// Days to simulate (capped at the market's length).
    pub days: f64,
    /// Worker nodes the workloads need.
    pub nodes: u32,
    /// Pods per worker node (the workloads are sized to this).
    pub pods_per_node: u32,
    /// Requests per second each pod serves at design load.
    pub requests_per_pod_s: f64,
    /// Each pod can take this multiple of its design load before it fails
    /// requests (1.25: a common 80 % autoscaling target).
    pub pod_capacity_factor: f64,
    /// How a pool reclaim maps onto the cluster.
    pub pool_hit: PoolHit,
    /// Chance that a rebalance recommendation precedes a reclaim.
    pub rebalance_probability: f64,
    /// How long before the reclaim the recommendation comes, seconds (10 min:
    /// the Karpenter design doc says "generally … 10-20 minutes before").
    pub rebalance_lead_s: f64,
    /// World durations.
    pub timings: Timings,
    /// costop's policy.
    pub policy: Policy,
    /// Strategies to run.
    pub strategies: Vec<Strategy>,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            seed: 1,
            days: 7.0,
            nodes: 20,
            pods_per_node: 20,
            requests_per_pod_s: 10.0,
            pod_capacity_factor: 1.25,
            pool_hit: PoolHit::All,
            rebalance_probability: 0.5,
            rebalance_lead_s: 600.0,
            timings: Timings::default(),
            policy: Policy::default(),
            strategies: Strategy::ALL.to_vec(),
        }
    }
}
