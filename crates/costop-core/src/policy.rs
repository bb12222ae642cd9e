//! The policy: every knob of costop's decisions, with defaults and checks.

use serde::{Deserialize, Serialize};

/// How warm standbys wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StandbyMode {
    /// Running, joined and tainted: ready at once, billed at the on-demand price.
    Running,
    /// Stopped: billed for volumes only; re-typed and started on demand.
    Stopped,
}

/// How spare capacity (held ahead of reclaims) is sized.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SpareSizing {
    /// Fixed shares of the worst pool's shortfall:
    /// `headroom_share_of_shortfall` as placeholders,
    /// `standby_share_of_shortfall` as warm standbys.
    Shares,
    /// By expected cost: each node's worth of the shortfall goes to the
    /// tier (placeholders, running burstable nodes, warm standbys in
    /// `standby_mode`) with the lowest expected cost per core-second of the
    /// reclaim gaps it covers, at the pools' measured reclaim rates and the
    /// tiers' start times, or to none when leaving the gap open
    /// (`gap_usd_per_core_s`) is cheaper (`costop_core::headroom::size_tiers`).
    /// The two shares are then not read.
    Cost,
}

/// costop's decision knobs. Every field has a default (see [`Policy::default`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Policy {
    /// Share of the worst pool's shortfall (what one reclaim displaces
    /// beyond the free room elsewhere, see `costop_core::headroom`) that
    /// placeholder pods keep free on running nodes (0–1). Default 0.0: the
    /// replacement launched at the notice is Ready well inside it, and on
    /// the simulated traces held room cost more than it saved; raise it to
    /// start displaced pods at once.
    pub headroom_share_of_shortfall: f64,
    /// Share of that shortfall covered by warm standbys while fewer than two
    /// other Spot pools can launch (0–1). Default 0.0: a stopped standby
    /// boots like a new node (about 30 s) and its start can fail for
    /// capacity like a launch, so it only pays where images are large (it
    /// has them pulled) or on-demand capacity is scarce. On every shipped
    /// trace it cost more and served less than launching the replacement
    /// (on-demand when no Spot pool can): 04-19, 20 nodes, 4,125 vs 3,532
    /// USD and 99.9953 % vs 99.9969 % served. Raise it for such clusters.
    pub standby_share_of_shortfall: f64,
    /// How spare capacity is sized: `shares` (the two shares above) or
    /// `cost` (the tier mix with the lowest expected cost, see
    /// [`SpareSizing::Cost`]). Default `shares`: the shipped figures were
    /// measured with it.
    pub spare_sizing: SpareSizing,
    /// With `spare_sizing = "cost"`: USD one core-second of a reclaim's
    /// gap (notice until the replacement takes pods) costs where no spare
    /// capacity covers it. Default 0.0000295 ([`GAP_USD_PER_CORE_S`]): what the function bridge
    /// charges for a core-second, a Lambda function of 1,769 MB (the size
    /// that has one vCPU; AWS Lambda Developer Guide, "Configure function
    /// memory") at 0.0000166667 USD per GB-second (x86, us-east-1; AWS
    /// Lambda pricing). Raise it to the value of the requests that fail
    /// where nothing bridges them.
    pub gap_usd_per_core_s: f64,
    /// With `spare_sizing = "cost"`: offer running burstable (T-family)
    /// nodes as a tier (`costop_core::headroom::SHIPPED_BURSTABLE_TYPE`,
    /// held tainted `costop.io/standby:NoSchedule` until a response takes
    /// them; never for accelerated instance types). Default false: on the
    /// shipped traces and the built-in market the tier was never the
    /// cheapest (a t3.xlarge's core costs 0.0416 USD an hour, placeholder
    /// room on Spot 0.014-0.022), see README "Burstable nodes".
    pub burstable_tier: bool,
    /// How standbys wait. Default `stopped`.
    pub standby_mode: StandbyMode,
    /// Largest share of Spot nodes in any one pool (0–1). Default 0.34.
    pub max_pool_share: f64,
    /// Weight of interruption risk in pool choice: a pool's score is its price
    /// × (1 + weight × interruptions per day). Default 0.05.
    pub risk_weight: f64,
    /// Minutes a pool is avoided for new capacity after it reclaimed an
    /// instance. Default 3: over 92 % of same-type same-zone interruptions
    /// come within 3 minutes of each other (arXiv 2604.16457); avoiding a
    /// pool longer sends capacity to dearer pools, where it stays.
    pub pool_cooldown_minutes: u64,
    /// Bridge a workload's traffic to a serverless function when this share
    /// of its Ready pods is displaced (0–1). Default 0.0 (always bridge).
    pub bridge_threshold: f64,
    /// Whether traffic bridging to functions is used at all. Default true.
    pub bridge_enabled: bool,
    /// Act on rebalance recommendations: launch the replacement at once
    /// and, as soon as it gives the node's pods room, drain the node
    /// within budgets (its Deployments surged first) and end it, as EC2
    /// Auto Scaling's Capacity Rebalancing replaces an at-risk instance
    /// (Amazon EC2 Auto Scaling User Guide, "Capacity Rebalancing"). An
    /// interruption that follows finds the node gone or going (its own
    /// response then takes over); a recommendation no interruption follows
    /// costs one move. The node is cordoned only once the nodes not being
    /// retired have room for its pods, its replacement's room among them.
    /// Default true.
    pub act_on_rebalance: bool,
    /// Minutes a rebalance recommendation's node waits for its replacement
    /// to give its pods room; with none by then it stays (and so does the
    /// replacement, for the node autoscaler to use or remove). Default 15.
    pub rebalance_window_minutes: u64,
    /// Deregister the doomed node's targets from the load balancer once its
    /// pods are evicted (they leave it one by one as they terminate). Default true.
    pub deregister_on_notice: bool,
    /// Move a Spot node, between responses, to another pool whose
    /// risk-adjusted price is at least this share below its own pool's
    /// (0–1; 1 turns moves off). Default 0.15: replacements launched where
    /// capacity was when it was needed would otherwise stay in dear pools.
    pub move_back_saving: f64,
    /// Surge, then evict: before evicting a doomed node's Deployment pods,
    /// raise their replicas by as many, and evict once the extra pods are
    /// Ready (or shortly before the deadline), then lower them back. No
    /// workload serves with fewer Ready pods than it had, and the budgets
    /// no longer pace the evictions wave by wave. Default true.
    pub surge_before_evict: bool,
    /// Seconds before a known deadline at which pods a disruption budget
    /// still keeps from eviction are deleted (with their grace period)
    /// instead: they go with the node at the deadline anyway, and deleted
    /// now their controllers start them elsewhere before it goes, their
    /// volumes detached cleanly. Only pods of the workloads the planner
    /// knows (Deployments, StatefulSets) are deleted; bare pods and pods
    /// whose budget allows no disruption at all are left and reported.
    /// 0: never; they stay until the node goes. Default 45: the
    /// default `terminationGracePeriodSeconds` is 30 s (Kubernetes API
    /// reference, PodSpec) and a volume move and a start take about 15 s
    /// more. Like Karpenter's NodePool `terminationGracePeriod`, which
    /// deletes pods whatever their budgets so they end by the node's.
    pub delete_doomed_before_deadline_s: u32,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            headroom_share_of_shortfall: 0.0,
            standby_share_of_shortfall: 0.0,
            spare_sizing: SpareSizing::Shares,
            gap_usd_per_core_s: GAP_USD_PER_CORE_S,
            burstable_tier: false,
            standby_mode: StandbyMode::Stopped,
            max_pool_share: 0.34,
            risk_weight: 0.05,
            pool_cooldown_minutes: 3,
            bridge_threshold: 0.0,
            bridge_enabled: true,
            act_on_rebalance: true,
            rebalance_window_minutes: 15,
            deregister_on_notice: true,
            move_back_saving: 0.15,
            surge_before_evict: true,
            delete_doomed_before_deadline_s: 45,
        }
    }
}

/// Default of [`Policy::gap_usd_per_core_s`]: the function bridge's price
/// of a core-second, 1.769 GB × 0.0000166667 USD per GB-second = 0.00002948
/// USD, rounded.
pub const GAP_USD_PER_CORE_S: f64 = 0.000_029_5;

/// A policy value outside its range.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("policy key `{key}`: {problem}")]
pub struct PolicyError {
    /// The offending key.
    pub key: &'static str,
    /// What is wrong with it.
    pub problem: String,
}

impl Policy {
    /// Check every value is in range.
    pub fn validate(&self) -> Result<(), PolicyError> {
        let share = |key: &'static str, v: f64| {
            if (0.0..=1.0).contains(&v) {
                Ok(())
            } else {
                Err(PolicyError { key, problem: format!("{v} is not between 0 and 1") })
            }
        };
        share("headroom_share_of_shortfall", self.headroom_share_of_shortfall)?;
        share("standby_share_of_shortfall", self.standby_share_of_shortfall)?;
        share("bridge_threshold", self.bridge_threshold)?;
        share("move_back_saving", self.move_back_saving)?;
        if !(self.max_pool_share > 0.0 && self.max_pool_share <= 1.0) {
            return Err(PolicyError {
                key: "max_pool_share",
                problem: format!("{} must be in (0, 1]", self.max_pool_share),
            });
        }
        if self.rebalance_window_minutes > 24 * 60 {
            return Err(PolicyError {
                key: "rebalance_window_minutes",
                problem: format!("{} must be at most 1440 (a day)", self.rebalance_window_minutes),
            });
        }
        if self.delete_doomed_before_deadline_s > 120 {
            return Err(PolicyError {
                key: "delete_doomed_before_deadline_s",
                problem: format!(
                    "{} must be at most 120 (a Spot notice's 2 minutes; more deletes pods before their evictions are tried)",
                    self.delete_doomed_before_deadline_s
                ),
            });
        }
        if !(self.gap_usd_per_core_s.is_finite() && self.gap_usd_per_core_s >= 0.0) {
            return Err(PolicyError {
                key: "gap_usd_per_core_s",
                problem: format!("{} must be a non-negative number", self.gap_usd_per_core_s),
            });
        }
        if !(self.risk_weight.is_finite() && self.risk_weight >= 0.0) {
            return Err(PolicyError {
                key: "risk_weight",
                problem: format!("{} must be a non-negative number", self.risk_weight),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doomed_pods_are_deleted_at_most_a_notice_before_the_deadline() {
        let at = |s| Policy { delete_doomed_before_deadline_s: s, ..Policy::default() }.validate();
        assert_eq!(at(0), Ok(()));
        assert_eq!(at(120), Ok(()));
        let err = at(121).unwrap_err();
        assert_eq!(err.key, "delete_doomed_before_deadline_s");
        assert!(err.problem.contains("at most 120"), "{err}");
    }

    #[test]
    fn the_gap_price_must_be_a_non_negative_number() {
        assert_eq!(Policy::default().validate(), Ok(()));
        for v in [-0.001, f64::NAN, f64::INFINITY] {
            let err = Policy { gap_usd_per_core_s: v, ..Policy::default() }.validate().unwrap_err();
            assert_eq!(err.key, "gap_usd_per_core_s", "{v}");
        }
        // The default is the function bridge's price of a core-second.
        assert!((GAP_USD_PER_CORE_S - 1.769 * costop_facts::catalog::LAMBDA_USD_PER_GB_SECOND).abs() < 1e-7);
    }
}
