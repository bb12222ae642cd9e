//! Which tier of spare capacity covers a pool's shortfall: the one with
//! the lowest expected cost per core-second of the gap a reclaim opens.
//!
//! The gap runs from the notice until the replacement launched at the
//! notice is Ready (`Exposure::replacement_ready_s`). A tier holds room
//! for it between reclaims (`hold_usd_per_core_hr`), takes pods after
//! `ready_after_s` (placeholders and running nodes at once, a stopped
//! standby once it has started and joined), and may cost more while pods
//! run on it (`use_usd_per_core_hr`: a woken stopped standby's on-demand
//! price; a burstable node's surplus credits once its balance is spent).
//! What no tier covers is priced at `Exposure::gap_usd_per_core_s` (the
//! function bridge's cost, or the value of the requests that fail), so a
//! slow tier pays for the seconds it leaves open, and holding nothing is
//! an option too.
//!
//! Per core and reclaim:
//!
//! ```text
//! cost = hold per hour / reclaims per hour
//!      + use per hour × chargeable hours of use
//!      + gap per second × seconds not covered
//! ```
//!
//! and the figure compared is that cost over the gap's length. Room held
//! once may cover the reclaims of several pools ([`tier_costs_for`]): its
//! hold is paid once, the use and the open seconds per reclaim of each.
//! Pure: no prices or timings are read here, they come in. Called by the
//! sizing (`headroom::size_tiers`, with `spare_sizing = "cost"`); not yet
//! by the planner (issue 16).

/// A tier of spare capacity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Tier {
    /// Placeholder pods holding free room on Spot nodes.
    Placeholders,
    /// Running burstable (T-family) nodes.
    BurstableRunning,
    /// Stopped on-demand standbys (started at the notice).
    StandbyStopped,
    /// Running on-demand standbys.
    StandbyRunning,
}

/// What one tier costs and how fast it takes pods, per core of room.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TierOffer {
    /// The tier.
    pub tier: Tier,
    /// USD per core-hour of room held between reclaims.
    pub hold_usd_per_core_hr: f64,
    /// Seconds from the notice until its room takes pods.
    pub ready_after_s: f64,
    /// USD per core-hour more while displaced pods run on it.
    pub use_usd_per_core_hr: f64,
    /// Seconds of use per reclaim that cost nothing more (a burstable
    /// node's credit balance); use beyond them is charged.
    pub free_use_s: f64,
}

impl TierOffer {
    /// Running burstable nodes of `vcpu` vCPUs priced `usd_hr`, in
    /// `unlimited` mode: held at their price, ready at once, pods using
    /// every vCPU spend `balance_credits` first (one credit is one vCPU
    /// at 100 % for a minute; `baseline_vcpu` is what earnings pay for),
    /// then surplus at `surplus_usd_per_vcpu_hr` for what is above the
    /// baseline.
    pub fn burstable(
        usd_hr: f64,
        vcpu: u32,
        baseline_vcpu: f64,
        balance_credits: f64,
        surplus_usd_per_vcpu_hr: f64,
    ) -> Self {
        let vcpu = f64::from(vcpu.max(1));
        let above = (vcpu - baseline_vcpu).max(0.0);
        let free_use_s = if above > 0.0 { balance_credits.max(0.0) / above * 60.0 } else { f64::INFINITY };
        TierOffer {
            tier: Tier::BurstableRunning,
            hold_usd_per_core_hr: usd_hr / vcpu,
            ready_after_s: 0.0,
            use_usd_per_core_hr: surplus_usd_per_vcpu_hr * above / vcpu,
            free_use_s,
        }
    }
}

/// How often a pool's shortfall is needed and for how long.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Exposure {
    /// Reclaims per hour that need the room (measured for the pool).
    pub reclaims_per_hr: f64,
    /// Seconds from the notice until the replacement is Ready: the gap.
    pub replacement_ready_s: f64,
    /// Seconds displaced pods stay on the tier's room (until they are
    /// moved to the replacement), at least the gap.
    pub stay_s: f64,
    /// USD per core-second the gap costs where nothing covers it.
    pub gap_usd_per_core_s: f64,
}

/// One option's expected cost.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TierCost {
    /// The tier, or `None` for holding nothing (the gap left open).
    pub tier: Option<Tier>,
    /// Seconds of the gap it covers per reclaim.
    pub covered_s: f64,
    /// Expected USD per core and reclaim: holding, use and the gap left open.
    pub usd_per_core_reclaim: f64,
    /// The same per core-second of the gap (the figure compared).
    pub usd_per_core_s: f64,
}

/// Every option's expected cost per core of shortfall, cheapest first
/// (holding nothing among them); ties keep the order of `offers`, holding
/// nothing last. With no reclaims expected, or no gap, holding anything is
/// pointless: holding nothing is then the only option returned.
pub fn tier_costs(offers: &[TierOffer], exposure: &Exposure) -> Vec<TierCost> {
    tier_costs_for(offers, std::slice::from_ref(exposure))
}

/// [`tier_costs`] for room that covers the reclaims of several pools, each
/// with its own rate and gap: the room is held once, and used (and its
/// gap left open where it is slow) at each pool's reclaims. Per reclaim
/// (any of them): hold per hour over the summed rate, plus the
/// rate-weighted use and open gap; `covered_s` is the rate-weighted mean,
/// and `usd_per_core_s` is over the rate-weighted mean gap.
pub fn tier_costs_for(offers: &[TierOffer], exposures: &[Exposure]) -> Vec<TierCost> {
    let live: Vec<&Exposure> =
        exposures.iter().filter(|e| e.reclaims_per_hr > 0.0 && e.replacement_ready_s > 0.0).collect();
    let rate: f64 = live.iter().map(|e| e.reclaims_per_hr).sum();
    let weighted = |f: &dyn Fn(&Exposure) -> f64| {
        if let [one] = live[..] {
            // One pool: its own figure, without the rounding of r × x / r.
            f(one)
        } else if rate > 0.0 {
            live.iter().map(|e| e.reclaims_per_hr * f(e)).sum::<f64>() / rate
        } else {
            0.0
        }
    };
    let gap = weighted(&|e| e.replacement_ready_s);
    let per_gap_s = |usd: f64| if gap > 0.0 { usd / gap } else { 0.0 };
    let open_usd = |e: &Exposure, open_s: f64| e.gap_usd_per_core_s.max(0.0) * open_s;
    let open = weighted(&|e| open_usd(e, e.replacement_ready_s));
    let nothing =
        TierCost { tier: None, covered_s: 0.0, usd_per_core_reclaim: open, usd_per_core_s: per_gap_s(open) };
    if rate <= 0.0 {
        // With no reclaims expected anywhere, what one would cost is still
        // the open gap of any exposure given.
        let open = exposures.first().map_or(0.0, |e| open_usd(e, e.replacement_ready_s.max(0.0)));
        let gap = exposures.first().map_or(0.0, |e| e.replacement_ready_s.max(0.0));
        let per = if gap > 0.0 { open / gap } else { 0.0 };
        return vec![TierCost {
            tier: None,
            covered_s: 0.0,
            usd_per_core_reclaim: open,
            usd_per_core_s: per,
        }];
    }
    let mut costs: Vec<TierCost> = offers
        .iter()
        .map(|o| {
            let ready = o.ready_after_s.max(0.0);
            let covered = |e: &Exposure| (e.replacement_ready_s - ready).max(0.0);
            let per_reclaim = |e: &Exposure| {
                let covered_s = covered(e);
                let used_s = if covered_s > 0.0 {
                    (e.stay_s.max(e.replacement_ready_s) - ready).max(0.0)
                } else {
                    0.0
                };
                let charged_hr = (used_s - o.free_use_s.max(0.0)).max(0.0) / 3600.0;
                o.use_usd_per_core_hr.max(0.0) * charged_hr + open_usd(e, e.replacement_ready_s - covered_s)
            };
            let usd = o.hold_usd_per_core_hr.max(0.0) / rate + weighted(&per_reclaim);
            TierCost {
                tier: Some(o.tier),
                covered_s: weighted(&covered),
                usd_per_core_reclaim: usd,
                usd_per_core_s: per_gap_s(usd),
            }
        })
        .collect();
    costs.push(nothing);
    costs.sort_by(|a, b| a.usd_per_core_reclaim.total_cmp(&b.usd_per_core_reclaim));
    costs
}

/// The cheapest option per core-second of the gap (see [`tier_costs`]).
pub fn choose_tier(offers: &[TierOffer], exposure: &Exposure) -> TierCost {
    tier_costs(offers, exposure)[0]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Figures of the shipped catalog and timings, per core: placeholders
    /// on an m5.xlarge at a 0.07 USD Spot price, a t3.xlarge (0.1664 USD,
    /// 4 vCPUs, 1.6 of them baseline, 0.05 USD surplus) with a full day's
    /// credits (2,304), a stopped standby's 100 GB root volume (0.011 USD
    /// an hour) that boots in 30 s plus a 10 s image pull and runs at
    /// 0.192 USD once woken, a running one at 0.192 USD.
    fn offers() -> Vec<TierOffer> {
        vec![
            TierOffer {
                tier: Tier::Placeholders,
                hold_usd_per_core_hr: 0.07 / 4.0,
                ready_after_s: 0.0,
                use_usd_per_core_hr: 0.0,
                free_use_s: 0.0,
            },
            TierOffer::burstable(0.1664, 4, 1.6, 2304.0, 0.05),
            TierOffer {
                tier: Tier::StandbyStopped,
                hold_usd_per_core_hr: 0.011 / 4.0,
                ready_after_s: 40.0,
                use_usd_per_core_hr: 0.192 / 4.0,
                free_use_s: 0.0,
            },
            TierOffer {
                tier: Tier::StandbyRunning,
                hold_usd_per_core_hr: 0.192 / 4.0,
                ready_after_s: 0.0,
                use_usd_per_core_hr: 0.0,
                free_use_s: 0.0,
            },
        ]
    }

    fn exposure(reclaims_per_day: f64, gap_usd_per_core_s: f64) -> Exposure {
        Exposure {
            reclaims_per_hr: reclaims_per_day / 24.0,
            replacement_ready_s: 90.0,
            stay_s: 300.0,
            gap_usd_per_core_s,
        }
    }

    fn tier(e: &Exposure) -> Option<Tier> {
        choose_tier(&offers(), e).tier
    }

    #[test]
    fn a_burstable_node_with_credits_is_held_at_its_price_and_used_for_free() {
        let b = TierOffer::burstable(0.1664, 4, 1.6, 2304.0, 0.05);
        assert!((b.hold_usd_per_core_hr - 0.0416).abs() < 1e-12);
        // 2,304 credits carry 2.4 vCPUs above the baseline for 16 hours.
        assert!((b.free_use_s - 16.0 * 3600.0).abs() < 1e-6);
        // Then 2.4 of 4 vCPUs' surplus at 0.05: 0.03 USD per core-hour.
        assert!((b.use_usd_per_core_hr - 0.03).abs() < 1e-12);
        let empty = TierOffer::burstable(0.1664, 4, 1.6, 0.0, 0.05);
        let e = Exposure {
            reclaims_per_hr: 1.0,
            replacement_ready_s: 3600.0,
            stay_s: 3600.0,
            gap_usd_per_core_s: 0.0,
        };
        let with = tier_costs(&[b], &e).into_iter().find(|c| c.tier.is_some()).unwrap();
        let without = tier_costs(&[empty], &e).into_iter().find(|c| c.tier.is_some()).unwrap();
        assert!((with.usd_per_core_reclaim - 0.0416).abs() < 1e-9, "{with:?}");
        assert!((without.usd_per_core_reclaim - 0.0416 - 0.03).abs() < 1e-9, "{without:?}");
    }

    #[test]
    fn the_mix_follows_the_reclaim_rate_and_what_the_gap_costs() {
        // A gap worth nothing: hold nothing.
        assert_eq!(tier(&exposure(1.0, 0.0)), None);
        // Valued at 0.003 USD a core-second, with a reclaim a day: the
        // stopped standby holds for 0.066 a day, runs 260 s at 0.048 an
        // hour (0.0035) and leaves 40 s open (0.12): 0.19, against 0.27
        // for the open gap and 0.42 for placeholders' day of Spot room.
        let daily = exposure(1.0, 0.003);
        let costs = tier_costs(&offers(), &daily);
        assert_eq!(costs[0].tier, Some(Tier::StandbyStopped), "{costs:?}");
        assert_eq!(costs[1].tier, None, "{costs:?}");
        assert_eq!(costs[2].tier, Some(Tier::Placeholders), "{costs:?}");
        let stopped = costs[0];
        let expected = 0.011 / 4.0 * 24.0 + 0.192 / 4.0 * (260.0 / 3600.0) + 0.003 * 40.0;
        assert!((stopped.usd_per_core_reclaim - expected).abs() < 1e-9, "{stopped:?}");
        assert_eq!(stopped.covered_s, 50.0);
        assert!((stopped.usd_per_core_s - expected / 90.0).abs() < 1e-12);
        // Where every second of the gap is dear, only instant room will do,
        // and the cheapest to hold of it wins: placeholders at this Spot
        // price, before the burstable node and the running standby.
        let dear = exposure(1.0, 0.1);
        let order: Vec<Option<Tier>> = tier_costs(&offers(), &dear).iter().map(|c| c.tier).collect();
        assert_eq!(
            order[..3],
            [Some(Tier::Placeholders), Some(Tier::BurstableRunning), Some(Tier::StandbyRunning)]
        );
        // A dearer Spot price (0.20 USD for 4 vCPUs) puts the burstable node first.
        let mut dear_spot = offers();
        dear_spot[0].hold_usd_per_core_hr = 0.20 / 4.0;
        assert_eq!(choose_tier(&dear_spot, &dear).tier, Some(Tier::BurstableRunning));
        // Rare reclaims make holding cheap per reclaim, frequent ones dear.
        let rare = choose_tier(&offers(), &exposure(0.1, 0.1));
        let often = choose_tier(&offers(), &exposure(10.0, 0.1));
        assert!(rare.usd_per_core_reclaim > often.usd_per_core_reclaim);
    }

    #[test]
    fn a_tier_slower_than_the_replacement_covers_nothing() {
        let slow = TierOffer { ready_after_s: 120.0, ..offers()[2] };
        let costs = tier_costs(&[slow], &exposure(1.0, 0.001));
        let s = costs.iter().find(|c| c.tier.is_some()).unwrap();
        assert_eq!(s.covered_s, 0.0);
        // It would only add its hold to the open gap: holding nothing is cheaper.
        assert_eq!(costs[0].tier, None);
        assert!((s.usd_per_core_reclaim - costs[0].usd_per_core_reclaim - 0.011 / 4.0 * 24.0).abs() < 1e-9);
        // No reclaims expected: nothing is held.
        let none = tier_costs(&offers(), &exposure(0.0, 1.0));
        assert_eq!(none.len(), 1);
        assert_eq!(none[0].tier, None);
    }

    #[test]
    fn room_shared_by_pools_is_held_once_and_used_at_each_pools_reclaims() {
        // Two pools reclaimed once a day each are one reclaimed twice a day.
        let one = exposure(1.0, 0.003);
        let twice = exposure(2.0, 0.003);
        let shared = tier_costs_for(&offers(), &[one, one]);
        let single = tier_costs(&offers(), &twice);
        for (a, b) in shared.iter().zip(&single) {
            assert_eq!(a.tier, b.tier);
            assert!((a.usd_per_core_reclaim - b.usd_per_core_reclaim).abs() < 1e-12, "{a:?} {b:?}");
        }
        // A pool with a longer gap weighs by its rate: the open gap of
        // holding nothing is the rate-weighted mean (1 × 90 s and 3 × 150 s).
        let long = Exposure { reclaims_per_hr: 3.0 / 24.0, replacement_ready_s: 150.0, ..one };
        let nothing = tier_costs_for(&[], &[one, long]);
        assert_eq!(nothing.len(), 1);
        assert!((nothing[0].usd_per_core_reclaim - 0.003 * (90.0 + 3.0 * 150.0) / 4.0).abs() < 1e-12);
        // A pool that is never reclaimed adds nothing.
        let never = Exposure { reclaims_per_hr: 0.0, ..long };
        assert_eq!(tier_costs_for(&offers(), &[one, never]), tier_costs(&offers(), &one));
    }
}
