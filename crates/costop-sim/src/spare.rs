//! costop's spare capacity in the simulator, as the policy sizes it: the
//! shares, or the tier mix by expected cost (`spare_sizing = "cost"`,
//! `costop_core::headroom::size_tiers`) with the run's own timings as the
//! tiers' start times and the pools' reclaim rates as the run has seen
//! them (`World::pool_views`). The world calls [`size`] where it sizes
//! its headroom (`World::size_costop_headroom`: placeholders and
//! burstable nodes; standbys are the warm-pool keeper's) and reports the
//! mix and what each tier cost ([`SpareReport`]).

use crate::config::SimConfig;
use costop_core::headroom::{size_spare_capacity, size_tiers, SpareCapacity, TierInputs, TierMix};
use costop_core::policy::SpareSizing;
use costop_core::tiers::Tier;
use costop_core::ClusterView;

/// The spare capacity the policy asks for in `view`, and the tier mix
/// behind it when it is sized by cost. Burstable nodes run the catalog's
/// [`costop_core::headroom::SHIPPED_BURSTABLE_TYPE`].
pub fn size(view: &ClusterView, cfg: &SimConfig) -> (SpareCapacity, Option<TierMix>) {
    match cfg.policy.spare_sizing {
        SpareSizing::Shares => (size_spare_capacity(view, |_| 1.0, &cfg.policy), None),
        SpareSizing::Cost => {
            let mix = size_tiers(view, |_| 1.0, &cfg.policy, &TierInputs::shipped(&cfg.timings));
            (mix.spare(), Some(mix))
        }
    }
}

/// costop's spare capacity over one run, by tier, when sized by cost.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SpareReport {
    /// The sizing's tier mix at the start ([`describe`]).
    pub mix: String,
    /// Placeholder pods held (a quarter node's room each).
    pub placeholder_pods: u32,
    /// Burstable nodes run as idle spare.
    pub burstable_nodes: u32,
    /// Node-sized units of the shortfall held by warm standbys (launched
    /// by the warm-pool keeper).
    pub standby_units: u32,
    /// USD: placeholders' share of the Spot nodes they sat on (part of
    /// those nodes' cost, not on top of it).
    pub placeholders_usd: f64,
    /// USD: burstable nodes' on-demand price while they ran, plus the
    /// surplus credits charged.
    pub burstable_usd: f64,
    /// USD: of `burstable_usd`, the surplus credits charged (unlimited mode).
    pub burstable_surplus_usd: f64,
    /// USD: warm standbys while on standby (stopped: their volumes;
    /// running: their price); once woken they are on-demand capacity.
    pub standbys_usd: f64,
    /// Burstable node-seconds with workload pods on them.
    pub burstable_busy_s: f64,
    /// Of those, seconds held to the baseline (standard mode, no credits left).
    pub burstable_throttled_s: f64,
}

impl SpareReport {
    /// One line for the tables: the mix and what each tier cost.
    pub fn line(&self) -> String {
        format!(
            "{} | cost: placeholders {:.2} USD (share of their Spot nodes), burstable {:.2} USD (surplus {:.2}; busy {:.0} node-s, {:.0} throttled), standbys {:.2} USD",
            self.mix,
            self.placeholders_usd,
            self.burstable_usd,
            self.burstable_surplus_usd,
            self.burstable_busy_s,
            self.burstable_throttled_s,
            self.standbys_usd
        )
    }

    /// The same figures rounded to cents and whole seconds, for output.
    pub fn rounded(&self) -> Self {
        let cents = |x: f64| (x * 100.0).round() / 100.0;
        Self {
            placeholders_usd: cents(self.placeholders_usd),
            burstable_usd: cents(self.burstable_usd),
            burstable_surplus_usd: cents(self.burstable_surplus_usd),
            standbys_usd: cents(self.standbys_usd),
            burstable_busy_s: self.burstable_busy_s.round(),
            burstable_throttled_s: self.burstable_throttled_s.round(),
            ..self.clone()
        }
    }
}

/// One line for the report: units of the shortfall per tier, those left
/// open, and the expected cost against holding nothing.
pub fn describe(mix: &TierMix) -> String {
    let name = |t: Tier| match t {
        Tier::Placeholders => "placeholders",
        Tier::BurstableRunning => "burstable",
        Tier::StandbyStopped => "stopped standby",
        Tier::StandbyRunning => "running standby",
    };
    let mut parts: Vec<String> = mix.units.iter().map(|(t, n)| format!("{} {n}", name(*t))).collect();
    if mix.burstable_nodes > 0 {
        parts.push(format!("({} burstable nodes)", mix.burstable_nodes));
    }
    parts.push(format!("open {}", mix.open_units));
    format!(
        "spare tiers: {}; expected {:.4} USD/h against {:.4} holding nothing",
        parts.join(", "),
        mix.expected_usd_per_hr,
        mix.open_usd_per_hr
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use costop_core::{CapacityType, NodeView, PodView, PoolId, PoolView, Resources};

    /// Three pools of m5.xlarge; a's two nodes full, b's and c's empty
    /// but one: losing a leaves one node's worth without room.
    fn view(interruptions_per_day: f64) -> ClusterView {
        let pools: Vec<PoolId> = ["z1", "z2", "z3"].iter().map(|z| PoolId::new("m5.xlarge", *z)).collect();
        let node = |name: &str, pool: &PoolId| NodeView {
            name: name.into(),
            instance_id: format!("i-{name}").into(),
            pool: pool.clone(),
            capacity_type: CapacityType::Spot,
            allocatable: Resources::new(4000, 16000),
            price_per_hour: 0.07,
            unschedulable: false,
            taints: vec![],
            ready: true,
            in_load_balancer: true,
            fallback: false,
        };
        let pod = |name: &str, node: &str| PodView {
            name: name.into(),
            workload: Some("w".into()),
            node: Some(node.into()),
            requests: Resources::new(4000, 1000),
            priority: 0,
            ready: true,
            placeholder: false,
            daemon: false,
            volumes: vec![],
        };
        ClusterView {
            nodes: vec![node("a1", &pools[0]), node("a2", &pools[0]), node("b1", &pools[1])].into(),
            pods: vec![pod("p1", "a1"), pod("p2", "a2")].into(),
            pools: pools
                .iter()
                .map(|id| PoolView {
                    id: id.clone(),
                    spot_price: 0.07,
                    on_demand_price: 0.192,
                    interruptions_per_day,
                    launchable: true,
                    last_interruption: None,
                })
                .collect(),
            ..ClusterView::default()
        }
    }

    #[test]
    fn the_policy_chooses_shares_or_the_cost_mix_with_the_runs_timings() {
        let mut cfg = SimConfig::default();
        cfg.policy.headroom_share_of_shortfall = 1.0;
        let (spare, mix) = size(&view(8.0), &cfg);
        assert_eq!((spare.headroom_nodes, mix), (1, None));
        cfg.policy.spare_sizing = SpareSizing::Cost;
        cfg.policy.gap_usd_per_core_s = 0.1;
        let (spare, mix) = size(&view(8.0), &cfg);
        let mix = mix.expect("a mix");
        assert_eq!(spare, mix.spare());
        assert_eq!(mix.units_of(Tier::Placeholders), 1, "{mix:?}");
        let line = describe(&mix);
        assert!(line.starts_with("spare tiers: placeholders 1, open 0; expected"), "{line}");
        // Slower boots widen the gap a stopped standby covers: with a
        // 300 s boot and 0.003 USD an open core-second, one reclaim a day
        // is worth a stopped standby (36 s to its pods) and not Spot room.
        cfg.policy.gap_usd_per_core_s = 0.003;
        cfg.timings.node_ready_s = 300.0;
        let (_, mix) = size(&view(1.0), &cfg);
        assert_eq!(mix.unwrap().units_of(Tier::StandbyStopped), 1);
        cfg.timings.node_ready_s = 30.0;
        let (_, mix) = size(&view(1.0), &cfg);
        assert_eq!(mix.unwrap().open_units, 1, "a 46 s gap is not worth a day of holding");
    }
}
