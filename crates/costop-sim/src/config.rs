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
    /// requests. 1.1: a horizontal autoscaler targeting ~90 % of what a pod
    /// can serve leaves about this much; no more is given for free.
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
    /// How the world misbehaves (late notices, failed launches, …).
    pub world: WorldSettings,
    /// Run the server's warm-pool keeper for costop (as `keep_warm_pool`).
    pub run_warm_pool_keeper: bool,
    /// The executor's wait rules (the server's defaults); the
    /// `delete_doomed_before` each strategy runs with is its own
    /// ([`Strategy::delete_doomed_before`]).
    pub executor_waits: costop_executor::Waits,
}

/// How the world deviates from the happy path, at rates with documented defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorldSettings {
    /// After a target is deregistered (or its pod evicted), the load
    /// balancer keeps routing new requests to it this long. Estimate: 3 s
    /// (ALB deregistration propagation; kube-proxy endpoint updates).
    pub endpoint_removal_s: f64,
    /// Chance an on-demand launch or a standby start fails for lack of
    /// capacity (InsufficientInstanceCapacity). Estimate: 2 %.
    pub on_demand_ice_rate: f64,
    /// Chance a Spot interruption notice never arrives before the reclaim
    /// (AWS: "it is possible that your Spot Instance is terminated before
    /// the warning can be made available"). Estimate: 2 %.
    pub missed_notice_rate: f64,
    /// Chance a notice arrives late, and by up to how many seconds
    /// (uniform). Estimate: 5 %, up to 60 s.
    pub late_notice_rate: f64,
    /// See `late_notice_rate`.
    pub late_notice_max_s: f64,
    /// Rebalance recommendations not followed by a reclaim, per pool per
    /// day. Estimate: 0.2 (AWS: a recommendation "does not mean" an interruption follows).
    pub false_rebalance_per_pool_day: f64,
    /// Share of a node's allocatable the workloads request. Realistic
    /// clusters run at 85–90 %; default 0.85.
    pub utilisation: f64,
}

impl Default for WorldSettings {
    fn default() -> Self {
        Self {
            endpoint_removal_s: 3.0,
            on_demand_ice_rate: 0.02,
            missed_notice_rate: 0.02,
            late_notice_rate: 0.05,
            late_notice_max_s: 60.0,
            false_rebalance_per_pool_day: 0.2,
            utilisation: 0.85,
        }
    }
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            seed: 1,
            days: 7.0,
            nodes: 20,
            pods_per_node: 20,
            requests_per_pod_s: 10.0,
            pod_capacity_factor: 1.1,
            pool_hit: PoolHit::All,
            rebalance_probability: 0.5,
            rebalance_lead_s: 600.0,
            timings: Timings::default(),
            policy: Policy::default(),
            strategies: Strategy::DEFAULT.to_vec(),
            world: WorldSettings::default(),
            run_warm_pool_keeper: true,
            executor_waits: costop_executor::Waits::default(),
        }
    }
}
