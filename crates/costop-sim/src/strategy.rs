//! The interruption-handling strategies compared in one world.
//!
//! The baselines follow their projects' documented behaviour:
//! - `on-demand`: every node on-demand; never reclaimed. The cost baseline.
//! - `spot-naive`: Spot nodes, no handling. A reclaimed node's pods die with
//!   it; the load balancer routes to it until health checks fail; an Auto
//!   Scaling group launches a replacement after the termination.
//! - `drain-on-notice`: modeled on aws-node-termination-handler in IMDS mode:
//!   it polls instance metadata every 2 s (hard-coded in
//!   `cmd/node-termination-handler.go`), then cordons and drains through the
//!   eviction API (budgets respected, the pod's own grace period). It never
//!   launches capacity; the Auto Scaling group replaces the node after it is
//!   gone; load balancer exclusion is off by default.
//! - `replace-on-notice`: modeled on Karpenter's interruption handling: the
//!   warning arrives through EventBridge → SQS; Karpenter taints and drains
//!   the node and, in parallel, launches a replacement, marking the
//!   interrupted offering (type × zone) unavailable for 3 minutes
//!   (`UnavailableOfferingsTTL`). It does not act on rebalance recommendations.
//! - `costop`: the plan from `costop_core::respond`, run step by step.
//! - `costop-burstable`: `costop` with its spare capacity sized by expected
//!   cost and the burstable tier offered (`spare_sizing = "cost"`,
//!   `burstable_tier = true`, the rest of the policy as configured): the
//!   comparison of costop with and without burstable nodes. Not run unless
//!   named (`--strategies`).

use serde::Serialize;

/// A strategy's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    /// All on-demand.
    OnDemand,
    /// Spot without handling.
    SpotNaive,
    /// Cordon and drain on notice (NTH-like).
    DrainOnNotice,
    /// Drain and launch a replacement on notice (Karpenter-like).
    ReplaceOnNotice,
    /// costop's full response.
    Costop,
    /// costop with cost-sized spare capacity, burstable nodes among its tiers.
    CostopBurstable,
    /// Knows the whole trace: the cost floor and the 100 %-served line.
    Oracle,
}

impl Strategy {
    /// All strategies, in output order.
    pub const ALL: [Strategy; 7] = [
        Strategy::OnDemand,
        Strategy::SpotNaive,
        Strategy::DrainOnNotice,
        Strategy::ReplaceOnNotice,
        Strategy::Costop,
        Strategy::CostopBurstable,
        Strategy::Oracle,
    ];

    /// The strategies run when none are named: all but `costop-burstable`.
    pub const DEFAULT: [Strategy; 6] = [
        Strategy::OnDemand,
        Strategy::SpotNaive,
        Strategy::DrainOnNotice,
        Strategy::ReplaceOnNotice,
        Strategy::Costop,
        Strategy::Oracle,
    ];

    /// The name used on the command line and in output.
    pub fn name(self) -> &'static str {
        match self {
            Strategy::OnDemand => "on-demand",
            Strategy::SpotNaive => "spot-naive",
            Strategy::DrainOnNotice => "drain-on-notice",
            Strategy::ReplaceOnNotice => "replace-on-notice",
            Strategy::Costop => "costop",
            Strategy::CostopBurstable => "costop-burstable",
            Strategy::Oracle => "oracle",
        }
    }

    /// Whether it is costop (the server's planner and executor), with or
    /// without the burstable tier.
    pub fn is_costop(self) -> bool {
        matches!(self, Strategy::Costop | Strategy::CostopBurstable)
    }

    /// How long before a reclaim the pods a budget still keeps from
    /// eviction are deleted (ms; 0: never, they go with the node).
    /// - costop: its policy's `delete_doomed_before_deadline_s`.
    /// - replace-on-notice: Karpenter's NodePool `terminationGracePeriod`
    ///   set to the 2-minute notice, its best documented setting for this
    ///   (karpenter.sh docs, "NodePools › terminationGracePeriod": once it
    ///   runs out pods are deleted whatever their budgets, each
    ///   preemptively by its own `terminationGracePeriodSeconds`, 30 s by
    ///   default, so they end by then): 30 s.
    /// - drain-on-notice: never. NTH drains like `kubectl drain` within
    ///   the budgets until its node-termination grace period runs out
    ///   (aws-node-termination-handler README, "Configuration").
    pub fn delete_doomed_before(self, policy: &costop_core::Policy) -> costop_core::time::Millis {
        match self {
            Strategy::Costop | Strategy::CostopBurstable => {
                costop_executor::Waits::from_policy(policy).delete_doomed_before
            }
            Strategy::ReplaceOnNotice => 30 * 1000,
            _ => 0,
        }
    }

    /// The policy it runs with, from the configured one.
    pub fn policy(self, configured: &costop_core::Policy) -> costop_core::Policy {
        match self {
            Strategy::CostopBurstable => costop_core::Policy {
                spare_sizing: costop_core::SpareSizing::Cost,
                burstable_tier: true,
                ..configured.clone()
            },
            _ => configured.clone(),
        }
    }

    /// Whether its nodes run on Spot.
    pub fn uses_spot(self) -> bool {
        self != Strategy::OnDemand
    }
}

impl std::str::FromStr for Strategy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Strategy::ALL.into_iter().find(|x| x.name() == s).ok_or_else(|| {
            let names: Vec<_> = Strategy::ALL.iter().map(|x| x.name()).collect();
            format!("unknown strategy `{s}` (known: {})", names.join(", "))
        })
    }
}
